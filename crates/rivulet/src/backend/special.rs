//! Special functions in f64, shared by the CPU and reference backends (f32
//! and the half types compute here and round once): digamma and polygamma,
//! Hurwitz's zeta, the regularized incomplete gamma functions, the inverse
//! error function and the normal quantile, and the exponentially scaled
//! modified Bessel functions of order 0 and 1. TensorFlow's domains: NaN
//! outside them, infinities at poles.
//!
//! The CUDA backend's generated kernels carry C twins of these
//! (`backend::cuda::codegen::SPECIAL_HELPERS`), checked against them.

use std::f64::consts::PI;

/// `psi(x) = d/dx ln Gamma(x)`: NaN at the poles (0, -1, -2, ...) as TensorFlow's.
pub(crate) fn digamma(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY || (x <= 0.0 && x == x.floor()) {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return x;
    }
    let (mut x, mut acc) = (x, 0.0);
    if x < 0.0 {
        // Reflection: psi(x) = psi(1 - x) - pi / tan(pi x), with tan's argument reduced.
        acc = -PI / (PI * (x - x.round())).tan();
        x = 1.0 - x;
    }
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    // ln x - 1/(2x) - sum B_2k / (2k x^2k), to B_14 (the next term is below 1e-16 at x >= 10).
    let f = 1.0 / (x * x);
    let series = f
        * (1.0 / 12.0
            - f * (1.0 / 120.0
                - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f * (1.0 / 132.0 - f * (691.0 / 32760.0 - f / 12.0))))));
    acc + x.ln() - 0.5 / x - series
}

/// `B_2k / (2k)!` for k = 1..=12: the Euler-Maclaurin coefficients of [`zeta`].
const BERNOULLI_OVER_FACTORIAL: [f64; 12] = [
    1.0 / 12.0,
    -1.0 / 720.0,
    1.0 / 30_240.0,
    -1.0 / 1_209_600.0,
    1.0 / 47_900_160.0,
    -691.0 / 1_307_674_368_000.0,
    1.0 / 74_724_249_600.0,
    -3617.0 / 10_670_622_842_880_000.0,
    43_867.0 / 5_109_094_217_170_944_000.0,
    -174_611.0 / 802_857_662_698_291_200_000.0,
    77_683.0 / 14_101_100_039_391_805_440_000.0,
    -236_364_091.0 / 1_693_824_136_731_743_669_452_800_000.0,
];

/// Hurwitz's zeta `sum_k (q + k)^-x` for `x > 1` (inf at `x = 1`, NaN below;
/// inf at the poles `q = 0, -1, ...`, NaN for other `q <= 0` unless `x` is an integer).
pub(crate) fn zeta(x: f64, q: f64) -> f64 {
    if x.is_nan() || q.is_nan() || x < 1.0 {
        return f64::NAN;
    }
    if x == 1.0 {
        return f64::INFINITY;
    }
    if q <= 0.0 {
        if q == q.floor() {
            return f64::INFINITY;
        }
        if x != x.floor() {
            return f64::NAN;
        }
    }
    if q == f64::INFINITY {
        return 0.0;
    }
    // A direct sum until q + k >= 10, then Euler-Maclaurin's tail.
    let (mut sum, mut a) = (0.0, q);
    let mut k = 0;
    while a < 10.0 || k < 2 {
        sum += a.powf(-x);
        a += 1.0;
        k += 1;
    }
    let ax = a.powf(-x);
    sum += a * ax / (x - 1.0) + 0.5 * ax;
    // term_j = B_2j / (2j)! * x (x+1) ... (x+2j-2) * a^(-x-2j+1)
    let mut rising = x * ax / a;
    for (j, &c) in BERNOULLI_OVER_FACTORIAL.iter().enumerate() {
        let term = c * rising;
        sum += term;
        if term.abs() <= sum.abs() * 1e-17 {
            break;
        }
        let m = 2.0 * j as f64 + 1.0;
        rising *= (x + m) * (x + m + 1.0) / (a * a);
    }
    sum
}

/// `psi^(n)(x)`, the n-th derivative of digamma, for integer `n >= 0` (NaN otherwise).
pub(crate) fn polygamma(n: f64, x: f64) -> f64 {
    if n.is_nan() || n < 0.0 || n != n.floor() {
        return f64::NAN;
    }
    if n == 0.0 {
        return digamma(x);
    }
    // (-1)^(n+1) n! zeta(n + 1, x)
    let sign = if n % 2.0 == 0.0 { -1.0 } else { 1.0 };
    sign * libm::lgamma(n + 1.0).exp() * zeta(n + 1.0, x)
}

