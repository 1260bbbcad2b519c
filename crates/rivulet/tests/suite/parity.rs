//! Eager and graph mode give bitwise-identical results.
//!
//! Each check runs one computation twice: eagerly on values, and as a graph
//! on placeholders of the same dtypes and shapes, run by a `Session`. The
//! results must agree bit for bit (NaN payloads and signed zeros included),
//! with equal dtypes and shapes, and the graph's static types must match
//! what runs. Where eager mode refuses an input, graph mode must refuse it
//! too, with the same error kind.

use crate::common::Rng;

use half::{bf16, f16};
use rivulet::ops::{self, BinaryOp, Ctx, Op, PadMode, SliceItem, UnaryOp};
use rivulet::{Axes, DType, ErrorKind, Graph, Result, Session, Tensor};

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

type Multi<'f> = &'f dyn Fn(&[&Tensor]) -> Result<Vec<Tensor>>;

/// Run `f` both ways. `Ok(None)`: both succeeded with identical results;
/// `Ok(Some(kind))`: both failed with this kind; `Err(why)`: they disagree.
fn run_both(inputs: &[&Tensor], f: Multi<'_>, partial: bool) -> std::result::Result<Option<ErrorKind>, String> {
    let eager = f(inputs);
    let g = Graph::new();
    let placeholders: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut dims: Vec<Option<usize>> = t.shape().iter().map(|&d| Some(d)).collect();
            if partial && !dims.is_empty() {
                dims[0] = None;
            }
            g.placeholder(&format!("in{i}"), t.dtype(), dims.as_slice()).expect("placeholder")
        })
        .collect();
    let refs: Vec<&Tensor> = placeholders.iter().collect();
    let graph = f(&refs).and_then(|sym| {
        for s in &sym {
            if !s.is_symbolic() || !s.graph().is_some_and(|sg| sg.same_as(&g)) {
                return Err(rivulet::Error::new(ErrorKind::Graph, "graph mode returned a non-symbolic tensor"));
            }
        }
        let feeds: Vec<(&Tensor, &Tensor)> = placeholders.iter().zip(inputs.iter().copied()).collect();
        let fetches: Vec<&Tensor> = sym.iter().collect();
        let sess = Session::new(&g);
        let first = sess.run(&fetches, &feeds)?;
        let second = sess.run(&fetches, &feeds)?;
        Ok((sym, first, second))
    });
    match (eager, graph) {
        (Ok(e), Ok((sym, out, again))) => {
            if e.len() != out.len() {
                return Err(format!("eager gave {} outputs, graph {}", e.len(), out.len()));
            }
            for (i, ((e, o), (s, a))) in e.iter().zip(&out).zip(sym.iter().zip(&again)).enumerate() {
                if e.is_symbolic() {
                    return Err(format!("output {i}: eager result is symbolic"));
                }
                if e.dtype() != o.dtype() || e.shape() != o.shape() {
                    return Err(format!(
                        "output {i}: eager {}{} vs graph {}{}",
                        e.dtype(),
                        e.shape(),
                        o.dtype(),
                        o.shape()
                    ));
                }
                if s.dtype() != e.dtype() {
                    return Err(format!("output {i}: static dtype {} but runs as {}", s.dtype(), e.dtype()));
                }
                let static_ok = if partial { s.shape().is_compatible_with(e.shape()) } else { s.shape() == e.shape() };
                if !static_ok {
                    return Err(format!("output {i}: static shape {} but runs as {}", s.shape(), e.shape()));
                }
                if !(e.bitwise_eq(o) || (e.dtype().is_complex() && same_up_to_nan_signs(e, o))) {
                    return Err(format!("output {i}: values differ\n eager: {e:?}\n graph: {o:?}"));
                }
                if !o.bitwise_eq(a) {
                    return Err(format!("output {i}: the second session run differs from the first"));
                }
            }
            Ok(None)
        }
        (Err(a), Err(b)) if a.kind() == b.kind() => Ok(Some(a.kind())),
        (Err(a), Err(b)) => Err(format!("eager failed with [{a}], graph with [{b}]")),
        (Ok(_), Err(b)) => Err(format!("eager succeeded, graph failed: {b}")),
        (Err(a), Ok(_)) => Err(format!("eager failed ({a}) but graph mode succeeded")),
    }
}

/// Both modes must succeed and agree (several outputs).
#[track_caller]
fn same_multi(what: &str, inputs: &[&Tensor], f: impl Fn(&[&Tensor]) -> Result<Vec<Tensor>>) {
    match run_both(inputs, &f, false) {
        Ok(None) => {}
        Ok(Some(kind)) => panic!("{what}: both modes failed ({kind:?}); the check expects success"),
        Err(why) => panic!("{what}: {why}"),
    }
}

/// Both modes must succeed and agree.
#[track_caller]
fn same(what: &str, inputs: &[&Tensor], f: impl Fn(&[&Tensor]) -> Result<Tensor>) {
    same_multi(what, inputs, |xs| f(xs).map(|t| vec![t]))
}

/// [`same`], and again with the first dimension of every placeholder unknown.
#[track_caller]
fn same_partial(what: &str, inputs: &[&Tensor], f: impl Fn(&[&Tensor]) -> Result<Tensor>) {
    same(what, inputs, &f);
    let multi = |xs: &[&Tensor]| f(xs).map(|t| vec![t]);
    match run_both(inputs, &multi, true) {
        Ok(None) => {}
        Ok(Some(kind)) => panic!("{what} (unknown batch dim): both modes failed ({kind:?})"),
        Err(why) => panic!("{what} (unknown batch dim): {why}"),
    }
}

/// Both modes agree, on success or on the kind of failure; true on success.
#[track_caller]
/// Complex results are made of several real ops, which a graph may reorder
/// (commutative operands are canonicalized): bit for bit the same except
/// that a NaN may come out with the other operand's sign.
fn same_up_to_nan_signs(a: &Tensor, b: &Tensor) -> bool {
    let (x, y) = (crate::common::values(a), crate::common::values(b));
    x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
}

