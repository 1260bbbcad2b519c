//! Complex tensors and Fourier transforms: complex arithmetic against
//! `num_complex` in f64, every transform against a direct O(n²) DFT in f64,
//! round trips, TensorFlow's length and normalization rules, gradients by
//! finite differences, graph mode, files, and the errors.

use crate::common::{values, Rng};
use rivulet::ops::{self, Axes};
use rivulet::{gradients, Complex, DType, ErrorKind, GradientTape, Graph, Result, Session, Tensor, Unconnected};

type C = Complex<f64>;

fn draw(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn c128(z: &[C], shape: &[usize]) -> Tensor {
    Tensor::from_slice(z, shape).unwrap()
}

fn cvalues(t: &Tensor) -> Vec<C> {
    let v = values(t);
    v.chunks(2).map(|p| C::new(p[0], p[1])).collect()
}

fn assert_cclose(what: &str, got: &[C], want: &[C], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().map(|z| z.norm()).fold(1.0, f64::max);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).norm() <= tol * scale, "{what}[{k}]: got {g}, want {w} (tol {tol} x {scale})");
    }
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().map(|v| v.abs()).fold(1.0, f64::max);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{k}]: got {g}, want {w}");
    }
}

/// The direct DFT of `x` (row-major, `dims`) along `axis`: sign -1 forward, +1 inverse (unscaled).
fn dft_axis(x: &[C], dims: &[usize], axis: usize, sign: f64) -> Vec<C> {
    let n = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let mut out = vec![C::new(0.0, 0.0); x.len()];
    for o in 0..outer {
        for i in 0..inner {
            for k in 0..n {
                let mut acc = C::new(0.0, 0.0);
                for j in 0..n {
                    let theta = sign * 2.0 * std::f64::consts::PI * (j * k % n) as f64 / n as f64;
                    acc += x[(o * n + j) * inner + i] * C::from_polar(1.0, theta);
                }
                out[(o * n + k) * inner + i] = acc;
            }
        }
    }
    out
}

/// The direct DFT over the last `rank` axes, divided by the points when `inverse`.
fn dft(x: &[C], dims: &[usize], rank: usize, inverse: bool) -> Vec<C> {
    let mut y = x.to_vec();
    for axis in dims.len() - rank..dims.len() {
        y = dft_axis(&y, dims, axis, if inverse { 1.0 } else { -1.0 });
    }
    if inverse {
        let n: usize = dims[dims.len() - rank..].iter().product();
        y.iter_mut().for_each(|z| *z /= n as f64);
    }
    y
}

/// The first `m` entries along the last axis.
fn crop_last(x: &[C], dims: &[usize], m: usize) -> Vec<C> {
    let n = dims[dims.len() - 1];
    x.chunks(n).flat_map(|row| row[..m].to_vec()).collect()
}