/// `x^a e^-x / Gamma(a)`, the common factor of the incomplete gamma functions.
fn gamma_prefactor(a: f64, x: f64) -> f64 {
    (a * x.ln() - x - libm::lgamma(a)).exp()
}

/// `P(a, x)` by its series (for `x < a + 1`).
fn igamma_series(a: f64, x: f64) -> f64 {
    let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
    for _ in 0..2000 {
        n += 1.0;
        term *= x / n;
        sum += term;
        if term.abs() < sum.abs() * 1e-17 {
            break;
        }
    }
    sum * gamma_prefactor(a, x)
}

/// `Q(a, x)` by Legendre's continued fraction, evaluated by Lentz's method (for `x >= a + 1`).
fn igammac_fraction(a: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..2000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    gamma_prefactor(a, x) * h
}

/// The regularized lower incomplete gamma function `P(a, x)` (NaN unless `a > 0`, `x >= 0`).
pub(crate) fn igamma(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return 0.0;
    }
    if x == f64::INFINITY {
        return 1.0;
    }
    if x < a + 1.0 {
        igamma_series(a, x)
    } else {
        1.0 - igammac_fraction(a, x)
    }
}

/// The regularized upper incomplete gamma function `Q(a, x) = 1 - P(a, x)`.
pub(crate) fn igammac(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    if x < a + 1.0 {
        1.0 - igamma_series(a, x)
    } else {
        igammac_fraction(a, x)
    }
}

/// `dP(a, x)/da`, the derivative of the regularized lower incomplete gamma
/// function in its first argument (TensorFlow's `IgammaGradA`), by
/// differentiating the series or the continued fraction term by term.
pub(crate) fn igamma_grad_a(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 || x == f64::INFINITY {
        return 0.0;
    }
    if x < a + 1.0 {
        // P = x^a e^-x / Gamma(a + 1) * sum_n T_n, T_n = x^n / ((a+1) ... (a+n)):
        // dP/da sums T_n (ln x - digamma(a + n + 1)), with no 1/a^2 parts
        // that would cancel for a small a.
        let prefactor = (a * x.ln() - x - libm::lgamma(a + 1.0)).exp();
        if prefactor == 0.0 {
            return 0.0;
        }
        let base = x.ln() - digamma(a + 1.0);
        let (mut term, mut harmonic) = (1.0, 0.0);
        let mut dsum = base;
        let mut n = a;
        for _ in 0..2000 {
            n += 1.0;
            term *= x / n;
            harmonic += 1.0 / n;
            let dterm = term * (base - harmonic);
            dsum += dterm;
            if dterm.abs() <= dsum.abs() * 1e-17 {
                break;
            }
        }
        return prefactor * dsum;
    }
    // d ln(x^a e^-x / Gamma(a)) / da.
    let log_factor = x.ln() - digamma(a);
    let prefactor = gamma_prefactor(a, x);
    if prefactor == 0.0 {
        return 0.0;
    }
    {
        // Q = prefactor / f with f = b0 + a1 / (b1 + a2 / (b2 + ...)),
        // b_i = x + 1 - a + 2i, a_i = -i (i - a): the convergents A/B and
        // their derivatives in `a` by the three-term recurrence.
        let b0 = x + 1.0 - a;
        let (mut a_prev, mut a_cur, mut b_prev, mut b_cur) = (1.0, b0, 0.0, 1.0);
        let (mut da_prev, mut da_cur, mut db_prev, mut db_cur) = (0.0, -1.0, 0.0, 0.0);
        let (mut f, mut df) = (b0, -1.0);
        for i in 1..2000 {
            let fi = i as f64;
            let (an, dan) = (-fi * (fi - a), fi);
            let bn = b0 + 2.0 * fi;
            let a_next = bn * a_cur + an * a_prev;
            let b_next = bn * b_cur + an * b_prev;
            let da_next = -a_cur + bn * da_cur + dan * a_prev + an * da_prev;
            let db_next = -b_cur + bn * db_cur + dan * b_prev + an * db_prev;
            (a_prev, a_cur, b_prev, b_cur) = (a_cur, a_next, b_cur, b_next);
            (da_prev, da_cur, db_prev, db_cur) = (da_cur, da_next, db_cur, db_next);
            if b_cur == 0.0 {
                continue;
            }
            // Rescale: the recurrences are linear, so every quantity may be divided by B.
            let scale = 1.0 / b_cur;
            for v in
                [&mut a_prev, &mut a_cur, &mut b_prev, &mut b_cur, &mut da_prev, &mut da_cur, &mut db_prev, &mut db_cur]
            {
                *v *= scale;
            }
            let f_next = a_cur / b_cur;
            let df_next = (da_cur * b_cur - a_cur * db_cur) / (b_cur * b_cur);
            let done = (f_next - f).abs() <= 1e-16 * f_next.abs() && (df_next - df).abs() <= 1e-15 * df_next.abs();
            (f, df) = (f_next, df_next);
            if done {
                break;
            }
        }
        // dQ/da = prefactor (log_factor / f - df / f^2); dP/da = -dQ/da.
        -prefactor * (log_factor / f - df / (f * f))
    }
}