fn agree(what: &str, inputs: &[&Tensor], f: impl Fn(&[&Tensor]) -> Result<Tensor>) -> bool {
    let multi = |xs: &[&Tensor]| f(xs).map(|t| vec![t]);
    match run_both(inputs, &multi, false) {
        Ok(None) => true,
        Ok(Some(_)) => false,
        Err(why) => panic!("{what}: {why}"),
    }
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

const SPECIALS: [f64; 14] =
    [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e30, -1e30, 1e-40, 0.5, -0.5, 1.5, 2.5, -2.5, 3.0];

/// `n` values in [-4, 4): mostly non-integers, every 7th an integer, with
/// the special values sprinkled in when `specials`.
fn float_data(n: usize, seed: u64, specials: bool) -> Vec<f64> {
    let mut r = Rng(seed);
    let mut v: Vec<f64> = (0..n)
        .map(|i| {
            let x = r.unit() * 8.0 - 4.0;
            if i % 7 == 3 {
                x.floor()
            } else {
                x
            }
        })
        .collect();
    if specials && n > 0 {
        for (k, s) in SPECIALS.iter().enumerate() {
            v[(k * 211 + 5) % n] = *s;
        }
    }
    v
}

fn tensor_from(dtype: DType, data: &[f64], shape: &[usize]) -> Tensor {
    let t = match dtype {
        DType::F32 => Tensor::from_vec(data.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape),
        DType::F64 => Tensor::from_vec(data.to_vec(), shape),
        DType::F16 => Tensor::from_vec(data.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>(), shape),
        DType::BF16 => Tensor::from_vec(data.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>(), shape),
        DType::I32 => Tensor::from_vec(data.iter().map(|&v| (v * 25.0) as i32).collect::<Vec<_>>(), shape),
        DType::I64 => Tensor::from_vec(data.iter().map(|&v| (v * 1.0e9) as i64).collect::<Vec<_>>(), shape),
        DType::U8 => Tensor::from_vec(data.iter().map(|&v| ((v + 4.0) * 32.0) as u8).collect::<Vec<_>>(), shape),
        DType::I8 => Tensor::from_vec(data.iter().map(|&v| ((v + 4.0) * 32.0) as i8).collect::<Vec<_>>(), shape),
        DType::I16 => Tensor::from_vec(data.iter().map(|&v| ((v + 4.0) * 32.0) as i16).collect::<Vec<_>>(), shape),
        DType::U16 => Tensor::from_vec(data.iter().map(|&v| ((v + 4.0) * 32.0) as u16).collect::<Vec<_>>(), shape),
        DType::U32 => Tensor::from_vec(data.iter().map(|&v| ((v + 4.0) * 32.0) as u32).collect::<Vec<_>>(), shape),
        DType::U64 => Tensor::from_vec(data.iter().map(|&v| ((v + 4.0) * 32.0) as u64).collect::<Vec<_>>(), shape),
        DType::Bool => Tensor::from_vec(data.iter().map(|&v| v > 0.3).collect::<Vec<_>>(), shape),
        DType::C64 => Tensor::from_vec(
            data.iter().map(|&v| rivulet::Complex::<f32>::new(v as f32, -v as f32)).collect::<Vec<_>>(),
            shape,
        ),
        DType::C128 => {
            Tensor::from_vec(data.iter().map(|&v| rivulet::Complex::<f64>::new(v, -v)).collect::<Vec<_>>(), shape)
        }
    };
    t.unwrap()
}

/// A tensor of `dtype` and `shape` with varied values.
fn input(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    tensor_from(dtype, &float_data(n, seed, false), shape)
}

/// Like [`input`], with NaN, infinities, signed zeros, huge and tiny values and halves.
fn input_special(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    tensor_from(dtype, &float_data(n, seed, true), shape)
}

/// A divisor-friendly tensor: integers are never zero (and in 1..=6 for `pow`).
fn operand_b(dtype: DType, shape: &[usize], seed: u64, for_pow: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let mut r = Rng(seed);
    let ints: Vec<i64> = (0..n)
        .map(|i| {
            let k = (r.next_u64() % 6 + 1) as i64;
            if for_pow || dtype == DType::U8 || i % 2 == 0 {
                k
            } else {
                -k
            }
        })
        .collect();
    let t = match dtype {
        DType::I32 => Tensor::from_vec(ints.iter().map(|&v| v as i32).collect::<Vec<_>>(), shape),
        DType::I64 => Tensor::from_vec(ints.iter().map(|&v| v * 1000 + 1).collect::<Vec<_>>(), shape),
        DType::U8 => Tensor::from_vec(ints.iter().map(|&v| v as u8).collect::<Vec<_>>(), shape),
        DType::I8 => Tensor::from_vec(ints.iter().map(|&v| v as i8).collect::<Vec<_>>(), shape),
        DType::I16 => Tensor::from_vec(ints.iter().map(|&v| v as i16).collect::<Vec<_>>(), shape),
        DType::U16 => Tensor::from_vec(ints.iter().map(|&v| v as u16).collect::<Vec<_>>(), shape),
        DType::U32 => Tensor::from_vec(ints.iter().map(|&v| v as u32).collect::<Vec<_>>(), shape),
        DType::U64 => Tensor::from_vec(ints.iter().map(|&v| v as u64).collect::<Vec<_>>(), shape),
        _ => {
            let data: Vec<f64> =
                float_data(n, seed, false).iter().map(|v| if for_pow { v / 2.0 } else { *v }).collect();
            Ok(tensor_from(dtype, &data, shape))
        }
    };
    t.unwrap()
}

fn indices_i32(values: &[i32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(values, shape).unwrap()
}

const M: usize = 48;
const N: usize = 64;

// ---------------------------------------------------------------------------
// Elementwise
// ---------------------------------------------------------------------------

fn unary_fn(op: UnaryOp) -> fn(&Tensor) -> Result<Tensor> {
    match op {
        UnaryOp::Neg => ops::neg,
        UnaryOp::Abs => ops::abs,
        UnaryOp::Sign => ops::sign,
        UnaryOp::Square => ops::square,
        UnaryOp::Relu => ops::relu,
        UnaryOp::Relu6 => ops::relu6,
        UnaryOp::Exp => ops::exp,
        UnaryOp::Expm1 => ops::expm1,
        UnaryOp::Log => ops::log,
        UnaryOp::Log1p => ops::log1p,
        UnaryOp::Sqrt => ops::sqrt,
        UnaryOp::Rsqrt => ops::rsqrt,
        UnaryOp::Reciprocal => ops::reciprocal,
        UnaryOp::Sin => ops::sin,
        UnaryOp::Cos => ops::cos,
        UnaryOp::Tan => ops::tan,
        UnaryOp::Tanh => ops::tanh,
        UnaryOp::Sigmoid => ops::sigmoid,
        UnaryOp::Elu => ops::elu,
        UnaryOp::Selu => ops::selu,
        UnaryOp::Gelu => ops::gelu,
        UnaryOp::Softplus => ops::softplus,
        UnaryOp::Erf => ops::erf,
        UnaryOp::Lgamma => ops::lgamma,
        UnaryOp::Digamma => ops::digamma,
        UnaryOp::Erfinv => ops::erfinv,
        UnaryOp::Ndtri => ops::ndtri,
        UnaryOp::BesselI0e => ops::bessel_i0e,
        UnaryOp::BesselI1e => ops::bessel_i1e,
        UnaryOp::Erfc => ops::erfc,
        UnaryOp::Sinh => ops::sinh,
        UnaryOp::Cosh => ops::cosh,
        UnaryOp::Asin => ops::asin,
        UnaryOp::Acos => ops::acos,
        UnaryOp::Atan => ops::atan,
        UnaryOp::Asinh => ops::asinh,
        UnaryOp::Acosh => ops::acosh,
        UnaryOp::Atanh => ops::atanh,
        UnaryOp::Floor => ops::floor,
        UnaryOp::Ceil => ops::ceil,
        UnaryOp::Round => ops::round,
        UnaryOp::LogicalNot => ops::logical_not,
        UnaryOp::IsNan => ops::is_nan,
        UnaryOp::IsFinite => ops::is_finite,
        UnaryOp::IsInf => ops::is_inf,
    }
}

fn binary_fn(op: BinaryOp) -> fn(&Tensor, &Tensor) -> Result<Tensor> {
    match op {
        BinaryOp::Add => |a, b| ops::add(a, b),
        BinaryOp::Sub => |a, b| ops::sub(a, b),
        BinaryOp::Mul => |a, b| ops::mul(a, b),
        BinaryOp::Div => |a, b| ops::real_div(a, b),
        BinaryOp::TruncateMod => |a, b| ops::truncate_mod(a, b),
        BinaryOp::DivNoNan => |a, b| ops::div_no_nan(a, b),
        BinaryOp::MulNoNan => |a, b| ops::multiply_no_nan(a, b),
        BinaryOp::Zeta => |a, b| ops::zeta(a, b),
        BinaryOp::Polygamma => |a, b| ops::polygamma(a, b),
        BinaryOp::Igamma => |a, b| ops::igamma(a, b),
        BinaryOp::Igammac => |a, b| ops::igammac(a, b),
        BinaryOp::IgammaGradA => |a, b| ops::igamma_grad_a(a, b),
        BinaryOp::NextAfter => |a, b| ops::nextafter(a, b),
        BinaryOp::Xlogy => |a, b| ops::xlogy(a, b),
        BinaryOp::Xlog1py => |a, b| ops::xlog1py(a, b),
        BinaryOp::Xdivy => |a, b| ops::xdivy(a, b),
        BinaryOp::FloorDiv => |a, b| ops::floor_div(a, b),
        BinaryOp::FloorMod => |a, b| ops::floor_mod(a, b),
        BinaryOp::Pow => |a, b| ops::pow(a, b),
        BinaryOp::Maximum => |a, b| ops::maximum(a, b),
        BinaryOp::Minimum => |a, b| ops::minimum(a, b),
        BinaryOp::Equal => |a, b| ops::equal(a, b),
        BinaryOp::NotEqual => |a, b| ops::not_equal(a, b),
        BinaryOp::Less => |a, b| ops::less(a, b),
        BinaryOp::LessEqual => |a, b| ops::less_equal(a, b),
        BinaryOp::Greater => |a, b| ops::greater(a, b),
        BinaryOp::GreaterEqual => |a, b| ops::greater_equal(a, b),
        BinaryOp::LogicalAnd => |a, b| ops::logical_and(a, b),
        BinaryOp::LogicalOr => |a, b| ops::logical_or(a, b),
        BinaryOp::Atan2 => |a, b| ops::atan2(a, b),
        BinaryOp::Hypot => |a, b| ops::hypot(a, b),
        BinaryOp::LogAddExp => |a, b| ops::logaddexp(a, b),
    }
}

#[test]
fn the_harness_detects_disagreement() {
    // A computation that differs between the modes must be reported, however small the difference.
    let x = input(DType::F32, &[M, N], 1);
    let differs = |xs: &[&Tensor]| -> Result<Vec<Tensor>> {
        let y = ops::mul(xs[0], 1.0)?;
        Ok(vec![if y.is_symbolic() { ops::add(&y, 1e-30)? } else { y }])
    };
    assert!(run_both(&[&x], &differs, false).is_err());
    let nan_payload = |xs: &[&Tensor]| -> Result<Vec<Tensor>> {
        let nan = if xs[0].is_symbolic() { f32::from_bits(0x7fc0_0001) } else { f32::NAN };
        Ok(vec![ops::select(&ops::is_nan(xs[0])?, xs[0], nan)?])
    };
    assert!(run_both(&[&x], &nan_payload, false).is_err());
    let wrong_dtype = |xs: &[&Tensor]| -> Result<Vec<Tensor>> {
        Ok(vec![if xs[0].is_symbolic() { ops::cast(xs[0], DType::F64)? } else { ops::identity(xs[0])? }])
    };
    assert!(run_both(&[&x], &wrong_dtype, false).is_err());
    let fails_in_graph = |xs: &[&Tensor]| -> Result<Vec<Tensor>> {
        Ok(vec![if xs[0].is_symbolic() { ops::exp(&ops::cast(xs[0], DType::I32)?)? } else { ops::exp(xs[0])? }])
    };
    assert!(run_both(&[&x], &fails_in_graph, false).is_err());
    let eager_value_in_graph = |_xs: &[&Tensor]| -> Result<Vec<Tensor>> { Ok(vec![Tensor::from([1.0f32])]) };
    assert!(run_both(&[&x], &eager_value_in_graph, false).is_err());
    let same_both = |xs: &[&Tensor]| -> Result<Vec<Tensor>> { Ok(vec![ops::mul(xs[0], 1.0)?]) };
    assert_eq!(run_both(&[&x], &same_both, false), Ok(None));
}

#[test]
fn op_function_tables_match_the_op_enums() -> Result<()> {
    // Guard for the tables above: each function builds the op it is listed under.
    let g = Graph::new();
    let xf = g.placeholder("xf", DType::F32, [3])?;
    let xb = g.placeholder("xb", DType::Bool, [3])?;
    for &op in UnaryOp::ALL {
        let x = if op == UnaryOp::LogicalNot { &xb } else { &xf };
        let y = unary_fn(op)(x)?;
        assert_eq!(g.node(y.op().unwrap().id()).unwrap().op, Op::Unary { f: op });
        assert_eq!(y.op().unwrap().name(), op.name());
    }
    for &op in BinaryOp::ALL {
        let x = if matches!(op, BinaryOp::LogicalAnd | BinaryOp::LogicalOr) { &xb } else { &xf };
        let y = binary_fn(op)(x, x)?;
        assert_eq!(g.node(y.op().unwrap().id()).unwrap().op, Op::Binary { f: op });
        assert_eq!(y.op().unwrap().name(), op.name());
        assert_eq!(y.dtype(), if op.is_comparison() { DType::Bool } else { x.dtype() });
    }
    assert_eq!(UnaryOp::ALL.len(), 45);
    assert_eq!(BinaryOp::ALL.len(), 32);
    Ok(())
}

#[test]
fn every_unary_op_on_every_dtype() {
    for &op in UnaryOp::ALL {
        let f = unary_fn(op);
        let mut accepted = Vec::new();
        for (k, dtype) in DType::ALL.into_iter().enumerate() {
            let x = input_special(dtype, &[M, N], 100 + k as u64);
            if agree(&format!("{op:?} on {dtype}"), &[&x], |xs| f(xs[0])) {
                accepted.push(dtype);
            }
        }
        // The checks must have run: every op accepts some dtype, floats for all but logical_not.
        match op {
            UnaryOp::LogicalNot => assert_eq!(accepted, vec![DType::Bool], "{op:?}"),
            _ => {
                for d in [DType::F32, DType::F64, DType::F16, DType::BF16] {
                    assert!(accepted.contains(&d), "{op:?} refused {d}: accepted {accepted:?}");
                }
                assert!(!accepted.contains(&DType::Bool), "{op:?} accepted bool");
            }
        }
    }
}

#[test]
fn unary_ops_on_non_contiguous_and_unknown_batch_inputs() {
    let x = input_special(DType::F32, &[N, M], 7);
    let xt = ops::transpose(&x, &[]).unwrap(); // a strided view
    let x3 = input_special(DType::F64, &[4, 12, 64], 8);
    for &op in UnaryOp::ALL {
        if op == UnaryOp::LogicalNot {
            continue;
        }
        let f = unary_fn(op);
        same_partial(&format!("{op:?} on a transposed view"), &[&xt], |xs| f(xs[0]));
        same_partial(&format!("{op:?} on f64 rank 3"), &[&x3], |xs| f(xs[0]));
        same(&format!("{op:?} of a transpose built in the graph"), &[&x], |xs| f(&ops::transpose(xs[0], &[])?));
    }
    let b = input(DType::Bool, &[M, N], 9);
    same_partial("logical_not", &[&b], |xs| ops::logical_not(xs[0]));
}

#[test]
fn every_binary_op_on_every_dtype_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 5] =
        [(&[M, N], &[M, N]), (&[M, N], &[N]), (&[M, 1], &[1, N]), (&[M, N], &[]), (&[], &[M, N])];
    for &op in BinaryOp::ALL {
        let f = binary_fn(op);
        let mut accepted = Vec::new();
        for (k, dtype) in DType::ALL.into_iter().enumerate() {
            let mut all_ok = true;
            for (j, (sa, sb)) in shapes.iter().enumerate() {
                let a = input_special(dtype, sa, 200 + k as u64 * 10 + j as u64);
                let b = operand_b(dtype, sb, 300 + k as u64 * 10 + j as u64, op == BinaryOp::Pow);
                let ok = agree(&format!("{op:?} on {dtype} {sa:?} x {sb:?}"), &[&a, &b], |xs| f(xs[0], xs[1]));
                all_ok &= ok;
            }
            if all_ok {
                accepted.push(dtype);
            }
        }
        match op {
            BinaryOp::LogicalAnd | BinaryOp::LogicalOr => assert_eq!(accepted, vec![DType::Bool], "{op:?}"),
            BinaryOp::Equal | BinaryOp::NotEqual => assert_eq!(accepted, DType::ALL.to_vec(), "{op:?}"),
            BinaryOp::DivNoNan => {
                let inexact: Vec<DType> = DType::ALL.into_iter().filter(|d| d.is_inexact()).collect();
                assert_eq!(accepted, inexact, "{op:?}");
            }
            BinaryOp::Atan2
            | BinaryOp::Hypot
            | BinaryOp::LogAddExp
            | BinaryOp::MulNoNan
            | BinaryOp::Zeta
            | BinaryOp::Polygamma
            | BinaryOp::Igamma
            | BinaryOp::Igammac
            | BinaryOp::IgammaGradA
            | BinaryOp::Xlogy
            | BinaryOp::Xlog1py
            | BinaryOp::Xdivy => {
                let floats: Vec<DType> = DType::ALL.into_iter().filter(|d| d.is_float()).collect();
                assert_eq!(accepted, floats, "{op:?}");
            }
            BinaryOp::NextAfter => assert_eq!(accepted, vec![DType::F32, DType::F64], "{op:?}"),
            // Complex numbers have arithmetic but no order.
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow => {
                let numeric: Vec<DType> = DType::ALL.into_iter().filter(|d| *d != DType::Bool).collect();
                assert_eq!(accepted, numeric, "{op:?}");
            }
            _ => {
                let real: Vec<DType> = DType::ALL.into_iter().filter(|d| d.is_numeric()).collect();
                assert_eq!(accepted, real, "{op:?}");
            }
        }
    }
}

