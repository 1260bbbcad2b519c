//! Creation kernels: fill, range, linspace, eye and Philox random numbers.

use super::parallel::fill_chunks;
use crate::error::Result;
use crate::op::creation::{Distribution, RandomStream, Sample};
use crate::op::Meta;
use crate::tensor::dtype::{with_dtype, Element};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Scalar, Shape, Value};

pub(crate) fn fill(shape: &Shape, value: Scalar, dtype: DType) -> Result<Value> {
    with_dtype!(dtype, T => {
        let v = value.to_element::<T>();
        let mut buf = HostBuffer::for_elements::<T>(shape.numel_known())?;
        fill_chunks(buf.as_mut_slice::<T>(), super::parallel::GRAIN, |_, c| c.fill(v));
        Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
    })
}

/// `shape` as a vector of `dtype` (i32 or i64): TensorFlow's `Shape`, which
/// refuses dimensions past i32's range in an i32 vector.
pub(crate) fn shape_of(shape: &Shape, dtype: DType) -> Result<Value> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    if dtype == DType::I32 && dims.iter().any(|&d| d > i64::from(i32::MAX)) {
        crate::error::bail!(invalid, "shape {shape} does not fit in int32: ask for int64");
    }
    from_ints(&dims, dtype)
}

/// A vector of `values` in `dtype` (an integer or float type).
pub(crate) fn from_ints(values: &[i64], dtype: DType) -> Result<Value> {
    with_dtype!(dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(values.len())?;
        for (o, &v) in buf.as_mut_slice::<T>().iter_mut().zip(values) {
            *o = T::from_i64(v);
        }
        Ok(Value::from_buffer(T::DTYPE, Shape::new(&[values.len()]), buf))
    })
}

pub(crate) fn range(start: Scalar, delta: Scalar, out: &Meta) -> Result<Value> {
    let n = out.shape.numel_known();
    with_dtype!(out.dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(n)?;
        let o = buf.as_mut_slice::<T>();
        match (start, delta) {
            (Scalar::I64(s), Scalar::I64(d)) if !T::DTYPE.is_float() => {
                for (i, v) in o.iter_mut().enumerate() {
                    *v = T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d)));
                }
            }
            _ => {
                let (s, d) = (start.as_f64(), delta.as_f64());
                for (i, v) in o.iter_mut().enumerate() {
                    *v = T::from_f64(s + i as f64 * d);
                }
            }
        }
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

pub(crate) fn linspace(start: f64, stop: f64, out: &Meta) -> Result<Value> {
    let n = out.shape.numel_known();
    with_dtype!(out.dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(n)?;
        let o = buf.as_mut_slice::<T>();
        let step = if n > 1 { (stop - start) / (n - 1) as f64 } else { 0.0 };
        for (i, v) in o.iter_mut().enumerate() {
            *v = T::from_f64(if n > 1 && i == n - 1 { stop } else { start + i as f64 * step });
        }
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

pub(crate) fn eye(rows: usize, cols: usize, dtype: DType) -> Result<Value> {
    with_dtype!(dtype, T => {
        let mut buf = HostBuffer::zeroed::<T>(rows * cols)?;
        let o = buf.as_mut_slice::<T>();
        for i in 0..rows.min(cols) {
            o[i * cols + i] = T::from_i64(1);
        }
        Ok(Value::from_buffer(T::DTYPE, Shape::new(&[rows, cols]), buf))
    })
}

/// Samples of `dist` for `shape` from `seed`, stream `stream`.
pub(crate) fn random(dist: &Distribution, shape: &Shape, dtype: DType, seed: u64, stream: u64) -> Result<Value> {
    let s = RandomStream::new(seed, stream);
    let n = shape.numel_known();
    let per = RandomStream::per_block(dtype, dist);
    with_dtype!(dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(n)?;
        // Chunks start on block boundaries so each element has a fixed source.
        let grain = 1 << 14;
        fill_chunks(buf.as_mut_slice::<T>(), grain, |start, out| {
            let mut block = Sample::F([0.0; 4]);
            for (j, o) in out.iter_mut().enumerate() {
                let i = start + j;
                let (blk, lane) = ((i / per) as u64, i % per);
                if lane == 0 || j == 0 {
                    block = s.sample_block(dist, T::DTYPE, blk);
                }
                *o = match &block {
                    Sample::F(v) => T::from_f64(v[lane]),
                    Sample::I(v) => T::from_i64(v[lane]),
                };
            }
        });
        Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
    })
}
