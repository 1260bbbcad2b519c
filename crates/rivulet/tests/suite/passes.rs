//! The graph optimizer: each pass on its own (what `Session::explain`
//! reports, and results unchanged against an unoptimized session), in-place
//! execution, the plan's peak memory, randomized equivalence of fully
//! optimized plans, and independence from the thread count and from the
//! inter-op executor.

use crate::common::*;

use rivulet::nn::{Activation, Dense, Layer, Optimizer};
use rivulet::ops::{self, UnaryOp};
use rivulet::{
    Axes, DType, ErrorKind, Graph, PassOptions, PlanReport, Result, Session, SessionOptions, Shape, Tensor, Variable,
};
use std::sync::mpsc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Session options with every pass off except those `on` switches on.
fn only(on: impl FnOnce(&mut PassOptions)) -> SessionOptions {
    let mut passes = PassOptions::none();
    on(&mut passes);
    SessionOptions { passes, ..SessionOptions::default() }
}

fn simplification() -> SessionOptions {
    only(|p| p.algebraic_simplification = true)
}

fn folding(limit: usize) -> SessionOptions {
    only(|p| {
        p.constant_folding = true;
        p.constant_folding_limit = limit;
    })
}

fn cse() -> SessionOptions {
    only(|p| p.common_subexpression_elimination = true)
}

fn matmul_fusion() -> SessionOptions {
    only(|p| p.matmul_fusion = true)
}

fn elementwise_fusion() -> SessionOptions {
    only(|p| p.elementwise_fusion = true)
}

fn in_place() -> SessionOptions {
    only(|p| p.in_place = true)
}

type Unary = fn(&Tensor) -> Result<Tensor>;
type Binary = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn f32s(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape).unwrap()
}

/// Op types of the live nodes in a pass dump (`%3 = Exp(%1:0) -> ...`).
fn op_types(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('%'))
        .filter_map(|l| l.split(" = ").nth(1))
        .map(|rest| rest.split('(').next().unwrap_or_default().to_string())
        .collect()
}

fn count_ops(text: &str, op_type: &str) -> usize {
    op_types(text).iter().filter(|t| *t == op_type).count()
}

/// The report of a plan with exactly one pass on: pruning, then that pass.
#[track_caller]
fn explain_one(g: &Graph, options: SessionOptions, pass: &str, fetches: &[&Tensor], feeds: &[&Tensor]) -> PlanReport {
    let report = Session::with_options(g, options).explain(fetches, feeds, &[]).unwrap();
    let names: Vec<&str> = report.passes.iter().map(|d| d.pass).collect();
    assert_eq!(names, vec!["pruning", pass], "passes that ran");
    report
}

/// Node counts before and after the one pass.
fn before_after(r: &PlanReport) -> (usize, usize) {
    (r.passes[0].nodes, r.passes[1].nodes)
}

/// Equal as the optimizer promises: dtype, shape, NaN at the same places and
/// the same bits elsewhere (signed zeros included). Only NaN payloads may differ.
#[track_caller]
fn assert_equivalent(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    assert_eq!(dims(actual), dims(expected), "{what}: shape");
    let (a, e) = (values(actual), values(expected));
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let same = (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits();
        assert!(same, "{what}: element {i}: {x:?} vs {y:?}\n{actual:?}\n{expected:?}");
    }
}

#[track_caller]
fn assert_bitwise(actual: &Tensor, expected: &Tensor, what: &str) {
    assert!(actual.bitwise_eq(expected), "{what}: not bitwise equal\n{actual:?}\n{expected:?}");
}

/// Run `fetches` in a session with `options` and in an unoptimized one;
/// the results must be bitwise equal. Returns the optimized results.
#[track_caller]
fn run_same(g: &Graph, options: SessionOptions, fetches: &[&Tensor], feeds: &[(&Tensor, &Tensor)]) -> Vec<Tensor> {
    let optimized = Session::with_options(g, options).run(fetches, feeds).unwrap();
    let plain = Session::with_options(g, SessionOptions::unoptimized()).run(fetches, feeds).unwrap();
    for (i, (o, p)) in optimized.iter().zip(&plain).enumerate() {
        assert_bitwise(o, p, &format!("fetch {i}"));
    }
    optimized
}

impl Rng {
    /// Uniform on [-r, r).
    fn symmetric(&mut self, r: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * r
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn tensor(&mut self, shape: &[usize], r: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.symmetric(r)).collect();
        f32s(&data, shape)
    }
}

// ---------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------

#[test]
fn pruning_drops_what_the_fetches_do_not_need() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4])?;
    let w = g.placeholder("w", DType::F32, [4])?; // needed only by the unused branch
    let used = ops::exp(&x)?;
    let unused = ops::mul(&ops::sin(&x)?, &w)?;
    let _unused2 = ops::add(&unused, 1.0)?;
    let y = ops::add(&used, &x)?;
    assert!(g.num_nodes() >= 8);

    let s = Session::with_options(&g, SessionOptions::unoptimized());
    let r = s.explain(&[&y], &[&x], &[])?;
    assert_eq!(r.passes.len(), 1, "only pruning runs unoptimized");
    assert_eq!(r.passes[0].pass, "pruning");
    // The feed, exp and add: no sin, no mul, no w (which is not fed and would be an error).
    assert_eq!(r.passes[0].nodes, 3, "{}", r.passes[0].text);
    assert_eq!(op_types(&r.passes[0].text), vec!["Placeholder", "Exp", "AddV2"]);
    assert_eq!(r.steps, 2);
    assert!(r.fused.is_empty());
    assert_eq!(r.in_place, 0);

    let xv = f32s(&[0.0, 1.0, -2.0, 0.5], &[4]);
    let out = run_same(&g, SessionOptions::unoptimized(), &[&y], &[(&x, &xv)]);
    assert_bitwise(&out[0], &ops::add(&ops::exp(&xv)?, &xv)?, "eager");

    // A fed intermediate cuts off its producers: x need not be fed.
    let mid = ops::sin(&x)?;
    let z = ops::neg(&mid)?;
    let r = s.explain(&[&z], &[&mid], &[])?;
    assert_eq!(op_types(&r.passes[0].text), vec!["Placeholder", "Neg"]);
    let out = s.run(&[&z], &[(&mid, &f32s(&[1.0, 2.0, 3.0, 4.0], &[4]))])?;
    assert_eq!(values(&out[0]), vec![-1.0, -2.0, -3.0, -4.0]);
    Ok(())
}

#[test]
fn pruning_after_a_pass_removes_the_nodes_it_orphaned() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3])?;
    let y = ops::exp(&ops::identity(&ops::identity(&x)?)?)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y], &[&x]);
    assert_eq!(before_after(&r), (4, 2));
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder", "Exp"]);
    assert_eq!(r.steps, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Algebraic simplification
// ---------------------------------------------------------------------------

/// `exp(f(x))` with only simplification on: `f` must disappear (the plan is
/// the feed and the exp), and results match an unoptimized run bitwise.
#[track_caller]
fn assert_removed(what: &str, f: impl Fn(&Tensor) -> Result<Tensor>) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3]).unwrap();
    let y = ops::exp(&f(&x).unwrap()).unwrap();
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y], &[&x]);
    let (before, after) = before_after(&r);
    assert!(before > 2, "{what}: {}", r.passes[0].text);
    assert_eq!(after, 2, "{what}: {}", r.passes[1].text);
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder", "Exp"], "{what}");
    assert_eq!(r.steps, 1, "{what}");
    // Signed zeros included: a rewrite that is not an identity for them shows here.
    let xv = f32s(&[1.5, -2.0, 0.0, 3.25, -0.5, -0.0], &[2, 3]);
    run_same(&g, simplification(), &[&y], &[(&x, &xv)]);
}

#[test]
fn simplification_removes_neutral_arithmetic() {
    assert_removed("x * 1", |x| ops::mul(x, 1.0));
    assert_removed("1 * x", |x| ops::mul(1.0, x));
    assert_removed("x / 1", |x| ops::div(x, 1.0));
    assert_removed("x + -0", |x| ops::add(x, -0.0));
    assert_removed("-0 + x", |x| ops::add(-0.0, x));
    assert_removed("x - 0", |x| ops::sub(x, 0.0));
    assert_removed("((x * 1) + -0) / 1", |x| ops::div(&ops::add(&ops::mul(x, 1.0)?, -0.0)?, 1.0));
}

/// `x + 0` is not `x` in floating point: `-0 + 0 = +0`. Nor is `x - (-0)`.
/// The optimized plan keeps them and returns what eager mode returns.
#[test]
fn simplification_keeps_additions_of_zero_that_change_a_negative_zero() {
    type Case = (&'static str, fn(&Tensor) -> Result<Tensor>);
    let cases: [Case; 3] =
        [("x + 0", |x| ops::add(x, 0.0)), ("0 + x", |x| ops::add(0.0, x)), ("x - -0", |x| ops::sub(x, -0.0))];
    for (what, f) in cases {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [3]).unwrap();
        let y = f(&x).unwrap();
        let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y], &[&x]);
        assert_eq!(before_after(&r).1, 3, "{what} is kept: {}", r.passes[1].text);
        let xv = f32s(&[-0.0, 0.0, -1.0], &[3]);
        let graph = run_same(&g, simplification(), &[&y], &[(&x, &xv)]).remove(0);
        let eager = f(&xv).unwrap();
        assert_bitwise(&graph, &eager, what);
        assert_eq!(graph.to_vec::<f32>().unwrap()[0].to_bits(), 0.0f32.to_bits(), "{what}: -0 becomes +0");
    }
    // Integer zeros have no sign: x + 0 is x.
    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [3]).unwrap();
    let y = ops::add(&x, &Tensor::scalar(0i32)).unwrap();
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y], &[&x]);
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder"], "integer x + 0 is removed");
}

#[test]
fn simplification_removes_identities_casts_and_transposes() {
    assert_removed("identity", ops::identity);
    assert_removed("stop_gradient", ops::stop_gradient);
    assert_removed("identity of identity", |x| ops::identity(&ops::identity(x)?));
    assert_removed("cast to the same dtype", |x| ops::cast(x, DType::F32));
    assert_removed("transpose by the identity permutation", |x| ops::transpose(x, &[0, 1]));
    assert_removed("double transpose", |x| ops::transpose(&ops::transpose(x, &[])?, &[]));
    assert_removed("reshape to the same shape", |x| ops::reshape(x, &[2, 3]));
}

#[test]
fn simplification_removes_a_reshape_round_trip() {
    // reshape(reshape(x, [3, 2]), [2, 3]) of an x of shape [2, 3] is x, as a
    // double transpose back to the identity is.
    assert_removed("reshape there and back", |x| ops::reshape(&ops::reshape(x, &[3, 2])?, &[2, 3]));
}

#[test]
fn simplification_keeps_neutral_ops_that_change_the_type() -> Result<()> {
    // Operations that look neutral but broadcast or convert stay.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3])?;
    let ones = g.constant(f32s(&[1.0; 6], &[2, 3]))?;
    let one11 = g.constant(f32s(&[1.0], &[1, 1]))?;
    let a = ops::mul(&x, &ones)?; // [2, 3]: a broadcast, not x
    let b = ops::mul(&x, &one11)?; // [1, 3]
    let c = ops::add(&x, &ops::zeros(&g, [2, 3], DType::F32)?)?; // zeros with more than one element
    let d = ops::cast(&x, DType::F64)?;
    let e = ops::mul(&x, 2.0)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&a, &b, &c, &d, &e], &[&x]);
    assert_eq!(before_after(&r).0, before_after(&r).1, "{}", r.passes[1].text);
    let xv = f32s(&[1.0, -0.0, f32::NAN], &[3]);
    run_same(&g, simplification(), &[&a, &b, &c, &d, &e], &[(&x, &xv)]);
    Ok(())
}

#[test]
fn simplification_composes_transposes() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3, 4])?;
    let t1 = ops::transpose(&x, &[1, 2, 0])?; // [3, 4, 2]
    let t2 = ops::transpose(&t1, &[0, 2, 1])?; // [3, 2, 4] = transpose(x, [1, 0, 2])
    let y = ops::neg(&t2)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y], &[&x]);
    assert_eq!(before_after(&r), (4, 3));
    assert_eq!(count_ops(&r.passes[1].text, "Transpose"), 1, "{}", r.passes[1].text);
    let xv = Rng(1).tensor(&[2, 3, 4], 5.0);
    let out = run_same(&g, simplification(), &[&y], &[(&x, &xv)]);
    assert_eq!(dims(&out[0]), vec![3, 2, 4]);
    // Against a direct transpose with the composed permutation.
    let direct = ops::neg(&ops::transpose(&xv, &[1, 0, 2])?)?;
    assert_bitwise(&out[0], &direct, "composed permutation");

    // An inner transpose that is also fetched stays; the outer one is composed.
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y, &t1], &[&x]);
    assert_eq!(count_ops(&r.passes[1].text, "Transpose"), 2);
    run_same(&g, simplification(), &[&y, &t1], &[(&x, &xv)]);
    Ok(())
}

#[test]
fn simplification_collapses_reshape_chains() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 6])?;
    let r1 = ops::reshape(&x, &[3, 4])?;
    let r2 = ops::reshape(&r1, &[4, -1])?;
    let r3 = ops::reshape(&r2, &[12])?;
    let y = ops::neg(&r3)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&y], &[&x]);
    assert_eq!(before_after(&r), (5, 3));
    assert_eq!(count_ops(&r.passes[1].text, "Reshape"), 1);
    let xv = Rng(2).tensor(&[2, 6], 1.0);
    let out = run_same(&g, simplification(), &[&y], &[(&x, &xv)]);
    assert_eq!(dims(&out[0]), vec![12]);

    // With an unknown batch dimension the chain still collapses and runs for any batch.
    let p = g.placeholder("p", DType::F32, [None, Some(6)])?;
    let q = ops::neg(&ops::reshape(&ops::reshape(&p, &[-1, 2, 3])?, &[-1, 3])?)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&q], &[&p]);
    assert_eq!(count_ops(&r.passes[1].text, "Reshape"), 1, "{}", r.passes[1].text);
    for batch in [1, 4] {
        let pv = Rng(batch as u64).tensor(&[batch, 6], 2.0);
        let out = run_same(&g, simplification(), &[&q], &[(&p, &pv)]);
        assert_eq!(dims(&out[0]), vec![batch * 2, 3]);
    }
    Ok(())
}