#[test]
fn parts_conversions_and_casts() -> Result<()> {
    let re = Tensor::from_slice(&[1.0f32, -2.0, 0.0], [3])?;
    let im = Tensor::from_slice(&[0.5f32, 3.0, -1.0], [3])?;
    let z = ops::complex(&re, &im)?;
    assert_eq!(z.dtype(), DType::C64);
    assert_eq!(ops::real(&z)?.to_vec::<f32>()?, vec![1.0, -2.0, 0.0]);
    assert_eq!(ops::imag(&z)?.to_vec::<f32>()?, vec![0.5, 3.0, -1.0]);
    assert_eq!(values(&ops::conj(&z)?), vec![1.0, -0.5, -2.0, -3.0, 0.0, 1.0]);
    let angle = values(&ops::angle(&z)?);
    let want: Vec<f64> = [(1.0f32, 0.5f32), (-2.0, 3.0), (0.0, -1.0)].iter().map(|&(a, b)| b.atan2(a) as f64).collect();
    assert_close("angle", &angle, &want, 1e-7);
    assert_close("abs", &values(&ops::abs(&z)?), &[1.25f64.sqrt(), 13f64.sqrt(), 1.0], 1e-7);
    // Real tensors: their own real part, zero imaginary part, angle 0 or π.
    assert_eq!(values(&ops::imag(&re)?), vec![0.0; 3]);
    assert_close("real angle", &values(&ops::angle(&re)?), &[0.0, std::f64::consts::PI, 0.0], 1e-7);
    // Broadcasting parts, and f64 parts give c128.
    let b = ops::complex(&Tensor::from_slice(&[1.0f64, 2.0], [2, 1])?, &Tensor::from_slice(&[3.0f64, 4.0, 5.0], [3])?)?;
    assert_eq!((b.dtype(), b.shape().to_vec()), (DType::C128, vec![2, 3]));
    assert_eq!(cvalues(&b)[5], C::new(2.0, 5.0));
    // Casts: real parts out, zero imaginary parts in, both parts between widths.
    assert_eq!(values(&ops::cast(&z, DType::F64)?), vec![1.0, -2.0, 0.0]);
    assert_eq!(values(&ops::cast(&z, DType::I32)?), vec![1.0, -2.0, 0.0]);
    assert_eq!(values(&ops::cast(&re, DType::C128)?), vec![1.0, 0.0, -2.0, 0.0, 0.0, 0.0]);
    assert_eq!(values(&ops::cast(&ops::cast(&z, DType::C128)?, DType::C64)?), values(&z));
    // Movement ops carry complex elements whole.
    let m = ops::reshape(&ops::cast(&b, DType::C64)?, &[3, 2])?;
    let t = ops::transpose(&m, &[1, 0])?;
    let flipped = ops::reverse(&ops::concat(&[&t, &t], 0)?, &[1])?;
    assert_eq!(cvalues(&flipped)[0], C::new(2.0, 4.0));
    Ok(())
}