/// The standard normal quantile `Phi^-1(p)` (-inf at 0, inf at 1, NaN outside).
pub(crate) fn ndtri(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p > 0.5 {
        // 1 - p is exact here.
        return -ndtri(1.0 - p);
    }
    // A rational first guess (absolute error below 5e-4), then Halley's
    // iteration on Phi(x) - p, with Phi from erfc (accurate in the far tail).
    let t = (-2.0 * p.ln()).sqrt();
    let mut x = -(t
        - (2.515_517 + t * (0.802_853 + t * 0.010_328)) / (1.0 + t * (1.432_788 + t * (0.189_269 + t * 0.001_308))));
    for _ in 0..3 {
        let e = 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2) - p;
        let u = e * (2.0 * PI).sqrt() * (0.5 * x * x).exp();
        if !u.is_finite() {
            break;
        }
        x -= u / (1.0 + 0.5 * x * u);
    }
    x
}

/// The inverse error function on `[-1, 1]` (infinite at the ends, NaN outside).
pub(crate) fn erfinv(y: f64) -> f64 {
    if y.is_nan() || y.abs() > 1.0 {
        return f64::NAN;
    }
    if y.abs() == 1.0 {
        return y * f64::INFINITY;
    }
    if y == 0.0 {
        return y;
    }
    let slope = |x: f64| 2.0 / PI.sqrt() * (-x * x).exp();
    if y.abs() <= 0.5 {
        // Newton on erf(x) - y keeps the relative precision of small y.
        let mut x = ndtri(0.5 * (1.0 + y)) * std::f64::consts::FRAC_1_SQRT_2;
        for _ in 0..2 {
            x -= (libm::erf(x) - y) / slope(x);
        }
        return x;
    }
    // Near +-1: through 1 - |y| (exact), polished on erfc.
    let r = 1.0 - y.abs();
    let mut x = -ndtri(0.5 * r) * std::f64::consts::FRAC_1_SQRT_2;
    x += (libm::erfc(x) - r) / slope(x);
    x.copysign(y)
}

/// `I0(x) e^-|x|`, the exponentially scaled modified Bessel function of order 0.
pub(crate) fn bessel_i0e(x: f64) -> f64 {
    bessel_scaled(x, false)
}

/// `I1(x) e^-|x|`, the exponentially scaled modified Bessel function of order 1.
pub(crate) fn bessel_i1e(x: f64) -> f64 {
    bessel_scaled(x, true)
}

