//! Branch-free f32 transcendental functions that the compiler can vectorise.
//!
//! Each is written with selects instead of branches and without FMA
//! contraction, so scalar, AVX2 and AVX-512 code give the same bits. Accuracy
//! is within a few ulp of the correctly rounded result (tests compare with
//! f64 references). f64 uses the standard library.

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

/// `2^n` for integral `n` in [-126, 127] via the exponent bits. Adding the
/// rounding magic puts `n + 127` in the low mantissa bits, avoiding a
/// float-to-int conversion (which would not vectorise).
#[inline(always)]
fn pow2i(n: f32) -> f32 {
    f32::from_bits((n + (127.0 + ROUND_MAGIC)).to_bits().wrapping_sub(0x4B40_0000) << 23)
}

/// `e^x`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = sel(x < -104.0, -104.0, sel(x > 88.8, 88.8, x));
    let n = (xc * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Taylor series to degree 7 on |r| <= ln2/2 (truncation error < 1e-8).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // Scale by 2^n in two halves so that subnormal results and n = 128 work.
    let h = (n * 0.5 + ROUND_MAGIC) - ROUND_MAGIC;
    let h = sel(h * 2.0 > n, h - 1.0, h);
    let y = p * pow2i(h) * pow2i(n - h);
    let y = sel(x > 88.72284, f32::INFINITY, y);
    let y = sel(x < -103.97208, 0.0, y);
    sel(x.is_nan(), x, y)
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
    let p = 1.0 / 9.0;
    let p = p * s2 + 1.0 / 7.0;
    let p = p * s2 + 1.0 / 5.0;
    let p = p * s2 + 1.0 / 3.0;
    let lm = 2.0 * s + 2.0 * s * s2 * p;
    let y = ef * LN2_HI + (lm + ef * LN2_LO);
    let y = sel(x == f32::INFINITY, f32::INFINITY, y);
    let y = sel(x == 0.0, f32::NEG_INFINITY, y);
    sel(x < 0.0 || x.is_nan(), f32::NAN, y)
}

/// `e^x - 1`, accurate near zero.
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    // Taylor series to degree 9 for |x| < 0.5, else e^x - 1.
    let p = 1.0 / 362_880.0;
    let p = p * x + 1.0 / 40_320.0;
    let p = p * x + 1.0 / 5040.0;
    let p = p * x + 1.0 / 720.0;
    let p = p * x + 1.0 / 120.0;
    let p = p * x + 1.0 / 24.0;
    let p = p * x + 1.0 / 6.0;
    let p = p * x + 0.5;
    let small = x + x * x * p;
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

/// Hyperbolic tangent.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // Odd Taylor series for |x| < 0.2 (error < 1e-9 relative).
    let x2 = x * x;
    let p = 62.0 / 2835.0;
    let p = p * x2 - 17.0 / 315.0;
    let p = p * x2 + 2.0 / 15.0;
    let p = p * x2 - 1.0 / 3.0;
    let small = x + x * x2 * p;
    let e = exp(-2.0 * a);
    let big = (1.0 - e) / (1.0 + e);
    let big = f32::from_bits(big.to_bits() | (x.to_bits() & 0x8000_0000));
    let y = sel(a < 0.2, small, big);
    sel(x.is_nan(), x, y)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
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
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
