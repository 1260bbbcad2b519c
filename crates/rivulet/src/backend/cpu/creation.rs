//! Creation kernels: fill, range, linspace, eye and Philox random numbers.

use super::parallel::fill_chunks;
use crate::error::Result;
use crate::ops::creation::Distribution;
use crate::ops::Meta;
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

/// Philox 4x32 with 10 rounds (Salmon et al., SC'11): four 32-bit outputs
/// from a 128-bit counter and a 64-bit key.
#[inline(always)]
pub(crate) fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The counter stream of one random draw.
#[derive(Clone, Copy)]
struct Stream {
    key: [u32; 2],
    stream: u64,
}

impl Stream {
    #[inline(always)]
    fn block(&self, index: u64, attempt: u32) -> [u32; 4] {
        philox4x32(
            [
                index as u32,
                (index >> 32) as u32,
                self.stream as u32,
                ((self.stream >> 32) as u32) ^ attempt.wrapping_mul(0x9E37_79B9),
            ],
            self.key,
        )
    }
}

/// Uniform in [0, 1) with 24 random bits.
#[inline(always)]
fn unit_f32(x: u32) -> f64 {
    (x >> 8) as f64 * (1.0 / 16_777_216.0)
}

/// Uniform in [0, 1) with `bits` random bits: no more than the target
/// dtype's mantissa holds, so rounding to it can never reach 1.
#[inline(always)]
fn unit_bits(x: u32, bits: u32) -> f64 {
    (x >> (32 - bits)) as f64 / (1u64 << bits) as f64
}
/// Uniform in [0, 1) with 53 random bits.
#[inline(always)]
fn unit_f64(hi: u32, lo: u32) -> f64 {
    ((((hi as u64) << 32) | lo as u64) >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Box-Muller from two uniforms in [0, 1): two standard normals. libm keeps
/// the numbers identical on every platform.
#[inline(always)]
fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = libm::sqrt(-2.0 * libm::log(1.0 - u1));
    let t = 2.0 * std::f64::consts::PI * u2;
    (r * libm::cos(t), r * libm::sin(t))
}

/// Values per Philox block for this dtype and distribution.
fn per_block(dtype: DType, dist: &Distribution) -> usize {
    let wide = dtype == DType::F64 || matches!(dist, Distribution::UniformInt { .. });
    match dist {
        Distribution::TruncatedNormal { .. } => 1,
        _ if wide => 2,
        _ => 4,
    }
}

/// Standard normal for element `i` within two standard deviations (rejection).
fn truncated(s: &Stream, i: u64, wide: bool) -> f64 {
    for attempt in 0..64u32 {
        let b = s.block(i, attempt);
        let (u1, u2) =
            if wide { (unit_f64(b[0], b[1]), unit_f64(b[2], b[3])) } else { (unit_f32(b[0]), unit_f32(b[1])) };
        let (z, _) = box_muller(u1, u2);
        if z.abs() <= 2.0 {
            return z;
        }
    }
    0.0
}

/// Samples of `dist` for `shape` from `seed`, stream `stream`.
pub(crate) fn random(dist: &Distribution, shape: &Shape, dtype: DType, seed: u64, stream: u64) -> Result<Value> {
    let s = Stream { key: [seed as u32, (seed >> 32) as u32], stream };
    let n = shape.numel_known();
    let per = per_block(dtype, dist);
    let wide = dtype == DType::F64;
    with_dtype!(dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(n)?;
        // Chunks start on block boundaries so each element has a fixed source.
        let grain = 1 << 14;
        fill_chunks(buf.as_mut_slice::<T>(), grain, |start, out| {
            let mut vals = [0f64; 4];
            for (j, o) in out.iter_mut().enumerate() {
                let i = start + j;
                let (blk, lane) = ((i / per) as u64, i % per);
                if lane == 0 || j == 0 {
                    match *dist {
                        Distribution::Uniform { low, high } => {
                            let b = s.block(blk, 0);
                            for (l, v) in vals.iter_mut().enumerate().take(per) {
                                let u = match T::DTYPE {
                                    DType::F64 => unit_f64(b[2 * l], b[2 * l + 1]),
                                    DType::F16 => unit_bits(b[l], 11),
                                    DType::BF16 => unit_bits(b[l], 8),
                                    _ => unit_f32(b[l]),
                                };
                                *v = low + (high - low) * u;
                            }
                        }
                        Distribution::UniformInt { low, high } => {
                            let b = s.block(blk, 0);
                            let span = (high as i128 - low as i128) as u128;
                            for (l, v) in vals.iter_mut().enumerate().take(per) {
                                let r = ((b[2 * l] as u128) << 32) | b[2 * l + 1] as u128;
                                *v = (low as i128 + (r % span) as i128) as f64;
                            }
                        }
                        Distribution::Normal { mean, stddev } => {
                            let b = s.block(blk, 0);
                            if wide {
                                let (z0, z1) = box_muller(unit_f64(b[0], b[1]), unit_f64(b[2], b[3]));
                                vals[0] = mean + stddev * z0;
                                vals[1] = mean + stddev * z1;
                            } else {
                                let (z0, z1) = box_muller(unit_f32(b[0]), unit_f32(b[1]));
                                let (z2, z3) = box_muller(unit_f32(b[2]), unit_f32(b[3]));
                                vals = [mean + stddev * z0, mean + stddev * z1, mean + stddev * z2, mean + stddev * z3];
                            }
                        }
                        Distribution::TruncatedNormal { mean, stddev } => {
                            vals[0] = mean + stddev * truncated(&s, blk, wide);
                        }
                    }
                }
                *o = if let Distribution::UniformInt { low, high } = *dist {
                    // Integers: recompute exactly (f64 would round large values).
                    let b = s.block(blk, 0);
                    let r = ((b[2 * lane] as u128) << 32) | b[2 * lane + 1] as u128;
                    let span = (high as i128 - low as i128) as u128;
                    T::from_i64((low as i128 + (r % span) as i128) as i64)
                } else {
                    T::from_f64(vals[lane])
                };
            }
        });
        Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
    })
}
