//! Graph construction and Session execution: naming and scopes, partial
//! shapes, control dependencies, feeding intermediate tensors, pruning, the
//! plan cache, concurrent runs, the parallel executor, random ops, DOT and
//! JSON export, and default graphs.

use half::{bf16, f16};
use rivulet::ops::{self, Ctx, Op};
use rivulet::{DType, ErrorKind, Graph, Result, Session, SessionOptions, Shape, Tensor, UNKNOWN};

fn f32s(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn node_name(t: &Tensor) -> String {
    t.op().expect("symbolic tensor").name()
}

// ---------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------

#[test]
fn default_names_are_function_names_made_unique() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 2])?;
    let a = ops::add(&x, &x)?;
    let b = ops::add(&a, &x)?;
    let m = ops::matmul(&a, &b)?;
    let m2 = ops::matmul(&m, &x)?;
    let s = ops::sum(&m2, 0, false)?;
    let r = ops::relu(&s)?;
    let (tv, ti) = ops::top_k(&x, 1)?;
    assert_eq!(node_name(&a), "add");
    assert_eq!(node_name(&b), "add_1");
    assert_eq!(node_name(&m), "matmul");
    assert_eq!(node_name(&m2), "matmul_1");
    assert_eq!(node_name(&s), "sum");
    assert_eq!(node_name(&r), "relu");
    assert_eq!(tv.name().unwrap(), "top_k:0");
    assert_eq!(ti.name().unwrap(), "top_k:1");
    assert_eq!(a.name().unwrap(), "add:0");
    // A value operand becomes a `Const` node.
    let c = ops::mul(&x, 2.0)?;
    let c_node = g.node(c.op().unwrap().id()).unwrap();
    let const_name = g.node(c_node.inputs[1].node).unwrap().name;
    assert_eq!(const_name, "Const");
    let c2 = ops::mul(&x, 3.0)?;
    let c2_node = g.node(c2.op().unwrap().id()).unwrap();
    assert_eq!(g.node(c2_node.inputs[1].node).unwrap().name, "Const_1");
    assert_eq!(node_name(&c), "mul");
    assert_eq!(node_name(&c2), "mul_1");
    // Op types follow TensorFlow.
    assert_eq!(a.op().unwrap().op_type(), "AddV2");
    assert_eq!(m.op().unwrap().op_type(), "MatMul");
    assert_eq!(tv.op().unwrap().op_type(), "TopKV2");
    assert_eq!(tv.op().unwrap().num_outputs(), 2);
    Ok(())
}

#[test]
fn generated_names_skip_names_taken_explicitly() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    let a = ops::add(&x, &x)?;
    let taken = ops::neg(&x)?.named("add_1")?;
    let b = ops::add(&x, &x)?;
    assert_eq!(node_name(&a), "add");
    assert_eq!(node_name(&taken), "add_1");
    assert_eq!(node_name(&b), "add_2");
    // All names are distinct.
    let mut names: Vec<String> = g.nodes().into_iter().map(|n| n.name).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    Ok(())
}

#[test]
fn name_scopes_prefix_and_nest() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 2])?;
    let (outer, inner, inner2, after_inner);
    {
        let _s = g.name_scope("layer1");
        outer = ops::matmul(&x, &x)?;
        {
            let _s2 = g.name_scope("attention");
            inner = ops::add(&outer, &x)?;
            inner2 = ops::add(&inner, &x)?;
        }
        after_inner = ops::add(&outer, &x)?;
    }
    let top = ops::add(&x, &x)?;
    assert_eq!(node_name(&outer), "layer1/matmul");
    assert_eq!(node_name(&inner), "layer1/attention/add");
    assert_eq!(node_name(&inner2), "layer1/attention/add_1");
    assert_eq!(node_name(&after_inner), "layer1/add");
    assert_eq!(node_name(&top), "add");
    // Placeholders and constants are scoped too.
    let p = {
        let _s = g.name_scope("inputs");
        g.placeholder("y", DType::F32, [1])?
    };
    assert_eq!(p.name().unwrap(), "inputs/y:0");
    // Lookup by the full scoped name.
    assert_eq!(g.operation("layer1/attention/add_1")?.id(), inner2.op().unwrap().id());
    Ok(())
}

