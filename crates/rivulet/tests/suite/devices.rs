//! The device matrix: one registry of op cases, each run on every backend
//! (the optimized CPU and the plain-loop reference) in eager and graph mode,
//! with gradients; the backends are compared with each other. This is the
//! conformance suite a new backend (CUDA) must pass. Also: placement across
//! devices, copies, device names and errors.

use crate::common::Rng;
use rivulet::ops::{self, Op, PadMode, SliceItem, UnaryOp, UpdateRule};
use rivulet::{gradients, Ctx, DType, Device, GradientTape, Graph, Result, Session, Tensor, Unconnected};
use std::collections::BTreeSet;

const REFERENCE: &str = "/reference:0";

type Build = Box<dyn Fn(Ctx<'_>, &[Tensor]) -> Result<Vec<Tensor>>>;

/// One op case: inputs (host tensors) and the computation, written once for
/// eager and graph mode (`Ctx` for ops without inputs).
struct Case {
    name: String,
    inputs: Vec<Tensor>,
    build: Build,
    /// Check gradients with respect to the float inputs.
    grad: bool,
}

fn case(
    name: &str,
    inputs: Vec<Tensor>,
    grad: bool,
    build: impl Fn(Ctx<'_>, &[Tensor]) -> Result<Vec<Tensor>> + 'static,
) -> Case {
    Case { name: name.to_string(), inputs, build: Box::new(build), grad }
}

fn f32s(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi) as f32).collect();
    Tensor::from_slice(&v, shape).unwrap()
}

fn i32s(rng: &mut Rng, shape: &[usize], lo: i32, hi: i32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<i32> = (0..n).map(|_| lo + rng.below((hi - lo) as usize) as i32).collect();
    Tensor::from_slice(&v, shape).unwrap()
}

