//! Convolutions and pooling against direct float64 loops (written here from
//! the definitions, with TensorFlow's SAME padding worked out separately),
//! their gradients against finite differences (first and second order),
//! layouts, half precision, and argument errors. TensorFlow's own values
//! are in `tf_reference.rs` (the `conv*`, `*_pool*` cases).

use crate::common::{values, Rng};
use rivulet::ops::{self, ConvOptions, Padding, PoolOptions};
use rivulet::{gradients, Axes, DType, ErrorKind, GradientTape, Graph, Result, Session, Tensor, Unconnected};

fn t64(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    Tensor::from_slice(&v, shape).unwrap()
}

/// Output size and padding before, per TensorFlow's definitions.
fn geometry(input: usize, k: usize, s: usize, d: usize, padding: &Padding, axis: usize) -> (usize, usize) {
    let extent = (k - 1) * d + 1;
    match padding {
        Padding::Valid => ((input - extent) / s + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(s);
            let total = ((out - 1) * s + extent).saturating_sub(input);
            (out, total / 2)
        }
        Padding::Explicit { pads } => ((input + pads[axis].0 + pads[axis].1 - extent) / s + 1, pads[axis].0),
    }
}

/// Row-major index of `idx` in `shape`.
fn at(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// Every index of `shape`, row-major.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut i| {
            let mut idx = vec![0; shape.len()];
            for d in (0..shape.len()).rev() {
                idx[d] = i % shape[d];
                i /= shape[d];
            }
            idx
        })
        .collect()
}

struct Conv<'a> {
    strides: &'a [usize],
    dilations: &'a [usize],
    padding: Padding,
    groups: usize,
}

/// Direct N-D convolution of channels-last `x` by `[k..., in/g, out]` `w`.
fn naive_conv(x: &[f64], xs: &[usize], w: &[f64], ws: &[usize], c: &Conv) -> (Vec<f64>, Vec<usize>) {
    let r = xs.len() - 2;
    let (cin, cout) = (xs[r + 1], ws[r + 1]);
    let (cg, og) = (cin / c.groups, cout / c.groups);
    let geo: Vec<(usize, usize)> =
        (0..r).map(|d| geometry(xs[d + 1], ws[d], c.strides[d], c.dilations[d], &c.padding, d)).collect();
    let mut os = vec![xs[0]];
    os.extend(geo.iter().map(|g| g.0));
    os.push(cout);
    let mut out = vec![0.0; os.iter().product()];
    for oi in indices(&os) {
        let o = oi[r + 1];
        let j = o / og;
        let mut acc = 0.0;
        for tap in indices(&ws[..r]) {
            let mut pos = vec![oi[0]];
            let mut inside = true;
            for d in 0..r {
                let p = (oi[d + 1] * c.strides[d] + tap[d] * c.dilations[d]) as isize - geo[d].1 as isize;
                inside &= p >= 0 && (p as usize) < xs[d + 1];
                pos.push(p.max(0) as usize);
            }
            if !inside {
                continue;
            }
            for ci in 0..cg {
                let mut xi = pos.clone();
                xi.push(j * cg + ci);
                let mut wi = tap.clone();
                wi.extend([ci, o]);
                acc += x[at(&xi, xs)] * w[at(&wi, ws)];
            }
        }
        out[at(&oi, &os)] = acc;
    }
    (out, os)
}

