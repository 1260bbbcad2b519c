//! Elementwise ops (`rivulet::ops::elementwise`) checked against independent
//! references: unary math against float64 references (std math, plus an erf
//! written here), binary arithmetic and comparisons against scalar Rust
//! arithmetic (i128 for integers, with explicit wrapping), NumPy broadcasting
//! against index-computed references, views against contiguous copies,
//! `select`, `cast` between every pair of dtypes, `clip_by_value`, the
//! operator overloads, large (parallel) inputs, and property tests.

use crate::common::*;

use half::{bf16, f16};
use proptest::prelude::*;
use rivulet::ops::{self, BinaryOp, SliceItem, UnaryOp};
use rivulet::{DType, ErrorKind, Tensor};
use std::f64::consts::{PI, SQRT_2};

// ---------------------------------------------------------------------------
// Helpers: building tensors, reading them back, comparing.
// ---------------------------------------------------------------------------

/// A tensor of `dtype` holding `vals` converted to it (floats rounded to
/// nearest, integers by `as`, bools as `!= 0`).
fn tensor_of(vals: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    let s = shape.to_vec();
    match dtype {
        DType::F32 => Tensor::from_vec(vals.iter().map(|&v| v as f32).collect::<Vec<_>>(), s),
        DType::F64 => Tensor::from_vec(vals.to_vec(), s),
        DType::F16 => Tensor::from_vec(vals.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>(), s),
        DType::BF16 => Tensor::from_vec(vals.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>(), s),
        DType::I32 => Tensor::from_vec(vals.iter().map(|&v| v as i32).collect::<Vec<_>>(), s),
        DType::I64 => Tensor::from_vec(vals.iter().map(|&v| v as i64).collect::<Vec<_>>(), s),
        DType::U8 => Tensor::from_vec(vals.iter().map(|&v| v as u8).collect::<Vec<_>>(), s),
        DType::I8 => Tensor::from_vec(vals.iter().map(|&v| v as i8).collect::<Vec<_>>(), s),
        DType::I16 => Tensor::from_vec(vals.iter().map(|&v| v as i16).collect::<Vec<_>>(), s),
        DType::U16 => Tensor::from_vec(vals.iter().map(|&v| v as u16).collect::<Vec<_>>(), s),
        DType::U32 => Tensor::from_vec(vals.iter().map(|&v| v as u32).collect::<Vec<_>>(), s),
        DType::U64 => Tensor::from_vec(vals.iter().map(|&v| v as u64).collect::<Vec<_>>(), s),
        DType::Bool => Tensor::from_vec(vals.iter().map(|&v| v != 0.0).collect::<Vec<_>>(), s),
        DType::C64 => {
            Tensor::from_vec(vals.iter().map(|&v| rivulet::Complex::<f32>::new(v as f32, 0.0)).collect::<Vec<_>>(), s)
        }
        DType::C128 => {
            Tensor::from_vec(vals.iter().map(|&v| rivulet::Complex::<f64>::new(v, 0.0)).collect::<Vec<_>>(), s)
        }
    }
    .unwrap()
}