/// Every case of the registry.
fn registry() -> Vec<Case> {
    let mut rng = Rng(0xDE71CE);
    let mut cases = Vec::new();
    // Elementwise: every unary op on floats (inside its domain), the numeric ones on integers.
    for &f in UnaryOp::ALL {
        let name = f.name();
        if matches!(f, UnaryOp::LogicalNot) {
            let b = ops::greater(&f32s(&mut rng, &[3, 4], -1.0, 1.0), 0.0).unwrap();
            cases.push(case(name, vec![b], false, |_, x| Ok(vec![ops::logical_not(&x[0])?])));
            continue;
        }
        let x = match f {
            UnaryOp::Log | UnaryOp::Log1p | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal => {
                f32s(&mut rng, &[3, 4], 0.2, 3.0)
            }
            UnaryOp::Tan => f32s(&mut rng, &[3, 4], -1.2, 1.2),
            UnaryOp::Asin | UnaryOp::Acos | UnaryOp::Atanh => f32s(&mut rng, &[3, 4], -0.9, 0.9),
            UnaryOp::Acosh => f32s(&mut rng, &[3, 4], 1.2, 3.0),
            UnaryOp::Erfinv => f32s(&mut rng, &[3, 4], -0.9, 0.9),
            UnaryOp::Ndtri => f32s(&mut rng, &[3, 4], 0.05, 0.95),
            UnaryOp::Lgamma | UnaryOp::Digamma => f32s(&mut rng, &[3, 4], 0.3, 4.0),
            _ => f32s(&mut rng, &[3, 4], -2.5, 2.5),
        };
        let smooth = !matches!(
            f,
            UnaryOp::Sign
                | UnaryOp::Floor
                | UnaryOp::Ceil
                | UnaryOp::Round
                | UnaryOp::IsNan
                | UnaryOp::IsFinite
                | UnaryOp::IsInf
        );
        cases.push(case(&format!("{name} f32"), vec![x], smooth, move |_, x| Ok(vec![ops::unary_op(f, &x[0])?])));
        let (lo, hi) = if f == UnaryOp::Acosh { (1.2, 3.0) } else { (0.3, 0.9) };
        let x64 = ops::cast(&f32s(&mut rng, &[5], lo, hi), DType::F64).unwrap();
        cases.push(case(&format!("{name} f64"), vec![x64], false, move |_, x| Ok(vec![ops::unary_op(f, &x[0])?])));
        if matches!(f, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Square | UnaryOp::Relu | UnaryOp::Relu6) {
            let xi = i32s(&mut rng, &[7], -9, 9);
            cases.push(case(&format!("{name} i32"), vec![xi], false, move |_, x| Ok(vec![ops::unary_op(f, &x[0])?])));
        }
    }
    for &f in ops::BinaryOp::ALL {
        let name = f.name();
        if matches!(f, ops::BinaryOp::LogicalAnd | ops::BinaryOp::LogicalOr) {
            let a = ops::greater(&f32s(&mut rng, &[2, 3], -1.0, 1.0), 0.0).unwrap();
            let b = ops::greater(&f32s(&mut rng, &[3], -1.0, 1.0), 0.0).unwrap();
            cases.push(case(name, vec![a, b], false, move |_, x| Ok(vec![ops::binary_op(f, &x[0], &x[1])?])));
            continue;
        }
        use ops::BinaryOp::{FloorDiv, FloorMod, Igamma, Igammac, NextAfter, Polygamma, TruncateMod, Zeta};
        let a = match f {
            // Integer orders; exponents above 1.
            Polygamma => ops::cast(&i32s(&mut rng, &[2, 3], 0, 3), DType::F32).unwrap(),
            Zeta => f32s(&mut rng, &[2, 3], 1.5, 3.0),
            _ => f32s(&mut rng, &[2, 3], 0.5, 2.0),
        };
        let b = f32s(&mut rng, &[3], 0.5, 2.0);
        // The special functions' first argument has no gradient (checked in gradients.rs).
        let smooth = !f.is_comparison()
            && !matches!(f, FloorDiv | FloorMod | TruncateMod | Zeta | Polygamma | Igamma | Igammac | NextAfter);
        cases.push(case(&format!("{name} f32"), vec![a, b], smooth, move |_, x| {
            Ok(vec![ops::binary_op(f, &x[0], &x[1])?])
        }));
        let ai = i32s(&mut rng, &[2, 3], -20, 20);
        let bi = i32s(&mut rng, &[3], 1, 5);
        if ops::binary_op(f, &ai, &bi).is_ok() {
            cases.push(case(&format!("{name} i32"), vec![ai, bi], false, move |_, x| {
                Ok(vec![ops::binary_op(f, &x[0], &x[1])?])
            }));
        }
    }
    let c = ops::greater(&f32s(&mut rng, &[2, 3], -1.0, 1.0), 0.0).unwrap();
    cases.push(case(
        "select",
        vec![c, f32s(&mut rng, &[2, 3], -1.0, 1.0), f32s(&mut rng, &[3], -1.0, 1.0)],
        true,
        |_, x| Ok(vec![ops::select(&x[0], &x[1], &x[2])?]),
    ));
    for to in [DType::I32, DType::F16, DType::BF16, DType::F64, DType::Bool, DType::U8] {
        cases.push(case(
            &format!("cast f32 -> {to}"),
            vec![f32s(&mut rng, &[6], -3.0, 300.0)],
            to.is_float(),
            move |_, x| Ok(vec![ops::cast(&x[0], to)?]),
        ));
    }
    // Reductions and scans.
    let x = f32s(&mut rng, &[3, 4, 5], -1.0, 1.0);
    for (name, axes) in [("axis 1", vec![1i64]), ("axes 0 2", vec![0, 2]), ("all", vec![0, 1, 2])] {
        for f in ["sum", "mean", "max", "min", "prod"] {
            let axes = axes.clone();
            cases.push(case(&format!("{f} {name}"), vec![x.clone()], true, move |_, x| {
                let a: &[i64] = &axes;
                Ok(vec![match f {
                    "sum" => ops::sum(&x[0], a, false)?,
                    "mean" => ops::mean(&x[0], a, true)?,
                    "max" => ops::max(&x[0], a, false)?,
                    "min" => ops::min(&x[0], a, false)?,
                    _ => ops::prod(&x[0], a, false)?,
                }])
            }));
        }
    }
    cases.push(case("sum i32", vec![i32s(&mut rng, &[4, 5], -100, 100)], false, |_, x| {
        Ok(vec![ops::sum(&x[0], 1, false)?, ops::mean(&x[0], 0, false)?])
    }));
    let b = ops::greater(&f32s(&mut rng, &[3, 4], -1.0, 1.0), 0.0).unwrap();
    cases
        .push(case("any all", vec![b], false, |_, x| Ok(vec![ops::any(&x[0], 1, false)?, ops::all(&x[0], 0, false)?])));
    cases.push(case("argmax argmin", vec![f32s(&mut rng, &[3, 5], -1.0, 1.0)], false, |_, x| {
        Ok(vec![ops::argmax(&x[0], 1)?, ops::argmin(&x[0], 0)?])
    }));
    for (exclusive, reverse) in [(false, false), (true, false), (false, true), (true, true)] {
        cases.push(case(
            &format!("cumsum cumprod {exclusive} {reverse}"),
            vec![f32s(&mut rng, &[3, 4], 0.5, 1.5)],
            true,
            move |_, x| {
                Ok(vec![ops::cumsum(&x[0], 1, exclusive, reverse)?, ops::cumprod(&x[0], 0, exclusive, reverse)?])
            },
        ));
    }
    // Products.
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { f32s(&mut rng, &[2, 4, 3], -1.0, 1.0) } else { f32s(&mut rng, &[2, 3, 4], -1.0, 1.0) };
        let b = if tb { f32s(&mut rng, &[5, 4], -1.0, 1.0) } else { f32s(&mut rng, &[4, 5], -1.0, 1.0) };
        cases.push(case(&format!("matmul {ta} {tb}"), vec![a, b], true, move |_, x| {
            Ok(vec![ops::matmul_t(&x[0], &x[1], ta, tb)?])
        }));
    }
    cases.push(case(
        "matmul i32",
        vec![i32s(&mut rng, &[3, 4], -5, 5), i32s(&mut rng, &[4, 2], -5, 5)],
        false,
        |_, x| Ok(vec![ops::matmul(&x[0], &x[1])?]),
    ));
    // Movement.
    let x = f32s(&mut rng, &[2, 3, 4], -1.0, 1.0);
    let m = |name: &str, grad: bool, f: fn(&Tensor) -> Result<Tensor>| {
        case(name, vec![x.clone()], grad, move |_, x| Ok(vec![f(&x[0])?]))
    };
    cases.extend([
        m("reshape", true, |x| ops::reshape(x, &[4, -1])),
        m("reshape of a transpose", true, |x| ops::reshape(&ops::transpose(x, &[2, 0, 1])?, &[-1])),
        m("transpose", true, |x| ops::transpose(x, &[1, 2, 0])),
        m("expand_dims squeeze", true, |x| ops::squeeze(&ops::expand_dims(x, 1)?, &[1])),
        m("broadcast_to", true, |x| ops::broadcast_to(x, [3, 2, 3, 4])),
        m("slice", true, |x| ops::slice(x, &[0, 1, 1], &[2, -1, 2])),
        m("strided_slice", true, |x| {
            ops::strided_slice(
                x,
                &[SliceItem::Index(1), SliceItem::Range { start: None, stop: None, step: -1 }, SliceItem::NewAxis],
            )
        }),
        m("tile", true, |x| ops::tile(x, &[2, 1, 3])),
        m("pad constant", true, |x| ops::pad(x, &[(1, 0), (0, 2), (1, 1)], PadMode::Constant, 0.5)),
        m("pad reflect", true, |x| ops::pad(x, &[(1, 1), (2, 1), (0, 3)], PadMode::Reflect, 0.0)),
        m("pad symmetric", true, |x| ops::pad(x, &[(1, 1), (3, 0), (2, 2)], PadMode::Symmetric, 0.0)),
        m("reverse", true, |x| ops::reverse(x, &[0, 2])),
        m("softmax", true, |x| ops::softmax(x, -1)),
        m("log_softmax", true, |x| ops::log_softmax(x, 1)),
        m("size", false, |x| ops::size(x, DType::I32)),
    ]);
    cases.push(case("concat", vec![x.clone(), f32s(&mut rng, &[2, 1, 4], -1.0, 1.0)], true, |_, x| {
        Ok(vec![ops::concat(&[&x[0], &x[1]], 1)?])
    }));
    cases.push(case("split unstack", vec![x.clone()], true, |_, x| {
        let mut out = ops::split_sizes(&x[0], &[1, 3], 2)?;
        out.extend(ops::unstack(&x[0], 1)?);
        Ok(out)
    }));
    let idx = Tensor::from_slice(&[2i32, 0, 1, 2, 2], [5]).unwrap();
    cases.push(case("gather", vec![x.clone(), idx], true, |_, x| Ok(vec![ops::gather(&x[0], &x[1], 1, 0)?])));
    let idx = Tensor::from_slice(&[1i64, 0, 2, 2, 1, 0], [2, 3]).unwrap();
    cases
        .push(case("gather batch_dims", vec![x.clone(), idx], true, |_, x| Ok(vec![ops::gather(&x[0], &x[1], 2, 1)?])));
    let idx = Tensor::from_slice(&[1i32, 2, 0, 0, 1, 1], [3, 2]).unwrap();
    cases.push(case("gather_nd", vec![x.clone(), idx], true, |_, x| Ok(vec![ops::gather_nd(&x[0], &x[1])?])));
    let idx = Tensor::from_slice(&[1i32, 3, 1], [3, 1]).unwrap();
    cases.push(case("scatter_nd", vec![idx, f32s(&mut rng, &[3, 2], -1.0, 1.0)], true, |_, x| {
        Ok(vec![ops::scatter_nd(&x[0], &x[1], [5, 2])?])
    }));
    let idx = Tensor::from_slice(&[0i32, 3, 1, 7, 2], [5]).unwrap();
    cases.push(case("one_hot", vec![idx], false, |_, x| {
        Ok(vec![ops::one_hot(&x[0], 4)?, ops::one_hot_with(&x[0], 3, 2.0, -1.0, 0, DType::F64)?])
    }));
    cases.push(case("top_k", vec![f32s(&mut rng, &[3, 6], -1.0, 1.0)], true, |_, x| {
        let (v, i) = ops::top_k(&x[0], 3)?;
        Ok(vec![v, i])
    }));
    // Rows longer than one GPU block's sort (2048): chunks, then their best;
    // values on a coarse grid, so ties are broken by position; a NaN first.
    let mut long: Vec<f32> = (0..2 * 5000).map(|i| ((i * 7919) % 1013) as f32 / 64.0 - 8.0).collect();
    long[4321] = f32::NAN;
    cases.push(case("top_k long rows", vec![Tensor::from_slice(&long, [2, 5000]).unwrap()], false, |_, x| {
        let (v, i) = ops::top_k(&x[0], 9)?;
        Ok(vec![v, i])
    }));
    cases.push(case(
        "sum_to broadcast_like reshape_like",
        vec![f32s(&mut rng, &[2, 3, 4], -1.0, 1.0), f32s(&mut rng, &[3, 1], -1.0, 1.0)],
        true,
        |_, x| {
            let s = ops::sum_to(&x[0], &x[1])?;
            Ok(vec![
                s.clone(),
                ops::broadcast_like(&x[1], &x[0])?,
                ops::reshape_like(&s, &ops::reshape(&x[1], &[1, 3])?)?,
            ])
        },
    ));
    // Creation.
    cases.push(case("creation", vec![], false, |c, _| {
        Ok(vec![
            ops::fill(c, [2, 3], 1.5, DType::F32)?,
            ops::range(c, 3i64, 20i64, 4i64, DType::I32)?,
            ops::range(c, 0.5, 2.0, 0.25, DType::F32)?,
            ops::linspace(c, -1.0, 2.0, 7, DType::F64)?,
            ops::eye(c, 3, 4, DType::F32)?,
        ])
    }));
    cases.push(case("random", vec![], false, |c, _| {
        Ok(vec![
            ops::random_uniform(c, [3, 5], -1.0, 2.0, DType::F32, Some(7))?,
            ops::random_uniform(c, [5], 0.0, 1.0, DType::F64, Some(8))?,
            ops::random_normal(c, [2, 7], 1.0, 2.0, DType::F32, Some(9))?,
            ops::truncated_normal(c, [9], 0.0, 1.0, DType::F32, Some(10))?,
            ops::random_uniform_int(c, [6], -5, 50, DType::I64, Some(11))?,
        ])
    }));
    cases.push(case(
        "random_like zeros_like",
        // An offset past 2^53 (as Dropout's state makes): read exactly everywhere.
        vec![f32s(&mut rng, &[4, 3], -1.0, 1.0), Tensor::scalar(0x2545_F491_4F6C_DD1Di64)],
        false,
        |_, x| {
            Ok(vec![
                ops::random_uniform_like(&x[0], 0.0, 1.0, Some(3))?,
                ops::random_uniform_like_offset(&x[0], 0.0, 1.0, 4, &x[1])?,
                ops::zeros_like(&x[0])?,
            ])
        },
    ));
    // Optimizer updates (the pure op).
    for rule in [
        UpdateRule::Sgd,
        UpdateRule::Momentum { momentum: 0.9, nesterov: true },
        UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.01 },
        UpdateRule::Adam { beta1: 0.8, beta2: 0.99, epsilon: 1e-3, weight_decay: 0.0 },
        UpdateRule::RmsProp { rho: 0.9, epsilon: 1e-7 },
        UpdateRule::Adagrad { epsilon: 1e-7 },
    ] {
        let mut inputs = vec![
            f32s(&mut rng, &[4, 3], -1.0, 1.0),
            f32s(&mut rng, &[4, 3], -1.0, 1.0),
            Tensor::scalar(0.05f32),
            Tensor::scalar(3.0f32),
        ];
        for _ in 0..rule.num_slots() {
            inputs.push(f32s(&mut rng, &[4, 3], 0.0, 1.0));
        }
        cases.push(case(&format!("apply_update {rule:?}"), inputs, false, move |_, x| {
            let slots: Vec<&Tensor> = x[4..].iter().collect();
            ops::apply_update(rule, &x[0], &x[1], &x[2], &x[3], &slots)
        }));
    }
    // Factorizations and solves (faer's kernels on a host copy on every backend).
    let shift = |x: &Tensor, by: f64| -> Result<Tensor> {
        let n = x.shape()[x.rank() - 1];
        ops::add(x, &ops::mul(&ops::eye(Ctx::of(x), n, n, x.dtype())?, by)?)
    };
    let spd = move |x: &Tensor| -> Result<Tensor> { shift(&ops::div(&ops::matmul_t(x, x, false, true)?, 3.0)?, 1.0) };
    let sq = f32s(&mut rng, &[2, 3, 3], -1.0, 1.0);
    let rhs = f32s(&mut rng, &[3, 2], -1.0, 1.0);
    cases.push(case("cholesky", vec![sq.clone()], true, move |_, x| Ok(vec![ops::cholesky(&spd(&x[0])?)?])));
    cases.push(case("triangular_solve", vec![sq.clone(), rhs.clone()], true, move |_, x| {
        Ok(vec![
            ops::triangular_solve(&shift(&x[0], 3.0)?, &x[1], true, false)?,
            ops::triangular_solve(&shift(&x[0], 3.0)?, &x[1], false, true)?,
        ])
    }));
    cases.push(case("solve, inv, det", vec![sq.clone(), rhs.clone()], true, move |_, x| {
        let a = shift(&x[0], 2.0)?;
        let (_, logabs) = ops::slogdet(&a)?;
        Ok(vec![ops::solve(&a, &x[1])?, ops::inv(&a)?, ops::det(&a)?, logabs])
    }));
    cases.push(case("lu", vec![sq.clone()], false, |_, x| {
        let (lu, p) = ops::lu(&x[0])?;
        Ok(vec![lu, p])
    }));
    cases.push(case("qr, svd", vec![f32s(&mut rng, &[2, 4, 3], -1.0, 1.0)], true, |_, x| {
        let (q, r) = ops::qr(&x[0], false)?;
        let (s, u, v) = ops::svd(&x[0], false)?;
        // U diag(s) Vᵀ: free of the singular vectors' signs, which backends need not share.
        Ok(vec![q, r, s.clone(), ops::matmul_t(&ops::mul(&u, &ops::expand_dims(&s, -2)?)?, &v, false, true)?])
    }));
    cases.push(case("eigh, expm", vec![sq], true, |_, x| {
        let sym = ops::mul(&ops::add(&x[0], &ops::adjoint(&x[0])?)?, 0.5)?;
        let (e, v) = ops::eigh(&sym)?;
        let vv = ops::matmul_t(&ops::mul(&v, &ops::expand_dims(&e, -2)?)?, &v, false, true)?;
        Ok(vec![e, vv, ops::expm(&x[0])?])
    }));
    cases.push(case("laplacian, roll", vec![f32s(&mut rng, &[5, 6], -1.0, 1.0)], true, |_, x| {
        Ok(vec![ops::grid::laplacian(&x[0], &[0.5, 0.5], ops::Boundary::Neumann)?, ops::roll(&x[0], &[2], &[1])?])
    }));
    cases.push(case(
        "interpolate",
        vec![f32s(&mut rng, &[4, 5], -1.0, 1.0), f32s(&mut rng, &[6, 2], 0.1, 3.4)],
        true,
        |_, x| Ok(vec![ops::grid::interpolate(&x[0], &x[1], ops::Boundary::Periodic)?]),
    ));
    // Complex arithmetic (real ops on the parts) and Fourier transforms (on a
    // host copy on every backend), seen through real outputs.
    let parts = |z: &Tensor| -> Result<Vec<Tensor>> { Ok(vec![ops::real(z)?, ops::imag(z)?]) };
    cases.push(case(
        "complex arithmetic",
        vec![f32s(&mut rng, &[3, 4], -1.0, 1.0), f32s(&mut rng, &[3, 4], 0.2, 1.0), f32s(&mut rng, &[4], -1.0, 1.0)],
        true,
        move |_, x| {
            let z = ops::complex(&x[0], &x[1])?;
            let w = ops::complex(&x[2], &ops::add(&x[2], 2.0)?)?;
            let mut out = parts(&ops::div(&ops::mul(&z, &w)?, &ops::exp(&z)?)?)?;
            out.extend(parts(&ops::sqrt(&ops::sum(&ops::conj(&z)?, 0, false)?)?)?);
            out.push(ops::abs(&ops::log(&z)?)?);
            out.push(ops::angle(&z)?);
            Ok(out)
        },
    ));
    cases.push(case(
        "fft, ifft2, fft3",
        vec![f32s(&mut rng, &[2, 3, 4], -1.0, 1.0), f32s(&mut rng, &[2, 3, 4], -1.0, 1.0)],
        true,
        move |_, x| {
            let z = ops::complex(&x[0], &x[1])?;
            let mut out = parts(&ops::fft(&z)?)?;
            out.extend(parts(&ops::ifft2(&z)?)?);
            out.extend(parts(&ops::fft3(&z)?)?);
            out.extend(parts(&ops::ifft(&z)?)?);
            out.extend(parts(&ops::fft2(&z)?)?);
            out.extend(parts(&ops::ifft3(&z)?)?);
            Ok(out)
        },
    ));
    cases.push(case("rfft, irfft (1-D to 3-D)", vec![f32s(&mut rng, &[2, 3, 5], -1.0, 1.0)], true, move |_, x| {
        let mut out = parts(&ops::rfft(&x[0], None)?)?;
        out.extend(parts(&ops::rfft2(&x[0], None)?)?);
        out.extend(parts(&ops::rfft3(&x[0], Some([2, 4, 6]))?)?);
        let spectrum = ops::complex(&x[0], &ops::mul(&x[0], 0.5)?)?;
        out.push(ops::irfft(&spectrum, Some(8))?);
        out.push(ops::irfft2(&spectrum, None)?);
        out.push(ops::irfft3(&spectrum, Some([2, 3, 9]))?);
        Ok(out)
    }));
    // Convolutions and pooling: asymmetric SAME padding with strides,
    // dilation with groups, the transposed convolution, 1-D and 3-D.
    cases.push(case(
        "conv2d, conv_transpose, conv1d, conv3d",
        vec![
            f32s(&mut rng, &[2, 7, 6, 4], -1.0, 1.0),
            f32s(&mut rng, &[3, 3, 4, 3], -1.0, 1.0),
            f32s(&mut rng, &[2, 3, 2, 4], -1.0, 1.0),
            f32s(&mut rng, &[1, 3, 4, 3, 2], -1.0, 1.0),
        ],
        true,
        |_, x| {
            let same2 = ops::conv2d(&x[0], &x[1], &[2], ops::Padding::Same)?;
            let grouped = ops::ConvOptions::new(ops::Padding::Same).dilations(&[2, 1]).groups(2);
            let grouped = ops::convolution(&x[0], &x[2], &grouped)?;
            let back = ops::conv2d_transpose(&same2, &x[1], &[2, 7, 6, 4], &[2], ops::Padding::Same)?;
            let row = ops::reshape(&x[0], &[2, 42, 4])?;
            let one_d = ops::conv1d(&row, &ops::reshape(&x[2], &[6, 4, 2])?, 3, ops::Padding::Same)?;
            let cube = ops::conv3d(&x[3], &ops::reshape(&x[2], &[2, 3, 2, 2, 2])?, &[1, 2, 1], ops::Padding::Same)?;
            Ok(vec![same2, grouped, back, one_d, cube])
        },
    ));
    cases.push(case(
        "max_pool, avg_pool (1-D to 3-D)",
        vec![f32s(&mut rng, &[2, 5, 7, 3], -1.0, 1.0)],
        true,
        |_, x| {
            let window = ops::PoolOptions::new(&[3, 2], ops::Padding::Same).strides(&[2, 2]);
            let cube = ops::reshape(&x[0], &[2, 5, 7, 3, 1])?;
            let row = ops::reshape(&x[0], &[2, 35, 3])?;
            Ok(vec![
                ops::max_pool(&x[0], &window)?,
                ops::avg_pool(&x[0], &window)?,
                ops::max_pool(&row, &ops::PoolOptions::new(&[4], ops::Padding::Valid).strides(&[3]))?,
                ops::avg_pool(&cube, &ops::PoolOptions::new(&[2], ops::Padding::Same))?,
            ])
        },
    ));
    // Programs the graph optimizer fuses (graph mode runs them fused).
    cases.push(case("fusable chain", vec![f32s(&mut rng, &[8, 9], -2.0, 2.0)], true, |_, x| {
        let y = ops::mul(&ops::tanh(&ops::add(&ops::mul(&x[0], 1.5)?, 0.5)?)?, &ops::sigmoid(&x[0])?)?;
        Ok(vec![ops::sub(&y, &ops::square(&x[0])?)?, ops::sum(&ops::exp(&x[0])?, 1, false)?])
    }));
    cases.push(case(
        "dense layer",
        vec![f32s(&mut rng, &[4, 6], -1.0, 1.0), f32s(&mut rng, &[6, 3], -1.0, 1.0), f32s(&mut rng, &[3], -1.0, 1.0)],
        true,
        |_, x| Ok(vec![ops::relu(&ops::add(&ops::matmul(&x[0], &x[1])?, &x[2])?)?]),
    ));
    // The fused product's other forms (one cuBLASLt launch on the GPU): a
    // bias alone with stored-transposed weights, and a batch over shared weights.
    cases.push(case(
        "dense layer, transposed weights, no activation",
        vec![f32s(&mut rng, &[5, 7], -1.0, 1.0), f32s(&mut rng, &[3, 7], -1.0, 1.0), f32s(&mut rng, &[3], -1.0, 1.0)],
        true,
        |_, x| Ok(vec![ops::add(&ops::matmul_t(&x[0], &x[1], false, true)?, &x[2])?]),
    ));
    cases.push(case(
        "dense layer over a batch",
        vec![
            f32s(&mut rng, &[2, 4, 6], -1.0, 1.0),
            f32s(&mut rng, &[6, 5], -1.0, 1.0),
            f32s(&mut rng, &[5], -1.0, 1.0),
        ],
        true,
        |_, x| Ok(vec![ops::relu(&ops::add(&ops::matmul(&x[0], &x[1])?, &x[2])?)?]),
    ));
    // NaN and infinities through the fused ReLU: NaN stays NaN, as the
    // unfused ops give it.
    cases.push(case(
        "dense layer with NaN and infinities",
        vec![
            Tensor::from_slice(&[1.0f32, f32::NAN, 0.5, -2.0, f32::INFINITY, 1.0, 0.25, -0.5, 3.0], [3, 3]).unwrap(),
            Tensor::from_slice(&[1.0f32, -1.0, 0.5, 2.0, 0.0, -0.25, -1.0, 1.0, 0.75], [3, 3]).unwrap(),
            Tensor::from_slice(&[0.5f32, -0.5, f32::NAN], [3]).unwrap(),
        ],
        false,
        |_, x| Ok(vec![ops::relu(&ops::add(&ops::matmul(&x[0], &x[1])?, &x[2])?)?]),
    ));
    cases
}

