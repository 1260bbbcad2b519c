//! Complex tensors (c64, c128): `complex`, `real`, `imag`, `conj`,
//! `angle`, `polar`, and the complex forms of the elementwise ops,
//! reductions and matmul that the generic functions (`add`, `exp`, `sum`,
//! `matmul`, ...) hand complex inputs to.
//!
//! Only `complex`, `real` and `imag` are ops of their own; the arithmetic
//! is written with real ops on the parts. So it runs on every backend,
//! fuses in graphs like any real arithmetic, and differentiates through
//! the real rules: the gradient of a real loss `L` with respect to
//! `z = x + iy` is `∂L/∂x + i ∂L/∂y`, TensorFlow's convention (for a
//! holomorphic `f`, the upstream gradient times `conj(f'(z))`).

use super::{apply1, creation, elementwise as ew, movement as mv, reduce as rd, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::{BinaryOp, ComplexOp, UnaryOp};

/// `re + i·im` from real and imaginary parts of one float dtype (f32 gives
/// c64, f64 gives c128), broadcast together (TensorFlow's `complex`).
#[track_caller]
pub fn complex(re: &Tensor, im: &Tensor) -> Result<Tensor> {
    apply1(Op::Complex { f: ComplexOp::Make }, &[re, im])
}

/// The real part of `z`; a real tensor is its own real part.
#[track_caller]
pub fn real(z: &Tensor) -> Result<Tensor> {
    if z.dtype().is_complex() {
        apply1(Op::Complex { f: ComplexOp::Real }, &[z])
    } else {
        Ok(z.clone())
    }
}

/// The imaginary part of `z`; zeros for a real tensor.
#[track_caller]
pub fn imag(z: &Tensor) -> Result<Tensor> {
    if z.dtype().is_complex() {
        apply1(Op::Complex { f: ComplexOp::Imag }, &[z])
    } else {
        creation::zeros_like(z)
    }
}

/// The complex conjugate `re - i·im`; a real tensor is returned as it is.
#[track_caller]
pub fn conj(z: &Tensor) -> Result<Tensor> {
    if !z.dtype().is_complex() {
        return Ok(z.clone());
    }
    let (re, im) = parts(z)?;
    complex(&re, &ew::neg(&im)?)
}

/// The argument of `z` in `(-π, π]`, `atan2(im, re)`; for a real tensor,
/// π where it is negative and 0 elsewhere (TensorFlow's `angle`).
#[track_caller]
pub fn angle(z: &Tensor) -> Result<Tensor> {
    if !z.dtype().is_complex() {
        return ew::select(&ew::less(z, 0.0)?, std::f64::consts::PI, &creation::zeros_like(z)?);
    }
    let (re, im) = parts(z)?;
    ew::atan2(&im, &re)
}

/// `r·e^(iθ)` from magnitudes and angles of one float dtype (PyTorch's `polar`).
#[track_caller]
pub fn polar(r: &Tensor, theta: &Tensor) -> Result<Tensor> {
    complex(&ew::mul(r, &ew::cos(theta)?)?, &ew::mul(r, &ew::sin(theta)?)?)
}

/// The real and imaginary parts.
fn parts(z: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((real(z)?, imag(z)?))
}

/// `z · s` for a real number `s`, part by part.
pub(crate) fn scale(z: &Tensor, s: f64) -> Result<Tensor> {
    let (re, im) = parts(z)?;
    complex(&ew::mul(&re, s)?, &ew::mul(&im, s)?)
}

/// `z · w` for a real tensor `w` (broadcast), part by part.
pub(crate) fn scale_by(z: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (re, im) = parts(z)?;
    complex(&ew::mul(&re, w)?, &ew::mul(&im, w)?)
}

/// `a · b` of complex parts. The imaginary part is written `a.re b.im +
/// b.re a.im` so that `z · z` has two identical products, which a graph's
/// common-subexpression pass merges without changing which NaN operand
/// comes first: graph and eager results stay bitwise equal.
fn product(a: (&Tensor, &Tensor), b: (&Tensor, &Tensor)) -> Result<(Tensor, Tensor)> {
    let re = ew::sub(&ew::mul(a.0, b.0)?, &ew::mul(a.1, b.1)?)?;
    let im = ew::add(&ew::mul(a.0, b.1)?, &ew::mul(b.0, a.1)?)?;
    Ok((re, im))
}

/// `a / b` of complex parts, both scaled by `max(|re b|, |im b|)` first so
/// that `|b|²` neither overflows nor underflows.
fn quotient(a: (&Tensor, &Tensor), b: (&Tensor, &Tensor)) -> Result<(Tensor, Tensor)> {
    let s = ew::maximum(&ew::abs(b.0)?, &ew::abs(b.1)?)?;
    let (c, d) = (ew::real_div(b.0, &s)?, ew::real_div(b.1, &s)?);
    let den = ew::mul(&ew::add(&ew::square(&c)?, &ew::square(&d)?)?, &s)?;
    let re = ew::real_div(&ew::add(&ew::mul(a.0, &c)?, &ew::mul(a.1, &d)?)?, &den)?;
    let im = ew::real_div(&ew::sub(&ew::mul(a.1, &c)?, &ew::mul(a.0, &d)?)?, &den)?;
    Ok((re, im))
}

fn join((re, im): (Tensor, Tensor)) -> Result<Tensor> {
    complex(&re, &im)
}

/// The complex form of unary op `f` (the generic functions call this for
/// complex inputs). `abs` gives the real magnitude, as TensorFlow's.
#[track_caller]
pub(crate) fn unary(f: UnaryOp, z: &Tensor) -> Result<Tensor> {
    let (a, b) = parts(z)?;
    match f {
        UnaryOp::Neg => complex(&ew::neg(&a)?, &ew::neg(&b)?),
        UnaryOp::Abs => ew::hypot(&a, &b),
        UnaryOp::Sign => {
            // z / |z|, and 0 at 0.
            let r = ew::hypot(&a, &b)?;
            let zero = ew::equal(&r, 0.0)?;
            let safe = ew::select(&zero, 1.0, &r)?;
            complex(&ew::real_div(&a, &safe)?, &ew::real_div(&b, &safe)?)
        }
        UnaryOp::Square => join(product((&a, &b), (&a, &b))?),
        UnaryOp::Reciprocal => {
            let one = creation::ones_like(&a)?;
            let zero = creation::zeros_like(&a)?;
            join(quotient((&one, &zero), (&a, &b))?)
        }
        UnaryOp::Exp => {
            let e = ew::exp(&a)?;
            complex(&ew::mul(&e, &ew::cos(&b)?)?, &ew::mul(&e, &ew::sin(&b)?)?)
        }
        UnaryOp::Log => complex(&ew::log(&ew::hypot(&a, &b)?)?, &ew::atan2(&b, &a)?),
        UnaryOp::Sqrt => sqrt(&a, &b),
        UnaryOp::Rsqrt => unary(UnaryOp::Reciprocal, &sqrt(&a, &b)?),
        UnaryOp::Sin => complex(&ew::mul(&ew::sin(&a)?, &ew::cosh(&b)?)?, &ew::mul(&ew::cos(&a)?, &ew::sinh(&b)?)?),
        UnaryOp::Cos => {
            complex(&ew::mul(&ew::cos(&a)?, &ew::cosh(&b)?)?, &ew::neg(&ew::mul(&ew::sin(&a)?, &ew::sinh(&b)?)?)?)
        }
        UnaryOp::Sinh => complex(&ew::mul(&ew::sinh(&a)?, &ew::cos(&b)?)?, &ew::mul(&ew::cosh(&a)?, &ew::sin(&b)?)?),
        UnaryOp::Cosh => complex(&ew::mul(&ew::cosh(&a)?, &ew::cos(&b)?)?, &ew::mul(&ew::sinh(&a)?, &ew::sin(&b)?)?),
        f => bail!(dtype, "{} does not accept {} (complex inputs take neg, abs, sign, square, reciprocal, exp, log, sqrt, rsqrt, sin, cos, sinh, cosh)", f.name(), z.dtype()),
    }
}

/// The principal square root: with `t = sqrt((|z| + |a|) / 2)`, `t + i b/2t`
/// for `a >= 0`, else `|b|/2t ± i t` (the sign of `b`); 0 at 0.
fn sqrt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let r = ew::hypot(a, b)?;
    let t = ew::sqrt(&ew::mul(&ew::add(&r, &ew::abs(a)?)?, 0.5)?)?;
    let safe = ew::select(&ew::equal(&t, 0.0)?, 1.0, &t)?;
    let q = ew::real_div(b, &ew::mul(&safe, 2.0)?)?;
    let right = ew::greater_equal(a, 0.0)?;
    let re = ew::select(&right, &t, &ew::abs(&q)?)?;
    let im = ew::select(&right, &q, &ew::select(&ew::less(b, 0.0)?, &ew::neg(&t)?, &t)?)?;
    complex(&re, &im)
}

