//! Errors and I/O: one test per error kind (with the op context that op
//! errors carry, eager and in graph mode), `.npy` reading and writing, and
//! damaged `.npy` files and serialized graphs, which must give `Format`
//! errors and never panic.

use crate::common::{fresh_dir, Rng, TempDir};

use half::{bf16, f16};
use rivulet::ops::{self, SliceItem};
use rivulet::{load_npy, read_npy, save_npy, write_npy, DType, Error, ErrorKind, Graph, Session, Tensor};
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

type TestResult = rivulet::Result<()>;

/// `file:line:` of a call on line `line` of this file.
fn here(line: u32) -> String {
    format!("errors_io.rs:{line}:")
}

#[track_caller]
fn assert_mentions(e: &Error, parts: &[&str]) {
    let s = e.to_string();
    for p in parts {
        assert!(s.contains(p), "error text lacks {p:?}:\n{s}");
    }
}

fn temp_dir(name: &str) -> TempDir {
    fresh_dir("errors-io", name)
}

// ---------------------------------------------------------------------------
// One test per error kind
// ---------------------------------------------------------------------------

#[test]
fn shape_error_names_op_inputs_node_and_call_site() -> TestResult {
    let a = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    // Eager.
    let (e, line) = (ops::matmul(&a, &a).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e, &["MatMul", "f32[2, 3], f32[2, 3]", &here(line), "shape error"]);
    let c = e.op_context().expect("op context");
    assert_eq!(c.op, "MatMul");
    assert_eq!(c.node, None);
    assert_eq!(c.inputs, vec!["f32[2, 3]".to_string(), "f32[2, 3]".to_string()]);
    assert!(c.location.contains(&here(line)), "{}", c.location);
    // Graph mode, at build time: the node name too.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)])?;
    let (e, line) = (ops::matmul(&x, &a).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e, &["MatMul 'matmul'", "f32[?, 3], f32[2, 3]", &here(line)]);
    assert_eq!(e.op_context().unwrap().node.as_deref(), Some("matmul"));
    let e = {
        let _s = g.name_scope("layer1");
        ops::matmul(&x, &a).unwrap_err()
    };
    assert_mentions(&e, &["'layer1/matmul'"]);
    // Graph mode, at run time: the node and where it was created.
    let y = g.placeholder("y", DType::F32, [None, Some(3)])?;
    let (s, line) = (ops::add(&x, &y)?, line!());
    let sess = Session::new(&g);
    let e = sess
        .run(
            &[&s],
            &[(&x, &Tensor::from_vec(vec![0.0f32; 6], [2, 3])?), (&y, &Tensor::from_vec(vec![0.0f32; 9], [3, 3])?)],
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e, &["AddV2 'add'", "f32[2, 3], f32[3, 3]", &here(line)]);
    assert_eq!(e.op_context().unwrap().node.as_deref(), Some("add"));
    // Values that cannot fill a shape.
    let e = Tensor::from_vec(vec![1.0f32; 5], [2, 3]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e, &["[2, 3]"]);
    Ok(())
}