/// Whether two outputs agree: exactly for integers and bools, within a
/// relative tolerance for floats (the reference computes in f64 and rounds
/// once; the CPU's kernels round per step and vectorise transcendentals).
fn close(what: &str, a: &Tensor, b: &Tensor) {
    close_within(what, a, b, [1e-12, 2e-5, 1e-2]);
}

/// `a` and `b` equal, floats within relative `tol` (f64, f32, f16/bf16).
fn close_within(what: &str, a: &Tensor, b: &Tensor, tol: [f64; 3]) {
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtypes");
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let (x, y) = (crate::common::values(a), crate::common::values(b));
    let tol = match a.dtype() {
        DType::F64 => tol[0],
        DType::F32 => tol[1],
        DType::F16 | DType::BF16 => tol[2],
        _ => 0.0,
    };
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        let ok = (p.is_nan() && q.is_nan()) || p == q || (p - q).abs() <= tol * (1.0 + p.abs().max(q.abs()));
        assert!(ok, "{what}: element {i}: {p} vs {q}");
    }
}

/// The case run eagerly on `device` (inputs moved there first).
fn eager(c: &Case, device: &str) -> Result<Vec<Tensor>> {
    let inputs: Vec<Tensor> = c.inputs.iter().map(|t| t.to_device(device)).collect::<Result<_>>()?;
    rivulet::device(device, || (c.build)(Ctx::Eager, &inputs))?
}

/// A placeholder for each input of the case.
fn placeholders(g: &Graph, c: &Case) -> Result<Vec<Tensor>> {
    c.inputs.iter().enumerate().map(|(i, t)| g.placeholder(&format!("x{i}"), t.dtype(), t.shape().clone())).collect()
}

/// The case as a graph placed on `device`, run in a session with the host
/// inputs fed (optimized: fused programs run as such).
fn graph(c: &Case, device: &str) -> Result<(Vec<Tensor>, BTreeSet<String>)> {
    let g = Graph::new();
    let (xs, ys) = rivulet::device(device, || -> Result<_> {
        let xs = placeholders(&g, c)?;
        let ys = (c.build)(Ctx::Graph(&g), &xs)?;
        Ok((xs, ys))
    })??;
    let feeds: Vec<(&Tensor, &Tensor)> = xs.iter().zip(&c.inputs).collect();
    let fetches: Vec<&Tensor> = ys.iter().collect();
    let s = Session::new(&g);
    let out = s.run(&fetches, &feeds)?;
    let here = Device::parse(device)?;
    let ops =
        s.profile(&fetches, &feeds, &[], 1)?.steps.into_iter().filter(|p| p.device == here).map(|p| p.op).collect();
    Ok((out, ops))
}

/// `sum(y * w)` over the float outputs, for gradients.
fn loss(ys: &[Tensor]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (k, y) in ys.iter().enumerate().filter(|(_, y)| y.dtype().is_float()) {
        let y = &ops::cast(y, DType::F32)?;
        let n = y.numel().unwrap_or(0);
        let w: Vec<f32> = (0..n).map(|i| ((i * 7 + k * 3) % 11) as f32 * 0.1 - 0.5).collect();
        let w = Tensor::from_slice(&w, y.shape().clone())?.to_device(&y.device().to_string())?;
        let term = ops::sum(&ops::mul(y, &w)?, rivulet::Axes::All, false)?;
        total = Some(match total {
            Some(t) => ops::add(&t, &term)?,
            None => term,
        });
    }
    total.ok_or_else(|| rivulet::Error::new(rivulet::ErrorKind::InvalidArgument, "no float output"))
}