/// The complex form of binary op `f` on two complex tensors of one dtype.
#[track_caller]
pub(crate) fn binary(f: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if x.dtype() != y.dtype() {
        bail!(dtype, "{} needs equal dtypes, got {} and {} (cast one of them)", f.name(), x.dtype(), y.dtype());
    }
    let (a, b) = parts(x)?;
    let (c, d) = parts(y)?;
    match f {
        BinaryOp::Add => complex(&ew::add(&a, &c)?, &ew::add(&b, &d)?),
        BinaryOp::Sub => complex(&ew::sub(&a, &c)?, &ew::sub(&b, &d)?),
        BinaryOp::Mul => join(product((&a, &b), (&c, &d))?),
        BinaryOp::Div => join(quotient((&a, &b), (&c, &d))?),
        BinaryOp::DivNoNan => {
            // A zero divisor is replaced before dividing, so no NaN reaches
            // the result or its gradient.
            let zero = ew::logical_and(&ew::equal(&c, 0.0)?, &ew::equal(&d, 0.0)?)?;
            let c1 = ew::select(&zero, 1.0, &c)?;
            let (re, im) = quotient((&a, &b), (&c1, &d))?;
            complex(&ew::select(&zero, 0.0, &re)?, &ew::select(&zero, 0.0, &im)?)
        }
        BinaryOp::Pow => unary(UnaryOp::Exp, &binary(BinaryOp::Mul, y, &unary(UnaryOp::Log, x)?)?),
        BinaryOp::Equal => ew::logical_and(&ew::equal(&a, &c)?, &ew::equal(&b, &d)?),
        BinaryOp::NotEqual => ew::logical_or(&ew::not_equal(&a, &c)?, &ew::not_equal(&b, &d)?),
        f => bail!(
            dtype,
            "{} does not accept {} (complex inputs take add, sub, mul, div, div_no_nan, pow, equal, not_equal)",
            f.name(),
            x.dtype()
        ),
    }
}