/// Direct pooling: max (padding never wins) or the mean of the elements
/// inside the input.
fn naive_pool(x: &[f64], xs: &[usize], window: &[usize], strides: &[usize], padding: &Padding, max: bool) -> Vec<f64> {
    let r = xs.len() - 2;
    let geo: Vec<(usize, usize)> = (0..r).map(|d| geometry(xs[d + 1], window[d], strides[d], 1, padding, d)).collect();
    let mut os = vec![xs[0]];
    os.extend(geo.iter().map(|g| g.0));
    os.push(xs[r + 1]);
    let mut out = vec![0.0; os.iter().product()];
    for oi in indices(&os) {
        let (mut best, mut sum, mut n) = (f64::NEG_INFINITY, 0.0, 0usize);
        for tap in indices(window) {
            let mut xi = vec![oi[0]];
            let mut inside = true;
            for d in 0..r {
                let p = (oi[d + 1] * strides[d] + tap[d]) as isize - geo[d].1 as isize;
                inside &= p >= 0 && (p as usize) < xs[d + 1];
                xi.push(p.max(0) as usize);
            }
            if inside {
                xi.push(oi[r + 1]);
                let v = x[at(&xi, xs)];
                best = best.max(v);
                sum += v;
                n += 1;
            }
        }
        out[at(&oi, &os)] = if max { best } else { sum / n as f64 };
    }
    out
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

struct ConvCase {
    name: &'static str,
    x: &'static [usize],
    w: &'static [usize],
    strides: &'static [usize],
    dilations: &'static [usize],
    padding: Padding,
    groups: usize,
}

fn conv_cases() -> Vec<ConvCase> {
    let c =
        |name, x, w, strides, dilations, padding, groups| ConvCase { name, x, w, strides, dilations, padding, groups };
    vec![
        c("odd sizes, VALID", &[2, 7, 5, 3], &[3, 2, 3, 4], &[1, 1], &[1, 1], Padding::Valid, 1),
        c("stride 2, SAME (asymmetric)", &[2, 8, 7, 2], &[3, 4, 2, 3], &[2, 2], &[1, 1], Padding::Same, 1),
        c("stride 3x2, SAME", &[1, 10, 9, 2], &[2, 3, 2, 2], &[3, 2], &[1, 1], Padding::Same, 1),
        c("dilation 2, SAME", &[2, 9, 8, 2], &[3, 3, 2, 3], &[1, 1], &[2, 2], Padding::Same, 1),
        c("dilation 2x3 with stride 2, VALID", &[1, 11, 12, 1], &[2, 3, 1, 2], &[2, 2], &[2, 3], Padding::Valid, 1),
        c("groups 2", &[2, 6, 5, 4], &[3, 3, 2, 6], &[1, 1], &[1, 1], Padding::Same, 2),
        c("depthwise (groups = channels)", &[1, 6, 6, 3], &[3, 3, 1, 6], &[2, 2], &[1, 1], Padding::Same, 3),
        c("1x1", &[3, 4, 5, 6], &[1, 1, 6, 4], &[1, 1], &[1, 1], Padding::Valid, 1),
        c("1x1 stride 2", &[2, 5, 5, 3], &[1, 1, 3, 2], &[2, 2], &[1, 1], Padding::Valid, 1),
        c("1x1 groups 3", &[2, 3, 4, 6], &[1, 1, 2, 3], &[1, 1], &[1, 1], Padding::Valid, 3),
        c(
            "batch 1, explicit padding",
            &[1, 5, 6, 2],
            &[3, 3, 2, 2],
            &[2, 1],
            &[1, 1],
            Padding::Explicit { pads: vec![(1, 2), (0, 1)] },
            1,
        ),
        c("kernel as large as the input", &[2, 4, 3, 2], &[4, 3, 2, 2], &[1, 1], &[1, 1], Padding::Valid, 1),
        c("1-D, stride 2, SAME, even window", &[2, 9, 3], &[4, 3, 2], &[2], &[1], Padding::Same, 1),
        c("3-D, SAME, stride (1, 2, 1)", &[1, 4, 5, 3, 2], &[2, 3, 2, 2, 3], &[1, 2, 1], &[1, 1, 1], Padding::Same, 1),
        c("3-D, dilation 2, VALID", &[1, 5, 5, 5, 1], &[2, 2, 2, 1, 2], &[1, 1, 1], &[2, 2, 2], Padding::Valid, 1),
    ]
}

fn options(c: &ConvCase) -> ConvOptions {
    ConvOptions::new(c.padding.clone()).strides(c.strides).dilations(c.dilations).groups(c.groups)
}

#[test]
fn convolutions_match_direct_float64_loops() -> Result<()> {
    let mut rng = Rng(0xC0DE);
    for c in conv_cases() {
        let (x, w) = (t64(&mut rng, c.x), t64(&mut rng, c.w));
        let (want, shape) = naive_conv(
            &values(&x),
            c.x,
            &values(&w),
            c.w,
            &Conv { strides: c.strides, dilations: c.dilations, padding: c.padding.clone(), groups: c.groups },
        );
        let y = ops::convolution(&x, &w, &options(&c))?;
        assert_eq!(y.shape().dims(), &shape[..], "{}", c.name);
        assert_close(c.name, &values(&y), &want, 1e-12);
        // f32 rounds the inputs; the sums stay within f32's precision.
        let y32 = ops::convolution(&ops::cast(&x, DType::F32)?, &ops::cast(&w, DType::F32)?, &options(&c))?;
        assert_eq!(y32.dtype(), DType::F32);
        assert_close(c.name, &values(&y32), &want, 1e-5);
    }
    Ok(())
}

#[test]
fn a_convolution_in_a_graph_with_unknown_batch_matches_eager() -> Result<()> {
    let mut rng = Rng(0xC0DF);
    let (x, w) = (t64(&mut rng, &[3, 7, 6, 2]), t64(&mut rng, &[3, 3, 2, 4]));
    let eager = ops::conv2d(&x, &w, &[2], Padding::Same)?;
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F64, [rivulet::UNKNOWN, 7, 6, 2])?;
    let y = ops::conv2d(&xp, &w, &[2], Padding::Same)?;
    assert_eq!(y.shape().dims(), &[rivulet::UNKNOWN, 4, 3, 4]);
    let pooled = ops::max_pool2d(&y, &[2], &[2], Padding::Same)?;
    let gx = gradients(&[&ops::sum(&pooled, Axes::All, false)?], &[&xp], None, Unconnected::None)?;
    let out = Session::new(&g).run(&[&y, gx[0].as_ref().unwrap()], &[(&xp, &x)])?;
    assert_eq!(values(&out[0]), values(&eager));
    let tape = GradientTape::new();
    tape.watch(&x);
    let l = ops::sum(
        &ops::max_pool2d(&ops::conv2d(&x, &w, &[2], Padding::Same)?, &[2], &[2], Padding::Same)?,
        Axes::All,
        false,
    )?;
    let want = tape.gradient(&l, &[&x])?.remove(0).unwrap();
    assert_close("graph gradient = eager", &values(&out[1]), &values(&want), 1e-12);
    Ok(())
}

#[test]
fn channels_first_is_channels_last_transposed() -> Result<()> {
    let mut rng = Rng(0xC0E0);
    let (x, w) = (t64(&mut rng, &[2, 6, 5, 3]), t64(&mut rng, &[3, 2, 3, 4]));
    let opts = ConvOptions::new(Padding::Same).strides(&[2, 1]);
    let last = ops::convolution(&x, &w, &opts)?;
    let first = ops::convolution(&ops::transpose(&x, &[0, 3, 1, 2])?, &w, &opts.clone().channels_first(true))?;
    assert_eq!(values(&ops::transpose(&first, &[0, 2, 3, 1])?), values(&last));
    let pool = PoolOptions::new(&[2], Padding::Same);
    let pooled = ops::max_pool(&ops::transpose(&x, &[0, 3, 1, 2])?, &pool.clone().channels_first(true))?;
    assert_eq!(values(&ops::transpose(&pooled, &[0, 2, 3, 1])?), values(&ops::max_pool(&x, &pool)?));
    Ok(())
}

#[test]
fn half_precision_runs_in_f32_and_rounds_once() -> Result<()> {
    let mut rng = Rng(0xC0E1);
    let (x, w) = (t64(&mut rng, &[1, 5, 5, 2]), t64(&mut rng, &[3, 3, 2, 3]));
    for dtype in [DType::F16, DType::BF16] {
        let (xh, wh) = (ops::cast(&x, dtype)?, ops::cast(&w, dtype)?);
        let y = ops::conv2d(&xh, &wh, &[1], Padding::Same)?;
        assert_eq!(y.dtype(), dtype);
        let want = ops::cast(
            &ops::conv2d(&ops::cast(&xh, DType::F32)?, &ops::cast(&wh, DType::F32)?, &[1], Padding::Same)?,
            dtype,
        )?;
        assert_eq!(values(&y), values(&want), "{dtype}");
        let p = ops::avg_pool2d(&xh, &[2], &[2], Padding::Valid)?;
        assert_eq!(p.dtype(), dtype);
    }
    Ok(())
}

