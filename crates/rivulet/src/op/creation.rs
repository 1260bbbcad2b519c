//! Creation ops (fills, ranges, identity matrices, seeded random numbers):
//! distributions, shapes, and the random stream every backend draws from.
//!
//! Random numbers come from Philox 4x32-10, a counter-based generator: element
//! `i` of a draw depends only on the seed, the draw's stream and `i`, so the
//! numbers are the same on every machine, backend and thread count.

use super::{Meta, Metas, Op};
use crate::error::{bail, Result};
use crate::tensor::{DType, Scalar, Shape};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

/// A distribution for [`Op::Random`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform { low: f64, high: f64 },
    /// Uniform integers on `[low, high)`.
    UniformInt { low: i64, high: i64 },
    /// Normal with this mean and standard deviation.
    Normal { mean: f64, stddev: f64 },
    /// Normal restricted to within two standard deviations of the mean
    /// (values outside are redrawn).
    TruncatedNormal { mean: f64, stddev: f64 },
}

impl Distribution {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Distribution::Uniform { .. } => "RandomUniform",
            Distribution::UniformInt { .. } => "RandomUniformInt",
            Distribution::Normal { .. } => "RandomStandardNormal",
            Distribution::TruncatedNormal { .. } => "TruncatedNormal",
        }
    }
}

/// The seed of a random op seeded by `seed` and the value of an offset
/// tensor (a step counter): one mix, the same on every device (the CUDA
/// random kernel computes it where it reads the offset).
pub(crate) fn offset_seed(seed: u64, offset: i64) -> u64 {
    splitmix64(seed ^ splitmix64(offset as u64))
}

/// A strong 64-bit mix (Steele et al.'s SplitMix64 finaliser).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Number of elements of `range(start, limit, delta)`.
pub(crate) fn range_len(start: Scalar, limit: Scalar, delta: Scalar) -> Result<usize> {
    let (s, l, d) = (start.as_f64(), limit.as_f64(), delta.as_f64());
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        bail!(
            invalid,
            "range needs a finite nonzero delta and finite bounds, got start {start}, limit {limit}, delta {delta}"
        );
    }
    let n = match (start, limit, delta) {
        (Scalar::I64(s), Scalar::I64(l), Scalar::I64(d)) => {
            let span = l as i128 - s as i128;
            let d = d as i128;
            if (span > 0) != (d > 0) || span == 0 {
                0.0
            } else {
                ((span.abs() + d.abs() - 1) / d.abs()) as f64
            }
        }
        _ => ((l - s) / d).ceil().max(0.0),
    };
    if n > crate::tensor::shape::MAX_ELEMENTS as f64 {
        bail!(invalid, "range would have {n} elements");
    }
    Ok(n as usize)
}

pub(crate) fn infer(op: &Op, inputs: &[Meta]) -> Result<Metas> {
    let m = match op {
        Op::Fill { shape, dtype, .. } => {
            if shape.is_fully_known() {
                shape.checked_numel()?;
            }
            Meta::new(*dtype, shape.clone())
        }
        Op::FillLike { .. } => inputs[0].clone(),
        Op::Range { start, limit, delta, dtype } => {
            if !dtype.is_numeric() {
                bail!(dtype, "range needs a numeric dtype, got {dtype}");
            }
            Meta::new(*dtype, Shape::new(&[range_len(*start, *limit, *delta)?]))
        }
        Op::Linspace { num, dtype, start, stop } => {
            if !dtype.is_float() {
                bail!(dtype, "linspace needs a floating-point dtype, got {dtype}");
            }
            if !start.is_finite() || !stop.is_finite() {
                bail!(invalid, "linspace needs finite bounds, got {start} and {stop}");
            }
            Meta::new(*dtype, Shape::new(&[*num]))
        }
        Op::Eye { rows, cols, dtype } => {
            let s = Shape::new(&[*rows, *cols]);
            s.checked_numel()?;
            Meta::new(*dtype, s)
        }
        Op::RandomLike { dist, .. } => {
            let Some(m) = inputs.first() else { bail!(invalid, "random_like needs an input to take the shape of") };
            if inputs.len() > 2 {
                bail!(
                    invalid,
                    "random_like takes a shape input and an optional seed offset, got {} inputs",
                    inputs.len()
                );
            }
            if let Some(off) = inputs.get(1) {
                if off.dtype != DType::I64 || off.shape.rank() != 0 {
                    bail!(dtype, "random_like's seed offset must be an i64 scalar, got {}{}", off.dtype, off.shape);
                }
            }
            check_distribution(dist, m.dtype)?;
            m.clone()
        }
        Op::Random { dist, shape, dtype, .. } => {
            shape.checked_numel()?;
            check_distribution(dist, *dtype)?;
            Meta::new(*dtype, shape.clone())
        }
        other => bail!(unimplemented, "no shape inference for {}", other.type_name()),
    };
    Ok(smallvec![m])
}

