//! Kernels of the row-sequential ops (`op::host`), the only implementation
//! of them: other backends run these on a host copy of their inputs.

use super::elementwise::cast;
use crate::error::Result;
use crate::op::{HostOp, Meta};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Element, Value};
use smallvec::{smallvec, SmallVec};

/// Run `f` on the CPU value `x`, giving outputs of the types in `outs`.
pub(crate) fn run(f: HostOp, x: &Value, outs: &[Meta]) -> Result<SmallVec<[Value; 2]>> {
    let (first, second) = match f {
        HostOp::IsotonicRegression => per_row::<f64>(x, isotonic_decreasing)?,
        HostOp::UniqueRows => per_row::<i64>(x, unique_row)?,
    };
    let first = if first.dtype == outs[0].dtype { first } else { cast(&first, outs[0].dtype)? };
    Ok(smallvec![first, second])
}

/// Apply `row_fn` to each row (the last axis) of `x` read as `T`: it fills
/// a row of `T` and a row of i32.
fn per_row<T: Element>(x: &Value, row_fn: fn(&[T], &mut [T], &mut [i32])) -> Result<(Value, Value)> {
    let n = x.shape().last().copied().unwrap_or(1);
    let wide = super::copy::materialize(&cast(x, T::DTYPE)?)?;
    let src = wide.contiguous_slice::<T>().unwrap_or(&[]);
    let mut first = HostBuffer::zeroed::<T>(src.len())?;
    let mut second = HostBuffer::zeroed::<i32>(src.len())?;
    if n > 0 {
        let rows = first.as_mut_slice::<T>().chunks_mut(n).zip(second.as_mut_slice::<i32>().chunks_mut(n));
        for (row, (a, b)) in src.chunks(n).zip(rows) {
            row_fn(row, a, b);
        }
    }
    let shape = x.shape().clone();
    Ok((Value::from_buffer(T::DTYPE, shape.clone(), first), Value::from_buffer(DType::I32, shape, second)))
}

/// Pool adjacent violators for a non-increasing fit: a stack of segments
/// (start, sum, count), merging the top two while the earlier mean is
/// strictly below the later one (equal neighbours stay apart, and NaN never
/// merges, as in TensorFlow).
fn isotonic_decreasing(x: &[f64], y: &mut [f64], segments: &mut [i32]) {
    let mut stack: Vec<(usize, f64, f64)> = Vec::with_capacity(x.len());
    for (i, &v) in x.iter().enumerate() {
        stack.push((i, v, 1.0));
        while stack.len() > 1 {
            let (_, s1, c1) = stack[stack.len() - 1];
            let (start, s0, c0) = stack[stack.len() - 2];
            if s0 / c0 < s1 / c1 {
                stack.pop();
                let top = stack.len() - 1;
                stack[top] = (start, s0 + s1, c0 + c1);
            } else {
                break;
            }
        }
    }
    for (k, &(start, sum, count)) in stack.iter().enumerate() {
        let end = stack.get(k + 1).map_or(x.len(), |s| s.0);
        y[start..end].fill(sum / count);
        segments[start..end].fill(k as i32);
    }
}

/// A row's distinct values in order of first appearance (zero-padded) and
/// each element's index among them.
fn unique_row(x: &[i64], y: &mut [i64], idx: &mut [i32]) {
    let mut seen: std::collections::HashMap<i64, i32> = std::collections::HashMap::with_capacity(x.len());
    for (i, &v) in x.iter().enumerate() {
        let next = seen.len() as i32;
        let k = *seen.entry(v).or_insert(next);
        if k == next {
            y[k as usize] = v;
        }
        idx[i] = k;
    }
}