#[test]
fn pooling_matches_direct_float64_loops() -> Result<()> {
    let mut rng = Rng(0xC0E2);
    type PoolCase = (&'static [usize], &'static [usize], &'static [usize], Padding);
    let cases: Vec<PoolCase> = vec![
        (&[2, 7, 5, 3], &[3, 3], &[2, 2], Padding::Same),
        (&[1, 6, 6, 2], &[2, 2], &[2, 2], Padding::Valid),
        (&[2, 5, 8, 1], &[3, 2], &[1, 3], Padding::Same),
        (&[2, 9, 2], &[4], &[3], Padding::Same),
        (&[1, 4, 5, 3, 2], &[2, 3, 2], &[2, 1, 2], Padding::Same),
        (&[1, 5, 5, 2], &[3, 3], &[1, 1], Padding::Explicit { pads: vec![(1, 1), (2, 0)] }),
    ];
    for (xs, window, strides, padding) in cases {
        let x = t64(&mut rng, xs);
        let opts = PoolOptions::new(window, padding.clone()).strides(strides);
        for max in [true, false] {
            let want = naive_pool(&values(&x), xs, window, strides, &padding, max);
            let y = if max { ops::max_pool(&x, &opts)? } else { ops::avg_pool(&x, &opts)? };
            assert_close(&format!("{xs:?} {window:?} {padding:?} max={max}"), &values(&y), &want, 1e-14);
        }
    }
    // Default strides are the window; NaN loses to numbers, and a window of
    // NaN alone (padding aside) gives NaN, on the CPU and the reference backend.
    let x = Tensor::from_slice(&[f64::NAN, 1.0, 3.0, f64::NAN, f64::NAN], [1, 5, 1])?;
    for device in ["/cpu:0", "/reference:0"] {
        let y = rivulet::device(device, || ops::max_pool(&x, &PoolOptions::new(&[2], Padding::Same)))??;
        let y = values(&y);
        assert_eq!(&y[..2], &[1.0, 3.0], "{device}");
        assert!(y[2].is_nan(), "{device}: {y:?}");
    }
    Ok(())
}

/// Central differences of a scalar `f` against its tape gradient, at up to
/// `samples` elements of each input.
fn check_gradients(what: &str, f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Result<()> {
    let tape = GradientTape::new();
    for t in inputs {
        tape.watch(t);
    }
    let l = f(inputs)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let grads = tape.gradient(&l, &refs)?;
    drop(tape);
    for (i, (x, g)) in inputs.iter().zip(&grads).enumerate() {
        let g = values(g.as_ref().unwrap_or_else(|| panic!("{what}: no gradient for input {i}")));
        let base = values(x);
        for j in (0..base.len()).step_by((base.len() / 7).max(1)) {
            let h = 1e-6;
            let at = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += d;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_slice(&v, x.shape().clone())?;
                Ok(values(&f(&xs)?)[0])
            };
            let fd = (at(h)? - at(-h)?) / (2.0 * h);
            assert!((fd - g[j]).abs() <= 1e-6 * (1.0 + fd.abs()), "{what}: d/dx{i}[{j}]: {} vs {fd}", g[j]);
        }
    }
    Ok(())
}

/// `sum(y * weights)` with fixed weights, so that every output matters.
fn weighted(y: &Tensor) -> Result<Tensor> {
    let n = y.numel().unwrap_or(0);
    let w: Vec<f64> = (0..n).map(|i| ((i * 7) % 11) as f64 * 0.1 - 0.5).collect();
    ops::sum(&ops::mul(y, &Tensor::from_slice(&w, y.shape().clone())?)?, Axes::All, false)
}

#[test]
fn convolution_gradients_match_finite_differences() -> Result<()> {
    let mut rng = Rng(0xC0E3);
    for c in conv_cases() {
        let inputs = [t64(&mut rng, c.x), t64(&mut rng, c.w)];
        let opts = options(&c);
        check_gradients(c.name, &|v| weighted(&ops::convolution(&v[0], &v[1], &opts)?), &inputs)?;
    }
    // The transposed convolution, both inputs.
    let inputs = [t64(&mut rng, &[2, 4, 3, 3]), t64(&mut rng, &[3, 3, 2, 3])];
    let opts = ConvOptions::new(Padding::Same).strides(&[2]);
    check_gradients("conv_transpose", &|v| weighted(&ops::conv_transpose(&v[0], &v[1], &[8, 6], &opts)?), &inputs)?;
    Ok(())
}

#[test]
fn convolution_second_derivatives_match_finite_differences() -> Result<()> {
    // d/d(x, w) of <dL/dx, v> and <dL/dw, u>: the gradient ops' own gradients.
    let mut rng = Rng(0xC0E4);
    let (x, w) = (t64(&mut rng, &[2, 6, 5, 2]), t64(&mut rng, &[3, 2, 2, 3]));
    let (v, u) = (t64(&mut rng, &[2, 6, 5, 2]), t64(&mut rng, &[3, 2, 2, 3]));
    let opts = ConvOptions::new(Padding::Same).strides(&[2, 1]).dilations(&[1, 2]);
    let f = |xs: &[Tensor]| -> Result<Tensor> {
        let tape = GradientTape::new();
        tape.watch(&xs[0]);
        tape.watch(&xs[1]);
        let l = ops::sum(&ops::tanh(&ops::convolution(&xs[0], &xs[1], &opts)?)?, Axes::All, false)?;
        let g = tape.gradient(&l, &[&xs[0], &xs[1]])?;
        let (gx, gw) = (g[0].clone().expect("dx"), g[1].clone().expect("dw"));
        ops::add(&ops::sum(&ops::mul(&gx, &v)?, Axes::All, false)?, &ops::sum(&ops::mul(&gw, &u)?, Axes::All, false)?)
    };
    check_gradients("second order", &f, &[x, w])
}

#[test]
fn pooling_gradients_match_finite_differences() -> Result<()> {
    let mut rng = Rng(0xC0E5);
    for (xs, window, strides, padding) in [
        (&[2, 7, 5, 3][..], &[3, 3][..], &[2, 2][..], Padding::Same),
        (&[1, 6, 6, 2], &[2, 2], &[1, 1], Padding::Valid),
        (&[2, 9, 2], &[4], &[3], Padding::Same),
        (&[1, 4, 5, 3, 2], &[2, 3, 2], &[2, 1, 2], Padding::Same),
    ] {
        let opts = PoolOptions::new(window, padding).strides(strides);
        let inputs = [t64(&mut rng, xs)];
        check_gradients("max_pool", &|v| weighted(&ops::max_pool(&v[0], &opts)?), &inputs)?;
        check_gradients("avg_pool", &|v| weighted(&ops::avg_pool(&v[0], &opts)?), &inputs)?;
        // Second order: the gradients are linear in the upstream gradient.
        let f = |v: &[Tensor], max: bool| -> Result<Tensor> {
            let tape = GradientTape::new();
            tape.watch(&v[0]);
            let y = if max { ops::max_pool(&v[0], &opts)? } else { ops::avg_pool(&v[0], &opts)? };
            let l = ops::sum(&ops::mul(&y, &v[1])?, Axes::All, false)?;
            let dx = tape.gradient(&l, &[&v[0]])?.remove(0).expect("dx");
            weighted(&ops::square(&dx)?)
        };
        let y = ops::max_pool(&inputs[0], &opts)?;
        let upstream = t64(&mut rng, y.shape().dims());
        let both = [inputs[0].clone(), upstream];
        check_gradients_of("max_pool grad", &|v| f(v, true), &both, 1)?;
        check_gradients_of("avg_pool grad", &|v| f(v, false), &both, 1)?;
    }
    // Ties: the gradient goes to the first largest element only (TensorFlow's MaxPoolGrad).
    let x = Tensor::from_slice(&[1.0f64, 2.0, 2.0, 0.0], [1, 2, 2, 1])?;
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = ops::max_pool2d(&x, &[2], &[2], Padding::Valid)?;
    let g = tape.gradient(&ops::sum(&y, Axes::All, false)?, &[&x])?.remove(0).unwrap();
    assert_eq!(values(&g), vec![0.0, 1.0, 0.0, 0.0]);
    Ok(())
}

/// [`check_gradients`] for input `only` alone (the others are constants).
fn check_gradients_of(
    what: &str,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    only: usize,
) -> Result<()> {
    let g = |v: &[Tensor]| {
        let mut all = inputs.to_vec();
        all[only] = v[0].clone();
        f(&all)
    };
    check_gradients(what, &g, &[inputs[only].clone()])
}

#[test]
fn bad_arguments_are_errors_naming_the_op_and_the_caller() {
    let x = Tensor::from_slice(&vec![0.0f32; 2 * 5 * 5 * 4], [2, 5, 5, 4]).unwrap();
    let w = Tensor::from_slice(&vec![0.0f32; 3 * 3 * 4 * 2], [3, 3, 4, 2]).unwrap();
    let big = Tensor::from_slice(&vec![0.0f32; 6 * 6 * 4 * 2], [6, 6, 4, 2]).unwrap();
    let err = ops::conv2d(&x, &big, &[1], Padding::Valid).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Shape, "{text}");
    assert!(text.contains("Conv2D") && text.contains("conv.rs") && text.contains("more than the input"), "{text}");
    // Channels that do not divide by the groups.
    let e = ops::convolution(&x, &w, &ConvOptions::new(Padding::Same).groups(3)).unwrap_err();
    assert!(e.to_string().contains("group"), "{e}");
    let e = ops::convolution(&x, &w, &ConvOptions::new(Padding::Same).groups(0)).unwrap_err();
    assert!(e.to_string().contains("groups must be positive"), "{e}");
    // Zero strides and wrong lengths.
    let e = ops::conv2d(&x, &w, &[0], Padding::Same).unwrap_err();
    assert!(e.to_string().contains("positive"), "{e}");
    let e = ops::conv2d(&x, &w, &[1, 1, 1], Padding::Same).unwrap_err();
    assert!(e.to_string().contains("strides"), "{e}");
    // Rank, dtype, and mismatched channels.
    assert!(ops::conv2d(&ops::reshape(&x, &[10, 5, 4]).unwrap(), &w, &[1], Padding::Same).is_err());
    let wi = ops::cast(&w, DType::I32).unwrap();
    let xi = ops::cast(&x, DType::I32).unwrap();
    let e = ops::conv2d(&xi, &wi, &[1], Padding::Same).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType, "{e}");
    let e = ops::conv2d(&x, &ops::cast(&w, DType::F64).unwrap(), &[1], Padding::Same).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType, "{e}");
    let w3 = Tensor::from_slice(&vec![0.0f32; 3 * 3 * 3 * 2], [3, 3, 3, 2]).unwrap();
    let e = ops::conv2d(&x, &w3, &[1], Padding::Same).unwrap_err();
    assert!(e.to_string().contains("channels"), "{e}");
    // Explicit padding of the wrong length; a pool window larger than the input.
    let e = ops::conv2d(&x, &w, &[1], Padding::Explicit { pads: vec![(1, 1)] }).unwrap_err();
    assert!(e.to_string().contains("paddings"), "{e}");
    let e = ops::max_pool2d(&x, &[6], &[1], Padding::Valid).unwrap_err();
    assert!(e.to_string().contains("MaxPool") && e.to_string().contains("more than the input"), "{e}");
    // TensorFlow's rule: explicit pooling padding smaller than the window on each side.
    let e = ops::max_pool2d(&x, &[2], &[1], Padding::Explicit { pads: vec![(1, 2), (0, 0)] }).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("MaxPool") && text.contains("(1, 2)") && text.contains("window size 2"), "{text}");
    assert_eq!(
        ops::max_pool2d(&x, &[2], &[1], Padding::Explicit { pads: vec![(1, 1), (1, 0)] }).unwrap().shape().dims(),
        &[2, 6, 5, 4]
    );
    let e = ops::avg_pool(&x, &PoolOptions::new(&[0], Padding::Same)).unwrap_err();
    assert!(e.to_string().contains("positive"), "{e}");
    // Sizes that would overflow the kernels' index arithmetic are errors, not panics.
    let huge = usize::MAX / 2;
    let e = ops::max_pool(&x, &PoolOptions::new(&[huge, huge], Padding::Same)).unwrap_err();
    assert!(e.to_string().contains("taps"), "{e}");
    let e = ops::convolution(&x, &w, &ConvOptions::new(Padding::Same).dilations(&[huge])).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    let e = ops::conv2d(&x, &w, &[1], Padding::Explicit { pads: vec![(huge, huge), (0, 0)] }).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    // conv_transpose needs one output size per spatial axis, consistent with x.
    let e = ops::conv_transpose(&x, &w, &[5], &ConvOptions::new(Padding::Same)).unwrap_err();
    assert!(e.to_string().contains("output sizes"), "{e}");
    let e =
        ops::conv2d_transpose(&x, &ops::transpose(&w, &[0, 1, 3, 2]).unwrap(), &[2, 30, 30, 2], &[1], Padding::Same);
    assert!(e.is_err());
    // Depthwise filters must match the channels.
    assert!(ops::depthwise_conv2d(&x, &w3, &[1], Padding::Same).is_err());
}