fn check_distribution(dist: &Distribution, dtype: DType) -> Result<()> {
    match dist {
        Distribution::UniformInt { low, high } => {
            if !matches!(dtype, DType::I32 | DType::I64) {
                bail!(dtype, "random integers need i32 or i64, got {dtype}");
            }
            if low >= high {
                bail!(invalid, "random integers need low < high, got [{low}, {high})");
            }
        }
        Distribution::Uniform { low, high } => {
            if !dtype.is_float() {
                bail!(dtype, "random_uniform needs a floating-point dtype, got {dtype} (use random_uniform_int)");
            }
            if !(low.is_finite() && high.is_finite() && low <= high) {
                bail!(invalid, "random_uniform needs finite low <= high, got [{low}, {high})");
            }
        }
        Distribution::Normal { mean, stddev } | Distribution::TruncatedNormal { mean, stddev } => {
            if !dtype.is_float() {
                bail!(dtype, "normal samples need a floating-point dtype, got {dtype}");
            }
            if !(mean.is_finite() && stddev.is_finite() && *stddev >= 0.0) {
                bail!(invalid, "normal samples need a finite mean and stddev >= 0, got {mean}, {stddev}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The random stream: one definition for every backend
// ---------------------------------------------------------------------------

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

/// The counter-based stream of one random draw: block `i` of it is a pure
/// function of the seed, the stream number and `i`, so every backend (and
/// every thread) computes the same numbers for the same element.
#[derive(Clone, Copy)]
pub(crate) struct RandomStream {
    key: [u32; 2],
    stream: u64,
}

/// The values of one block: up to four floats (as f64), or two exact integers.
#[derive(Clone, Copy)]
pub(crate) enum Sample {
    F([f64; 4]),
    I([i64; 2]),
}

impl RandomStream {
    pub(crate) fn new(seed: u64, stream: u64) -> RandomStream {
        RandomStream { key: [seed as u32, (seed >> 32) as u32], stream }
    }

    /// Values per block for this dtype and distribution.
    pub(crate) fn per_block(dtype: DType, dist: &Distribution) -> usize {
        let wide = dtype == DType::F64 || matches!(dist, Distribution::UniformInt { .. });
        match dist {
            Distribution::TruncatedNormal { .. } => 1,
            _ if wide => 2,
            _ => 4,
        }
    }

    /// The samples of block `blk` (elements `blk * per_block ..`).
    #[inline]
    pub(crate) fn sample_block(&self, dist: &Distribution, dtype: DType, blk: u64) -> Sample {
        let per = RandomStream::per_block(dtype, dist);
        let wide = dtype == DType::F64;
        let mut vals = [0f64; 4];
        match *dist {
            Distribution::Uniform { low, high } => {
                let b = self.block(blk, 0);
                for (l, v) in vals.iter_mut().enumerate().take(per) {
                    let u = match dtype {
                        DType::F64 => unit_f64(b[2 * l], b[2 * l + 1]),
                        DType::F16 => unit_bits(b[l], 11),
                        DType::BF16 => unit_bits(b[l], 8),
                        _ => unit_f32(b[l]),
                    };
                    *v = low + (high - low) * u;
                }
            }
            Distribution::UniformInt { low, high } => {
                // Integers exactly (f64 would round large values).
                let b = self.block(blk, 0);
                let span = (high as i128 - low as i128) as u128;
                let draw = |l: usize| {
                    let r = ((b[2 * l] as u128) << 32) | b[2 * l + 1] as u128;
                    (low as i128 + (r % span) as i128) as i64
                };
                return Sample::I([draw(0), draw(1)]);
            }
            Distribution::Normal { mean, stddev } => {
                let b = self.block(blk, 0);
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
                vals[0] = mean + stddev * truncated(self, blk, wide);
            }
        }
        Sample::F(vals)
    }

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

/// Standard normal for element `i` within two standard deviations (rejection).
fn truncated(s: &RandomStream, i: u64, wide: bool) -> f64 {
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