fn eager_gradients(c: &Case, device: &str) -> Result<Vec<Option<Tensor>>> {
    let inputs: Vec<Tensor> = c.inputs.iter().map(|t| t.to_device(device)).collect::<Result<_>>()?;
    rivulet::device(device, || {
        let tape = GradientTape::new();
        for x in &inputs {
            tape.watch(x);
        }
        let l = loss(&(c.build)(Ctx::Eager, &inputs)?)?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        tape.gradient(&l, &refs)
    })?
}

fn graph_gradients(c: &Case, device: &str) -> Result<Vec<Option<Tensor>>> {
    let g = Graph::new();
    let (xs, grads) = rivulet::device(device, || -> Result<_> {
        let xs = placeholders(&g, c)?;
        let l = loss(&(c.build)(Ctx::Graph(&g), &xs)?)?;
        let refs: Vec<&Tensor> = xs.iter().collect();
        Ok((xs.clone(), gradients(&[&l], &refs, None, Unconnected::None)?))
    })??;
    let wanted: Vec<&Tensor> = grads.iter().flatten().collect();
    let feeds: Vec<(&Tensor, &Tensor)> = xs.iter().zip(&c.inputs).collect();
    let mut values = Session::new(&g).run(&wanted, &feeds)?.into_iter();
    Ok(grads.iter().map(|g| g.as_ref().and_then(|_| values.next())).collect())
}

/// Every registered op, on the CPU and the reference device, eagerly and as
/// a graph: the same values (to rounding), and each output on the device
/// the op ran on.
#[test]
fn every_op_agrees_on_every_backend_in_both_modes() {
    let mut ran_on_reference: BTreeSet<String> = BTreeSet::new();
    for c in registry() {
        let want = eager(&c, "/cpu:0").unwrap_or_else(|e| panic!("{}: cpu eager: {e}", c.name));
        let got = eager(&c, REFERENCE).unwrap_or_else(|e| panic!("{}: reference eager: {e}", c.name));
        assert_eq!(want.len(), got.len(), "{}", c.name);
        for (k, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w.device(), Device::CPU, "{}: output {k}", c.name);
            assert_eq!(g.device(), Device::REFERENCE, "{}: output {k} left the reference device", c.name);
            close(&format!("{}: reference eager output {k}", c.name), g, w);
        }
        for device in ["/cpu:0", REFERENCE] {
            let (out, ops) = graph(&c, device).unwrap_or_else(|e| panic!("{}: {device} graph: {e}", c.name));
            for (k, (w, g)) in want.iter().zip(&out).enumerate() {
                close(&format!("{}: {device} graph output {k}", c.name), g, w);
            }
            if device == REFERENCE {
                ran_on_reference.extend(ops);
            }
        }
    }
    // The registry covers every op a backend can be asked to run (those
    // made only inside a session's store aside).
    let mut every_op: Vec<&str> = vec![
        "All",
        "Any",
        "ArgMax",
        "ArgMin",
        "BroadcastLike",
        "BroadcastTo",
        "Cast",
        "ConcatV2",
        "Cumprod",
        "Cumsum",
        "Eye",
        "Fill",
        "FillLike",
        "FusedElementwise",
        "_FusedMatMul",
        "GatherNd",
        "GatherV2",
        "LinSpace",
        "LogSoftmax",
        "Max",
        "Mean",
        "Min",
        "OneHot",
        "Pad",
        "Prod",
        "RandomStandardNormal",
        "RandomUniform",
        "RandomUniformInt",
        "Range",
        "Reshape",
        "ReshapeLike",
        "ReverseV2",
        "ScatterNd",
        "Select",
        "Size",
        "Slice",
        "Softmax",
        "SplitV",
        "StridedSlice",
        "Sum",
        "SumTo",
        "Tile",
        "TopKV2",
        "Transpose",
        "TruncatedNormal",
        "Unpack",
        "ApplyAdam",
        "ApplyGradientDescent",
        "ApplyMomentum",
        "ApplyRMSProp",
        "ApplyAdagrad",
        "ApplyAdamW",
        "MatMul",
        "Cholesky",
        "MatrixTriangularSolve",
        "MatrixSolve",
        "MatrixInverse",
        "MatrixDeterminant",
        "LogMatrixDeterminant",
        "Lu",
        "Qr",
        "Svd",
        "SelfAdjointEigV2",
        "MatrixExponential",
        "Complex",
        "Real",
        "Imag",
        "FFT",
        "FFT2D",
        "FFT3D",
        "IFFT",
        "IFFT2D",
        "IFFT3D",
        "RFFT",
        "RFFT2D",
        "RFFT3D",
        "IRFFT",
        "IRFFT2D",
        "IRFFT3D",
        "Conv2D",
        "Conv3D",
        "Conv2DBackpropInput",
        "MaxPool",
        "AvgPool",
    ];
    let unary = UnaryOp::ALL.iter().map(|&f| Op::Unary { f }.type_name());
    let binary = ops::BinaryOp::ALL.iter().map(|&f| Op::Binary { f }.type_name());
    every_op.extend(unary.chain(binary));
    let missing: Vec<&&str> = every_op.iter().filter(|op| !ran_on_reference.contains(**op)).collect();
    assert!(
        missing.is_empty(),
        "ops the registry never ran on the reference device: {missing:?}\nran: {ran_on_reference:?}"
    );
}

/// The case's float inputs as f64 (integer inputs as they are).
fn widened(c: &Case) -> Vec<Tensor> {
    c.inputs
        .iter()
        .map(|t| if t.dtype() == DType::F32 { ops::cast(t, DType::F64).unwrap() } else { t.clone() })
        .collect()
}

/// `sum(y * w)` in f64 over the float outputs of the case at `inputs`.
fn loss64(c: &Case, inputs: &[Tensor]) -> Result<f64> {
    let ys = (c.build)(Ctx::Eager, inputs)?;
    let mut total = 0.0;
    for (k, y) in ys.iter().enumerate().filter(|(_, y)| y.dtype().is_float()) {
        let v = crate::common::values(y);
        total += v.iter().enumerate().map(|(i, x)| x * (((i * 7 + k * 3) % 11) as f64 * 0.1 - 0.5)).sum::<f64>();
    }
    Ok(total)
}

/// The analytic gradient (a tape, in f64 on the CPU) against central
/// differences, at a few elements of each float input: the rules that the
/// backends share are right, not only the same everywhere.
fn check_finite_differences(c: &Case) -> Result<bool> {
    let x = widened(c);
    let tape = GradientTape::new();
    for t in &x {
        tape.watch(t);
    }
    let ys = (c.build)(Ctx::Eager, &x)?;
    if ys.iter().any(|y| y.dtype().is_float() && y.dtype() != DType::F64) {
        // Rounded to a narrower float on the way: a step function to differences.
        return Ok(false);
    }
    let mut l: Option<Tensor> = None;
    for (k, y) in ys.iter().enumerate().filter(|(_, y)| y.dtype().is_float()) {
        let n = y.numel().unwrap_or(0);
        let w: Vec<f64> = (0..n).map(|i| ((i * 7 + k * 3) % 11) as f64 * 0.1 - 0.5).collect();
        let term = ops::sum(
            &ops::mul(&ops::cast(y, DType::F64)?, &Tensor::from_slice(&w, y.shape().clone())?)?,
            rivulet::Axes::All,
            false,
        )?;
        l = Some(match l {
            Some(t) => ops::add(&t, &term)?,
            None => term,
        });
    }
    let Some(l) = l else { return Ok(false) };
    let refs: Vec<&Tensor> = x.iter().collect();
    let grads = tape.gradient(&l, &refs)?;
    for (i, (xi, gi)) in x.iter().zip(&grads).enumerate() {
        let (Some(gi), true) = (gi, xi.dtype() == DType::F64) else { continue };
        let g = crate::common::values(gi);
        let base = crate::common::values(xi);
        for j in (0..base.len()).step_by((base.len() / 5).max(1)) {
            let h = 1e-6 * (1.0 + base[j].abs());
            let at = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += d;
                let mut inputs = x.clone();
                inputs[i] = Tensor::from_slice(&v, xi.shape().clone())?;
                loss64(c, &inputs)
            };
            let fd = (at(h)? - at(-h)?) / (2.0 * h);
            assert!(
                (fd - g[j]).abs() <= 1e-5 * (1.0 + fd.abs()),
                "{}: d/dx{i}[{j}]: analytic {} vs finite differences {fd}",
                c.name,
                g[j]
            );
        }
    }
    Ok(true)
}

/// Gradients of every differentiable case are right (finite differences)
/// and agree across backends and modes.
#[test]
fn gradients_agree_on_every_backend_in_both_modes() {
    let (mut checked, mut differenced) = (0, 0);
    for c in registry().into_iter().filter(|c| c.grad) {
        checked += 1;
        differenced +=
            check_finite_differences(&c).unwrap_or_else(|e| panic!("{}: finite differences: {e}", c.name)) as usize;
        let want = eager_gradients(&c, "/cpu:0").unwrap_or_else(|e| panic!("{}: cpu tape: {e}", c.name));
        let runs = [
            ("reference tape", eager_gradients(&c, REFERENCE)),
            ("cpu graph", graph_gradients(&c, "/cpu:0")),
            ("reference graph", graph_gradients(&c, REFERENCE)),
        ];
        for (what, got) in runs {
            let got = got.unwrap_or_else(|e| panic!("{}: {what}: {e}", c.name));
            assert_eq!(want.len(), got.len());
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                match (w, g) {
                    (Some(w), Some(g)) => close(&format!("{}: {what} gradient {k}", c.name), g, w),
                    (None, None) => {}
                    _ => panic!("{}: {what} gradient {k}: one backend has none", c.name),
                }
            }
        }
    }
    assert!(checked >= 75 && differenced >= 65, "{checked} differentiable cases, {differenced} differenced");
}

/// A model split across devices: the hidden layer on the reference device,
/// the head on the CPU, the loss back on the reference device.
fn split_model(x: &Tensor, w: &Tensor, b: &Tensor, t: &Tensor, placed: bool) -> Result<Tensor> {
    let on = |d: &str| if placed { Some(rivulet::device_scope(d)) } else { None };
    let h = {
        let _s = on(REFERENCE).transpose()?;
        ops::tanh(&ops::add(&ops::matmul(x, w)?, b)?)?
    };
    let y = {
        let _s = on("/cpu:0").transpose()?;
        ops::add(&ops::mul(&h, 2.0)?, 1.0)?
    };
    let _s = on(REFERENCE).transpose()?;
    ops::sum(&ops::mul(&ops::log_softmax(&y, -1)?, t)?, rivulet::Axes::All, false)
}