#[test]
fn empty_batches_and_channels_give_empty_results() -> Result<()> {
    let x = Tensor::from_slice(&Vec::<f32>::new(), [0, 5, 5, 2])?;
    let w = Tensor::from_slice(&vec![1.0f32; 3 * 3 * 2 * 4], [3, 3, 2, 4])?;
    assert_eq!(ops::conv2d(&x, &w, &[1], Padding::Same)?.shape().dims(), &[0, 5, 5, 4]);
    assert_eq!(ops::max_pool2d(&x, &[2], &[2], Padding::Same)?.shape().dims(), &[0, 3, 3, 2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    tape.watch(&w);
    let y = ops::conv2d(&x, &w, &[1], Padding::Same)?;
    let g = tape.gradient(&ops::sum(&y, Axes::All, false)?, &[&x, &w])?;
    assert_eq!(values(g[1].as_ref().unwrap()), vec![0.0; 72]);
    Ok(())
}

#[test]
fn conv_and_pooling_layers_compute_their_ops() -> Result<()> {
    use rivulet::nn::{Activation, Conv1D, Conv2D, GlobalPooling, Layer, MaxPooling2D, Pooling};
    let mut rng = Rng(0xC0E6);
    let x = ops::cast(&t64(&mut rng, &[2, 7, 6, 3]), DType::F32)?;
    let conv = Conv2D::new(4, [3, 2], Activation::Relu).padding(Padding::Same).strides([2, 1]);
    let y = conv.call(&x, true)?;
    assert_eq!(y.shape().dims(), &[2, 4, 6, 4]);
    let vars = conv.variables();
    assert_eq!(vars.len(), 2);
    assert_eq!(vars[0].read().shape().dims(), &[3, 2, 3, 4]);
    // Glorot uniform: |w| <= sqrt(6 / (fan_in + fan_out)), fans 3*2*3 and 3*2*4.
    let limit = (6.0f64 / (18.0 + 24.0)).sqrt();
    assert!(values(&vars[0].read()).iter().all(|w| w.abs() <= limit));
    let want = ops::relu(&ops::add(&ops::conv2d(&x, &vars[0].read(), &[2, 1], Padding::Same)?, &vars[1].read())?)?;
    assert_eq!(values(&y), values(&want));
    // Channels first: the same kernel on transposed data.
    let first = Conv2D::new(4, [3, 2], Activation::Linear).padding(Padding::Same).channels_first();
    let xt = ops::transpose(&x, &[0, 3, 1, 2])?;
    let yt = first.call(&xt, false)?;
    let k = first.variables()[0].read();
    let want = ops::transpose(&ops::conv2d(&x, &k, &[1], Padding::Same)?, &[0, 3, 1, 2])?;
    assert_close("channels_first layer", &values(&yt), &values(&want), 1e-6);
    // Pooling layers and global pooling.
    let p = MaxPooling2D::new([2, 2]).call(&y, false)?;
    assert_eq!(values(&p), values(&ops::max_pool2d(&y, &[2], &[2], Padding::Valid)?));
    let a = Pooling::<2>::average([2, 3]).strides([1, 1]).padding(Padding::Same).call(&y, false)?;
    let want = ops::avg_pool(&y, &PoolOptions::new(&[2, 3], Padding::Same).strides(&[1, 1]))?;
    assert_eq!(values(&a), values(&want));
    let gap = GlobalPooling::<2>::new().call(&y, false)?;
    assert_eq!(gap.shape().dims(), &[2, 4]);
    assert_close("global average", &values(&gap), &values(&ops::mean(&y, vec![1i64, 2], false)?), 1e-6);
    let gmp = GlobalPooling::<2>::max().call(&y, false)?;
    assert_eq!(values(&gmp), values(&ops::max(&y, vec![1i64, 2], false)?));
    // Wrong ranks and channel counts are errors.
    assert!(Conv1D::new(2, [3], Activation::Linear).call(&x, false).is_err());
    assert!(Conv2D::new(3, [3, 3], Activation::Linear).groups(2).call(&x, false).is_err());
    assert!(MaxPooling2D::new([2, 2]).call(&gap, false).is_err());
    Ok(())
}

#[test]
fn depth_to_space_and_space_to_depth_are_inverses() -> Result<()> {
    let v: Vec<f32> = (0..2 * 4 * 6 * 3).map(|i| i as f32).collect();
    let x = Tensor::from_slice(&v, [2, 4, 6, 3])?;
    let d = ops::space_to_depth(&x, 2)?;
    assert_eq!(d.shape().dims(), &[2, 2, 3, 12]);
    // Channel (i·2 + j)·3 + k of tile (0, 0) is x[0, i, j, k].
    assert_eq!(
        values(&ops::slice(&d, &[0, 0, 0, 0], &[1, 1, 1, 12])?),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0]
    );
    assert_eq!(values(&ops::depth_to_space(&d, 2)?), values(&x));
    let e = ops::space_to_depth(&x, 4).unwrap_err();
    assert!(e.to_string().contains("SpaceToDepth") && e.to_string().contains("conv.rs"), "{e}");
    assert!(ops::depth_to_space(&x, 2).is_err());
    assert!(ops::depth_to_space(&d, 1).is_err());
    Ok(())
}

#[test]
fn depthwise_separable_and_transposed_layers_match_keras_shapes_and_their_ops() -> Result<()> {
    use rivulet::nn::{Activation, Conv2DTranspose, DepthwiseConv2D, Layer, SeparableConv2D};
    let mut rng = Rng(0xDE97);
    let x = ops::cast(&t64(&mut rng, &[2, 9, 7, 3]), DType::F32)?;
    // Shapes and kernel layouts printed by Keras 3 (TensorFlow 2.21) for a
    // (9, 7, 3) input.
    let dw = DepthwiseConv2D::depthwise([3, 3], 2, Activation::Linear).strides([2, 2]).padding(Padding::Same);
    let y = dw.call(&x, false)?;
    assert_eq!(y.shape().dims(), &[2, 5, 4, 6]);
    let v = dw.variables();
    assert_eq!((v[0].read().shape().dims(), v[1].read().shape().dims()), (&[3, 3, 3, 2][..], &[6][..]));
    let want = ops::add(&ops::depthwise_conv2d(&x, &v[0].read(), &[2], Padding::Same)?, &v[1].read())?;
    assert_close("DepthwiseConv2D", &values(&y), &values(&want), 1e-6);

    let sep = SeparableConv2D::separable(5, [2, 3], 2, Activation::Relu);
    let y = sep.call(&x, false)?;
    assert_eq!(y.shape().dims(), &[2, 8, 5, 5]);
    let v = sep.variables();
    let shapes: Vec<Vec<usize>> = v.iter().map(|v| v.read().shape().dims().to_vec()).collect();
    assert_eq!(shapes, vec![vec![2, 3, 3, 2], vec![1, 1, 6, 5], vec![5]]);
    let want = ops::relu(&ops::add(
        &ops::separable_conv2d(&x, &v[0].read(), &v[1].read(), &[1], Padding::Valid)?,
        &v[2].read(),
    )?)?;
    assert_close("SeparableConv2D", &values(&y), &values(&want), 1e-6);

    let tr = Conv2DTranspose::transpose(4, [3, 3], Activation::Linear).strides([2, 2]);
    let y = tr.call(&x, false)?;
    assert_eq!(y.shape().dims(), &[2, 19, 15, 4]);
    let v = tr.variables();
    assert_eq!(v[0].read().shape().dims(), &[3, 3, 4, 3]);
    let want =
        ops::add(&ops::conv2d_transpose(&x, &v[0].read(), &[2, 19, 15, 4], &[2], Padding::Valid)?, &v[1].read())?;
    assert_close("Conv2DTranspose", &values(&y), &values(&want), 1e-6);
    let same = Conv2DTranspose::transpose(4, [3, 2], Activation::Linear).strides([2, 3]).padding(Padding::Same);
    assert_eq!(same.call(&x, false)?.shape().dims(), &[2, 18, 21, 4]);

    // Bad multipliers are errors, not panics.
    assert!(DepthwiseConv2D::depthwise([3, 3], 0, Activation::Linear).call(&x, false).is_err());
    Ok(())
}

#[test]
fn reshaping_layers_move_values_as_keras_does() -> Result<()> {
    use rivulet::nn::{Layer, Reshape, Resizing, UpSampling1D, UpSampling2D, ZeroPadding2D};
    let v: Vec<f32> = (0..2 * 3 * 2).map(|i| i as f32).collect();
    let x = Tensor::from_slice(&v, [2, 3, 2, 1])?;
    // ZeroPadding2D(((1, 0), (0, 2))): a zero row on top, two zero columns right.
    let p = ZeroPadding2D::new([(1, 0), (0, 2)]).call(&x, false)?;
    assert_eq!(p.shape().dims(), &[2, 4, 4, 1]);
    assert_eq!(&values(&p)[..16], &[0., 0., 0., 0., 0., 1., 0., 0., 2., 3., 0., 0., 4., 5., 0., 0.]);
    // UpSampling2D((2, 1)) repeats rows.
    let u = UpSampling2D::new([2, 1]).call(&x, false)?;
    assert_eq!(u.shape().dims(), &[2, 6, 2, 1]);
    assert_eq!(&values(&u)[..6], &[0., 1., 0., 1., 2., 3.]);
    // Nearest upsampling by an integer factor is nearest resizing.
    let u3 = UpSampling2D::new([3, 2]).call(&x, false)?;
    assert_eq!(values(&u3), values(&ops::resize(&x, [9, 4], ops::ResizeMethod::Nearest)?));
    let b = UpSampling2D::new([2, 2]).bilinear().call(&x, false)?;
    assert_eq!(values(&b), values(&ops::resize(&x, [6, 4], ops::ResizeMethod::Bilinear)?));
    assert!(UpSampling1D::new([2]).bilinear().call(&ops::reshape(&x, &[2, 6, 1])?, false).is_err());
    // Resizing keeps the batch and channels.
    assert_eq!(Resizing::new(5, 3).call(&x, false)?.shape().dims(), &[2, 5, 3, 1]);
    // Reshape infers one -1 per example.
    let r = Reshape::new(&[-1, 3]).call(&x, false)?;
    assert_eq!(r.shape().dims(), &[2, 2, 3]);
    assert_eq!(values(&r), values(&x));
    assert!(Reshape::new(&[4, -1]).call(&x, false).is_err());
    assert!(Reshape::new(&[5]).call(&x, false).is_err());
    assert!(Reshape::new(&[-1, -1]).call(&x, false).is_err());
    Ok(())
}

#[test]
fn summary_lists_shapes_and_parameter_counts_as_keras() -> Result<()> {
    use rivulet::nn::{Activation, BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D, Sequential};
    let model = Sequential::new(vec![
        Box::new(Conv2D::new(32, [3, 3], Activation::Relu).padding(Padding::Same)),
        Box::new(MaxPooling2D::new([2, 2])),
        Box::new(BatchNormalization::new()),
        Box::new(Flatten::new()),
        Box::new(Dense::new(10, Activation::Linear)),
    ]);
    assert!(model.summary().contains('?'), "unbuilt layers have no shapes yet");
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [rivulet::UNKNOWN, 28, 28, 1])?;
    model.call(&x, false)?;
    let s = model.summary();
    // The figures Keras 3 prints for the same model.
    for line in [
        "conv2d",
        "(Conv2D)",
        "(None, 28, 28, 32)",
        "320",
        "(MaxPooling2D)",
        "(None, 14, 14, 32)",
        "(BatchNormalization)",
        "128",
        "(Flatten)",
        "(None, 6272)",
        "(Dense)",
        "(None, 10)",
        "62,730",
        "Total params: 63,178 (246.79 KB)",
        "Trainable params: 63,114 (246.54 KB)",
        "Non-trainable params: 64 (256.00 B)",
    ] {
        assert!(s.contains(line), "summary lacks {line:?}:\n{s}");
    }
    Ok(())
}