#[test]
fn binary_ops_with_unknown_batch_and_rust_number_operands() {
    let a = input_special(DType::F32, &[M, N], 11);
    let b = operand_b(DType::F32, &[N], 12, false);
    let c = operand_b(DType::F32, &[M, 1], 13, false);
    for &op in BinaryOp::ALL {
        if matches!(op, BinaryOp::LogicalAnd | BinaryOp::LogicalOr) {
            continue;
        }
        let f = binary_fn(op);
        same_partial(&format!("{op:?} [?, N] x [N]"), &[&a, &b], |xs| f(xs[0], xs[1]));
        same_partial(&format!("{op:?} [?, N] x [?, 1]"), &[&a, &c], |xs| f(xs[0], xs[1]));
    }
    let ai = input(DType::I32, &[M, N], 14);
    same("i32 + 3", &[&ai], |xs| ops::add(xs[0], 3));
    same("7 - i32", &[&ai], |xs| ops::sub(7, xs[0]));
    same("f32 * 2.5", &[&a], |xs| ops::mul(xs[0], 2.5));
    same("f32 / -0.0", &[&a], |xs| ops::div(xs[0], -0.0));
    same("pow(f32, 0.5)", &[&a], |xs| ops::pow(xs[0], 0.5));
    same("i32 floor_div -3", &[&ai], |xs| ops::floor_div(xs[0], -3));
    same("i32 floor_mod -3", &[&ai], |xs| ops::floor_mod(xs[0], -3));
    same("operators", &[&a, &b], |xs| ((xs[0] + xs[1])? * 2.0)? - (-xs[0])?);
    same("rem operator", &[&a, &b], |xs| xs[0] % xs[1]);
    same("clip_by_value", &[&a], |xs| ops::clip_by_value(xs[0], -1.5, 2.25));
    same("methods", &[&a], |xs| xs[0].abs()?.sqrt()?.maximum(0.5)?.clip(0.75, 1.5));
}

