//! Reduction, index-reduction and scan kernels.
//!
//! Every reduction is brought to a contiguous `[outer, reduced, inner]` view
//! (copying only when the reduced axes are not adjacent or the input is not
//! contiguous). Rows are folded with many independent accumulators in fixed
//! blocks, so results do not depend on the thread count or the vector width.

use super::copy::materialize;
use super::elementwise::cast;
use super::fold_f32;
use super::loops::{Accumulate, Fold, Update};
use super::parallel::GRAIN;
use super::simd::vectorize;
use crate::error::{bail, Result};
use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::op::Meta;
use crate::tensor::dtype::{with_dtype, Element};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Shape, Value};
use rayon::prelude::*;

/// Elements per partial result; partials are folded again in order.
pub(crate) const BLOCK: usize = 1 << 14;
/// Elements per parallel task of a reduction (they only read, so tasks can be
/// larger than for elementwise work).
const REDUCE_GRAIN: usize = 1 << 18;

/// Numeric element types with the operations reductions need.
pub(crate) trait Num: Element + PartialOrd {
    const ZERO: Self;
    const ONE: Self;
    /// Identity of `max` (−∞ for floats).
    const LOWEST: Self;
    /// Identity of `min` (+∞ for floats).
    const HIGHEST: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Divide by a count (integer division for integers; 0 for an empty count).
    fn div_count(self, n: usize) -> Self;
    #[inline(always)]
    #[allow(clippy::eq_op)]
    fn is_nan(self) -> bool {
        // Only NaN differs from itself; integers never do.
        self != self
    }
    /// Larger of two, NaN if either is NaN.
    #[inline(always)]
    fn max_nan(self, o: Self) -> Self {
        if self > o || self.is_nan() {
            self
        } else {
            o
        }
    }
    /// Smaller of two, NaN if either is NaN.
    #[inline(always)]
    fn min_nan(self, o: Self) -> Self {
        if self < o || self.is_nan() {
            self
        } else {
            o
        }
    }
    /// Sum of a row in a fixed order.
    fn row_sum(x: &[Self]) -> Self {
        fold_lanes(x, Self::ZERO, Self::add)
    }
    /// Maximum of a row (NaN if any).
    fn row_max(x: &[Self]) -> Self {
        fold_lanes(x, Self::LOWEST, Self::max_nan)
    }
    /// Minimum of a row (NaN if any).
    fn row_min(x: &[Self]) -> Self {
        fold_lanes(x, Self::HIGHEST, Self::min_nan)
    }
}

macro_rules! num_float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            #[inline(always)] fn add(self, o: Self) -> Self { self + o }
            #[inline(always)] fn mul(self, o: Self) -> Self { self * o }
            #[inline(always)] fn div_count(self, n: usize) -> Self { self / n as $t }
        }
    )*};
}
num_float!(f64);

impl Num for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const LOWEST: Self = f32::NEG_INFINITY;
    const HIGHEST: Self = f32::INFINITY;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn div_count(self, n: usize) -> Self {
        self / n as f32
    }
    fn row_sum(x: &[f32]) -> f32 {
        fold_f32::sum(x)
    }
    fn row_max(x: &[f32]) -> f32 {
        fold_f32::max(x)
    }
    fn row_min(x: &[f32]) -> f32 {
        fold_f32::min(x)
    }
}

macro_rules! num_int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            #[inline(always)] fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)] fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline(always)] fn div_count(self, n: usize) -> Self { if n == 0 { 0 } else { (self as i128 / n as i128) as $t } }
        }
    )*};
}
num_int!(i32, i64, u8, i8, i16, u16, u32, u64);

/// Fold a slice with the vectorised [`Fold`] kernel.
#[inline(always)]
fn fold_lanes<T: Copy>(x: &[T], id: T, f: impl Fn(T, T) -> T + Copy) -> T {
    vectorize(Fold { x, id, f })
}