#[test]
fn dtype_error_names_op_inputs_node_and_call_site() -> TestResult {
    let a = Tensor::from([1.0f32, 2.0]);
    let b = Tensor::from([1i32, 2]);
    let (e, line) = (ops::add(&a, &b).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::DType);
    assert_mentions(&e, &["AddV2", "f32[2], i32[2]", &here(line), "dtype error"]);
    assert_eq!(e.op_context().unwrap().inputs, vec!["f32[2]".to_string(), "i32[2]".to_string()]);
    // Graph mode.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    let i = g.placeholder("i", DType::I32, [None])?;
    let (e, line) = (ops::add(&x, &i).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::DType);
    assert_mentions(&e, &["AddV2 'add'", "f32[2], i32[?]", &here(line)]);
    let (e, line) = (ops::exp(&i).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::DType);
    assert_mentions(&e, &["Exp 'exp'", "i32[?]", &here(line)]);
    // A feed of the wrong dtype names the placeholder.
    let y = ops::mul(&x, 2.0)?;
    let e = Session::new(&g).run(&[&y], &[(&x, &b)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType);
    assert_mentions(&e, &["x:0", "i32", "f32"]);
    // A feed of the wrong shape names it too (Shape kind).
    let e = Session::new(&g).run(&[&y], &[(&x, &Tensor::from([1.0f32, 2.0, 3.0]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e, &["x:0", "[3]", "[2]"]);
    // to_vec with the wrong element type.
    let e = a.to_vec::<f64>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType);
    Ok(())
}

#[test]
fn invalid_argument_names_op_inputs_node_and_call_site() -> TestResult {
    let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]);
    let (e, line) = (ops::transpose(&x, &[0, 0]).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_mentions(&e, &["Transpose", "f32[4, 2]", &here(line)]);
    let (e, line) = (ops::top_k(&x, 3).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_mentions(&e, &["TopKV2", "f32[4, 2]", &here(line)]);
    // A kernel-time failure, eager.
    let idx = Tensor::from([0i32, 7, 1]);
    let (e, line) = (ops::gather(&x, &idx, 0, 0).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_mentions(&e, &["GatherV2", "f32[4, 2], i32[3]", &here(line), "7"]);
    // The same at Session::run: node name and creation site, with the run-time shapes.
    let g = Graph::new();
    let p = g.placeholder("params", DType::F32, [None, Some(2)])?;
    let i = g.placeholder("indices", DType::I32, [None])?;
    let (gathered, line) = (ops::gather(&p, &i, 0, 0)?, line!());
    let e = Session::new(&g).run(&[&gathered], &[(&p, &x), (&i, &idx)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_mentions(&e, &["GatherV2 'gather'", "f32[4, 2], i32[3]", &here(line)]);
    let c = e.op_context().unwrap();
    assert_eq!(c.node.as_deref(), Some("gather"));
    assert_eq!(c.inputs, vec!["f32[4, 2]".to_string(), "i32[3]".to_string()]);
    // Integer division by zero at run time.
    let num = g.constant(Tensor::from([1i32, 2]))?;
    let den = g.constant(Tensor::from([1i32, 0]))?;
    let (q, line) = (ops::truncate_div(&num, &den)?, line!());
    let e = Session::new(&g).run(&[&q], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_mentions(&e, &["RealDiv 'real_div'", "i32[2], i32[2]", &here(line), "zero"]);
    Ok(())
}

#[test]
fn argument_errors_found_before_the_op_is_built_still_name_the_op_and_call_site() {
    // Axis normalisation and similar checks run in the op functions before the
    // op is applied; their errors must carry the same context as the others.
    let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    let mut missing = Vec::new();
    let mut check = |what: &str, op: &str, r: rivulet::Result<Tensor>, line: u32| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
        let s = e.to_string();
        if !(s.contains(op) && s.contains("f32[2, 2]") && s.contains(&here(line))) {
            missing.push(format!("{what}: {s}"));
        }
    };
    let (r, l) = (ops::sum(&x, 2, false), line!());
    check("sum over axis 2", "Sum", r, l);
    let (r, l) = (ops::softmax(&x, -3), line!());
    check("softmax over axis -3", "Softmax", r, l);
    let (r, l) = (ops::argmax(&x, 5), line!());
    check("argmax over axis 5", "ArgMax", r, l);
    let (r, l) = (ops::cumsum(&x, 2, false, false), line!());
    check("cumsum over axis 2", "Cumsum", r, l);
    let (r, l) = (ops::concat(&[&x, &x], 2), line!());
    check("concat along axis 2", "ConcatV2", r, l);
    let (r, l) = (ops::expand_dims(&x, 4), line!());
    check("expand_dims at 4", "ExpandDims", r, l);
    let (r, l) = (ops::reverse(&x, &[0, 0]), line!());
    check("reverse a repeated axis", "ReverseV2", r, l);
    let (r, l) = (ops::split(&x, 3, 0).map(|v| v[0].clone()), line!());
    check("split 2 rows in 3", "SplitV", r, l);
    assert!(missing.is_empty(), "errors without op context:\n{}", missing.join("\n"));
}

#[test]
fn not_found_for_missing_files_nodes_and_tensors() -> TestResult {
    let dir = temp_dir("not-found");
    let path = dir.join("does-not-exist.npy");
    let e = load_npy(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_mentions(&e, &["does-not-exist.npy"]);
    // Saving into a missing directory.
    let e = save_npy(&Tensor::from([1.0f32]), dir.join("no/such/dir/x.npy")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let g = Graph::new();
    g.placeholder("x", DType::F32, [1])?;
    let e = g.operation("y").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_mentions(&e, &["'y'"]);
    assert_eq!(g.tensor("y:0").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(g.tensor("y").unwrap_err().kind(), ErrorKind::NotFound);
    Ok(())
}

struct FailingWriter;

impl Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serves `data` up to `fail_at` bytes, then fails with an I/O error.
struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(io::Error::other("cable unplugged"));
        }
        let n = buf.len().min(self.fail_at - self.pos).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn npy_of(t: &Tensor) -> Vec<u8> {
    let mut v = Vec::new();
    write_npy(t, &mut v).unwrap();
    v
}

#[test]
fn io_errors_from_writers_readers_and_the_file_system() -> TestResult {
    let t = Tensor::from([1.0f32, 2.0, 3.0]);
    let e = write_npy(&t, FailingWriter).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_mentions(&e, &["disk on fire"]);
    // A reader that fails while the data is read.
    let bytes = npy_of(&t);
    let e = read_npy(FailingReader { data: bytes.clone(), pos: 0, fail_at: bytes.len() - 4 }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_mentions(&e, &["cable unplugged"]);
    // Saving under a path whose "directory" is a regular file.
    let dir = temp_dir("io");
    let file = dir.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let e = save_npy(&t, file.join("x.npy")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    Ok(())
}

#[test]
fn a_reader_failing_in_the_header_is_an_io_error_not_a_damaged_file() {
    // An operating-system failure is `Io` wherever it happens; `Format` is for damaged data.
    let bytes = npy_of(&Tensor::from([1.0f32, 2.0, 3.0]));
    for fail_at in [0, 4, 9, 20] {
        let e = read_npy(FailingReader { data: bytes.clone(), pos: 0, fail_at }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "failing at byte {fail_at}: {e}");
        assert_mentions(&e, &["cable unplugged"]);
    }
}

#[test]
fn format_errors_for_damaged_files_and_graphs() {
    let e = read_npy(&b"PK\x03\x04 this is a zip file"[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert_mentions(&e, &["format error"]);
    let e = Graph::from_json("{\"not\": \"a graph\"}").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    let dir = temp_dir("format");
    let path = dir.join("garbage.npy");
    std::fs::write(&path, b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}").unwrap();
    let e = load_npy(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
}

#[test]
fn failed_precondition_for_an_unfed_placeholder_names_it() -> TestResult {
    let g = Graph::new();
    let (x, line) = (g.placeholder("features", DType::F32, [None, Some(3)])?, line!());
    let y = ops::sum(&ops::relu(&x)?, 1, false)?;
    let e = Session::new(&g).run(&[&y], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert_mentions(&e, &["'features'", "f32[?, 3]", "Placeholder", &here(line)]);
    assert_eq!(e.op_context().unwrap().node.as_deref(), Some("features"));
    // The placeholder is reported even when it is reached through several nodes in a scope.
    let z = {
        let _s = g.name_scope("inner");
        g.placeholder("z", DType::F32, rivulet::Shape::scalar())?
    };
    let w = ops::add(&ops::mul(&z, 2.0)?, 1.0)?;
    let e = Session::new(&g).run(&[&w], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert_mentions(&e, &["'inner/z'"]);
    Ok(())
}

#[test]
fn graph_errors_for_symbolic_values_and_mixed_graphs() -> TestResult {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    // A symbolic tensor has no elements.
    let e = x.to_vec::<f32>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph);
    assert_mentions(&e, &["x:0", "symbolic"]);
    assert_eq!(x.to_scalar::<f32>().unwrap_err().kind(), ErrorKind::Graph);
    let m = g.placeholder("m", DType::F32, [2, 2])?;
    assert_eq!(m.to_vec2::<f32>().unwrap_err().kind(), ErrorKind::Graph);
    assert!(!x.bitwise_eq(&x));
    // A constant must be a value.
    assert_eq!(g.constant(&x).unwrap_err().kind(), ErrorKind::Graph);
    // Tensors of two graphs in one op.
    let g2 = Graph::new();
    let x2 = g2.placeholder("x2", DType::F32, [2])?;
    let (e, line) = (ops::add(&x, &x2).unwrap_err(), line!());
    assert_eq!(e.kind(), ErrorKind::Graph);
    assert_mentions(&e, &["AddV2", "f32[2], f32[2]", &here(line), "two different graphs"]);
    let e = ops::concat(&[&x, &x, &x2], 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph);
    // Fetching or feeding values, or tensors of another graph.
    let sess = Session::new(&g);
    let v = Tensor::from([1.0f32, 2.0]);
    let e = sess.run(&[&v], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph);
    assert_mentions(&e, &["fetch"]);
    let e = sess.run(&[&x2], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph);
    let y = ops::neg(&x)?;
    let e = sess.run(&[&y], &[(&v, &v)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph);
    let e = sess.run(&[&y], &[(&x2, &v)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph);
    Ok(())
}

#[test]
fn feeding_a_symbolic_tensor_as_a_value_is_a_graph_error() -> TestResult {
    // `ErrorKind::Graph` covers "a symbolic tensor where a value is needed".
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    let other = g.placeholder("other", DType::F32, [2])?;
    let y = ops::neg(&x)?;
    let e = Session::new(&g).run(&[&y], &[(&x, &other)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph, "{e}");
    assert_mentions(&e, &["x:0"]);
    Ok(())
}

#[test]
fn unimplemented_for_bf16_npy_and_einsum_diagonal_outputs() -> TestResult {
    let t = Tensor::from([bf16::from_f32(1.5), bf16::from_f32(-2.0)]);
    let mut buf = Vec::new();
    let e = write_npy(&t, &mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unimplemented);
    assert_mentions(&e, &["bf16"]);
    assert!(buf.is_empty(), "nothing may be written before the error");
    let dir = temp_dir("unimplemented");
    let e = save_npy(&t, dir.join("b.npy")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unimplemented);
    assert!(!dir.join("b.npy").exists());
    // Writing a diagonal (a repeated output letter) is not supported; reading one is.
    let a = Tensor::from([1.0f32, 2.0]);
    let e = ops::einsum("i->ii", &[&a]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unimplemented);
    assert_mentions(&e, &["einsum", "diagonal"]);
    // Graph mode refuses the same way.
    let g = Graph::new();
    let p = g.placeholder("p", DType::F32, [2])?;
    assert_eq!(ops::einsum("i->ii", &[&p]).unwrap_err().kind(), ErrorKind::Unimplemented);
    Ok(())
}

#[test]
fn a_failed_save_leaves_no_temporary_file_and_keeps_the_old_one() -> TestResult {
    let dir = temp_dir("atomic");
    let path = dir.join("keep.npy");
    let good = Tensor::from([1.0f32, 2.0]);
    save_npy(&good, &path)?;
    let bad = Tensor::from([bf16::from_f32(1.0)]);
    assert_eq!(save_npy(&bad, &path).unwrap_err().kind(), ErrorKind::Unimplemented);
    assert!(load_npy(&path)?.bitwise_eq(&good), "the old file must survive a failed save");
    let left: Vec<String> =
        std::fs::read_dir(&*dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, vec!["keep.npy".to_string()], "leftover files after a failed save");
    Ok(())
}

#[test]
fn a_failed_graph_op_adds_no_nodes() -> TestResult {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2])?;
    let before = g.num_nodes();
    // The value operand would become a Const node; the op itself is refused.
    assert!(ops::add(&x, &Tensor::from([1i32, 2])).is_err());
    assert!(ops::matmul(&x, &Tensor::from([[1.0f32]])).is_err());
    assert_eq!(g.num_nodes(), before, "nodes: {:?}", g.nodes().iter().map(|n| n.name.clone()).collect::<Vec<_>>());
    // And the names of refused nodes stay free.
    let ok = ops::add(&x, 1.0)?;
    assert_eq!(ok.op().unwrap().name(), "add");
    Ok(())
}

#[test]
fn absurd_sizes_are_errors_not_panics() -> TestResult {
    let x = &Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    let huge = 1usize << 62;
    type Case<'a> = (&'static str, Box<dyn Fn() -> rivulet::Result<Tensor> + 'a>);
    let cases: Vec<Case<'_>> = vec![
        ("tile by usize::MAX", Box::new(move || ops::tile(x, &[usize::MAX, 1]))),
        ("tile by 2^62 x 2^62", Box::new(move || ops::tile(x, &[huge, huge]))),
        ("pad by usize::MAX", Box::new(move || ops::pad(x, &[(usize::MAX, 1), (0, 0)], ops::PadMode::Constant, 0))),
        ("one_hot depth 2^62", Box::new(move || ops::one_hot(&Tensor::from([0i32, 1]), huge))),
        ("fill 2^62 x 2^62", Box::new(move || ops::fill(ops::Ctx::Eager, [huge, huge], 0, DType::F32))),
        ("broadcast_to 2^62 x 2^62", Box::new(move || ops::broadcast_to(x, [huge, huge, 2, 2]))),
        ("eye 2^40 x 2^40", Box::new(move || ops::eye(ops::Ctx::Eager, 1 << 40, 1 << 40, DType::F32))),
        ("reshape to 2^62 x 2^62", Box::new(move || ops::reshape(x, &[1 << 62, 1 << 62, 0]))),
        (
            "concat of huge placeholders",
            Box::new(move || {
                let g = Graph::new();
                let p = g.placeholder("p", DType::F32, [usize::MAX - 1])?;
                ops::concat(&[&p, &p], 0)
            }),
        ),
        ("linspace of 2^62", Box::new(move || ops::linspace(ops::Ctx::Eager, 0.0, 1.0, huge, DType::F32))),
        ("range of 1e300", Box::new(move || ops::range(ops::Ctx::Eager, 0.0, 1e300, 1.0, DType::F64))),
    ];
    let mut bad = Vec::new();
    for (what, f) in &cases {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(t)) => bad.push(format!("{what}: succeeded with shape {}", t.shape())),
            Ok(Err(_)) => {}
            Err(_) => bad.push(format!("{what}: panicked")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // A huge step is fine: it takes one element.
    let v = Tensor::from([1.0f32, 2.0, 3.0, 4.0, 5.0]);
    let a = v.index(&[SliceItem::stepped(None, None, i64::MAX)])?;
    assert_eq!(a.to_vec::<f32>()?, vec![1.0]);
    let b = v.index(&[SliceItem::stepped(None, None, i64::MIN)])?;
    assert_eq!(b.to_vec::<f32>()?, vec![5.0]);
    let c = v.index(&[SliceItem::stepped(Some(i64::MIN), Some(i64::MAX), 2)])?;
    assert_eq!(c.to_vec::<f32>()?, vec![1.0, 3.0, 5.0]);
    Ok(())
}

// ---------------------------------------------------------------------------
// .npy round trips and layout
// ---------------------------------------------------------------------------

fn samples() -> Vec<Tensor> {
    vec![
        Tensor::from_vec(
            vec![1.5f32, -0.0, f32::from_bits(0x7fc0_1234), f32::INFINITY, f32::NEG_INFINITY, 1e-45],
            [2, 3],
        )
        .unwrap(),
        Tensor::from_vec(vec![f64::from_bits(0xfff8_0000_0000_0042), -1e300, 0.1, 2.5], [4, 1]).unwrap(),
        Tensor::from_vec(
            vec![f16::from_bits(0x7e05), f16::from_f32(-65504.0), f16::from_f32(0.1), f16::from_bits(1)],
            [2, 2],
        )
        .unwrap(),
        Tensor::from_vec(vec![i32::MIN, -1, 0, 7, i32::MAX], [5]).unwrap(),
        Tensor::from_vec(vec![i64::MIN, -3, 1 << 40, i64::MAX, 0, 9], [1, 2, 3]).unwrap(),
        Tensor::from_vec(vec![0u8, 1, 128, 255], [2, 1, 2]).unwrap(),
        Tensor::from_vec(vec![true, false, false, true, true, false], [3, 2]).unwrap(),
    ]
}

fn scalars_and_empties() -> Vec<Tensor> {
    let mut v = vec![
        Tensor::scalar(3.25f32),
        Tensor::scalar(-2.0f64),
        Tensor::scalar(f16::from_f32(0.5)),
        Tensor::scalar(-9i32),
        Tensor::scalar(i64::MIN),
        Tensor::scalar(200u8),
        Tensor::scalar(true),
    ];
    for dtype in [DType::F32, DType::F64, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool] {
        v.push(Tensor::zeros([0], dtype).unwrap());
        v.push(Tensor::zeros([3, 0, 2], dtype).unwrap());
    }
    v
}

#[test]
fn npy_round_trips_every_dtype_but_bf16() -> TestResult {
    let dir = temp_dir("roundtrip");
    let mut seen = Vec::new();
    for (i, t) in samples().into_iter().chain(scalars_and_empties()).enumerate() {
        let path = dir.join(format!("t{i}.npy"));
        save_npy(&t, &path)?;
        let back = load_npy(&path)?;
        assert!(back.bitwise_eq(&t), "#{i} {}{}: {back:?} vs {t:?}", t.dtype(), t.shape());
        assert_eq!(back.shape(), t.shape());
        let from_mem = read_npy(&npy_of(&t)[..])?;
        assert!(from_mem.bitwise_eq(&t), "#{i} in memory");
        // The file on disk is exactly what write_npy produces.
        assert_eq!(std::fs::read(&path).unwrap(), npy_of(&t));
        seen.push(t.dtype());
    }
    for d in [DType::F32, DType::F64, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool] {
        assert!(seen.contains(&d));
    }
    // Saving over an existing file replaces it.
    let path = dir.join("t0.npy");
    save_npy(&Tensor::from([9i64]), &path)?;
    assert_eq!(load_npy(&path)?.to_vec::<i64>()?, vec![9]);
    // Non-contiguous tensors are written in logical order.
    let m = Tensor::from([[1i32, 2, 3], [4, 5, 6]]);
    let mt = ops::transpose(&m, &[])?;
    assert_eq!(read_npy(&npy_of(&mt)[..])?.to_vec::<i32>()?, vec![1, 4, 2, 5, 3, 6]);
    Ok(())
}

#[test]
fn write_npy_layout_magic_and_aligned_header() {
    let cases: Vec<(Tensor, &str, &str)> = vec![
        (Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]), "<f4", "(2, 3)"),
        (Tensor::from([1.0f64]), "<f8", "(1,)"),
        (Tensor::scalar(f16::from_f32(1.0)), "<f2", "()"),
        (Tensor::from([1i32, 2, 3, 4, 5]), "<i4", "(5,)"),
        (Tensor::from_vec(vec![1i64; 24], [2, 3, 4]).unwrap(), "<i8", "(2, 3, 4)"),
        (Tensor::from([7u8]), "|u1", "(1,)"),
        (Tensor::from([true, false]), "|b1", "(2,)"),
        (Tensor::zeros([0, 5], DType::F32).unwrap(), "<f4", "(0, 5)"),
    ];
    for (t, descr, shape) in cases {
        let bytes = npy_of(&t);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{descr}");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "header not 64-byte aligned for {descr} {shape}");
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.ends_with('\n'), "{header:?}");
        assert!(header.starts_with('{'), "{header:?}");
        assert!(header.contains(&format!("'descr': '{descr}'")), "{header:?}");
        assert!(header.contains("'fortran_order': False"), "{header:?}");
        assert!(header.contains(&format!("'shape': {shape}")), "{header:?}");
        let n = t.numel().unwrap();
        assert_eq!(bytes.len(), 10 + hlen + n * t.dtype().size());
    }
    // The data is little-endian, row-major.
    let bytes = npy_of(&Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]));
    let data = &bytes[bytes.len() - 16..];
    let expect: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(data, &expect[..]);
}

/// An npy file with `header` (padded like NumPy does) and `data`.
fn npy_file(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let len_bytes = if major == 1 { 2 } else { 4 };
    let mut h = header.to_string();
    let unpadded = 6 + 2 + len_bytes + h.len() + 1;
    h.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    h.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn big_endian_and_fortran_order_files_read_correctly() -> TestResult {
    // [[1, 2, 3], [4, 5, 6]] as big-endian f4 in Fortran (column-major) order.
    let mut data = Vec::new();
    for j in 0..3 {
        for i in 0..2 {
            data.extend_from_slice(&((i * 3 + j + 1) as f32).to_be_bytes());
        }
    }
    let f = npy_file(1, "{'descr': '>f4', 'fortran_order': True, 'shape': (2, 3), }", &data);
    let t = read_npy(&f[..])?;
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.shape().dims(), &[2, 3]);
    assert_eq!(t.to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Rank 3, big-endian i8, Fortran order: element (i, j, k) = 100i + 10j + k.
    let mut data = Vec::new();
    for k in 0..4i64 {
        for j in 0..3i64 {
            for i in 0..2i64 {
                data.extend_from_slice(&(100 * i + 10 * j + k).to_be_bytes());
            }
        }
    }
    let f = npy_file(1, "{'descr': '>i8', 'fortran_order': True, 'shape': (2, 3, 4), }", &data);
    let t = read_npy(&f[..])?;
    let expect: Vec<i64> =
        (0..2).flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| 100 * i + 10 * j + k))).collect();
    assert_eq!(t.shape().dims(), &[2, 3, 4]);
    assert_eq!(t.to_vec::<i64>()?, expect);
    // Big-endian f8 and f2 in C order; a NumPy-style header with the keys in another order.
    let data: Vec<u8> = [0.5f64, -3.25].iter().flat_map(|v| v.to_be_bytes()).collect();
    let f = npy_file(1, "{'fortran_order': False, 'shape': (2,), 'descr': '>f8'}", &data);
    assert_eq!(read_npy(&f[..])?.to_vec::<f64>()?, vec![0.5, -3.25]);
    let data: Vec<u8> = [f16::from_f32(1.5), f16::from_f32(-2.0)].iter().flat_map(|v| v.to_be_bytes()).collect();
    let f = npy_file(1, "{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }", &data);
    assert_eq!(read_npy(&f[..])?.to_vec::<f16>()?, vec![f16::from_f32(1.5), f16::from_f32(-2.0)]);
    let data: Vec<u8> = [-7i32, 65536].iter().flat_map(|v| v.to_be_bytes()).collect();
    let f = npy_file(1, "{'descr': '>i4', 'fortran_order': True, 'shape': (2,), }", &data);
    assert_eq!(read_npy(&f[..])?.to_vec::<i32>()?, vec![-7, 65536]);
    // Fortran-order bool and u8 (no byte order), a scalar in Fortran order.
    let f = npy_file(1, "{'descr': '|b1', 'fortran_order': True, 'shape': (2, 2), }", &[1, 0, 0, 1]);
    assert_eq!(read_npy(&f[..])?.to_vec::<bool>()?, vec![true, false, false, true]);
    let f = npy_file(1, "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }", &[1, 4, 2, 5, 3, 6]);
    assert_eq!(read_npy(&f[..])?.to_vec::<u8>()?, vec![1, 2, 3, 4, 5, 6]);
    let f = npy_file(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (), }", &2.5f32.to_le_bytes());
    let t = read_npy(&f[..])?;
    assert_eq!(t.rank(), 0);
    assert_eq!(t.to_scalar::<f32>()?, 2.5);
    // Format version 2.0 (four-byte header length) and 3.0.
    let data: Vec<u8> = [1i32, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    for major in [2u8, 3] {
        let f = npy_file(major, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", &data);
        assert_eq!(read_npy(&f[..])?.to_vec::<i32>()?, vec![1, 2, 3], "version {major}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Damaged .npy files
// ---------------------------------------------------------------------------

/// Read `bytes` as npy, turning a panic into a description.
fn try_read(bytes: &[u8]) -> Result<rivulet::Result<Tensor>, String> {
    catch_unwind(AssertUnwindSafe(|| read_npy(bytes))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

#[track_caller]
fn assert_format_error(what: &str, bytes: &[u8]) {
    match try_read(bytes) {
        Ok(Err(e)) => assert_eq!(e.kind(), ErrorKind::Format, "{what}: {e}"),
        Ok(Ok(t)) => panic!("{what}: read succeeded: {t:?}"),
        Err(p) => panic!("{what}: panicked: {p}"),
    }
}

fn f32_header(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

#[test]
fn damaged_npy_headers_are_format_errors() {
    let valid = npy_of(&Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]));
    assert!(read_npy(&valid[..]).is_ok());
    assert_format_error("empty", b"");
    assert_format_error("magic only", b"\x93NUMPY");
    let mut bad_magic = valid.clone();
    bad_magic[1] = b'X';
    assert_format_error("bad magic", &bad_magic);
    let mut v4 = valid.clone();
    v4[6] = 4;
    assert_format_error("version 4", &v4);
    let mut v0 = valid.clone();
    v0[6] = 0;
    assert_format_error("version 0", &v0);
    let hlen = u16::from_le_bytes([valid[8], valid[9]]) as usize;
    assert_format_error("truncated header", &valid[..10 + hlen / 2]);
    assert_format_error("truncated header length", &valid[..9]);
    let mut long = valid.clone();
    long[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    assert_format_error("header length larger than the file", &long);
    let huge_v2 = npy_file(2, &f32_header("(1,)"), &[0; 4]);
    let mut huge_v2 = huge_v2;
    huge_v2[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_format_error("v2 header length of 4 GiB", &huge_v2);
    assert_format_error("truncated data", &valid[..valid.len() - 1]);
    assert_format_error("no data at all", &valid[..10 + hlen]);
    let mut extra = valid.clone();
    extra.push(0);
    assert_format_error("one byte too many", &extra);
    assert_format_error(
        "bool bytes other than 0 and 1",
        &npy_file(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", &[0, 1, 2]),
    );
    assert_format_error(
        "bool 255",
        &npy_file(1, "{'descr': '|b1', 'fortran_order': True, 'shape': (2, 1), }", &[255, 1]),
    );
    for descr in ["<c8", "<U4", "O", "|V8", "<u2", "<i2", "<f16", "", "<", "f4", "xf4", "<F4"] {
        let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
        assert_format_error(&format!("descr {descr:?}"), &npy_file(1, &h, &[0; 16]));
    }
    let missing = [
        "{'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, }",
        "{}",
        "",
        "not a dict at all",
    ];
    for h in missing {
        assert_format_error(&format!("header {h:?}"), &npy_file(1, h, &[0; 4]));
    }
    for shape in ["(1, 2", "(-1,)", "(a, b)", "(1.5,)", "(,,)", "[2]", "(2, -2)", "(0x10,)"] {
        assert_format_error(&format!("shape {shape}"), &npy_file(1, &f32_header(shape), &[0; 8]));
    }
    assert_format_error(
        "fortran_order maybe",
        &npy_file(1, "{'descr': '<f4', 'fortran_order': maybe, 'shape': (1,), }", &[0; 4]),
    );
}

#[test]
fn absurd_npy_shapes_are_format_errors() {
    // A damaged header is a damaged file, whatever is wrong with it.
    let mut problems = Vec::new();
    for shape in [
        "(1000000000000, 1000000000000)",
        "(18446744073709551615,)",
        "(18446744073709551616,)",
        "(4294967296, 4294967296, 4294967296)",
        "(281474976710657,)",
        "(281474976710656, 2)",
    ] {
        match try_read(&npy_file(1, &f32_header(shape), &[0; 64])) {
            Ok(Err(e)) if e.kind() == ErrorKind::Format => {}
            Ok(Err(e)) => problems.push(format!("shape {shape}: {:?}: {e}", e.kind())),
            Ok(Ok(t)) => problems.push(format!("shape {shape}: read as {}", t.shape())),
            Err(p) => problems.push(format!("shape {shape}: panicked: {p}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn non_ascii_npy_headers_are_format_errors() {
    for descr in ["é4", "€f4", "\u{fffd}f4", "<é"] {
        let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
        assert_format_error(&format!("descr {descr:?}"), &npy_file(1, &h, &[0; 4]));
    }
    // Invalid UTF-8 in the header.
    let mut f = npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &[0; 4]);
    f[21] = 0xff; // inside the descr value
    assert_format_error("invalid utf-8 in descr", &f);
}

#[test]
fn no_npy_input_makes_the_reader_panic() {
    let valid: Vec<Vec<u8>> = samples().iter().chain(scalars_and_empties().iter()).map(npy_of).collect();
    let mut panics: Vec<String> = Vec::new();
    let mut wrong_kind: Vec<String> = Vec::new();
    let mut record = |what: String, bytes: &[u8], expect_err: bool| match try_read(bytes) {
        // (Past 20 panics, stop trying: each one prints a message.)
        _ if panics.len() >= 20 => {}
        Err(p) => panics.push(format!("{what}: {p}")),
        Ok(Err(e)) if e.kind() != ErrorKind::Format => wrong_kind.push(format!("{what}: {e}")),
        Ok(Ok(_)) if expect_err => wrong_kind.push(format!("{what}: succeeded")),
        _ => {}
    };
    // Every truncation of every valid file.
    for (k, f) in valid.iter().enumerate() {
        for len in 0..f.len() {
            record(format!("file {k} cut to {len} bytes"), &f[..len], true);
        }
    }
    // Random garbage, with and without a valid magic.
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..10_000 {
        let len = rng.below(300);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && len >= 10 {
            b[..8].copy_from_slice(b"\x93NUMPY\x01\x00");
            let hl = rng.below(len - 9) as u16;
            b[8..10].copy_from_slice(&hl.to_le_bytes());
        }
        record(format!("garbage #{i} {b:?}"), &b, false);
    }
    // Random mutations of valid files, header bytes most of all.
    for i in 0..20_000 {
        let mut f = valid[rng.below(valid.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = if rng.below(4) > 0 { rng.below(f.len().min(80)) } else { rng.below(f.len()) };
            f[at] = match rng.below(3) {
                0 => rng.next_u64() as u8,
                1 => b"0123456789(),' :<>|TrueFalse"[rng.below(28)],
                _ => f[at] ^ (1 << rng.below(8)),
            };
        }
        record(format!("mutation #{i}"), &f, false);
    }
    assert!(
        panics.is_empty() && wrong_kind.is_empty(),
        "{} inputs panicked (counting stops at 20), e.g.:\n{}\n{} inputs gave a non-Format error or none, e.g.:\n{}",
        panics.len(),
        panics[..panics.len().min(3)].join("\n"),
        wrong_kind.len(),
        wrong_kind[..wrong_kind.len().min(5)].join("\n")
    );
}

// ---------------------------------------------------------------------------
// Damaged graph JSON
// ---------------------------------------------------------------------------

/// A small graph: x (placeholder), w (const), matmul, relu with a control
/// dependency on w, and a fill.
fn base_graph_json() -> String {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(2)]).unwrap(); // 0
    let w = g.constant(Tensor::from([[1.0f32, 2.0], [3.0, 4.0]])).unwrap(); // 1
    let y = ops::matmul(&x, &w).unwrap(); // 2
    let _c = g.control_dependencies(&[&w.op().unwrap()]).unwrap();
    let _z = ops::relu(&y).unwrap(); // 3
    drop(_c);
    let _f = ops::fill(&g, [2], f64::NAN, DType::F32).unwrap(); // 4
    g.to_json().unwrap()
}

fn try_load(text: &str) -> Result<rivulet::Result<Graph>, String> {
    catch_unwind(AssertUnwindSafe(|| Graph::from_json(text))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

#[test]
fn the_base_graph_document_is_valid() {
    let text = base_graph_json();
    let g = Graph::from_json(&text).unwrap();
    assert_eq!(g.num_nodes(), 5);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["format"], "rivulet.graph");
    assert_eq!(doc["version"], 2);
    // Version 1 documents (before function libraries) still load.
    let v1 = text.replacen("\"version\":2", "\"version\":1", 1);
    assert_ne!(v1, text);
    assert_eq!(Graph::from_json(&v1).unwrap().num_nodes(), 5);
    assert_eq!(doc["nodes"][2]["inputs"][1]["node"], 1);
    assert_eq!(doc["nodes"][3]["control_inputs"][0], 1);
    assert_eq!(doc["nodes"][1]["op"]["type"], "const");
    assert!(doc["nodes"][1]["op"]["value"]["data"].is_string());
}

#[test]
fn damaged_graph_documents_are_format_errors() {
    let text = base_graph_json();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    type Damage = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("wrong format name", Box::new(|d| d["format"] = "rivulet.graf".into())),
        (
            "no format",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("format");
            }),
        ),
        ("wrong version", Box::new(|d| d["version"] = 3.into())),
        ("version 0", Box::new(|d| d["version"] = 0.into())),
        ("version as text", Box::new(|d| d["version"] = "1".into())),
        (
            "no nodes",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("nodes");
            }),
        ),
        ("input refers to a later node", Box::new(|d| d["nodes"][2]["inputs"][0]["node"] = 3.into())),
        ("input refers to itself", Box::new(|d| d["nodes"][2]["inputs"][0]["node"] = 2.into())),
        ("input refers to no node", Box::new(|d| d["nodes"][2]["inputs"][0]["node"] = 1000.into())),
        ("input refers to a huge node", Box::new(|d| d["nodes"][2]["inputs"][0]["node"] = u64::MAX.into())),
        ("output index out of range", Box::new(|d| d["nodes"][2]["inputs"][1]["index"] = 1.into())),
        ("huge output index", Box::new(|d| d["nodes"][2]["inputs"][1]["index"] = u64::MAX.into())),
        ("negative output index", Box::new(|d| d["nodes"][2]["inputs"][1]["index"] = (-1).into())),
        ("too few inputs", Box::new(|d| d["nodes"][2]["inputs"].as_array_mut().unwrap().truncate(1))),
        ("control input refers to itself", Box::new(|d| d["nodes"][3]["control_inputs"] = serde_json::json!([3]))),
        (
            "control input refers to a later node",
            Box::new(|d| d["nodes"][3]["control_inputs"] = serde_json::json!([4])),
        ),
        ("constant data too short", Box::new(move |d| d["nodes"][1]["op"]["value"]["data"] = b64(&[0u8; 12]).into())),
        ("constant data too long", Box::new(move |d| d["nodes"][1]["op"]["value"]["data"] = b64(&[0u8; 20]).into())),
        (
            "constant data far too long",
            Box::new(move |d| d["nodes"][1]["op"]["value"]["data"] = b64(&[0u8; 4000]).into()),
        ),
        ("constant data not base64", Box::new(|d| d["nodes"][1]["op"]["value"]["data"] = "!!!!not*base64".into())),
        ("constant data not a string", Box::new(|d| d["nodes"][1]["op"]["value"]["data"] = 12.into())),
        (
            "constant of an absurd shape",
            Box::new(|d| {
                d["nodes"][1]["op"]["value"]["shape"] = serde_json::json!([1_000_000_000_000u64, 1_000_000_000_000u64])
            }),
        ),
        (
            "constant of an unknown dimension",
            Box::new(|d| d["nodes"][1]["op"]["value"]["shape"] = serde_json::json!([u64::MAX, 1])),
        ),
        ("constant of an unknown dtype", Box::new(|d| d["nodes"][1]["op"]["value"]["dtype"] = "f99".into())),
        (
            "constant dtype disagrees with its outputs",
            Box::new(move |d| {
                d["nodes"][1]["op"]["value"]["dtype"] = "i32".into();
            }),
        ),
        (
            "bool constant with a byte 2",
            Box::new(move |d| {
                d["nodes"][1]["op"]["value"] =
                    serde_json::json!({"dtype": "bool", "shape": [2, 2], "data": b64(&[0, 1, 2, 0])});
                d["nodes"][1]["outputs"][0]["dtype"] = "bool".into();
            }),
        ),
        ("stored output dtype disagrees", Box::new(|d| d["nodes"][2]["outputs"][0]["dtype"] = "f64".into())),
        (
            "stored output shape disagrees",
            Box::new(|d| d["nodes"][2]["outputs"][0]["shape"] = serde_json::json!([5, 2])),
        ),
        ("stored output missing", Box::new(|d| d["nodes"][2]["outputs"] = serde_json::json!([]))),
        (
            "an extra stored output",
            Box::new(|d| {
                let o = d["nodes"][2]["outputs"][0].clone();
                d["nodes"][2]["outputs"].as_array_mut().unwrap().push(o);
            }),
        ),
        (
            "placeholder output disagrees",
            Box::new(|d| d["nodes"][0]["outputs"][0]["shape"] = serde_json::json!([3, 2])),
        ),
        ("duplicate names", Box::new(|d| d["nodes"][1]["name"] = "x".into())),
        ("duplicate names later", Box::new(|d| d["nodes"][4]["name"] = "matmul".into())),
        ("name with a colon", Box::new(|d| d["nodes"][0]["name"] = "x:0".into())),
        ("empty name", Box::new(|d| d["nodes"][0]["name"] = "".into())),
        ("unknown op type", Box::new(|d| d["nodes"][3]["op"] = serde_json::json!({"type": "frobnicate"}))),
        (
            "unknown unary function",
            Box::new(|d| d["nodes"][3]["op"] = serde_json::json!({"type": "unary", "f": "frobnicate"})),
        ),
        (
            "op that does not type-check",
            Box::new(|d| d["nodes"][3]["op"] = serde_json::json!({"type": "transpose", "perm": [0, 0]})),
        ),
        (
            "fill of an absurd shape",
            Box::new(|d| {
                d["nodes"][4]["op"]["shape"] = serde_json::json!([1_000_000_000_000u64, 1_000_000_000_000u64]);
                d["nodes"][4]["outputs"][0]["shape"] = serde_json::json!([1_000_000_000_000u64, 1_000_000_000_000u64]);
            }),
        ),
        ("fill value not a scalar", Box::new(|d| d["nodes"][4]["op"]["value"] = "forty-two".into())),
        (
            "tile by usize::MAX",
            Box::new(|d| {
                d["nodes"][3]["op"] = serde_json::json!({"type": "tile", "multiples": [1, u64::MAX]});
            }),
        ),
        (
            "pad by usize::MAX",
            Box::new(|d| {
                d["nodes"][3]["op"] = serde_json::json!({
                    "type": "pad", "paddings": [[0, 0], [u64::MAX, 1]], "mode": "constant", "value": 0
                });
            }),
        ),
        (
            "concat of huge placeholders",
            Box::new(|d| {
                d["nodes"][0]["op"]["shape"] = serde_json::json!([u64::MAX - 1, 2]);
                d["nodes"][0]["outputs"][0]["shape"] = serde_json::json!([u64::MAX - 1, 2]);
                d["nodes"][2]["outputs"][0]["shape"] = serde_json::json!([u64::MAX - 1, 2]);
                d["nodes"][3]["op"] = serde_json::json!({"type": "concat", "axis": 0});
                d["nodes"][3]["inputs"] = serde_json::json!([{"node": 0, "index": 0}, {"node": 0, "index": 0}]);
            }),
        ),
        (
            "one_hot of absurd depth",
            Box::new(|d| {
                d["nodes"][3]["op"] = serde_json::json!({
                    "type": "one_hot", "depth": u64::MAX - 1, "on": 1, "off": 0, "axis": 0, "dtype": "f32"
                });
            }),
        ),
        (
            "strided slice with a huge step",
            Box::new(|d| {
                d["nodes"][3]["op"] = serde_json::json!({
                    "type": "strided_slice",
                    "spec": ["ellipsis", {"range": {"start": i64::MIN, "stop": i64::MAX, "step": i64::MIN}}]
                });
            }),
        ),
        ("top-level array", Box::new(|d| *d = serde_json::json!([]))),
        ("top-level null", Box::new(|d| *d = serde_json::Value::Null)),
    ];
    let mut problems = Vec::new();
    for (what, damage) in &cases {
        let mut doc = base.clone();
        damage(&mut doc);
        let text = serde_json::to_string(&doc).unwrap();
        match try_load(&text) {
            Ok(Err(e)) if e.kind() == ErrorKind::Format => {}
            Ok(Err(e)) => problems.push(format!("{what}: {:?} error: {e}", e.kind())),
            Ok(Ok(_)) => problems.push(format!("{what}: loaded")),
            Err(p) => problems.push(format!("{what}: panicked: {p}")),
        }
    }
    // Text that is not JSON at all.
    for text in ["", "{", "}", "null", "[1, 2", "{\"format\": \"rivulet.graph\"", "\u{0}", "rivulet"] {
        match try_load(text) {
            Ok(Err(e)) if e.kind() == ErrorKind::Format => {}
            other => problems.push(format!("text {text:?}: {:?}", other.map(|r| r.map(|_| ())))),
        }
    }
    let mut trailing = text.clone();
    trailing.push_str(" garbage");
    if !matches!(try_load(&trailing), Ok(Err(ref e)) if e.kind() == ErrorKind::Format) {
        problems.push("trailing garbage accepted".to_string());
    }
    assert!(problems.is_empty(), "{} damaged documents mishandled:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn every_truncation_of_a_graph_document_is_an_error() {
    let text = base_graph_json();
    assert!(text.is_ascii());
    let mut problems = Vec::new();
    for len in 0..text.len() {
        match try_load(&text[..len]) {
            Ok(Err(e)) if e.kind() == ErrorKind::Format => {}
            Ok(Err(e)) => problems.push(format!("cut at {len}: {:?} error {e}", e.kind())),
            Ok(Ok(_)) => problems.push(format!("cut at {len}: loaded")),
            Err(p) => problems.push(format!("cut at {len}: panicked: {p}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And the untruncated document loads.
    assert!(Graph::from_json(&text).is_ok());
}

#[test]
fn randomly_mutated_graph_documents_never_panic() {
    let text = base_graph_json().into_bytes();
    let alphabet = b"0123456789[]{}\",:-.eE truefalsnul";
    let mut rng = Rng(0xfeed_beef_dead_c0de);
    let mut panics = Vec::new();
    for i in 0..3000 {
        let mut t = text.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(t.len());
            t[at] = alphabet[rng.below(alphabet.len())];
        }
        let s = String::from_utf8_lossy(&t).into_owned();
        match try_load(&s) {
            Err(p) => panics.push(format!("mutation #{i}: {p}\n{s}")),
            Ok(Err(e)) if e.kind() != ErrorKind::Format => {
                panics.push(format!("mutation #{i}: {:?} error {e}", e.kind()))
            }
            _ => {}
        }
    }
    assert!(
        panics.is_empty(),
        "{} mutations mishandled, e.g.:\n{}",
        panics.len(),
        panics[..panics.len().min(3)].join("\n")
    );
}

// ---------------------------------------------------------------------------
// Errors point at the caller, not into the library
// ---------------------------------------------------------------------------

/// The error's op and its location in this file (not a library file).
#[track_caller]
fn assert_at_caller(e: &Error, op: &str) {
    let c = e.op_context().unwrap_or_else(|| panic!("no op context: {e}"));
    assert_eq!(c.op, op, "{e}");
    assert!(c.location.contains("tests/suite/errors_io.rs:"), "points at the caller: {e}");
}

#[test]
fn composite_ops_and_losses_report_themselves_at_the_callers_line() -> TestResult {
    let (a, b) = (Tensor::from([1.0f32, 2.0]), Tensor::from([1.0f32, 2.0, 3.0]));
    let e = ops::stack(&[&a, &b], 0).unwrap_err();
    assert_at_caller(&e, "Pack");
    assert_mentions(&e, &["f32[3]", "f32[2]"]);
    let m = Tensor::from([[[1.0f32]]]);
    let e = ops::einsum("jki->ii", &[&m]).unwrap_err();
    assert_at_caller(&e, "Einsum");
    assert_mentions(&e, &["'i'"]);
    let e = rivulet::nn::losses::huber(&a, &a, -1.0).unwrap_err();
    assert_at_caller(&e, "Huber");
    let e = rivulet::nn::losses::sparse_categorical_crossentropy(&Tensor::scalar(1i32), &Tensor::scalar(0.5f32))
        .unwrap_err();
    assert_at_caller(&e, "SparseCategoricalCrossentropy");
    let e = rivulet::nn::Loss::Huber { delta: f64::NAN }.compute(&a, &a).unwrap_err();
    assert_at_caller(&e, "Huber");
    Ok(())
}

#[test]
fn model_errors_point_at_the_callers_line() -> TestResult {
    use rivulet::nn::{Activation, Dense, ExecutionMode, Loss, Optimizer, Sequential};
    for mode in [ExecutionMode::Eager, ExecutionMode::Graph] {
        let mut model = Sequential::new(vec![Box::new(Dense::new(3, Activation::Relu))]);
        model.compile(Optimizer::sgd(0.1), Loss::MeanSquaredError, &[], mode);
        let (x, y) = (Tensor::from([[1.0f32, 2.0]]), Tensor::from([[1.0f32, 2.0, 3.0]]));
        model.train_on_batch(&x, &y)?;
        // Labels of the wrong width: the loss fails inside the model's step.
        let e = model.train_on_batch(&x, &Tensor::from([[1.0f32, 2.0]])).unwrap_err();
        let c = e.op_context().unwrap_or_else(|| panic!("{mode:?}: no op context: {e}"));
        assert!(c.location.contains("tests/suite/errors_io.rs:"), "{mode:?}: {e}");
        // Inputs of the wrong width: the layer fails.
        let e = model.predict(&Tensor::from([[1.0f32, 2.0, 3.0]]), 8).unwrap_err();
        assert!(e.op_context().unwrap().location.contains("tests/suite/errors_io.rs:"), "{mode:?}: {e}");
    }
    Ok(())
}
