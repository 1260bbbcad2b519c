//! Fused softmax / log-softmax (one pass per row over data in L1) and top_k.

use super::copy::materialize;
use super::elementwise::cast;
use super::fold_f32;
use super::math;
use super::parallel::GRAIN;
use super::reduce::Num;
use super::simd::{vectorize, Kernel};
use crate::error::{bail, Result};
use crate::tensor::dtype::{with_dtype, Element};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Shape, Value};
use rayon::prelude::*;
use std::cmp::Ordering;

/// One row of softmax (or log-softmax): max, exp and sum, scale; the row
/// stays in L1 between the passes.
struct SoftmaxRow<'a> {
    x: &'a [f32],
    o: &'a mut [f32],
    log: bool,
}

impl Kernel for SoftmaxRow<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let SoftmaxRow { x, o, log } = self;
        let m = fold_f32::max(x);
        for (d, &v) in o.iter_mut().zip(x) {
            *d = math::exp_nonpositive(v - m);
        }
        let s = fold_f32::sum(o);
        if log {
            // (v - m) - log s: subtracting the large terms first keeps precision.
            let ls = math::log(s);
            for (d, &v) in o.iter_mut().zip(x) {
                *d = (v - m) - ls;
            }
        } else {
            let inv = 1.0 / s;
            for d in o.iter_mut() {
                *d *= inv;
            }
        }
    }
}

fn softmax_row_f64(x: &[f64], o: &mut [f64], log: bool) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max_nan);
    for (d, &v) in o.iter_mut().zip(x) {
        *d = (v - m).exp();
    }
    let s: f64 = o.iter().sum();
    if log {
        let ls = s.ln();
        for (d, &v) in o.iter_mut().zip(x) {
            *d = (v - m) - ls;
        }
    } else {
        for d in o.iter_mut() {
            *d /= s;
        }
    }
}

/// Apply `row` to each contiguous row of length `r`, in parallel blocks.
fn rows<T: Element>(src: &[T], out: &mut [T], r: usize, row: impl Fn(&[T], &mut [T]) + Sync) {
    if r == 0 {
        return;
    }
    let per_task = (GRAIN / r).max(1) * r;
    if out.len() <= per_task {
        for (o, x) in out.chunks_mut(r).zip(src.chunks(r)) {
            row(x, o);
        }
    } else {
        out.par_chunks_mut(per_task).zip(src.par_chunks(per_task)).for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(r).zip(x.chunks(r)) {
                row(x, o);
            }
        });
    }
}

/// Softmax (or log-softmax) along `axis`.
pub(crate) fn softmax(x: &Value, axis: usize, log: bool) -> Result<Value> {
    let rank = x.shape().rank();
    if axis + 1 != rank {
        // Move the axis last, compute, move it back.
        let mut perm: Vec<usize> = (0..rank).filter(|&d| d != axis).collect();
        perm.push(axis);
        let moved = x.view(x.layout.permute(&perm));
        let r = softmax(&moved, rank - 1, log)?;
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        return materialize(&r.view(r.layout.permute(&inverse)));
    }
    match x.dtype {
        DType::F16 | DType::BF16 => cast(&softmax(&cast(x, DType::F32)?, axis, log)?, x.dtype),
        DType::F32 => {
            let c = materialize(x)?;
            let mut buf = HostBuffer::for_elements::<f32>(x.numel())?;
            let src = c.contiguous_slice::<f32>().unwrap_or(&[]);
            rows(src, buf.as_mut_slice::<f32>(), x.shape()[axis], |x, o| vectorize(SoftmaxRow { x, o, log }));
            Ok(Value::from_buffer(DType::F32, x.shape().clone(), buf))
        }
        DType::F64 => {
            let c = materialize(x)?;
            let mut buf = HostBuffer::for_elements::<f64>(x.numel())?;
            let src = c.contiguous_slice::<f64>().unwrap_or(&[]);
            rows(src, buf.as_mut_slice::<f64>(), x.shape()[axis], |x, o| softmax_row_f64(x, o, log));
            Ok(Value::from_buffer(DType::F64, x.shape().clone(), buf))
        }
        dt => bail!(dtype, "softmax needs a floating-point dtype, got {dt}"),
    }
}

/// `k` largest along the last axis: values and i32 indices.
pub(crate) fn top_k(x: &Value, k: usize) -> Result<(Value, Value)> {
    if matches!(x.dtype, DType::F16 | DType::BF16) {
        let (v, i) = top_k(&cast(x, DType::F32)?, k)?;
        return Ok((cast(&v, x.dtype)?, i));
    }
    let c = materialize(x)?;
    let dims = x.shape();
    let r = *dims.last().unwrap_or(&0);
    let outer = x.numel().checked_div(r).unwrap_or_else(|| dims[..dims.rank().saturating_sub(1)].iter().product());
    let mut out_dims = dims.to_vec();
    if let Some(l) = out_dims.last_mut() {
        *l = k;
    }
    let out_shape = Shape::from(out_dims);
    with_dtype!(x.dtype, T => {
        let src = c.contiguous_slice::<T>().unwrap_or(&[]);
        let mut vals = HostBuffer::for_elements::<T>(outer * k)?;
        let mut idx_buf = HostBuffer::zeroed::<i32>(outer * k)?;
        let (vs, idx) = (vals.as_mut_slice::<T>(), idx_buf.as_mut_slice::<i32>());
        // Nothing to pick (k = 0, or no rows): no pass over the rows.
        let rows = if k == 0 { 0 } else { outer };
        let mut order: Vec<usize> = crate::tensor::storage::try_vec_with_capacity(r)?;
        for row in 0..rows {
            let x = &src[row * r..(row + 1) * r];
            order.clear();
            order.extend(0..r);
            // Descending, NaN first, ties by index (stable sort).
            order.sort_by(|&a, &b| {
                let (xa, xb) = (x[a], x[b]);
                match (xa.is_nan(), xb.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    _ => xb.partial_cmp(&xa).unwrap_or(Ordering::Equal),
                }
            });
            for (j, &o) in order.iter().take(k).enumerate() {
                vs[row * k + j] = x[o];
                idx[row * k + j] = o as i32;
            }
        }
        Ok((
            Value::from_buffer(T::DTYPE, out_shape.clone(), vals),
            Value::from_buffer(DType::I32, out_shape.clone(), idx_buf),
        ))
    }, [F32, F64, I32, I64, U8, I8, I16, U16, U32, U64], bail!(dtype, "top_k does not accept {}", x.dtype))
}
