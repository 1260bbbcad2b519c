//! Reductions over any set of axes (`sum`, `mean`, `max`, `min`, `prod`,
//! `any`, `all`), index reductions (`argmax`, `argmin`), scans (`cumsum`,
//! `cumprod`), and the composites built from them (`logsumexp`, `variance`,
//! `std`).

use super::{apply1, checked, elementwise as ew, Op};
use crate::error::Result;
use crate::graph::Tensor;
pub use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::tensor::shape::{normalize_axes, normalize_axis};
use crate::tensor::DType;

/// Which axes a reduction runs over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axes {
    /// Every axis (the result is a scalar unless `keepdims`).
    All,
    /// These axes; negative ones count from the end.
    List(Vec<i64>),
}

impl Axes {
    /// Resolve against a rank: sorted, non-negative, unique.
    pub(crate) fn resolve(&self, rank: usize) -> Result<Vec<usize>> {
        match self {
            Axes::All => Ok((0..rank).collect()),
            Axes::List(v) => normalize_axes(v, rank),
        }
    }
}

impl From<i32> for Axes {
    fn from(a: i32) -> Axes {
        Axes::List(vec![a as i64])
    }
}
impl From<i64> for Axes {
    fn from(a: i64) -> Axes {
        Axes::List(vec![a])
    }
}
impl From<usize> for Axes {
    fn from(a: usize) -> Axes {
        Axes::List(vec![a as i64])
    }
}
impl<const N: usize> From<[i32; N]> for Axes {
    fn from(a: [i32; N]) -> Axes {
        Axes::List(a.iter().map(|&x| x as i64).collect())
    }
}
impl<const N: usize> From<[i64; N]> for Axes {
    fn from(a: [i64; N]) -> Axes {
        Axes::List(a.to_vec())
    }
}
impl From<&[i64]> for Axes {
    fn from(a: &[i64]) -> Axes {
        Axes::List(a.to_vec())
    }
}
impl From<&[i32]> for Axes {
    fn from(a: &[i32]) -> Axes {
        Axes::List(a.iter().map(|&x| x as i64).collect())
    }
}
impl From<Vec<i64>> for Axes {
    fn from(a: Vec<i64>) -> Axes {
        Axes::List(a)
    }
}

#[track_caller]
fn reduce(f: ReduceOp, x: &Tensor, axes: Axes, keepdims: bool) -> Result<Tensor> {
    let axes = checked(axes.resolve(x.rank()), f.type_name(), &[x])?;
    if x.dtype().is_complex() {
        return super::complex::reduce(f, x, &axes, keepdims);
    }
    apply1(Op::Reduce { f, axes, keepdims }, &[x])
}

/// Sum over `axes` (TensorFlow's `reduce_sum`).
#[track_caller]
pub fn sum(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::Sum, x, axes.into(), keepdims)
}
/// Arithmetic mean over `axes` (integer division for integer dtypes).
#[track_caller]
pub fn mean(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::Mean, x, axes.into(), keepdims)
}
/// Largest element over `axes` (NaN if any is NaN; `-inf` for an empty float reduction).
#[track_caller]
pub fn max(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::Max, x, axes.into(), keepdims)
}
/// Smallest element over `axes` (NaN if any is NaN; `+inf` for an empty float reduction).
#[track_caller]
pub fn min(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::Min, x, axes.into(), keepdims)
}
/// Product over `axes`.
#[track_caller]
pub fn prod(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::Prod, x, axes.into(), keepdims)
}
/// Logical or over `axes` of a bool tensor.
#[track_caller]
pub fn any(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::Any, x, axes.into(), keepdims)
}
/// Logical and over `axes` of a bool tensor.
#[track_caller]
pub fn all(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    reduce(ReduceOp::All, x, axes.into(), keepdims)
}

/// Index (i64) of the largest element along `axis`; the first one on ties,
/// NaN skipped (0 where all are NaN), as in TensorFlow.
#[track_caller]
pub fn argmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    arg_reduce(ArgOp::ArgMax, "ArgMax", x, axis, DType::I64)
}
/// Index (i64) of the smallest element along `axis`; the first one on ties,
/// NaN skipped (0 where all are NaN), as in TensorFlow.
#[track_caller]
pub fn argmin(x: &Tensor, axis: i64) -> Result<Tensor> {
    arg_reduce(ArgOp::ArgMin, "ArgMin", x, axis, DType::I64)
}

/// [`argmax`] with TensorFlow's `output_type` (int32 or int64).
#[track_caller]
pub fn argmax_with(x: &Tensor, axis: i64, output_type: DType) -> Result<Tensor> {
    arg_reduce(ArgOp::ArgMax, "ArgMax", x, axis, output_type)
}
/// [`argmin`] with TensorFlow's `output_type` (int32 or int64).
#[track_caller]
pub fn argmin_with(x: &Tensor, axis: i64, output_type: DType) -> Result<Tensor> {
    arg_reduce(ArgOp::ArgMin, "ArgMin", x, axis, output_type)
}

#[track_caller]
fn arg_reduce(f: ArgOp, name: &str, x: &Tensor, axis: i64, output: DType) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, x.rank()), name, &[x])?;
    if !matches!(output, DType::I32 | DType::I64) {
        return checked(
            Err(crate::error::Error::dtype(format!("{name} output_type must be int32 or int64, got {output}"))),
            name,
            &[x],
        );
    }
    apply1(Op::ArgReduce { f, axis, output }, &[x])
}