/// A graph placed across the CPU and the reference device, with copies both
/// ways, gives the all-CPU values, forward and backward; its plan shows the
/// copies and the steps on each device.
#[test]
fn a_graph_split_across_devices_matches_all_cpu() -> Result<()> {
    let mut rng = Rng(41);
    let (xv, wv, bv, tv) = (
        f32s(&mut rng, &[5, 4], -1.0, 1.0),
        f32s(&mut rng, &[4, 3], -1.0, 1.0),
        f32s(&mut rng, &[3], -1.0, 1.0),
        f32s(&mut rng, &[5, 3], 0.0, 1.0),
    );
    let mut results = Vec::new();
    for placed in [false, true] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [5, 4])?;
        let (w, b) = (g.constant(wv.clone())?, g.constant(bv.clone())?);
        let t = g.constant(tv.clone())?;
        let loss = split_model(&x, &w, &b, &t, placed)?;
        let dx = gradients(&[&loss], &[&x], None, Unconnected::None)?.remove(0).expect("connected");
        let s = Session::new(&g);
        let out = s.run(&[&loss, &dx], &[(&x, &xv)])?;
        if placed {
            let report = s.explain(&[&loss, &dx], &[&x], &[])?;
            let last = report.passes.last().expect("dumps");
            assert_eq!(last.pass, "placement");
            assert!(last.text.contains("CopyToDevice"), "{}", last.text);
            let profile = s.profile(&[&loss, &dx], &[(&x, &xv)], &[], 1)?;
            let on = |d: Device| profile.steps.iter().filter(|p| p.device == d).count();
            assert!(on(Device::REFERENCE) >= 5 && on(Device::CPU) >= 3, "{:?}", profile.steps);
            let copies: Vec<_> = profile.steps.iter().filter(|p| p.op == "CopyToDevice").collect();
            assert!(
                copies.iter().any(|p| p.device == Device::CPU) && copies.iter().any(|p| p.device == Device::REFERENCE)
            );
        }
        results.push(out);
    }
    for (k, (placed, all_cpu)) in results[1].iter().zip(&results[0]).enumerate() {
        close(&format!("split graph output {k}"), placed, all_cpu);
    }
    Ok(())
}

/// The same split model eagerly under a tape, and traced by `function`.
#[test]
fn eager_tapes_and_traced_functions_follow_device_scopes() -> Result<()> {
    let mut rng = Rng(42);
    let (x, w, b, t) = (
        f32s(&mut rng, &[5, 4], -1.0, 1.0),
        f32s(&mut rng, &[4, 3], -1.0, 1.0),
        f32s(&mut rng, &[3], -1.0, 1.0),
        f32s(&mut rng, &[5, 3], 0.0, 1.0),
    );
    let grad = |placed: bool| -> Result<(Tensor, Tensor)> {
        let tape = GradientTape::new();
        tape.watch(&w);
        let loss = split_model(&x, &w, &b, &t, placed)?;
        let dw = tape.gradient(&loss, &[&w])?.remove(0).expect("connected");
        Ok((loss, dw))
    };
    let (want_loss, want_dw) = grad(false)?;
    let (loss, dw) = grad(true)?;
    assert_eq!(loss.device(), Device::REFERENCE, "the loss was computed on the reference device");
    close("eager split loss", &loss, &want_loss);
    close("eager split gradient", &dw, &want_dw);
    let (w2, b2, t2) = (w.clone(), b.clone(), t.clone());
    let f = rivulet::function(move |args: &[Tensor]| Ok(vec![split_model(&args[0], &w2, &b2, &t2, true)?]));
    let traced = f.call(&[&x])?.remove(0);
    close("traced split loss", &traced, &want_loss);
    Ok(())
}

/// Training with the forward pass placed on the reference device and the
/// variables (always on the CPU) updated by the optimizer: the same weights
/// as training all on the CPU.
#[test]
fn training_with_layers_on_the_reference_device_matches_the_cpu() -> Result<()> {
    let mut rng = Rng(43);
    let (xv, yv) = (f32s(&mut rng, &[16, 4], -1.0, 1.0), f32s(&mut rng, &[16, 1], -1.0, 1.0));
    let mut finals = Vec::new();
    for placed in [false, true] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [16, 4])?;
        let w = rivulet::Variable::in_graph(&g, "w", &Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.05], [4, 1])?, true)?;
        let loss = {
            let _s = if placed { Some(rivulet::device_scope(REFERENCE)?) } else { None };
            let e = ops::sub(&ops::matmul(&x, &w.read())?, &yv)?;
            ops::mean(&ops::square(&e)?, rivulet::Axes::All, false)?
        };
        let train = rivulet::nn::Optimizer::adam(0.05).minimize(&loss, &[&w])?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        for _ in 0..5 {
            s.run_with_targets(&[], &[(&x, &xv)], &[&train])?;
        }
        finals.push(s.variable_value(&w)?);
    }
    close("weights after training", &finals[1], &finals[0]);
    Ok(())
}

/// A variable `w`, the loss `mean((x w)^2)` and a loop counting to `limit`
/// (integer scalars: placed on the CPU next to a GPU).
fn small_model(g: &Graph, x: &Tensor, limit: &Tensor) -> Result<(rivulet::Variable, Tensor, Tensor)> {
    let w = rivulet::Variable::in_graph(g, "w", &Tensor::from_slice(&[0.5f32, -0.25, 1.0], [3, 1])?, true)?;
    let loss = ops::mean(&ops::square(&ops::matmul(x, &w.read())?)?, rivulet::Axes::All, false)?;
    let count = rivulet::while_loop(
        |i: &Tensor| ops::less(i, limit),
        |i: &Tensor| ops::add(i, &Tensor::scalar(1i32)),
        ops::mul(limit, 0i32)?,
        &rivulet::WhileOptions::default(),
    )?;
    Ok((w, loss, count))
}

/// A variable made under a device scope lives on that device: the session
/// keeps its value there and updates it there (no copy to the host per
/// step), with the CPU's numbers; loop counters placed on such a device run
/// on the CPU.
#[test]
fn variables_live_and_train_on_their_device() -> Result<()> {
    let mut rng = Rng(44);
    let xv = f32s(&mut rng, &[8, 3], -1.0, 1.0);
    let mut finals = Vec::new();
    let mut devices = vec!["/cpu:0", REFERENCE];
    if !gpu_devices().is_empty() {
        devices.push("/gpu:0");
    }
    for device in devices {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [8, 3])?;
        let limit = g.placeholder("limit", DType::I32, ())?;
        let (w, loss, count) = rivulet::device(device, || small_model(&g, &x, &limit))??;
        let train = rivulet::nn::Optimizer::adam(0.1).minimize(&loss, &[&w])?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        for _ in 0..4 {
            s.run_with_targets(&[], &[(&x, &xv)], &[&train])?;
        }
        let value = s.variable_value(&w)?;
        assert_eq!(value.device(), Device::parse(device)?, "the variable's value stays on {device}");
        let steps = s.profile(&[&loss], &[(&x, &xv)], &[&train], 1)?.steps;
        let on_device: Vec<&str> =
            steps.iter().filter(|p| p.device == Device::parse(device).unwrap()).map(|p| p.op.as_str()).collect();
        assert!(on_device.iter().any(|op| op.contains("ResourceApply")), "{device}: {on_device:?}");
        assert_eq!(s.run(&[&count], &[(&limit, &Tensor::scalar(3i32))])?[0].to_scalar::<i32>()?, 3);
        finals.push(value);
    }
    close("weights trained on the reference device", &finals[1], &finals[0]);
    if let Some(gpu) = finals.get(2) {
        gpu_close("weights trained on the GPU", gpu, &finals[0]);
    }
    Ok(())
}

/// Device names as TensorFlow writes them; a device this machine lacks is an
/// error that names it and the devices there are, never a panic.
#[test]
fn device_names_and_missing_devices() {
    for (name, want) in [
        ("/cpu:0", Device::CPU),
        ("/device:CPU:0", Device::CPU),
        ("CPU:0", Device::CPU),
        ("cpu", Device::CPU),
        ("/job:localhost/replica:0/task:0/device:CPU:0", Device::CPU),
        ("/reference:0", Device::REFERENCE),
        ("/device:REFERENCE:0", Device::REFERENCE),
    ] {
        assert_eq!(Device::parse(name).unwrap(), want, "{name}");
    }
    assert_eq!(Device::CPU.to_string(), "/device:CPU:0");
    assert_eq!(Device::REFERENCE.short_name(), "/reference:0");
    for bad in ["", "/tpu:0", "/cpu:x", "gpu:-1", "/device:CPU:0:1"] {
        assert_eq!(Device::parse(bad).unwrap_err().kind(), rivulet::ErrorKind::InvalidArgument, "{bad:?}");
    }
    let gpus = gpu_devices();
    let mut want = gpus.clone();
    want.extend([Device::CPU, Device::REFERENCE]);
    assert_eq!(rivulet::devices(), want, "GPUs first, then the CPU and the reference device");
    let mut missing_ones = vec!["/device:GPU:1", "/cpu:1", "/reference:2"];
    if gpus.is_empty() {
        missing_ones.push("/gpu:0");
    }
    for missing in missing_ones {
        let e = rivulet::device(missing, || ()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&Device::parse(missing).unwrap().to_string()), "names the device: {text}");
        assert!(text.contains("/device:CPU:0") && text.contains("/device:REFERENCE:0"), "lists the devices: {text}");
        let x = Tensor::from([1.0f32, 2.0]);
        assert!(x.to_device(missing).is_err());
    }
    // A graph document that asks for a missing device loads, and says so when compiled.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2]).unwrap();
    let y = rivulet::device(REFERENCE, || ops::exp(&x)).unwrap().unwrap();
    let json = g.to_json().unwrap().replace("/device:REFERENCE:0", "/device:GPU:7");
    let loaded = Graph::from_json(&json).unwrap();
    let (lx, ly) = (loaded.tensor("x:0").unwrap(), loaded.tensor(&y.name().unwrap()).unwrap());
    let e = Session::new(&loaded).run(&[&ly], &[(&lx, &Tensor::from([0.0f32, 1.0]))]).unwrap_err();
    assert!(e.to_string().contains("/device:GPU:7") && e.to_string().contains("exp"), "{e}");
    // And round-trips a placement it can honour.
    let back = Graph::from_json(&g.to_json().unwrap()).unwrap();
    assert_eq!(back.tensor(&y.name().unwrap()).unwrap().device(), Device::REFERENCE);
}

#[test]
fn every_node_a_graph_makes_takes_the_device_scope() -> Result<()> {
    let g = Graph::new();
    let reference = Device::parse("/reference:0")?;
    let (x, c, sum) = rivulet::device("/reference:0", || -> Result<_> {
        let x = g.placeholder("x", DType::F32, [2])?;
        let c = g.constant(Tensor::from([1.0f32, 2.0]))?;
        Ok((x.clone(), c.clone(), ops::add(&x, &c)?))
    })??;
    for t in [&x, &c, &sum] {
        assert_eq!(t.device(), reference, "{}", t.name().unwrap_or_default());
    }
    let group = rivulet::device("/reference:0", || g.group(&[]))??;
    assert_eq!(g.node(group.id()).and_then(|n| n.device), Some(reference));
    // Outside the scope: no device asked for (placed on the CPU).
    assert_eq!(g.placeholder("y", DType::F32, [2])?.device(), Device::CPU);
    let out = Session::new(&g).run(&[&sum], &[(&x, &Tensor::from([3.0f32, 4.0]))])?;
    assert_eq!(out[0].to_vec::<f32>()?, vec![4.0, 6.0]);
    Ok(())
}