#[test]
fn image_op_errors_name_the_op() {
    let x = Tensor::from_slice(&[0.0f32; 2 * 3 * 3], [2, 3, 3, 1]).unwrap();
    let e = ops::resize(&x, [0, 2], ops::ResizeMethod::Bilinear).unwrap_err();
    assert!(e.to_string().contains("Resize"), "{e}");
    let e = ops::extract_patches(&x, [4, 1], [1, 1], [1, 1], Padding::Valid).unwrap_err();
    assert!(e.to_string().contains("ExtractImagePatches"), "{e}");
    let e = ops::extract_patches(&x, [2, 2], [0, 1], [1, 1], Padding::Same).unwrap_err();
    assert!(e.to_string().contains("ExtractImagePatches"), "{e}");
    assert!(ops::resize(&Tensor::from_slice(&[0.0f32; 4], [4]).unwrap(), [2, 2], ops::ResizeMethod::Nearest).is_err());
}

#[test]
fn normalization_op_errors_name_the_op_and_the_shapes() {
    let x = Tensor::from_slice(&[0.5f32; 2 * 3 * 4], [2, 3, 4]).unwrap();
    let c4 = Tensor::from_slice(&[1.0f32; 4], [4]).unwrap();
    let c3 = Tensor::from_slice(&[1.0f32; 3], [3]).unwrap();
    let train = ops::BatchNormOptions::default();
    let e = ops::fused_batch_norm(&x, &c3, &c4, None, None, &train).unwrap_err();
    assert!(e.to_string().contains("FusedBatchNormV3") && e.to_string().contains("[3]"), "{e}");
    let infer = ops::BatchNormOptions { training: false, ..train };
    let e = ops::fused_batch_norm(&x, &c4, &c4, None, None, &infer).unwrap_err();
    assert!(e.to_string().contains("mean and variance"), "{e}");
    let bad = ops::BatchNormOptions { exponential_avg_factor: 1.5, ..train };
    assert!(ops::fused_batch_norm(&x, &c4, &c4, Some(&c4), Some(&c4), &bad).is_err());
    let e = ops::group_normalization(&x, 3, None, None, 1e-3).unwrap_err();
    assert!(e.to_string().contains("GroupNormalization"), "{e}");
    // Two groups of two channels, each normalized over its positions.
    let y = ops::group_normalization(&x, 2, Some(&c4), None, 0.0).unwrap();
    assert!(values(&y).iter().all(|v| v.is_nan()), "constant groups have zero variance: 0/0 with epsilon 0");
}