/// An integer tensor of `dtype` holding `vals` (which must fit).
fn int_tensor(vals: &[i128], shape: &[usize], dtype: DType) -> Tensor {
    let s = shape.to_vec();
    match dtype {
        DType::I32 => Tensor::from_vec(vals.iter().map(|&v| i32::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::I64 => Tensor::from_vec(vals.iter().map(|&v| i64::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::U8 => Tensor::from_vec(vals.iter().map(|&v| u8::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::I8 => Tensor::from_vec(vals.iter().map(|&v| i8::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::I16 => Tensor::from_vec(vals.iter().map(|&v| i16::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::U16 => Tensor::from_vec(vals.iter().map(|&v| u16::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::U32 => Tensor::from_vec(vals.iter().map(|&v| u32::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        DType::U64 => Tensor::from_vec(vals.iter().map(|&v| u64::try_from(v).unwrap()).collect::<Vec<_>>(), s),
        other => panic!("int_tensor of {other}"),
    }
    .unwrap()
}

fn bools(t: &Tensor) -> Vec<bool> {
    t.to_vec::<bool>().unwrap()
}

/// The elements as bit patterns.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t.to_vec::<f32>().unwrap().into_iter().map(|v| u64::from(v.to_bits())).collect(),
        DType::F64 => t.to_vec::<f64>().unwrap().into_iter().map(f64::to_bits).collect(),
        DType::F16 => t.to_vec::<f16>().unwrap().into_iter().map(|v| u64::from(v.to_bits())).collect(),
        DType::BF16 => t.to_vec::<bf16>().unwrap().into_iter().map(|v| u64::from(v.to_bits())).collect(),
        DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(|v| u64::from(v as u32)).collect(),
        DType::I64 => t.to_vec::<i64>().unwrap().into_iter().map(|v| v as u64).collect(),
        DType::U8 => t.to_vec::<u8>().unwrap().into_iter().map(u64::from).collect(),
        DType::I8 => t.to_vec::<i8>().unwrap().into_iter().map(|v| u64::from(v as u8)).collect(),
        DType::I16 => t.to_vec::<i16>().unwrap().into_iter().map(|v| u64::from(v as u16)).collect(),
        DType::U16 => t.to_vec::<u16>().unwrap().into_iter().map(u64::from).collect(),
        DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(u64::from).collect(),
        DType::U64 => t.to_vec::<u64>().unwrap(),
        DType::Bool => t.to_vec::<bool>().unwrap().into_iter().map(u64::from).collect(),
        DType::C64 => t
            .to_vec::<rivulet::Complex<f32>>()
            .unwrap()
            .into_iter()
            .flat_map(|z| [u64::from(z.re.to_bits()), u64::from(z.im.to_bits())])
            .collect(),
        DType::C128 => t
            .to_vec::<rivulet::Complex<f64>>()
            .unwrap()
            .into_iter()
            .flat_map(|z| [z.re.to_bits(), z.im.to_bits()])
            .collect(),
    }
}

/// Bit patterns with every NaN replaced by one marker (NaN payloads are not
/// specified; everything else must match bit for bit).
fn bits_nan_canonical(t: &Tensor) -> Vec<u64> {
    let nan = u64::MAX;
    match t.dtype() {
        DType::F32 => {
            t.to_vec::<f32>().unwrap().into_iter().map(|v| if v.is_nan() { nan } else { v.to_bits().into() }).collect()
        }
        DType::F64 => {
            t.to_vec::<f64>().unwrap().into_iter().map(|v| if v.is_nan() { nan } else { v.to_bits() }).collect()
        }
        DType::F16 => {
            t.to_vec::<f16>().unwrap().into_iter().map(|v| if v.is_nan() { nan } else { v.to_bits().into() }).collect()
        }
        DType::BF16 => {
            t.to_vec::<bf16>().unwrap().into_iter().map(|v| if v.is_nan() { nan } else { v.to_bits().into() }).collect()
        }
        _ => bits(t),
    }
}

/// Same dtype, same shape, same elements (NaNs compare equal to NaNs).
#[track_caller]
fn assert_same(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (bits_nan_canonical(got), bits_nan_canonical(want));
    if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
        panic!("{what}: element {i} differs: got {} want {} ({} elements)", values(got)[i], values(want)[i], g.len());
    }
}

/// Concatenate the elements of 1-D tensors of one dtype into one 1-D tensor.
fn concat_flat(parts: &[Tensor]) -> Tensor {
    let dtype = parts[0].dtype();
    let n: usize = parts.iter().map(|p| p.numel().unwrap()).sum();
    macro_rules! join {
        ($t:ty) => {{
            let mut v: Vec<$t> = Vec::with_capacity(n);
            for p in parts {
                v.extend(p.to_vec::<$t>().unwrap());
            }
            Tensor::from_vec(v, [n]).unwrap()
        }};
    }
    match dtype {
        DType::F32 => join!(f32),
        DType::F64 => join!(f64),
        DType::F16 => join!(f16),
        DType::BF16 => join!(bf16),
        DType::I32 => join!(i32),
        DType::I64 => join!(i64),
        DType::U8 => join!(u8),
        DType::I8 => join!(i8),
        DType::I16 => join!(i16),
        DType::U16 => join!(u16),
        DType::U32 => join!(u32),
        DType::U64 => join!(u64),
        DType::Bool => join!(bool),
        DType::C64 => join!(rivulet::Complex<f32>),
        DType::C128 => join!(rivulet::Complex<f64>),
    }
}

/// Deterministic pseudo-random numbers (64-bit LCG, top 53 bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn err_kind(r: rivulet::Result<Tensor>) -> ErrorKind {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {} ({})", t.shape(), t.dtype()),
        Err(e) => e.kind(),
    }
}

/// Flat position in an input of `shape` that NumPy broadcasting reads for
/// output index `out_idx` (trailing alignment, size-1 dimensions repeat).
fn broadcast_source(out_idx: &[usize], shape: &[usize]) -> usize {
    let lead = out_idx.len() - shape.len();
    let mut flat = 0;
    for (d, &n) in shape.iter().enumerate() {
        let i = if n == 1 { 0 } else { out_idx[lead + d] };
        flat = flat * n + i;
    }
    flat
}

/// NumPy's broadcast shape (None when incompatible).
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Float64 references.
// ---------------------------------------------------------------------------

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// erf by its everywhere-convergent series with positive terms:
/// erf x = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (1*3*...*(2n+1)), for x >= 0.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut term, mut sum, mut n) = (x, x, 0u32);
    while term > sum * 1e-18 {
        n += 1;
        term *= 2.0 * x2 / f64::from(2 * n + 1);
        sum += term;
    }
    2.0 / PI.sqrt() * (-x2).exp() * sum
}

/// erfc by its continued fraction, for x >= 2:
/// erfc x = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
fn erfc_cf(x: f64) -> f64 {
    let mut t = x;
    for k in (1..=200).rev() {
        t = x + f64::from(k) * 0.5 / t;
    }
    (-x * x).exp() / PI.sqrt() / t
}

fn erf_ref(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.0 { erf_series(a) } else { 1.0 - erfc_cf(a) };
    r.copysign(x)
}

fn erfc_ref(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 0.0 {
        1.0 + erf_ref(-x)
    } else if x < 2.0 {
        1.0 - erf_series(x)
    } else {
        erfc_cf(x)
    }
}

fn sigmoid_ref(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus_ref(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The float64 value of unary op `name` at `x` (bools as 0/1).
fn unary_ref(name: &str, x: f64) -> f64 {
    match name {
        "neg" => -x,
        "abs" => x.abs(),
        "sign" => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x // 0, -0 and NaN map to themselves
            }
        }
        "square" => x * x,
        "relu" => {
            if x.is_nan() || x > 0.0 {
                x
            } else {
                0.0
            }
        }
        "relu6" => x.clamp(0.0, 6.0), // NaN stays NaN
        "exp" => x.exp(),
        "expm1" => x.exp_m1(),
        "log" => x.ln(),
        "log1p" => x.ln_1p(),
        "sqrt" => x.sqrt(),
        "rsqrt" => 1.0 / x.sqrt(),
        "reciprocal" => 1.0 / x,
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tan" => x.tan(),
        "tanh" => x.tanh(),
        "sigmoid" => sigmoid_ref(x),
        "elu" => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
        "selu" => SELU_SCALE * if x > 0.0 { x } else { SELU_ALPHA * x.exp_m1() },
        "gelu" => 0.5 * x * erfc_ref(-x / SQRT_2),
        "softplus" => softplus_ref(x),
        "erf" => erf_ref(x),
        "erfc" => erfc_ref(x),
        "lgamma" => libm::lgamma(x),
        "sinh" => x.sinh(),
        "cosh" => x.cosh(),
        "asin" => x.asin(),
        "acos" => x.acos(),
        "atan" => x.atan(),
        "asinh" => libm::asinh(x),
        "acosh" => {
            if x < 1.0 {
                f64::NAN
            } else {
                libm::acosh(x)
            }
        }
        "atanh" => libm::atanh(x),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        "round" => round_half_even(x),
        "is_nan" => flag(x.is_nan()),
        "is_finite" => flag(x.is_finite()),
        "is_inf" => flag(x.is_infinite()),
        other => panic!("no float reference for unary op `{other}`"),
    }
}

/// Special functions checked against TensorFlow rather than an f64 reference of their own.
const SPECIAL_UNARY: &[&str] = &["digamma", "erfinv", "ndtri", "bessel_i0e", "bessel_i1e"];

/// Ops whose float result must be the correctly rounded reference, exactly.
const EXACT_UNARY: &[&str] = &[
    "neg",
    "abs",
    "sign",
    "square",
    "relu",
    "relu6",
    "sqrt",
    "reciprocal",
    "floor",
    "ceil",
    "round",
    "is_nan",
    "is_finite",
    "is_inf",
];

/// Smallest positive subnormal of f32.
const F32_DENORM: f64 = 1.401_298_464_324_817e-45;

/// Allowed absolute error of unary op `name` at `x` (reference `want`) in
/// `dtype`; `None` where the result must be exactly the rounded reference.
fn unary_tolerance(dtype: DType, name: &str, x: f64, want: f64) -> Option<f64> {
    let w = want.abs();
    let f32_tol = |name: &str| -> Option<f64> {
        if EXACT_UNARY.contains(&name) {
            return None;
        }
        Some(match name {
            // Two roundings (sqrt, then the division).
            "rsqrt" => 2.5e-7 * w,
            // 1 / (1 + e^-x) overflows e^-x below x = -88.7: results under the
            // smallest normal may flush to zero.
            "sigmoid" => 2e-6 * w + f64::from(f32::MIN_POSITIVE),
            // 0.5 x (1 + erf(x / sqrt 2)) cancels for negative x: the error is
            // bounded by |x| times the error of erf near -1 (an ulp or two).
            "gelu" => 2e-6 * w + 2.5e-7 * x.abs() + 2.0 * F32_DENORM,
            _ => 2e-6 * w + 2.0 * F32_DENORM,
        })
    };
    match dtype {
        DType::F32 => f32_tol(name),
        DType::F64 => {
            if EXACT_UNARY.contains(&name) || name == "rsqrt" {
                return None;
            }
            Some(match name {
                "sigmoid" => 1e-15 * w + f64::MIN_POSITIVE,
                "gelu" => 1e-12 * w + 2e-16 * x.abs() + 1e-320,
                "erf" => 1e-14 * w + 1e-320,
                // The reference takes 1 - erf(x) below 2: an ulp of 1 besides the relative error.
                "erfc" => 1e-14 * w + 5e-16,
                _ => 1e-15 * w + 1e-320,
            })
        }
        // Computed in f32, rounded once: half an ulp of the half type (relative
        // 2^-11 or 2^-8) on top of the f32 error, plus half the smallest subnormal.
        DType::F16 => {
            if EXACT_UNARY.contains(&name) {
                return None;
            }
            Some(w * 2f64.powi(-11) + f32_tol(name).unwrap_or(0.0) + 2f64.powi(-25))
        }
        DType::BF16 => {
            if EXACT_UNARY.contains(&name) {
                return None;
            }
            Some(w * 2f64.powi(-8) + f32_tol(name).unwrap_or(0.0) + 2f64.powi(-134))
        }
        other => panic!("unary_tolerance {other}"),
    }
}

/// None if `got` is acceptable for reference `want`, else a reason.
fn check_value(dtype: DType, tol: Option<f64>, got: f64, want: f64) -> Option<String> {
    if want.is_nan() {
        return (!got.is_nan()).then(|| "want NaN".to_string());
    }
    if got.is_nan() {
        return Some("got NaN".into());
    }
    let rounded = round_to(dtype, want);
    match tol {
        None => (got != rounded).then(|| format!("want exactly {rounded:e}")),
        Some(tol) => {
            if rounded.is_infinite() || got.is_infinite() {
                (got != rounded).then(|| format!("want {rounded:e} (rounded)"))
            } else {
                let err = (got - want).abs();
                (err > tol).then(|| format!("error {err:e} > tolerance {tol:e}"))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Op wiring: every op of `UnaryOp::ALL` / `BinaryOp::ALL` by its name.
// ---------------------------------------------------------------------------

fn unary(op: UnaryOp, x: &Tensor) -> rivulet::Result<Tensor> {
    match op.name() {
        "neg" => ops::neg(x),
        "abs" => ops::abs(x),
        "sign" => ops::sign(x),
        "square" => ops::square(x),
        "relu" => ops::relu(x),
        "relu6" => ops::relu6(x),
        "exp" => ops::exp(x),
        "expm1" => ops::expm1(x),
        "log" => ops::log(x),
        "log1p" => ops::log1p(x),
        "sqrt" => ops::sqrt(x),
        "rsqrt" => ops::rsqrt(x),
        "reciprocal" => ops::reciprocal(x),
        "sin" => ops::sin(x),
        "cos" => ops::cos(x),
        "tan" => ops::tan(x),
        "tanh" => ops::tanh(x),
        "sigmoid" => ops::sigmoid(x),
        "elu" => ops::elu(x),
        "selu" => ops::selu(x),
        "gelu" => ops::gelu(x),
        "softplus" => ops::softplus(x),
        "erf" => ops::erf(x),
        "erfc" => ops::erfc(x),
        "lgamma" => ops::lgamma(x),
        "digamma" => ops::digamma(x),
        "erfinv" => ops::erfinv(x),
        "ndtri" => ops::ndtri(x),
        "bessel_i0e" => ops::bessel_i0e(x),
        "bessel_i1e" => ops::bessel_i1e(x),
        "sinh" => ops::sinh(x),
        "cosh" => ops::cosh(x),
        "asin" => ops::asin(x),
        "acos" => ops::acos(x),
        "atan" => ops::atan(x),
        "asinh" => ops::asinh(x),
        "acosh" => ops::acosh(x),
        "atanh" => ops::atanh(x),
        "floor" => ops::floor(x),
        "ceil" => ops::ceil(x),
        "round" => ops::round(x),
        "logical_not" => ops::logical_not(x),
        "is_nan" => ops::is_nan(x),
        "is_finite" => ops::is_finite(x),
        "is_inf" => ops::is_inf(x),
        other => panic!("unary op `{other}` is not wired into tests/suite/elementwise.rs"),
    }
}

/// Unary ops that accept integers (the rest are float-only).
const INT_UNARY: &[&str] = &["neg", "abs", "sign", "square", "relu", "relu6", "floor", "ceil", "round"];

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> rivulet::Result<Tensor> {
    match op.name() {
        "add" => ops::add(a, b),
        "sub" => ops::sub(a, b),
        "mul" => ops::mul(a, b),
        "real_div" => ops::real_div(a, b),
        "truncate_mod" => ops::truncate_mod(a, b),
        "div_no_nan" => ops::div_no_nan(a, b),
        "multiply_no_nan" => ops::multiply_no_nan(a, b),
        "zeta" => ops::zeta(a, b),
        "polygamma" => ops::polygamma(a, b),
        "igamma" => ops::igamma(a, b),
        "igammac" => ops::igammac(a, b),
        "igamma_grad_a" => ops::igamma_grad_a(a, b),
        "nextafter" => ops::nextafter(a, b),
        "xlogy" => ops::xlogy(a, b),
        "xlog1py" => ops::xlog1py(a, b),
        "xdivy" => ops::xdivy(a, b),
        "floor_div" => ops::floor_div(a, b),
        "floor_mod" => ops::floor_mod(a, b),
        "pow" => ops::pow(a, b),
        "maximum" => ops::maximum(a, b),
        "minimum" => ops::minimum(a, b),
        "equal" => ops::equal(a, b),
        "not_equal" => ops::not_equal(a, b),
        "less" => ops::less(a, b),
        "less_equal" => ops::less_equal(a, b),
        "greater" => ops::greater(a, b),
        "greater_equal" => ops::greater_equal(a, b),
        "logical_and" => ops::logical_and(a, b),
        "logical_or" => ops::logical_or(a, b),
        "atan2" => ops::atan2(a, b),
        "hypot" => ops::hypot(a, b),
        "logaddexp" => ops::logaddexp(a, b),
        other => panic!("binary op `{other}` is not wired into tests/suite/elementwise.rs"),
    }
}

const COMPARISONS: &[&str] = &["equal", "not_equal", "less", "less_equal", "greater", "greater_equal"];
const LOGICAL: &[&str] = &["logical_and", "logical_or"];
/// Binary ops defined on floating-point dtypes only.
const FLOAT_ONLY: &[&str] = &[
    "atan2",
    "hypot",
    "logaddexp",
    "div_no_nan",
    "multiply_no_nan",
    "zeta",
    "polygamma",
    "igamma",
    "igammac",
    "igamma_grad_a",
    "nextafter",
    "xlogy",
    "xlog1py",
    "xdivy",
];

/// Every op of `UnaryOp::ALL` / `BinaryOp::ALL` must be wired here (a new op
/// without tests fails this test).
#[test]
fn every_op_is_wired_and_named() {
    assert_eq!(UnaryOp::ALL.len(), 45, "UnaryOp::ALL changed: extend these tests");
    assert_eq!(BinaryOp::ALL.len(), 32, "BinaryOp::ALL changed: extend these tests");
    let xf = Tensor::from([0.5f32, -2.0]);
    let xb = Tensor::from([true, false]);
    for &op in UnaryOp::ALL {
        let x = if op.name() == "logical_not" { &xb } else { &xf };
        let y = unary(op, x).unwrap();
        assert_eq!(y.shape().dims(), &[2], "{}", op.name());
    }
    for &op in BinaryOp::ALL {
        let x = if LOGICAL.contains(&op.name()) { &xb } else { &xf };
        let y = binary(op, x, x).unwrap();
        assert_eq!(
            y.dtype(),
            if op.is_comparison() || LOGICAL.contains(&op.name()) { DType::Bool } else { DType::F32 }
        );
        assert_eq!(op.is_comparison(), COMPARISONS.contains(&op.name()), "{}", op.name());
    }
}

/// The method forms forward to the same ops.
#[test]
fn methods_match_functions() {
    let x = Tensor::from([0.25f32, -1.5, 3.0]);
    assert_same(&x.exp().unwrap(), &ops::exp(&x).unwrap(), "exp method");
    assert_same(&x.gelu().unwrap(), &ops::gelu(&x).unwrap(), "gelu method");
    assert_same(&x.abs().unwrap(), &ops::abs(&x).unwrap(), "abs method");
    assert_same(&x.add(2.0).unwrap(), &ops::add(&x, 2.0).unwrap(), "add method");
    assert_same(&x.floor_mod(&x).unwrap(), &ops::floor_mod(&x, &x).unwrap(), "floor_mod method");
    assert_same(&x.less(0.0).unwrap(), &ops::less(&x, 0.0).unwrap(), "less method");
}

// ---------------------------------------------------------------------------
// The float64 references themselves.
// ---------------------------------------------------------------------------

/// erf/erfc references against tabulated values (Abramowitz & Stegun 7.1,
/// to 16 digits), so that the unary tests compare against something right.
#[test]
fn erf_reference_matches_tables() {
    let table = [
        (0.1, 0.112_462_916_018_284_9),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
    ];
    for (x, want) in table {
        assert!((erf_ref(x) - want).abs() <= 1e-15 * want, "erf({x}) = {} want {want}", erf_ref(x));
        assert!((erf_ref(-x) + want).abs() <= 1e-15 * want, "erf(-{x})");
    }
    let table_c = [
        (2.0, 4.677_734_981_047_266e-3),
        (3.0, 2.209_049_699_858_544e-5),
        (5.0, 1.537_459_794_428_035e-12),
        (10.0, 2.088_487_583_762_545e-45),
        (20.0, 5.395_865_611_607_901e-176),
    ];
    for (x, want) in table_c {
        assert!((erfc_ref(x) - want).abs() <= 1e-14 * want, "erfc({x}) = {:e} want {want:e}", erfc_ref(x));
    }
    assert_eq!(erf_ref(0.0), 0.0);
    assert_eq!(erf_ref(f64::INFINITY), 1.0);
    assert_eq!(erf_ref(f64::NEG_INFINITY), -1.0);
    assert_eq!(erfc_ref(f64::NEG_INFINITY), 2.0);
    assert!((erfc_ref(-1.0) - (1.0 + 0.842_700_792_949_714_9)).abs() < 1e-15);
    // The two branches agree where they meet.
    let (s, c) = (erf_series(2.0), 1.0 - erfc_cf(2.0));
    assert!((s - c).abs() < 1e-15, "{s} vs {c}");
    assert_eq!(round_half_even(2.5), 2.0);
    assert_eq!(round_half_even(-3.5), -4.0);
}

// ---------------------------------------------------------------------------
// Unary ops.
// ---------------------------------------------------------------------------

fn f32_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}
fn f32_down(x: f32) -> f32 {
    f32::from_bits(x.to_bits() - 1)
}

/// A spread of f32 inputs: zeros, subnormals, values near the branch points
/// of the implementations (0.2, 0.5), near overflow/underflow of exp, huge
/// values, infinities, NaN, a dense grid and log-spaced magnitudes.
fn f32_inputs() -> Vec<f32> {
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        F32_DENORM as f32,
        -(F32_DENORM as f32),
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-30,
        -1e-30,
        1e-20,
        1e-10,
        -1e-10,
        1e-7,
        -1e-7,
        1e-5,
        -1e-5,
        1e-3,
        -1e-3,
        0.1,
        -0.1,
        f32_down(0.2),
        0.2,
        f32_up(0.2),
        -f32_down(0.2),
        -0.2,
        -f32_up(0.2),
        f32_down(0.5),
        0.5,
        f32_up(0.5),
        -f32_down(0.5),
        -0.5,
        -f32_up(0.5),
        0.75,
        1.0,
        -1.0,
        1.5,
        -1.5,
        2.0,
        -2.0,
        2.5,
        -2.5,
        3.0,
        3.5,
        -3.5,
        4.5,
        std::f32::consts::PI,
        -std::f32::consts::PI,
        std::f32::consts::FRAC_PI_2,
        5.0,
        -5.0,
        6.0,
        f32_up(6.0),
        6.5,
        7.0,
        10.0,
        -10.0,
        15.0,
        20.0,
        -20.0,
        30.0,
        50.0,
        -50.0,
        80.0,
        88.0,
        88.5,
        88.72283,
        88.72284,
        f32_up(88.72284),
        88.7229,
        89.0,
        -87.0,
        -88.0,
        -89.0,
        -90.0,
        -100.0,
        -103.0,
        -103.9,
        -104.0,
        -105.0,
        -150.0,
        100.0,
        1000.0,
        -1000.0,
        1e4,
        -1e4,
        65504.0,
        1e6,
        8_388_607.5,
        8_388_609.0,
        16_777_216.0,
        1e10,
        -1e10,
        1e20,
        1e30,
        -1e30,
        1e38,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for i in -2200..=2200 {
        v.push(i as f32 * 0.0137);
    }
    for k in -360..=300 {
        let m = 10f64.powf(f64::from(k) / 8.0) as f32;
        v.push(m);
        v.push(-m);
    }
    v
}

/// f64 inputs: the f32 spread plus values only f64 can hold.
fn f64_inputs() -> Vec<f64> {
    let mut v: Vec<f64> = f32_inputs().into_iter().map(f64::from).collect();
    v.extend([
        5e-324,
        -5e-324,
        1e-310,
        1e-300,
        1e-200,
        -1e-17,
        1e-17,
        0.1,
        1.0 / 3.0,
        -0.7,
        0.499_999_999_999_999_94,
        700.0,
        709.0,
        709.78,
        710.0,
        -700.0,
        -708.0,
        -709.5,
        -710.0,
        -745.0,
        -746.0,
        -800.0,
        1e200,
        1e300,
        -1e300,
        f64::MAX,
        -f64::MAX,
        4_503_599_627_370_495.5,
    ]);
    v
}

/// Run every float unary op on `inputs` (rounded into `dtype`) and compare
/// each element with the float64 reference.
fn check_unary_floats(dtype: DType, inputs: &[f64]) {
    let x = tensor_of(inputs, &[inputs.len()], dtype);
    let xs = values(&x); // the inputs as the dtype holds them
    let mut failures = Vec::new();
    let x64 = tensor_of(&xs, &[xs.len()], DType::F64);
    for &op in UnaryOp::ALL {
        let name = op.name();
        // The special functions compute in f64 and round once: the f64 op is
        // the reference here, and TensorFlow's values check the f64 op
        // (tests/suite/tf_reference.rs).
        let special = SPECIAL_UNARY.contains(&name).then(|| values(&unary(op, &x64).unwrap()));
        if special.is_some() && dtype == DType::F64 {
            continue;
        }
        if name == "logical_not" {
            assert_eq!(err_kind(unary(op, &x)), ErrorKind::DType, "logical_not on {dtype}");
            continue;
        }
        let y = unary(op, &x).unwrap_or_else(|e| panic!("{name} on {dtype}: {e}"));
        let out_dtype = if matches!(name, "is_nan" | "is_finite" | "is_inf") { DType::Bool } else { dtype };
        assert_eq!(y.dtype(), out_dtype, "{name} on {dtype}: output dtype");
        assert_eq!(y.shape().dims(), &[inputs.len()], "{name} on {dtype}: shape");
        for (i, (&xi, g)) in xs.iter().zip(values(&y)).enumerate() {
            let want = match &special {
                Some(s) => s[i],
                None => unary_ref(name, xi),
            };
            let tol = if out_dtype == DType::Bool { None } else { unary_tolerance(dtype, name, xi, want) };
            let reason = if out_dtype == DType::Bool {
                (g != want).then(|| format!("want {want}"))
            } else {
                check_value(dtype, tol, g, want)
            };
            if let Some(r) = reason {
                failures.push(format!("{dtype} {name}({xi:e}) = {g:e}, reference {want:e}: {r}"));
            }
        }
    }
    let shown: Vec<&String> = failures.iter().take(60).collect();
    assert!(failures.is_empty(), "{} mismatches:\n{shown:#?}", failures.len());
}

#[test]
fn unary_f32_against_f64_reference() {
    let inputs: Vec<f64> = f32_inputs().into_iter().map(f64::from).collect();
    check_unary_floats(DType::F32, &inputs);
}

#[test]
fn unary_f64_against_reference() {
    check_unary_floats(DType::F64, &f64_inputs());
}

#[test]
fn unary_f16_computed_in_f32_and_rounded() {
    let mut inputs: Vec<f64> = f32_inputs().into_iter().map(f64::from).collect();
    // Every finite f16 between -12 and 12 in steps of its ulp near 1/8.
    for i in -96..=96 {
        inputs.push(f64::from(i) / 8.0);
    }
    inputs.extend([6.0e-8, -6.0e-8, 6.1e-5, 65504.0, -65504.0, 11.09, -11.09]);
    check_unary_floats(DType::F16, &inputs);
}

#[test]
fn unary_bf16_computed_in_f32_and_rounded() {
    let inputs: Vec<f64> = f32_inputs().into_iter().map(f64::from).collect();
    check_unary_floats(DType::BF16, &inputs);
}

/// Hand-computed values for the ops with special conventions.
#[test]
fn unary_hand_values() {
    let x = Tensor::from([0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 0.499_999_97, -0.0, 8_388_609.0]);
    assert_eq!(
        ops::round(&x).unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 4.0, 0.0, -0.0, 8_388_609.0]
    );
    let x = Tensor::from([-2.5f64, -0.0, 0.0, 2.5, f64::NAN, f64::INFINITY]);
    let s = ops::sign(&x).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(&s[..4], &[-1.0, 0.0, 0.0, 1.0]);
    assert!(s[4].is_nan(), "sign(NaN) must stay NaN");
    assert_eq!(s[5], 1.0);
    // Signed zeros: neg(0) = -0, abs(-0) = +0.
    let z = Tensor::from([0.0f32, -0.0]);
    let n = ops::neg(&z).unwrap().to_vec::<f32>().unwrap();
    assert!(n[0].is_sign_negative() && n[1].is_sign_positive(), "neg of zeros: {n:?}");
    let a = ops::abs(&z).unwrap().to_vec::<f32>().unwrap();
    assert!(a[1].is_sign_positive(), "abs(-0) must be +0");
    // relu/relu6 at the ends; NaN passes through.
    let x = Tensor::from([-1.0f32, 0.0, 3.0, 6.0, 7.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
    let r = ops::relu6(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&r[..7], &[0.0, 0.0, 3.0, 6.0, 6.0, 6.0, 0.0]);
    assert!(r[7].is_nan());
    let r = ops::relu(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&r[..7], &[0.0, 0.0, 3.0, 6.0, 7.0, f32::INFINITY, 0.0]);
    assert!(r[7].is_nan());
    // Known values: exp(1) = e, log(e) ~ 1, sigmoid(0) = 1/2, softplus(0) = ln 2,
    // erf(1) = 0.8427007929497149, gelu(1) = 0.8413447460685429, selu(1) = scale.
    let one = Tensor::from([1.0f64]);
    assert_eq!(ops::exp(&one).unwrap().to_scalar::<f64>().unwrap(), std::f64::consts::E);
    assert_eq!(ops::sigmoid(&Tensor::from([0.0f32])).unwrap().to_scalar::<f32>().unwrap(), 0.5);
    let sp = ops::softplus(&Tensor::from([0.0f64])).unwrap().to_scalar::<f64>().unwrap();
    assert!((sp - std::f64::consts::LN_2).abs() < 1e-16);
    let e1 = ops::erf(&one).unwrap().to_scalar::<f64>().unwrap();
    assert!((e1 - 0.842_700_792_949_714_9).abs() < 2e-16, "{e1}");
    let g1 = ops::gelu(&one).unwrap().to_scalar::<f64>().unwrap();
    assert!((g1 - 0.841_344_746_068_542_9).abs() < 2e-16, "{g1}");
    let g1 = ops::gelu(&Tensor::from([1.0f32])).unwrap().to_scalar::<f32>().unwrap();
    assert!((f64::from(g1) - 0.841_344_746_068_542_9).abs() < 1.5e-7, "{g1}");
    let s1 = ops::selu(&one).unwrap().to_scalar::<f64>().unwrap();
    assert!((s1 - SELU_SCALE).abs() < 1e-16);
    // Accuracy near 0: expm1 and log1p keep tiny arguments.
    let tiny = Tensor::from([1e-10f32, -1e-10]);
    assert_eq!(ops::expm1(&tiny).unwrap().to_vec::<f32>().unwrap(), vec![1e-10, -1e-10]);
    assert_eq!(ops::log1p(&tiny).unwrap().to_vec::<f32>().unwrap(), vec![1e-10, -1e-10]);
    assert_eq!(ops::tanh(&tiny).unwrap().to_vec::<f32>().unwrap(), vec![1e-10, -1e-10]);
    // Large negative inputs: no overflow into NaN.
    let neg = Tensor::from([-1000.0f32, -100.0]);
    assert_eq!(ops::exp(&neg).unwrap().to_vec::<f32>().unwrap()[0], 0.0);
    assert_eq!(ops::sigmoid(&neg).unwrap().to_vec::<f32>().unwrap()[0], 0.0);
    let sp = ops::softplus(&neg).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(sp[0], 0.0);
    assert!((f64::from(sp[1]) - (-100f64).exp()).abs() <= 2.0 * F32_DENORM, "softplus(-100) = {:e}", sp[1]);
    let sp = ops::softplus(&Tensor::from([1000.0f32, 1e30])).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(sp, vec![1000.0, 1e30]);
}

/// Integer inputs for the unary ops that accept them, with wrapping overflow.
#[test]
fn unary_integers_wrap() {
    fn reference(name: &str, v: i128) -> i128 {
        match name {
            "neg" => -v,
            "abs" => v.abs(),
            "sign" => v.signum(),
            "square" => v * v,
            "relu" => v.max(0),
            "relu6" => v.clamp(0, 6),
            "floor" | "ceil" | "round" => v,
            other => panic!("{other}"),
        }
    }
    let cases: [(DType, Vec<i128>); 3] = [
        (
            DType::I32,
            vec![
                0,
                1,
                -1,
                5,
                -5,
                6,
                7,
                -7,
                100,
                -100,
                46_341,
                -46_341,
                i32::MAX.into(),
                i32::MIN.into(),
                (i32::MIN + 1).into(),
            ],
        ),
        (DType::I64, vec![0, 1, -1, 5, 7, -7, 3_037_000_500, -3_037_000_500, i64::MAX.into(), i64::MIN.into()]),
        (DType::U8, vec![0, 1, 2, 5, 6, 7, 15, 16, 100, 200, 255]),
    ];
    for (dtype, vals) in cases {
        let x = int_tensor(&vals, &[vals.len()], dtype);
        for &op in UnaryOp::ALL {
            let name = op.name();
            if !INT_UNARY.contains(&name) {
                let kind = err_kind(unary(op, &x));
                assert_eq!(kind, ErrorKind::DType, "{name} must reject {dtype}");
                continue;
            }
            let y = unary(op, &x).unwrap();
            assert_eq!(y.dtype(), dtype, "{name}");
            let want: Vec<i128> = vals.iter().map(|&v| wrap_int(dtype, reference(name, v))).collect();
            assert_eq!(ints(&y), want, "{name} on {dtype}");
        }
    }
    // The famous ones, spelled out.
    let m = Tensor::from([i32::MIN]);
    assert_eq!(ops::abs(&m).unwrap().to_vec::<i32>().unwrap(), vec![i32::MIN]);
    assert_eq!(ops::neg(&m).unwrap().to_vec::<i32>().unwrap(), vec![i32::MIN]);
    assert_eq!(ops::square(&Tensor::from([46_341i32])).unwrap().to_vec::<i32>().unwrap(), vec![-2_147_479_015]);
    assert_eq!(ops::neg(&Tensor::from([1u8, 0])).unwrap().to_vec::<u8>().unwrap(), vec![255, 0]);
}

/// Bool inputs: only logical_not; float-to-bool ops reject ints.
#[test]
fn unary_bool_and_dtype_errors() {
    let b = Tensor::from([true, false, true]);
    assert_eq!(bools(&ops::logical_not(&b).unwrap()), vec![false, true, false]);
    for &op in UnaryOp::ALL {
        if op.name() != "logical_not" {
            assert_eq!(err_kind(unary(op, &b)), ErrorKind::DType, "{} must reject bool", op.name());
        }
    }
    assert_eq!(err_kind(ops::logical_not(&Tensor::from([1i32]))), ErrorKind::DType);
    assert_eq!(err_kind(ops::is_nan(&Tensor::from([1i32]))), ErrorKind::DType);
    assert_eq!(err_kind(ops::is_finite(&Tensor::from([1u8]))), ErrorKind::DType);
    assert_eq!(err_kind(ops::exp(&Tensor::from([1i64]))), ErrorKind::DType);
    assert_eq!(err_kind(ops::sqrt(&Tensor::from([4i32]))), ErrorKind::DType);
}

// ---------------------------------------------------------------------------
// Binary ops.
// ---------------------------------------------------------------------------

/// Two's-complement wrap of `v` into an integer dtype.
fn wrap_int(dtype: DType, v: i128) -> i128 {
    let (bits, signed) = match dtype {
        DType::I32 => (32, true),
        DType::I64 => (64, true),
        DType::U8 => (8, false),
        DType::I8 => (8, true),
        DType::I16 => (16, true),
        DType::U16 => (16, false),
        DType::U32 => (32, false),
        DType::U64 => (64, false),
        other => panic!("wrap_int {other}"),
    };
    let m = 1i128 << bits;
    let r = v.rem_euclid(m);
    if signed && r >= m / 2 {
        r - m
    } else {
        r
    }
}

/// Python's floor division on exact integers.
fn py_floor_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// Reference for a float binary op in `dtype`: exact ops with the dtype's own
/// arithmetic (f16/bf16: in f32, rounded once), the rest in f64.
fn float_binary_ref(dtype: DType, name: &str, a: f64, b: f64) -> f64 {
    let in_dtype = |f32op: fn(f32, f32) -> f32, f64op: fn(f64, f64) -> f64| -> f64 {
        match dtype {
            DType::F64 => f64op(a, b),
            _ => round_to(dtype, f64::from(f32op(a as f32, b as f32))),
        }
    };
    match name {
        "add" => in_dtype(|x, y| x + y, |x, y| x + y),
        "sub" => in_dtype(|x, y| x - y, |x, y| x - y),
        "mul" => in_dtype(|x, y| x * y, |x, y| x * y),
        "real_div" => in_dtype(|x, y| x / y, |x, y| x / y),
        "truncate_mod" => in_dtype(|x, y| x % y, |x, y| x % y),
        "div_no_nan" => in_dtype(|x, y| if y == 0.0 { 0.0 } else { x / y }, |x, y| if y == 0.0 { 0.0 } else { x / y }),
        "multiply_no_nan" => {
            in_dtype(|x, y| if y == 0.0 { 0.0 } else { x * y }, |x, y| if y == 0.0 { 0.0 } else { x * y })
        }
        "xdivy" => in_dtype(|x, y| if x == 0.0 { 0.0 } else { x / y }, |x, y| if x == 0.0 { 0.0 } else { x / y }),
        "xlogy" => {
            if a == 0.0 {
                0.0
            } else {
                a * b.ln()
            }
        }
        "xlog1py" => {
            if a == 0.0 {
                0.0
            } else {
                a * b.ln_1p()
            }
        }
        "floor_div" => (a / b).floor(),
        "floor_mod" => {
            if b == 0.0 || a.is_infinite() {
                f64::NAN
            } else {
                a - b * (a / b).floor()
            }
        }
        "pow" => a.powf(b),
        "maximum" => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if a >= b {
                a
            } else {
                b
            }
        }
        "minimum" => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if a <= b {
                a
            } else {
                b
            }
        }
        "atan2" => a.atan2(b),
        "hypot" => a.hypot(b),
        "logaddexp" => {
            // NumPy's definition, in f64.
            if a == b {
                a + std::f64::consts::LN_2
            } else if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b) + (-(a - b).abs()).exp().ln_1p()
            }
        }
        "equal" => flag(a == b),
        "not_equal" => flag(a != b),
        "less" => flag(a < b),
        "less_equal" => flag(a <= b),
        "greater" => flag(a > b),
        "greater_equal" => flag(a >= b),
        other => panic!("no float reference for `{other}`"),
    }
}

/// All pairs of `a_vals` x `b_vals` as two flat tensors of `dtype`.
fn pairs(a_vals: &[f64], b_vals: &[f64], dtype: DType) -> (Tensor, Tensor) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &x in a_vals {
        for &y in b_vals {
            a.push(x);
            b.push(y);
        }
    }
    (tensor_of(&a, &[a.len()], dtype), tensor_of(&b, &[b.len()], dtype))
}

fn check_float_binary(dtype: DType, names: &[&str], a_vals: &[f64], b_vals: &[f64], tol_rel: Option<f64>) {
    let (a, b) = pairs(a_vals, b_vals, dtype);
    let (xa, xb) = (values(&a), values(&b));
    let mut failures = Vec::new();
    for &name in names {
        let op = *BinaryOp::ALL.iter().find(|o| o.name() == name).unwrap();
        let y = binary(op, &a, &b).unwrap_or_else(|e| panic!("{name} on {dtype}: {e}"));
        let cmp = COMPARISONS.contains(&name);
        assert_eq!(y.dtype(), if cmp { DType::Bool } else { dtype }, "{name} on {dtype}");
        for ((&p, &q), g) in xa.iter().zip(&xb).zip(values(&y)) {
            let want = float_binary_ref(dtype, name, p, q);
            let reason = if cmp {
                (g != want).then(|| "wrong truth value".to_string())
            } else {
                let tol = tol_rel.map(|r| {
                    r * want.abs()
                        + match dtype {
                            DType::F32 => 2.0 * F32_DENORM,
                            DType::F16 => 2f64.powi(-25),
                            DType::BF16 => 2f64.powi(-134),
                            _ => 1e-320,
                        }
                });
                check_value(dtype, tol, g, want)
            };
            if let Some(r) = reason {
                failures.push(format!("{dtype} {name}({p:e}, {q:e}) = {g:e}, reference {want:e}: {r}"));
            }
        }
    }
    let shown: Vec<&String> = failures.iter().take(60).collect();
    assert!(failures.is_empty(), "{} mismatches:\n{shown:#?}", failures.len());
}

fn general_float_values() -> Vec<f64> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.5,
        3.0,
        7.0,
        0.1,
        1.0 / 3.0,
        1e-40,
        -1e-40,
        1e30,
        -1e30,
        f64::from(f32::MAX),
        65504.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]
}

/// Values whose quotients are exact or far from integers, so that
/// floor(a / b) is the same in every precision.
const NICE: &[f64] =
    &[-7.5, -7.0, -6.0, -3.0, -2.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 7.0, 7.5, 1e3];

#[test]
fn binary_floats_exact_ops() {
    let names = ["add", "sub", "mul", "real_div", "maximum", "minimum"];
    let vals = general_float_values();
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        check_float_binary(dtype, &names, &vals, &vals, None);
        check_float_binary(dtype, COMPARISONS, &vals, &vals, None);
    }
}

/// atan2, hypot and logaddexp over every pair of the general values
/// (signed zeros, infinities, NaN, subnormals) against f64, with
/// TensorFlow's and NumPy's special cases written out; integers are refused.
#[test]
fn binary_floats_atan2_hypot_logaddexp() {
    let vals = general_float_values();
    for (dtype, rel) in
        [(DType::F32, 4e-7), (DType::F64, 4e-16), (DType::F16, 2f64.powi(-11)), (DType::BF16, 2f64.powi(-8))]
    {
        check_float_binary(dtype, &["atan2", "hypot", "logaddexp"], &vals, &vals, Some(rel));
    }
    let pi = std::f32::consts::PI;
    let y = Tensor::from([0.0f32, 0.0, -0.0, 1.0, -1.0, f32::INFINITY, 1.0]);
    let x = Tensor::from([0.0f32, -0.0, -0.0, 0.0, f32::NEG_INFINITY, f32::INFINITY, f32::NAN]);
    let got = ops::atan2(&y, &x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&got[..6], &[0.0, pi, -pi, pi / 2.0, -pi, pi / 4.0]);
    assert!(got[6].is_nan());
    let h =
        ops::hypot(&Tensor::from([3.0f32, f32::INFINITY, 1e30, 0.0]), &Tensor::from([4.0f32, f32::NAN, 1e30, -0.0]));
    let big = (1e30f32 as f64).hypot(1e30f32 as f64) as f32;
    assert_eq!(h.unwrap().to_vec::<f32>().unwrap(), vec![5.0, f32::INFINITY, big, 0.0]);
    let l = ops::logaddexp(
        &Tensor::from([f32::NEG_INFINITY, f32::INFINITY, 1000.0, 0.0, f32::NAN]),
        &Tensor::from([f32::NEG_INFINITY, f32::INFINITY, 1000.0, f32::NEG_INFINITY, 0.0]),
    );
    let l = l.unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&l[..4], &[f32::NEG_INFINITY, f32::INFINITY, 1000.0 + std::f32::consts::LN_2, 0.0]);
    assert!(l[4].is_nan());
    let i = Tensor::from([1i32, 2]);
    for f in [ops::atan2, ops::hypot, ops::logaddexp] {
        assert_eq!(kind(f(&i, &i)), ErrorKind::DType);
    }
}

/// TensorFlow's zero-guarded divisions and logs, and C's remainder, over
/// every pair of the general values; the zero rules spelled out.
#[test]
fn binary_floats_no_nan_family_and_truncate_mod() {
    let vals = general_float_values();
    for (dtype, rel) in
        [(DType::F32, 4e-7), (DType::F64, 4e-16), (DType::F16, 2f64.powi(-11)), (DType::BF16, 2f64.powi(-8))]
    {
        check_float_binary(dtype, &["truncate_mod", "div_no_nan", "multiply_no_nan", "xdivy"], &vals, &vals, None);
        check_float_binary(dtype, &["xlogy", "xlog1py"], &vals, &vals, Some(rel));
    }
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let a = Tensor::from([0.0f32, 0.0, 0.0, 2.0, -3.0]);
    let b = Tensor::from([0.0f32, nan, inf, 0.0, 0.0]);
    // divide_no_nan is 0 wherever b is 0, NaN numerator or not; the x-family is 0 wherever a is 0.
    assert_eq!(ops::div_no_nan(&a, &b).unwrap().to_vec::<f32>().unwrap()[3..], [0.0, 0.0]);
    assert_eq!(ops::div_no_nan(&Tensor::from([nan]), 0.0).unwrap().to_vec::<f32>().unwrap(), [0.0]);
    assert_eq!(ops::xlogy(&a, &b).unwrap().to_vec::<f32>().unwrap()[..3], [0.0, 0.0, 0.0]);
    assert_eq!(ops::xdivy(&a, &b).unwrap().to_vec::<f32>().unwrap()[..3], [0.0, 0.0, 0.0]);
    assert_eq!(
        ops::xlog1py(&a, &Tensor::from([-1.0f32, nan, inf, 0.0, 0.0])).unwrap().to_vec::<f32>().unwrap(),
        [0.0; 5]
    );
    let t = ops::truncate_mod(&Tensor::from([7.5f32, -7.5, 7.5, -7.5]), &Tensor::from([2.0f32, 2.0, -2.0, -2.0]));
    assert_eq!(t.unwrap().to_vec::<f32>().unwrap(), [1.5, -1.5, 1.5, -1.5]);
}

/// `div` is Python 3's `/` (TensorFlow's truediv): integers divide as floats,
/// int32 and int64 in f64, uint8 in f32; `truncate_div` keeps integers.
#[test]
fn integer_true_division_gives_floats_as_tensorflow() {
    let a = Tensor::from([7i32, -7, 1, 0, i32::MAX]);
    let b = Tensor::from([2i32, 2, 0, 0, 3]);
    let q = ops::div(&a, &b).unwrap();
    assert_eq!(q.dtype(), DType::F64);
    let q = q.to_vec::<f64>().unwrap();
    assert_eq!(q[..3], [3.5, -3.5, f64::INFINITY]);
    assert!(q[3].is_nan());
    assert_eq!(q[4], f64::from(i32::MAX) / 3.0);
    let q = (&Tensor::from([9i64, -1]) / &Tensor::from([4i64, 3])).unwrap();
    assert_eq!((q.dtype(), q.to_vec::<f64>().unwrap()), (DType::F64, vec![2.25, -1.0 / 3.0]));
    let q = ops::div(&Tensor::from([255u8, 1]), 2).unwrap();
    assert_eq!((q.dtype(), q.to_vec::<f32>().unwrap()), (DType::F32, vec![127.5, 0.5]));
    assert_eq!(ops::truncate_div(&a, 2).unwrap().to_vec::<i32>().unwrap(), vec![3, -3, 0, 0, 1_073_741_823]);
    assert_eq!(kind(ops::truncate_div(&Tensor::from([1.0f32]), 2.0)), ErrorKind::DType);
    // Graph mode agrees, and the gradient of a float division is unchanged.
    let g = rivulet::Graph::new();
    let x = g.placeholder("x", DType::I32, [2]).unwrap();
    let y = ops::div(&x, 4).unwrap();
    let out = rivulet::Session::new(&g).run(&[&y], &[(&x, &Tensor::from([3i32, -6]))]).unwrap();
    assert_eq!(out[0].to_vec::<f64>().unwrap(), vec![0.75, -1.5]);
}

#[test]
fn binary_floats_floor_div_and_mod_python_semantics() {
    let nonzero: Vec<f64> = NICE.iter().copied().filter(|&v| v != 0.0).collect();
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        check_float_binary(dtype, &["floor_div", "floor_mod"], NICE, &nonzero, None);
    }
    // Hand values: the remainder takes the divisor's sign.
    let a = Tensor::from([7.0f32, -7.0, 7.0, -7.0, 7.5, -7.5, 7.5, -7.5, 0.5]);
    let b = Tensor::from([2.0f32, 2.0, -2.0, -2.0, 2.0, 2.0, -2.0, -2.0, 1e3]);
    assert_eq!(
        ops::floor_div(&a, &b).unwrap().to_vec::<f32>().unwrap(),
        vec![3.0, -4.0, -4.0, 3.0, 3.0, -4.0, -4.0, 3.0, 0.0]
    );
    assert_eq!(
        ops::floor_mod(&a, &b).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 1.0, -1.0, -1.0, 1.5, 0.5, -0.5, -1.5, 0.5]
    );
    // floor_div(a, b) * b + floor_mod(a, b) == a.
    let (pa, pb) = pairs(NICE, &nonzero, DType::F64);
    let q = ops::floor_div(&pa, &pb).unwrap();
    let r = ops::floor_mod(&pa, &pb).unwrap();
    let back = ops::add(&ops::mul(&q, &pb).unwrap(), &r).unwrap();
    assert_eq!(values(&back), values(&pa));
    // Division by a float zero is not an error: inf or NaN, like NumPy.
    let a = Tensor::from([1.0f32, -1.0, 0.0, f32::NAN]);
    let z = Tensor::from([0.0f32, 0.0, 0.0, 1.0]);
    let q = ops::floor_div(&a, &z).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&q[..2], &[f32::INFINITY, f32::NEG_INFINITY]);
    assert!(q[2].is_nan() && q[3].is_nan());
    assert!(ops::floor_mod(&a, &z).unwrap().to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
    assert_eq!(ops::floor_mod(&Tensor::from([5.0f64]), f64::INFINITY).unwrap().to_vec::<f64>().unwrap(), vec![5.0]);
}

#[test]
fn binary_floats_pow() {
    let bases = [
        0.0,
        -0.0,
        0.5,
        1.0,
        2.0,
        -2.0,
        3.0,
        10.0,
        -1.5,
        1e-3,
        100.0,
        1e-30,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let exps = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        -2.0,
        0.5,
        -0.5,
        3.0,
        1.0 / 3.0,
        10.0,
        40.0,
        -40.0,
        0.1,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    check_float_binary(DType::F32, &["pow"], &bases, &exps, Some(2e-6));
    check_float_binary(DType::F64, &["pow"], &bases, &exps, Some(1e-15));
    check_float_binary(DType::F16, &["pow"], &bases, &exps, Some(2f64.powi(-11) + 2e-6));
    check_float_binary(DType::BF16, &["pow"], &bases, &exps, Some(2f64.powi(-8) + 2e-6));
    // IEEE special cases, by hand.
    let a = Tensor::from([0.0f32, f32::NAN, 1.0, -8.0, -2.0, 0.0, -0.0, 4.0]);
    let b = Tensor::from([0.0f32, 0.0, f32::NAN, 1.0 / 3.0, 3.0, -1.0, -1.0, 0.5]);
    let p = ops::pow(&a, &b).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&p[..3], &[1.0, 1.0, 1.0]);
    assert!(p[3].is_nan());
    assert_eq!(&p[4..], &[-8.0, f32::INFINITY, f32::NEG_INFINITY, 2.0]);
}

/// NaN propagation of maximum/minimum (not IEEE maxNum).
#[test]
fn maximum_minimum_propagate_nan() {
    let a = Tensor::from([f32::NAN, 1.0, f32::NAN, f32::NEG_INFINITY]);
    let b = Tensor::from([1.0f32, f32::NAN, f32::NAN, 0.0]);
    let mx = ops::maximum(&a, &b).unwrap().to_vec::<f32>().unwrap();
    let mn = ops::minimum(&a, &b).unwrap().to_vec::<f32>().unwrap();
    assert!(mx[..3].iter().all(|v| v.is_nan()), "{mx:?}");
    assert!(mn[..3].iter().all(|v| v.is_nan()), "{mn:?}");
    assert_eq!((mx[3], mn[3]), (0.0, f32::NEG_INFINITY));
    let mx = ops::maximum(&Tensor::from([f64::NAN, 2.0]), 1.0).unwrap().to_vec::<f64>().unwrap();
    assert!(mx[0].is_nan());
    assert_eq!(mx[1], 2.0);
}

fn int_binary_ref(dtype: DType, name: &str, a: i128, b: i128) -> i128 {
    match name {
        "add" => wrap_int(dtype, a + b),
        "sub" => wrap_int(dtype, a - b),
        "mul" => wrap_int(dtype, a * b),
        "real_div" => wrap_int(dtype, a / b), // truncating
        "truncate_mod" => wrap_int(dtype, a % b),
        "floor_div" => wrap_int(dtype, py_floor_div(a, b)),
        "floor_mod" => wrap_int(dtype, a - b * py_floor_div(a, b)),
        "pow" => {
            let e = u32::try_from(b).unwrap();
            match dtype {
                DType::I32 => i32::try_from(a).unwrap().wrapping_pow(e).into(),
                DType::I64 => i64::try_from(a).unwrap().wrapping_pow(e).into(),
                _ => u8::try_from(a).unwrap().wrapping_pow(e).into(),
            }
        }
        "maximum" => a.max(b),
        "minimum" => a.min(b),
        "equal" => (a == b).into(),
        "not_equal" => (a != b).into(),
        "less" => (a < b).into(),
        "less_equal" => (a <= b).into(),
        "greater" => (a > b).into(),
        "greater_equal" => (a >= b).into(),
        other => panic!("{other}"),
    }
}

#[test]
fn binary_integers_wrap_and_floor() {
    let cases: [(DType, Vec<i128>); 3] = [
        (
            DType::I32,
            vec![
                0,
                1,
                -1,
                2,
                -2,
                3,
                -3,
                7,
                -7,
                100,
                -100,
                46_341,
                i32::MAX.into(),
                i32::MIN.into(),
                (i32::MIN + 1).into(),
            ],
        ),
        (DType::I64, vec![0, 1, -1, 2, -3, 7, -7, 3_037_000_500, -3_037_000_500, i64::MAX.into(), i64::MIN.into()]),
        (DType::U8, vec![0, 1, 2, 3, 7, 16, 100, 128, 200, 255]),
    ];
    let pow_exps: [i128; 9] = [0, 1, 2, 3, 7, 8, 31, 32, 63];
    for (dtype, vals) in cases {
        for &op in BinaryOp::ALL {
            let name = op.name();
            if LOGICAL.contains(&name) || FLOAT_ONLY.contains(&name) {
                let x = int_tensor(&vals, &[vals.len()], dtype);
                assert_eq!(err_kind(binary(op, &x, &x)), ErrorKind::DType, "{name} on {dtype}");
                continue;
            }
            let bs: Vec<i128> = match name {
                "real_div" | "floor_div" | "floor_mod" | "truncate_mod" => {
                    vals.iter().copied().filter(|&v| v != 0).collect()
                }
                "pow" => pow_exps.to_vec(),
                _ => vals.clone(),
            };
            let (mut av, mut bv) = (Vec::new(), Vec::new());
            for &p in &vals {
                for &q in &bs {
                    av.push(p);
                    bv.push(q);
                }
            }
            let a = int_tensor(&av, &[av.len()], dtype);
            let b = int_tensor(&bv, &[bv.len()], dtype);
            let y = binary(op, &a, &b).unwrap_or_else(|e| panic!("{name} on {dtype}: {e}"));
            assert_eq!(y.dtype(), if op.is_comparison() { DType::Bool } else { dtype });
            let got = ints(&y);
            for (i, (&p, &q)) in av.iter().zip(&bv).enumerate() {
                let want = int_binary_ref(dtype, name, p, q);
                assert_eq!(got[i], want, "{dtype} {name}({p}, {q})");
            }
        }
    }
    // Spelled out: Python floor semantics and wrapping.
    let a = Tensor::from([7i32, -7, 7, -7, i32::MIN, i32::MIN]);
    let b = Tensor::from([2i32, 2, -2, -2, -1, 1]);
    assert_eq!(ops::floor_div(&a, &b).unwrap().to_vec::<i32>().unwrap(), vec![3, -4, -4, 3, i32::MIN, i32::MIN]);
    assert_eq!(ops::floor_mod(&a, &b).unwrap().to_vec::<i32>().unwrap(), vec![1, 1, -1, -1, 0, 0]);
    assert_eq!(ops::truncate_div(&a, &b).unwrap().to_vec::<i32>().unwrap(), vec![3, -3, -3, 3, i32::MIN, i32::MIN]);
    assert_eq!(ops::truncate_mod(&a, &b).unwrap().to_vec::<i32>().unwrap(), vec![1, -1, 1, -1, 0, 0]);
    assert_eq!(ops::add(&Tensor::from([i32::MAX]), 1).unwrap().to_vec::<i32>().unwrap(), vec![i32::MIN]);
    assert_eq!(ops::sub(&Tensor::from([0u8]), 1).unwrap().to_vec::<u8>().unwrap(), vec![255]);
    assert_eq!(ops::mul(&Tensor::from([16u8]), 16).unwrap().to_vec::<u8>().unwrap(), vec![0]);
    assert_eq!(
        ops::pow(&Tensor::from([2i32, -2, 0, 5]), 31).unwrap().to_vec::<i32>().unwrap(),
        vec![i32::MIN, i32::MIN, 0, -2_128_439_731]
    );
    assert_eq!(ops::pow(&Tensor::from([0i64, 7]), 0).unwrap().to_vec::<i64>().unwrap(), vec![1, 1]);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    for dtype in [DType::I32, DType::I64, DType::U8] {
        let a = int_tensor(&[6, 4, 2], &[3], dtype);
        let b = int_tensor(&[1, 0, 2], &[3], dtype);
        for name in ["real_div", "floor_div", "floor_mod", "truncate_mod"] {
            let op = *BinaryOp::ALL.iter().find(|o| o.name() == name).unwrap();
            assert_eq!(err_kind(binary(op, &a, &b)), ErrorKind::InvalidArgument, "{name} on {dtype}");
        }
    }
    let a = Tensor::from([[1i32, 2], [3, 4]]);
    assert_eq!(err_kind(ops::truncate_div(&a, 0)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::floor_mod(&a, &Tensor::from([1i32, 0]))), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(&a % &Tensor::from([0i32])), ErrorKind::InvalidArgument);
}

#[test]
fn integer_negative_power_is_an_error() {
    assert_eq!(err_kind(ops::pow(&Tensor::from([2i32, 3]), &Tensor::from([1i32, -1]))), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::pow(&Tensor::from([2i64]), -2)), ErrorKind::InvalidArgument);
}