/// `I0` or `I1` scaled by `e^-|x|`: the power series up to |x| = 30, the
/// asymptotic expansion beyond.
fn bessel_scaled(x: f64, order1: bool) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let value = if ax <= 30.0 {
        let q = 0.25 * ax * ax;
        let (mut term, mut k) = (if order1 { 0.5 * ax } else { 1.0 }, 0.0);
        let mut sum = term;
        for _ in 0..500 {
            k += 1.0;
            term *= q / (k * if order1 { k + 1.0 } else { k });
            sum += term;
            if term < sum * 1e-17 {
                break;
            }
        }
        sum * (-ax).exp()
    } else if ax == f64::INFINITY {
        0.0
    } else {
        // e^x / sqrt(2 pi x) * sum_k c_k / x^k, c_k = c_(k-1) ((2k-1)^2 - 4 nu^2) / (8k).
        let mu = if order1 { 4.0 } else { 0.0 };
        let (mut term, mut sum) = (1.0f64, 1.0f64);
        for k in 1..100 {
            let m = 2.0 * k as f64 - 1.0;
            let next = term * (m * m - mu) / (8.0 * k as f64 * ax);
            if next.abs() >= term.abs() {
                break;
            }
            term = next;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        sum / (2.0 * PI * ax).sqrt()
    };
    if order1 {
        value.copysign(x)
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) {
        assert!((got - want).abs() <= rel * want.abs().max(1e-300), "{got} vs {want}");
    }

    /// Values from their definitions and classical identities.
    #[test]
    fn special_values() {
        let euler = 0.577_215_664_901_532_9;
        close(digamma(1.0), -euler, 1e-15);
        close(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-15);
        close(digamma(-0.5), -euler - 2.0 * 2f64.ln() + 2.0, 1e-14);
        assert!(digamma(0.0).is_nan() && digamma(-2.0).is_nan());
        close(zeta(2.0, 1.0), PI * PI / 6.0, 1e-15);
        close(zeta(4.0, 1.0), PI.powi(4) / 90.0, 1e-15);
        close(zeta(2.0, 0.5), PI * PI / 2.0, 1e-15);
        close(polygamma(1.0, 1.0), PI * PI / 6.0, 1e-15);
        close(polygamma(2.0, 1.0), -2.0 * 1.202_056_903_159_594_2, 1e-14);
        // P(1, x) = 1 - e^-x; P(a, x) + Q(a, x) = 1.
        for x in [0.1, 1.0, 2.5, 10.0, 40.0] {
            close(igamma(1.0, x), -(-x).exp_m1(), 1e-14);
            close(igamma(3.5, x) + igammac(3.5, x), 1.0, 1e-14);
            // The derivative in `a` against central differences, on both branches.
            for a in [0.3, 1.0, 3.5, 12.0] {
                let h = 1e-5 * a;
                let fd = (igamma(a + h, x) - igamma(a - h, x)) / (2.0 * h);
                let got = igamma_grad_a(a, x);
                assert!((got - fd).abs() <= 1e-7 * (1.0 + fd.abs()), "a={a} x={x}: {got} vs {fd}");
            }
        }
        close(igammac(1.0, 50.0), (-50.0f64).exp(), 1e-13);
        // Near a = 0, dP/da tends to -E1(x) (Q(a, x) ~ a E1(x)); far past
        // the mode it underflows to 0 instead of overflowing.
        close(igamma_grad_a(1e-10, 1.0), -0.219_383_934_395_520_3, 1e-8);
        close(igamma_grad_a(1e-10, 0.1), -1.822_923_958_419_390_7, 1e-8);
        assert_eq!(igamma_grad_a(2.0, 1e200), 0.0);
        assert_eq!(igamma_grad_a(2.0, 1e300), 0.0);
        // The round trip is as good as the condition number allows: |x| ulps of x in the tail.
        for p in [1e-300, 1e-10, 0.025, 0.3, 0.5, 0.8, 0.975, 1.0 - 1e-10] {
            let x = ndtri(p);
            close(0.5 * libm::erfc(-x / 2f64.sqrt()), p, 1e-15 * (1.0 + x * x));
        }
        close(ndtri(0.975), 1.959_963_984_540_054, 1e-15);
        for y in [1e-12, -0.3, 0.5, 0.9, -0.999_999, 1.0 - 1e-15] {
            let x = erfinv(y);
            close(libm::erf(x), y, 4e-16);
        }
        close(erfinv(1e-12), 1e-12 * PI.sqrt() / 2.0, 1e-15);
        close(bessel_i0e(0.0), 1.0, 0.0);
        close(bessel_i0e(1.0), 1.266_065_877_752_008_4 * (-1.0f64).exp(), 1e-15);
        close(bessel_i1e(-1.0), -0.565_159_103_992_485 * (-1.0f64).exp(), 1e-15);
        // The series and the expansion agree where they meet.
        for order1 in [false, true] {
            let (below, above) = (bessel_scaled(30.0, order1), bessel_scaled(30.000_000_001, order1));
            close(above, below, 1e-9);
        }
    }
}