#[test]
fn integer_division_by_zero_fails_the_same_way() {
    let a = input(DType::I32, &[M, N], 15);
    let zero = Tensor::zeros([N], DType::I32).unwrap();
    for op in [BinaryOp::Div, BinaryOp::FloorDiv, BinaryOp::FloorMod] {
        let f = binary_fn(op);
        assert!(!agree(&format!("{op:?} by zero"), &[&a, &zero], |xs| f(xs[0], xs[1])));
    }
}

#[test]
fn select_and_cast() {
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let c = input(DType::Bool, &[M, N], 20 + k as u64);
        let c_col = input(DType::Bool, &[M, 1], 30 + k as u64);
        let a = input_special(dtype, &[M, N], 40 + k as u64);
        let b = input_special(dtype, &[N], 50 + k as u64);
        same_partial(&format!("select {dtype}"), &[&c, &a, &b], |xs| ops::select(xs[0], xs[1], xs[2]));
        same(&format!("select {dtype} column cond"), &[&c_col, &b, &a], |xs| ops::select(xs[0], xs[1], xs[2]));
    }
    let c = input(DType::Bool, &[M, N], 60);
    let a = input_special(DType::F32, &[M, N], 61);
    same("select with a number", &[&c, &a], |xs| ops::select(xs[0], xs[1], -0.0));
    same("select with a number first", &[&c, &a], |xs| ops::select(xs[0], 1.5, xs[1]));
    // Every pair of dtypes, from inputs with NaN, infinities and out-of-range values.
    for (i, from) in DType::ALL.into_iter().enumerate() {
        let x = input_special(from, &[M, N], 70 + i as u64);
        let wide = if from.is_float() {
            let big: Vec<f64> = float_data(M * N, 80 + i as u64, true).iter().map(|v| v * 1.0e10).collect();
            Some(tensor_from(from, &big, &[M, N]))
        } else {
            None
        };
        for to in DType::ALL {
            same_partial(&format!("cast {from} -> {to}"), &[&x], |xs| ops::cast(xs[0], to));
            if let Some(w) = &wide {
                same(&format!("cast large {from} -> {to}"), &[w], |xs| ops::cast(xs[0], to));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Reductions and scans
// ---------------------------------------------------------------------------

fn reduce_fn(name: &str) -> fn(&Tensor, Axes, bool) -> Result<Tensor> {
    match name {
        "sum" => |x, a, k| ops::sum(x, a, k),
        "mean" => |x, a, k| ops::mean(x, a, k),
        "max" => |x, a, k| ops::max(x, a, k),
        "min" => |x, a, k| ops::min(x, a, k),
        "prod" => |x, a, k| ops::prod(x, a, k),
        "any" => |x, a, k| ops::any(x, a, k),
        "all" => |x, a, k| ops::all(x, a, k),
        _ => unreachable!(),
    }
}

#[test]
fn every_reduction_over_every_axis_set() {
    let axes_list: Vec<Axes> = vec![
        Axes::All,
        Axes::List(vec![0]),
        Axes::List(vec![1]),
        Axes::List(vec![2]),
        Axes::List(vec![0, 2]),
        Axes::List(vec![-1, 0]),
        Axes::List(vec![]),
    ];
    for r in ["sum", "mean", "max", "min", "prod", "any", "all"] {
        let f = reduce_fn(r);
        let dtypes: Vec<DType> = if matches!(r, "any" | "all") {
            vec![DType::Bool]
        } else {
            vec![DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8]
        };
        for (k, &dtype) in dtypes.iter().enumerate() {
            let x = if r == "prod" {
                // Values near 1 so that products stay finite (mostly).
                let d: Vec<f64> =
                    float_data(8 * 12 * 32, 90 + k as u64, false).iter().map(|v| 1.0 + v / 40.0).collect();
                let d = if dtype.is_int() { float_data(8 * 12 * 32, 90, false) } else { d };
                tensor_from(dtype, &d, &[8, 12, 32])
            } else {
                input_special(dtype, &[8, 12, 32], 90 + k as u64)
            };
            for axes in &axes_list {
                for keep in [false, true] {
                    let what = format!("{r} {dtype} {axes:?} keepdims={keep}");
                    same(&what, &[&x], |xs| f(xs[0], axes.clone(), keep));
                }
            }
            let what = format!("{r} {dtype} [?, 12, 32] over axis 1");
            same_partial(&what, &[&x], |xs| f(xs[0], Axes::List(vec![1]), false));
            let what = format!("{r} {dtype} [?, 12, 32] over all axes");
            same_partial(&what, &[&x], |xs| f(xs[0], Axes::All, true));
        }
    }
    // A reduction of a strided view.
    let x = input_special(DType::F32, &[M, N], 99);
    same("sum of a transposed view", &[&x], |xs| ops::sum(&ops::transpose(xs[0], &[])?, 1, false));
    same("sum_all/mean_all", &[&x], |xs| ops::add(&xs[0].sum_all()?, &xs[0].mean_all()?));
}

#[test]
fn argmax_argmin_cumsum_cumprod() {
    for (k, dtype) in
        [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8].into_iter().enumerate()
    {
        let x = input_special(dtype, &[8, 12, 32], 110 + k as u64);
        for axis in [0i64, 1, 2, -1] {
            same_partial(&format!("argmax {dtype} axis {axis}"), &[&x], |xs| ops::argmax(xs[0], axis));
            same_partial(&format!("argmin {dtype} axis {axis}"), &[&x], |xs| ops::argmin(xs[0], axis));
            for exclusive in [false, true] {
                for reverse in [false, true] {
                    let what = format!("cumsum {dtype} axis {axis} exclusive={exclusive} reverse={reverse}");
                    same(&what, &[&x], |xs| ops::cumsum(xs[0], axis, exclusive, reverse));
                    let what = format!("cumprod {dtype} axis {axis} exclusive={exclusive} reverse={reverse}");
                    same(&what, &[&x], |xs| ops::cumprod(xs[0], axis, exclusive, reverse));
                }
            }
        }
        same_partial(&format!("cumsum {dtype} [?] axis 1"), &[&x], |xs| ops::cumsum(xs[0], 1, false, true));
    }
    // Ties: the first index wins in both modes.
    let ties = Tensor::from_vec((0..M * N).map(|i| (i % 5) as i32).collect::<Vec<_>>(), [M, N]).unwrap();
    same("argmax ties", &[&ties], |xs| ops::argmax(xs[0], 1));
    same("argmin ties", &[&ties], |xs| xs[0].argmin(0));
}

#[test]
fn logsumexp_variance_std_softmax_top_k() {
    for (k, dtype) in [DType::F32, DType::F64, DType::F16, DType::BF16].into_iter().enumerate() {
        let x = input(dtype, &[M, N], 130 + k as u64);
        let xs_special = input_special(dtype, &[M, N], 140 + k as u64);
        for axis in [0i64, 1, -1] {
            same_partial(&format!("softmax {dtype} {axis}"), &[&x], |xs| ops::softmax(xs[0], axis));
            same_partial(&format!("log_softmax {dtype} {axis}"), &[&x], |xs| ops::log_softmax(xs[0], axis));
            same(&format!("softmax special {dtype} {axis}"), &[&xs_special], |xs| ops::softmax(xs[0], axis));
        }
        for (axes, keep) in [(Axes::All, false), (Axes::List(vec![1]), false), (Axes::List(vec![0]), true)] {
            let what = format!("logsumexp {dtype} {axes:?} {keep}");
            same(&what, &[&xs_special], |xs| ops::logsumexp(xs[0], axes.clone(), keep));
            same(&format!("variance {dtype} {axes:?} {keep}"), &[&x], |xs| ops::variance(xs[0], axes.clone(), keep));
            same(&format!("std_dev {dtype} {axes:?} {keep}"), &[&x], |xs| ops::std_dev(xs[0], axes.clone(), keep));
        }
    }
    for (k, dtype) in
        [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8].into_iter().enumerate()
    {
        let x = input_special(dtype, &[M, N], 150 + k as u64);
        for kk in [1usize, 5, N] {
            same_multi(&format!("top_k {dtype} k={kk}"), &[&x], |xs| {
                let (v, i) = ops::top_k(xs[0], kk)?;
                Ok(vec![v, i])
            });
        }
    }
    let x = input_special(DType::F32, &[M, N], 160);
    same_partial("top_k values with unknown batch", &[&x], |xs| Ok(ops::top_k(xs[0], 7)?.0));
    same_partial("top_k indices with unknown batch", &[&x], |xs| Ok(ops::top_k(xs[0], 7)?.1));
}

// ---------------------------------------------------------------------------
// Linear algebra
// ---------------------------------------------------------------------------

#[test]
fn matmul_plain_transposed_batched_and_broadcast() {
    for (k, dtype) in [DType::F32, DType::F64, DType::I32, DType::I64].into_iter().enumerate() {
        let s = 500 + 10 * k as u64;
        let a = input(dtype, &[M, N], s);
        let b = input(dtype, &[N, 32], s + 1);
        let at = input(dtype, &[N, M], s + 2);
        let bt = input(dtype, &[32, N], s + 3);
        same_partial(&format!("matmul {dtype}"), &[&a, &b], |xs| ops::matmul(xs[0], xs[1]));
        same(&format!("matmul_t(T, N) {dtype}"), &[&at, &b], |xs| ops::matmul_t(xs[0], xs[1], true, false));
        same(&format!("matmul_t(N, T) {dtype}"), &[&a, &bt], |xs| ops::matmul_t(xs[0], xs[1], false, true));
        same(&format!("matmul_t(T, T) {dtype}"), &[&at, &bt], |xs| ops::matmul_t(xs[0], xs[1], true, true));
        let ba = input(dtype, &[4, 24, 32], s + 4);
        let bb = input(dtype, &[4, 32, 16], s + 5);
        same_partial(&format!("batched matmul {dtype}"), &[&ba, &bb], |xs| ops::matmul(xs[0], xs[1]));
        let ca = input(dtype, &[4, 1, 24, 32], s + 6);
        let cb = input(dtype, &[3, 32, 16], s + 7);
        same(&format!("broadcast-batch matmul {dtype}"), &[&ca, &cb], |xs| ops::matmul(xs[0], xs[1]));
        same(&format!("matrix times batch {dtype}"), &[&b, &ca], |xs| {
            // [64, 32] x [4, 1, 32, 24] -> [4, 1, 64, 24], the right side a strided view.
            ops::matmul(xs[0], &ops::transpose(xs[1], &[0, 1, 3, 2])?)
        });
    }
    for dtype in [DType::F16, DType::BF16] {
        let a = input(dtype, &[M, N], 600);
        let b = input(dtype, &[N, 32], 601);
        same(&format!("matmul {dtype}"), &[&a, &b], |xs| ops::matmul(xs[0], xs[1]));
        same(&format!("matmul_t {dtype}"), &[&b, &a], |xs| ops::matmul_t(xs[0], xs[1], true, true));
    }
    let a = input_special(DType::F32, &[M, N], 602);
    let b = input(DType::F32, &[N, 32], 603);
    same("matmul with NaN and inf", &[&a, &b], |xs| ops::matmul(xs[0], xs[1]));
    same("matmul of views", &[&a], |xs| ops::matmul(&xs[0].t()?, &ops::slice(xs[0], &[0, 0], &[-1, 32])?));
    same("matmul method", &[&a, &b], |xs| xs[0].matmul(xs[1]));
}

#[test]
fn einsum_and_tensordot() {
    let a = input(DType::F32, &[M, N], 700);
    let b = input(DType::F32, &[N, 32], 701);
    let c = input(DType::F32, &[M, N], 702);
    let ba = input(DType::F32, &[4, 24, 32], 703);
    let bb = input(DType::F32, &[4, 32, 16], 704);
    let v = input(DType::F32, &[N], 705);
    let w = input(DType::F32, &[M], 706);
    same("einsum ij,jk->ik", &[&a, &b], |xs| ops::einsum("ij,jk->ik", xs));
    same("einsum ij,jk->ki", &[&a, &b], |xs| ops::einsum("ij,jk->ki", xs));
    same("einsum implicit ij,jk", &[&a, &b], |xs| ops::einsum("ij,jk", xs));
    same("einsum bij,bjk->bik", &[&ba, &bb], |xs| ops::einsum("bij,bjk->bik", xs));
    same("einsum bij,bjk->bki", &[&ba, &bb], |xs| ops::einsum("bij,bjk->bki", xs));
    same("einsum ij->ji", &[&a], |xs| ops::einsum("ij->ji", xs));
    same("einsum ij->", &[&a], |xs| ops::einsum("ij->", xs));
    same("einsum ij->j", &[&a], |xs| ops::einsum("ij->j", xs));
    same("einsum ij,ij->ij", &[&a, &c], |xs| ops::einsum("ij,ij->ij", xs));
    same("einsum ij,ij->", &[&a, &c], |xs| ops::einsum("ij,ij->", xs));
    same("einsum i,j->ij", &[&w, &v], |xs| ops::einsum("i,j->ij", xs));
    same("einsum ij,j->i", &[&a, &v], |xs| ops::einsum("ij,j->i", xs));
    same("einsum bij,jk->bik", &[&ba, &input(DType::F32, &[32, 8], 707)], |xs| ops::einsum("bij,jk->bik", xs));
    same("einsum with spaces", &[&a, &b], |xs| ops::einsum(" ij , jk -> ik ", xs));
    same("tensordot", &[&ba, &bb], |xs| ops::tensordot(xs[0], xs[1], &[0, 2], &[0, 1]));
    same("tensordot matrix", &[&a, &b], |xs| ops::tensordot(xs[0], xs[1], &[1], &[0]));
    let ad = input(DType::F64, &[M, N], 708);
    let bd = input(DType::F64, &[N, 32], 709);
    same("einsum f64", &[&ad, &bd], |xs| ops::einsum("ij,jk->ik", xs));
}

// ---------------------------------------------------------------------------
// Data movement
// ---------------------------------------------------------------------------

#[test]
fn reshape_transpose_expand_squeeze_broadcast() {
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let x = input_special(dtype, &[M, N], 800 + k as u64);
        let x3 = input_special(dtype, &[8, 12, 32], 810 + k as u64);
        same(&format!("reshape {dtype}"), &[&x], |xs| ops::reshape(xs[0], &[N as i64, M as i64]));
        same(&format!("reshape -1 {dtype}"), &[&x], |xs| ops::reshape(xs[0], &[3, -1, 16]));
        same_partial(&format!("reshape flat {dtype}"), &[&x], |xs| ops::reshape(xs[0], &[-1]));
        same_partial(&format!("reshape [-1, 8] {dtype}"), &[&x], |xs| xs[0].reshape(&[-1, 8]));
        same(&format!("reshape of transpose {dtype}"), &[&x], |xs| ops::reshape(&ops::transpose(xs[0], &[])?, &[-1]));
        same_partial(&format!("transpose {dtype}"), &[&x], |xs| ops::transpose(xs[0], &[1, 0]));
        same_partial(&format!("transpose 3d {dtype}"), &[&x3], |xs| ops::transpose(xs[0], &[2, 0, 1]));
        same(&format!("transpose twice {dtype}"), &[&x3], |xs| {
            ops::transpose(&ops::transpose(xs[0], &[1, 2, 0])?, &[])
        });
        same_partial(&format!("expand_dims {dtype}"), &[&x], |xs| ops::expand_dims(xs[0], 1));
        same(&format!("expand_dims -1 {dtype}"), &[&x], |xs| ops::expand_dims(xs[0], -1));
        same(&format!("squeeze {dtype}"), &[&x], |xs| ops::squeeze(&ops::expand_dims(xs[0], 0)?, &[0]));
        same(&format!("squeeze all {dtype}"), &[&x], |xs| {
            ops::squeeze(&ops::reshape(xs[0], &[1, M as i64, 1, N as i64])?, &[])
        });
        same(&format!("broadcast_to {dtype}"), &[&x], |xs| {
            ops::broadcast_to(&ops::slice(xs[0], &[0, 0], &[1, -1])?, [3, 5, N])
        });
        same(&format!("identity {dtype}"), &[&x], |xs| ops::identity(xs[0]));
        same(&format!("stop_gradient {dtype}"), &[&x], |xs| ops::stop_gradient(xs[0]));
    }
}

#[test]
fn concat_stack_split_unstack() {
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let s = 900 + 10 * k as u64;
        let a = input_special(dtype, &[M, N], s);
        let b = input_special(dtype, &[M, 16], s + 1);
        let c = input_special(dtype, &[8, N], s + 2);
        same(&format!("concat axis 1 {dtype}"), &[&a, &b, &a], |xs| ops::concat(xs, 1));
        same(&format!("concat axis -1 {dtype}"), &[&b, &a], |xs| ops::concat(xs, -1));
        same_partial(&format!("concat axis 0 {dtype}"), &[&a, &c], |xs| ops::concat(xs, 0));
        same(&format!("concat of one {dtype}"), &[&a], |xs| ops::concat(xs, 0));
        same(&format!("concat of views {dtype}"), &[&a], |xs| {
            ops::concat(&[&ops::transpose(xs[0], &[])?, &ops::reverse(&ops::transpose(xs[0], &[])?, &[0])?], 1)
        });
        same(&format!("stack {dtype}"), &[&a, &a], |xs| ops::stack(xs, 1));
        same(&format!("stack -1 {dtype}"), &[&b, &b, &b], |xs| ops::stack(xs, -1));
        same_multi(&format!("split {dtype}"), &[&a], |xs| ops::split(xs[0], 4, 1));
        same_multi(&format!("split axis 0 {dtype}"), &[&a], |xs| ops::split(xs[0], 3, 0));
        same_multi(&format!("split_sizes {dtype}"), &[&a], |xs| ops::split_sizes(xs[0], &[5, -1, 10], 1));
        same_multi(&format!("split_sizes with zero {dtype}"), &[&a], |xs| ops::split_sizes(xs[0], &[0, 48], 0));
        same_multi(&format!("unstack {dtype}"), &[&c], |xs| ops::unstack(xs[0], 0));
        same_multi(&format!("unstack -1 {dtype}"), &[&b], |xs| ops::unstack(xs[0], -1));
    }
}

#[test]
fn slice_and_strided_slice() {
    let r = |a: i64, b: i64| SliceItem::range(a, b);
    let st = SliceItem::stepped;
    let specs: Vec<Vec<SliceItem>> = vec![
        vec![r(3, 40), r(5, 60)],
        vec![st(Some(1), Some(40), 3), st(None, None, -2)],
        vec![SliceItem::Index(5)],
        vec![SliceItem::Index(-1), r(2, 10)],
        vec![SliceItem::NewAxis, SliceItem::ALL, SliceItem::NewAxis, SliceItem::Index(7)],
        vec![SliceItem::Ellipsis, st(None, None, -1)],
        vec![SliceItem::Ellipsis, SliceItem::Index(0), SliceItem::NewAxis],
        vec![st(Some(-5), None, 1), st(Some(-1), Some(-60), -7)],
        vec![r(40, 3)],
        vec![st(Some(100), Some(-100), -1), st(Some(-100), Some(100), 1000)],
        vec![(10..).into(), (..20).into()],
        vec![(..).into()],
        vec![],
    ];
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let x = input_special(dtype, &[M, N], 1000 + k as u64);
        let x3 = input_special(dtype, &[8, 12, 32], 1010 + k as u64);
        same(&format!("slice {dtype}"), &[&x], |xs| ops::slice(xs[0], &[3, 5], &[10, -1]));
        same(&format!("slice 3d {dtype}"), &[&x3], |xs| ops::slice(xs[0], &[1, 0, 7], &[-1, 12, 5]));
        same(&format!("slice empty {dtype}"), &[&x], |xs| ops::slice(xs[0], &[M, 0], &[0, -1]));
        for (j, spec) in specs.iter().enumerate() {
            same(&format!("strided_slice #{j} {spec:?} {dtype}"), &[&x], |xs| ops::strided_slice(xs[0], spec));
        }
        let spec3 = [SliceItem::Index(2), SliceItem::Ellipsis, st(Some(30), Some(1), -4)];
        same(&format!("strided_slice 3d {dtype}"), &[&x3], |xs| xs[0].index(&spec3));
        same(&format!("strided_slice of a view {dtype}"), &[&x3], |xs| {
            ops::strided_slice(&ops::transpose(xs[0], &[2, 1, 0])?, &[st(None, None, -3), SliceItem::Index(4)])
        });
    }
    let x = input_special(DType::F32, &[M, N], 1020);
    same_partial("strided_slice full range on unknown dim", &[&x], |xs| {
        ops::strided_slice(xs[0], &[SliceItem::ALL, st(Some(60), Some(2), -5)])
    });
    same_partial("slice to the end on unknown dim", &[&x], |xs| ops::slice(xs[0], &[0, 3], &[-1, 7]));
}