// ---------------------------------------------------------------------------
// The CUDA backend: the same registry on the GPU, where one is found.
// ---------------------------------------------------------------------------

/// The GPUs this process found (none on CI).
fn gpu_devices() -> Vec<Device> {
    rivulet::devices().into_iter().filter(|d| d.kind == rivulet::DeviceKind::Gpu).collect()
}

/// Whether a GPU is here; if not, say why the GPU test is skipped.
fn have_gpu(test: &str) -> bool {
    if gpu_devices().is_empty() {
        eprintln!("skipped {test}: no GPU ({})", rivulet::gpu_status());
        return false;
    }
    true
}

/// Tolerances on the GPU, per op class: integers and bools exactly; floats
/// within 1e-4 relative in f32 (library functions a few ulps apart, sums
/// and matrix products in another order: TensorFloat-32 is off for the
/// matrix), 1e-10 in f64, 1e-2 in f16/bf16.
fn gpu_close(what: &str, got: &Tensor, want: &Tensor) {
    close_within(&format!("{what} (gpu vs cpu)"), got, want, [1e-10, 1e-4, 1e-2]);
}

/// The device matrix on the GPU: every registered op eagerly and as a
/// graph placed there, each output left on the GPU, the values the CPU's.
#[test]
fn every_op_agrees_on_the_gpu_in_both_modes() {
    if !have_gpu("every_op_agrees_on_the_gpu_in_both_modes") {
        return;
    }
    rivulet::enable_tensor_float_32_execution(false);
    let gpu = "/gpu:0";
    let mut failures = Vec::new();
    let mut ran = 0;
    for c in registry() {
        let want = eager(&c, "/cpu:0").unwrap_or_else(|e| panic!("{}: cpu eager: {e}", c.name));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let got = eager(&c, gpu).unwrap_or_else(|e| panic!("gpu eager: {e}"));
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                assert_eq!(g.device(), Device::parse(gpu).unwrap(), "output {k} left the GPU");
                gpu_close(&format!("eager output {k}"), g, w);
            }
            let (out, _) = graph(&c, gpu).unwrap_or_else(|e| panic!("gpu graph: {e}"));
            for (k, (w, g)) in want.iter().zip(&out).enumerate() {
                gpu_close(&format!("graph output {k}"), g, w);
            }
        }));
        ran += 1;
        if let Err(p) = run {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!("{}: {}", c.name, msg.unwrap_or_default()));
        }
    }
    eprintln!("gpu device matrix: {ran} cases, {} failed", failures.len());
    assert!(failures.is_empty(), "{} of {ran} cases failed on the GPU:\n{}", failures.len(), failures.join("\n"));
}

/// Gradients on the GPU, by tape and by graph, match the CPU's.
#[test]
fn gradients_agree_on_the_gpu() {
    if !have_gpu("gradients_agree_on_the_gpu") {
        return;
    }
    rivulet::enable_tensor_float_32_execution(false);
    let mut failures = Vec::new();
    let mut ran = 0;
    for c in registry().into_iter().filter(|c| c.grad) {
        let want = eager_gradients(&c, "/cpu:0").unwrap_or_else(|e| panic!("{}: cpu tape: {e}", c.name));
        for (what, got) in [("gpu tape", eager_gradients(&c, "/gpu:0")), ("gpu graph", graph_gradients(&c, "/gpu:0"))] {
            ran += 1;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let got = got.unwrap_or_else(|e| panic!("{e}"));
                for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                    match (w, g) {
                        (Some(w), Some(g)) => gpu_close(&format!("gradient {k}"), g, w),
                        (None, None) => {}
                        _ => panic!("gradient {k}: one backend has none"),
                    }
                }
            }));
            if let Err(p) = run {
                let msg =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                failures.push(format!("{} ({what}): {}", c.name, msg.unwrap_or_default()));
            }
        }
    }
    eprintln!("gpu gradients: {ran} runs, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {ran} gradient runs failed on the GPU:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Larger shapes than the registry's: the two-pass reductions (one long
/// row, long columns), a matrix product through cuBLAS with and without
/// TensorFloat-32, and an integer division by zero reported as an error.
#[test]
fn gpu_kernels_at_scale_match_float64() -> Result<()> {
    if !have_gpu("gpu_kernels_at_scale_match_float64") {
        return Ok(());
    }
    let mut rng = Rng(77);
    let n = 1 << 20;
    let x = f32s(&mut rng, &[n], -1.0, 1.0);
    let host: Vec<f32> = x.to_vec()?;
    let exact: f64 = host.iter().map(|&v| v as f64).sum();
    let g = x.to_device("/gpu:0")?;
    let s: f32 = ops::sum(&g, rivulet::Axes::All, false)?.to_scalar()?;
    assert!((s as f64 - exact).abs() <= 1e-5 * n as f64, "sum of 2^20: {s} vs {exact}");
    let m = ops::max(&g, rivulet::Axes::All, false)?.to_scalar::<f32>()?;
    assert_eq!(m, host.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    // Columns: 4096 x 256 summed over axis 0.
    let y = ops::reshape(&g, &[4096, 256])?;
    let cols: Vec<f32> = ops::sum(&y, 0, false)?.to_vec()?;
    for j in [0usize, 17, 255] {
        let e: f64 = (0..4096).map(|i| host[i * 256 + j] as f64).sum();
        assert!((cols[j] as f64 - e).abs() < 1e-3, "column {j}: {} vs {e}", cols[j]);
    }
    // Matrix products, 256 x 512 by 512 x 128, against f64 on the host.
    let (a, b) = (f32s(&mut rng, &[256, 512], -1.0, 1.0), f32s(&mut rng, &[512, 128], -1.0, 1.0));
    let (ah, bh): (Vec<f32>, Vec<f32>) = (a.to_vec()?, b.to_vec()?);
    let exact = |i: usize, j: usize| (0..512).map(|p| ah[i * 512 + p] as f64 * bh[p * 128 + j] as f64).sum::<f64>();
    let (ag, bg) = (a.to_device("/gpu:0")?, b.to_device("/gpu:0")?);
    let mut worst = [0.0f64; 2];
    for (slot, tf32) in [(0, false), (1, true)] {
        rivulet::enable_tensor_float_32_execution(tf32);
        let c: Vec<f32> = ops::matmul(&ag, &bg)?.to_vec()?;
        for i in (0..256).step_by(37) {
            for j in (0..128).step_by(11) {
                worst[slot] = worst[slot].max((c[i * 128 + j] as f64 - exact(i, j)).abs());
            }
        }
    }
    rivulet::enable_tensor_float_32_execution(false);
    assert!(worst[0] < 1e-4, "strict f32 matmul error {}", worst[0]);
    assert!(worst[1] < 5e-2 && worst[1] > worst[0], "TensorFloat-32 error {} (strict {})", worst[1], worst[0]);
    // Transposed operands.
    let ct: Vec<f32> = ops::matmul_t(&bg, &ag, true, true)?.to_vec()?;
    assert!((ct[5 * 256 + 3] as f64 - exact(3, 5)).abs() < 1e-4);
    // Integer division by zero is an error, as on the CPU.
    let i = Tensor::from([4i32, 5, 6]).to_device("/gpu:0")?;
    let z = Tensor::from([1i32, 0, 2]).to_device("/gpu:0")?;
    let e = ops::floor_div(&i, &z).and_then(|t| t.to_vec::<i32>()).unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
    // And the device is usable afterwards.
    assert_eq!(ops::add(&i, &i)?.to_vec::<i32>()?, vec![8, 10, 12]);
    Ok(())
}

/// The B7 heat equation as one graph on the GPU (a `while_loop` whose step
/// is one generated kernel with a pad, its counter on the host): the CPU's
/// numbers after 50 steps; prints the step profile (where the time goes).
#[test]
fn gpu_heat_equation_loop_matches_the_cpu() -> Result<()> {
    if !have_gpu("gpu_heat_equation_loop_matches_the_cpu") {
        return Ok(());
    }
    let n = 1024usize;
    let mut rng = Rng(45);
    let u0 = f32s(&mut rng, &[n, n], -1.0, 1.0);
    let mut results = Vec::new();
    for device in ["/cpu:0", "/gpu:0"] {
        let g = Graph::new();
        let pu = g.placeholder("u", DType::F32, [n, n])?;
        let steps = g.placeholder("steps", DType::I32, ())?;
        let u = rivulet::device(device, || -> Result<Tensor> {
            let (_, u) = rivulet::while_loop(
                |(i, _): &(Tensor, Tensor)| ops::less(i, &steps),
                |(i, u): &(Tensor, Tensor)| {
                    let m = (n - 2) as i64;
                    let at = |a: usize, b: usize| ops::slice(u, &[a, b], &[m, m]);
                    let sum = ops::add(&ops::add(&ops::add(&at(0, 1)?, &at(2, 1)?)?, &at(1, 0)?)?, &at(1, 2)?)?;
                    let lap = ops::sub(&sum, &ops::mul(&at(1, 1)?, 4.0)?)?;
                    let pad = ops::pad(&lap, &[(1, 1), (1, 1)], ops::PadMode::Constant, 0.0)?;
                    Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(u, &ops::mul(&pad, 0.2)?)?))
                },
                (ops::mul(&steps, 0i32)?, pu.clone()),
                &rivulet::WhileOptions::default(),
            )?;
            Ok(u)
        })??;
        let s = Session::new(&g);
        let feeds = [(&pu, &u0), (&steps, &Tensor::scalar(50i32))];
        let out = s.run(&[&u], &feeds)?.remove(0);
        assert_eq!(out.device(), Device::parse(device)?);
        if device == "/gpu:0" {
            let p = s.profile(&[&u], &feeds, &[], 3)?;
            for st in &p.steps {
                eprintln!(
                    "gpu heat profile: {:<32} {:<18} {:<16} {:9.1} us",
                    st.node,
                    st.op,
                    st.device,
                    st.seconds * 1e6
                );
            }
        }
        results.push(out);
    }
    gpu_close("heat equation after 50 steps", &results[1], &results[0]);
    Ok(())
}