#[test]
fn huge_image_and_layer_arguments_are_errors_not_aborts() {
    use rivulet::nn::{Activation, Conv2DTranspose, Layer, Reshape};
    let x = Tensor::from_slice(&[0.0f32; 2 * 3 * 3], [2, 3, 3, 1]).unwrap();
    assert!(ops::resize(&x, [usize::MAX, 2], ops::ResizeMethod::Bilinear).is_err());
    assert!(ops::resize(&x, [1 << 31, 2], ops::ResizeMethod::Nearest).is_err());
    let e = ops::extract_patches(&x, [1 << 20, 1 << 20], [1, 1], [1, 1], Padding::Same).unwrap_err();
    assert!(e.to_string().contains("taps"), "{e}");
    assert!(Reshape::new(&[i64::MAX, 4, -1]).call(&x, false).is_err());
    assert!(Conv2DTranspose::transpose(2, [0, 3], Activation::Linear).call(&x, false).is_err());
}

#[test]
fn empty_and_overflowing_shapes_in_the_new_ops_are_errors() -> Result<()> {
    use rivulet::nn::{Activation, Conv2D, Conv2DTranspose, Layer, SeparableConv2D, UpSampling2D};
    let empty = Tensor::from_slice(&[0.0f32; 0], [1, 0, 4, 1])?;
    assert!(ops::resize(&empty, [2, 2], ops::ResizeMethod::Nearest).is_err());
    assert!(ops::resize(&empty, [2, 2], ops::ResizeMethod::Bilinear).is_err());
    assert!(ops::extract_patches(&ops::reshape(&empty, &[1, 4, 0, 1])?, [2, 2], [1, 1], [1, 1], Padding::Same).is_err());
    let x = Tensor::from_slice(&[1.0f32; 16 * 3], [1, 4, 4, 3])?;
    // A layer built on one rank, then called on another.
    let tr = Conv2DTranspose::transpose(2, [2, 2], Activation::Linear);
    tr.call(&x, false)?;
    assert!(tr.call(&Tensor::from_slice(&[1.0f32; 6], [2, 3])?, false).is_err());
    assert!(UpSampling2D::new([usize::MAX, 1]).bilinear().call(&x, false).is_err());
    assert!(SeparableConv2D::separable(2, [3, 3], usize::MAX / 2, Activation::Linear).call(&x, false).is_err());
    let dilated = Conv2DTranspose::transpose(2, [2, 2], Activation::Linear).dilation_rate([usize::MAX, 1]);
    assert!(dilated.call(&x, false).is_err());
    // No input channels: every output is the bias (zero), fused or not.
    let none = Tensor::from_slice(&[0.0f32; 0], [1, 5, 5, 0])?;
    let y = Conv2D::new(4, [3, 3], Activation::Relu).padding(Padding::Same).call(&none, false)?;
    assert_eq!(values(&y), vec![0.0; 100]);
    Ok(())
}