#[test]
fn complex_arithmetic_matches_num_complex() -> Result<()> {
    let mut rng = Rng(0xC0DE);
    let n = 24;
    let a: Vec<C> = (0..n).map(|_| C::new(rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0))).collect();
    let mut b: Vec<C> = (0..n).map(|_| C::new(rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0))).collect();
    // The negative real axis and huge divisors, where naive formulas go wrong.
    b[0] = C::new(-4.0, 0.0);
    b[1] = C::new(1e200, 1e200);
    let (ta, tb) = (c128(&a, &[n]), c128(&b, &[n]));
    type Un = fn(&Tensor) -> Result<Tensor>;
    type UnCase = (&'static str, Un, fn(C) -> C);
    let unary: [UnCase; 12] = [
        ("neg", ops::neg, |z| -z),
        ("square", ops::square, |z| z * z),
        ("reciprocal", ops::reciprocal, |z| z.inv()),
        ("exp", ops::exp, |z| z.exp()),
        ("log", ops::log, |z| z.ln()),
        ("sqrt", ops::sqrt, |z| z.sqrt()),
        ("rsqrt", ops::rsqrt, |z| z.sqrt().inv()),
        ("sin", ops::sin, |z| z.sin()),
        ("cos", ops::cos, |z| z.cos()),
        ("sinh", ops::sinh, |z| z.sinh()),
        ("cosh", ops::cosh, |z| z.cosh()),
        ("sign", ops::sign, |z| z / z.norm()),
    ];
    for (name, f, want) in unary {
        let x = if name == "sqrt" || name == "log" { &tb } else { &ta };
        let xs = if name == "sqrt" || name == "log" { &b } else { &a };
        let got = cvalues(&f(x)?);
        let want: Vec<C> = xs.iter().map(|&z| want(z)).collect();
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).norm() <= 1e-13 * (1.0 + w.norm()), "{name}({}) = {g}, want {w}", xs[k]);
        }
    }
    type Bin = fn(&Tensor, &Tensor) -> Result<Tensor>;
    type BinCase = (&'static str, Bin, fn(C, C) -> C);
    let binary: [BinCase; 5] = [
        ("add", |x, y| ops::add(x, y), |x, y| x + y),
        ("sub", |x, y| ops::sub(x, y), |x, y| x - y),
        ("mul", |x, y| ops::mul(x, y), |x, y| x * y),
        ("div", |x, y| ops::div(x, y), |x, y| x / y),
        ("pow", |x, y| ops::pow(x, y), |x, y| x.powc(y)),
    ];
    for (name, f, want) in binary {
        let got = cvalues(&f(&ta, &tb)?);
        for k in 0..n {
            let w = want(a[k], b[k]);
            if name == "div" && k == 1 {
                // 1e200-sized divisors: scaled first, so no overflow to 0 or NaN.
                let exact = a[k] / C::new(1.0, 1.0) / 1e200;
                assert!((got[k] - exact).norm() <= 1e-13 * exact.norm(), "div by 1e200: {}", got[k]);
                continue;
            }
            if name == "pow" && k == 1 {
                continue;
            }
            assert!(
                (got[k] - w).norm() <= 1e-12 * (1.0 + w.norm()),
                "{name}({}, {}) = {}, want {w}",
                a[k],
                b[k],
                got[k]
            );
        }
    }
    assert_eq!(values(&ops::sqrt(&c128(&[C::new(0.0, 0.0)], &[1]))?), vec![0.0, 0.0]);
    assert_eq!(values(&ops::div_no_nan(&ta, &c128(&vec![C::new(0.0, 0.0); n], &[n]))?), vec![0.0; 2 * n]);
    assert_eq!(values(&ops::equal(&ta, &ta)?), vec![1.0; n]);
    assert_eq!(values(&ops::not_equal(&ta, &tb)?), vec![1.0; n]);
    // Scalars on one side become complex numbers with a zero imaginary part.
    assert_cclose(
        "z * 2 + 1",
        &cvalues(&ops::add(&ops::mul(&ta, 2.0)?, 1.0)?),
        &a.iter().map(|z| z * 2.0 + 1.0).collect::<Vec<_>>(),
        1e-15,
    );
    // Reductions and matmul.
    let m = c128(&a, &[4, 6]);
    let s = cvalues(&ops::sum(&m, 1, false)?);
    let means = cvalues(&ops::mean(&m, Axes::All, false)?);
    for r in 0..4 {
        assert_cclose("sum", &s[r..r + 1], &[a[r * 6..r * 6 + 6].iter().sum()], 1e-15);
    }
    assert_cclose("mean", &means, &[a.iter().sum::<C>() / 24.0], 1e-15);
    let p = cvalues(&ops::matmul(&m, &c128(&b, &[6, 4]))?);
    for i in 0..4 {
        for j in 0..4 {
            let w: C = (0..6).map(|k| a[i * 6 + k] * b[k * 4 + j]).sum();
            assert!((p[i * 4 + j] - w).norm() <= 1e-12 * (1.0 + w.norm()) * 1e200, "matmul[{i},{j}]");
        }
    }
    // The adjoint conjugates; matrix_transpose does not.
    let adj = cvalues(&ops::adjoint(&m)?);
    assert_eq!(adj[6], a[13].conj());
    assert_eq!(cvalues(&ops::matrix_transpose(&m)?)[6], a[13]);
    Ok(())
}

#[test]
fn transforms_match_the_direct_dft() -> Result<()> {
    let mut rng = Rng(0xFF7);
    for (dims, rank) in
        [(vec![8], 1), (vec![3, 7], 1), (vec![2, 6, 5], 2), (vec![4, 3, 9], 2), (vec![2, 3, 4, 5], 3), (vec![1], 1)]
    {
        let n: usize = dims.iter().product();
        let x: Vec<C> = (0..n).map(|_| C::new(rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0))).collect();
        let t = c128(&x, &dims);
        type Transform = fn(&Tensor) -> Result<Tensor>;
        let (fwd, inv): (Transform, Transform) = match rank {
            1 => (ops::fft, ops::ifft),
            2 => (ops::fft2, ops::ifft2),
            _ => (ops::fft3, ops::ifft3),
        };
        let what = format!("fft rank {rank} of {dims:?}");
        let y = fwd(&t)?;
        assert_cclose(&what, &cvalues(&y), &dft(&x, &dims, rank, false), 1e-13);
        assert_cclose(&format!("i{what}"), &cvalues(&inv(&t)?), &dft(&x, &dims, rank, true), 1e-13);
        assert_cclose(&format!("{what} round trip"), &cvalues(&inv(&y)?), &x, 1e-14);
        // complex64: the same transform to f32 rounding.
        let y32 = fwd(&ops::cast(&t, DType::C64)?)?;
        assert_eq!(y32.dtype(), DType::C64);
        assert_cclose(&format!("{what} c64"), &cvalues(&y32), &dft(&x, &dims, rank, false), 1e-6);
    }
    // Along an inner axis of a wider tensor (the columns path), 64 columns.
    let dims = [16, 64];
    let x: Vec<C> = (0..16 * 64).map(|_| C::new(rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0))).collect();
    assert_cclose("fft2 16x64", &cvalues(&ops::fft2(&c128(&x, &dims))?), &dft(&x, &dims, 2, false), 1e-13);
    Ok(())
}