/// The fused convolution (bias and activation in the kernel's epilogue) and
/// batch-norm folding give the CPU's numbers on the reference device, where
/// the fused op runs decomposed.
#[test]
fn fused_and_folded_convolutions_on_the_reference_device_match_the_cpu() -> Result<()> {
    let mut rng = Rng(45);
    let xv = f32s(&mut rng, &[2, 6, 5, 3], -1.0, 1.0);
    let wv = f32s(&mut rng, &[3, 3, 3, 4], -0.5, 0.5);
    let (sv, bv) = (f32s(&mut rng, &[4], 0.5, 1.5), f32s(&mut rng, &[4], -0.5, 0.5));
    let mut outs = Vec::new();
    for placed in [false, true] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [2, 6, 5, 3])?;
        let y = {
            let _s = if placed { Some(rivulet::device_scope(REFERENCE)?) } else { None };
            let conv =
                ops::convolution(&x, &ops::constant(&g, wv.clone())?, &ops::ConvOptions::new(ops::Padding::Same))?;
            let scaled = ops::mul(&conv, &ops::constant(&g, sv.clone())?)?;
            ops::relu(&ops::add(&scaled, &ops::constant(&g, bv.clone())?)?)?
        };
        let options = rivulet::SessionOptions { passes: rivulet::PassOptions::inference(), ..Default::default() };
        let s = Session::with_options(&g, options);
        let report = s.explain(&[&y], &[&x], &[])?;
        assert!(report.fused.iter().any(|(_, p)| p.trim() == "conv + bias + relu"), "{:?}", report.fused);
        outs.push(s.run(&[&y], &[(&x, &xv)])?.remove(0));
    }
    close("folded, fused convolution", &outs[1], &outs[0]);
    Ok(())
}

// ---------------------------------------------------------------------------
// Automatic placement: the default device.
// ---------------------------------------------------------------------------

/// Without a scope, ops go to the default device: the first GPU where one
/// is found (TensorFlow's automatic placement), else the CPU. The rule is
/// checked on every machine by a child process of this test binary whose
/// `RIVULET_DEFAULT_DEVICE` makes the reference device the default (a GPU
/// stand-in); the checks are the ignored test below.
#[test]
fn automatic_placement_follows_the_default_device() {
    let want = gpu_devices().first().copied().unwrap_or(Device::CPU);
    if std::env::var_os("RIVULET_DEFAULT_DEVICE").is_none() {
        assert_eq!(rivulet::default_device(), want, "the first GPU, else the CPU");
    }
    let e = rivulet::set_default_device(Some("/device:GPU:7")).unwrap_err();
    assert!(e.to_string().contains("/device:GPU:7") && e.to_string().contains("/device:CPU:0"), "{e}");
    assert!(rivulet::set_default_device(Some("/tpu:0")).is_err());
    let test = "devices::placement_with_the_reference_device_as_default";
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .env("RIVULET_DEFAULT_DEVICE", "/reference:0")
        .args(["--ignored", "--exact", test, "--test-threads=1"])
        .output()
        .expect("the test binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{test} in a child process:\n{text}");
}

#[test]
#[ignore = "run by automatic_placement_follows_the_default_device, in a process whose default device is the reference device"]
fn placement_with_the_reference_device_as_default() -> Result<()> {
    assert_eq!(rivulet::default_device(), Device::REFERENCE, "RIVULET_DEFAULT_DEVICE is honoured");
    let mut rng = Rng(45);
    let xv = f32s(&mut rng, &[8, 3], -1.0, 1.0);
    let on_cpu = |f: &dyn Fn() -> Result<Tensor>| rivulet::device("/cpu:0", f)?;

    // Eagerly: host values go to the default device, with the CPU's numbers.
    let y = ops::exp(&xv)?;
    assert_eq!(y.device(), Device::REFERENCE);
    close("exp on the default device", &y, &on_cpu(&|| ops::exp(&xv))?);
    let r = ops::random_normal(Ctx::Eager, [4], 0.0, 1.0, DType::F32, Some(3))?;
    assert_eq!(r.device(), Device::REFERENCE, "ops without inputs too");
    // ... except integer scalars (loop counters), and ops a device runs on host copies.
    let i = ops::add(&Tensor::scalar(1i32), &Tensor::scalar(2i32))?;
    assert_eq!((i.device(), i.to_scalar::<i32>()?), (Device::CPU, 3));
    let spd = Tensor::from_slice(&[4.0f32, 2.0, 2.0, 3.0], [2, 2])?;
    assert_eq!(ops::cholesky(&spd)?.device(), Device::CPU);
    assert_eq!(ops::complex(&xv, &xv)?.device(), Device::CPU);
    // A value already on a device stays there; a scope wins.
    assert_eq!(ops::neg(&y)?.device(), Device::REFERENCE);
    assert_eq!(on_cpu(&|| ops::exp(&xv))?.device(), Device::CPU);
    // Eager variables of host values live on the default device, or the scope's.
    let v = rivulet::Variable::new("v", &Tensor::from([1.0f32, 2.0]), true)?;
    assert_eq!(v.read().device(), Device::REFERENCE);
    let c = rivulet::device("/cpu:0", || rivulet::Variable::new("c", &Tensor::from([1.0f32]), true))??;
    assert_eq!(c.read().device(), Device::CPU);
    v.assign(&Tensor::from([3.0f32, 4.0]))?;
    assert_eq!(v.read().device(), Device::REFERENCE, "assigning a host value keeps the variable's device");
    assert_eq!(v.read().to_vec::<f32>()?, vec![3.0, 4.0]);
    let steps = rivulet::Variable::new("steps", &Tensor::scalar(0i64), false)?;
    assert_eq!(steps.read().device(), Device::CPU, "an integer scalar counter stays on the host");

    // Graph variables: a restored (host) value lands on the variable's
    // device; an integer counter lives on the CPU.
    let g = Graph::new();
    let w = rivulet::Variable::in_graph(&g, "w", &Tensor::from([1.0f32, 2.0]), true)?;
    let n = rivulet::Variable::in_graph(&g, "n", &Tensor::scalar(0i64), false)?;
    let bump = n.assign_add(&Tensor::scalar(1i64))?;
    let s = Session::new(&g);
    s.run_targets(&[&g.global_variables_initializer()?])?;
    s.run(&[&bump], &[])?;
    assert_eq!(s.variable_value(&w)?.device(), Device::REFERENCE);
    assert_eq!((s.variable_value(&n)?.device(), s.variable_value(&n)?.to_scalar::<i64>()?), (Device::CPU, 1));
    s.set_variable_value(&w, &Tensor::from([5.0f32, 6.0]))?;
    let restored = s.variable_value(&w)?;
    assert_eq!((restored.device(), restored.to_vec::<f32>()?), (Device::REFERENCE, vec![5.0, 6.0]));

    // In a graph: unscoped nodes, variables and their updates on the default
    // device; the loop counter on the CPU; the same training as on the CPU.
    let train = |scope: Option<&str>| -> Result<(Tensor, Vec<rivulet::StepProfile>, i32)> {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [8, 3])?;
        let limit = g.placeholder("limit", DType::I32, ())?;
        let (w, loss, count) = match scope {
            Some(d) => rivulet::device(d, || small_model(&g, &x, &limit))??,
            None => small_model(&g, &x, &limit)?,
        };
        let train = rivulet::nn::Optimizer::adam(0.1).minimize(&loss, &[&w])?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        for _ in 0..4 {
            s.run_with_targets(&[], &[(&x, &xv)], &[&train])?;
        }
        let steps = s.profile(&[&loss], &[(&x, &xv)], &[], 1)?.steps;
        let n = s.run(&[&count], &[(&limit, &Tensor::scalar(3i32))])?[0].to_scalar::<i32>()?;
        Ok((s.variable_value(&w)?, steps, n))
    };
    let (w, steps, n) = train(None)?;
    assert_eq!(w.device(), Device::REFERENCE, "the variable lives on the default device");
    assert_eq!(n, 3);
    let matmuls: Vec<Device> = steps.iter().filter(|p| p.op.contains("MatMul")).map(|p| p.device).collect();
    assert!(!matmuls.is_empty() && matmuls.iter().all(|&d| d == Device::REFERENCE), "{steps:?}");
    let (cpu_w, cpu_steps, _) = train(Some("/cpu:0"))?;
    assert!(cpu_steps.iter().all(|p| p.device == Device::CPU), "a scope wins: {cpu_steps:?}");
    close("weights trained on the default device", &w, &cpu_w);

    // Changing the default at run time; `None` goes back to the automatic choice.
    rivulet::set_default_device(Some("/cpu:0"))?;
    assert_eq!(ops::exp(&xv)?.device(), Device::CPU);
    rivulet::set_default_device(None)?;
    assert_eq!(rivulet::default_device(), Device::REFERENCE, "the environment's choice again");
    Ok(())
}

/// What a dropout test draws with: the dropped input, the ops that count
/// its calls (run as targets with the training op), and its state
/// variable with the value each session starts it from.
struct Dropping {
    dropped: Tensor,
    counters: Vec<rivulet::Operation>,
    state: (rivulet::Variable, Tensor),
}

/// One session's six steps: the losses, the masks (the dropped inputs),
/// the weights and the state after.
type DropoutSteps = (Vec<f32>, Vec<Vec<f32>>, Vec<f32>, Vec<i64>);

/// Six SGD steps of `softmax_ce(dropped(x) · w)` on `/gpu:0`, in a session
/// that records and replays the step as a CUDA graph (checked to be
/// replaying by the fourth step) and in one that runs it step by step.
fn dropout_steps_replayed_and_step_by_step(
    seed: u64,
    drop: impl Fn(&Graph, &Tensor) -> Result<Dropping>,
) -> Result<Vec<DropoutSteps>> {
    rivulet::enable_tensor_float_32_execution(false);
    let mut rng = Rng(seed);
    let w0 = f32s(&mut rng, &[16, 4], -0.3, 0.3);
    let xb = f32s(&mut rng, &[8, 16], -1.0, 1.0);
    let yb = Tensor::from_slice(&[0i32, 1, 2, 3, 3, 2, 1, 0], [8])?;
    let mut runs = Vec::new();
    for device_graphs in [true, false] {
        let g = Graph::new();
        let (x, y, loss, train, v, d) = rivulet::device("/gpu:0", || -> Result<_> {
            let x = g.placeholder("x", DType::F32, [8, 16])?;
            let y = g.placeholder("y", DType::I32, [8])?;
            let v = rivulet::Variable::in_graph(&g, "w", &w0, true)?;
            let d = drop(&g, &x)?;
            // The weights repeated down the dropped input's width.
            let reps = d.dropped.shape().dim(1).unwrap_or(16) / 16;
            let w = ops::concat(&vec![&v.read(); reps], 0)?;
            let logits = ops::matmul(&d.dropped, &w)?;
            let loss =
                ops::mean(&ops::sparse_softmax_cross_entropy_with_logits(&y, &logits)?, rivulet::Axes::All, false)?;
            let train = rivulet::nn::Optimizer::sgd(0.1).minimize(&loss, &[&v])?;
            Ok((x, y, loss, train, v, d))
        })??;
        let mut targets: Vec<&rivulet::Operation> = d.counters.iter().collect();
        targets.push(&train);
        let s = Session::with_options(&g, rivulet::SessionOptions { device_graphs, ..Default::default() });
        s.run_targets(&[&g.global_variables_initializer()?])?;
        s.set_variable_value(&d.state.0, &d.state.1)?;
        let (mut losses, mut masks) = (Vec::new(), Vec::new());
        for k in 0..6 {
            let out = s.run_with_targets(&[&loss, &d.dropped], &[(&x, &xb), (&y, &yb)], &targets)?;
            losses.push(out[0].to_scalar::<f32>()?);
            masks.push(out[1].to_vec::<f32>()?);
            if k == 3 && device_graphs && rivulet::graph_capture_enabled() {
                let status = s.graph_status(&[&loss, &d.dropped], &[&x, &y], &targets)?;
                assert_eq!(status, rivulet::GraphStatus::Replaying);
            }
        }
        assert!(masks.windows(2).all(|w| w[0] != w[1]), "each step draws a new mask");
        let (weights, state) = (s.variable_value(&v)?.to_vec::<f32>()?, s.variable_value(&d.state.0)?.to_vec::<i64>()?);
        runs.push((losses, masks, weights, state));
    }
    rivulet::enable_tensor_float_32_execution(true);
    Ok(runs)
}