/// A complex sum or mean over `axes`, part by part.
#[track_caller]
pub(crate) fn reduce(f: crate::op::ReduceOp, z: &Tensor, axes: &[usize], keepdims: bool) -> Result<Tensor> {
    use crate::op::ReduceOp;
    let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    let (a, b) = parts(z)?;
    match f {
        ReduceOp::Sum => complex(&rd::sum(&a, axes.clone(), keepdims)?, &rd::sum(&b, axes, keepdims)?),
        ReduceOp::Mean => complex(&rd::mean(&a, axes.clone(), keepdims)?, &rd::mean(&b, axes, keepdims)?),
        f => bail!(dtype, "{} does not accept {} (complex tensors take sum and mean)", f.name(), z.dtype()),
    }
}

/// The complex matrix product, from four real ones.
#[track_caller]
pub(crate) fn matmul(x: &Tensor, y: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    if x.dtype() != y.dtype() {
        bail!(dtype, "matmul needs equal dtypes, got {} and {}", x.dtype(), y.dtype());
    }
    let (a, b) = parts(x)?;
    let (c, d) = parts(y)?;
    let mm = |p: &Tensor, q: &Tensor| super::linalg::matmul_t(p, q, transpose_a, transpose_b);
    complex(&ew::sub(&mm(&a, &c)?, &mm(&b, &d)?)?, &ew::add(&mm(&a, &d)?, &mm(&b, &c)?)?)
}

/// Gradients of the part ops (before summing back over broadcasting, which
/// `complex`'s rule does itself).
pub(crate) fn complex_grad(f: ComplexOp, inputs: &[Tensor], g: &Tensor, wants: &[bool]) -> Result<Vec<Option<Tensor>>> {
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    Ok(match f {
        ComplexOp::Make => vec![
            if want(0) { Some(mv::sum_to(&real(g)?, &inputs[0])?) } else { None },
            if want(1) { Some(mv::sum_to(&imag(g)?, &inputs[1])?) } else { None },
        ],
        ComplexOp::Real => vec![Some(complex(g, &creation::zeros_like(g)?)?)],
        ComplexOp::Imag => vec![Some(complex(&creation::zeros_like(g)?, g)?)],
    })
}
