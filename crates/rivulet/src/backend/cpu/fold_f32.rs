//! Sum and maximum of f32 rows with explicit vector code.
//!
//! Compilers vectorise these folds unreliably (the same loop became 2-wide
//! or 16-wide depending on its surroundings), and they dominate reductions
//! and softmax. The order of operations is fixed by a canonical 64-lane
//! scheme — lane `i` accumulates elements `i, i + 64, ...`, the lanes are
//! combined pairwise (`i` with `i + 32`, then `i + 16`, ..., `i + 1`), then the
//! tail is folded in order — which the AVX-512 (4 x 16), AVX2 (8 x 8) and
//! scalar versions all implement exactly, so results are identical bits on
//! every machine.

const LANES: usize = 64;

/// Which binary operation a fold applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sum,
    /// `a > b ? a : b` (as `maxps`); NaN is tracked separately.
    Max,
    /// `a < b ? a : b` (as `minps`); NaN is tracked separately.
    Min,
}

#[inline(always)]
fn apply(kind: Kind, a: f32, b: f32) -> f32 {
    match kind {
        Kind::Sum => a + b,
        Kind::Max => {
            if a > b {
                a
            } else {
                b
            }
        }
        Kind::Min => {
            if a < b {
                a
            } else {
                b
            }
        }
    }
}

fn identity(kind: Kind) -> f32 {
    match kind {
        Kind::Sum => 0.0,
        Kind::Max => f32::NEG_INFINITY,
        Kind::Min => f32::INFINITY,
    }
}

/// Scalar reference implementation of the canonical order.
fn fold_scalar(x: &[f32], kind: Kind) -> (f32, bool) {
    let mut acc = [identity(kind); LANES];
    let mut nan = false;
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = apply(kind, acc[i], c[i]);
            nan |= c[i].is_nan();
        }
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] = apply(kind, acc[i], acc[i + w]);
        }
    }
    let mut r = acc[0];
    for &v in chunks.remainder() {
        r = apply(kind, r, v);
        nan |= v.is_nan();
    }
    (r, nan)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{apply, identity, Kind, LANES};
    use std::arch::x86_64::*;

    /// Combine lanes 0..8 of `v` (w = 4, 2, 1 of the canonical tree).
    #[inline(always)]
    unsafe fn tail8(kind: Kind, v: __m256) -> f32 {
        let op = |a: __m128, b: __m128| match kind {
            Kind::Sum => _mm_add_ps(a, b),
            Kind::Max => _mm_max_ps(a, b),
            Kind::Min => _mm_min_ps(a, b),
        };
        let x = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = op(x, _mm_movehl_ps(x, x));
        let x = op(x, _mm_shuffle_ps::<1>(x, x));
        _mm_cvtss_f32(x)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn fold_avx512(x: &[f32], kind: Kind) -> (f32, bool) {
        let op = |a: __m512, b: __m512| match kind {
            Kind::Sum => _mm512_add_ps(a, b),
            Kind::Max => _mm512_max_ps(a, b),
            Kind::Min => _mm512_min_ps(a, b),
        };
        let id = _mm512_set1_ps(identity(kind));
        let (mut a0, mut a1, mut a2, mut a3) = (id, id, id, id);
        let mut nan: __mmask16 = 0;
        let chunks = x.len() / LANES;
        let p = x.as_ptr();
        for c in 0..chunks {
            let q = p.add(c * LANES);
            let (v0, v1, v2, v3) = (
                _mm512_loadu_ps(q),
                _mm512_loadu_ps(q.add(16)),
                _mm512_loadu_ps(q.add(32)),
                _mm512_loadu_ps(q.add(48)),
            );
            a0 = op(a0, v0);
            a1 = op(a1, v1);
            a2 = op(a2, v2);
            a3 = op(a3, v3);
            if kind != Kind::Sum {
                let n01 = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v0, v1);
                let n23 = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v2, v3);
                nan |= n01 | n23;
            }
        }
        // w = 32, 16, then 8 (256-bit halves), then the 128-bit tail.
        let b0 = op(a0, a2);
        let b1 = op(a1, a3);
        let c = op(b0, b1);
        let lo = _mm512_castps512_ps256(c);
        let hi = _mm512_extractf32x8_ps::<1>(c);
        let d = match kind {
            Kind::Sum => _mm256_add_ps(lo, hi),
            Kind::Max => _mm256_max_ps(lo, hi),
            Kind::Min => _mm256_min_ps(lo, hi),
        };
        let mut r = tail8(kind, d);
        let mut any_nan = nan != 0;
        for &v in &x[chunks * LANES..] {
            r = apply(kind, r, v);
            any_nan |= v.is_nan();
        }
        (r, any_nan)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn fold_avx2(x: &[f32], kind: Kind) -> (f32, bool) {
        let op = |a: __m256, b: __m256| match kind {
            Kind::Sum => _mm256_add_ps(a, b),
            Kind::Max => _mm256_max_ps(a, b),
            Kind::Min => _mm256_min_ps(a, b),
        };
        let id = _mm256_set1_ps(identity(kind));
        let mut a = [id; 8];
        let mut nan = _mm256_setzero_ps();
        let chunks = x.len() / LANES;
        let p = x.as_ptr();
        for c in 0..chunks {
            let q = p.add(c * LANES);
            for (k, acc) in a.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(q.add(8 * k));
                *acc = op(*acc, v);
                if kind != Kind::Sum {
                    nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                }
            }
        }
        // w = 32: lanes k and k + 4 registers; w = 16; w = 8.
        let b = [op(a[0], a[4]), op(a[1], a[5]), op(a[2], a[6]), op(a[3], a[7])];
        let c = [op(b[0], b[2]), op(b[1], b[3])];
        let d = op(c[0], c[1]);
        let mut r = tail8(kind, d);
        let mut any_nan = _mm256_movemask_ps(nan) != 0;
        for &v in &x[chunks * LANES..] {
            r = apply(kind, r, v);
            any_nan |= v.is_nan();
        }
        (r, any_nan)
    }
}

