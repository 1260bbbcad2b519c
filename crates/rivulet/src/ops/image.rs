//! Image ops on `[batch, height, width, channels]` tensors (`tf.image`):
//! resizing and patch extraction. Both are composed of gathers, slices and
//! elementwise arithmetic, so they run on every backend and differentiate
//! through those ops' gradients.

use super::{checked, creation, elementwise as ew, movement as mv, Ctx, PadMode, SliceItem};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::window::{Geometry, Padding};
use crate::tensor::storage::{check_request, try_vec_with_capacity};
use crate::tensor::DType;

/// How [`resize`] computes each output pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeMethod {
    /// The input pixel whose area holds the output pixel's centre.
    Nearest,
    /// Linear interpolation between the four nearest input pixels.
    #[default]
    Bilinear,
}

/// `tf.image.resize`: `images` `[batch, h, w, c]` (or `[h, w, c]`, of non-zero size) to
/// `size = [new_h, new_w]`, with TensorFlow 2's half-pixel centres.
///
/// As in TensorFlow, positions and weights are computed in f32, nearest
/// keeps the dtype, and bilinear returns f32, except that f64 images stay
/// f64 (TensorFlow computes those in f32 too).
#[track_caller]
pub fn resize(images: &Tensor, size: [usize; 2], method: ResizeMethod) -> Result<Tensor> {
    let r = images.rank();
    let valid =
        (r == 3 || r == 4) && images.shape().dims()[r - 3..r - 1].iter().all(|&d| d != crate::tensor::UNKNOWN && d > 0);
    // TensorFlow's sizes are int32; the index vectors below are that long.
    if !valid || size.contains(&0) || size.iter().any(|&s| s > i32::MAX as usize) {
        return checked(
            Err(crate::error::Error::shape(format!(
                "resize needs [batch, height, width, channels] or [height, width, channels] images with known height \
                 and width and a positive size, got {} to {size:?}",
                images.shape()
            ))),
            "Resize",
            &[images],
        );
    }
    checked(
        (|| {
            // The output must be one that can be allocated (its known part):
            // then the index lists, far shorter, can be too.
            let dims = images.shape().dims();
            let known = dims[..r - 3].iter().chain(&dims[r - 1..]).filter(|&&d| d != crate::tensor::UNKNOWN);
            let elements = known.chain(&size).try_fold(1usize, |acc, &d| acc.checked_mul(d));
            let mut y = match method {
                ResizeMethod::Nearest => images.clone(),
                ResizeMethod::Bilinear if matches!(images.dtype(), DType::F32 | DType::F64) => images.clone(),
                ResizeMethod::Bilinear => ew::cast(images, DType::F32)?,
            };
            check_request(elements.and_then(|e| e.checked_mul(y.dtype().size())).unwrap_or(usize::MAX))?;
            // Width first, then height: TensorFlow interpolates each row
            // pair along x, then between them along y.
            for (axis, out) in [(r - 2, size[1]), (r - 3, size[0])] {
                y = resize_axis(&y, axis, out, method)?;
            }
            Ok(y)
        })(),
        "Resize",
        &[images],
    )
}

/// Resample `x` along `axis` to `out` positions.
fn resize_axis(x: &Tensor, axis: usize, out: usize, method: ResizeMethod) -> Result<Tensor> {
    let input = x.shape()[axis];
    if input == out {
        return Ok(x.clone());
    }
    let ctx = Ctx::of(x);
    let index = |v: Vec<i32>| creation::constant(ctx, Tensor::from_vec(v, vec![out])?);
    let room = try_vec_with_capacity::<i32>;
    let scale = input as f32 / out as f32;
    let last = input as i64 - 1;
    match method {
        ResizeMethod::Nearest => {
            let mut idx = room(out)?;
            idx.extend((0..out).map(|o| (((o as f32 + 0.5) * scale).floor() as i64).clamp(0, last) as i32));
            mv::gather(x, &index(idx)?, axis as i64, 0)
        }
        ResizeMethod::Bilinear => {
            let (mut lo, mut hi) = (room(out)?, room(out)?);
            let mut weight = try_vec_with_capacity::<f32>(out)?;
            for o in 0..out {
                let at = (o as f32 + 0.5) * scale - 0.5;
                let floor = at.floor();
                lo.push((floor as i64).clamp(0, last) as i32);
                hi.push((at.ceil() as i64).clamp(0, last) as i32);
                weight.push(at - floor);
            }
            // The weights broadcast over the axes after `axis`.
            let mut wshape = vec![out];
            wshape.extend(std::iter::repeat_n(1, x.rank() - axis - 1));
            let weight = ew::cast(&creation::constant(ctx, Tensor::from_vec(weight, wshape)?)?, x.dtype())?;
            let a = mv::gather(x, &index(lo)?, axis as i64, 0)?;
            let b = mv::gather(x, &index(hi)?, axis as i64, 0)?;
            ew::add(&a, &ew::mul(&ew::sub(&b, &a)?, &weight)?)
        }
    }
}

