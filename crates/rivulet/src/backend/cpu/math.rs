//! Branch-free f32 transcendental functions that the compiler can vectorise.
//!
//! Each is written with selects instead of branches. Polynomials use fused
//! multiply-add (`mul_add`), which is exactly rounded by definition: the
//! AVX2 and AVX-512 paths use the FMA instruction and a CPU without one calls
//! the exact software routine, so every machine gives the same bits.
//! Accuracy is within a few ulp of the correctly rounded result (tests
//! compare with f64 references). f64 uses the standard library.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that n * LN2_HI is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Select without a branch: `if c { a } else { b }`.
#[inline(always)]
fn sel(c: bool, a: f32, b: f32) -> f32 {
    if c {
        a
    } else {
        b
    }
}

/// `p * 2^n` for integral `n` (as f32) with the result in the normal range,
/// by adding `n` to the exponent bits. Adding the rounding magic puts `n` in
/// the low mantissa bits, avoiding a float-to-int conversion (which would not
/// vectorise).
#[inline(always)]
fn ldexp_normal(p: f32, n: f32) -> f32 {
    let ni = (n + ROUND_MAGIC).to_bits().wrapping_sub(0x4B40_0000);
    f32::from_bits(p.to_bits().wrapping_add(ni << 23))
}

/// `e^r` for `|r| <= ln2 / 2`: Taylor series to degree 7 (error < 1e-8).
#[inline(always)]
fn exp_reduced(r: f32) -> f32 {
    let p = (1.0f32 / 5040.0).mul_add(r, 1.0 / 720.0);
    let p = p.mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    p.mul_add(r, 1.0)
}

/// Split `x` into `n` (integral, as f32) and `r` with `x = n ln2 + r`.
#[inline(always)]
fn reduce_ln2(x: f32) -> (f32, f32) {
    let n = x.mul_add(LOG2E, ROUND_MAGIC) - ROUND_MAGIC;
    let r = (-n).mul_add(LN2_HI, x);
    (n, (-n).mul_add(LN2_LO, r))
}

/// `e^x`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Clamp into the range where the result is finite and not flushed; NaN
    // becomes a bound here and is restored at the end.
    let xc = x.clamp(-104.0, 88.8);
    let (n, r) = reduce_ln2(xc);
    let p = exp_reduced(r);
    // 2^n in two factors whose exponents stay normal: 2^n1 is applied to the
    // exponent bits, 2^n2 (n2 in [-25, 1]) by a multiplication. This gets
    // subnormal results and those just below f32::MAX right.
    let n1 = n.clamp(-125.0, 127.0);
    let y = ldexp_normal(p, n1) * ldexp_normal(1.0, n - n1);
    let y = sel(x > 88.72284, f32::INFINITY, y);
    let y = sel(x < -103.97208, 0.0, y);
    sel(x.is_nan(), x, y)
}

/// `e^x` for `x <= 0` (or NaN), as softmax needs it: results below 2^-126
/// flush to zero. Cheaper than [`exp`].
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let xc = sel(x < -87.0, -87.0, x);
    let (n, r) = reduce_ln2(xc);
    let y = ldexp_normal(exp_reduced(r), n);
    sel(x < -87.0, 0.0, y)
}

/// Natural logarithm.
#[inline(always)]
pub fn log(x: f32) -> f32 {
    // Scale subnormals into the normal range.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = sel(tiny, x * 8_388_608.0, x);
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    e -= if tiny { 23 } else { 0 };
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let m = sel(big, m * 0.5, m);
    let ef = e as f32 + sel(big, 1.0, 0.0);
    // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = (1.0f32 / 9.0).mul_add(s2, 1.0 / 7.0);
    let p = p.mul_add(s2, 1.0 / 5.0);
    let p = p.mul_add(s2, 1.0 / 3.0);
    let lm = (2.0 * s).mul_add(s2 * p, 2.0 * s);
    let y = ef.mul_add(LN2_HI, ef.mul_add(LN2_LO, lm));
    let y = sel(x == f32::INFINITY, f32::INFINITY, y);
    let y = sel(x == 0.0, f32::NEG_INFINITY, y);
    sel(x < 0.0 || x.is_nan(), f32::NAN, y)
}

/// `e^x - 1`, accurate near zero.
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    // Taylor series to degree 9 for |x| < 0.5, else e^x - 1.
    let p = (1.0f32 / 362_880.0).mul_add(x, 1.0 / 40_320.0);
    let p = p.mul_add(x, 1.0 / 5040.0);
    let p = p.mul_add(x, 1.0 / 720.0);
    let p = p.mul_add(x, 1.0 / 120.0);
    let p = p.mul_add(x, 1.0 / 24.0);
    let p = p.mul_add(x, 1.0 / 6.0);
    let p = p.mul_add(x, 0.5);
    let small = (x * x).mul_add(p, x);
    sel(x.abs() < 0.5, small, exp(x) - 1.0)
}

/// `ln(1 + x)`, accurate near zero.
#[inline(always)]
pub fn log1p(x: f32) -> f32 {
    let u = 1.0 + x;
    let d = u - 1.0;
    // log(u) * x / (u - 1) cancels the rounding error of 1 + x.
    let corrected = log(u) * (x / d);
    let y = sel(d == 0.0, x, corrected);
    sel(u == f32::INFINITY, f32::INFINITY, y)
}