#[test]
fn simplification_turns_integer_x_minus_x_into_zeros() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [2, 3])?;
    let d = ops::sub(&x, &x)?;
    let y = ops::add(&d, &x)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&d, &y], &[&x]);
    assert_eq!(count_ops(&r.passes[1].text, "Sub"), 0, "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "Const"), 1);
    let xv = Tensor::from_slice(&[i32::MAX, i32::MIN, 0, -7, 5, 1], [2, 3])?;
    let out = run_same(&g, simplification(), &[&d, &y], &[(&x, &xv)]);
    assert_eq!(ints(&out[0]), vec![0; 6]);
    assert_eq!(ints(&out[1]), ints(&xv));

    // i64 too.
    let z = g.placeholder("z", DType::I64, [3])?;
    let dz = ops::sub(&z, &z)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&dz], &[&z]);
    assert_eq!(count_ops(&r.passes[1].text, "Sub"), 0);
    let zv = Tensor::from_slice(&[i64::MIN, 3, -1], [3])?;
    let out = run_same(&g, simplification(), &[&dz], &[(&z, &zv)]);
    assert_eq!(ints(&out[0]), vec![0; 3]);
    Ok(())
}

#[test]
fn simplification_keeps_float_x_minus_x() -> Result<()> {
    // inf - inf and NaN - NaN are NaN: x - x is not 0 for floats.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4])?;
    let d = ops::sub(&x, &x)?;
    let r = explain_one(&g, simplification(), "algebraic_simplification", &[&d], &[&x]);
    assert_eq!(before_after(&r), (2, 2));
    assert_eq!(count_ops(&r.passes[1].text, "Sub"), 1);
    let xv = f32s(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 2.5], &[4]);
    let out = Session::with_options(&g, SessionOptions::default()).run(&[&d], &[(&x, &xv)])?;
    let v = out[0].to_vec::<f32>()?;
    assert!(v[0].is_nan() && v[1].is_nan() && v[2].is_nan(), "{v:?}");
    assert_eq!(v[3], 0.0);
    run_same(&g, simplification(), &[&d], &[(&x, &xv)]);

    // f64 with an unknown dimension too.
    let y = g.placeholder("y", DType::F64, [None])?;
    let dy = ops::sub(&y, &y)?;
    let out = Session::new(&g).run(&[&dy], &[(&y, &Tensor::from(vec![f64::INFINITY, 1.0]))])?;
    let v = out[0].to_vec::<f64>()?;
    assert!(v[0].is_nan());
    assert_eq!(v[1], 0.0);
    Ok(())
}

/// What the default-graph test's thread reports.
struct DefaultGraphRun {
    y: Vec<f32>,
    want: Vec<f32>,
    z: Vec<i32>,
    before: usize,
    after: usize,
}

#[test]
fn simplification_with_the_graph_as_default() {
    // Compiling a plan while the graph is the thread's default (TF1's
    // `with g.as_default(): sess.run(...)`) must neither add nodes to that
    // graph nor deadlock. Run on a thread with a timeout so that a hang
    // fails the test instead of stalling the suite.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<DefaultGraphRun> {
            let g = Graph::new();
            let x = g.placeholder("x", DType::F32, [3])?;
            let y = ops::exp(&ops::mul(&x, 1.0)?)?;
            let i = g.placeholder("i", DType::I32, [2])?;
            let z = ops::sub(&i, &i)?;
            let nodes = g.num_nodes();
            let xv = f32s(&[0.0, 1.0, 2.0], &[3]);
            let iv = Tensor::from_slice(&[4i32, 5], [2])?;
            let want = ops::exp(&xv)?.to_vec::<f32>()?;
            let _default = g.as_default();
            let s = Session::new(&g);
            let out = s.run(&[&y, &z], &[(&x, &xv), (&i, &iv)])?;
            Ok(DefaultGraphRun {
                y: out[0].to_vec::<f32>()?,
                want,
                z: out[1].to_vec::<i32>()?,
                before: nodes,
                after: g.num_nodes(),
            })
        })();
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok(DefaultGraphRun { y, want, z, before, after })) => {
            assert_eq!(y, want);
            assert_eq!(z, vec![0, 0]);
            assert_eq!(before, after, "running a session added nodes to its graph");
        }
        Ok(Err(e)) => panic!("run failed: {e}"),
        Err(_) => panic!("Session::run hung while its graph was the default graph (plan compilation deadlocked)"),
    }
}

// ---------------------------------------------------------------------------
// Constant folding
// ---------------------------------------------------------------------------

#[test]
fn constant_folding_collapses_a_chain_into_one_const() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3])?;
    let c = g.constant(Tensor::from([0.5f32, -1.0, 2.0]))?;
    let e = ops::exp(&c)?;
    let m = ops::mul(&e, 2.0)?;
    let s = ops::sub(&m, &c)?;
    let t = ops::reshape(&ops::transpose(&ops::reshape(&s, &[3, 1])?, &[])?, &[3])?;
    let y = ops::add(&t, &x)?;
    let r = explain_one(&g, folding(1 << 20), "constant_folding", &[&y], &[&x]);
    // x, c, exp, 2, mul, sub, reshape, transpose, reshape, add  ->  x, Const, add
    assert_eq!(before_after(&r), (10, 3), "{}", r.passes[1].text);
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder", "Const", "AddV2"]);
    assert_eq!(r.steps, 2);
    let xv = f32s(&[1.0, 2.0, 3.0], &[3]);
    let out = run_same(&g, folding(1 << 20), &[&y, &s], &[(&x, &xv)]);
    let cv = Tensor::from([0.5f32, -1.0, 2.0]);
    let eager = ops::add(&ops::sub(&ops::mul(&ops::exp(&cv)?, 2.0)?, &cv)?, &xv)?;
    assert_bitwise(&out[0], &eager, "eager");

    // With the limit from PassOptions::none() (0) nothing folds.
    let r = explain_one(&g, folding(0), "constant_folding", &[&y], &[&x]);
    assert_eq!(before_after(&r), (10, 10));
    Ok(())
}

#[test]
fn constant_folding_respects_the_size_limit() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3])?;
    let big = g.constant(Tensor::from([1.0f32, 2.0, 3.0]))?;
    let small = g.constant(2.0f32)?;
    let small2 = ops::mul(&small, 3.0)?; // 1 element: folded
    let big2 = ops::exp(&big)?; // 3 elements: over the limit of 2
    let y = ops::add(&ops::mul(&big2, &small2)?, &x)?;
    let r = explain_one(&g, folding(2), "constant_folding", &[&y], &[&x]);
    // x, big, exp, small, 3, mul, mul, add  ->  x, big, exp, Const(6), mul, add
    assert_eq!(before_after(&r), (8, 6), "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "Exp"), 1);
    assert_eq!(count_ops(&r.passes[1].text, "Mul"), 1);
    let xv = f32s(&[0.0, -1.0, 1.0], &[3]);
    run_same(&g, folding(2), &[&y], &[(&x, &xv)]);
    Ok(())
}

#[test]
fn constant_folding_leaves_integer_division_by_zero_to_fail_at_run_time() -> Result<()> {
    let g = Graph::new();
    let a = g.constant(Tensor::from([7i32, 8]))?;
    let z = g.constant(Tensor::from([1i32, 0]))?;
    let d = ops::truncate_div(&a, &z)?;
    let y = ops::add(&d, 1i64)?;
    let r = explain_one(&g, folding(1 << 20), "constant_folding", &[&y], &[]);
    assert_eq!(count_ops(&r.passes[1].text, "RealDiv"), 1, "{}", r.passes[1].text);
    let plain = Session::with_options(&g, SessionOptions::unoptimized()).run(&[&y], &[]).unwrap_err();
    for options in [folding(1 << 20), SessionOptions::default()] {
        let e = Session::with_options(&g, options).run(&[&y], &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("division by zero"), "{e}");
        assert_eq!(e.message(), plain.message());
        let ctx = e.op_context().expect("the failing node");
        assert_eq!(ctx.op, "RealDiv");
        assert_eq!(ctx.node.as_deref(), Some("real_div"));
        assert_eq!(ctx, plain.op_context().unwrap());
    }
    // The sibling that does not divide by zero still folds and runs.
    let ok = ops::truncate_div(&a, &ops::add(&z, 1i64)?)?;
    let out = run_same(&g, folding(1 << 20), &[&ok], &[]);
    assert_eq!(ints(&out[0]), vec![3, 8]);
    Ok(())
}

#[test]
fn constant_folding_never_looks_past_a_feed() -> Result<()> {
    // A fed constant takes the fed value: nothing computed from it is folded.
    let g = Graph::new();
    let c = g.constant(2.0f32)?;
    let y = ops::mul(&ops::exp(&c)?, 3.0)?;
    let five = Tensor::scalar(5.0f32);
    let s = Session::with_options(&g, folding(1 << 20));
    let expect = |v: f32| ops::mul(&ops::exp(&Tensor::scalar(v)).unwrap(), 3.0).unwrap();
    assert_bitwise(&s.run(&[&y], &[(&c, &five)])?[0], &expect(5.0), "fed constant");
    assert_bitwise(&s.run(&[&y], &[])?[0], &expect(2.0), "folded constant");
    let r = s.explain(&[&y], &[&c], &[])?;
    assert_eq!(count_ops(&r.passes[1].text, "Exp"), 1);
    Ok(())
}

#[test]
fn constant_folding_skips_random_and_variables() -> Result<()> {
    let g = Graph::new();
    let r = ops::random_uniform(&g, [3], 0.0, 1.0, DType::F32, Some(3))?;
    let v = Variable::in_graph(&g, "v", &Tensor::from([1.0f32, 2.0, 3.0]), false)?;
    let y = ops::add(&ops::exp(&r)?, &ops::exp(&v.read())?)?;
    let s = Session::with_options(&g, folding(1 << 20));
    s.run_targets(&[&g.global_variables_initializer()?])?;
    let report = s.explain(&[&y], &[], &[])?;
    assert_eq!(before_after(&report).0, before_after(&report).1, "{}", report.passes[1].text);
    let a = s.run(&[&y], &[])?;
    let b = s.run(&[&y], &[])?;
    assert!(!a[0].bitwise_eq(&b[0]), "each run draws new numbers");
    Ok(())
}

// ---------------------------------------------------------------------------
// Common subexpression elimination
// ---------------------------------------------------------------------------

#[test]
fn cse_computes_identical_subexpressions_once() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4])?;
    let a1 = ops::mul(&ops::exp(&x)?, 2.0)?;
    let a2 = ops::mul(&ops::exp(&x)?, 2.0)?;
    let y = ops::add(&a1, &a2)?;
    let r = explain_one(&g, cse(), "common_subexpression_elimination", &[&y], &[&x]);
    // x, exp, 2, mul, exp, 2, mul, add  ->  x, exp, 2, mul, add
    assert_eq!(before_after(&r), (8, 5), "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "Exp"), 1);
    let xv = f32s(&[0.0, 1.0, -1.0, 0.25], &[4]);
    run_same(&g, cse(), &[&y, &a1, &a2], &[(&x, &xv)]);

    // Different attributes or inputs are not merged.
    let s1 = ops::sum(&x, 0, false)?;
    let s2 = ops::sum(&x, 0, true)?;
    let m1 = ops::mul(&x, 2.0)?;
    let m2 = ops::mul(&x, 3.0)?;
    let m3 = ops::mul(&x, -2.0)?;
    let r = explain_one(&g, cse(), "common_subexpression_elimination", &[&s1, &s2, &m1, &m2, &m3], &[&x]);
    assert_eq!(before_after(&r).0, before_after(&r).1, "{}", r.passes[1].text);
    run_same(&g, cse(), &[&s1, &s2, &m1, &m2, &m3], &[(&x, &xv)]);
    Ok(())
}

#[test]
fn cse_keeps_distinct_f64_constants_apart() -> Result<()> {
    // Two f64 constants equal only after rounding to f32 are different constants.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [2])?;
    let a = g.constant(3.0f64)?;
    let b = g.constant(3.0f64 + 2f64.powi(-30))?;
    let ya = ops::mul(&x, &a)?;
    let yb = ops::mul(&x, &b)?;
    let xv = Tensor::from(vec![1.0f64, -2.0]);
    let r = explain_one(&g, cse(), "common_subexpression_elimination", &[&ya, &yb, &b], &[&x]);
    assert_eq!(before_after(&r).0, before_after(&r).1, "merged distinct constants:\n{}", r.passes[1].text);
    let out = Session::with_options(&g, cse()).run(&[&ya, &yb, &b], &[(&x, &xv)])?;
    assert_eq!(out[2].to_scalar::<f64>()?, 3.0 + 2f64.powi(-30));
    assert_eq!(out[1].to_vec::<f64>()?, vec![3.0 + 2f64.powi(-30), -2.0 * (3.0 + 2f64.powi(-30))]);
    run_same(&g, cse(), &[&ya, &yb, &b], &[(&x, &xv)]);
    Ok(())
}