#[test]
fn gather_gather_nd_scatter_nd() {
    let idx0: Vec<i32> = (0..100).map(|i| ((i * 37 + 11) % M) as i32).collect();
    let idx0 = indices_i32(&idx0, &[100]);
    let idx1: Vec<i64> = (0..30).map(|i| ((i * 13 + 5) % N) as i64).collect();
    let idx1 = Tensor::from_vec(idx1, [5, 6]).unwrap();
    let idx_b: Vec<i32> = (0..M * 3).map(|i| ((i * 7 + 3) % N) as i32).collect();
    let idx_b = indices_i32(&idx_b, &[M, 3]);
    let idx_u8 = Tensor::from_vec((0..20u8).map(|i| (i * 5) % M as u8).collect::<Vec<_>>(), [20]).unwrap();
    let nd: Vec<i32> = (0..50).flat_map(|i| [((i * 7) % M) as i32, ((i * 11 + 1) % N) as i32]).collect();
    let nd = indices_i32(&nd, &[50, 2]);
    let nd_rows: Vec<i32> = (0..10).map(|i| ((i * 5 + 2) % M) as i32).collect();
    let nd_rows = indices_i32(&nd_rows, &[10, 1]);
    // Scatter with duplicate indices (their updates add up).
    let sc: Vec<i32> = (0..200i32).map(|i| (i * 31) % 40).collect();
    let sc = indices_i32(&sc, &[200, 1]);
    let sc2: Vec<i32> = (0..300).flat_map(|i| [((i * 3) % M) as i32, ((i * 17) % N) as i32]).collect();
    let sc2 = indices_i32(&sc2, &[300, 2]);
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let x = input_special(dtype, &[M, N], 1100 + k as u64);
        same(&format!("gather axis 0 {dtype}"), &[&x, &idx0], |xs| ops::gather(xs[0], xs[1], 0, 0));
        same(&format!("gather axis 1 {dtype}"), &[&x, &idx1], |xs| ops::gather(xs[0], xs[1], 1, 0));
        same(&format!("gather axis -1 u8 {dtype}"), &[&x, &idx_u8], |xs| ops::gather(xs[0], xs[1], -1, 0));
        same(&format!("gather batch_dims {dtype}"), &[&x, &idx_b], |xs| ops::gather(xs[0], xs[1], 1, 1));
        same_partial(&format!("gather unknown rows {dtype}"), &[&x, &idx1], |xs| ops::gather(xs[0], xs[1], 1, 0));
        same(&format!("gather_nd {dtype}"), &[&x, &nd], |xs| ops::gather_nd(xs[0], xs[1]));
        same(&format!("gather_nd rows {dtype}"), &[&x, &nd_rows], |xs| ops::gather_nd(xs[0], xs[1]));
        if dtype.is_numeric() {
            let upd = input_special(dtype, &[200, N], 1120 + k as u64);
            same(&format!("scatter_nd rows {dtype}"), &[&sc, &upd], |xs| ops::scatter_nd(xs[0], xs[1], [M, N]));
            let upd2 = input_special(dtype, &[300], 1130 + k as u64);
            same(&format!("scatter_nd elements {dtype}"), &[&sc2, &upd2], |xs| ops::scatter_nd(xs[0], xs[1], [M, N]));
        }
    }
    // Out-of-range indices fail in both modes with the same kind.
    let x = input(DType::F32, &[M, N], 1140);
    let bad = indices_i32(&[0, 1, M as i32], &[3]);
    assert!(!agree("gather out of range", &[&x, &bad], |xs| ops::gather(xs[0], xs[1], 0, 0)));
    let neg = indices_i32(&[0, -1], &[2]);
    assert!(!agree("gather negative", &[&x, &neg], |xs| ops::gather(xs[0], xs[1], 0, 0)));
    let bad_nd = indices_i32(&[0, N as i32], &[1, 2]);
    assert!(!agree("gather_nd out of range", &[&x, &bad_nd], |xs| ops::gather_nd(xs[0], xs[1])));
}