#[test]
fn real_transforms_follow_tensorflow() -> Result<()> {
    let mut rng = Rng(0x4EA1);
    for (dims, rank) in
        [(vec![8], 1), (vec![3, 7], 1), (vec![4, 6], 2), (vec![3, 5, 7], 2), (vec![2, 3, 4, 6], 3), (vec![2, 1], 1)]
    {
        let n: usize = dims.iter().product();
        let x = draw(&mut rng, n);
        let xc: Vec<C> = x.iter().map(|&v| C::new(v, 0.0)).collect();
        let t = Tensor::from_slice(&x, dims.clone())?;
        let last = dims[dims.len() - 1];
        let m = last / 2 + 1;
        let (y, back) = match rank {
            1 => {
                let y = ops::rfft(&t, None)?;
                (y.clone(), ops::irfft(&y, Some(last))?)
            }
            2 => {
                let y = ops::rfft2(&t, None)?;
                let l = [dims[dims.len() - 2], last];
                (y.clone(), ops::irfft2(&y, Some(l))?)
            }
            _ => {
                let y = ops::rfft3(&t, None)?;
                let l = [dims[dims.len() - 3], dims[dims.len() - 2], last];
                (y.clone(), ops::irfft3(&y, Some(l))?)
            }
        };
        let what = format!("rfft rank {rank} of {dims:?}");
        assert_eq!(y.dtype(), DType::C128);
        assert_eq!(y.shape()[y.rank() - 1], m);
        assert_cclose(&what, &cvalues(&y), &crop_last(&dft(&xc, &dims, rank, false), &dims, m), 1e-13);
        assert_close(&format!("{what} round trip"), &values(&back), &x, 1e-13);
        assert_eq!(back.dtype(), DType::F64);
    }
    // fft_length crops or zero-pads the signal first.
    let x = draw(&mut rng, 6);
    let t = Tensor::from_slice(&x, [6])?;
    let padded: Vec<C> = x.iter().map(|&v| C::new(v, 0.0)).chain(std::iter::repeat_n(C::new(0.0, 0.0), 4)).collect();
    assert_cclose("rfft to 10", &cvalues(&ops::rfft(&t, Some(10))?), &dft(&padded, &[10], 1, false)[..6], 1e-13);
    let cropped: Vec<C> = x[..4].iter().map(|&v| C::new(v, 0.0)).collect();
    assert_cclose("rfft to 4", &cvalues(&ops::rfft(&t, Some(4))?), &dft(&cropped, &[4], 1, false)[..3], 1e-13);
    // irfft: default length 2(m - 1); the imaginary parts at 0 and n/2 are ignored.
    let spectrum = [C::new(1.0, 5.0), C::new(0.5, -0.25), C::new(-1.0, 7.0)];
    let y = ops::irfft(&c128(&spectrum, &[3]), None)?;
    assert_eq!(y.shape().to_vec(), vec![4]);
    let full = [C::new(1.0, 0.0), C::new(0.5, -0.25), C::new(-1.0, 0.0), C::new(0.5, 0.25)];
    let want: Vec<f64> = dft(&full, &[4], 1, true).iter().map(|z| z.re).collect();
    assert_close("irfft", &values(&y), &want, 1e-15);
    // Odd lengths keep the last frequency's imaginary part.
    let y5 = ops::irfft(&c128(&spectrum, &[3]), Some(5))?;
    let full5 = [spectrum[0].re.into(), spectrum[1], spectrum[2], spectrum[2].conj(), spectrum[1].conj()];
    let want5: Vec<f64> = dft(&full5, &[5], 1, true).iter().map(|z| z.re).collect();
    assert_close("irfft to 5", &values(&y5), &want5, 1e-15);
    // f32 in, c64 out; and a 2048-point rfft along a batch of rows.
    let big: Vec<f32> = (0..4 * 2048).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let tb = Tensor::from_slice(&big, [4, 2048])?;
    let yb = ops::rfft(&tb, None)?;
    assert_eq!(yb.dtype(), DType::C64);
    assert_close(
        "rfft/irfft 2048 f32",
        &values(&ops::irfft(&yb, Some(2048))?),
        &big.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        1e-6,
    );
    Ok(())
}