/// Fold a row with `row`: blocks of `BLOCK` folded separately, then their partials.
pub(crate) fn fold_row<T: Copy + Send + Sync>(x: &[T], row: &(impl Fn(&[T]) -> T + Sync)) -> T {
    if x.len() <= BLOCK {
        return row(x);
    }
    let partials: Vec<T> = x.chunks(BLOCK).map(row).collect();
    row(&partials)
}

/// [`fold_row`] with the blocks computed in parallel: the same result.
fn fold_row_parallel<T: Copy + Send + Sync>(x: &[T], row: &(impl Fn(&[T]) -> T + Sync)) -> T {
    if x.len() <= 2 * BLOCK {
        return fold_row(x, row);
    }
    // Several blocks per task: the blocks fix the order, the tasks only the
    // scheduling, so the result does not change.
    let partials: Vec<T> = x.par_chunks(BLOCK).with_min_len(16).map(row).collect();
    row(&partials)
}

/// Contiguous `[outer, reduced, inner]` data for reducing `axes` of `x`.
pub(crate) fn canonical(x: &Value, axes: &[usize]) -> Result<(Value, usize, usize, usize)> {
    let dims = x.shape();
    let (Some(&first), Some(&last)) = (axes.first(), axes.last()) else {
        return Ok((materialize(x)?, x.numel(), 1, 1));
    };
    let adjacent = (first..=last).all(|d| axes.contains(&d) || dims[d] == 1);
    if adjacent {
        let a: usize = dims[..first].iter().product();
        let r: usize = axes.iter().map(|&d| dims[d]).product();
        let b: usize = dims[last + 1..].iter().product();
        return Ok((materialize(x)?, a, r, b));
    }
    let kept: Vec<usize> = (0..dims.rank()).filter(|d| !axes.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let permuted = x.view(x.layout.permute(&perm));
    let a: usize = kept.iter().map(|&d| dims[d]).product();
    let r: usize = axes.iter().map(|&d| dims[d]).product();
    Ok((materialize(&permuted)?, a, r, 1))
}

/// Reduce contiguous `[a, r, b]` data into `out` (`a * b` elements):
/// `row` folds a contiguous row, `f` combines two values (used across rows).
fn reduce_abr<T: Copy + Send + Sync>(
    src: &[T],
    (a, r, b): (usize, usize, usize),
    out: &mut [T],
    id: T,
    f: impl Fn(T, T) -> T + Copy + Sync + Send,
    row: impl Fn(&[T]) -> T + Sync,
) {
    if r == 0 {
        out.fill(id);
        return;
    }
    if b == 1 {
        if a == 1 {
            out[0] = fold_row_parallel(src, &row);
        } else if a * r <= GRAIN {
            for (i, o) in out.iter_mut().enumerate() {
                *o = fold_row(&src[i * r..(i + 1) * r], &row);
            }
        } else {
            let rows_per_task = (REDUCE_GRAIN / r).max(1);
            out.par_chunks_mut(rows_per_task).enumerate().for_each(|(t, chunk)| {
                for (k, o) in chunk.iter_mut().enumerate() {
                    let i = t * rows_per_task + k;
                    *o = fold_row(&src[i * r..(i + 1) * r], &row);
                }
            });
        }
        return;
    }
    // Reduce over a middle axis: accumulate whole inner rows, vectorised over `b`.
    const COLS: usize = 2048;
    let col_blocks = b.div_ceil(COLS);
    let column_task = |i: usize, j0: usize, o: &mut [T]| {
        let base = i * r * b;
        o.copy_from_slice(&src[base + j0..base + j0 + o.len()]);
        vectorize(Accumulate { acc: o, x: &src[base + b + j0..], rows: r - 1, stride: b, f })
    };
    if a * r * b <= GRAIN {
        for i in 0..a {
            for jb in 0..col_blocks {
                let j0 = jb * COLS;
                let len = COLS.min(b - j0);
                column_task(i, j0, &mut out[i * b + j0..i * b + j0 + len]);
            }
        }
    } else {
        out.par_chunks_mut(b).enumerate().for_each(|(i, orow)| {
            orow.par_chunks_mut(COLS).enumerate().for_each(|(jb, o)| column_task(i, jb * COLS, o));
        });
    }
}

fn reduce_num<T: Num>(f: ReduceOp, src: &[T], abr: (usize, usize, usize), out: &mut [T]) -> Result<()> {
    match f {
        ReduceOp::Sum => reduce_abr(src, abr, out, T::ZERO, T::add, T::row_sum),
        ReduceOp::Mean => {
            reduce_abr(src, abr, out, T::ZERO, T::add, T::row_sum);
            let n = abr.1;
            vectorize(Update { x: out, f: |v: T| v.div_count(n) });
        }
        ReduceOp::Prod => reduce_abr(src, abr, out, T::ONE, T::mul, |x: &[T]| fold_lanes(x, T::ONE, T::mul)),
        ReduceOp::Max => reduce_abr(src, abr, out, T::LOWEST, T::max_nan, T::row_max),
        ReduceOp::Min => reduce_abr(src, abr, out, T::HIGHEST, T::min_nan, T::row_min),
        ReduceOp::Any | ReduceOp::All => bail!(dtype, "{} needs bool", f.name()),
    }
    Ok(())
}

/// `f` over `axes` of `x`, shaped as `out`.
pub(crate) fn reduce(f: ReduceOp, x: &Value, axes: &[usize], out: &Meta) -> Result<Value> {
    if matches!(x.dtype, DType::F16 | DType::BF16) {
        let r = reduce(f, &cast(x, DType::F32)?, axes, &Meta::new(DType::F32, out.shape.clone()))?;
        return cast(&r, x.dtype);
    }
    if f == ReduceOp::Mean && x.dtype.is_int() && !matches!(x.dtype, DType::I64 | DType::U64) {
        // TensorFlow's integer mean is exact: summed in i64 (the quotient,
        // truncated toward zero, fits the type again).
        let r = reduce(f, &cast(x, DType::I64)?, axes, &Meta::new(DType::I64, out.shape.clone()))?;
        return cast(&r, x.dtype);
    }
    let (data, a, r, b) = canonical(x, axes)?;
    let n = a * b;
    match x.dtype {
        DType::Bool => {
            // Bools are bytes 0/1: any is max, all is min.
            let src = data.contiguous_bytes();
            let mut buf = HostBuffer::for_elements::<u8>(n)?;
            let o = buf.as_mut_slice::<u8>();
            match f {
                ReduceOp::Any => {
                    reduce_abr(src, (a, r, b), o, 0u8, |p: u8, q: u8| p | q, |x: &[u8]| fold_lanes(x, 0, |p, q| p | q))
                }
                ReduceOp::All => {
                    reduce_abr(src, (a, r, b), o, 1u8, |p: u8, q: u8| p & q, |x: &[u8]| fold_lanes(x, 1, |p, q| p & q))
                }
                _ => bail!(dtype, "{} does not accept bool", f.name()),
            }
            Ok(Value::from_buffer(DType::Bool, out.shape.clone(), buf))
        }
        dt => with_dtype!(dt, T => {
            let mut buf = HostBuffer::for_elements::<T>(n)?;
            reduce_num::<T>(f, data.contiguous_slice::<T>().unwrap_or(&[]), (a, r, b), buf.as_mut_slice::<T>())?;
            Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
        }, [F32, F64, I32, I64, U8, I8, I16, U16, U32, U64], bail!(dtype, "{} does not accept {dt}", f.name())),
    }
}

/// Index of the best element along the reduced axis of `[a, r, b]` data:
/// the first of the largest (smallest), NaN skipped, 0 when all are NaN
/// (TensorFlow's argmax/argmin).
fn arg_abr<T: Num>(src: &[T], (a, r, b): (usize, usize, usize), out: &mut [i64], is_max: bool) {
    let better = move |v: T, best: T| -> bool {
        if v.is_nan() {
            false
        } else if best.is_nan() {
            true
        } else if is_max {
            v > best
        } else {
            v < best
        }
    };
    let task = |i: usize, o: &mut [i64]| {
        for (jj, oi) in o.iter_mut().enumerate() {
            let (ai, j) = ((i + jj) / b, (i + jj) % b);
            let base = ai * r * b + j;
            let mut best = src[base];
            let mut at = 0usize;
            for k in 1..r {
                let v = src[base + k * b];
                if better(v, best) {
                    best = v;
                    at = k;
                }
            }
            *oi = at as i64;
        }
    };
    let n = a * b;
    let per = (GRAIN / r.max(1)).max(1);
    if n <= per {
        task(0, out);
    } else {
        out.par_chunks_mut(per).enumerate().for_each(|(t, o)| task(t * per, o));
    }
}

/// Argmax/argmin along `axis`.
pub(crate) fn arg_reduce(f: ArgOp, x: &Value, axis: usize, out: &Meta) -> Result<Value> {
    if matches!(x.dtype, DType::F16 | DType::BF16) {
        return arg_reduce(f, &cast(x, DType::F32)?, axis, out);
    }
    let (data, a, r, b) = canonical(x, &[axis])?;
    let mut buf = HostBuffer::zeroed::<i64>(a * b)?;
    let idx = buf.as_mut_slice::<i64>();
    with_dtype!(x.dtype, T => arg_abr::<T>(data.contiguous_slice::<T>().unwrap_or(&[]), (a, r, b), idx, f == ArgOp::ArgMax),
        [F32, F64, I32, I64, U8, I8, I16, U16, U32, U64], bail!(dtype, "argmax/argmin do not accept {}", x.dtype));
    let v = Value::from_buffer(DType::I64, out.shape.clone(), buf);
    if out.dtype == DType::I64 {
        Ok(v)
    } else {
        cast(&v, out.dtype)
    }
}

fn scan_abr<T: Num>(
    src: &[T],
    (a, r, b): (usize, usize, usize),
    out: &mut [T],
    f: ScanOp,
    exclusive: bool,
    reverse: bool,
) {
    let (id, op): (T, fn(T, T) -> T) = match f {
        ScanOp::Cumsum => (T::ZERO, T::add),
        ScanOp::Cumprod => (T::ONE, T::mul),
    };
    let line = |i: usize, j: usize, o: &mut [T]| {
        // o is the whole [r, b] block of outer index i; walk column j.
        let base = i * r * b;
        let mut acc = id;
        for step in 0..r {
            let k = if reverse { r - 1 - step } else { step };
            let v = src[base + k * b + j];
            if exclusive {
                o[k * b + j] = acc;
                acc = op(acc, v);
            } else {
                acc = op(acc, v);
                o[k * b + j] = acc;
            }
        }
    };
    if r == 0 || a * b == 0 {
        return;
    }
    let block = r * b;
    let run = |i: usize, o: &mut [T]| {
        for j in 0..b {
            line(i, j, o);
        }
    };
    if a * block <= GRAIN {
        for (i, o) in out.chunks_mut(block).enumerate() {
            run(i, o);
        }
    } else {
        out.par_chunks_mut(block).enumerate().for_each(|(i, o)| run(i, o));
    }
}

/// Cumulative sum/product along `axis`.
pub(crate) fn scan(f: ScanOp, x: &Value, axis: usize, exclusive: bool, reverse: bool) -> Result<Value> {
    if matches!(x.dtype, DType::F16 | DType::BF16) {
        return cast(&scan(f, &cast(x, DType::F32)?, axis, exclusive, reverse)?, x.dtype);
    }
    let data = materialize(x)?;
    let dims = x.shape();
    let a: usize = dims[..axis].iter().product();
    let r = dims[axis];
    let b: usize = dims[axis + 1..].iter().product();
    with_dtype!(x.dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(x.numel())?;
        scan_abr::<T>(data.contiguous_slice::<T>().unwrap_or(&[]), (a, r, b), buf.as_mut_slice::<T>(), f, exclusive, reverse);
        Ok(Value::from_buffer(T::DTYPE, Shape::new(dims), buf))
    }, [F32, F64, I32, I64, U8, I8, I16, U16, U32, U64], bail!(dtype, "cumsum/cumprod do not accept {}", x.dtype))
}