#[test]
fn cse_does_not_merge_random_ops() -> Result<()> {
    let g = Graph::new();
    let r1 = ops::random_uniform(&g, [5], 0.0, 1.0, DType::F32, Some(17))?;
    let r2 = ops::random_uniform(&g, [5], 0.0, 1.0, DType::F32, Some(17))?;
    let e1 = ops::exp(&r1)?;
    let e2 = ops::exp(&r2)?;
    let r = explain_one(&g, cse(), "common_subexpression_elimination", &[&e1, &e2], &[]);
    assert_eq!(count_ops(&r.passes[1].text, "RandomUniform"), 2, "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "Exp"), 2);

    // Each node keeps its own stream: drawing r1 twice does not advance r2.
    for options in [cse(), SessionOptions::default(), SessionOptions::unoptimized()] {
        let s = Session::with_options(&g, options);
        let first = s.run(&[&r1], &[])?.remove(0);
        let second = s.run(&[&r1], &[])?.remove(0);
        assert!(!first.bitwise_eq(&second));
        let r2_first = s.run(&[&r2], &[])?.remove(0);
        assert_bitwise(&r2_first, &first, "r2's first draw (same seed, own counter)");
        let both = s.run(&[&e1, &e2], &[])?;
        assert!(!both[0].bitwise_eq(&both[1]), "r1 is on its third draw, r2 on its second");
        assert_bitwise(&both[1], &ops::exp(&second)?, "r2's second draw");
    }
    Ok(())
}

#[test]
fn cse_does_not_merge_variables() -> Result<()> {
    let g = Graph::new();
    let init = Tensor::from([1.0f32, 2.0]);
    let v1 = Variable::in_graph(&g, "v1", &init, true)?;
    let v2 = Variable::in_graph(&g, "v2", &init, true)?;
    let y1 = ops::mul(&v1.read(), 2.0)?;
    let y2 = ops::mul(&v2.read(), 2.0)?;
    let set = v1.assign(&g.constant(Tensor::from([5.0f32, 6.0]))?)?;
    let s = Session::with_options(&g, cse());
    s.run_targets(&[&g.global_variables_initializer()?])?;
    s.run_targets(&[&set.op().unwrap()])?;
    let report = s.explain(&[&y1, &y2], &[], &[])?;
    assert_eq!(count_ops(&report.passes[1].text, "VariableV2"), 2, "{}", report.passes[1].text);
    let out = s.run(&[&y1, &y2], &[])?;
    assert_eq!(out[0].to_vec::<f32>()?, vec![10.0, 12.0]);
    assert_eq!(out[1].to_vec::<f32>()?, vec![2.0, 4.0]);
    Ok(())
}

// ---------------------------------------------------------------------------
// Matmul fusion
// ---------------------------------------------------------------------------

#[test]
fn matmul_bias_relu_becomes_one_fused_step() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3])?;
    let w = g.placeholder("w", DType::F32, [3, 5])?;
    let b = g.placeholder("b", DType::F32, [5])?;
    let y = ops::relu(&ops::add(&ops::matmul(&x, &w)?, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y], &[&x, &w, &b]);
    assert_eq!(before_after(&r), (6, 4), "{}", r.passes[1].text);
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder", "Placeholder", "Placeholder", "_FusedMatMul"]);
    assert_eq!(r.steps, 1);
    assert_eq!(r.fused.len(), 1);
    assert_eq!(r.fused[0].1.trim(), "matmul + bias + relu");
    let mut rng = Rng(3);
    let feeds = [rng.tensor(&[4, 3], 2.0), rng.tensor(&[3, 5], 2.0), rng.tensor(&[5], 2.0)];
    let out = run_same(&g, matmul_fusion(), &[&y], &[(&x, &feeds[0]), (&w, &feeds[1]), (&b, &feeds[2])]);
    // And against eager.
    let eager = ops::relu(&ops::add(&ops::matmul(&feeds[0], &feeds[1])?, &feeds[2])?)?;
    assert_bitwise(&out[0], &eager, "eager");
    Ok(())
}

#[test]
fn conv_bias_activation_becomes_one_fused_step() -> Result<()> {
    let mut rng = Rng(5);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(9), Some(7), Some(3)])?;
    let w = g.placeholder("w", DType::F32, [3, 3, 3, 8])?;
    let b = g.placeholder("b", DType::F32, [8])?;
    let feeds_v = [rng.tensor(&[2, 9, 7, 3], 2.0), rng.tensor(&[3, 3, 3, 8], 1.0), rng.tensor(&[8], 1.0)];
    let feeds = [(&x, &feeds_v[0]), (&w, &feeds_v[1]), (&b, &feeds_v[2])];
    let same = ops::ConvOptions::new(ops::Padding::Same);
    let y = ops::relu(&ops::add(&ops::convolution(&x, &w, &same.clone().strides(&[2, 1]))?, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y], &[&x, &w, &b]);
    assert_eq!(before_after(&r), (6, 4), "{}", r.passes[1].text);
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder", "Placeholder", "Placeholder", "_FusedConv2D"]);
    assert_eq!(r.fused[0].1.trim(), "conv + bias + relu");
    // Bit for bit the separate ops (run_same compares with every pass off), and eager.
    let out = run_same(&g, matmul_fusion(), &[&y], &feeds);
    let eager =
        ops::relu(&ops::add(&ops::convolution(&feeds_v[0], &feeds_v[1], &same.strides(&[2, 1]))?, &feeds_v[2])?)?;
    assert_bitwise(&out[0], &eager, "eager");
    // Grouped, a 1x1 window, and no activation; the bias on the left.
    let w2 = g.placeholder("w2", DType::F32, [1, 1, 1, 8])?;
    let grouped = ops::ConvOptions::new(ops::Padding::Valid).groups(3);
    let w3 = g.placeholder("w3", DType::F32, [2, 2, 1, 6])?;
    let b6 = g.placeholder("b6", DType::F32, [6])?;
    let y1 = ops::add(&b6, &ops::convolution(&x, &w3, &grouped)?)?;
    let pointwise = ops::convolution(
        &ops::slice(&x, &[0, 0, 0, 0], &[-1, -1, -1, 1])?,
        &w2,
        &ops::ConvOptions::new(ops::Padding::Valid),
    )?;
    let y2 = ops::tanh(&ops::add(&pointwise, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y1, &y2], &[&x, &w3, &b6, &w2, &b]);
    assert_eq!(count_ops(&r.passes[1].text, "_FusedConv2D"), 2, "{}", r.passes[1].text);
    let more =
        [(&w3, &rng.tensor(&[2, 2, 1, 6], 1.0)), (&b6, &rng.tensor(&[6], 1.0)), (&w2, &rng.tensor(&[1, 1, 1, 8], 1.0))];
    let all: Vec<_> = feeds.iter().copied().chain(more.iter().copied()).collect();
    run_same(&g, matmul_fusion(), &[&y1, &y2], &all);
    // f64 convolutions stay as they are.
    let x64 = g.placeholder("x64", DType::F64, [1, 4, 4, 1])?;
    let w64 = g.placeholder("w64", DType::F64, [2, 2, 1, 2])?;
    let b64 = g.placeholder("b64", DType::F64, [2])?;
    let y64 = ops::relu(&ops::add(&ops::convolution(&x64, &w64, &ops::ConvOptions::new(ops::Padding::Valid))?, &b64)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y64], &[&x64, &w64, &b64]);
    assert!(r.fused.is_empty());
    Ok(())
}

#[test]
fn matmul_fusion_variants() -> Result<()> {
    let mut rng = Rng(4);
    let (xv, wv, bv) = (rng.tensor(&[6, 4], 3.0), rng.tensor(&[5, 4], 1.0), rng.tensor(&[5], 1.0));
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)])?;
    let w = g.placeholder("w", DType::F32, [5, 4])?;
    let b = g.placeholder("b", DType::F32, [5])?;
    let feeds = [(&x, &xv), (&w, &wv), (&b, &bv)];
    let mm = ops::matmul_t(&x, &w, false, true)?;
    // Every activation the fused kernel applies; bias on either side.
    let acts: [(Unary, &str); 8] = [
        (ops::relu, "relu"),
        (ops::relu6, "relu6"),
        (ops::sigmoid, "sigmoid"),
        (ops::tanh, "tanh"),
        (ops::elu, "elu"),
        (ops::selu, "selu"),
        (ops::gelu, "gelu"),
        (ops::softplus, "softplus"),
    ];
    for (i, (act, name)) in acts.iter().enumerate() {
        let mm = ops::matmul_t(&x, &w, false, true)?;
        let pre = if i % 2 == 0 { ops::add(&mm, &b)? } else { ops::add(&b, &mm)? };
        let y = act(&pre)?;
        let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y], &[&x, &w, &b]);
        assert_eq!(count_ops(&r.passes[1].text, "_FusedMatMul"), 1, "{name}: {}", r.passes[1].text);
        assert_eq!(r.fused[0].1.trim(), format!("matmul + bias + {name}"));
        run_same(&g, matmul_fusion(), &[&y], &feeds);
    }

    // The add is also fetched: matmul + bias fused, the activation separate.
    let pre = ops::add(&mm, &b)?;
    let y = ops::tanh(&pre)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y, &pre], &[&x, &w, &b]);
    assert_eq!(count_ops(&r.passes[1].text, "_FusedMatMul"), 1);
    assert_eq!(count_ops(&r.passes[1].text, "Tanh"), 1);
    assert_eq!(r.fused[0].1.trim(), "matmul + bias");
    run_same(&g, matmul_fusion(), &[&y, &pre], &feeds);

    // Batched, and degenerate sizes.
    let x3 = g.placeholder("x3", DType::F32, [2, 3, 4])?;
    let y = ops::relu(&ops::add(&ops::matmul_t(&x3, &w, false, true)?, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y], &[&x3, &w, &b]);
    assert_eq!(r.fused.len(), 1);
    run_same(&g, matmul_fusion(), &[&y], &[(&x3, &rng.tensor(&[2, 3, 4], 1.0)), (&w, &wv), (&b, &bv)]);
    let empty_rows = f32s(&[], &[0, 4]);
    let y = ops::sigmoid(&ops::add(&ops::matmul_t(&x, &w, false, true)?, &b)?)?;
    let out = run_same(&g, matmul_fusion(), &[&y], &[(&x, &empty_rows), (&w, &wv), (&b, &bv)]);
    assert_eq!(dims(&out[0]), vec![0, 5]);
    let k0 = g.placeholder("k0", DType::F32, [3, 0])?;
    let w0 = g.placeholder("w0", DType::F32, [0, 5])?;
    let y = ops::relu(&ops::add(&ops::matmul(&k0, &w0)?, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y], &[&k0, &w0, &b]);
    assert_eq!(r.fused.len(), 1);
    let out =
        run_same(&g, matmul_fusion(), &[&y], &[(&k0, &f32s(&[], &[3, 0])), (&w0, &f32s(&[], &[0, 5])), (&b, &bv)]);
    assert_eq!(dims(&out[0]), vec![3, 5]);

    // An activation the kernel does not apply stays a separate op.
    let mm2 = ops::matmul_t(&x, &w, false, true)?;
    let y = ops::exp(&ops::add(&mm2, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y], &[&x, &w, &b]);
    assert_eq!(op_types(&r.passes[1].text).iter().filter(|t| *t != "Placeholder").count(), 2);
    assert_eq!(r.fused[0].1.trim(), "matmul + bias");
    run_same(&g, matmul_fusion(), &[&y], &feeds);
    Ok(())
}

#[test]
fn matmul_fusion_skips_shared_matmul_outputs_and_other_biases() -> Result<()> {
    let mut rng = Rng(5);
    let (xv, wv, bv, mv) =
        (rng.tensor(&[4, 3], 2.0), rng.tensor(&[3, 5], 2.0), rng.tensor(&[5], 2.0), rng.tensor(&[4, 5], 1.0));
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3])?;
    let w = g.placeholder("w", DType::F32, [3, 5])?;
    let b = g.placeholder("b", DType::F32, [5])?;
    let m = g.placeholder("m", DType::F32, [4, 5])?;
    let feeds = [(&x, &xv), (&w, &wv), (&b, &bv), (&m, &mv)];

    // The matmul output has another consumer.
    let z = ops::matmul(&x, &w)?;
    let y = ops::relu(&ops::add(&z, &b)?)?;
    let other = ops::mul(&z, 2.0)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y, &other], &[&x, &w, &b]);
    assert_eq!(before_after(&r).0, before_after(&r).1);
    assert_eq!(count_ops(&r.passes[1].text, "_FusedMatMul"), 0, "{}", r.passes[1].text);
    assert!(r.fused.is_empty());
    run_same(&g, matmul_fusion(), &[&y, &other], &feeds);

    // The matmul output is fetched.
    let z2 = ops::matmul(&x, &w)?;
    let y2 = ops::relu(&ops::add(&z2, &b)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y2, &z2], &[&x, &w, &b]);
    assert!(r.fused.is_empty());
    run_same(&g, matmul_fusion(), &[&y2, &z2], &feeds);

    // A full matrix instead of a bias vector, and an f64 matmul: not fused.
    let z3 = ops::matmul(&x, &w)?;
    let y3 = ops::relu(&ops::add(&z3, &m)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y3], &[&x, &w, &m]);
    assert!(r.fused.is_empty(), "{:?}", r.fused);
    run_same(&g, matmul_fusion(), &[&y3], &feeds);
    let xd = ops::cast(&x, DType::F64)?;
    let wd = ops::cast(&w, DType::F64)?;
    let bd = ops::cast(&b, DType::F64)?;
    let y4 = ops::relu(&ops::add(&ops::matmul(&xd, &wd)?, &bd)?)?;
    let r = explain_one(&g, matmul_fusion(), "matmul_fusion", &[&y4], &[&x, &w, &b]);
    assert!(r.fused.is_empty());
    run_same(&g, matmul_fusion(), &[&y4], &feeds);
    Ok(())
}

// ---------------------------------------------------------------------------
// Elementwise fusion
// ---------------------------------------------------------------------------

#[test]
fn elementwise_fusion_of_a_chain() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3, 5])?;
    let y = ops::tanh(&ops::add(&ops::mul(&ops::exp(&ops::neg(&x)?)?, 2.0)?, 1.0)?)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&x]);
    // x, neg, exp, 2, mul, 1, add, tanh  ->  x, fused
    assert_eq!(before_after(&r), (8, 2), "{}", r.passes[1].text);
    assert_eq!(op_types(&r.passes[1].text), vec!["Placeholder", "FusedElementwise"]);
    assert_eq!(r.steps, 1);
    assert_eq!(r.fused.len(), 1);
    let program = &r.fused[0].1;
    for op in ["neg", "exp", "mul", "add", "tanh", "input 0"] {
        assert!(program.contains(op), "{op} in\n{program}");
    }
    assert!(program.contains("<- result"));
    assert!(!program.contains("then"), "no reduction:\n{program}");
    let xv = Rng(6).tensor(&[3, 5], 3.0);
    let out = run_same(&g, elementwise_fusion(), &[&y], &[(&x, &xv)]);
    let eager = ops::tanh(&ops::add(&ops::mul(&ops::exp(&ops::neg(&xv)?)?, 2.0)?, 1.0)?)?;
    assert_bitwise(&out[0], &eager, "eager");
    Ok(())
}

