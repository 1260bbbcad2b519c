//! Discrete Fourier transforms, as `tf.signal`: `fft`/`ifft` (and their 2-D
//! and 3-D forms) on complex tensors, `rfft`/`irfft` between real signals
//! and their non-negative frequencies, over the last axes, batched over the
//! others; plus NumPy's `fftfreq`, `rfftfreq`, `fftshift` and `ifftshift`.
//!
//! Forward transforms are unnormalized and inverse ones divide by the number
//! of points, as in TensorFlow and NumPy. Every transform has a gradient
//! (the adjoint transform).

use super::complex::{real, scale, scale_by};
use super::{apply1, checked, creation, grid, movement as mv, Ctx, Op};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::op::{FftOp, PadMode};
use crate::tensor::{DType, UNKNOWN};

/// The 1-D DFT along the last axis of a complex tensor (TensorFlow's `fft`).
#[track_caller]
pub fn fft(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Fft { f: FftOp::Fft { rank: 1 } }, &[x])
}
/// The inverse of [`fft`] (divided by the length).
#[track_caller]
pub fn ifft(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Fft { f: FftOp::Ifft { rank: 1 } }, &[x])
}
/// The 2-D DFT over the last two axes.
#[track_caller]
pub fn fft2(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Fft { f: FftOp::Fft { rank: 2 } }, &[x])
}
/// The inverse of [`fft2`].
#[track_caller]
pub fn ifft2(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Fft { f: FftOp::Ifft { rank: 2 } }, &[x])
}
/// The 3-D DFT over the last three axes.
#[track_caller]
pub fn fft3(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Fft { f: FftOp::Fft { rank: 3 } }, &[x])
}
/// The inverse of [`fft3`].
#[track_caller]
pub fn ifft3(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Fft { f: FftOp::Ifft { rank: 3 } }, &[x])
}

/// The DFT of a real signal along its last axis: the `n/2 + 1` non-negative
/// frequencies (f32 gives c64, f64 gives c128). With `fft_length`, the
/// signal is first cropped or zero-padded to that length.
#[track_caller]
pub fn rfft(x: &Tensor, fft_length: Option<usize>) -> Result<Tensor> {
    checked(rfftn(x, 1, fft_length.as_ref().map(std::slice::from_ref)), "RFFT", &[x])
}
/// The inverse of [`rfft`]: a real signal of length `fft_length` (default
/// `2 (m - 1)` for `m` frequencies) from its non-negative frequencies,
/// which are cropped or zero-padded to `fft_length / 2 + 1`.
#[track_caller]
pub fn irfft(x: &Tensor, fft_length: Option<usize>) -> Result<Tensor> {
    checked(irfftn(x, 1, fft_length.as_ref().map(std::slice::from_ref)), "IRFFT", &[x])
}
/// [`rfft`] over the last two axes (the half spectrum along the last).
#[track_caller]
pub fn rfft2(x: &Tensor, fft_length: Option<[usize; 2]>) -> Result<Tensor> {
    checked(rfftn(x, 2, fft_length.as_ref().map(|l| &l[..])), "RFFT2D", &[x])
}
/// The inverse of [`rfft2`].
#[track_caller]
pub fn irfft2(x: &Tensor, fft_length: Option<[usize; 2]>) -> Result<Tensor> {
    checked(irfftn(x, 2, fft_length.as_ref().map(|l| &l[..])), "IRFFT2D", &[x])
}
/// [`rfft`] over the last three axes.
#[track_caller]
pub fn rfft3(x: &Tensor, fft_length: Option<[usize; 3]>) -> Result<Tensor> {
    checked(rfftn(x, 3, fft_length.as_ref().map(|l| &l[..])), "RFFT3D", &[x])
}
/// The inverse of [`rfft3`].
#[track_caller]
pub fn irfft3(x: &Tensor, fft_length: Option<[usize; 3]>) -> Result<Tensor> {
    checked(irfftn(x, 3, fft_length.as_ref().map(|l| &l[..])), "IRFFT3D", &[x])
}