/// Running sum along `axis`; `exclusive` starts from 0 (excluding the
/// element itself), `reverse` runs from the end.
#[track_caller]
pub fn cumsum(x: &Tensor, axis: i64, exclusive: bool, reverse: bool) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, x.rank()), "Cumsum", &[x])?;
    apply1(Op::Scan { f: ScanOp::Cumsum, axis, exclusive, reverse }, &[x])
}
/// Running product along `axis` (see [`cumsum`] for the flags).
#[track_caller]
pub fn cumprod(x: &Tensor, axis: i64, exclusive: bool, reverse: bool) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, x.rank()), "Cumprod", &[x])?;
    apply1(Op::Scan { f: ScanOp::Cumprod, axis, exclusive, reverse }, &[x])
}

/// `log(sum(exp(x)))` over `axes`, computed stably by shifting by the maximum.
#[track_caller]
pub fn logsumexp(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    let axes = axes.into();
    let m = max(x, axes.clone(), true)?;
    // An infinite maximum would turn x - m into NaN; shift by 0 there instead.
    let shift = ew::select(&ew::is_finite(&m)?, &m, 0.0)?;
    let s = sum(&ew::exp(&ew::sub(x, &shift)?)?, axes.clone(), true)?;
    let r = ew::add(&ew::log(&s)?, &shift)?;
    let resolved = checked(axes.resolve(x.rank()), "LogSumExp", &[x])?;
    if keepdims || resolved.is_empty() {
        Ok(r)
    } else {
        super::movement::squeeze(&r, &resolved.iter().map(|&a| a as i64).collect::<Vec<_>>())
    }
}

/// Population variance over `axes`: `mean((x - mean(x))^2)`.
#[doc(alias = "reduce_variance")]
#[track_caller]
pub fn variance(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    let axes = axes.into();
    let centered = ew::sub(x, &mean(x, axes.clone(), true)?)?;
    mean(&ew::square(&centered)?, axes, keepdims)
}

/// Population standard deviation over `axes`.
#[doc(alias = "reduce_std")]
#[doc(alias = "std")]
#[track_caller]
pub fn std_dev(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    ew::sqrt(&variance(x, axes, keepdims)?)
}

/// `g` (the gradient of a reduction over `axes`) with the reduced axes
/// restored as size 1, so that it broadcasts against the input.
pub(crate) fn restore_axes(g: &Tensor, axes: &[usize], keepdims: bool) -> Result<Tensor> {
    if keepdims {
        return Ok(g.clone());
    }
    let mut t = g.clone();
    for &a in axes {
        t = super::movement::expand_dims(&t, a as i64)?;
    }
    Ok(t)
}

/// Gradient of a reduction `y = f(x, axes)`.
pub(crate) fn reduce_grad(
    f: ReduceOp,
    axes: &[usize],
    keepdims: bool,
    x: &Tensor,
    y: &Tensor,
    g: &Tensor,
) -> Result<Option<Tensor>> {
    use super::movement::broadcast_like;
    let gk = restore_axes(g, axes, keepdims)?;
    Ok(Some(match f {
        ReduceOp::Sum => broadcast_like(&gk, x)?,
        ReduceOp::Mean => {
            let count = match (x.shape().numel(), y.shape().numel()) {
                (Some(nx), Some(ny)) if ny > 0 => Tensor::scalar_of((nx / ny) as f64, x.dtype()),
                _ => ew::div(&super::movement::size(x, x.dtype())?, &super::movement::size(y, x.dtype())?)?,
            };
            ew::div(&broadcast_like(&gk, x)?, &count)?
        }
        ReduceOp::Max | ReduceOp::Min => {
            // Split the gradient evenly between tied extremes, as TensorFlow does.
            let yk = restore_axes(y, axes, keepdims)?;
            let hit = ew::cast(&ew::equal(x, &broadcast_like(&yk, x)?)?, x.dtype())?;
            let ties = sum(&hit, axes.iter().map(|&a| a as i64).collect::<Vec<_>>(), true)?;
            ew::mul(&broadcast_like(&ew::div(&gk, &ties)?, x)?, &hit)?
        }
        ReduceOp::Prod => {
            // One axis at a time: the product of everything but the element
            // itself is (exclusive cumprod) * (reverse exclusive cumprod).
            let mut stages = vec![x.clone()];
            for &a in axes {
                let last = stages.last().cloned().unwrap_or_else(|| x.clone());
                stages.push(prod(&last, a as i64, true)?);
            }
            let mut grad = gk;
            for (i, &a) in axes.iter().enumerate().rev() {
                let input = &stages[i];
                let left = cumprod(input, a as i64, true, false)?;
                let right = cumprod(input, a as i64, true, true)?;
                grad = ew::mul(&broadcast_like(&grad, input)?, &ew::mul(&left, &right)?)?;
            }
            grad
        }
        ReduceOp::Any | ReduceOp::All => return Ok(None),
    }))
}

/// Gradient of a scan `y = cumsum/cumprod(x)`.
pub(crate) fn scan_grad(
    f: ScanOp,
    axis: usize,
    exclusive: bool,
    reverse: bool,
    x: &Tensor,
    y: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    match f {
        ScanOp::Cumsum => cumsum(g, axis as i64, exclusive, !reverse),
        // As TensorFlow: divides by x, so zeros in x give non-finite gradients.
        ScanOp::Cumprod => ew::div(&cumsum(&ew::mul(g, y)?, axis as i64, exclusive, !reverse)?, x),
    }
}