#[test]
fn elementwise_fusion_of_every_unary_and_binary_op() -> Result<()> {
    // Each f32 unary op and each arithmetic binary op inside a fused chain
    // gives the unfused bits, on values that reach edge cases.
    let data: Vec<f32> = vec![
        -3.5,
        -2.0,
        -1.0,
        -0.5,
        -0.0,
        0.0,
        0.25,
        0.5,
        1.0,
        1.5,
        2.5,
        3.0,
        7.0,
        20.0,
        -20.0,
        100.0,
        -100.0,
        1e-30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.0,
        -88.0,
        0.75,
    ];
    let n = data.len();
    let xv = f32s(&data, &[n]);
    let yv = f32s(&data.iter().rev().copied().collect::<Vec<_>>(), &[n]);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [n])?;
    let y = g.placeholder("y", DType::F32, [n])?;
    let feeds = [(&x, &xv), (&y, &yv)];
    let unary: Vec<UnaryOp> = UnaryOp::ALL
        .iter()
        .copied()
        .filter(|f| !matches!(f, UnaryOp::LogicalNot | UnaryOp::IsNan | UnaryOp::IsFinite | UnaryOp::IsInf))
        .collect();
    let mut fetches = Vec::new();
    for f in &unary {
        // neg(f(x * 1.5)): three ops, one fused program.
        let t = ops::neg(&apply_unary(*f, &ops::mul(&x, 1.5)?)?)?;
        fetches.push((format!("{f:?}"), t));
    }
    let binary: [Binary; 9] = [
        |a, b| ops::add(a, b),
        |a, b| ops::sub(a, b),
        |a, b| ops::mul(a, b),
        |a, b| ops::div(a, b),
        |a, b| ops::maximum(a, b),
        |a, b| ops::minimum(a, b),
        |a, b| ops::pow(a, b),
        |a, b| ops::floor_mod(a, b),
        |a, b| ops::floor_div(a, b),
    ];
    for f in binary {
        let t = ops::abs(&f(&ops::neg(&x)?, &y)?)?;
        fetches.push(("binary".into(), t));
    }
    for f in [ops::is_nan, ops::is_finite] {
        let t = ops::logical_not(&f(&ops::exp(&x)?)?)?;
        fetches.push(("predicate".into(), t));
    }
    let refs: Vec<&Tensor> = fetches.iter().map(|(_, t)| t).collect();
    let r = Session::with_options(&g, elementwise_fusion()).explain(&refs, &[&x, &y], &[])?;
    assert_eq!(r.fused.len(), fetches.len(), "every chain fuses");
    let opt = Session::with_options(&g, elementwise_fusion()).run(&refs, &feeds)?;
    let plain = Session::with_options(&g, SessionOptions::unoptimized()).run(&refs, &feeds)?;
    for ((name, _), (o, p)) in fetches.iter().zip(opt.iter().zip(&plain)) {
        assert_bitwise(o, p, name);
    }
    Ok(())
}

fn apply_unary(f: UnaryOp, x: &Tensor) -> Result<Tensor> {
    use UnaryOp::*;
    match f {
        Neg => ops::neg(x),
        Abs => ops::abs(x),
        Sign => ops::sign(x),
        Square => ops::square(x),
        Relu => ops::relu(x),
        Relu6 => ops::relu6(x),
        Exp => ops::exp(x),
        Expm1 => ops::expm1(x),
        Log => ops::log(x),
        Log1p => ops::log1p(x),
        Sqrt => ops::sqrt(x),
        Rsqrt => ops::rsqrt(x),
        Reciprocal => ops::reciprocal(x),
        Sin => ops::sin(x),
        Cos => ops::cos(x),
        Tan => ops::tan(x),
        Tanh => ops::tanh(x),
        Sigmoid => ops::sigmoid(x),
        Elu => ops::elu(x),
        Selu => ops::selu(x),
        Gelu => ops::gelu(x),
        Softplus => ops::softplus(x),
        Erf => ops::erf(x),
        Lgamma => ops::lgamma(x),
        Digamma => ops::digamma(x),
        Erfinv => ops::erfinv(x),
        Ndtri => ops::ndtri(x),
        BesselI0e => ops::bessel_i0e(x),
        BesselI1e => ops::bessel_i1e(x),
        Erfc => ops::erfc(x),
        Sinh => ops::sinh(x),
        Cosh => ops::cosh(x),
        Asin => ops::asin(x),
        Acos => ops::acos(x),
        Atan => ops::atan(x),
        Asinh => ops::asinh(x),
        Acosh => ops::acosh(x),
        Atanh => ops::atanh(x),
        Floor => ops::floor(x),
        Ceil => ops::ceil(x),
        Round => ops::round(x),
        LogicalNot => ops::logical_not(x),
        IsNan => ops::is_nan(x),
        IsFinite => ops::is_finite(x),
        IsInf => ops::is_inf(x),
    }
}

#[test]
fn elementwise_fusion_of_a_tree_with_broadcasting() -> Result<()> {
    let g = Graph::new();
    let m = g.placeholder("m", DType::F32, [4, 5])?;
    let bias = g.placeholder("bias", DType::F32, [5])?;
    let col = g.placeholder("col", DType::F32, [4, 1])?;
    let s = g.placeholder("s", DType::F32, Shape::scalar())?;
    let c = g.constant(f32s(&[0.5, 1.0, 1.5, 2.0, 2.5], &[5]))?;
    // ((m + bias) * s - sigmoid(bias)) / (col * col + 1) + c + 0.5
    let a = ops::mul(&ops::add(&m, &bias)?, &s)?;
    let b = ops::sub(&a, &ops::sigmoid(&bias)?)?;
    let d = ops::add(&ops::mul(&col, &col)?, 1.0)?;
    let y = ops::add(&ops::add(&ops::div(&b, &d)?, &c)?, 0.5)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&m, &bias, &col, &s]);
    assert_eq!(r.fused.len(), 1, "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "FusedElementwise"), 1);
    // Feeds, the non-scalar constant and the fused node.
    assert_eq!(before_after(&r).1, 6, "{}", r.passes[1].text);
    let program = &r.fused[0].1;
    for k in 0..5 {
        assert!(program.contains(&format!("input {k}")), "{program}");
    }
    assert!(program.contains("as f32"), "scalar immediates: {program}");
    let mut rng = Rng(7);
    let (mv, bv, cv, sv) =
        (rng.tensor(&[4, 5], 2.0), rng.tensor(&[5], 2.0), rng.tensor(&[4, 1], 2.0), Tensor::scalar(-1.25f32));
    let out = run_same(&g, elementwise_fusion(), &[&y], &[(&m, &mv), (&bias, &bv), (&col, &cv), (&s, &sv)]);
    assert_eq!(dims(&out[0]), vec![4, 5]);

    // Fed values that are views: a transpose (non-contiguous), and slices
    // that start inside their buffers.
    let mt = ops::transpose(&rng.tensor(&[5, 4], 2.0), &[])?;
    run_same(&g, elementwise_fusion(), &[&y], &[(&m, &mt), (&bias, &bv), (&col, &cv), (&s, &sv)]);
    let ms = ops::slice(&rng.tensor(&[6, 5], 2.0), &[2, 0], &[4, 5])?;
    let bs = ops::slice(&rng.tensor(&[9], 2.0), &[3], &[5])?;
    let cs = ops::slice(&rng.tensor(&[5, 3], 2.0), &[1, 2], &[4, 1])?;
    let ss = ops::reshape(&ops::slice(&rng.tensor(&[3], 2.0), &[2], &[1])?, &[])?;
    run_same(&g, elementwise_fusion(), &[&y], &[(&m, &ms), (&bias, &bs), (&col, &cs), (&s, &ss)]);
    Ok(())
}

#[test]
fn elementwise_fusion_with_select_comparisons_and_casts() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3, 4])?;
    let y = g.placeholder("y", DType::F32, [4])?;
    let flag = g.placeholder("flag", DType::Bool, [3, 1])?;
    // f32 result through bool intermediates.
    let pos = ops::greater(&x, 0.0)?;
    let small = ops::less(&x, &y)?;
    let both = ops::logical_and(&pos, &ops::logical_not(&small)?)?;
    let picked = ops::select(&both, &ops::mul(&x, 2.0)?, &ops::cast(&ops::less_equal(&x, -1.0)?, DType::F32)?)?;
    let f = ops::add(&picked, &ops::cast(&ops::cast(&x, DType::Bool)?, DType::F32)?)?;
    let f = ops::select(&flag, &f, &ops::neg(&y)?)?;
    let f = ops::select(&ops::equal(&x, &y)?, 7.0, &f)?;
    // A bool result: a comparison tree.
    let bools = ops::logical_or(&ops::not_equal(&ops::cast(&pos, DType::F32)?, &y)?, &flag)?;
    let fetches = [&f, &bools];
    let r = Session::with_options(&g, elementwise_fusion()).explain(&fetches, &[&x, &y, &flag], &[])?;
    assert_eq!(r.passes[1].pass, "elementwise_fusion");
    assert_eq!(count_ops(&r.passes[1].text, "FusedElementwise"), 2, "{}", r.passes[1].text);
    let xv = f32s(&[-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, -0.5, f32::NAN, 4.0, -1.5, 1.0], &[3, 4]);
    let yv = f32s(&[0.5, 1.0, 0.0, -1.0], &[4]);
    let fv = Tensor::from_slice(&[true, false, true], [3, 1])?;
    let out = run_same(&g, elementwise_fusion(), &fetches, &[(&x, &xv), (&y, &yv), (&flag, &fv)]);
    assert_eq!(out[1].dtype(), DType::Bool);
    Ok(())
}

#[test]
fn elementwise_fusion_of_a_select_between_bool_values() -> Result<()> {
    // select(cond, a, b) with bool branches is an elementwise op of the
    // fused kind (bool in, bool out) and must select as the unfused op does.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4])?;
    let a = g.placeholder("a", DType::Bool, [4])?;
    let y = ops::select(&ops::greater(&x, 0.0)?, &a, &ops::logical_not(&a)?)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&x, &a]);
    assert_eq!(r.fused.len(), 1, "{}", r.passes[1].text);
    let xv = f32s(&[1.0, -1.0, 2.0, -2.0], &[4]);
    let av = Tensor::from_slice(&[true, true, false, false], [4])?;
    let out = Session::with_options(&g, elementwise_fusion()).run(&[&y], &[(&x, &xv), (&a, &av)])?;
    assert_eq!(out[0].to_vec::<bool>()?, vec![true, false, false, true]);
    run_same(&g, elementwise_fusion(), &[&y], &[(&x, &xv), (&a, &av)]);
    Ok(())
}

#[test]
fn elementwise_fusion_absorbs_trailing_reductions() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3, 4, 5])?;
    let b = g.placeholder("b", DType::F32, [5])?;
    let mut rng = Rng(8);
    let (xv, bv) = (rng.tensor(&[3, 4, 5], 3.0), rng.tensor(&[5], 1.0));
    type Reduce = fn(&Tensor, Axes, bool) -> Result<Tensor>;
    let reductions: [(Reduce, &str); 4] = [
        (|t, a, k| ops::sum(t, a, k), "sum"),
        (|t, a, k| ops::mean(t, a, k), "mean"),
        (|t, a, k| ops::max(t, a, k), "max"),
        (|t, a, k| ops::min(t, a, k), "min"),
    ];
    for (reduce, name) in reductions {
        for (axes, fused) in [
            (Axes::List(vec![-1]), true),
            (Axes::List(vec![1, 2]), true),
            (Axes::All, true),
            (Axes::List(vec![0]), false),
            (Axes::List(vec![1]), false),
            (Axes::List(vec![0, 2]), false),
        ] {
            for keepdims in [false, true] {
                let what = format!("{name} over {axes:?} keepdims={keepdims}");
                let e = ops::exp(&ops::mul(&ops::add(&x, &b)?, 0.5)?)?;
                let y = reduce(&e, axes.clone(), keepdims)?;
                let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&x, &b]);
                assert_eq!(r.fused.len(), 1, "{what}: {}", r.passes[1].text);
                let program = &r.fused[0].1;
                if fused {
                    assert!(program.contains(&format!("then {name} over axes")), "{what}: {program}");
                    assert_eq!(r.steps, 1, "{what}");
                } else {
                    assert!(!program.contains("then"), "{what}: {program}");
                    assert_eq!(r.steps, 2, "{what}");
                }
                let out = run_same(&g, elementwise_fusion(), &[&y], &[(&x, &xv), (&b, &bv)]);
                let eager = reduce(&ops::exp(&ops::mul(&ops::add(&xv, &bv)?, 0.5)?)?, axes.clone(), keepdims)?;
                assert_bitwise(&out[0], &eager, &what);
            }
        }
    }
    // A single-op "group" followed by a reduction fuses as well.
    let y = ops::sum(&ops::square(&x)?, -1, false)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&x]);
    assert_eq!(r.steps, 1, "{}", r.passes[1].text);
    run_same(&g, elementwise_fusion(), &[&y], &[(&x, &xv)]);
    // Prod is not a fused reduction.
    let y = ops::prod(&ops::exp(&ops::neg(&x)?)?, -1, false)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&x]);
    assert_eq!(r.steps, 2);
    run_same(&g, elementwise_fusion(), &[&y], &[(&x, &xv)]);
    Ok(())
}

#[test]
fn elementwise_fusion_reductions_over_long_and_empty_rows() -> Result<()> {
    // Rows longer than the kernel's blocks (parallel partial sums), and rows of length 0.
    let mut rng = Rng(9);
    let g = Graph::new();
    let long = g.placeholder("long", DType::F32, [2, 70_000])?;
    let flat = g.placeholder("flat", DType::F32, [100_000])?;
    let empty = g.placeholder("empty", DType::F32, [3, 0])?;
    let (lv, fv, ev) = (rng.tensor(&[2, 70_000], 1.0), rng.tensor(&[100_000], 1.0), f32s(&[], &[3, 0]));
    let mut fetches = Vec::new();
    for t in [&long, &flat, &empty] {
        // A group per reduction: a shared input would not fuse its reduction.
        let e = || ops::add(&ops::square(t)?, 0.25);
        fetches.push(ops::sum(&e()?, -1, false)?);
        fetches.push(ops::mean(&e()?, -1, false)?);
        fetches.push(ops::max(&e()?, Axes::All, false)?);
        fetches.push(ops::min(&e()?, Axes::All, true)?);
    }
    let refs: Vec<&Tensor> = fetches.iter().collect();
    let r = Session::with_options(&g, elementwise_fusion()).explain(&refs, &[&long, &flat, &empty], &[])?;
    assert_eq!(r.steps, 12, "{}", r.passes[1].text);
    run_same(&g, elementwise_fusion(), &refs, &[(&long, &lv), (&flat, &fv), (&empty, &ev)]);
    Ok(())
}