#[test]
fn frequencies_and_shifts_follow_numpy() -> Result<()> {
    let f = values(&ops::signal::fftfreq(rivulet::Ctx::Eager, 5, 0.5, DType::F64)?);
    assert_close("fftfreq 5", &f, &[0.0, 0.4, 0.8, -0.8, -0.4], 1e-15);
    let f = values(&ops::signal::fftfreq(rivulet::Ctx::Eager, 4, 1.0, DType::F32)?);
    assert_eq!(f, vec![0.0, 0.25, -0.5, -0.25]);
    let f = values(&ops::signal::rfftfreq(rivulet::Ctx::Eager, 5, 0.1, DType::F64)?);
    assert_close("rfftfreq", &f, &[0.0, 2.0, 4.0], 1e-14);
    let x = Tensor::from_slice(&[0.0f32, 1.0, 2.0, -2.0, -1.0], [5])?;
    let shifted = ops::signal::fftshift(&x, &[])?;
    assert_eq!(values(&shifted), vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
    assert_eq!(values(&ops::signal::ifftshift(&shifted, &[0])?), values(&x));
    Ok(())
}

/// `sum(re(y) w1 + im(y) w2)` for complex outputs, `sum(y w1)` for real ones.
fn weighted(y: &Tensor) -> Result<Tensor> {
    let n = y.numel().unwrap_or(0);
    let w: Vec<f64> = (0..n).map(|i| ((i * 7) % 11) as f64 * 0.1 - 0.5).collect();
    let w2: Vec<f64> = (0..n).map(|i| ((i * 5 + 3) % 13) as f64 * 0.1 - 0.6).collect();
    let w = Tensor::from_slice(&w, y.shape().clone())?;
    let w2 = Tensor::from_slice(&w2, y.shape().clone())?;
    let term = ops::sum(&ops::mul(&ops::real(y)?, &w)?, Axes::All, false)?;
    if !y.dtype().is_complex() {
        return Ok(term);
    }
    ops::add(&term, &ops::sum(&ops::mul(&ops::imag(y)?, &w2)?, Axes::All, false)?)
}

/// Gradients with respect to real inputs `xs` (the parts of the complex
/// values `f` builds) against central differences, everywhere.
fn check(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor]) {
    let tape = GradientTape::new();
    xs.iter().for_each(|x| tape.watch(x));
    let loss = weighted(&f(xs).unwrap()).unwrap();
    let refs: Vec<&Tensor> = xs.iter().collect();
    let grads = tape.gradient(&loss, &refs).unwrap();
    for (i, (x, g)) in xs.iter().zip(&grads).enumerate() {
        let g = values(g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient for input {i}")));
        let base = values(x);
        for j in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                let mut inputs = xs.to_vec();
                inputs[i] = Tensor::from_slice(&v, x.shape().clone()).unwrap();
                values(&weighted(&f(&inputs).unwrap()).unwrap())[0]
            };
            let h = 1e-6;
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!((fd - g[j]).abs() <= 1e-6 * (1.0 + fd.abs()), "{name}: d/dx{i}[{j}]: analytic {} vs {fd}", g[j]);
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng(0x6EAD);
    let mut t = |dims: &[usize]| Tensor::from_slice(&draw(&mut rng, dims.iter().product()), dims).unwrap();
    let (x, y) = (t(&[2, 6]), t(&[2, 6]));
    let z = |xs: &[Tensor]| ops::complex(&xs[0], &xs[1]);
    check("fft", |xs| ops::fft(&z(xs)?), &[x.clone(), y.clone()]);
    check("ifft", |xs| ops::ifft(&z(xs)?), &[x.clone(), y.clone()]);
    check("fft2", |xs| ops::fft2(&z(xs)?), &[x.clone(), y.clone()]);
    check("ifft2", |xs| ops::ifft2(&z(xs)?), &[x.clone(), y.clone()]);
    let (a, b) = (t(&[2, 3, 4]), t(&[2, 3, 4]));
    check("fft3", |xs| ops::fft3(&z(xs)?), &[a.clone(), b.clone()]);
    check("rfft even", |xs| ops::rfft(&xs[0], None), std::slice::from_ref(&x));
    check("rfft odd, padded", |xs| ops::rfft(&xs[0], Some(7)), &[t(&[3, 5])]);
    check("rfft2", |xs| ops::rfft2(&xs[0], None), &[t(&[3, 6])]);
    check("rfft3", |xs| ops::rfft3(&xs[0], None), &[t(&[2, 3, 5])]);
    check("irfft even", |xs| ops::irfft(&z(xs)?, None), &[t(&[2, 5]), t(&[2, 5])]);
    check("irfft odd", |xs| ops::irfft(&z(xs)?, Some(9)), &[t(&[2, 5]), t(&[2, 5])]);
    check("irfft2", |xs| ops::irfft2(&z(xs)?, Some([3, 7])), &[t(&[3, 4]), t(&[3, 4])]);
    check("irfft3", |xs| ops::irfft3(&z(xs)?, None), &[t(&[2, 2, 3]), t(&[2, 2, 3])]);
    // Complex arithmetic through its parts: away from the branch cut and 0.
    let (p, q) = (t(&[5]), ops::add(&t(&[5]), 2.5).unwrap());
    let w = |xs: &[Tensor]| ops::complex(&xs[1], &xs[0]);
    check(
        "mul, div",
        |xs| ops::div(&ops::mul(&z(xs)?, &z(xs)?)?, &ops::add(&w(xs)?, &z(xs)?)?),
        &[p.clone(), q.clone()],
    );
    check(
        "exp, log, sqrt",
        |xs| ops::add(&ops::exp(&z(xs)?)?, &ops::log(&ops::sqrt(&w(xs)?)?)?),
        &[p.clone(), q.clone()],
    );
    check(
        "abs, angle, conj",
        |xs| ops::add(&ops::mul(&ops::abs(&w(xs)?)?, &ops::angle(&w(xs)?)?)?, &ops::real(&ops::conj(&z(xs)?)?)?),
        &[p.clone(), q.clone()],
    );
    check(
        "sum, matmul",
        |xs| ops::matmul(&ops::reshape(&z(xs)?, &[5, 1])?, &ops::reshape(&ops::sum(&w(xs)?, 0, true)?, &[1, 1])?),
        &[p, q],
    );
}

#[test]
fn tensorflow_gradient_convention() -> Result<()> {
    // d/dz of |z|² is 2z; of Re(z²) it is 2 conj(z) (TensorFlow's conj(f'(z)) upstream rule).
    let z = Tensor::from_slice(&[C::new(1.0, 2.0)], [1])?;
    let tape = GradientTape::new();
    tape.watch(&z);
    let l = ops::sum(&ops::square(&ops::abs(&z)?)?, Axes::All, false)?;
    let g = tape.gradient(&l, &[&z])?;
    assert_cclose("d|z|²/dz", &cvalues(g[0].as_ref().unwrap()), &[C::new(2.0, 4.0)], 1e-15);
    let tape = GradientTape::new();
    tape.watch(&z);
    let l = ops::sum(&ops::real(&ops::square(&z)?)?, Axes::All, false)?;
    let g = tape.gradient(&l, &[&z])?;
    assert_cclose("dRe(z²)/dz", &cvalues(g[0].as_ref().unwrap()), &[C::new(2.0, -4.0)], 1e-15);
    Ok(())
}

#[test]
fn transforms_run_in_graphs_and_files() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 8])?;
    let filter = |x: &Tensor| -> Result<Tensor> {
        let spectrum = ops::rfft(x, None)?;
        let weights = ops::slice(&ops::cast(x, DType::C64)?, &[0, 0], &[-1, 5])?;
        ops::irfft(&ops::mul(&spectrum, &weights)?, Some(8))
    };
    let y = filter(&x)?;
    let gx = gradients(&[&ops::sum(&y, Axes::All, false)?], &[&x], None, Unconnected::None)?;
    let mut rng = Rng(9);
    let v: Vec<f32> = (0..16).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let xv = Tensor::from_slice(&v, [2, 8])?;
    let out = Session::new(&g).run(&[&y, gx[0].as_ref().unwrap()], &[(&x, &xv)])?;
    let eager = filter(&xv)?;
    assert_close("graph = eager", &values(&out[0]), &values(&eager), 1e-6);
    // The graph survives serialization, FFT nodes and all, and runs the same.
    let back = Graph::from_json(&g.to_json()?)?;
    assert_eq!(back.num_nodes(), g.num_nodes());
    let (bx, by) = (back.tensor("x:0")?, back.tensor(&y.name().expect("a symbolic output"))?);
    let again = Session::new(&back).run(&[&by], &[(&bx, &xv)])?;
    assert_eq!(values(&again[0]), values(&out[0]), "the restored graph computes the same");
    // npy keeps complex values; a safetensors checkpoint keeps c64 and refuses c128.
    let dir = std::env::temp_dir().join(format!("rivulet-spectral-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let z = ops::complex(&Tensor::from_slice(&[1.5f64, -2.0], [2])?, &Tensor::from_slice(&[0.25f64, 4.0], [2])?)?;
    for t in [z.clone(), ops::cast(&z, DType::C64)?] {
        let path = dir.join("z.npy");
        rivulet::save_npy(&t, &path)?;
        let back = rivulet::load_npy(&path)?;
        assert_eq!((back.dtype(), values(&back)), (t.dtype(), values(&t)));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn complex_and_fft_errors_name_the_op() -> Result<()> {
    let real = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], [4])?;
    let z = ops::cast(&real, DType::C64)?;
    let expect = |r: Result<Tensor>, kind: ErrorKind, words: &[&str]| {
        let e = r.expect_err("an error");
        assert_eq!(e.kind(), kind, "{e}");
        for w in words {
            assert!(e.to_string().contains(w), "'{w}' missing from: {e}");
        }
    };
    expect(ops::fft(&real), ErrorKind::DType, &["FFT", "complex", "f32"]);
    expect(ops::rfft(&z, None), ErrorKind::DType, &["RFFT", "c64"]);
    expect(ops::irfft(&real, None), ErrorKind::DType, &["IRFFT"]);
    expect(ops::fft2(&z), ErrorKind::Shape, &["FFT2D", "rank >= 2"]);
    expect(ops::irfft(&ops::slice(&z, &[0], &[1])?, None), ErrorKind::InvalidArgument, &["irfft", "length"]);
    expect(ops::rfft(&Tensor::from_slice::<f32>(&[], [0])?, None), ErrorKind::Shape, &["RFFT", "at least one"]);
    expect(ops::add(&z, &ops::cast(&real, DType::C128)?), ErrorKind::DType, &["add", "c64", "c128"]);
    expect(ops::maximum(&z, &z), ErrorKind::DType, &["maximum", "c64"]);
    expect(ops::tanh(&z), ErrorKind::DType, &["tanh", "c64"]);
    expect(ops::max(&z, Axes::All, false), ErrorKind::DType, &["c64"]);
    expect(ops::complex(&real, &ops::cast(&real, DType::F64)?), ErrorKind::DType, &["complex", "f32", "f64"]);
    expect(
        ops::complex(&ops::cast(&real, DType::I32)?, &ops::cast(&real, DType::I32)?),
        ErrorKind::DType,
        &["complex", "i32"],
    );
    expect(ops::add(&z, &real), ErrorKind::DType, &["c64", "f32"]);
    expect(ops::matmul(&ops::reshape(&z, &[2, 2])?, &ops::reshape(&real, &[2, 2])?), ErrorKind::DType, &["matmul"]);
    let mut data = rivulet::io::checkpoint::CheckpointData::default();
    data.tensors.insert("z".into(), ops::cast(&z, DType::C128)?);
    let e = rivulet::io::checkpoint::to_bytes(&data).expect_err("c128 in safetensors");
    assert!(e.to_string().contains("'z'") && e.to_string().contains("c128"), "{e}");
    Ok(())
}