#[test]
fn tile_pad_reverse_one_hot() {
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let x = input_special(dtype, &[M, N], 1200 + k as u64);
        let small = input_special(dtype, &[6, 10], 1210 + k as u64);
        same(&format!("tile {dtype}"), &[&small], |xs| ops::tile(xs[0], &[3, 2]));
        same(&format!("tile x1 {dtype}"), &[&x], |xs| ops::tile(xs[0], &[1, 1]));
        same(&format!("tile x0 {dtype}"), &[&x], |xs| ops::tile(xs[0], &[0, 2]));
        same_partial(&format!("tile unknown {dtype}"), &[&small], |xs| ops::tile(xs[0], &[2, 3]));
        for mode in [PadMode::Constant, PadMode::Reflect, PadMode::Symmetric] {
            same(&format!("pad {mode:?} {dtype}"), &[&small], |xs| ops::pad(xs[0], &[(2, 3), (5, 0)], mode, 7));
            same(&format!("pad {mode:?} big {dtype}"), &[&x], |xs| ops::pad(xs[0], &[(1, 1), (0, 9)], mode, -0.0));
        }
        same(&format!("pad nan {dtype}"), &[&small], |xs| {
            ops::pad(xs[0], &[(1, 2), (3, 4)], PadMode::Constant, f64::NAN)
        });
        same(&format!("reverse 0 {dtype}"), &[&x], |xs| ops::reverse(xs[0], &[0]));
        same(&format!("reverse -1 {dtype}"), &[&x], |xs| ops::reverse(xs[0], &[-1]));
        same(&format!("reverse both {dtype}"), &[&x], |xs| ops::reverse(xs[0], &[1, 0]));
        same_partial(&format!("reverse none {dtype}"), &[&x], |xs| ops::reverse(xs[0], &[]));
    }
    let idx: Vec<i32> = (0..M * N).map(|i| (i % 13) as i32 - 2).collect(); // some out of range
    let idx = indices_i32(&idx, &[M, N]);
    let idx64 = ops::cast(&idx, DType::I64).unwrap();
    same_partial("one_hot", &[&idx], |xs| ops::one_hot(xs[0], 10));
    same("one_hot i64", &[&idx64], |xs| ops::one_hot(xs[0], 10));
    for dtype in DType::ALL {
        same(&format!("one_hot_with axis 0 {dtype}"), &[&idx], |xs| ops::one_hot_with(xs[0], 7, 5, -1, 0, dtype));
        same(&format!("one_hot_with axis 1 {dtype}"), &[&idx], |xs| ops::one_hot_with(xs[0], 4, 2.5, -0.0, 1, dtype));
    }
}