#[test]
fn elementwise_fusion_keeps_shared_intermediates_materialized() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3])?;
    let w = g.placeholder("w", DType::F32, [3, 2])?;
    let a = ops::exp(&ops::neg(&x)?)?; // used by the group below, fetched
    let b = ops::add(&ops::mul(&a, 2.0)?, 1.0)?;
    let c = ops::sin(&x)?; // used by the group and by a matmul
    let d = ops::add(&b, &c)?;
    let e = ops::matmul(&c, &w)?;
    let fetches = [&d, &a, &e];
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &fetches, &[&x, &w]);
    // Groups: {neg, exp} (root a), {mul, add, add} (root d); sin alone stays Sin.
    assert_eq!(r.fused.len(), 2, "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "Sin"), 1);
    assert_eq!(count_ops(&r.passes[1].text, "MatMul"), 1);
    let d_program = r.fused.iter().find(|(name, _)| name == &d.op().unwrap().name()).expect("d's group");
    assert!(!d_program.1.contains("exp") && !d_program.1.contains("sin"), "{}", d_program.1);
    assert!(d_program.1.contains("input 1"), "two tensor inputs: {}", d_program.1);
    let mut rng = Rng(10);
    let (xv, wv) = (rng.tensor(&[4, 3], 2.0), rng.tensor(&[3, 2], 2.0));
    run_same(&g, elementwise_fusion(), &fetches, &[(&x, &xv), (&w, &wv)]);

    // A fetched intermediate with a trailing reduction: the reduction stays apart.
    let s = ops::square(&x)?;
    let t = ops::sum(&ops::neg(&s)?, -1, false)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&t, &s], &[&x]);
    assert!(r.fused.iter().all(|(_, p)| !p.contains("square") || !p.contains("then")), "{:?}", r.fused);
    run_same(&g, elementwise_fusion(), &[&t, &s], &[(&x, &xv)]);
    Ok(())
}

/// The heat-equation step of B7 on a small grid: `u + k * pad(laplacian)`.
fn stencil_step(u: &Tensor, pad_value: f32) -> Result<Tensor> {
    let (n, m) = (dims(u)[0] - 2, dims(u)[1] - 2);
    let at = |i: usize, j: usize| ops::slice(u, &[i, j], &[n as i64, m as i64]);
    let sum = ops::add(&ops::add(&ops::add(&at(0, 1)?, &at(2, 1)?)?, &at(1, 0)?)?, &at(1, 2)?)?;
    let lap = ops::sub(&sum, &ops::mul(&at(1, 1)?, 4.0)?)?;
    let padded = ops::pad(&lap, &[(1, 1), (1, 1)], ops::PadMode::Constant, pad_value)?;
    ops::add(u, &ops::mul(&padded, 0.2)?)
}

#[test]
fn elementwise_fusion_takes_in_a_constant_pad_and_its_operand() -> Result<()> {
    let g = Graph::new();
    let u = g.placeholder("u", DType::F32, [70, 130])?;
    let y = stencil_step(&u, 0.0)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&u]);
    // One fused step: the laplacian's program inside the update's, padded.
    assert_eq!(count_ops(&r.passes[1].text, "FusedElementwise"), 1, "{}", r.passes[1].text);
    assert_eq!(count_ops(&r.passes[1].text, "Pad"), 0, "{}", r.passes[1].text);
    assert_eq!(r.fused.len(), 1);
    assert!(r.fused[0].1.contains("pad(r") && r.fused[0].1.contains("[(1, 1), (1, 1)]"), "{}", r.fused[0].1);
    let mut rng = Rng(21);
    let mut uv = rng.tensor(&[70, 130], 3.0);
    run_same(&g, elementwise_fusion(), &[&y], &[(&u, &uv)]);
    // Signed zeros, infinities and NaN along the edges and inside.
    let mut data = values(&uv).iter().map(|&v| v as f32).collect::<Vec<_>>();
    for (i, v) in [(0, -0.0), (1, f32::INFINITY), (131, f32::NAN), (200, -0.0), (70 * 130 - 1, f32::NEG_INFINITY)] {
        data[i] = v;
    }
    uv = f32s(&data, &[70, 130]);
    let out = run_same(&g, elementwise_fusion(), &[&y], &[(&u, &uv)]);
    // The corner stays what it was (plus 0.2 * 0): -0 + 0 = +0.
    assert_eq!(values(&out[0])[0].to_bits(), 0.0f64.to_bits());

    // Against a hand computation of one interior point and one edge point.
    let uv = rng.tensor(&[70, 130], 1.0);
    let out = run_same(&g, elementwise_fusion(), &[&y], &[(&u, &uv)]);
    let (x, o) = (values(&uv), values(&out[0]));
    let at = |i: usize, j: usize| x[i * 130 + j] as f32;
    let lap = at(4, 6) + at(6, 6) + at(5, 5) + at(5, 7) - at(5, 6) * 4.0;
    assert_eq!(o[5 * 130 + 6] as f32, at(5, 6) + lap * 0.2);
    assert_eq!(o[69 * 130 + 3] as f32, at(69, 3) + 0.0 * 0.2);

    // A pad value other than zero, wider and uneven pads, a broadcast and a
    // transposed input under the pad, and a bool pad feeding a select.
    let a = g.placeholder("a", DType::F32, [66, 100])?;
    let b = g.placeholder("b", DType::F32, [100, 62])?;
    let bias = g.placeholder("bias", DType::F32, [97])?;
    let mask = g.placeholder("mask", DType::Bool, [66, 94])?;
    let inner = ops::tanh(&ops::add(&ops::slice(&ops::transpose(&b, &[])?, &[1, 0], &[60, 97])?, &bias)?)?;
    let inner = ops::mul(&inner, 3.0)?;
    let padded = ops::pad(&inner, &[(2, 4), (0, 3)], ops::PadMode::Constant, -1.5f32)?;
    let m = ops::pad(&mask, &[(0, 0), (6, 0)], ops::PadMode::Constant, true)?;
    let z = ops::select(&m, &ops::add(&a, &padded)?, &ops::sub(&a, 1.0)?)?;
    let z = ops::add(&z, 0.5)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&z], &[&a, &b, &bias, &mask]);
    assert_eq!(count_ops(&r.passes[1].text, "Pad"), 0, "{}", r.passes[1].text);
    assert_eq!(r.fused.len(), 1, "{}", r.passes[1].text);
    let mut rng = Rng(22);
    let mv: Vec<bool> = (0..66 * 94).map(|i| i % 3 != 0).collect();
    let feeds = [
        (&a, &rng.tensor(&[66, 100], 2.0)),
        (&b, &rng.tensor(&[100, 62], 2.0)),
        (&bias, &rng.tensor(&[97], 2.0)),
        (&mask, &Tensor::from_slice(&mv, [66, 94])?),
    ];
    run_same(&g, elementwise_fusion(), &[&z], &feeds);

    // A pad of an input (no program of its own), and two pads in one program.
    let p = g.placeholder("p", DType::F32, [8, 90])?;
    let q = g.placeholder("q", DType::F32, [10, 100])?;
    let two = ops::add(
        &ops::mul(&ops::pad(&p, &[(1, 1), (4, 6)], ops::PadMode::Constant, 2.0f32)?, &q)?,
        &ops::pad(
            &ops::exp(&ops::neg(&ops::slice(&q, &[1, 0], &[9, 64])?)?)?,
            &[(0, 1), (30, 6)],
            ops::PadMode::Constant,
            0.0f32,
        )?,
    )?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&two], &[&p, &q]);
    assert_eq!(count_ops(&r.passes[1].text, "Pad"), 0, "{}", r.passes[1].text);
    assert_eq!(r.fused.len(), 1, "{}", r.passes[1].text);
    assert_eq!(r.fused[0].1.matches("pad(r").count(), 2, "{}", r.fused[0].1);
    run_same(
        &g,
        elementwise_fusion(),
        &[&two],
        &[(&p, &rng.tensor(&[8, 90], 2.0)), (&q, &rng.tensor(&[10, 100], 2.0))],
    );

    // Short rows: the pad stays a step of its own, results the same.
    let s = g.placeholder("s", DType::F32, [12, 20])?;
    let y = stencil_step(&s, 0.0)?;
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&y], &[&s]);
    assert_eq!(count_ops(&r.passes[1].text, "Pad"), 1, "{}", r.passes[1].text);
    run_same(&g, elementwise_fusion(), &[&y], &[(&s, &rng.tensor(&[12, 20], 2.0))]);
    Ok(())
}

/// Random pads (widths, values, rank 2 and 3, zero widths, edges on every
/// side) of random programs over slices, some outputs larger than a
/// parallel task so that tasks start mid-row: bitwise the unfused ops.
#[test]
fn fused_pads_of_random_shapes_match_the_unfused_ops() -> Result<()> {
    let mut rng = Rng(24);
    for case in 0..24 {
        let rank = 2 + rng.below(2);
        let inner: Vec<usize> =
            (0..rank).map(|d| if d + 1 == rank { 60 + rng.below(240) } else { 1 + rng.below(40) }).collect();
        let pads: Vec<(usize, usize)> = (0..rank).map(|_| (rng.below(4), rng.below(4))).collect();
        let outer: Vec<usize> = inner.iter().zip(&pads).map(|(d, (lo, hi))| d + lo + hi).collect();
        let g = Graph::new();
        // The padded operand: a program over two offset views of one input.
        let big: Vec<usize> = inner.iter().map(|d| d + 2).collect();
        let x = g.placeholder("x", DType::F32, big.as_slice())?;
        let size: Vec<i64> = inner.iter().map(|&d| d as i64).collect();
        let a = ops::slice(&x, &vec![0; rank], &size)?;
        let b = ops::slice(&x, &vec![2; rank], &size)?;
        let operand = match case % 3 {
            0 => ops::sub(&ops::add(&a, &b)?, &ops::mul(&a, 0.5)?)?,
            1 => ops::mul(&ops::exp(&ops::neg(&a)?)?, &b)?,
            _ => ops::add(&ops::add(&ops::add(&a, &b)?, &a)?, &ops::square(&b)?)?,
        };
        let value = [0.0f32, -2.5, f32::INFINITY][case % 3];
        let padded = ops::pad(&operand, &pads, ops::PadMode::Constant, value)?;
        let y = g.placeholder("y", DType::F32, outer.as_slice())?;
        let z = ops::add(&ops::mul(&padded, &y)?, &y)?;
        let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &[&z], &[&x, &y]);
        assert_eq!(count_ops(&r.passes[1].text, "Pad"), 0, "case {case}: {}", r.passes[1].text);
        let (xv, yv) = (rng.tensor(&big, 2.0), rng.tensor(&outer, 2.0));
        run_same(&g, elementwise_fusion(), &[&z], &[(&x, &xv), (&y, &yv)]);
    }
    Ok(())
}

/// Slices of one buffer (row-strided views) are read in place, a row at a
/// time, whatever the task and chunk boundaries: a grid larger than a task.
#[test]
fn elementwise_fusion_reads_strided_views_in_place_across_tasks() -> Result<()> {
    let g = Graph::new();
    let u = g.placeholder("u", DType::F32, [400, 1030])?;
    let y = stencil_step(&u, 0.25)?;
    let mut rng = Rng(23);
    let uv = rng.tensor(&[400, 1030], 2.0);
    run_same(&g, SessionOptions::default(), &[&y], &[(&u, &uv)]);
    // The views alone, no pad: fused, read in place, same bits.
    let v =
        ops::add(&ops::slice(&u, &[1, 3], &[300, 1000])?, &ops::mul(&ops::slice(&u, &[0, 0], &[300, 1000])?, 1.5)?)?;
    run_same(&g, elementwise_fusion(), &[&v], &[(&u, &uv)]);
    Ok(())
}

/// Padded programs whose lowering inside the pad is one step of each kind
/// the fused kernel runs a tile of rows at a time (a map, an affine map, a
/// binary op, a product then a sum, a sum of four, the stencil's sum with
/// its links, and a copy or fill where it pads), on grids of one and of
/// several planes, small ones and ones whose parallel tasks start and end
/// mid-row: the same bits as the unfused ops.
#[test]
fn padded_steps_of_every_kind_computed_by_whole_rows_match_the_unfused_ops() -> Result<()> {
    let mut rng = Rng(31);
    for shape in [vec![70, 80], vec![300, 1030], vec![3, 41, 50], vec![2, 5, 60]] {
        let rank = shape.len();
        let g = Graph::new();
        let u = g.placeholder("u", DType::F32, shape.as_slice())?;
        // Views of u shifted by one along each of the last two dimensions.
        let inner: Vec<i64> =
            shape.iter().enumerate().map(|(d, &n)| if d + 2 >= rank { n as i64 - 2 } else { n as i64 }).collect();
        let at = |i: usize, j: usize| {
            let mut begin = vec![0; rank];
            begin[rank - 2] = i;
            begin[rank - 1] = j;
            ops::slice(&u, &begin, &inner)
        };
        let mut widths = vec![(0, 0); rank];
        widths[rank - 2] = (1, 1);
        widths[rank - 1] = (1, 1);
        let pad = |x: &Tensor, v: f32| ops::pad(x, &widths, ops::PadMode::Constant, v);
        let (a, b, c, d, e) = (at(0, 1)?, at(2, 1)?, at(1, 0)?, at(1, 2)?, at(1, 1)?);
        let sum4 = ops::add(&ops::add(&ops::add(&a, &b)?, &c)?, &d)?;
        let fetches = [
            pad(&ops::tanh(&a)?, 0.5)?,
            pad(&ops::tanh(&ops::add(&ops::mul(&b, 1.5)?, 0.25)?)?, 0.0)?,
            pad(&ops::sub(&c, &d)?, -1.0)?,
            ops::add(&u, &pad(&ops::mul(&a, &e)?, 0.0)?)?,
            pad(&sum4, 2.0)?,
            ops::add(&u, &ops::mul(&pad(&ops::sub(&sum4, &ops::mul(&e, 4.0)?)?, 0.0)?, 0.2)?)?,
        ];
        let fetches: Vec<&Tensor> = fetches.iter().collect();
        let uv = rng.tensor(&shape, 2.0);
        let out = run_same(&g, elementwise_fusion(), &fetches, &[(&u, &uv)]);
        // Spot values, against the formula: the first program at an edge
        // (its padding) and inside.
        let (t, x) = (out[0].to_vec::<f32>()?, uv.to_vec::<f32>()?);
        let cols = shape[rank - 1];
        assert_eq!(t[0], 0.5, "{shape:?}");
        assert!((t[cols + 1] - x[1].tanh()).abs() < 1e-6, "{shape:?}: {} against {}", t[cols + 1], x[1].tanh());
    }
    Ok(())
}