#[test]
fn binary_dtype_and_shape_errors() {
    let f = Tensor::from([1.0f32, 2.0]);
    let d = Tensor::from([1.0f64, 2.0]);
    let i = Tensor::from([1i32, 2]);
    let b = Tensor::from([true, false]);
    for &op in BinaryOp::ALL {
        let (x, y) = if LOGICAL.contains(&op.name()) { (&b, &f) } else { (&f, &d) };
        assert_eq!(err_kind(binary(op, x, y)), ErrorKind::DType, "{} with mixed dtypes", op.name());
        assert_eq!(err_kind(binary(op, &i, &f)), ErrorKind::DType, "{} i32 with f32", op.name());
        let ok_on_bool = LOGICAL.contains(&op.name()) || ["equal", "not_equal"].contains(&op.name());
        if !ok_on_bool {
            assert_eq!(err_kind(binary(op, &b, &b)), ErrorKind::DType, "{} on bool", op.name());
        }
        if LOGICAL.contains(&op.name()) {
            assert_eq!(err_kind(binary(op, &f, &f)), ErrorKind::DType, "{} on f32", op.name());
        }
        // Shapes that do not broadcast.
        let (p, q) = if LOGICAL.contains(&op.name()) {
            (Tensor::from([true, false, true]), Tensor::from([true, false, true, false]))
        } else {
            (Tensor::from([1.0f32, 2.0, 3.0]), Tensor::from([1.0f32, 2.0, 3.0, 4.0]))
        };
        assert_eq!(err_kind(binary(op, &p, &q)), ErrorKind::Shape, "{} [3] with [4]", op.name());
    }
    let a = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let t = Tensor::from([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    assert_eq!(err_kind(ops::add(&a, &t)), ErrorKind::Shape);
    let e = tensor_of(&[], &[2, 0], DType::F32);
    assert_eq!(err_kind(ops::mul(&e, &Tensor::from([1.0f32, 2.0, 3.0]))), ErrorKind::Shape);
}

#[test]
fn bool_binary_truth_tables() {
    let a = Tensor::from([false, false, true, true]);
    let b = Tensor::from([false, true, false, true]);
    assert_eq!(bools(&ops::logical_and(&a, &b).unwrap()), vec![false, false, false, true]);
    assert_eq!(bools(&ops::logical_or(&a, &b).unwrap()), vec![false, true, true, true]);
    assert_eq!(bools(&ops::equal(&a, &b).unwrap()), vec![true, false, false, true]);
    assert_eq!(bools(&ops::not_equal(&a, &b).unwrap()), vec![false, true, true, false]);
    // With a scalar operand and with broadcasting.
    assert_eq!(bools(&ops::logical_or(&a, true).unwrap()), vec![true; 4]);
    let col = Tensor::from_vec(vec![true, false], [2, 1]).unwrap();
    let row = Tensor::from([true, false, true]);
    let r = ops::logical_and(&col, &row).unwrap();
    assert_eq!(r.shape().dims(), &[2, 3]);
    assert_eq!(bools(&r), vec![true, false, true, false, false, false]);
}

// ---------------------------------------------------------------------------
// Broadcasting.
// ---------------------------------------------------------------------------

fn broadcast_pairs() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![3, 1], vec![1, 4]),
        (vec![2, 3, 4], vec![4]),
        (vec![4], vec![2, 3, 4]),
        (vec![], vec![5]),
        (vec![5], vec![]),
        (vec![], vec![]),
        (vec![1], vec![0]),
        (vec![0], vec![1]),
        (vec![0], vec![]),
        (vec![2, 0, 3], vec![3]),
        (vec![2, 0, 3], vec![1, 1]),
        (vec![4, 1, 3], vec![2, 1]),
        (vec![2, 1, 4], vec![3, 1]),
        (vec![3, 1, 1], vec![1, 2, 1]),
        (vec![1, 1], vec![]),
        (vec![2, 3], vec![2, 3]),
        (vec![1, 3], vec![2, 1]),
        (vec![2, 1, 3, 1], vec![5, 1, 4]),
    ]
}