/// Hyperbolic tangent: `x P(x^2) / Q(x^2)`, a rational minimax fit of
/// `tanh(x) / x` on `|x| <= 9.1` (our own, from a weighted least-squares
/// iteration in f64); beyond that tanh rounds to +-1 in f32. One division
/// and eleven multiply-adds: within 5 ulp, 0.45 ulp on average.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    const P: [f32; 7] =
        [1.0, 0.130_766_38, 0.003_095_741_6, 1.106_895_8e-5, -1.988_255e-8, 5.115_005_6e-11, -8.075_846e-14];
    const Q: [f32; 4] = [1.0, 0.464_099_62, 0.024_462_41, 0.000_253_421_63];
    let xc = x.clamp(-9.1, 9.1);
    let t = xc * xc;
    let p = P[6].mul_add(t, P[5]);
    let p = p.mul_add(t, P[4]);
    let p = p.mul_add(t, P[3]);
    let p = p.mul_add(t, P[2]);
    let p = p.mul_add(t, P[1]);
    let p = p.mul_add(t, P[0]);
    let q = Q[3].mul_add(t, Q[2]);
    let q = q.mul_add(t, Q[1]);
    let q = q.mul_add(t, Q[0]);
    ((xc * p) / q).clamp(-1.0, 1.0)
}

/// `1 / (1 + e^-x)`, as `e / (1 + e)` for negative `x` with `e = e^-|x|`,
/// so that `e` never overflows and negative inputs keep their relative
/// accuracy (results below the smallest normal flush to zero).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let y = sel(x >= 0.0, 1.0, e) / (1.0 + e);
    sel(x.is_nan(), x, y)
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + ln(1 + e^-|x|)`.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    let y = sel(x > 0.0, x, 0.0) + log1p(exp(-x.abs()));
    sel(x.is_nan(), x, y)
}

/// Error function (libm: not vectorised, but accurate to an ulp).
#[inline]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// Error function for f64.
#[inline]
pub fn erf64(x: f64) -> f64 {
    libm::erf(x)
}

/// Scaled ELU constants (Klambauer et al. 2017).
pub use crate::op::elementwise::{SELU_ALPHA, SELU_SCALE};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::loops::map;

    /// The vectorised kernels (AVX-512/AVX2 with FMA instructions) must give
    /// the same bits as the scalar code compiled for baseline x86-64 (where
    /// `mul_add` is the exact software routine).
    #[test]
    fn vector_and_scalar_paths_agree_bitwise() {
        let mut xs: Vec<f32> = (0..20_000).map(|i| (i as f32 - 10_000.0) * 0.0137).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            88.72283,
            88.7229,
            -103.97,
            -104.5,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        xs.push(f32::NAN);
        type Case = (&'static str, fn(f32) -> f32);
        let fs: [Case; 8] = [
            ("exp", exp),
            ("exp_nonpositive", |x| exp_nonpositive(-x.abs())),
            ("log", |x| log(x.abs())),
            ("expm1", expm1),
            ("log1p", |x| log1p(x.abs())),
            ("tanh", tanh),
            ("sigmoid", sigmoid),
            ("softplus", softplus),
        ];
        for (name, f) in fs {
            let mut vectorised = vec![0f32; xs.len()];
            map(&xs, &mut vectorised, f);
            for (x, v) in xs.iter().zip(&vectorised) {
                let s = std::hint::black_box(f)(*x);
                assert!(
                    s.to_bits() == v.to_bits() || (s.is_nan() && v.is_nan()),
                    "{name}({x}): scalar {s} vs vector {v}"
                );
            }
        }
    }

    /// Distance in ulp between `got` and the f64 reference rounded to f32.
    fn ulp_error(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp =
            f64::from(f32::from_bits(w.abs().to_bits() + 1) - w.abs()).max(f64::from(f32::MIN_POSITIVE) * f64::EPSILON);
        (f64::from(got) - want).abs() / ulp
    }

    /// A sweep over every 97th f32 bit pattern in `[-20, 20]` (tens of
    /// millions of inputs, all binades down to subnormals) against f64.
    #[test]
    fn tanh_and_sigmoid_within_a_few_ulp_everywhere() {
        let top = 20f32.to_bits();
        let mut worst = [0f64; 2];
        let mut bits = 0u32;
        while bits <= top {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let xd = f64::from(x);
                worst[0] = worst[0].max(ulp_error(tanh(x), xd.tanh()));
                let s = 1.0 / (1.0 + (-xd).exp());
                if s >= f64::from(f32::MIN_POSITIVE) {
                    worst[1] = worst[1].max(ulp_error(sigmoid(x), s));
                }
            }
            bits += 97;
        }
        assert!(worst[0] <= 6.0, "tanh: worst error {} ulp", worst[0]);
        assert!(worst[1] <= 6.0, "sigmoid: worst error {} ulp", worst[1]);
        assert_eq!(tanh(9.5), 1.0);
        assert_eq!(tanh(-1e30), -1.0);
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
    }
}