#[test]
fn elementwise_fusion_with_unknown_batch_dimensions() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)])?;
    let b = g.placeholder("b", DType::F32, [4])?;
    let n = g.placeholder("n", DType::F32, [None, Some(1)])?;
    let y = ops::relu(&ops::sub(&ops::add(&ops::mul(&x, 2.0)?, &b)?, &n)?)?;
    let red = ops::sum(&ops::tanh(&ops::add(&x, &b)?)?, -1, false)?;
    let red_all = ops::max(&ops::exp(&ops::neg(&x)?)?, Axes::All, false)?;
    let fetches = [&y, &red, &red_all];
    let r = explain_one(&g, elementwise_fusion(), "elementwise_fusion", &fetches, &[&x, &b, &n]);
    assert_eq!(r.fused.len(), 3, "{}", r.passes[1].text);
    assert!(r.peak_bytes.is_none(), "shapes known only at run time");
    let s = Session::with_options(&g, elementwise_fusion());
    let plain = Session::with_options(&g, SessionOptions::unoptimized());
    let mut rng = Rng(11);
    for batch in [1, 5, 2, 0] {
        let (xv, bv, nv) = (rng.tensor(&[batch, 4], 2.0), rng.tensor(&[4], 1.0), rng.tensor(&[batch, 1], 1.0));
        let feeds = [(&x, &xv), (&b, &bv), (&n, &nv)];
        let o = s.run(&fetches, &feeds)?;
        let p = plain.run(&fetches, &feeds)?;
        for (i, (o, p)) in o.iter().zip(&p).enumerate() {
            assert_bitwise(o, p, &format!("batch {batch}, fetch {i}"));
        }
        assert_eq!(dims(&o[0]), vec![batch, 4]);
    }
    // A batch of one against a known bias that broadcasts the other way.
    let wide = g.placeholder("wide", DType::F32, [None])?;
    let z = ops::exp(&ops::add(&ops::mul(&wide, 3.0)?, &b)?)?;
    let one = f32s(&[0.5], &[1]);
    let bv = f32s(&[1.0, 2.0, 3.0, 4.0], &[4]);
    let out = run_same(&g, elementwise_fusion(), &[&z], &[(&wide, &one), (&b, &bv)]);
    assert_eq!(dims(&out[0]), vec![4]);
    Ok(())
}

// ---------------------------------------------------------------------------
// In-place execution
// ---------------------------------------------------------------------------

#[test]
fn in_place_unary_chain() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4096])?;
    let s = ops::sin(&x)?;
    let e = ops::exp(&s)?;
    let y = ops::abs(&ops::neg(&e)?)?;
    let z = ops::add(&ops::mul(&y, &y)?, &y)?; // binary ops too: mul reads y twice (not donated), add can take mul's buffer
    let xv = Rng(12).tensor(&[4096], 4.0);
    let copy = xv.to_vec::<f32>()?;

    let r = Session::with_options(&g, in_place()).explain(&[&z], &[&x], &[])?;
    // Elementwise in-place is decided at lowering; the pass only rewrites
    // optimizer updates, and there are none here.
    let names: Vec<&str> = r.passes.iter().map(|d| d.pass).collect();
    assert_eq!(names, ["pruning", "in_place_updates"]);
    assert_eq!(r.passes[0].nodes, r.passes[1].nodes);
    // exp (sin dies), neg (exp dies), abs (neg dies), add (mul dies); not sin (a feed), not mul (y twice).
    assert_eq!(r.in_place, 4);
    let s_opt = Session::with_options(&g, in_place());
    for _ in 0..2 {
        run_same(&g, in_place(), &[&z], &[(&x, &xv)]);
        let out = s_opt.run(&[&z], &[(&x, &xv)])?;
        assert_eq!(xv.to_vec::<f32>()?, copy, "the fed tensor was overwritten");
        let yv = ops::abs(&ops::neg(&ops::exp(&ops::sin(&xv)?)?)?)?;
        let eager = ops::add(&ops::mul(&yv, &yv)?, &yv)?;
        assert_bitwise(&out[0], &eager, "eager");
    }

    // Fetched intermediates are not overwritten: fetching e and y keeps them.
    let r = Session::with_options(&g, in_place()).explain(&[&z, &e, &y], &[&x], &[])?;
    // exp (sin dies), abs (neg dies), add (mul dies); not neg: e is fetched.
    assert_eq!(r.in_place, 3);
    let out = run_same(&g, in_place(), &[&z, &e, &y], &[(&x, &xv)]);
    let e_want = ops::exp(&ops::sin(&xv)?)?;
    assert_bitwise(&out[1], &e_want, "fetched e");
    assert_bitwise(&out[2], &ops::abs(&ops::neg(&e_want)?)?, "fetched y");
    assert_eq!(xv.to_vec::<f32>()?, copy);

    // The fed tensor fetched as well as consumed.
    let out = run_same(&g, in_place(), &[&y, &x], &[(&x, &xv)]);
    assert_bitwise(&out[1], &xv, "fetched feed");

    // A fetched view of an intermediate that dies at a later unary op: the
    // op may be marked in place, but must not write into the viewed buffer.
    let t = ops::exp(&x)?;
    let view = ops::reshape(&t, &[64, 64])?;
    let after = ops::neg(&t)?;
    let r = Session::with_options(&g, in_place()).explain(&[&view, &after], &[&x], &[])?;
    assert_eq!(r.in_place, 1);
    let out = run_same(&g, in_place(), &[&view, &after], &[(&x, &xv)]);
    assert_bitwise(&out[0], &ops::reshape(&ops::exp(&xv)?, &[64, 64])?, "fetched view");
    Ok(())
}

/// A fused elementwise step may write into an input that dies there, read
/// through the same buffer chunk by chunk (and across parallel tasks: 300k
/// elements are several tasks).
#[test]
fn in_place_fused_steps() -> Result<()> {
    let (m, k, n) = (600, 16, 500);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [m, k])?;
    let w = g.placeholder("w", DType::F32, [k, n])?;
    let y = g.placeholder("y", DType::F32, [m, n])?;
    let a = ops::matmul(&x, &w)?; // dies in the fused step below
    let f = ops::sub(&ops::mul(&a, &ops::sigmoid(&y)?)?, &ops::mul(&a, &y)?)?;
    let mut rng = Rng(77);
    let (xv, wv, yv) = (rng.tensor(&[m, k], 1.0), rng.tensor(&[k, n], 1.0), rng.tensor(&[m, n], 3.0));
    let yc = yv.to_vec::<f32>()?;
    let options = || {
        only(|p| {
            p.in_place = true;
            p.elementwise_fusion = true;
        })
    };
    let feeds = [(&x, &xv), (&w, &wv), (&y, &yv)];
    let s = Session::with_options(&g, options());
    let r = s.explain(&[&f], &[&x, &w, &y], &[])?;
    assert_eq!(r.fused.len(), 1, "{:?}", r.fused);
    assert_eq!(r.in_place, 1, "the fused step writes into the product");
    let av = ops::matmul(&xv, &wv)?;
    let want = ops::sub(&ops::mul(&av, &ops::sigmoid(&yv)?)?, &ops::mul(&av, &yv)?)?;
    for _ in 0..2 {
        run_same(&g, options(), &[&f], &feeds);
        let out = s.run(&[&f], &feeds)?;
        assert_bitwise(&out[0], &want, "eager");
        assert_eq!(yv.to_vec::<f32>()?, yc, "a feed was overwritten");
    }
    // Fetched, the product keeps its own buffer.
    let r = s.explain(&[&f, &a], &[&x, &w, &y], &[])?;
    assert_eq!(r.in_place, 0);
    let out = run_same(&g, options(), &[&f, &a], &feeds);
    assert_bitwise(&out[1], &av, "fetched a");
    assert_bitwise(&out[0], &want, "with a fetched");
    Ok(())
}

#[test]
fn in_place_binary_ops_keep_their_operand_order() -> Result<()> {
    // The dying buffer is the second operand of non-commutative ops, with a
    // full-size, a scalar and a broadcast first operand; more elements than
    // one in-place chunk.
    let n = 100_003;
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [n])?;
    let row = g.placeholder("row", DType::F32, [1, n])?;
    let fetches = [
        ops::sub(&x, &ops::exp(&x)?)?,
        ops::div(&x, &ops::add(&ops::abs(&x)?, 1.0)?)?,
        ops::pow(2.0, &ops::sin(&x)?)?,
        ops::sub(&g.constant(3.0f32)?, &ops::cos(&x)?)?,
        ops::floor_mod(&row, &ops::add(&ops::abs(&row)?, 0.5)?)?,
        ops::sub(&ops::exp(&x)?, &ops::sin(&x)?)?,
        ops::div(&ops::tanh(&x)?, &ops::sqrt(&ops::abs(&x)?)?)?,
    ];
    let refs: Vec<&Tensor> = fetches.iter().collect();
    let r = Session::with_options(&g, in_place()).explain(&refs, &[&x, &row], &[])?;
    assert!(r.in_place >= 7, "in_place = {}", r.in_place);
    let mut rng = Rng(18);
    let (xv, rv) = (rng.tensor(&[n], 3.0), rng.tensor(&[1, n], 3.0));
    let out = run_same(&g, in_place(), &refs, &[(&x, &xv), (&row, &rv)]);
    let eager = ops::sub(&xv, &ops::exp(&xv)?)?;
    assert_bitwise(&out[0], &eager, "x - exp(x)");
    Ok(())
}

#[test]
fn in_place_never_writes_into_feeds_constants_or_variables() -> Result<()> {
    // Views of a feed, constants and variable values look like dying
    // intermediates to the plan; their buffers are shared, so they must be
    // left alone.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [8])?;
    let c = g.constant(f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[8]))?;
    let v = Variable::in_graph(&g, "v", &f32s(&[0.5; 8], &[8]), false)?;
    let a = ops::neg(&ops::identity(&x)?)?;
    let b = ops::exp(&ops::reshape(&ops::reshape(&x, &[2, 4])?, &[8])?)?;
    let d = ops::neg(&c)?;
    let e = ops::sqrt(&v.read())?;
    let f = ops::add(&ops::stop_gradient(&x)?, 1.0)?;
    let fetches = [&a, &b, &d, &e, &f];
    let s = Session::with_options(&g, in_place());
    s.run_targets(&[&g.global_variables_initializer()?])?;
    let r = s.explain(&fetches, &[&x], &[])?;
    assert!(r.in_place >= 3, "in_place = {}", r.in_place);
    let xv = Rng(13).tensor(&[8], 2.0);
    let copy = xv.to_vec::<f32>()?;
    for _ in 0..3 {
        let out = s.run(&fetches, &[(&x, &xv)])?;
        assert_eq!(xv.to_vec::<f32>()?, copy, "feed overwritten");
        assert_bitwise(&out[0], &ops::neg(&xv)?, "neg(identity(x))");
        assert_bitwise(&out[1], &ops::exp(&xv)?, "exp(reshape(x))");
        assert_eq!(out[2].to_vec::<f32>()?, vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0]);
        assert_eq!(out[3].to_vec::<f32>()?, vec![0.5f32.sqrt(); 8]);
        assert_bitwise(&out[4], &ops::add(&xv, 1.0)?, "stop_gradient(x) + 1");
    }
    assert_eq!(s.variable_value(&v)?.to_vec::<f32>()?, vec![0.5; 8], "variable overwritten");
    Ok(())
}

#[test]
fn in_place_with_all_passes() -> Result<()> {
    // A matmul output feeding a fused chain, and a chain after a reduction.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [16, 8])?;
    let w = g.placeholder("w", DType::F32, [8, 8])?;
    let h = ops::matmul(&x, &w)?;
    let y = ops::neg(&ops::exp(&ops::tanh(&h)?)?)?;
    let s = ops::sqrt(&ops::abs(&ops::sum(&y, -1, false)?)?)?;
    let mut rng = Rng(14);
    let (xv, wv) = (rng.tensor(&[16, 8], 1.0), rng.tensor(&[8, 8], 1.0));
    let (xc, wc) = (xv.to_vec::<f32>()?, wv.to_vec::<f32>()?);
    let out = run_same(&g, SessionOptions::default(), &[&y, &s], &[(&x, &xv), (&w, &wv)]);
    assert_eq!(dims(&out[1]), vec![16]);
    assert_eq!((xv.to_vec::<f32>()?, wv.to_vec::<f32>()?), (xc, wc));
    Ok(())
}

// ---------------------------------------------------------------------------
// Peak memory
// ---------------------------------------------------------------------------