/// The largest window [`extract_patches`] takes (256 × 256).
pub const MAX_PATCH_TAPS: usize = 1 << 16;

/// `tf.image.extract_patches`: every `sizes` window of `images`
/// `[batch, h, w, c]`, taken every `strides` pixels with taps `rates`
/// apart, flattened in (row, column, channel) order into the last axis:
/// `[batch, out_h, out_w, size_h·size_w·c]`. `SAME` padding pads with zeros.
#[track_caller]
pub fn extract_patches(
    images: &Tensor,
    sizes: [usize; 2],
    strides: [usize; 2],
    rates: [usize; 2],
    padding: Padding,
) -> Result<Tensor> {
    checked(
        (|| {
            if images.rank() != 4 {
                bail!(shape, "extract_patches needs [batch, height, width, channels] images, got {}", images.shape());
            }
            let g = Geometry::new(images.shape(), &sizes, &strides, &rates, &padding)?;
            if g.channels == crate::tensor::UNKNOWN {
                bail!(shape, "extract_patches needs the channel count known, got {}", images.shape());
            }
            // One slice per tap: a window larger than this is not what the composition is for.
            if g.output.contains(&0) {
                bail!(shape, "extract_patches of an image with an empty spatial axis: {}", images.shape());
            }
            if g.taps() > MAX_PATCH_TAPS {
                bail!(invalid, "extract_patches: a {sizes:?} window has {} taps, more than {MAX_PATCH_TAPS}", g.taps());
            }
            let pads: Vec<(usize, usize)> = (0..2)
                .map(|d| {
                    let reach = (g.output[d].saturating_sub(1)) * g.strides[d] + (g.window[d] - 1) * g.dilations[d] + 1;
                    (g.pad_before[d], (reach.saturating_sub(g.input[d] + g.pad_before[d])))
                })
                .collect();
            let padded = if pads.iter().any(|&(a, b)| a + b > 0) {
                mv::pad(images, &[(0, 0), pads[0], pads[1], (0, 0)], PadMode::Constant, 0.0)?
            } else {
                images.clone()
            };
            let mut taps = Vec::with_capacity(g.taps());
            for i in 0..g.window[0] {
                for j in 0..g.window[1] {
                    let along = |d: usize, k: usize| {
                        let start = (k * g.dilations[d]) as i64;
                        let stop = start + ((g.output[d] - 1) * g.strides[d]) as i64 + 1;
                        SliceItem::stepped(Some(start), Some(stop), g.strides[d] as i64)
                    };
                    taps.push(mv::strided_slice(&padded, &[SliceItem::ALL, along(0, i), along(1, j), SliceItem::ALL])?);
                }
            }
            let taps: Vec<&Tensor> = taps.iter().collect();
            let stacked = mv::stack(&taps, 3)?;
            let n = images.shape()[0];
            let batch = if n == crate::tensor::UNKNOWN { -1 } else { n as i64 };
            mv::reshape(&stacked, &[batch, g.output[0] as i64, g.output[1] as i64, (g.taps() * g.channels) as i64])
        })(),
        "ExtractImagePatches",
        &[images],
    )
}