#[test]
fn broadcasting_floats_against_index_reference() {
    let names =
        ["add", "sub", "mul", "real_div", "floor_mod", "pow", "maximum", "minimum", "less", "equal", "greater_equal"];
    for (sa, sb) in broadcast_pairs() {
        let out = broadcast_shape(&sa, &sb).unwrap();
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let av: Vec<f64> = (0..na).map(|i| (i % 7) as f64 * 0.75 - 2.0).collect();
        let bv: Vec<f64> = (0..nb).map(|j| (j % 5) as f64 * 1.25 + 0.5).collect();
        for dtype in [DType::F32, DType::F64] {
            let a = tensor_of(&av, &sa, dtype);
            let b = tensor_of(&bv, &sb, dtype);
            for name in names {
                let op = *BinaryOp::ALL.iter().find(|o| o.name() == name).unwrap();
                for swap in [false, true] {
                    let (x, y, xs, ys, xv, yv) =
                        if swap { (&b, &a, &sb, &sa, &bv, &av) } else { (&a, &b, &sa, &sb, &av, &bv) };
                    let r = binary(op, x, y).unwrap_or_else(|e| panic!("{name} {xs:?} x {ys:?}: {e}"));
                    assert_eq!(r.shape().dims(), &out[..], "{name} {xs:?} x {ys:?}");
                    let got = values(&r);
                    for (k, &g) in got.iter().enumerate() {
                        let idx = unravel(k, &out);
                        let (p, q) = (xv[broadcast_source(&idx, xs)], yv[broadcast_source(&idx, ys)]);
                        let (p, q) = (round_to(dtype, p), round_to(dtype, q));
                        let want = float_binary_ref(dtype, name, p, q);
                        let tol = (name == "pow").then(|| 2e-6 * want.abs());
                        let bad = if COMPARISONS.contains(&name) {
                            g != want
                        } else {
                            check_value(dtype, tol, g, want).is_some()
                        };
                        assert!(!bad, "{dtype} {name} {xs:?} x {ys:?} at {idx:?}: {g} vs {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn broadcasting_integers_against_index_reference() {
    for (sa, sb) in broadcast_pairs() {
        let out = broadcast_shape(&sa, &sb).unwrap();
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let av: Vec<i128> = (0..na).map(|i| (i as i128 % 9) * 3 - 11).collect();
        let bv: Vec<i128> =
            (0..nb).map(|j| if j % 2 == 0 { j as i128 % 4 + 1 } else { -(j as i128 % 4) - 1 }).collect();
        for dtype in [DType::I32, DType::I64] {
            let a = int_tensor(&av, &sa, dtype);
            let b = int_tensor(&bv, &sb, dtype);
            for name in
                ["add", "sub", "mul", "real_div", "floor_div", "floor_mod", "maximum", "less_equal", "not_equal"]
            {
                let op = *BinaryOp::ALL.iter().find(|o| o.name() == name).unwrap();
                let r = binary(op, &a, &b).unwrap();
                assert_eq!(r.shape().dims(), &out[..], "{name} {sa:?} x {sb:?}");
                for (k, g) in ints(&r).into_iter().enumerate() {
                    let idx = unravel(k, &out);
                    let (p, q) = (av[broadcast_source(&idx, &sa)], bv[broadcast_source(&idx, &sb)]);
                    assert_eq!(g, int_binary_ref(dtype, name, p, q), "{dtype} {name} {sa:?} x {sb:?} at {idx:?}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Views: transposed, stepped, reversed and broadcast inputs.
// ---------------------------------------------------------------------------

/// Named non-contiguous [4, 6] f32 views, each checked element by element
/// against its index formula before it is used.
fn views_4x6() -> Vec<(&'static str, Tensor)> {
    let val = |i: usize| (i as f32) * 0.37 - 5.1;
    let mut out = Vec::new();

    // Transpose of a [6, 4].
    let base = Tensor::from_vec((0..24).map(val).collect::<Vec<_>>(), [6, 4]).unwrap();
    let v = ops::transpose(&base, &[1, 0]).unwrap();
    let want: Vec<f32> = (0..24).map(|k| val((k % 6) * 4 + k / 6)).collect();
    out.push(("transposed", v, want));

    // Every second row and column of an [8, 12].
    let base = Tensor::from_vec((0..96).map(val).collect::<Vec<_>>(), [8, 12]).unwrap();
    let v =
        ops::strided_slice(&base, &[SliceItem::stepped(None, None, 2), SliceItem::stepped(Some(1), None, 2)]).unwrap();
    let want: Vec<f32> = (0..24).map(|k| val((k / 6) * 2 * 12 + (k % 6) * 2 + 1)).collect();
    out.push(("step 2", v, want));

    // Negative steps: rows reversed, every second column from the end of a [4, 12].
    let base = Tensor::from_vec((0..48).map(val).collect::<Vec<_>>(), [4, 12]).unwrap();
    let v = ops::strided_slice(&base, &[SliceItem::stepped(None, None, -1), SliceItem::stepped(Some(-1), None, -2)])
        .unwrap();
    let want: Vec<f32> = (0..24).map(|k| val((3 - k / 6) * 12 + 11 - 2 * (k % 6))).collect();
    out.push(("negative steps", v, want));

    // reverse() on both axes of a [4, 6].
    let base = Tensor::from_vec((0..24).map(val).collect::<Vec<_>>(), [4, 6]).unwrap();
    let v = ops::reverse(&base, &[0, 1]).unwrap();
    let want: Vec<f32> = (0..24).map(|k| val(23 - k)).collect();
    out.push(("reversed", v, want));

    // Broadcast views of a row and of a column.
    let row = Tensor::from_vec((0..6).map(val).collect::<Vec<_>>(), [1, 6]).unwrap();
    let v = ops::broadcast_to(&row, [4, 6]).unwrap();
    out.push(("broadcast row", v, (0..24).map(|k| val(k % 6)).collect()));
    let col = Tensor::from_vec((0..4).map(val).collect::<Vec<_>>(), [4, 1]).unwrap();
    let v = ops::broadcast_to(&col, [4, 6]).unwrap();
    out.push(("broadcast column", v, (0..24).map(|k| val(k / 6)).collect()));

    // An offset window (rows 1..5, columns 2..8 of a [6, 10]).
    let base = Tensor::from_vec((0..60).map(val).collect::<Vec<_>>(), [6, 10]).unwrap();
    let v = ops::strided_slice(&base, &[SliceItem::range(1, 5), SliceItem::range(2, 8)]).unwrap();
    out.push(("window", v, (0..24).map(|k| val((k / 6 + 1) * 10 + k % 6 + 2)).collect()));

    // A transposed 3-D tensor, sliced back to [4, 6].
    let base = Tensor::from_vec((0..48).map(val).collect::<Vec<_>>(), [2, 6, 4]).unwrap();
    let v = ops::transpose(&base, &[0, 2, 1]).unwrap(); // [2, 4, 6]
    let v = ops::strided_slice(&v, &[SliceItem::Index(1)]).unwrap();
    out.push(("transposed 3-D slice", v, (0..24).map(|k| val(24 + (k % 6) * 4 + k / 6)).collect()));

    out.into_iter()
        .map(|(name, v, want)| {
            assert_eq!(v.shape().dims(), &[4, 6], "{name}");
            assert_eq!(v.to_vec::<f32>().unwrap(), want, "view `{name}` holds the wrong elements");
            (name, v)
        })
        .collect()
}

#[test]
fn unary_on_views_equals_contiguous() {
    for (name, v) in views_4x6() {
        let c = contiguous_copy(&v);
        for &op in UnaryOp::ALL {
            if op.name() == "logical_not" {
                continue;
            }
            assert_same(&unary(op, &v).unwrap(), &unary(op, &c).unwrap(), &format!("{} on {name}", op.name()));
        }
        // f64 and f16 views too.
        for dtype in [DType::F64, DType::F16] {
            let vd = ops::cast(&v, dtype).unwrap();
            let cd = contiguous_copy(&vd);
            for op in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Abs, UnaryOp::Round] {
                assert_same(
                    &unary(op, &vd).unwrap(),
                    &unary(op, &cd).unwrap(),
                    &format!("{} on {dtype} {name}", op.name()),
                );
            }
        }
        let b = ops::greater(&v, 0.0).unwrap();
        assert_same(&ops::logical_not(&b).unwrap(), &ops::logical_not(&contiguous_copy(&b)).unwrap(), "logical_not");
    }
}

#[test]
fn binary_on_views_equals_contiguous() {
    let views = views_4x6();
    let plain = Tensor::from_vec((0..24).map(|i| 1.5 - i as f32 * 0.21).collect::<Vec<_>>(), [4, 6]).unwrap();
    let extra = ("contiguous", plain);
    for (na, a) in &views {
        let ca = contiguous_copy(a);
        for (nb, b) in views.iter().chain(std::iter::once(&extra)) {
            let cb = contiguous_copy(b);
            for &op in BinaryOp::ALL {
                if LOGICAL.contains(&op.name()) {
                    continue;
                }
                let what = format!("{} on {na} x {nb}", op.name());
                assert_same(&binary(op, a, b).unwrap(), &binary(op, &ca, &cb).unwrap(), &what);
            }
            // With broadcasting against a view: [4, 6] x [6] row of the other view.
            let row = ops::strided_slice(b, &[SliceItem::Index(2)]).unwrap();
            let crow = contiguous_copy(&row);
            assert_same(
                &ops::sub(a, &row).unwrap(),
                &ops::sub(&ca, &crow).unwrap(),
                &format!("sub {na} x row of {nb}"),
            );
        }
        // Integer views.
        let ia = ops::cast(a, DType::I32).unwrap();
        let ica = contiguous_copy(&ia);
        let d = Tensor::from([3i32, -2, 5, 7, -1, 4]);
        for name in ["add", "mul", "floor_div", "floor_mod", "maximum", "less"] {
            let op = *BinaryOp::ALL.iter().find(|o| o.name() == name).unwrap();
            assert_same(&binary(op, &ia, &d).unwrap(), &binary(op, &ica, &d).unwrap(), &format!("i32 {name} on {na}"));
        }
    }
}

#[test]
fn large_views_use_the_parallel_path() {
    // 400 x 300 = 120_000 elements: several parallel tasks.
    let mut rng = Lcg(7);
    let base =
        Tensor::from_vec((0..120_000).map(|_| rng.range(-8.0, 8.0) as f32).collect::<Vec<_>>(), [300, 400]).unwrap();
    let t = ops::transpose(&base, &[1, 0]).unwrap();
    let ct = contiguous_copy(&t);
    let rev = ops::reverse(&base, &[1]).unwrap();
    let rt = ops::transpose(&rev, &[1, 0]).unwrap();
    let crt = contiguous_copy(&rt);
    assert_same(&ops::exp(&t).unwrap(), &ops::exp(&ct).unwrap(), "exp on large transpose");
    assert_same(&ops::tanh(&rt).unwrap(), &ops::tanh(&crt).unwrap(), "tanh on large reversed transpose");
    assert_same(&ops::add(&t, &rt).unwrap(), &ops::add(&ct, &crt).unwrap(), "add of two large views");
    assert_same(&ops::less(&t, &rt).unwrap(), &ops::less(&ct, &crt).unwrap(), "less of two large views");
    let stepped = ops::strided_slice(&base, &[SliceItem::ALL, SliceItem::stepped(None, None, -3)]).unwrap();
    let cs = contiguous_copy(&stepped);
    assert_same(&ops::sigmoid(&stepped).unwrap(), &ops::sigmoid(&cs).unwrap(), "sigmoid on large stepped view");
    assert_same(&ops::cast(&t, DType::F16).unwrap(), &ops::cast(&ct, DType::F16).unwrap(), "cast of large transpose");
    // Element check of the transposed sum against the base data.
    let b = base.to_vec::<f32>().unwrap();
    let sum = ops::add(&t, &rt).unwrap().to_vec::<f32>().unwrap();
    for (k, &s) in sum.iter().enumerate().step_by(997) {
        let (i, j) = (k / 300, k % 300); // t[i, j] = base[j, i]; rt[i, j] = base[j, 399 - i]
        assert_eq!(s, b[j * 400 + i] + b[j * 400 + 399 - i], "at {i}, {j}");
    }
}

// ---------------------------------------------------------------------------
// Empty tensors and scalars.
// ---------------------------------------------------------------------------

#[test]
fn empty_tensors() {
    for shape in [vec![0], vec![2, 0], vec![0, 3]] {
        let e = tensor_of(&[], &shape, DType::F32);
        for &op in UnaryOp::ALL {
            if op.name() == "logical_not" {
                continue;
            }
            let y = unary(op, &e).unwrap();
            assert_eq!(y.shape().dims(), &shape[..], "{}", op.name());
            assert_eq!(y.numel(), Some(0));
        }
        for &op in BinaryOp::ALL {
            if LOGICAL.contains(&op.name()) {
                continue;
            }
            let y = binary(op, &e, &e).unwrap();
            assert_eq!(y.shape().dims(), &shape[..], "{}", op.name());
            let y = binary(op, &e, &Tensor::from(2.0f32)).unwrap();
            assert_eq!(y.shape().dims(), &shape[..], "{} with a scalar", op.name());
        }
        let ei = tensor_of(&[], &shape, DType::I32);
        assert_eq!(ops::add(&ei, 1).unwrap().shape().dims(), &shape[..]);
        let eb = tensor_of(&[], &shape, DType::Bool);
        assert_eq!(ops::logical_not(&eb).unwrap().shape().dims(), &shape[..]);
        for dtype in DType::ALL {
            let c = ops::cast(&e, dtype).unwrap();
            assert_eq!((c.dtype(), c.shape().dims()), (dtype, &shape[..]));
        }
    }
    // [2, 0] with [0] and with [1].
    let e = tensor_of(&[], &[2, 0], DType::F32);
    assert_eq!(ops::add(&e, &tensor_of(&[], &[0], DType::F32)).unwrap().shape().dims(), &[2, 0]);
    assert_eq!(ops::mul(&e, &Tensor::from([3.0f32])).unwrap().shape().dims(), &[2, 0]);
    let s = ops::select(&tensor_of(&[], &[0], DType::Bool), &e, 1.0).unwrap();
    assert_eq!(s.shape().dims(), &[2, 0]);
}

/// Views of empty tensors (whose offsets may point past an empty buffer).
#[test]
fn empty_views() {
    let e = tensor_of(&[], &[2, 0], DType::F32);
    let views = [
        ("reverse", ops::reverse(&e, &[0, 1]).unwrap()),
        ("transpose", ops::transpose(&ops::transpose(&e, &[1, 0]).unwrap(), &[1, 0]).unwrap()),
        ("slice", ops::strided_slice(&e, &[SliceItem::stepped(None, None, -1)]).unwrap()),
        ("broadcast", ops::broadcast_to(&tensor_of(&[], &[1, 0], DType::F32), [2, 0]).unwrap()),
        (
            "empty window",
            ops::strided_slice(
                &tensor_of(&[1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32),
                &[SliceItem::ALL, SliceItem::range(1, 1)],
            )
            .unwrap(),
        ),
    ];
    for (name, v) in views {
        assert_eq!(v.shape().dims(), &[2, 0], "{name}");
        assert_eq!(v.to_vec::<f32>().unwrap(), Vec::<f32>::new(), "{name}");
        assert_eq!(ops::exp(&v).unwrap().shape().dims(), &[2, 0], "exp of {name}");
        assert_eq!(ops::mul(&v, 1.0).unwrap().shape().dims(), &[2, 0], "mul of {name}");
        assert_eq!(ops::add(&v, &e).unwrap().shape().dims(), &[2, 0], "add of {name}");
        assert_eq!(ops::cast(&v, DType::I32).unwrap().shape().dims(), &[2, 0], "cast of {name}");
        assert_eq!(
            ops::select(&ops::less(&v, 0.0).unwrap(), &v, 1.0).unwrap().shape().dims(),
            &[2, 0],
            "select of {name}"
        );
    }
}

#[test]
fn rank0_scalars() {
    let x = Tensor::from(2.0f32);
    let y = Tensor::from(-3.0f32);
    assert_eq!(x.rank(), 0);
    let r = ops::mul(&x, &y).unwrap();
    assert_eq!(r.rank(), 0);
    assert_eq!(r.to_scalar::<f32>().unwrap(), -6.0);
    assert_eq!(ops::exp(&x).unwrap().rank(), 0);
    assert_eq!(ops::sqrt(&Tensor::from(16.0f64)).unwrap().to_scalar::<f64>().unwrap(), 4.0);
    assert_eq!(ops::floor_mod(&Tensor::from(-7i64), &Tensor::from(3i64)).unwrap().to_scalar::<i64>().unwrap(), 2);
    assert!(ops::less(&y, &x).unwrap().to_scalar::<bool>().unwrap());
    // A scalar with a vector broadcasts.
    let v = Tensor::from([1.0f32, 2.0, 3.0]);
    assert_eq!(ops::sub(&x, &v).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0, -1.0]);
    // Two Rust numbers: f32 result of rank 0.
    let r = ops::add(1.5, 2.0).unwrap();
    assert_eq!((r.dtype(), r.rank(), r.to_scalar::<f32>().unwrap()), (DType::F32, 0, 3.5));
    let r = ops::add(2, 3).unwrap();
    assert_eq!((r.dtype(), r.to_scalar::<i32>().unwrap()), (DType::I32, 5));
    let c = ops::cast(&Tensor::from(2.9f32), DType::I32).unwrap();
    assert_eq!((c.rank(), c.to_scalar::<i32>().unwrap()), (0, 2));
}

// ---------------------------------------------------------------------------
// select (where).
// ---------------------------------------------------------------------------

#[test]
fn select_broadcasts_all_three() {
    let cases: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 1], vec![1, 4], vec![]),
        (vec![], vec![2, 2], vec![2, 2]),
        (vec![4], vec![3, 4], vec![3, 1]),
        (vec![2, 1, 3], vec![4, 1], vec![3]),
        (vec![1], vec![0], vec![1]),
        (vec![5], vec![5], vec![5]),
    ];
    for (sc, sa, sb) in cases {
        let out = broadcast_shape(&broadcast_shape(&sc, &sa).unwrap(), &sb).unwrap();
        let nc: usize = sc.iter().product();
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let cv: Vec<bool> = (0..nc).map(|i| (i * 7 + 3) % 3 != 0).collect();
        let av: Vec<f64> = (0..na).map(|i| i as f64 + 0.5).collect();
        let bv: Vec<f64> = (0..nb).map(|i| -(i as f64) - 100.0).collect();
        let c = Tensor::from_vec(cv.clone(), sc.clone()).unwrap();
        for dtype in [DType::F32, DType::I64, DType::F16] {
            let a = tensor_of(&av, &sa, dtype);
            let b = tensor_of(&bv, &sb, dtype);
            let (av, bv) = (values(&a), values(&b)); // as the dtype holds them
            let r = ops::select(&c, &a, &b).unwrap();
            assert_eq!((r.dtype(), r.shape().dims()), (dtype, &out[..]), "{sc:?} {sa:?} {sb:?}");
            for (k, g) in values(&r).into_iter().enumerate() {
                let idx = unravel(k, &out);
                let want = if cv[broadcast_source(&idx, &sc)] {
                    av[broadcast_source(&idx, &sa)]
                } else {
                    bv[broadcast_source(&idx, &sb)]
                };
                assert_eq!(g, want, "{dtype} select {sc:?} {sa:?} {sb:?} at {idx:?}");
            }
        }
    }
}

#[test]
fn select_with_scalars_views_and_errors() {
    let cond = Tensor::from([true, false, true, false]);
    let t = Tensor::from([10.0f32, 20.0, 30.0, 40.0]);
    let r = ops::select(&cond, 1.0, &t).unwrap();
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![1.0, 20.0, 1.0, 40.0]);
    let r = ops::select(&cond, &t, 0.0).unwrap();
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![10.0, 0.0, 30.0, 0.0]);
    let ti = Tensor::from([5i32, 6, 7, 8]);
    assert_eq!(ops::select(&cond, &ti, -1).unwrap().to_vec::<i32>().unwrap(), vec![5, -1, 7, -1]);
    let r = ops::select(&cond, 1.0, 2.0).unwrap();
    assert_eq!((r.dtype(), r.to_vec::<f32>().unwrap()), (DType::F32, vec![1.0, 2.0, 1.0, 2.0]));
    // NaN in the branch not taken does not leak.
    let nan = Tensor::from([f32::NAN; 4]);
    assert_eq!(ops::select(&cond, &t, &nan).unwrap().to_vec::<f32>().unwrap()[0], 10.0);
    // Bool branches.
    let r = ops::select(&cond, &Tensor::from([true; 4]), false).unwrap();
    assert_eq!(bools(&r), vec![true, false, true, false]);
    // Views for all three.
    let c2 = ops::transpose(&Tensor::from([[true, false, false], [true, true, false]]), &[1, 0]).unwrap();
    let a2 = ops::reverse(&Tensor::from([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]), &[0]).unwrap();
    let b2 = ops::broadcast_to(&Tensor::from([-1.0f32, -2.0]), [3, 2]).unwrap();
    let r = ops::select(&c2, &a2, &b2).unwrap();
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![5.0, 6.0, -1.0, 4.0, -1.0, -2.0]);
    assert_same(
        &r,
        &ops::select(&contiguous_copy(&c2), &contiguous_copy(&a2), &contiguous_copy(&b2)).unwrap(),
        "select views",
    );
    // Errors.
    assert_eq!(err_kind(ops::select(&Tensor::from([1.0f32, 0.0]), 1.0, 2.0)), ErrorKind::DType);
    assert_eq!(err_kind(ops::select(&cond, &t, &Tensor::from([1.0f64; 4]))), ErrorKind::DType);
    assert_eq!(err_kind(ops::select(&cond, &t, &Tensor::from([1.0f32; 3]))), ErrorKind::Shape);
    assert_eq!(err_kind(ops::select(&Tensor::from([true, false, true]), &t, 0.0)), ErrorKind::Shape);
}

// ---------------------------------------------------------------------------
// cast.
// ---------------------------------------------------------------------------

/// Exact source values of one dtype: floats as f64, integers as i128.
#[derive(Clone, Copy, Debug)]
enum Src {
    F(f64),
    I(i128),
    B(bool),
}

fn cast_sources(dtype: DType) -> Vec<Src> {
    let f32s = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        1.5,
        -1.5,
        2.5,
        -2.5,
        2.7,
        -2.7,
        0.3,
        -0.9,
        127.5,
        128.0,
        255.9,
        256.0,
        300.0,
        -129.5,
        65504.0,
        65519.0,
        65520.0,
        1e5,
        3e9,
        -3e9,
        1e20,
        -1e20,
        f64::from(f32::MAX),
        1e-8,
        1e-40,
        16_777_216.0,
        1.0 + 2f64.powi(-10),
        1.0 + 2f64.powi(-11),
        2_147_483_520.0,
        2_147_483_648.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let rounded = |vals: Vec<f64>| -> Vec<Src> {
        // Keep each value as the dtype holds it.
        values(&tensor_of(&vals, &[vals.len()], dtype)).into_iter().map(Src::F).collect()
    };
    match dtype {
        DType::F32 => rounded(f32s),
        DType::F64 => {
            let mut v = f32s;
            v.extend([
                1e300,
                -1e300,
                5e-324,
                2_147_483_647.0,
                2_147_483_647.9,
                -2_147_483_648.5,
                -2_147_483_649.0,
                9.3e18,
                -9.3e18,
                255.5,
                0.1,
                1.0 + 2f64.powi(-11) + 2f64.powi(-40),
                1.0 + 2f64.powi(-8) + 2f64.powi(-40),
                -(1.0 + 2f64.powi(-8) + 2f64.powi(-40)),
                65_519.999_999_999_99,
                3e-8,
            ]);
            rounded(v)
        }
        DType::F16 => rounded(vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            1.5,
            -2.5,
            2.75,
            255.9,
            300.0,
            -129.5,
            65504.0,
            -65504.0,
            6e-8,
            0.1,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ]),
        DType::BF16 => rounded(vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            2.5,
            255.0,
            256.0,
            -300.0,
            3e9,
            -3e9,
            1e38,
            1e-30,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ]),
        DType::I32 => [
            0,
            1,
            -1,
            127,
            128,
            255,
            256,
            -129,
            300,
            65504,
            65520,
            70000,
            16_777_217,
            (1 << 30) + (1 << 22) + 1,
            i32::MAX as i128,
            i32::MIN as i128,
        ]
        .into_iter()
        .map(Src::I)
        .collect(),
        DType::I64 => [
            0,
            1,
            -1,
            255,
            256,
            1 << 31,
            -(1 << 31) - 1,
            (1 << 40) + 3,
            16_777_217,
            (1 << 60) + (1 << 52) + 1, // bf16: just above a tie
            (1 << 60) + (1 << 36) + 1, // f32: just above a tie
            i64::MAX as i128,
            i64::MIN as i128,
        ]
        .into_iter()
        .map(Src::I)
        .collect(),
        DType::U8 => [0, 1, 127, 128, 255].into_iter().map(Src::I).collect(),
        DType::I8 => [0, 1, -1, 127, -128, -100].into_iter().map(Src::I).collect(),
        DType::I16 => [0, 1, -1, 255, 256, -129, 32767, -32768].into_iter().map(Src::I).collect(),
        DType::U16 => [0, 1, 255, 256, 2049, 65535].into_iter().map(Src::I).collect(),
        DType::U32 => [0, 1, 255, 65536, 16_777_217, 2_147_483_648, u32::MAX as i128].into_iter().map(Src::I).collect(),
        DType::U64 => [0, 1, 256, 1 << 40, (1 << 60) + (1 << 36) + 1, i64::MAX as i128, u64::MAX as i128]
            .into_iter()
            .map(Src::I)
            .collect(),
        DType::Bool => vec![Src::B(false), Src::B(true)],
        DType::C64 | DType::C128 => panic!("cast sources are real (complex casts: the spectral tests)"),
    }
}

fn source_tensor(dtype: DType, src: &[Src]) -> Tensor {
    let n = [src.len()];
    match dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            let v: Vec<f64> = src.iter().map(|s| if let Src::F(f) = s { *f } else { unreachable!() }).collect();
            tensor_of(&v, &n, dtype)
        }
        d if d.is_int() => {
            let v: Vec<i128> = src.iter().map(|s| if let Src::I(i) = s { *i } else { unreachable!() }).collect();
            int_tensor(&v, &n, dtype)
        }
        _ => Tensor::from_vec(src.iter().map(|s| matches!(s, Src::B(true))).collect::<Vec<_>>(), n).unwrap(),
    }
}

/// An integer rounded to the nearest value of a float dtype, computed on the
/// exact integer (not through f64, which would round first beyond 2^53).
fn round_int_to(dtype: DType, i: i128) -> f64 {
    let p = match dtype {
        DType::F32 => 24,
        DType::F64 => 53,
        DType::F16 => 11,
        DType::BF16 => 8,
        other => panic!("round_int_to {other}"),
    };
    let a = i.unsigned_abs();
    let bits = 128 - a.leading_zeros() as i32; // significant bits of |i|
    let r = if bits <= p {
        a as f64 // exact
    } else {
        let q = 1u128 << (bits - p);
        let (mut m, rem) = (a / q, a % q);
        if rem > q / 2 || (rem == q / 2 && m % 2 == 1) {
            m += 1;
        }
        m as f64 * q as f64 // m <= 2^p and q a power of two: exact
    };
    // Only f16 can overflow from an i64.
    let r = if dtype == DType::F16 && r > 65504.0 { f64::INFINITY } else { r };
    if i < 0 {
        -r
    } else {
        r
    }
}

/// The expected element after casting `s` to `to`.
fn cast_expected(s: Src, to: DType) -> Src {
    let int_range = |d: DType| -> (i128, i128) {
        match d {
            DType::I32 => (i32::MIN.into(), i32::MAX.into()),
            DType::I64 => (i64::MIN.into(), i64::MAX.into()),
            DType::I8 => (i8::MIN.into(), i8::MAX.into()),
            DType::I16 => (i16::MIN.into(), i16::MAX.into()),
            DType::U16 => (0, u16::MAX.into()),
            DType::U32 => (0, u32::MAX.into()),
            DType::U64 => (0, u64::MAX.into()),
            _ => (0, 255),
        }
    };
    match (s, to.is_float(), to.is_int()) {
        (Src::F(v), true, _) => Src::F(round_to(to, v)),
        (Src::F(v), _, true) => {
            // Truncate toward zero, saturate, NaN -> 0.
            let (lo, hi) = int_range(to);
            Src::I(if v.is_nan() {
                0
            } else if v >= hi as f64 {
                hi
            } else if v <= lo as f64 {
                lo
            } else {
                (v.trunc() as i128).clamp(lo, hi)
            })
        }
        (Src::F(v), false, false) => Src::B(v != 0.0),
        (Src::I(i), true, _) => Src::F(round_int_to(to, i)),
        (Src::I(i), _, true) => Src::I(wrap_int(to, i)),
        (Src::I(i), false, false) => Src::B(i != 0),
        (Src::B(b), true, _) => Src::F(flag(b)),
        (Src::B(b), _, true) => Src::I(b.into()),
        (Src::B(b), false, false) => Src::B(b),
    }
}

#[test]
fn cast_between_every_pair_of_dtypes() {
    let mut failures = Vec::new();
    // Real dtypes; complex casts are checked with the complex ops.
    let real = || DType::ALL.into_iter().filter(|d| !d.is_complex());
    for from in real() {
        let src = cast_sources(from);
        let x = source_tensor(from, &src);
        for to in real() {
            let y = ops::cast(&x, to).unwrap_or_else(|e| panic!("cast {from} -> {to}: {e}"));
            assert_eq!((y.dtype(), y.shape().dims()), (to, &[src.len()][..]), "cast {from} -> {to}");
            let got: Vec<Src> = if to.is_float() {
                values(&y).into_iter().map(Src::F).collect()
            } else if to.is_int() {
                ints(&y).into_iter().map(Src::I).collect()
            } else {
                bools(&y).into_iter().map(Src::B).collect()
            };
            for (&s, &g) in src.iter().zip(&got) {
                let want = cast_expected(s, to);
                let ok = match (g, want) {
                    (Src::F(g), Src::F(w)) => {
                        (g.is_nan() && w.is_nan()) || (g == w && g.is_sign_negative() == w.is_sign_negative())
                    }
                    (Src::I(g), Src::I(w)) => g == w,
                    (Src::B(g), Src::B(w)) => g == w,
                    _ => false,
                };
                if !ok {
                    failures.push(format!("cast {from} -> {to} of {s:?}: got {g:?}, want {want:?}"));
                }
            }
            // A view casts like its contiguous copy.
            let rev = ops::reverse(&x, &[0]).unwrap();
            assert_same(
                &ops::cast(&rev, to).unwrap(),
                &ops::cast(&contiguous_copy(&rev), to).unwrap(),
                "cast of a view",
            );
        }
    }
    let shown: Vec<&String> = failures.iter().take(60).collect();
    assert!(failures.is_empty(), "{} mismatches:\n{shown:#?}", failures.len());
}

/// Hand-checked conversions, bit for bit: float -> int truncation and
/// saturation, f32 -> f16/bf16 rounding (ties to even, overflow, subnormals).
#[test]
fn cast_hand_values() {
    let x = Tensor::from([2.7f32, -2.7, 0.5, -0.5, 3e9, -3e9, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    assert_eq!(
        ops::cast(&x, DType::I32).unwrap().to_vec::<i32>().unwrap(),
        vec![2, -2, 0, 0, i32::MAX, i32::MIN, 0, i32::MAX, i32::MIN]
    );
    assert_eq!(ops::cast(&x, DType::U8).unwrap().to_vec::<u8>().unwrap(), vec![2, 0, 0, 0, 255, 0, 0, 255, 0]);
    assert_eq!(
        ops::cast(&x, DType::Bool).unwrap().to_vec::<bool>().unwrap(),
        vec![true, true, true, true, true, true, true, true, true]
    );
    assert_eq!(
        ops::cast(&Tensor::from([300i32, -1, 256]), DType::U8).unwrap().to_vec::<u8>().unwrap(),
        vec![44, 255, 0]
    );
    assert_eq!(ops::cast(&Tensor::from([true, false]), DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
    assert_eq!(ops::cast(&Tensor::from([0u8, 7]), DType::Bool).unwrap().to_vec::<bool>().unwrap(), vec![false, true]);
    assert_eq!(
        ops::cast(&Tensor::from([16_777_217i32]), DType::F32).unwrap().to_vec::<f32>().unwrap(),
        vec![16_777_216.0]
    );

    let p = |e: i32| 2f32.powi(e);
    let f = Tensor::from([
        1.0 + p(-11),          // tie -> even (1.0)
        1.0 + 3.0 * p(-11),    // tie -> even (1 + 2^-9)
        1.0 + p(-11) + p(-20), // above the tie -> 1 + 2^-10
        65504.0,               // largest f16
        65519.0,               // rounds down to it
        65520.0,               // tie at the top -> inf
        1e5,                   // overflow
        -1e5,                  // overflow
        p(-24),                // smallest subnormal
        p(-25),                // tie with 0 -> 0
        p(-25) + p(-35),       // just above -> smallest subnormal
        -1e-8,                 // underflow keeps the sign
        0.1,                   // 0x2E66
        f32::INFINITY,
    ]);
    let h: Vec<u16> =
        ops::cast(&f, DType::F16).unwrap().to_vec::<f16>().unwrap().into_iter().map(f16::to_bits).collect();
    assert_eq!(
        h,
        vec![
            0x3C00, 0x3C02, 0x3C01, 0x7BFF, 0x7BFF, 0x7C00, 0x7C00, 0xFC00, 0x0001, 0x0000, 0x0001, 0x8000, 0x2E66,
            0x7C00
        ]
    );
    assert!(ops::cast(&Tensor::from([f32::NAN]), DType::F16).unwrap().to_vec::<f16>().unwrap()[0].is_nan());

    let f = Tensor::from([1.0 + p(-8), 1.0 + 3.0 * p(-8), 1.0 + p(-8) + p(-20), f32::MAX, 0.1, -2.0, f32::NAN]);
    let b = ops::cast(&f, DType::BF16).unwrap().to_vec::<bf16>().unwrap();
    let bb: Vec<u16> = b.iter().map(|v| v.to_bits()).collect();
    assert_eq!(&bb[..6], &[0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x3DCD, 0xC000]);
    assert!(b[6].is_nan());

    // f16 -> integers truncate.
    let hf = Tensor::from([f16::from_f32(-3.75), f16::from_f32(200.5), f16::from_f32(-200.5)]);
    assert_eq!(ops::cast(&hf, DType::I32).unwrap().to_vec::<i32>().unwrap(), vec![-3, 200, -200]);
    assert_eq!(ops::cast(&hf, DType::U8).unwrap().to_vec::<u8>().unwrap(), vec![0, 200, 0]);
    // f64 -> f16 rounds once (not through f32): 1 + 2^-11 + 2^-40 is above the
    // tie, but rounding to f32 first would land exactly on it and go to even.
    let d = Tensor::from([1.0 + 2f64.powi(-11) + 2f64.powi(-40)]);
    assert_eq!(ops::cast(&d, DType::F16).unwrap().to_vec::<f16>().unwrap()[0].to_bits(), 0x3C01);
}

/// A Rust number used as an operand of an f16/bf16 tensor takes its dtype
/// with one correct rounding, like a cast would.
#[test]
fn half_scalar_operands_round_once() {
    // Just above the tie between 1 and 1 + 2^-10 (f16) / 1 and 1 + 2^-7 (bf16).
    let h = tensor_of(&[0.0], &[1], DType::F16);
    let v = values(&ops::add(&h, 1.0 + 2f64.powi(-11) + 2f64.powi(-40)).unwrap())[0];
    assert_eq!(v, 1.0 + 2f64.powi(-10), "f16 + scalar");
    let b = tensor_of(&[0.0], &[1], DType::BF16);
    let v = values(&ops::add(&b, 1.0 + 2f64.powi(-8) + 2f64.powi(-40)).unwrap())[0];
    assert_eq!(v, 1.0 + 2f64.powi(-7), "bf16 + scalar");
}

// ---------------------------------------------------------------------------
// clip_by_value.
// ---------------------------------------------------------------------------

#[test]
fn clip_by_value_values() {
    let x = Tensor::from([-2.0f32, -1.0, 0.0, 0.5, 3.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
    let c = ops::clip_by_value(&x, -1.0, 1.0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&c[..7], &[-1.0, -1.0, 0.0, 0.5, 1.0, 1.0, -1.0]);
    assert!(c[7].is_nan(), "NaN stays NaN");
    let xi = Tensor::from([-5i32, 0, 5, 10, 15]);
    assert_eq!(ops::clip_by_value(&xi, 0, 10).unwrap().to_vec::<i32>().unwrap(), vec![0, 0, 5, 10, 10]);
    assert_eq!(xi.clip(1, 4).unwrap().to_vec::<i32>().unwrap(), vec![1, 1, 4, 4, 4]);
    let xu = Tensor::from([0u8, 100, 250]);
    assert_eq!(ops::clip_by_value(&xu, 10, 200).unwrap().to_vec::<u8>().unwrap(), vec![10, 100, 200]);
    // Tensor bounds, broadcast: lo is a column, hi a scalar.
    let m = Tensor::from([[0.0f64, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]]);
    let lo = Tensor::from_vec(vec![0.5f64, 1.5], [2, 1]).unwrap();
    let r = ops::clip_by_value(&m, &lo, 2.5).unwrap();
    assert_eq!(r.to_vec2::<f64>().unwrap(), vec![vec![0.5, 1.0, 2.0, 2.5], vec![1.5, 1.5, 2.0, 2.5]]);
    let h = tensor_of(&[-3.0, 0.25, 9.0], &[3], DType::F16);
    assert_eq!(values(&ops::clip_by_value(&h, -1.0, 1.0).unwrap()), vec![-1.0, 0.25, 1.0]);
    assert_eq!(err_kind(ops::clip_by_value(&x, &Tensor::from([0.0f64]), 1.0)), ErrorKind::DType);
}

// ---------------------------------------------------------------------------
// Operators.
// ---------------------------------------------------------------------------

#[test]
fn operator_overloads() {
    let a = Tensor::from([1.5f32, -2.0, 7.0]);
    let b = Tensor::from([0.5f32, 3.0, -2.0]);
    assert_eq!((&a + &b).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 1.0, 5.0]);
    assert_eq!((&a - &b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, -5.0, 9.0]);
    assert_eq!((&a * &b).unwrap().to_vec::<f32>().unwrap(), vec![0.75, -6.0, -14.0]);
    assert_eq!((&a / &b).unwrap().to_vec::<f32>().unwrap(), vec![3.0, -2.0 / 3.0, -3.5]);
    assert_eq!((&a * 2.0).unwrap().to_vec::<f32>().unwrap(), vec![3.0, -4.0, 14.0]);
    assert_eq!((2.0 * &a).unwrap().to_vec::<f32>().unwrap(), vec![3.0, -4.0, 14.0]);
    assert_eq!((1.0 - &a).unwrap().to_vec::<f32>().unwrap(), vec![-0.5, 3.0, -6.0]);
    assert_eq!((3.0 / &b).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 1.0, -1.5]);
    assert_eq!((-&a).unwrap().to_vec::<f32>().unwrap(), vec![-1.5, 2.0, -7.0]);
    assert_eq!((-a.clone()).unwrap().to_vec::<f32>().unwrap(), vec![-1.5, 2.0, -7.0]);
    // % is floor_mod: the sign of the divisor.
    assert_eq!((&a % &b).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0, -1.0]);
    let ia = Tensor::from([7i32, -7, 7, -7]);
    let ib = Tensor::from([3i32, 3, -3, -3]);
    assert_eq!((&ia % &ib).unwrap().to_vec::<i32>().unwrap(), vec![1, 2, -2, -1]);
    assert_eq!((&ia * 2).unwrap().to_vec::<i32>().unwrap(), vec![14, -14, 14, -14]);
    assert_eq!((&ia % 4).unwrap().to_vec::<i32>().unwrap(), vec![3, 1, 3, 1]);
    assert_eq!((10i64 - &Tensor::from([1i64, 20])).unwrap().to_vec::<i64>().unwrap(), vec![9, -10]);
    // A float number on an integer tensor takes the tensor's dtype.
    assert_eq!((&ia * 2.0).unwrap().dtype(), DType::I32);
    // Owned operands.
    assert_eq!((a.clone() + b.clone()).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 1.0, 5.0]);
    assert_eq!((a.clone() * &b).unwrap().to_vec::<f32>().unwrap(), vec![0.75, -6.0, -14.0]);
    assert_eq!((&a - b.clone()).unwrap().to_vec::<f32>().unwrap(), vec![1.0, -5.0, 9.0]);
    // f64 operators with a literal.
    let d = Tensor::from([[1.0f64, 2.0], [3.0, 4.0]]);
    assert_eq!((&d + 0.5).unwrap().to_vec2::<f64>().unwrap(), vec![vec![1.5, 2.5], vec![3.5, 4.5]]);
    // Errors surface through the operators.
    assert_eq!(err_kind(&a + &Tensor::from([1.0f64, 2.0, 3.0])), ErrorKind::DType);
    assert_eq!(err_kind(&a + &Tensor::from([1.0f32, 2.0])), ErrorKind::Shape);
}

// ---------------------------------------------------------------------------
// Large inputs: the parallel paths agree with small pieces.
// ---------------------------------------------------------------------------

const LARGE: usize = 100_003;

fn large_f32(seed: u64, lo: f64, hi: f64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..LARGE).map(|_| rng.range(lo, hi) as f32).collect()
}

#[test]
fn large_unary_equals_chunked() {
    let mut data = large_f32(1, -30.0, 30.0);
    data[17] = f32::NAN;
    data[50_000] = f32::INFINITY;
    data[99_999] = -0.0;
    let x = Tensor::from_vec(data.clone(), [LARGE]).unwrap();
    let chunks: Vec<Tensor> = data.chunks(997).map(|c| Tensor::from_vec(c.to_vec(), [c.len()]).unwrap()).collect();
    for &op in UnaryOp::ALL {
        if op.name() == "logical_not" {
            continue;
        }
        let full = unary(op, &x).unwrap();
        let pieces: Vec<Tensor> = chunks.iter().map(|c| unary(op, c).unwrap()).collect();
        assert_same(&full, &concat_flat(&pieces), &format!("large {}", op.name()));
        // Spot-check against the reference too (the special functions have theirs in tf_reference.rs).
        let got = values(&full);
        let spots = if SPECIAL_UNARY.contains(&op.name()) { 0 } else { LARGE };
        for i in (0..spots).step_by(4099) {
            let xi = f64::from(data[i]);
            let want = unary_ref(op.name(), xi);
            let tol = if full.dtype() == DType::Bool { None } else { unary_tolerance(DType::F32, op.name(), xi, want) };
            let bad = if full.dtype() == DType::Bool {
                got[i] != want
            } else {
                check_value(DType::F32, tol, got[i], want).is_some()
            };
            assert!(!bad, "large {}({xi}) = {} vs {want}", op.name(), got[i]);
        }
    }
    // f64 and integer paths too.
    let xd = ops::cast(&x, DType::F64).unwrap();
    let pieces: Vec<Tensor> = chunks.iter().map(|c| ops::exp(&ops::cast(c, DType::F64).unwrap()).unwrap()).collect();
    assert_same(&ops::exp(&xd).unwrap(), &concat_flat(&pieces), "large f64 exp");
    let xi = ops::cast(&x, DType::I32).unwrap();
    let pieces: Vec<Tensor> = chunks.iter().map(|c| ops::square(&ops::cast(c, DType::I32).unwrap()).unwrap()).collect();
    assert_same(&ops::square(&xi).unwrap(), &concat_flat(&pieces), "large i32 square");
}

#[test]
fn large_binary_equals_chunked() {
    let da = large_f32(2, -10.0, 10.0);
    let db = large_f32(3, -10.0, 10.0);
    let a = Tensor::from_vec(da.clone(), [LARGE]).unwrap();
    let b = Tensor::from_vec(db.clone(), [LARGE]).unwrap();
    let ca: Vec<Tensor> = da.chunks(1009).map(|c| Tensor::from_vec(c.to_vec(), [c.len()]).unwrap()).collect();
    let cb: Vec<Tensor> = db.chunks(1009).map(|c| Tensor::from_vec(c.to_vec(), [c.len()]).unwrap()).collect();
    let s = Tensor::from([1.75f32]);
    for &op in BinaryOp::ALL {
        if LOGICAL.contains(&op.name()) {
            continue;
        }
        let full = binary(op, &a, &b).unwrap();
        let pieces: Vec<Tensor> = ca.iter().zip(&cb).map(|(p, q)| binary(op, p, q).unwrap()).collect();
        assert_same(&full, &concat_flat(&pieces), &format!("large {}", op.name()));
        // Against a one-element tensor (broadcast, stride 0), both sides.
        let full = binary(op, &a, &s).unwrap();
        let pieces: Vec<Tensor> = ca.iter().map(|p| binary(op, p, &s).unwrap()).collect();
        assert_same(&full, &concat_flat(&pieces), &format!("large {} with [1]", op.name()));
        let full = binary(op, &s, &b).unwrap();
        let pieces: Vec<Tensor> = cb.iter().map(|q| binary(op, &s, q).unwrap()).collect();
        assert_same(&full, &concat_flat(&pieces), &format!("large [1] {}", op.name()));
    }
    // The exact ops element by element.
    let sum = ops::add(&a, &b).unwrap().to_vec::<f32>().unwrap();
    let prod = ops::mul(&a, &b).unwrap().to_vec::<f32>().unwrap();
    for i in 0..LARGE {
        assert_eq!(sum[i].to_bits(), (da[i] + db[i]).to_bits(), "add at {i}");
        assert_eq!(prod[i].to_bits(), (da[i] * db[i]).to_bits(), "mul at {i}");
    }
    // Row broadcast over 317 x 313 = 99_221 elements (row-wise parallel path).
    let (r, c) = (317, 313);
    let m = Tensor::from_vec(da[..r * c].to_vec(), [r, c]).unwrap();
    let row = Tensor::from_vec(db[..c].to_vec(), [c]).unwrap();
    let col = Tensor::from_vec(db[..r].to_vec(), [r, 1]).unwrap();
    let mr = ops::sub(&m, &row).unwrap().to_vec::<f32>().unwrap();
    let mc = ops::div(&m, &col).unwrap().to_vec::<f32>().unwrap();
    for i in 0..r {
        for j in 0..c {
            assert_eq!(mr[i * c + j].to_bits(), (da[i * c + j] - db[j]).to_bits(), "sub at {i}, {j}");
            assert_eq!(mc[i * c + j].to_bits(), (da[i * c + j] / db[i]).to_bits(), "div at {i}, {j}");
        }
    }
    // Integers: wrapping multiply of large tensors.
    let ia: Vec<i32> = (0..LARGE as i32).map(|i| i.wrapping_mul(2_654_435_761_u32 as i32)).collect();
    let ib: Vec<i32> = (0..LARGE as i32).map(|i| i ^ 0x5bd1_e995).collect();
    let got =
        ops::mul(&Tensor::from_vec(ia.clone(), [LARGE]).unwrap(), &Tensor::from_vec(ib.clone(), [LARGE]).unwrap())
            .unwrap()
            .to_vec::<i32>()
            .unwrap();
    for i in 0..LARGE {
        assert_eq!(got[i], ia[i].wrapping_mul(ib[i]), "i32 mul at {i}");
    }
}

#[test]
fn large_select_and_cast_equal_chunked() {
    let da = large_f32(4, -3.0, 3.0);
    let a = Tensor::from_vec(da.clone(), [LARGE]).unwrap();
    let cond = ops::greater(&a, 0.0).unwrap();
    let sel = ops::select(&cond, &a, -1.0).unwrap().to_vec::<f32>().unwrap();
    for i in 0..LARGE {
        assert_eq!(sel[i], if da[i] > 0.0 { da[i] } else { -1.0 }, "select at {i}");
    }
    let chunks: Vec<Tensor> = da.chunks(4096).map(|c| Tensor::from_vec(c.to_vec(), [c.len()]).unwrap()).collect();
    for to in DType::ALL {
        let pieces: Vec<Tensor> = chunks.iter().map(|c| ops::cast(c, to).unwrap()).collect();
        assert_same(&ops::cast(&a, to).unwrap(), &concat_flat(&pieces), &format!("large cast to {to}"));
    }
}

// ---------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------

/// A broadcast output shape and two input shapes that broadcast to it: each
/// input is a suffix of the output with some dimensions set to 1.
fn broadcast_shapes_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
    prop::collection::vec(0usize..4, 0..4)
        .prop_flat_map(|out| {
            let r = out.len();
            (Just(out), 0..=r, 0..=r, prop::collection::vec(any::<bool>(), r), prop::collection::vec(any::<bool>(), r))
        })
        .prop_map(|(out, ra, rb, ma, mb)| {
            let r = out.len();
            let make = |k: usize, mask: &[bool]| -> Vec<usize> {
                (r - k..r).map(|d| if mask[d] { 1 } else { out[d] }).collect()
            };
            let (a, b) = (make(ra, &ma), make(rb, &mb));
            // The result's shape is the broadcast of the two (a dimension where
            // both were set to 1 shrinks to 1).
            let s = broadcast_shape(&a, &b).unwrap();
            (s, a, b)
        })
}

/// Finite f32 values of every magnitude, including signed zeros.
fn finite_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|_| match rng.next() % 8 {
            0 => 0.0,
            1 => -0.0,
            2 => rng.range(-1e-38, 1e-38) as f32,
            3 => rng.range(-3e38, 3e38) as f32,
            _ => rng.range(-1000.0, 1000.0) as f32,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_add_equals_add_of_broadcast_views((s, sa, sb) in broadcast_shapes_strategy(), seed in any::<u64>()) {
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let av = finite_values(seed, na);
        let bv = finite_values(seed ^ 0x9e37_79b9, nb);
        let a = Tensor::from_vec(av.clone(), sa.clone()).unwrap();
        let b = Tensor::from_vec(bv.clone(), sb.clone()).unwrap();
        let r = ops::add(&a, &b).unwrap();
        prop_assert_eq!(r.shape().dims(), &s[..]);
        let va = ops::broadcast_to(&a, s.clone()).unwrap();
        let vb = ops::broadcast_to(&b, s.clone()).unwrap();
        let rv = ops::add(&va, &vb).unwrap();
        prop_assert_eq!(bits(&r), bits(&rv));
        // And element by element.
        let got = r.to_vec::<f32>().unwrap();
        for (k, g) in got.iter().enumerate() {
            let idx = unravel(k, &s);
            let want = av[broadcast_source(&idx, &sa)] + bv[broadcast_source(&idx, &sb)];
            prop_assert_eq!(g.to_bits(), want.to_bits(), "at {:?}", idx);
        }
    }

    #[test]
    fn prop_add_is_commutative((_s, sa, sb) in broadcast_shapes_strategy(), seed in any::<u64>()) {
        let a = Tensor::from_vec(finite_values(seed, sa.iter().product()), sa.clone()).unwrap();
        let b = Tensor::from_vec(finite_values(!seed, sb.iter().product()), sb.clone()).unwrap();
        prop_assert_eq!(bits(&ops::add(&a, &b).unwrap()), bits(&ops::add(&b, &a).unwrap()));
        let ia = ops::cast(&a, DType::I32).unwrap();
        let ib = ops::cast(&b, DType::I32).unwrap();
        prop_assert_eq!(ints(&ops::add(&ia, &ib).unwrap()), ints(&ops::add(&ib, &ia).unwrap()));
    }

    #[test]
    fn prop_sub_self_is_zero(shape in prop::collection::vec(0usize..5, 0..4), seed in any::<u64>()) {
        let a = Tensor::from_vec(finite_values(seed, shape.iter().product()), shape.clone()).unwrap();
        let z = ops::sub(&a, &a).unwrap();
        prop_assert_eq!(z.shape().dims(), &shape[..]);
        // x - x is +0 for every finite x.
        prop_assert!(z.to_vec::<f32>().unwrap().iter().all(|v| v.to_bits() == 0));
        let t = ops::transpose(&a, &[]).unwrap();
        prop_assert!(ops::sub(&t, &t).unwrap().to_vec::<f32>().unwrap().iter().all(|v| v.to_bits() == 0));
    }

    #[test]
    fn prop_mul_by_one_is_identity(shape in prop::collection::vec(0usize..5, 0..4), seed in any::<u64>()) {
        let a = Tensor::from_vec(finite_values(seed, shape.iter().product()), shape.clone()).unwrap();
        prop_assert_eq!(bits(&ops::mul(&a, 1.0).unwrap()), bits(&a));
        prop_assert_eq!(bits(&ops::mul(1.0, &a).unwrap()), bits(&a));
        let ones = ops::broadcast_to(&Tensor::from(1.0f32), shape.clone()).unwrap();
        prop_assert_eq!(bits(&ops::mul(&ones, &a).unwrap()), bits(&a));
        // On a reversed view too (empty views are covered by `empty_views`).
        if a.numel() != Some(0) {
            let r = ops::reverse(&a, &(0..shape.len() as i64).collect::<Vec<_>>()).unwrap();
            prop_assert_eq!(bits(&ops::mul(&r, 1.0).unwrap()), bits(&contiguous_copy(&r)));
        }
    }
}

// The tests of this file pass at every instruction-set level (RIVULET_SIMD).
tests_at_every_simd_level!("elementwise::");