#[test]
fn optimized_training_step_needs_no_more_memory() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [64, 32])?;
    let y = g.placeholder("y", DType::F32, [64, 4])?;
    let l1 = Dense::new(48, Activation::Relu);
    let l2 = Dense::new(24, Activation::Tanh);
    let l3 = Dense::new(4, Activation::Linear);
    let h = l3.call(&l2.call(&l1.call(&x, true)?, true)?, true)?;
    let loss = ops::mean(&ops::square(&ops::sub(&h, &y)?)?, Axes::All, false)?;
    let vars: Vec<Variable> = [&l1, &l2, &l3].iter().flat_map(|l| l.variables()).collect();
    assert_eq!(vars.len(), 6);
    let refs: Vec<&Variable> = vars.iter().collect();
    let train = Optimizer::adam(1e-2).minimize(&loss, &refs)?;

    let opt = Session::with_options(&g, SessionOptions::default());
    let plain = Session::with_options(&g, SessionOptions::unoptimized());
    let ro = opt.explain(&[&loss], &[&x, &y], &[&train])?;
    let rp = plain.explain(&[&loss], &[&x, &y], &[&train])?;
    let (po, pp) = (ro.peak_bytes.expect("known shapes"), rp.peak_bytes.expect("known shapes"));
    assert!(po > 0);
    assert!(po <= pp, "optimized peak {po} > unoptimized {pp}");
    assert!(ro.steps < rp.steps, "{} vs {} steps", ro.steps, rp.steps);
    assert!(!ro.fused.is_empty());
    // The activation gradients read the activations' outputs, not their
    // inputs: every layer's matmul, bias and activation are one step.
    assert_eq!(ro.fused.iter().filter(|(_, p)| p.starts_with("matmul + bias")).count(), 3, "{:?}", ro.fused);
    assert!(ro.fused.iter().any(|(_, p)| p.starts_with("matmul + bias + relu")), "{:?}", ro.fused);
    assert!(ro.fused.iter().any(|(_, p)| p.starts_with("matmul + bias + tanh")), "{:?}", ro.fused);
    // The reported dumps: pruning then every pass, in order.
    let names: Vec<&str> = ro.passes.iter().map(|d| d.pass).collect();
    assert_eq!(
        names,
        vec![
            "pruning",
            "algebraic_simplification",
            "constant_folding",
            "common_subexpression_elimination",
            "matmul_fusion",
            "elementwise_fusion",
            "in_place_updates"
        ]
    );
    // Each variable's read, update and assignments back are one in-place update.
    let last = &ro.passes.last().expect("dumps").text;
    assert_eq!(last.matches("_ResourceApplyAdam").count(), 6, "{last}");
    assert!(!last.contains("= Assign("), "{last}");
    assert!(ro.passes.iter().all(|d| d.dot.starts_with("digraph")));

    // And the two train identically.
    let init = g.global_variables_initializer()?;
    opt.run_targets(&[&init])?;
    plain.run_targets(&[&init])?;
    let mut rng = Rng(15);
    for step in 0..4 {
        let (xv, yv) = (rng.tensor(&[64, 32], 1.0), rng.tensor(&[64, 4], 1.0));
        let a = opt.run_with_targets(&[&loss], &[(&x, &xv), (&y, &yv)], &[&train])?;
        let b = plain.run_with_targets(&[&loss], &[(&x, &xv), (&y, &yv)], &[&train])?;
        assert_bitwise(&a[0], &b[0], &format!("loss at step {step}"));
    }
    for v in &vars {
        assert_bitwise(&opt.variable_value(v)?, &plain.variable_value(v)?, v.name());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Randomized equivalence
// ---------------------------------------------------------------------------

/// A tensor of a random graph, and whether it may carry a zero of the other
/// sign in the optimized plan (from `x + 0 -> x`).
#[derive(Clone)]
struct Node {
    t: Tensor,
    signed_zero: bool,
}

/// A random graph, what to fetch, and the value of each placeholder.
struct RandomGraph {
    g: Graph,
    fetches: Vec<Tensor>,
    feeds: Vec<(Tensor, Tensor)>,
}

fn random_graph(rng: &mut Rng) -> Result<RandomGraph> {
    let g = Graph::new();
    let rank3 = rng.chance(0.25);
    let (m, n) = (1 + rng.below(4), 1 + rng.below(5));
    let full: Vec<usize> = if rank3 { vec![1 + rng.below(3), m, n] } else { vec![m, n] };
    let unknown_batch = rng.chance(0.2);
    let mut pool: Vec<Node> = Vec::new();
    let mut feeds = Vec::new();
    let count = 2 + rng.below(2);
    for i in 0..count {
        let shape: Vec<usize> = if i == 0 {
            full.clone()
        } else {
            match rng.below(6) {
                0 | 1 => full.clone(),
                2 => vec![n],
                3 => {
                    let mut s = full.clone();
                    *s.last_mut().unwrap() = 1;
                    s
                }
                4 => vec![1, n],
                _ => vec![],
            }
        };
        let declared: Vec<Option<usize>> = shape
            .iter()
            .enumerate()
            .map(|(d, &k)| if unknown_batch && d == 0 && shape.len() == full.len() { None } else { Some(k) })
            .collect();
        let p = g.placeholder(&format!("p{i}"), DType::F32, declared.as_slice())?;
        let value = rng.tensor(&shape, 3.0);
        pool.push(Node { t: p.clone(), signed_zero: false });
        feeds.push((p, value));
    }
    let steps = 6 + rng.below(11);
    for _ in 0..steps {
        // Mostly extend the latest tensor, so that graphs are deep.
        let a = if rng.chance(0.6) { pool.last().unwrap().clone() } else { pool[rng.below(pool.len())].clone() };
        let b = pool[rng.below(pool.len())].clone();
        let made: Result<Node> = (|| {
            Ok(match rng.below(12) {
                0 | 1 => {
                    let safe: [Unary; 16] = [
                        ops::neg,
                        ops::abs,
                        ops::square,
                        ops::relu,
                        ops::exp,
                        ops::tanh,
                        ops::sigmoid,
                        ops::sin,
                        ops::floor,
                        ops::round,
                        ops::gelu,
                        ops::softplus,
                        ops::sqrt,
                        ops::log,
                        ops::elu,
                        ops::relu6,
                    ];
                    // Ops that tell -0 from +0 only on operands without a flipped zero.
                    let sign_sensitive: [Unary; 2] = [ops::reciprocal, ops::rsqrt];
                    if !a.signed_zero && rng.chance(0.2) {
                        Node { t: rng.pick(&sign_sensitive)(&a.t)?, signed_zero: false }
                    } else {
                        Node { t: rng.pick(&safe)(&a.t)?, signed_zero: a.signed_zero }
                    }
                }
                2 | 3 => {
                    let safe: [Binary; 5] = [
                        |a, b| ops::add(a, b),
                        |a, b| ops::sub(a, b),
                        |a, b| ops::mul(a, b),
                        |a, b| ops::maximum(a, b),
                        |a, b| ops::minimum(a, b),
                    ];
                    let sensitive: [Binary; 2] = [|a, b| ops::div(a, b), |a, b| ops::pow(a, b)];
                    let sz = a.signed_zero || b.signed_zero;
                    let f = if !sz && rng.chance(0.3) { rng.pick(&sensitive) } else { rng.pick(&safe) };
                    Node { t: f(&a.t, &b.t)?, signed_zero: sz }
                }
                4 => {
                    // Neutral constants: what simplification removes.
                    match rng.below(7) {
                        0 => Node { t: ops::mul(&a.t, 1.0)?, ..a },
                        1 => Node { t: ops::mul(1.0, &a.t)?, ..a },
                        2 => Node { t: ops::div(&a.t, 1.0)?, ..a },
                        3 => Node { t: ops::sub(&a.t, 0.0)?, ..a },
                        4 => Node { t: ops::add(&a.t, -0.0)?, ..a },
                        5 => Node { t: ops::add(&a.t, 0.0)?, signed_zero: true },
                        _ => Node { t: ops::add(0.0, &a.t)?, signed_zero: true },
                    }
                }
                5 => {
                    let k = rng.pick(&[2.0, -1.5, 0.5, 3.0]);
                    Node { t: if rng.chance(0.5) { ops::mul(&a.t, k)? } else { ops::add(k, &a.t)? }, ..a }
                }
                6 => {
                    let c = ops::greater(&a.t, &b.t)?;
                    let c = if rng.chance(0.5) { ops::logical_not(&c)? } else { c };
                    let other = pool[rng.below(pool.len())].clone();
                    let t = if rng.chance(0.5) {
                        ops::select(&c, &other.t, &ops::cast(&ops::less(&a.t, 0.5)?, DType::F32)?)?
                    } else {
                        ops::add(
                            &ops::cast(&c, DType::F32)?,
                            &ops::cast(&ops::cast(&other.t, DType::Bool)?, DType::F32)?,
                        )?
                    };
                    Node { t, signed_zero: a.signed_zero || other.signed_zero }
                }
                7 if a.t.rank() > 0 => {
                    let rank = a.t.rank() as i64;
                    let axes = match rng.below(4) {
                        0 => Axes::All,
                        1 => Axes::List(vec![-1]),
                        2 => Axes::List(vec![0]),
                        _ => Axes::List(vec![rng.below(rank as usize) as i64]),
                    };
                    let keep = rng.chance(0.3);
                    let t = match rng.below(4) {
                        0 => ops::sum(&a.t, axes, keep)?,
                        1 => ops::mean(&a.t, axes, keep)?,
                        2 => ops::max(&a.t, axes, keep)?,
                        _ => ops::min(&a.t, axes, keep)?,
                    };
                    Node { t, ..a }
                }
                8 if a.t.rank() == 2 && a.t.shape().dim(1).is_some() => {
                    let k = a.t.shape()[1];
                    let j = 1 + rng.below(4);
                    let w = g.constant(rng.tensor(&[k, j], 1.0))?;
                    let mut t = ops::matmul(&a.t, &w)?;
                    if rng.chance(0.7) {
                        let bias = g.constant(rng.tensor(&[j], 1.0))?;
                        t = if rng.chance(0.5) { ops::add(&t, &bias)? } else { ops::add(&bias, &t)? };
                        if rng.chance(0.6) {
                            t = rng.pick::<Unary>(&[ops::relu, ops::tanh, ops::sigmoid])(&t)?;
                        }
                    }
                    Node { t, ..a }
                }
                9 => {
                    // Structure the simplifier removes or composes.
                    let t = match rng.below(5) {
                        0 => ops::identity(&a.t)?,
                        1 => ops::stop_gradient(&a.t)?,
                        2 => ops::cast(&a.t, DType::F32)?,
                        3 if a.t.rank() >= 2 => ops::transpose(&ops::transpose(&a.t, &[])?, &[])?,
                        _ if a.t.shape().is_fully_known() => {
                            let dims: Vec<i64> = a.t.shape().iter().map(|&d| d as i64).collect();
                            ops::reshape(&ops::reshape(&a.t, &[-1])?, &dims)?
                        }
                        _ => ops::identity(&a.t)?,
                    };
                    Node { t, ..a }
                }
                10 => {
                    // The same expression twice (for CSE), combined.
                    let f = rng.pick::<Unary>(&[ops::exp, ops::tanh, ops::square]);
                    let t = ops::add(&f(&a.t)?, &f(&a.t)?)?;
                    Node { t, ..a }
                }
                _ => {
                    // A constant subexpression (for folding) combined with a tensor.
                    let shape: Vec<usize> = vec![*a.t.shape().last().unwrap_or(&1)];
                    let shape = if shape[0] == rivulet::UNKNOWN { vec![1] } else { shape };
                    let c = g.constant(rng.tensor(&shape, 1.0))?;
                    let folded = ops::add(&ops::mul(&ops::exp(&c)?, 2.0)?, &ops::sin(&c)?)?;
                    Node { t: ops::mul(&a.t, &folded)?, ..a }
                }
            })
        })();
        if let Ok(node) = made {
            pool.push(node);
        }
    }
    let mut fetches = vec![pool.last().unwrap().t.clone()];
    for _ in 0..rng.below(3) {
        fetches.push(pool[rng.below(pool.len())].t.clone());
    }
    Ok(RandomGraph { g, fetches, feeds })
}

#[test]
fn random_graphs_give_the_same_results_optimized() -> Result<()> {
    let (mut fused_plans, mut failing) = (0, 0);
    for case in 0..200u64 {
        let mut rng = Rng(0x5eed_0000 + case);
        let RandomGraph { g, fetches, feeds } = random_graph(&mut rng)?;
        let fetch_refs: Vec<&Tensor> = fetches.iter().collect();
        let feed_refs: Vec<(&Tensor, &Tensor)> = feeds.iter().map(|(p, v)| (p, v)).collect();
        let copies: Vec<Vec<f32>> = feeds.iter().map(|(_, v)| v.to_vec::<f32>().unwrap()).collect();
        let opt = Session::with_options(&g, SessionOptions::default());
        let plain = Session::with_options(&g, SessionOptions::unoptimized());
        let a = opt.run(&fetch_refs, &feed_refs);
        let b = plain.run(&fetch_refs, &feed_refs);
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            // Unknown dimensions can hide a broadcast that fails at run time:
            // both plans must then fail alike.
            (Err(a), Err(b)) if a.kind() == b.kind() => {
                failing += 1;
                continue;
            }
            (a, b) => panic!("case {case}: optimized {:?} vs unoptimized {:?}", a.err(), b.err()),
        };
        let keys: Vec<&Tensor> = feeds.iter().map(|(p, _)| p).collect();
        let report = opt.explain(&fetch_refs, &keys, &[])?;
        if !report.fused.is_empty() {
            fused_plans += 1;
        }
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let what = format!("case {case}, fetch {i}\n{}", report.passes.last().unwrap().text);
            assert_equivalent(x, y, &what);
        }
        // Feeds are untouched.
        for ((_, v), copy) in feeds.iter().zip(&copies) {
            assert_eq!(&v.to_vec::<f32>()?, copy, "case {case}: a feed was overwritten");
        }
    }
    assert!(fused_plans > 100, "only {fused_plans} plans had fused groups");
    assert!(failing < 20, "{failing} graphs failed at run time");
    Ok(())
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

#[test]
fn results_do_not_depend_on_the_thread_count() -> Result<()> {
    let (rows, cols) = (600, 512); // 307200 elements: parallel paths run
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [rows, cols])?;
    let b = g.placeholder("b", DType::F32, [cols])?;
    let w = g.placeholder("w", DType::F32, [cols, 64])?;
    let bias = g.placeholder("bias", DType::F32, [64])?;
    let e = ops::mul(&ops::tanh(&ops::add(&ops::mul(&x, &b)?, 1.0)?)?, &ops::sigmoid(&x)?)?;
    let row_sum = ops::sum(&ops::exp(&ops::mul(&x, 0.5)?)?, -1, false)?;
    let row_max = ops::max(&ops::add(&ops::square(&x)?, &b)?, -1, true)?;
    let all_mean = ops::mean(&ops::square(&ops::sub(&x, &b)?)?, Axes::All, false)?;
    let all_sum = ops::sum(&ops::abs(&ops::sin(&x)?)?, Axes::All, false)?;
    let col_sum = ops::sum(&ops::cos(&x)?, 0, false)?;
    let mm = ops::relu(&ops::add(&ops::matmul(&e, &w)?, &bias)?)?;
    let mm_sum = ops::sum(&ops::mul(&mm, &mm)?, Axes::All, false)?;
    let chain = ops::neg(&ops::exp(&ops::tanh(&x)?)?)?;
    let fetches = [&e, &row_sum, &row_max, &all_mean, &all_sum, &col_sum, &mm, &mm_sum, &chain];
    let mut rng = Rng(16);
    let (xv, bv, wv, biasv) = (
        rng.tensor(&[rows, cols], 2.0),
        rng.tensor(&[cols], 1.0),
        rng.tensor(&[cols, 64], 0.1),
        rng.tensor(&[64], 1.0),
    );
    let feeds = [(&x, &xv), (&b, &bv), (&w, &wv), (&bias, &biasv)];
    let s = Session::new(&g);
    let report = s.explain(&fetches, &[&x, &b, &w, &bias], &[])?;
    assert!(report.fused.len() >= 6, "{:?}", report.fused);
    let run_in = |threads: usize| -> Vec<Tensor> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| s.run(&fetches, &feeds)).unwrap()
    };
    let one = run_in(1);
    for threads in [2, 3] {
        let other = run_in(threads);
        for (i, (a, b)) in one.iter().zip(&other).enumerate() {
            assert_bitwise(b, a, &format!("fetch {i} with {threads} threads"));
        }
    }
    // And the same as the unoptimized plan.
    let plain = Session::with_options(&g, SessionOptions::unoptimized()).run(&fetches, &feeds)?;
    for (i, (a, b)) in one.iter().zip(&plain).enumerate() {
        assert_equivalent(a, b, &format!("fetch {i} against unoptimized"));
    }
    Ok(())
}