/// Dropout in a recorded step: each replay reads its stream from the
/// device, and a draw seeded by a step counter (as the `Dropout` layer
/// draws) reads the counter there, so the masks, losses and weights are
/// those of runs step by step.
#[test]
fn a_replayed_step_with_dropout_draws_what_runs_step_by_step_draw() -> Result<()> {
    if !have_gpu("a_replayed_step_with_dropout_draws_what_runs_step_by_step_draw") {
        return Ok(());
    }
    let start = 0x2545_F491_4F6C_DD1Di64;
    let runs = dropout_steps_replayed_and_step_by_step(9, |g, x| {
        let counter = rivulet::Variable::in_graph(g, "counter", &Tensor::scalar(0i64), false)?;
        let bumped = counter.assign_add(&Tensor::scalar(1i64))?;
        let keep = ops::greater_equal(&ops::random_uniform_like_offset(x, 0.0, 1.0, 13, &bumped)?, 0.5)?;
        let by_counter = ops::mul(x, &ops::cast(&keep, DType::F32)?)?;
        Ok(Dropping {
            dropped: ops::concat(&[&ops::dropout(x, 0.5, Some(11))?, &by_counter], 1)?,
            counters: Vec::new(),
            state: (counter, Tensor::scalar(start)),
        })
    })?;
    assert_eq!(runs[0].3, vec![start + 6], "one count per step");
    assert_eq!(runs[0], runs[1], "replayed and step by step");
    Ok(())
}

/// The `Dropout` layer in a graph training step on the GPU: the step is
/// recorded (its mask's offset is computed on the device), and the
/// replays draw the masks, losses and weights of runs step by step.
#[test]
fn a_training_step_with_a_dropout_layer_is_replayed_and_draws_what_runs_step_by_step_draw() -> Result<()> {
    use rivulet::nn::{Dropout, Layer};
    if !have_gpu("a_training_step_with_a_dropout_layer_is_replayed_and_draws_what_runs_step_by_step_draw") {
        return Ok(());
    }
    let runs = dropout_steps_replayed_and_step_by_step(13, |_, x| {
        let layer = Dropout::new(0.5)?;
        let dropped = layer.call(x, true)?;
        // The same random state in both sessions (each layer draws its own seed).
        Ok(Dropping {
            dropped,
            counters: layer.take_updates(),
            state: (layer.variables()[0].clone(), Tensor::from([77i64, 0])),
        })
    })?;
    assert_eq!(runs[0].3, vec![77, 6], "one call counted per step");
    assert_eq!(runs[0], runs[1], "replayed and step by step");
    Ok(())
}

/// A training step replayed as a CUDA graph gives the bits of the same
/// session run step by step, with a fresh batch each run (the graph's
/// inputs refilled); fetched losses stay what they were after later
/// replays; a weight read and held is not overwritten (the run goes step
/// by step, and the graph is recorded again after); a variable fetched by
/// a request that only reads it is copied out; and a label out of range is
/// reported after the replay.
#[test]
fn a_replayed_training_step_matches_runs_step_by_step() -> Result<()> {
    if !have_gpu("a_replayed_training_step_matches_runs_step_by_step") {
        return Ok(());
    }
    rivulet::enable_tensor_float_32_execution(false);
    let mut rng = Rng(5);
    let (w1, w2) = (f32s(&mut rng, &[32, 16], -0.3, 0.3), f32s(&mut rng, &[16, 4], -0.3, 0.3));
    let batches: Vec<(Tensor, Tensor)> = (0..8)
        .map(|k| {
            (
                f32s(&mut rng, &[8, 32], -1.0, 1.0),
                Tensor::from_slice(&[0i32, 1, 2, 3, 0, 1, 2, 3].map(|i| (i + k) % 4), [8]),
            )
        })
        .map(|(x, y)| y.map(|y| (x, y)))
        .collect::<Result<_>>()?;
    let mut runs = Vec::new();
    for device_graphs in [true, false] {
        let g = Graph::new();
        let (x, y, loss, train, v1, v2) = rivulet::device("/gpu:0", || -> Result<_> {
            let x = g.placeholder("x", DType::F32, [8, 32])?;
            let y = g.placeholder("y", DType::I32, [8])?;
            let v1 = rivulet::Variable::in_graph(&g, "w1", &w1, true)?;
            let v2 = rivulet::Variable::in_graph(&g, "w2", &w2, true)?;
            let h = ops::relu(&ops::matmul(&x, &v1.read())?)?;
            let logits = ops::matmul(&h, &v2.read())?;
            let loss =
                ops::mean(&ops::sparse_softmax_cross_entropy_with_logits(&y, &logits)?, rivulet::Axes::All, false)?;
            let train = rivulet::nn::Optimizer::adam(0.01).minimize(&loss, &[&v1, &v2])?;
            Ok((x, y, loss, train, v1, v2))
        })??;
        let s = Session::with_options(&g, rivulet::SessionOptions { device_graphs, ..Default::default() });
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let (mut fetched, mut at_once, mut held) = (Vec::new(), Vec::new(), None);
        for (k, (xb, yb)) in batches.iter().enumerate() {
            let out = s.run_with_targets(&[&loss], &[(&x, xb), (&y, yb)], &[&train])?;
            at_once.push(out[0].to_scalar::<f32>()?);
            fetched.push(out[0].clone());
            if k == 3 && device_graphs && rivulet::graph_capture_enabled() {
                assert_eq!(s.graph_status(&[&loss], &[&x, &y], &[&train])?, rivulet::GraphStatus::Replaying);
            }
            if k == 4 {
                let w = s.variable_value(&v1)?;
                let then = w.to_vec::<f32>()?;
                held = Some((w, then));
            }
        }
        let later: Vec<f32> = fetched.iter().map(|t| t.to_scalar::<f32>()).collect::<Result<_>>()?;
        assert_eq!(later, at_once, "fetched losses stay what they were");
        let (w, then) = held.expect("held");
        assert_eq!(w.to_vec::<f32>()?, then, "a held weight is not overwritten");
        if device_graphs && rivulet::graph_capture_enabled() {
            assert_eq!(
                s.graph_status(&[&loss], &[&x, &y], &[&train])?,
                rivulet::GraphStatus::Replaying,
                "recorded again after the held weight moved the variable"
            );
        }
        // A request that only reads a variable: its replay copies the value out.
        let read = v2.read();
        for _ in 0..3 {
            let got = s.run(&[&read], &[])?;
            assert_eq!(got[0].to_vec::<f32>()?, s.variable_value(&v2)?.to_vec::<f32>()?);
        }
        runs.push((at_once, s.variable_value(&v1)?.to_vec::<f32>()?, s.variable_value(&v2)?.to_vec::<f32>()?));
        let bad = Tensor::from_slice(&[9i32; 8], [8])?;
        let e = s.run_with_targets(&[&loss], &[(&x, &batches[0].0), (&y, &bad)], &[&train]);
        assert!(e.is_err_and(|e| e.to_string().contains("out of range")), "a bad label is an error");
    }
    assert_eq!(runs[0], runs[1], "replays give the bits of runs step by step");
    Ok(())
}

/// A `while_loop` on the GPU whose iterations are replayed as a recorded
/// graph (the loop counter and condition on the host, the stencil on the
/// device): the bits of the same loop run step by step, and the CPU's
/// numbers within the GPU's tolerance.
#[test]
fn a_replayed_loop_body_matches_the_loop_run_step_by_step() -> Result<()> {
    if !have_gpu("a_replayed_loop_body_matches_the_loop_run_step_by_step") {
        return Ok(());
    }
    let mut rng = Rng(11);
    let u0 = f32s(&mut rng, &[64, 48], -1.0, 1.0);
    let heat = |u: &Tensor| -> Result<Tensor> {
        let at = |i: usize, j: usize| ops::slice(u, &[i, j], &[62, 46]);
        let sum = ops::add(&ops::add(&at(0, 1)?, &at(2, 1)?)?, &ops::add(&at(1, 0)?, &at(1, 2)?)?)?;
        let lap = ops::sub(&sum, &ops::mul(&at(1, 1)?, 4.0)?)?;
        ops::add(u, &ops::mul(&ops::pad(&lap, &[(1, 1), (1, 1)], PadMode::Constant, 0.0)?, 0.2)?)
    };
    let mut results = Vec::new();
    for (device, device_graphs) in [("/gpu:0", true), ("/gpu:0", false), ("/cpu:0", false)] {
        let g = Graph::new();
        let (pu, u) = rivulet::device(device, || -> Result<(Tensor, Tensor)> {
            let pu = g.placeholder("u", DType::F32, [64, 48])?;
            let (_, u) = rivulet::while_loop(
                |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(30i32)),
                |(i, u): &(Tensor, Tensor)| Ok((ops::add(i, &Tensor::scalar(1i32))?, heat(u)?)),
                (Tensor::scalar(0i32), pu.clone()),
                &rivulet::WhileOptions::default(),
            )?;
            Ok((pu, u))
        })??;
        let s = Session::with_options(&g, rivulet::SessionOptions { device_graphs, ..Default::default() });
        // Twice: the second call replays from its first iteration on.
        let first = s.run(&[&u], &[(&pu, &u0)])?.remove(0);
        let second = s.run(&[&u], &[(&pu, &u0)])?.remove(0);
        assert_eq!(first.to_vec::<f32>()?, second.to_vec::<f32>()?, "{device} {device_graphs}: runs agree");
        results.push(second);
    }
    assert_eq!(results[0].to_vec::<f32>()?, results[1].to_vec::<f32>()?, "replayed iterations give the same bits");
    gpu_close("30 heat steps", &results[0], &results[2]);
    Ok(())
}