/// The known lengths of the last `rank` axes of `x`.
fn trailing(x: &Tensor, rank: usize, what: &str) -> Result<Vec<usize>> {
    let r = x.rank();
    if r < rank {
        bail!(shape, "{what} needs rank >= {rank}, got shape {}", x.shape());
    }
    let dims = x.shape()[r - rank..].to_vec();
    if dims.contains(&UNKNOWN) {
        bail!(
            shape,
            "{what} needs the transformed axes' lengths known when the graph is built, got shape {}",
            x.shape()
        );
    }
    Ok(dims)
}

/// `x` with its last `lengths.len()` axes cropped or zero-padded to `lengths`.
fn fit(x: &Tensor, lengths: &[usize], what: &str) -> Result<Tensor> {
    let have = trailing(x, lengths.len(), what)?;
    if have == lengths {
        return Ok(x.clone());
    }
    let r = x.rank();
    let first = r - lengths.len();
    let mut begin = vec![0usize; r];
    let mut size = vec![-1i64; r];
    let mut pads = vec![(0usize, 0usize); r];
    for (k, (&h, &want)) in have.iter().zip(lengths).enumerate() {
        if want < h {
            size[first + k] = want as i64;
        } else {
            pads[first + k].1 = want - h;
        }
        begin[first + k] = 0;
    }
    let cropped = if size.iter().any(|&s| s >= 0) { mv::slice(x, &begin, &size)? } else { x.clone() };
    if pads.iter().any(|p| p.1 > 0) {
        mv::pad(&cropped, &pads, PadMode::Constant, 0.0)
    } else {
        Ok(cropped)
    }
}

fn rfftn(x: &Tensor, rank: usize, lengths: Option<&[usize]>) -> Result<Tensor> {
    let x = match lengths {
        Some(l) => fit(x, l, "rfft")?,
        None => x.clone(),
    };
    apply1(Op::Fft { f: FftOp::Rfft { rank: rank as u8 } }, &[&x])
}

fn irfftn(x: &Tensor, rank: usize, lengths: Option<&[usize]>) -> Result<Tensor> {
    let have = trailing(x, rank, "irfft")?;
    let lengths: Vec<usize> = match lengths {
        Some(l) => l.to_vec(),
        None => {
            let mut l = have.clone();
            let m = l[rank - 1];
            l[rank - 1] = 2 * m.saturating_sub(1);
            l
        }
    };
    let n = lengths[rank - 1];
    if n == 0 {
        bail!(invalid, "irfft needs an output length of at least 1 (give fft_length for a single frequency)");
    }
    let mut spectrum = lengths.clone();
    spectrum[rank - 1] = n / 2 + 1;
    let x = fit(x, &spectrum, "irfft")?;
    apply1(Op::Fft { f: FftOp::Irfft { rank: rank as u8, n } }, &[&x])
}