#[test]
fn parallel_and_sequential_executors_agree() -> Result<()> {
    let n = 300; // 90000 elements per branch: above the parallel threshold
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [n, n])?;
    let y = g.placeholder("y", DType::F32, [n, n])?;
    let b1 = ops::sum(&ops::exp(&ops::mul(&x, 0.1)?)?, -1, false)?;
    let b2 = ops::sum(&ops::relu(&ops::matmul(&x, &y)?)?, -1, false)?;
    let b3 = ops::max(&ops::tanh(&ops::mul(&x, &y)?)?, -1, false)?;
    let b4 = ops::mean(&ops::matmul_t(&y, &x, true, false)?, -1, false)?;
    let noise = ops::random_uniform(&g, [n], 0.0, 1.0, DType::F32, Some(23))?;
    let out = ops::add(&ops::add(&ops::mul(&b1, &b2)?, &ops::sub(&b3, &b4)?)?, &noise)?;
    let fetches = [&out, &b1, &b2, &b3, &b4];
    let mut rng = Rng(17);
    let (xv, yv) = (rng.tensor(&[n, n], 1.0), rng.tensor(&[n, n], 1.0));
    for passes in [PassOptions::all(), PassOptions::none()] {
        let par = Session::with_options(
            &g,
            SessionOptions { inter_op_parallelism: true, passes: passes.clone(), ..SessionOptions::default() },
        );
        let seq = Session::with_options(
            &g,
            SessionOptions { inter_op_parallelism: false, passes: passes.clone(), ..SessionOptions::default() },
        );
        for run in 0..3 {
            let a = par.run(&fetches, &[(&x, &xv), (&y, &yv)])?;
            let b = seq.run(&fetches, &[(&x, &xv), (&y, &yv)])?;
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                assert_bitwise(a, b, &format!("run {run}, fetch {i}"));
            }
        }
    }
    Ok(())
}

/// The fused kernel computes scalar arithmetic feeding a unary op, and a
/// product feeding an addition or subtraction, inside one loop; every
/// operand order and kind (input, broadcast row, scalar feed, constant)
/// must still give the unfused bits, NaN and infinities included.
#[test]
fn fused_compound_steps_match_unfused_bitwise() -> Result<()> {
    let specials = [0.0f32, -0.0, 1.5, -2.25, 7.0, 1e-30, 3e38, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.75];
    let (rows, cols) = (300usize, specials.len());
    let mut rng = Rng(41);
    let data: Vec<f32> =
        (0..rows * cols).map(|i| if i < cols * 3 { specials[i % cols] } else { rng.symmetric(4.0) }).collect();
    let other: Vec<f32> = (0..rows * cols).map(|_| rng.symmetric(3.0)).collect();
    let row: Vec<f32> = (0..cols).map(|_| rng.symmetric(2.0)).collect();
    let (xv, yv, rv, sv) =
        (f32s(&data, &[rows, cols]), f32s(&other, &[rows, cols]), f32s(&row, &[cols]), f32s(&[0.625], &[]));
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [rows, cols])?;
    let y = g.placeholder("y", DType::F32, [rows, cols])?;
    let r = g.placeholder("r", DType::F32, [cols])?;
    let s = g.placeholder("s", DType::F32, Shape::scalar())?;
    let feeds = [(&x, &xv), (&y, &yv), (&r, &rv), (&s, &sv)];
    let mut fetches: Vec<(&str, Tensor)> = vec![
        ("tanh(x * 1.5 + 0.5)", ops::tanh(&ops::add(&ops::mul(&x, 1.5)?, 0.5)?)?),
        ("exp(0.5 + 1.5 * x)", ops::exp(&ops::add(&Tensor::scalar(0.5f32), &ops::mul(&Tensor::scalar(1.5f32), &x)?)?)?),
        ("sigmoid(x * 2 - 1)", ops::sigmoid(&ops::sub(&ops::mul(&x, 2.0)?, 1.0)?)?),
        ("sqrt(x - 0.25)", ops::sqrt(&ops::sub(&x, 0.25)?)?),
        ("abs(x * -3)", ops::abs(&ops::mul(&x, -3.0)?)?),
        ("relu(x + s)", ops::relu(&ops::add(&x, &s)?)?),
        ("tanh(1 - x): not affine as written", ops::tanh(&ops::sub(&Tensor::scalar(1.0f32), &x)?)?),
        ("neg(x * 2)", ops::neg(&ops::mul(&x, 2.0)?)?),
        ("x * y + r", ops::add(&ops::mul(&x, &y)?, &r)?),
        ("x * y - 2", ops::sub(&ops::mul(&x, &y)?, 2.0)?),
        ("r + x * s", ops::add(&r, &ops::mul(&x, &s)?)?),
        ("y - x * x", ops::sub(&y, &ops::mul(&x, &x)?)?),
        ("x * 3 - r * y", ops::sub(&ops::mul(&x, 3.0)?, &ops::mul(&r, &y)?)?),
    ];
    // The B2 expression, and a product read twice (so not absorbed).
    let t = ops::tanh(&ops::add(&ops::mul(&x, 1.5)?, 0.5)?)?;
    fetches.push(("B2", ops::sub(&ops::mul(&t, &ops::sigmoid(&x)?)?, &ops::mul(&x, &x)?)?));
    let p = ops::mul(&x, &y)?;
    fetches.push(("p + 1 then p * that", ops::mul(&p, &ops::add(&p, 1.0)?)?));
    // A unary op feeding a product, on either side, for every f32 unary op.
    for f in UnaryOp::ALL
        .iter()
        .filter(|f| !matches!(f, UnaryOp::LogicalNot | UnaryOp::IsNan | UnaryOp::IsFinite | UnaryOp::IsInf))
    {
        fetches.push(("y * f(x)", ops::mul(&y, &apply_unary(*f, &x)?)?));
        fetches.push(("f(x) * r", ops::mul(&apply_unary(*f, &x)?, &r)?));
    }
    let refs: Vec<&Tensor> = fetches.iter().map(|(_, t)| t).collect();
    let report = Session::with_options(&g, elementwise_fusion()).explain(&refs, &[&x, &y, &r, &s], &[])?;
    assert_eq!(report.fused.len(), fetches.len(), "every expression fuses");
    let opt = Session::with_options(&g, elementwise_fusion()).run(&refs, &feeds)?;
    let plain = Session::with_options(&g, SessionOptions::unoptimized()).run(&refs, &feeds)?;
    for ((name, _), (o, p)) in fetches.iter().zip(opt.iter().zip(&plain)) {
        assert_bitwise(o, p, name);
    }
    // And against hand-computed values for the B2 expression.
    let b2 = opt[fetches.iter().position(|(name, _)| *name == "B2").unwrap_or(0)].to_vec::<f32>()?;
    for (i, &v) in data.iter().enumerate().skip(cols * 3).take(50) {
        let v = v as f64;
        let want = (v * 1.5 + 0.5).tanh() / (1.0 + (-v).exp()) - v * v;
        assert!((b2[i] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "B2 at {v}: {} vs {want}", b2[i]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Batch-norm folding
// ---------------------------------------------------------------------------

/// A graph-mode inference model: conv → batch norm → relu → pool → dense →
/// batch norm, its variables (moving statistics and scales too) drawn from
/// one seed, in a session with `options`.
fn batch_norm_model(options: SessionOptions) -> Result<(Session, Tensor, Tensor)> {
    use rivulet::nn::{ActivationLayer, BatchNormalization, Conv2D, Flatten, MaxPooling2D, Sequential};
    use rivulet::ops::Padding;
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(10), Some(9), Some(3)])?;
    let model = Sequential::new(vec![
        Box::new(Conv2D::new(6, [3, 3], Activation::Linear).padding(Padding::Same)),
        Box::new(BatchNormalization::new()),
        Box::new(ActivationLayer::new(Activation::Relu)),
        Box::new(MaxPooling2D::new([2, 2])),
        Box::new(Flatten::new()),
        Box::new(Dense::new(5, Activation::Linear).without_bias()),
        Box::new(BatchNormalization::with(0.9, 1e-2)),
    ]);
    let y = model.call(&x, false)?;
    let s = Session::with_options(&g, options);
    s.run_targets(&[&g.global_variables_initializer()?])?;
    let mut rng = Rng(0xB4F0);
    let mut assigns = Vec::new();
    for v in model.variables() {
        // Every variable from one seed (two models draw different initial
        // kernels): variances and scales positive, the rest either sign.
        let name = v.name().to_string();
        let shape = v.read().shape().dims().to_vec();
        // Kernels scaled by 1/√fan-in, as initializers do, so activations stay near 1.
        let fan_in: usize = shape[..shape.len().saturating_sub(1)].iter().product();
        let t = rng.tensor(&shape, if name.contains("kernel") { 1.0 / (fan_in as f32).sqrt() } else { 1.0 });
        let t = if name.contains("variance") || name.contains("gamma") { ops::add(&ops::abs(&t)?, 0.5)? } else { t };
        assigns.push(v.assign(&ops::constant(&g, t)?)?);
    }
    for a in &assigns {
        s.run(&[a], &[])?;
    }
    Ok((s, x, y))
}

#[test]
fn batch_norm_folding_changes_no_prediction_by_more_than_1e_5() -> Result<()> {
    let xv = Rng(77).tensor(&[4, 10, 9, 3], 1.0);
    let (plain, x, y) = batch_norm_model(SessionOptions::default())?;
    let (folded, fx, fy) = batch_norm_model(SessionOptions { passes: PassOptions::inference(), ..Default::default() })?;
    let want = plain.run(&[&y], &[(&x, &xv)])?.remove(0).to_vec::<f32>()?;
    let got = folded.run(&[&fy], &[(&fx, &xv)])?.remove(0).to_vec::<f32>()?;
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.1, "the model computes something: {want:?}");
    let worst = want.iter().zip(&got).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-5, "folding moved a prediction by {worst}");
    // The batch norms are gone: the conv's scale went into its kernel, and
    // what is left of it (a shift) fused with the relu into the conv; the
    // dense layer's into its matmul.
    let report = folded.explain(&[&fy], &[&fx], &[])?;
    let names: Vec<&str> = report.passes.iter().map(|d| d.pass).collect();
    assert!(names.contains(&"batch_norm_folding"), "{names:?}");
    assert!(report.fused.iter().any(|(_, p)| p.trim() == "conv + bias + relu"), "{:?}", report.fused);
    assert!(report.fused.iter().any(|(_, p)| p.trim() == "matmul + bias"), "{:?}", report.fused);
    // Off by default: the default session keeps every result bit for bit.
    let report = plain.explain(&[&y], &[&x], &[])?;
    assert!(!report.passes.iter().any(|d| d.pass == "batch_norm_folding"));
    Ok(())
}

#[test]
fn batch_norm_folding_leaves_shared_and_unscaled_products_alone() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3, 4])?;
    let w = g.placeholder("w", DType::F32, [4, 5])?;
    let s = g.placeholder("s", DType::F32, [5])?;
    let b = g.placeholder("b", DType::F32, [5])?;
    let fold = || only(|p| p.batch_norm_folding = true);
    // A product read twice keeps its value for the other reader.
    let m = ops::matmul(&x, &w)?;
    let y = ops::add(&ops::mul(&m, &s)?, &b)?;
    let r = explain_one(&g, fold(), "batch_norm_folding", &[&y, &m], &[&x, &w, &s, &b]);
    assert_eq!(before_after(&r), (7, 7), "{}", r.passes[1].text);
    // A bias alone is not a scale: nothing to fold.
    let y = ops::sub(&ops::matmul(&x, &w)?, &b)?;
    let r = explain_one(&g, fold(), "batch_norm_folding", &[&y], &[&x, &w, &s, &b]);
    assert_eq!(count_ops(&r.passes[1].text, "MatMul"), 1);
    assert_eq!(count_ops(&r.passes[1].text, "Mul"), 0);
    // Sub, then scale: (m - b)·s = (x·(w·s)) + (-b)·s, and the values agree.
    let y = ops::mul(&ops::sub(&ops::matmul(&x, &w)?, &b)?, &s)?;
    let r = explain_one(&g, fold(), "batch_norm_folding", &[&y], &[&x, &w, &s, &b]);
    assert!(r.passes[1].text.contains("folded_kernel"), "{}", r.passes[1].text);
    let mut rng = Rng(9);
    let feeds = [rng.tensor(&[3, 4], 1.0), rng.tensor(&[4, 5], 1.0), rng.tensor(&[5], 1.0), rng.tensor(&[5], 1.0)];
    let pairs = [(&x, &feeds[0]), (&w, &feeds[1]), (&s, &feeds[2]), (&b, &feeds[3])];
    let folded = Session::with_options(&g, fold()).run(&[&y], &pairs)?.remove(0).to_vec::<f32>()?;
    let plain = Session::new(&g).run(&[&y], &pairs)?.remove(0).to_vec::<f32>()?;
    for (a, p) in folded.iter().zip(&plain) {
        assert!((a - p).abs() <= 1e-5 * (1.0 + p.abs()), "{a} vs {p}");
    }
    Ok(())
}