#[test]
fn named_rename_and_lookup() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3])?;
    let y = ops::mul(&x, 2.0)?.named("double")?;
    assert_eq!(y.name().unwrap(), "double:0");
    assert_eq!(g.operation("double")?.id(), y.op().unwrap().id());
    // The old name is free again and no longer resolves.
    assert_eq!(g.operation("mul").unwrap_err().kind(), ErrorKind::NotFound);
    // Renaming to the node's own name is allowed.
    let y = y.named("double")?;
    // Renaming to a taken name is an error, and changes nothing.
    let z = ops::add(&x, 1.0)?;
    let e = g.rename(&z.op().unwrap(), "double").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("double"), "{e}");
    assert_eq!(node_name(&z), "add");
    let e = z.clone().named("x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // Names may not contain ':' nor be empty.
    assert_eq!(g.rename(&z.op().unwrap(), "a:b").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(g.rename(&z.op().unwrap(), "").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(g.placeholder("p:0", DType::F32, [1]).unwrap_err().kind(), ErrorKind::InvalidArgument);
    // `named` inside a scope gets the scope prefix.
    let w = {
        let _s = g.name_scope("block");
        ops::neg(&x)?.named("flip")?
    };
    assert_eq!(w.name().unwrap(), "block/flip:0");
    // `named` on a value does nothing.
    let v = Tensor::from([1.0f32]).named("ignored")?;
    assert!(v.name().is_none());
    // Renaming an operation of another graph is a Graph error.
    let g2 = Graph::new();
    let other = g2.placeholder("o", DType::F32, [1])?;
    assert_eq!(g.rename(&other.op().unwrap(), "o2").unwrap_err().kind(), ErrorKind::Graph);

    // g.operation / g.tensor
    let op = g.operation("double")?;
    assert_eq!(op.op_type(), "Mul");
    assert_eq!(op.num_outputs(), 1);
    assert!(op.location().contains("graph_session.rs"), "{}", op.location());
    let t0 = g.tensor("double:0")?;
    let t_plain = g.tensor("double")?;
    assert_eq!(t0.name().unwrap(), "double:0");
    assert_eq!(t_plain.name().unwrap(), "double:0");
    assert_eq!(t0.dtype(), DType::F32);
    assert_eq!(t0.shape(), &Shape::from([3]));
    assert_eq!(g.tensor("double:1").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(g.tensor("nothing:0").unwrap_err().kind(), ErrorKind::NotFound);
    // Tensors found by name run like the originals.
    let sess = Session::new(&g);
    let xv = Tensor::from([1.0f32, -2.0, 0.5]);
    let out = sess.run(&[&t0, &y], &[(&g.tensor("x:0")?, &xv)])?;
    assert_eq!(vals(&out[0]), vec![2.0, -4.0, 1.0]);
    assert_eq!(vals(&out[1]), vec![2.0, -4.0, 1.0]);
    // Multi-output lookup.
    let (_, idx) = ops::top_k(&x, 2)?;
    let idx_by_name = g.tensor(&idx.name().unwrap())?;
    assert_eq!(idx_by_name.dtype(), DType::I32);
    let out = sess.run(&[&idx_by_name], &[(&x, &xv)])?;
    assert_eq!(out[0].to_vec::<i32>()?, vec![0, 2]);
    Ok(())
}

#[test]
fn placeholder_names_are_made_unique() -> Result<()> {
    let g = Graph::new();
    let a = g.placeholder("x", DType::F32, [1])?;
    let b = g.placeholder("x", DType::F32, [1])?;
    let c = g.placeholder("x", DType::I32, [2])?;
    let d = g.placeholder("", DType::F32, [1])?;
    assert_eq!(a.name().unwrap(), "x:0");
    assert_eq!(b.name().unwrap(), "x_1:0");
    assert_eq!(c.name().unwrap(), "x_2:0");
    assert_eq!(d.name().unwrap(), "Placeholder:0");
    assert_eq!(a.op().unwrap().op_type(), "Placeholder");
    // They are distinct inputs.
    let s = ops::sub(&a, &b)?;
    let out = Session::new(&g).run(&[&s], &[(&a, &Tensor::from([5.0f32])), (&b, &Tensor::from([3.0f32]))])?;
    assert_eq!(vals(&out[0]), vec![2.0]);
    Ok(())
}

// ---------------------------------------------------------------------------
// Partial shapes
// ---------------------------------------------------------------------------

#[test]
fn partial_shapes_propagate_through_inference() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)])?;
    assert_eq!(x.shape().dims(), &[UNKNOWN, 3]);
    assert_eq!(x.shape().to_string(), "[?, 3]");
    assert_eq!(x.numel(), None);
    let w = g.constant(f32s(&[1., 0., 0., 1., 0., 1., 0., 1., 0., 0., 1., 1.], &[3, 4]))?;
    let y = ops::matmul(&x, &w)?;
    assert_eq!(y.shape().dims(), &[UNKNOWN, 4]);
    let flat = ops::reshape(&y, &[-1])?;
    assert_eq!(flat.shape().dims(), &[UNKNOWN]);
    let pairs = ops::reshape(&y, &[-1, 2])?;
    assert_eq!(pairs.shape().dims(), &[UNKNOWN, 2]);
    let rows = ops::sum(&y, 1, false)?;
    assert_eq!(rows.shape().dims(), &[UNKNOWN]);
    let cols = ops::sum(&y, 0, false)?;
    assert_eq!(cols.shape().dims(), &[4]);
    let cols_keep = ops::mean(&y, 0, true)?;
    assert_eq!(cols_keep.shape().dims(), &[1, 4]);
    let total = ops::sum(&y, rivulet::Axes::All, false)?;
    assert_eq!(total.shape().rank(), 0);
    let t = ops::transpose(&y, &[])?;
    assert_eq!(t.shape().dims(), &[4, UNKNOWN]);
    let bias = ops::add(&y, &Tensor::from([1.0f32, 2.0, 3.0, 4.0]))?;
    assert_eq!(bias.shape().dims(), &[UNKNOWN, 4]);
    let am = ops::argmax(&y, -1)?;
    assert_eq!(am.shape().dims(), &[UNKNOWN]);
    assert_eq!(am.dtype(), DType::I64);
    let cat = ops::concat(&[&x, &x], 0)?;
    assert_eq!(cat.shape().dims(), &[UNKNOWN, 3]);
    let cat1 = ops::concat(&[&x, &x], 1)?;
    assert_eq!(cat1.shape().dims(), &[UNKNOWN, 6]);
    // Known dimensions are still checked.
    let bad = ops::matmul(&x, &g.constant(f32s(&[1., 2., 3., 4.], &[2, 2]))?).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Shape);

    // Different batch sizes through one session.
    let sess = Session::new(&g);
    let b2 = f32s(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let out = sess.run(&[&y, &flat, &rows, &cols, &pairs, &total], &[(&x, &b2)])?;
    // w columns: c0 = x0, c1 = x1 + x2, c2 = x1 + x2... computed by hand:
    // w = [[1,0,0,1],[0,1,0,1],[0,0,1,1]] -> y = [x0, x1, x2, x0+x1+x2]
    assert_eq!(out[0].shape().dims(), &[2, 4]);
    assert_eq!(vals(&out[0]), vec![1., 2., 3., 6., 4., 5., 6., 15.]);
    assert_eq!(out[1].shape().dims(), &[8]);
    assert_eq!(vals(&out[2]), vec![12., 30.]);
    assert_eq!(vals(&out[3]), vec![5., 7., 9., 21.]);
    assert_eq!(out[4].shape().dims(), &[4, 2]);
    assert_eq!(out[5].to_scalar::<f32>()?, 42.0);
    let b5 = f32s(&(0..15).map(|i| i as f32 - 7.0).collect::<Vec<_>>(), &[5, 3]);
    let out = sess.run(&[&y, &rows, &cols], &[(&x, &b5)])?;
    assert_eq!(out[0].shape().dims(), &[5, 4]);
    assert_eq!(
        vals(&out[0]),
        vec![-7., -6., -5., -18., -4., -3., -2., -9., -1., 0., 1., 0., 2., 3., 4., 9., 5., 6., 7., 18.]
    );
    assert_eq!(vals(&out[1]), vec![-36., -18., 0., 18., 36.]);
    assert_eq!(vals(&out[2]), vec![-5., 0., 5., 0.]);
    // Batch of one and an empty batch.
    let b1 = f32s(&[0.5, 0.25, 0.125], &[1, 3]);
    let out = sess.run(&[&rows], &[(&x, &b1)])?;
    assert_eq!(vals(&out[0]), vec![1.75]);
    let b0 = f32s(&[], &[0, 3]);
    let out = sess.run(&[&y, &cols], &[(&x, &b0)])?;
    assert_eq!(out[0].shape().dims(), &[0, 4]);
    assert_eq!(vals(&out[1]), vec![0., 0., 0., 0.]);
    // Four distinct fetch lists, four plans, whatever the batch sizes.
    assert_eq!(sess.num_cached_plans(), 4);
    // A feed that contradicts the known dimension is refused.
    let e = sess.run(&[&y], &[(&x, &f32s(&[1., 2., 3., 4.], &[2, 2]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    let e = sess.run(&[&y], &[(&x, &f32s(&[1., 2., 3.], &[3]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    Ok(())
}

// ---------------------------------------------------------------------------
// Control dependencies
// ---------------------------------------------------------------------------

/// A node that fails whenever it runs: integer division by zero.
fn failing_node(g: &Graph) -> Result<Tensor> {
    let num = g.constant(Tensor::from([1i32, 2]))?;
    let den = g.constant(Tensor::from([0i32, 0]))?;
    ops::truncate_div(&num, &den)
}

#[test]
fn control_dependencies_run_first_and_only_inside_the_guard() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    let boom = failing_node(&g)?;
    let boom_op = boom.op().unwrap();
    let guarded = {
        let _c = g.control_dependencies(&[&boom_op])?;
        ops::mul(&x, 3.0)?
    };
    let free = ops::mul(&x, 3.0)?;
    let guarded_node = g.node(guarded.op().unwrap().id()).unwrap();
    assert_eq!(guarded_node.control_inputs, vec![boom_op.id()]);
    assert!(g.node(free.op().unwrap().id()).unwrap().control_inputs.is_empty());
    let sess = Session::new(&g);
    let xv = Tensor::from([1.0f32, 2.0]);
    // The unguarded twin runs fine; the guarded one must run the failing dependency first.
    assert_eq!(vals(&sess.run(&[&free], &[(&x, &xv)])?[0]), vec![3.0, 6.0]);
    let e = sess.run(&[&guarded], &[(&x, &xv)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains(&boom_op.name()), "{e}");
    Ok(())
}

#[test]
fn control_dependencies_nest_and_accumulate() -> Result<()> {
    let g = Graph::new();
    let r = ops::random_uniform(&g, [3], 0.0, 1.0, DType::F32, Some(99))?;
    let boom = failing_node(&g)?;
    let c = g.constant(Tensor::from([1.0f32]))?;
    let (ro, bo) = (r.op().unwrap(), boom.op().unwrap());
    let (inner, outer_only);
    {
        let _c1 = g.control_dependencies(&[&ro])?;
        {
            let _c2 = g.control_dependencies(&[&bo, &ro])?;
            inner = ops::neg(&c)?;
        }
        outer_only = ops::neg(&c)?;
    }
    let mut expect = vec![ro.id(), bo.id()];
    expect.sort();
    assert_eq!(g.node(inner.op().unwrap().id()).unwrap().control_inputs, expect);
    assert_eq!(g.node(outer_only.op().unwrap().id()).unwrap().control_inputs, vec![ro.id()]);
    let reference = Session::new(&g);
    let draw0 = reference.run(&[&r], &[])?;
    let draw1 = reference.run(&[&r], &[])?;
    // The inner node depends on the failing node too; the outer one only on `r`.
    let sess = Session::new(&g);
    let e = sess.run(&[&inner], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let sess = Session::new(&g);
    let out = sess.run(&[&outer_only], &[])?;
    assert_eq!(vals(&out[0]), vec![-1.0]);
    // ... and running it drew from `r` once.
    assert!(sess.run(&[&r], &[])?[0].bitwise_eq(&draw1[0]));
    assert!(!draw0[0].bitwise_eq(&draw1[0]));
    // Dependencies from another graph are refused.
    let g2 = Graph::new();
    let other = g2.placeholder("o", DType::F32, [1])?.op().unwrap();
    assert_eq!(g.control_dependencies(&[&other]).err().unwrap().kind(), ErrorKind::Graph);
    assert_eq!(g.group(&[&other]).unwrap_err().kind(), ErrorKind::Graph);
    Ok(())
}

#[test]
fn control_dependency_on_a_fed_placeholder_is_satisfied_by_the_feed() -> Result<()> {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [1])?;
    let b = g.placeholder("b", DType::F32, [1])?;
    let c = g.constant(Tensor::from([1.0f32]))?;
    let y = {
        let _c = g.control_dependencies(&[&a.op().unwrap(), &b.op().unwrap()])?;
        ops::neg(&c)?
    };
    let sess = Session::new(&g);
    let one = Tensor::from([0.0f32]);
    // With only `a` fed, the error is about `b` (not about the fed `a`).
    let e = sess.run(&[&y], &[(&a, &one)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("'b'"), "{e}");
    // With both fed, it runs.
    let out = sess.run(&[&y], &[(&a, &one), (&b, &one)])?;
    assert_eq!(vals(&out[0]), vec![-1.0]);
    Ok(())
}

#[test]
fn group_and_run_with_targets() -> Result<()> {
    let g = Graph::new();
    // Random nodes have observable run counts: each run of the node draws the next stream.
    let r1 = ops::random_uniform(&g, [4], 0.0, 1.0, DType::F32, Some(11))?;
    let r2 = ops::random_normal(&g, [4], 0.0, 1.0, DType::F32, Some(12))?;
    let grp = g.group(&[&r1.op().unwrap(), &r2.op().unwrap()])?;
    assert_eq!(grp.op_type(), "NoOp");
    assert_eq!(grp.name(), "group_deps");
    assert_eq!(grp.num_outputs(), 0);
    assert_eq!(grp.output(0).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let mut deps = g.node(grp.id()).unwrap().control_inputs;
    deps.sort();
    assert_eq!(deps, vec![r1.op().unwrap().id(), r2.op().unwrap().id()]);
    let grp2 = g.group(&[])?;
    assert_eq!(grp2.name(), "group_deps_1");

    // Reference: a fresh session's first two draws of each node.
    let reference = Session::new(&g);
    let first = reference.run(&[&r1, &r2], &[])?;
    let second = reference.run(&[&r1, &r2], &[])?;
    assert!(!first[0].bitwise_eq(&second[0]));
    assert!(!first[1].bitwise_eq(&second[1]));

    // Running the group as a target draws once from each; fetching afterwards gets the second draw.
    let sess = Session::new(&g);
    let out = sess.run_with_targets(&[], &[], &[&grp])?;
    assert!(out.is_empty());
    let after = sess.run(&[&r1, &r2], &[])?;
    assert!(after[0].bitwise_eq(&second[0]));
    assert!(after[1].bitwise_eq(&second[1]));

    // A target alongside a fetch.
    let sess = Session::new(&g);
    let y = ops::add(&r1, 1.0)?;
    let out = sess.run_with_targets(&[&y], &[], &[&r2.op().unwrap()])?;
    let expect = ops::add(&first[0], 1.0)?;
    assert!(out[0].bitwise_eq(&expect));
    assert!(sess.run(&[&r2], &[])?[0].bitwise_eq(&second[1]));

    // A target that fails makes the run fail.
    let boom = failing_node(&g)?;
    let bad_group = g.group(&[&boom.op().unwrap()])?;
    let e = sess.run_with_targets(&[], &[], &[&bad_group]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // A target of another graph is refused.
    let g2 = Graph::new();
    let other = g2.group(&[])?;
    assert_eq!(sess.run_with_targets(&[], &[], &[&other]).unwrap_err().kind(), ErrorKind::Graph);
    Ok(())
}

// ---------------------------------------------------------------------------
// Feeding any tensor, pruning
// ---------------------------------------------------------------------------

#[test]
fn feeding_an_intermediate_skips_everything_upstream() -> Result<()> {
    let g = Graph::new();
    let boom = failing_node(&g)?; // fails if it ever runs
    let y = ops::mul(&ops::add(&boom, 1i32)?, 2i32)?;
    let sess = Session::new(&g);
    let e = sess.run(&[&y], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let out = sess.run(&[&y], &[(&boom, &Tensor::from([10i32, 20]))])?;
    assert_eq!(out[0].to_vec::<i32>()?, vec![22, 42]);

    // An unfed placeholder upstream of the fed tensor is not needed either.
    let p = g.placeholder("p", DType::F32, [None])?;
    let h = ops::exp(&p)?;
    let z = ops::sub(&h, 1.0)?;
    let e = sess.run(&[&z], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    let out = sess.run(&[&z], &[(&h, &Tensor::from([3.0f32, 0.5]))])?;
    assert_eq!(vals(&out[0]), vec![2.0, -0.5]);

    // Fetching the fed tensor returns the fed value itself.
    let fed = Tensor::from([7.0f32, 8.0, 9.0]);
    let out = sess.run(&[&h, &z], &[(&h, &fed)])?;
    assert!(out[0].bitwise_eq(&fed));
    assert_eq!(vals(&out[1]), vec![6.0, 7.0, 8.0]);

    // A fed intermediate is checked against its static type.
    let e = sess.run(&[&z], &[(&h, &Tensor::from([1i32]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType);
    let e = sess.run(&[&y], &[(&boom, &Tensor::from([1i32, 2, 3]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    // Feeding a constant overrides it.
    let c = g.constant(Tensor::from([1.0f32, 1.0]))?;
    let cz = ops::mul(&c, 5.0)?;
    let out = sess.run(&[&cz], &[(&c, &Tensor::from([2.0f32, -1.0]))])?;
    assert_eq!(vals(&out[0]), vec![10.0, -5.0]);
    let out = sess.run(&[&cz], &[])?;
    assert_eq!(vals(&out[0]), vec![5.0, 5.0]);
    Ok(())
}

#[test]
fn feeding_one_output_of_a_node_that_still_runs_for_another() -> Result<()> {
    // top_k must run to produce the indices; the fed values must still win.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4])?;
    let (v, i) = ops::top_k(&x, 2)?;
    let y = ops::mul(&v, 10.0)?;
    let sess = Session::new(&g);
    let xv = Tensor::from([1.0f32, 5.0, 3.0, 2.0]);
    let out = sess.run(&[&y, &i], &[(&x, &xv)])?;
    assert_eq!(vals(&out[0]), vec![50.0, 30.0]);
    assert_eq!(out[1].to_vec::<i32>()?, vec![1, 2]);
    let fed = Tensor::from([100.0f32, 200.0]);
    let out = sess.run(&[&y, &i, &v], &[(&x, &xv), (&v, &fed)])?;
    assert_eq!(vals(&out[0]), vec![1000.0, 2000.0], "the fed value of top_k:0 was overwritten");
    assert_eq!(out[1].to_vec::<i32>()?, vec![1, 2]);
    assert!(out[2].bitwise_eq(&fed));
    // The same with split.
    let c = g.constant(Tensor::from([1.0f32, 2.0, 3.0, 4.0]))?;
    let parts = ops::split(&c, 2, 0)?;
    let s = ops::add(&parts[0], &parts[1])?;
    let out = sess.run(&[&s], &[(&parts[0], &Tensor::from([10.0f32, 20.0]))])?;
    assert_eq!(vals(&out[0]), vec![13.0, 24.0]);
    Ok(())
}

#[test]
fn fetching_one_branch_does_not_need_the_others_inputs() -> Result<()> {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [2])?;
    let b = g.placeholder("b", DType::F32, [2])?;
    let ya = ops::mul(&a, 2.0)?;
    let yb = ops::add(&b, 1.0)?;
    let both = ops::add(&ya, &yb)?;
    let boom = failing_node(&g)?;
    let _poisoned = ops::add(&boom, 1i32)?;
    let sess = Session::new(&g);
    let av = Tensor::from([1.0f32, 2.0]);
    let bv = Tensor::from([10.0f32, 20.0]);
    assert_eq!(vals(&sess.run(&[&ya], &[(&a, &av)])?[0]), vec![2.0, 4.0]);
    assert_eq!(vals(&sess.run(&[&yb], &[(&b, &bv)])?[0]), vec![11.0, 21.0]);
    let e = sess.run(&[&yb], &[(&a, &av)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("'b'"), "{e}");
    assert!(!e.to_string().contains("'a'"), "{e}");
    let e = sess.run(&[&both], &[(&a, &av)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(vals(&sess.run(&[&both], &[(&a, &av), (&b, &bv)])?[0]), vec![13.0, 25.0]);
    // An extra feed that nothing needs is harmless.
    assert_eq!(vals(&sess.run(&[&ya], &[(&a, &av), (&b, &bv)])?[0]), vec![2.0, 4.0]);
    Ok(())
}

// ---------------------------------------------------------------------------
// Plan cache
// ---------------------------------------------------------------------------

#[test]
fn plan_cache_grows_once_per_distinct_request() -> Result<()> {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [None])?;
    let b = g.placeholder("b", DType::F32, [None])?;
    let ya = ops::mul(&a, 2.0)?;
    let yb = ops::add(&b, 1.0)?;
    let grp = g.group(&[&ya.op().unwrap()])?;
    let sess = Session::new(&g);
    assert_eq!(sess.num_cached_plans(), 0);
    let av = Tensor::from([1.0f32]);
    let bv = Tensor::from([2.0f32, 3.0]);
    sess.run(&[&ya], &[(&a, &av)])?;
    assert_eq!(sess.num_cached_plans(), 1);
    // Repeats, with other values and other batch sizes, reuse the plan.
    sess.run(&[&ya], &[(&a, &av)])?;
    sess.run(&[&ya], &[(&a, &bv)])?;
    assert_eq!(sess.num_cached_plans(), 1);
    sess.run(&[&yb], &[(&b, &bv)])?;
    assert_eq!(sess.num_cached_plans(), 2);
    sess.run(&[&ya, &yb], &[(&a, &av), (&b, &bv)])?;
    assert_eq!(sess.num_cached_plans(), 3);
    // Same fetches, one more feed: a different request.
    sess.run(&[&ya], &[(&a, &av), (&b, &bv)])?;
    assert_eq!(sess.num_cached_plans(), 4);
    // Same fetches and feeds, plus a target.
    sess.run_with_targets(&[&ya], &[(&a, &av)], &[&grp])?;
    assert_eq!(sess.num_cached_plans(), 5);
    sess.run_with_targets(&[&ya], &[(&a, &av)], &[&grp])?;
    sess.run(&[&ya, &yb], &[(&a, &bv), (&b, &av)])?;
    assert_eq!(sess.num_cached_plans(), 5);
    // A request that cannot compile (unfed placeholder) is not cached.
    assert!(sess.run(&[&yb], &[]).is_err());
    assert_eq!(sess.num_cached_plans(), 5);
    // Plans are per session.
    let other = Session::new(&g);
    assert_eq!(other.num_cached_plans(), 0);
    Ok(())
}

#[test]
fn plan_cache_keys_do_not_collide_for_large_output_indices() -> Result<()> {
    // Node 0: a constant; node 1: another; node 2: a split with 65537 outputs;
    // node 3: a negation. Output 65536 of node 2 and output 0 of node 3 are
    // different tensors and must not share a plan.
    let g = Graph::new();
    let n = 65_537usize;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let c0 = g.constant(Tensor::from_vec(data, [n])?)?;
    let c1 = g.constant(Tensor::from([-5.0f32]))?;
    assert_eq!((c0.op().unwrap().id(), c1.op().unwrap().id()), (0, 1));
    let pieces = ops::split(&c0, n, 0)?;
    assert_eq!(pieces[0].op().unwrap().id(), 2);
    let neg = ops::neg(&c1)?;
    assert_eq!(neg.op().unwrap().id(), 3);
    let last = &pieces[n - 1];
    let sess = Session::new(&g);
    let a = sess.run(&[last], &[])?;
    let b = sess.run(&[&neg], &[])?;
    assert_eq!(vals(&a[0]), vec![65_536.0]);
    assert_eq!(vals(&b[0]), vec![5.0], "the plan of split:65536 was reused for neg:0");
    Ok(())
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

#[test]
fn session_graph_and_tensor_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Session>();
    assert_send_sync::<Graph>();
    assert_send_sync::<Tensor>();
    assert_send_sync::<rivulet::Operation>();
    assert_send_sync::<rivulet::Error>();
}

#[test]
fn one_session_runs_from_eight_threads_at_once() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)])?;
    let w = g.constant(f32s(&[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15., 16.], &[4, 4]))?;
    let y = ops::add(&ops::matmul(&x, &w)?, &x)?;
    let s = ops::sum(&y, 1, false)?;
    let sess = Session::new(&g);
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (sess, x, y, s, barrier) = (&sess, &x, &y, &s, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for iter in 0..25 {
                        // Thread t feeds t + 1 rows, every row [k, k, k, k] with k = t * 100 + iter + row.
                        let rows = t + 1;
                        let data: Vec<f32> =
                            (0..rows).flat_map(|r| std::iter::repeat_n((t * 100 + iter + r) as f32, 4)).collect();
                        let xv = f32s(&data, &[rows, 4]);
                        let out = sess.run(&[y, s], &[(x, &xv)]).unwrap();
                        assert_eq!(out[0].shape().dims(), &[rows, 4]);
                        let yv = vals(&out[0]);
                        for r in 0..rows {
                            let k = (t * 100 + iter + r) as f32;
                            // column sums of w: 28, 32, 36, 40.
                            let expect = [28. * k + k, 32. * k + k, 36. * k + k, 40. * k + k];
                            assert_eq!(&yv[r * 4..r * 4 + 4], &expect, "thread {t} iter {iter} row {r}");
                            assert_eq!(vals(&out[1])[r], 136. * k + 4. * k);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(sess.num_cached_plans(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Parallel executor
// ---------------------------------------------------------------------------

fn pattern(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn heavy(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Vec<Tensor>> {
    let m1 = ops::matmul(a, b)?;
    let m2 = ops::matmul(b, c)?;
    let m3 = ops::matmul_t(c, a, true, false)?;
    let e1 = ops::tanh(&ops::mul(&m1, 0.05)?)?;
    let e2 = ops::sigmoid(&m2)?;
    let e3 = ops::exp(&ops::mul(&m3, -0.01)?)?;
    let s = ops::add(&ops::add(&e1, &e2)?, &e3)?;
    let r = ops::sum(&s, 1, false)?;
    Ok(vec![s, r, m1, m3])
}

#[test]
fn independent_heavy_branches_match_eager_bitwise() -> Result<()> {
    let n = 512;
    let av = f32s(&pattern(n * n, 1), &[n, n]);
    let bv = f32s(&pattern(n * n, 2), &[n, n]);
    let cv = f32s(&pattern(n * n, 3), &[n, n]);
    let eager = heavy(&av, &bv, &cv)?;
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [n, n])?;
    let b = g.placeholder("b", DType::F32, [n, n])?;
    let c = g.placeholder("c", DType::F32, [n, n])?;
    let sym = heavy(&a, &b, &c)?;
    let fetches: Vec<&Tensor> = sym.iter().collect();
    let feeds = [(&a, &av), (&b, &bv), (&c, &cv)];
    for opts in [SessionOptions::default(), SessionOptions { inter_op_parallelism: false, ..SessionOptions::default() }]
    {
        let sess = Session::with_options(&g, opts.clone());
        for _ in 0..3 {
            let out = sess.run(&fetches, &feeds)?;
            for (i, (o, e)) in out.iter().zip(&eager).enumerate() {
                assert!(o.bitwise_eq(e), "output {i} differs from eager with {opts:?}");
            }
        }
    }
    // Spot check of the math: m1[0][0] = sum_k a[0][k] * b[k][0].
    let a_data = pattern(n * n, 1);
    let b_data = pattern(n * n, 2);
    let dot: f64 = (0..n).map(|k| a_data[k] as f64 * b_data[k * n] as f64).sum();
    let m1 = vals(&eager[2]);
    assert!((m1[0] as f64 - dot).abs() < 1e-3, "{} vs {dot}", m1[0]);
    Ok(())
}

#[test]
fn a_failing_branch_in_a_parallel_plan_reports_its_error() -> Result<()> {
    let n = 512;
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [n, n])?;
    let m1 = ops::matmul(&a, &a)?;
    let m2 = ops::matmul(&a, &ops::transpose(&a, &[])?)?;
    let boom = failing_node(&g)?;
    let bad = ops::cast(&ops::add(&boom, 1i32)?, DType::F32)?;
    let s = ops::add(&ops::add(&m1, &m2)?, &ops::sum(&bad, rivulet::Axes::All, false)?)?;
    let sess = Session::new(&g);
    let av = f32s(&pattern(n * n, 9), &[n, n]);
    for _ in 0..3 {
        let e = sess.run(&[&s], &[(&a, &av)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("RealDiv"), "{e}");
    }
    // The session still works afterwards.
    let out = sess.run(&[&m1], &[(&a, &av)])?;
    assert!(out[0].bitwise_eq(&ops::matmul(&av, &av)?));
    Ok(())
}

// ---------------------------------------------------------------------------
// Random ops
// ---------------------------------------------------------------------------

#[test]
fn random_nodes_draw_new_numbers_each_run_and_replay_per_session() -> Result<()> {
    let g = Graph::new();
    let u = ops::random_uniform(&g, [64], -1.0, 1.0, DType::F32, Some(42))?;
    let nrm = ops::random_normal(&g, [2, 32], 0.0, 1.0, DType::F64, Some(43))?;
    let ints = ops::random_uniform_int(&g, [64], 0, 10, DType::I32, Some(44))?;
    let tn = ops::truncated_normal(&g, [64], 1.0, 2.0, DType::F32, Some(45))?;
    let sess = Session::new(&g);
    let runs: Vec<Vec<Tensor>> = (0..3).map(|_| sess.run(&[&u, &nrm, &ints, &tn], &[]).unwrap()).collect();
    for (k, ((r0, r1), r2)) in runs[0].iter().zip(&runs[1]).zip(&runs[2]).enumerate() {
        assert!(!r0.bitwise_eq(r1), "output {k}: run 0 == run 1");
        assert!(!r1.bitwise_eq(r2), "output {k}: run 1 == run 2");
        assert!(!r0.bitwise_eq(r2), "output {k}: run 0 == run 2");
    }
    for r in &runs {
        assert!(vals(&r[0]).iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(r[2].to_vec::<i32>()?.iter().all(|v| (0..10).contains(v)));
        assert!(vals(&r[3]).iter().all(|v| (-3.0..=5.0).contains(v)), "{:?}", vals(&r[3]));
        assert_eq!(r[1].shape().dims(), &[2, 32]);
        assert_eq!(r[1].dtype(), DType::F64);
    }
    // A fresh session over the same graph replays the same sequence.
    let again = Session::new(&g);
    for (i, run) in runs.iter().enumerate() {
        let out = again.run(&[&u, &nrm, &ints, &tn], &[])?;
        for (k, (o, r)) in out.iter().zip(run).enumerate() {
            assert!(o.bitwise_eq(r), "run {i} output {k} not replayed");
        }
    }
    // The first run of a session draws what eager mode draws with the same seed.
    let eager = ops::random_uniform(Ctx::Eager, [64], -1.0, 1.0, DType::F32, Some(42))?;
    assert!(eager.bitwise_eq(&runs[0][0]));
    // The run count belongs to the node, shared by all plans of the session.
    let s2 = Session::new(&g);
    s2.run(&[&u], &[])?; // plan A
    let shifted = ops::add(&u, 0.0)?;
    let out = s2.run(&[&shifted, &u], &[])?; // plan B: second run of `u`
    assert!(out[1].bitwise_eq(&runs[1][0]));
    assert!(out[0].bitwise_eq(&runs[1][0]));
    // Fetching a random tensor twice in one run gives one draw.
    let s3 = Session::new(&g);
    let out = s3.run(&[&u, &u], &[])?;
    assert!(out[0].bitwise_eq(&out[1]));
    assert!(out[0].bitwise_eq(&runs[0][0]));
    // Different seeds, different numbers.
    let other = ops::random_uniform(&g, [64], -1.0, 1.0, DType::F32, Some(7))?;
    assert!(!Session::new(&g).run(&[&other], &[])?[0].bitwise_eq(&runs[0][0]));
    Ok(())
}

// ---------------------------------------------------------------------------
// DOT and JSON
// ---------------------------------------------------------------------------

#[test]
fn dot_export_names_nodes_and_edges() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(2)])?; // n0
    let w = g.constant(f32s(&[1., 2., 3., 4.], &[2, 2]))?; // n1
    let y = {
        let _s = g.name_scope("dense");
        ops::matmul(&x, &w)? // n2
    };
    let grp = g.group(&[&y.op().unwrap()])?; // n3
    let q = ops::neg(&y)?.named("say \"hi\"")?; // n4
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    assert!(dot.contains("dense/matmul"), "{dot}");
    assert!(dot.contains("MatMul"));
    assert!(dot.contains("Placeholder"));
    assert!(dot.contains("f32[?, 2]"), "{dot}");
    assert!(dot.contains("n0 -> n2"), "{dot}");
    assert!(dot.contains("n1 -> n2"), "{dot}");
    assert!(dot.contains("n2 -> n4"), "{dot}");
    assert!(dot.contains("n2 -> n3 [style=dashed]"), "{dot}");
    assert!(dot.contains("say \\\"hi\\\""), "quotes must be escaped: {dot}");
    assert!(!dot.contains("say \"hi\""), "{dot}");
    assert_eq!(grp.name(), "group_deps");
    assert!(dot.contains("group_deps"));
    // One node statement per node and one edge per data/control input.
    assert_eq!(dot.lines().filter(|l| l.contains(" -> ")).count(), 4);
    assert_eq!(dot.lines().filter(|l| l.contains("\\n") && !l.contains(" -> ")).count(), g.num_nodes());
    let _ = q;
    Ok(())
}

fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn json_round_trips_exactly_and_runs() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)])?;
    let special = [
        f32::from_bits(0x7fc0_0001), // quiet NaN with payload
        f32::from_bits(0xffa0_0000), // negative signalling-pattern NaN
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::MIN_POSITIVE / 2.0, // subnormal
        1.0e-45,
        f32::MAX,
    ];
    let (c_special, c64, c16, cb16, cbool, cu8, ci64, ci32, fill_nan, c_empty, y, onehot, padded, grp, rnd);
    {
        let _s = g.name_scope("consts");
        c_special = g.constant(f32s(&special, &[2, 4]))?;
        c64 = g.constant(Tensor::from([f64::from_bits(0x7ff8_0000_0000_0abc), -0.0, f64::MIN_POSITIVE, 1e308]))?;
        c16 = g.constant(Tensor::from([
            f16::from_bits(0x7e01),
            f16::from_f32(-0.0),
            f16::INFINITY,
            f16::from_f32(0.333),
            f16::from_bits(0x0001),
        ]))?;
        cb16 = g.constant(Tensor::from([bf16::from_bits(0x7fc1), bf16::from_f32(-2.5), bf16::NEG_INFINITY]))?;
        cbool = g.constant(Tensor::from([[true, false, true], [false, false, true]]))?;
        cu8 = g.constant(Tensor::from([0u8, 1, 127, 128, 255]))?;
        ci64 = g.constant(Tensor::from([i64::MIN, -1, 0, i64::MAX]))?;
        ci32 = g.constant(Tensor::scalar(-123_456i32))?;
        fill_nan = ops::fill(&g, [2, 3], f64::NAN, DType::F32)?;
        c_empty = g.constant(Tensor::from_vec(Vec::<f32>::new(), [0, 4])?)?;
    }
    {
        let _s = g.name_scope("model");
        let guard = g.control_dependencies(&[&c_special.op().unwrap()])?;
        y = ops::add(&ops::matmul(&x, &ops::transpose(&c_special, &[])?)?, 1.5)?;
        drop(guard);
        onehot = ops::one_hot_with(&cu8, 4, -0.0f32, f32::INFINITY, -1, DType::F32)?;
        padded = ops::pad(&x, &[(1, 0), (0, 2)], ops::PadMode::Constant, -0.0f32)?;
        grp = g.group(&[&y.op().unwrap(), &fill_nan.op().unwrap()])?;
        rnd = ops::random_uniform(&g, [3], 0.0, 1.0, DType::F64, Some(u64::MAX - 3))?;
    }
    let json = g.to_json()?;
    assert!(json.contains("\"rivulet.graph\""), "{}", &json[..200.min(json.len())]);
    let g2 = Graph::from_json(&json)?;
    assert_eq!(g2.num_nodes(), g.num_nodes());
    let json2 = g2.to_json()?;
    assert_eq!(json, json2, "re-serialised JSON differs");
    // Third generation too.
    assert_eq!(Graph::from_json(&json2)?.to_json()?, json);
    // Node by node: names, inputs, control inputs, locations and outputs survive.
    for (a, b) in g.nodes().iter().zip(g2.nodes().iter()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.control_inputs, b.control_inputs);
        assert_eq!(a.location, b.location);
        assert_eq!(a.outputs.as_slice(), b.outputs.as_slice());
        // (Debug text, since NaN attributes are never `==`.)
        assert_eq!(format!("{:?}", a.op), format!("{:?}", b.op), "op of {}", a.name);
    }
    assert!(!g2.node(g2.operation(&node_name(&y))?.id()).unwrap().control_inputs.is_empty());
    assert_eq!(g2.tensor("x:0")?.shape().dims(), &[UNKNOWN, 4]);

    // The loaded graph runs and gives bitwise the same results.
    let names: Vec<String> =
        [&c_special, &c64, &c16, &cb16, &cbool, &cu8, &ci64, &ci32, &fill_nan, &c_empty, &y, &onehot, &padded, &rnd]
            .iter()
            .map(|t| t.name().unwrap())
            .collect();
    let fetches1: Vec<Tensor> = names.iter().map(|n| g.tensor(n).unwrap()).collect();
    let fetches2: Vec<Tensor> = names.iter().map(|n| g2.tensor(n).unwrap()).collect();
    let xv = f32s(&[1.0, -2.0, 0.5, 0.25, 3.0, 0.0, -1.0, 8.0], &[2, 4]);
    let s1 = Session::new(&g);
    let s2 = Session::new(&g2);
    let r1 = s1.run_with_targets(&fetches1.iter().collect::<Vec<_>>(), &[(&x, &xv)], &[&grp])?;
    let x2 = g2.tensor("x:0")?;
    let grp2 = g2.operation(&grp.name())?;
    let r2 = s2.run_with_targets(&fetches2.iter().collect::<Vec<_>>(), &[(&x2, &xv)], &[&grp2])?;
    for ((a, b), n) in r1.iter().zip(&r2).zip(&names) {
        assert!(a.bitwise_eq(b), "{n} differs after the round trip");
    }
    // Payloads really are preserved (not canonicalised) in the loaded graph.
    assert_eq!(f32_bits(&r2[0]), special.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    let f64_bits: Vec<u64> = r2[1].to_vec::<f64>()?.into_iter().map(f64::to_bits).collect();
    assert_eq!(f64_bits[0], 0x7ff8_0000_0000_0abc);
    assert_eq!(f64_bits[1], (-0.0f64).to_bits());
    let h: Vec<u16> = r2[2].to_vec::<f16>()?.into_iter().map(f16::to_bits).collect();
    assert_eq!(h[0], 0x7e01);
    assert_eq!(h[1], 0x8000);
    assert_eq!(h[4], 0x0001);
    let hb: Vec<u16> = r2[3].to_vec::<bf16>()?.into_iter().map(bf16::to_bits).collect();
    assert_eq!(hb, vec![0x7fc1, bf16::from_f32(-2.5).to_bits(), bf16::NEG_INFINITY.to_bits()]);
    assert_eq!(r2[4].to_vec::<bool>()?, vec![true, false, true, false, false, true]);
    assert_eq!(r2[5].to_vec::<u8>()?, vec![0, 1, 127, 128, 255]);
    assert_eq!(r2[6].to_vec::<i64>()?, vec![i64::MIN, -1, 0, i64::MAX]);
    assert_eq!(r2[7].to_scalar::<i32>()?, -123_456);
    assert!(vals(&r2[8]).iter().all(|v| v.is_nan()));
    assert_eq!(r2[9].shape().dims(), &[0, 4]);
    // one_hot with on = -0.0 and off = inf: index 0 -> [-0, inf, inf, inf]; 127 -> all off.
    let oh = f32_bits(&r2[11]);
    let (on, off) = ((-0.0f32).to_bits(), f32::INFINITY.to_bits());
    assert_eq!(oh[..8], [on, off, off, off, off, on, off, off]);
    assert!(oh[8..].iter().all(|&b| b == off));
    // pad with -0.0: first row is padding.
    assert!(f32_bits(&r2[12])[..6].iter().all(|&b| b == (-0.0f32).to_bits()));
    assert_eq!(vals(&r2[12])[6..10], [1.0, -2.0, 0.5, 0.25]);
    Ok(())
}

#[test]
fn json_round_trip_keeps_nan_sign_and_payload_of_attribute_values() -> Result<()> {
    // Fill and pad values are attributes, not constants; the loaded graph must
    // still compute the same bits. -NaN is what x86 produces for 0/0.
    let g = Graph::new();
    let neg_nan = -f64::NAN;
    let payload_nan = f64::from_bits(0x7ffc_0000_0000_0000); // f32: 0x7fe0_0000
    let a = ops::fill(&g, [2], neg_nan, DType::F32)?;
    let b = ops::fill(&g, [2], payload_nan, DType::F64)?;
    let x = g.constant(Tensor::from([1.0f32]))?;
    let c = ops::pad(&x, &[(1, 1)], ops::PadMode::Constant, payload_nan)?;
    let json = g.to_json()?;
    let g2 = Graph::from_json(&json)?;
    let fetch = |g: &Graph| -> Result<Vec<Tensor>> {
        let ts: Vec<Tensor> = [&a, &b, &c].iter().map(|t| g.tensor(&t.name().unwrap())).collect::<Result<_>>()?;
        Session::new(g).run(&ts.iter().collect::<Vec<_>>(), &[])
    };
    let (r1, r2) = (fetch(&g)?, fetch(&g2)?);
    assert_eq!(f32_bits(&r1[0])[0], (-f32::NAN).to_bits(), "sanity: the original graph keeps the sign");
    for (i, (p, q)) in r1.iter().zip(&r2).enumerate() {
        assert!(p.bitwise_eq(q), "output {i}: {p:?} before, {q:?} after the JSON round trip");
    }
    Ok(())
}

#[test]
fn json_of_an_empty_graph_round_trips() -> Result<()> {
    let g = Graph::new();
    let json = g.to_json()?;
    let g2 = Graph::from_json(&json)?;
    assert_eq!(g2.num_nodes(), 0);
    assert_eq!(g2.to_json()?, json);
    Ok(())
}

// ---------------------------------------------------------------------------
// Default graphs
// ---------------------------------------------------------------------------

#[test]
fn as_default_makes_eager_code_build_nodes() -> Result<()> {
    let g = Graph::new();
    let before = g.num_nodes();
    let (y, c, r, z);
    {
        let _d = g.as_default();
        let a = Tensor::from([1.0f32, 2.0]);
        let b = Tensor::from([10.0f32, 20.0]);
        y = ops::add(&a, &b)?;
        c = ops::constant(Ctx::Eager, Tensor::from([3i32]))?;
        r = ops::random_uniform(Ctx::Eager, [2], 0.0, 1.0, DType::F32, Some(5))?;
        z = ops::zeros(Ctx::Eager, [2], DType::F32)?;
        assert!(y.is_symbolic());
        assert!(c.is_symbolic());
        assert!(r.is_symbolic());
        assert!(z.is_symbolic());
        assert!(y.graph().unwrap().same_as(&g));
        assert_eq!(node_name(&y), "add");
        // Nested default graphs: the innermost wins, then the outer one comes back.
        let g_inner = Graph::new();
        {
            let _d2 = g_inner.as_default();
            let w = ops::mul(&a, &b)?;
            assert!(w.graph().unwrap().same_as(&g_inner));
        }
        let v = ops::mul(&a, &b)?;
        assert!(v.graph().unwrap().same_as(&g));
        // The default graph belongs to this thread only.
        std::thread::scope(|s| {
            s.spawn(|| {
                let t = ops::add(&Tensor::from([1.0f32]), &Tensor::from([1.0f32])).unwrap();
                assert!(!t.is_symbolic());
                assert_eq!(vals(&t), vec![2.0]);
            });
        });
    }
    assert!(g.num_nodes() > before);
    // After the guard, eager again.
    let e = ops::add(&Tensor::from([1.0f32]), &Tensor::from([2.0f32]))?;
    assert!(!e.is_symbolic());
    let out = Session::new(&g).run(&[&y, &c, &z], &[])?;
    assert_eq!(vals(&out[0]), vec![11.0, 22.0]);
    assert_eq!(out[1].to_vec::<i32>()?, vec![3]);
    assert_eq!(vals(&out[2]), vec![0.0, 0.0]);
    let rv = Session::new(&g).run(&[&r], &[])?;
    let eager_r = ops::random_uniform(Ctx::Eager, [2], 0.0, 1.0, DType::F32, Some(5))?;
    assert!(rv[0].bitwise_eq(&eager_r));
    Ok(())
}

// ---------------------------------------------------------------------------
// Misc session behaviour
// ---------------------------------------------------------------------------

#[test]
fn fetch_order_duplicates_and_empty_requests() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    let a = ops::mul(&x, 2.0)?;
    let b = ops::mul(&x, 3.0)?;
    let sess = Session::new(&g);
    let xv = Tensor::from([1.0f32, 2.0]);
    let out = sess.run(&[&b, &a, &b, &x], &[(&x, &xv)])?;
    assert_eq!(out.len(), 4);
    assert_eq!(vals(&out[0]), vec![3.0, 6.0]);
    assert_eq!(vals(&out[1]), vec![2.0, 4.0]);
    assert_eq!(vals(&out[2]), vec![3.0, 6.0]);
    assert!(out[3].bitwise_eq(&xv));
    assert!(out.iter().all(|t| !t.is_symbolic()));
    assert!(sess.run(&[], &[])?.is_empty());
    assert!(sess.graph().same_as(&g));
    // Ops applied to session results run eagerly.
    let s = ops::add(&out[0], &out[1])?;
    assert!(!s.is_symbolic());
    assert_eq!(vals(&s), vec![5.0, 10.0]);
    // Static type of the op's node matches what runs.
    assert_eq!(g.node(a.op().unwrap().id()).unwrap().op, Op::Binary { f: ops::BinaryOp::Mul });
    Ok(())
}

// ---------------------------------------------------------------------------
// Profiling
// ---------------------------------------------------------------------------

#[test]
fn profile_times_every_step_and_runs_the_update() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 2])?;
    let w = rivulet::Variable::in_graph(&g, "w", &f32s(&[1.0, 0.0, 0.0, 1.0], &[2, 2]), true)?;
    let y = ops::matmul(&x, &w.read())?.named("product")?;
    let bump = w.assign_add(&ops::ones_like(&w.read())?)?.op().expect("graph op");
    let s = Session::new(&g);
    s.run_targets(&[&g.global_variables_initializer()?])?;
    let feed = f32s(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let p = s.profile(&[&y], &[(&x, &feed)], &[&bump], 3)?;
    assert_eq!(p.runs, 3);
    assert!(p.steps.iter().any(|st| st.node == "product" && st.op == "MatMul"));
    assert!(p.steps.iter().all(|st| st.seconds >= 0.0));
    let by_op: f64 = p.by_op().iter().map(|(_, t, _)| t).sum();
    assert!((by_op - p.total_seconds()).abs() <= 1e-12);
    // Three profiled runs bumped the variable three times.
    assert_eq!(vals(&s.variable_value(&w)?), vec![4.0, 3.0, 3.0, 4.0]);
    let e = s.profile(&[&y], &[(&x, &feed)], &[], 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    Ok(())
}

// ---------------------------------------------------------------------------
// No lock is held across parallel work
// ---------------------------------------------------------------------------

/// Run `body` on a thread outside the pool and fail (instead of hanging)
/// if it does not finish within a generous limit: a deadlock check, not a
/// speed check.
fn finishes(what: &str, body: impl FnOnce() -> Result<()> + Send + 'static) {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(body()).ok());
    match wait.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what}: no progress in 300 s (deadlock)"),
    }
}

/// A large AssignAdd runs a parallel add; while its thread waits for the
/// other half it may pick up another step that reads a variable. That step
/// must not wait for a lock the add holds.
#[test]
fn a_large_assign_add_runs_beside_variable_reads() {
    finishes("graph AssignAdd beside reads", || {
        let n = 1 << 22;
        let g = Graph::new();
        let big = rivulet::Variable::in_graph(&g, "big", &Tensor::zeros([n], DType::F32)?, false)?;
        let update = big.assign_add(&g.constant(Tensor::ones([n], DType::F32)?)?)?;
        let mut fetches = Vec::new();
        for i in 0..16 {
            let v =
                rivulet::Variable::in_graph(&g, &format!("small{i}"), &Tensor::ones([1 << 16], DType::F32)?, false)?;
            fetches.push(ops::exp(&v.read())?);
        }
        fetches.push(update);
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let refs: Vec<&Tensor> = fetches.iter().collect();
        let runs = 50;
        for _ in 0..runs {
            let out = s.run(&refs, &[])?;
            assert!(vals(&out[0]).iter().all(|&v| v == std::f32::consts::E));
        }
        assert!(vals(&s.variable_value(&big)?).iter().all(|&v| v == runs as f32));
        Ok(())
    });
}

/// Optimizer updates overwrite a variable's buffer in place, beside runs
/// and threads that read it: a value fetched in the same run as the update
/// is the value before it (that run's update writes a new buffer), reads
/// from other threads see whole values (never half an update), and every
/// update lands.
#[test]
fn in_place_optimizer_updates_beside_reads() {
    use rayon::prelude::*;
    finishes("in-place updates beside reads", || {
        let n = 1 << 20;
        let g = Graph::new();
        let w = rivulet::Variable::in_graph(&g, "w", &Tensor::zeros([n], DType::F32)?, true)?;
        // d(sum(w * -1))/dw = -1: each SGD step with lr 1 adds 1 to every element.
        let minus = g.constant(Tensor::ones([n], DType::F32)?.neg()?)?;
        let loss = ops::sum(&ops::mul(&w.read(), &minus)?, rivulet::Axes::All, false)?;
        let train = rivulet::nn::Optimizer::sgd(1.0).minimize(&loss, &[&w])?;
        let seen = w.read();
        let smalls: Vec<Tensor> = (0..8)
            .map(|i| {
                let v =
                    rivulet::Variable::in_graph(&g, &format!("s{i}"), &Tensor::ones([1 << 16], DType::F32)?, false)?;
                ops::exp(&v.read())
            })
            .collect::<Result<_>>()?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let plan = s.explain(&[&loss], &[], &[&train])?;
        let text = &plan.passes.last().expect("dumps").text;
        assert!(text.contains("_ResourceApplyGradientDescent"), "{text}");
        let steps = 40;
        let reads = std::sync::atomic::AtomicUsize::new(0);
        rayon::join(
            || -> Result<()> {
                for k in 0..steps {
                    let mut fetches: Vec<&Tensor> = smalls.iter().collect();
                    if k % 2 == 0 {
                        fetches.push(&seen);
                    }
                    let out = s.run_with_targets(&fetches, &[], &[&train])?;
                    assert!(vals(&out[0]).iter().all(|&v| v == std::f32::consts::E));
                    if k % 2 == 0 {
                        assert!(vals(&out[8]).iter().all(|&v| v == k as f32), "the read in step {k}");
                    }
                }
                Ok(())
            },
            || {
                (0..200).into_par_iter().for_each(|_| {
                    let v = vals(&s.variable_value(&w).expect("w"));
                    assert!(v.iter().all(|&x| x == v[0]), "a read saw half an update");
                    assert!((0.0..=steps as f32).contains(&v[0]));
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })
            },
        )
        .0?;
        assert_eq!(reads.into_inner(), 200);
        assert!(vals(&s.variable_value(&w)?).iter().all(|&v| v == steps as f32));
        Ok(())
    });
}

/// Eager assign_add from a parallel loop: every update lands (the sum is
/// computed outside the variable's lock and published only if the value
/// did not change meanwhile).
#[test]
fn eager_assign_add_from_a_parallel_loop_loses_no_update() {
    use rayon::prelude::*;
    finishes("eager assign_add in par_iter", || {
        let n = 1 << 20;
        let v = rivulet::Variable::new("v", &Tensor::zeros([n], DType::F32)?, false)?;
        let ones = Tensor::ones([n], DType::F32)?;
        (0..16).into_par_iter().try_for_each(|_| v.assign_add(&ones).map(drop))?;
        assert!(vals(&v.read()).iter().all(|&x| x == 16.0));
        Ok(())
    });
}

/// Traced functions called from a parallel loop: one trace, every result
/// right, and every call's variable update kept.
#[test]
fn a_traced_function_called_from_a_parallel_loop() {
    use rayon::prelude::*;
    finishes("function calls in par_iter", || {
        let f = rivulet::function(|args: &[Tensor]| {
            let x = &args[0];
            Ok(vec![(&ops::exp(x)? * 2.0f32)?, (&ops::sqrt(x)? + 1.0f32)?])
        });
        let x = Tensor::ones([1 << 20], DType::F32)?;
        (0..16).into_par_iter().try_for_each(|_| -> Result<()> {
            let out = f.call(&[&x])?;
            assert!(vals(&out[0]).iter().all(|&v| v == 2.0 * std::f32::consts::E));
            assert!(vals(&out[1]).iter().all(|&v| v == 2.0));
            Ok(())
        })?;
        assert_eq!(f.num_traces(), 1);
        // A traced update of a captured variable: no call's update is lost.
        let v = rivulet::Variable::new("count", &Tensor::zeros([1 << 16], DType::F32)?, false)?;
        let ones = Tensor::ones([1 << 16], DType::F32)?;
        let step = rivulet::function(|args: &[Tensor]| Ok(vec![v.assign_add(&args[0])?]));
        (0..16).into_par_iter().try_for_each(|_| step.call(&[&ones]).map(drop))?;
        assert!(vals(&v.read()).iter().all(|&x| x == 16.0));
        // Calls whose runs are parallel: every update still lands.
        let big = Tensor::ones([1 << 20], DType::F32)?;
        let wide = rivulet::function(|args: &[Tensor]| {
            Ok(vec![v.assign_add(&args[0])?, ops::exp(&args[1])?, ops::sqrt(&args[1])?])
        });
        (0..16).into_par_iter().try_for_each(|_| wide.call(&[&ones, &big]).map(drop))?;
        assert!(vals(&v.read()).iter().all(|&x| x == 32.0));
        Ok(())
    });
}

/// An eager variable updated while a graph is the default stays eager (its
/// sum is computed eagerly, and a second update finds the value it read).
#[test]
fn eager_assign_add_under_a_default_graph() -> Result<()> {
    let v = rivulet::Variable::new("v", &Tensor::zeros([3], DType::F32)?, false)?;
    let ones = Tensor::ones([3], DType::F32)?;
    let g = Graph::new();
    {
        let _default = g.as_default();
        v.assign_add(&ones)?;
        v.assign_add(&ones)?;
        v.assign_sub(&f32s(&[0.5, 0.5, 0.5], &[3]))?;
    }
    assert_eq!(vals(&v.read()), [1.5, 1.5, 1.5]);
    Ok(())
}