/// The gradient of a transform: the adjoint transform of `g`.
pub(crate) fn fft_grad(f: FftOp, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let rank = f.rank();
    let points = |t: &Tensor| -> Result<f64> { Ok(trailing(t, rank, f.type_name())?.iter().product::<usize>() as f64) };
    let forward = |t: &Tensor| apply1(Op::Fft { f: FftOp::Fft { rank: rank as u8 } }, &[t]);
    let inverse = |t: &Tensor| apply1(Op::Fft { f: FftOp::Ifft { rank: rank as u8 } }, &[t]);
    match f {
        // y = F x gives x̄ = Fᴴ ȳ = N ifft(ȳ); y = F⁻¹x = Fᴴx / N gives x̄ = F ȳ / N.
        FftOp::Fft { .. } => scale(&inverse(g)?, points(x)?),
        FftOp::Ifft { .. } => scale(&forward(g)?, 1.0 / points(x)?),
        FftOp::Rfft { .. } => {
            // The half spectrum of a real signal: x̄ = Re(N ifft(ȳ padded with
            // zeros to the full length)).
            let full = trailing(x, rank, "rfft")?;
            let padded = fit(g, &full, "rfft")?;
            crate::ops::elementwise::mul(&real(&inverse(&padded)?)?, points(x)?)
        }
        FftOp::Irfft { n, .. } => {
            // Each frequency but 0 and (even n) n/2 stands for itself and
            // its conjugate: ȳ = rfft(x̄) w / N with w = 2 there, else 1.
            let m = n / 2 + 1;
            let weights: Vec<f64> =
                (0..m).map(|k| if k == 0 || (n % 2 == 0 && k == n / 2) { 1.0 } else { 2.0 }).collect();
            let part = x.dtype().complex_part().ok_or_else(|| Error::dtype("irfft gradient of a real input"))?;
            let w = crate::ops::elementwise::cast(
                &creation::constant(Ctx::of(g), Tensor::from_vec(weights, vec![m])?)?,
                part,
            )?;
            let gy = apply1(Op::Fft { f: FftOp::Rfft { rank: rank as u8 } }, &[g])?;
            let total: usize = trailing(g, rank, "irfft")?.iter().product();
            scale_by(&gy, &crate::ops::elementwise::mul(&w, 1.0 / total as f64)?)
        }
    }
}

/// The sample frequencies of an `n`-point DFT with sample spacing `d`:
/// `[0, 1, …, ⌈n/2⌉ - 1, -⌊n/2⌋, …, -1] / (d n)` (NumPy's `fftfreq`).
#[track_caller]
pub fn fftfreq<'a>(ctx: impl Into<Ctx<'a>>, n: usize, d: f64, dtype: DType) -> Result<Tensor> {
    let f: Vec<f64> =
        (0..n).map(|k| if k < n.div_ceil(2) { k as f64 } else { k as f64 - n as f64 } / (d * n as f64)).collect();
    frequencies(ctx.into(), f, dtype)
}

/// The non-negative frequencies of [`rfft`] of `n` points:
/// `[0, 1, …, ⌊n/2⌋] / (d n)` (NumPy's `rfftfreq`).
#[track_caller]
pub fn rfftfreq<'a>(ctx: impl Into<Ctx<'a>>, n: usize, d: f64, dtype: DType) -> Result<Tensor> {
    let f: Vec<f64> = (0..n / 2 + 1).map(|k| k as f64 / (d * n as f64)).collect();
    frequencies(ctx.into(), f, dtype)
}

fn frequencies(ctx: Ctx<'_>, f: Vec<f64>, dtype: DType) -> Result<Tensor> {
    if !dtype.is_float() {
        bail!(dtype, "frequencies are floating point, not {dtype}");
    }
    let n = f.len();
    crate::ops::elementwise::cast(&creation::constant(ctx, Tensor::from_vec(f, vec![n])?)?, dtype)
}

/// Move the zero frequency to the middle of `axes` (all axes when empty),
/// as NumPy's `fftshift`.
#[track_caller]
pub fn fftshift(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    shift(x, axes, false)
}

/// The inverse of [`fftshift`] (they differ for odd lengths).
#[track_caller]
pub fn ifftshift(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    shift(x, axes, true)
}

fn shift(x: &Tensor, axes: &[i64], inverse: bool) -> Result<Tensor> {
    let all: Vec<i64> = (0..x.rank() as i64).collect();
    let axes = if axes.is_empty() { &all[..] } else { axes };
    let r = x.rank() as i64;
    let mut shifts = Vec::with_capacity(axes.len());
    for &a in axes {
        let k = if a < 0 { a + r } else { a };
        if !(0..r).contains(&k) {
            return checked(
                Err(Error::invalid(format!("axis {a} is out of range for shape {}", x.shape()))),
                "FftShift",
                &[x],
            );
        }
        let n = x.shape()[k as usize];
        if n == UNKNOWN {
            bail!(shape, "fftshift needs known lengths along its axes, got shape {}", x.shape());
        }
        let n = n as i64;
        shifts.push(if inverse { -(n / 2) } else { n / 2 });
    }
    grid::roll(x, &shifts, axes)
}