#[test]
fn fused_batch_norm_raises_epsilon_as_tensorflow() -> Result<()> {
    // TensorFlow's wrapper uses max(epsilon, 1.001e-5): with epsilon 0 a
    // constant channel normalizes to 0, not NaN.
    let x = Tensor::from_slice(&[2.0f32; 8], [2, 2, 2, 1])?;
    let one = Tensor::from_slice(&[1.0f32], [1])?;
    let zero = Tensor::from_slice(&[0.0f32], [1])?;
    let o = ops::BatchNormOptions { epsilon: 0.0, ..Default::default() };
    let (y, m, v) = ops::fused_batch_norm(&x, &one, &zero, None, None, &o)?;
    assert_eq!(values(&y), vec![0.0; 8]);
    assert_eq!((values(&m), values(&v)), (vec![2.0], vec![0.0]));
    Ok(())
}

#[test]
fn channels_first_batch_normalization_is_channels_last_transposed() -> Result<()> {
    use rivulet::nn::{BatchNormalization, Layer};
    let mut rng = Rng(0xBA7C);
    let x = ops::cast(&t64(&mut rng, &[3, 4, 5, 2]), DType::F32)?;
    let xt = ops::transpose(&x, &[0, 3, 1, 2])?;
    let (last, first) = (BatchNormalization::with(0.9, 1e-3), BatchNormalization::with(0.9, 1e-3).axis(1));
    let to_first = |t: &Tensor| ops::transpose(t, &[0, 3, 1, 2]);
    // Training: batch statistics per channel, and the moving averages they move.
    let (a, b) = (last.call(&x, true)?, first.call(&xt, true)?);
    assert_close("training", &values(&b), &values(&to_first(&a)?), 1e-6);
    for (u, v) in last.variables().iter().zip(first.variables()) {
        assert_eq!(v.read().shape().dims(), &[2]);
        assert_close(u.name(), &values(&v.current()), &values(&u.current()), 1e-6);
    }
    // Inference with the moved statistics.
    let (a, b) = (last.call(&x, false)?, first.call(&xt, false)?);
    assert_close("inference", &values(&b), &values(&to_first(&a)?), 1e-6);
    assert!(BatchNormalization::new().axis(4).call(&x, false).is_err());
    Ok(())
}