#[test]
fn like_creation_and_composites() {
    for (k, dtype) in DType::ALL.into_iter().enumerate() {
        let x = input_special(dtype, &[M, N], 1300 + k as u64);
        same_partial(&format!("zeros_like {dtype}"), &[&x], |xs| ops::zeros_like(xs[0]));
        same_partial(&format!("ones_like {dtype}"), &[&x], |xs| ops::ones_like(xs[0]));
    }
    // A small network: dense, relu, dense, softmax, loss.
    let x = input(DType::F32, &[M, N], 1310);
    let w1 = input(DType::F32, &[N, 32], 1311);
    let w2 = input(DType::F32, &[32, 10], 1312);
    let labels: Vec<i32> = (0..M).map(|i| (i * 7 % 10) as i32).collect();
    let labels = indices_i32(&labels, &[M]);
    same_partial("two-layer network loss", &[&x, &w1, &w2, &labels], |xs| {
        let h = ops::relu(&ops::matmul(xs[0], xs[1])?)?;
        let logits = ops::matmul(&h, xs[2])?;
        let logp = ops::log_softmax(&logits, -1)?;
        let onehot = ops::one_hot(xs[3], 10)?;
        ops::neg(&ops::mean(&ops::sum(&ops::mul(&logp, &onehot)?, -1, false)?, Axes::All, false)?)
    });
}