fn fold(x: &[f32], kind: Kind) -> (f32, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        match super::simd::simd_level() {
            // SAFETY: the CPU has these features (simd_level checked them).
            "avx512" => return unsafe { x86::fold_avx512(x, kind) },
            // SAFETY: as above.
            "avx2" => return unsafe { x86::fold_avx2(x, kind) },
            _ => {}
        }
    }
    fold_scalar(x, kind)
}

/// Sum of `x` in the canonical 64-lane order.
pub(crate) fn sum(x: &[f32]) -> f32 {
    fold(x, Kind::Sum).0
}

/// Largest element of `x`; NaN if any element is NaN; `-inf` if empty.
pub(crate) fn max(x: &[f32]) -> f32 {
    match fold(x, Kind::Max) {
        (_, true) => f32::NAN,
        (m, false) => m,
    }
}

/// Smallest element of `x`; NaN if any element is NaN; `+inf` if empty.
pub(crate) fn min(x: &[f32]) -> f32 {
    match fold(x, Kind::Min) {
        (_, true) => f32::NAN,
        (m, false) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector path must give the scalar reference's exact bits.
    #[test]
    fn vector_paths_match_the_scalar_order() {
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1000.0
        };
        for n in [0usize, 1, 7, 63, 64, 65, 127, 128, 1000, 4096, 10_007] {
            let x: Vec<f32> = (0..n).map(|_| next()).collect();
            for kind in [Kind::Sum, Kind::Max, Kind::Min] {
                let want = fold_scalar(&x, kind);
                let got = fold(&x, kind);
                assert_eq!(want.0.to_bits(), got.0.to_bits(), "n={n}");
                assert_eq!(want.1, got.1);
                #[cfg(target_arch = "x86_64")]
                if is_x86_feature_detected!("avx2") {
                    // SAFETY: feature checked.
                    let a2 = unsafe { x86::fold_avx2(&x, kind) };
                    assert_eq!(want.0.to_bits(), a2.0.to_bits(), "avx2 n={n}");
                }
            }
        }
        let mut x = vec![1.0f32; 200];
        x[130] = f32::NAN;
        assert!(max(&x).is_nan() && min(&x).is_nan());
        x[130] = 5.0;
        x[199] = -3.0;
        assert_eq!((max(&x), min(&x)), (5.0, -3.0));
    }
}