#[test]
fn cropping_permute_repeat_rescaling_leaky_relu_and_identity_layers() -> Result<()> {
    use rivulet::nn::{Cropping1D, Cropping2D, Identity, Layer, LeakyReLU, Permute, RepeatVector, Rescaling};
    let v: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    let x = Tensor::from_slice(&v, [1, 2, 3, 4])?;
    // Cropping2D(((0, 1), (1, 1))): row 0, column 1 of each channel.
    let c = Cropping2D::new([(0, 1), (1, 1)]).call(&x, false)?;
    assert_eq!(c.shape().dims(), &[1, 1, 1, 4]);
    assert_eq!(values(&c), vec![4.0, 5.0, 6.0, 7.0]);
    assert!(Cropping2D::new([(1, 1), (0, 0)]).call(&x, false).is_err());
    assert!(Cropping1D::new([(usize::MAX, 1)]).call(&ops::reshape(&x, &[1, 6, 4])?, false).is_err());
    // Permute((2, 1)) on [1, 2, 3, 4] viewed as [1, 6, 4] swaps the two axes.
    let p = Permute::new(&[2, 1]).call(&ops::reshape(&x, &[1, 6, 4])?, false)?;
    assert_eq!(p.shape().dims(), &[1, 4, 6]);
    assert_eq!(&values(&p)[..6], &[0.0, 4.0, 8.0, 12.0, 16.0, 20.0]);
    assert!(Permute::new(&[1, 1]).call(&ops::reshape(&x, &[1, 6, 4])?, false).is_err());
    // RepeatVector(3): [batch, features] -> [batch, 3, features].
    let r = RepeatVector::new(3).call(&Tensor::from([[1.0f32, 2.0]]), false)?;
    assert_eq!((r.shape().dims().to_vec(), values(&r)), (vec![1, 3, 2], vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]));
    assert!(RepeatVector::new(3).call(&x, false).is_err());
    // Rescaling(1/255) of bytes, LeakyReLU's default slope 0.3, Identity.
    let bytes = Tensor::from_slice(&[0u8, 51, 255], [3])?;
    let s = Rescaling::new(1.0 / 255.0, 0.0).call(&bytes, false)?;
    assert_eq!(s.dtype(), DType::F32);
    assert_close("rescaling", &values(&s), &[0.0, 0.2, 1.0], 1e-7);
    let l = LeakyReLU::default().call(&Tensor::from([-2.0f32, 0.0, 3.0]), false)?;
    assert_close("leaky relu", &values(&l), &[-0.6, 0.0, 3.0], 1e-7);
    assert_eq!(values(&Identity::new().call(&x, false)?), v.iter().map(|&a| a as f64).collect::<Vec<_>>());
    Ok(())
}
