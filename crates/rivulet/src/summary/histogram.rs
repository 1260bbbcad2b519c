//! Histograms: equal-width buckets between the smallest and the largest
//! value, as `tf.summary.histogram` (v2) makes them (30 by default).

use super::proto::HistogramProto;
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::tensor::{DType, Element};

/// The bucket count of [`SummaryWriter::histogram`](super::SummaryWriter::histogram),
/// `tf.summary.histogram`'s default.
pub const DEFAULT_BUCKETS: usize = 30;

/// Values a histogram can be made of: a tensor of a real or integer
/// dtype, or a slice of `f64`.
pub trait HistogramData {
    /// The values as `f64`, in row-major order.
    fn histogram_values(&self) -> Result<Vec<f64>>;
}

impl HistogramData for [f64] {
    fn histogram_values(&self) -> Result<Vec<f64>> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> HistogramData for [f64; N] {
    fn histogram_values(&self) -> Result<Vec<f64>> {
        Ok(self.to_vec())
    }
}

impl HistogramData for Vec<f64> {
    fn histogram_values(&self) -> Result<Vec<f64>> {
        Ok(self.clone())
    }
}

impl HistogramData for Tensor {
    fn histogram_values(&self) -> Result<Vec<f64>> {
        tensor_values(self)
    }
}

/// A real or integer tensor's elements as `f64` (complex and boolean tensors are errors).
pub(crate) fn tensor_values(t: &Tensor) -> Result<Vec<f64>> {
    fn convert<T: Element>(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_vec::<T>()?.into_iter().map(Element::to_f64).collect())
    }
    match t.dtype() {
        DType::F32 => convert::<f32>(t),
        DType::F64 => convert::<f64>(t),
        DType::F16 => convert::<half::f16>(t),
        DType::BF16 => convert::<half::bf16>(t),
        DType::I8 => convert::<i8>(t),
        DType::I16 => convert::<i16>(t),
        DType::I32 => convert::<i32>(t),
        DType::I64 => convert::<i64>(t),
        DType::U8 => convert::<u8>(t),
        DType::U16 => convert::<u16>(t),
        DType::U32 => convert::<u32>(t),
        DType::U64 => convert::<u64>(t),
        other @ (DType::Bool | DType::C64 | DType::C128) => {
            bail!(dtype, "a summary needs real numbers, got a {other} tensor")
        }
    }
}

/// The histogram of `values` in `buckets` equal-width buckets spanning
/// `[min, max]`. Bucket `i` holds the values `v` with
/// `limit[i-1] <= v < limit[i]` (the last also `v == max`), as TensorFlow's
/// `HistogramProto` buckets are read; the last limit is `max` itself.
/// All-equal values make one bucket whose limit is that value; no values
/// make no buckets. NaN and infinities are an error: they have no bucket.
pub fn histogram_proto(values: &[f64], buckets: usize) -> Result<HistogramProto> {
    if buckets == 0 {
        bail!(invalid, "a histogram needs at least one bucket");
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        bail!(invalid, "a histogram's values must be finite, got {bad}");
    }
    let mut h = HistogramProto { num: values.len() as f64, ..HistogramProto::default() };
    if values.is_empty() {
        return Ok(h);
    }
    h.min = values.iter().copied().fold(f64::INFINITY, f64::min);
    h.max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    h.sum = values.iter().sum();
    h.sum_squares = values.iter().map(|v| v * v).sum();
    if h.min == h.max {
        h.bucket_limit = vec![h.max];
        h.bucket = vec![values.len() as f64];
        return Ok(h);
    }
    let width = (h.max - h.min) / buckets as f64;
    h.bucket_limit = (1..=buckets).map(|i| h.min + width * i as f64).collect();
    if let Some(last) = h.bucket_limit.last_mut() {
        *last = h.max;
    }
    h.bucket = vec![0.0; buckets];
    for &v in values {
        let i = h.bucket_limit.partition_point(|&limit| limit <= v).min(buckets - 1);
        h.bucket[i] += 1.0;
    }
    Ok(h)
}