#[test]
fn creation_ops_in_both_modes() -> Result<()> {
    type Make = fn(Ctx<'_>) -> Result<Tensor>;
    let makers: Vec<(&str, Make)> = vec![
        ("fill f32 nan", |c| ops::fill(c, [3, 4], f64::NAN, DType::F32)),
        ("fill i64", |c| ops::fill(c, [5], -7i64, DType::I64)),
        ("fill bool", |c| ops::fill(c, [2, 2], true, DType::Bool)),
        ("fill bf16", |c| ops::fill(c, [2], 1.1, DType::BF16)),
        ("zeros", |c| ops::zeros(c, [4, 0], DType::F64)),
        ("ones", |c| ops::ones(c, [7], DType::U8)),
        ("range i32", |c| ops::range(c, 10, -7, -3, DType::I32)),
        ("range f32", |c| ops::range(c, 0.1, 2.0, 0.3, DType::F32)),
        ("range f64 empty", |c| ops::range(c, 5.0, 1.0, 0.5, DType::F64)),
        ("linspace", |c| ops::linspace(c, -1.0, 1.0, 9, DType::F32)),
        ("linspace f16", |c| ops::linspace(c, 0.0, 3.0, 4, DType::F16)),
        ("linspace one", |c| ops::linspace(c, 2.0, 5.0, 1, DType::F64)),
        ("eye", |c| ops::eye(c, 3, 5, DType::F32)),
        ("eye i32", |c| ops::eye(c, 4, 2, DType::I32)),
        ("random_uniform", |c| ops::random_uniform(c, [100], -2.0, 3.0, DType::F32, Some(1))),
        ("random_uniform f16", |c| ops::random_uniform(c, [100], 0.0, 1.0, DType::F16, Some(2))),
        ("random_uniform_int", |c| ops::random_uniform_int(c, [100], -5, 5, DType::I64, Some(3))),
        ("random_normal", |c| ops::random_normal(c, [10, 10], 1.0, 0.5, DType::F64, Some(4))),
        ("truncated_normal", |c| ops::truncated_normal(c, [100], 0.0, 1.0, DType::F32, Some(5))),
    ];
    for (name, make) in makers {
        let eager = make(Ctx::Eager)?;
        assert!(!eager.is_symbolic(), "{name}");
        let g = Graph::new();
        let sym = make(Ctx::Graph(&g))?;
        assert!(sym.is_symbolic(), "{name}");
        assert_eq!(sym.shape(), eager.shape(), "{name}");
        assert_eq!(sym.dtype(), eager.dtype(), "{name}");
        let out = Session::new(&g).run(&[&sym], &[])?;
        assert!(out[0].bitwise_eq(&eager), "{name}: eager {eager:?} vs graph {:?}", out[0]);
    }
    // Spot checks of the values themselves.
    assert_eq!(ops::range(Ctx::Eager, 10, -7, -3, DType::I32)?.to_vec::<i32>()?, vec![10, 7, 4, 1, -2, -5]);
    assert_eq!(ops::linspace(Ctx::Eager, -1.0, 1.0, 5, DType::F32)?.to_vec::<f32>()?, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!(ops::eye(Ctx::Eager, 2, 3, DType::I32)?.to_vec::<i32>()?, vec![1, 0, 0, 0, 1, 0]);
    Ok(())
}
