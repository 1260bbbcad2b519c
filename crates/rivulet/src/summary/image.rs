//! Image summaries: tensors to PNG files in `Summary.Image` messages.

use super::histogram::tensor_values;
use super::proto::summary::Image;
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::DType;

/// The images of a `[h, w, c]` or `[n, h, w, c]` tensor (`c` 1 to 4:
/// gray, gray + alpha, RGB, RGBA), PNG-encoded. `u8` pixels are taken as
/// they are; float pixels are in `[0, 1]` and become `v * 255.5`,
/// truncated and clamped to `[0, 255]` (NaN to 0), as
/// `tf.image.convert_image_dtype` does for `tf.summary.image`.
pub(crate) fn encode_images(tensor: &Tensor) -> Result<Vec<Image>> {
    let dims = tensor.shape().dims().to_vec();
    let (n, h, w, c) = match dims[..] {
        [h, w, c] => (1, h, w, c),
        [n, h, w, c] => (n, h, w, c),
        _ => bail!(shape, "an image summary needs a [h, w, c] or [n, h, w, c] tensor, got shape {}", tensor.shape()),
    };
    if !(1..=4).contains(&c) {
        bail!(shape, "an image needs 1 to 4 channels (gray, gray + alpha, RGB, RGBA), got {c}");
    }
    if n == 0 || h == 0 || w == 0 {
        bail!(shape, "an image summary needs at least one pixel in one image, got shape {}", tensor.shape());
    }
    let (Ok(height), Ok(width)) = (i32::try_from(h), i32::try_from(w)) else {
        bail!(shape, "an image of {h} x {w} pixels is too large for an image summary");
    };
    let pixels: Vec<u8> = match tensor.dtype() {
        DType::U8 => tensor.to_vec::<u8>()?,
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            tensor_values(tensor)?.into_iter().map(|v| (v * 255.5).clamp(0.0, 255.0) as u8).collect()
        }
        other => bail!(dtype, "an image summary takes u8 or float pixels, got {other}"),
    };
    let per_image = h * w * c;
    let color = match c {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    };
    pixels
        .chunks_exact(per_image)
        .map(|data| {
            let mut encoded = Vec::new();
            let mut encoder = png::Encoder::new(&mut encoded, width as u32, height as u32);
            encoder.set_color(color);
            encoder.set_depth(png::BitDepth::Eight);
            let png_error = |e: png::EncodingError| Error::invalid(format!("PNG encoding failed: {e}"));
            let mut writer = encoder.write_header().map_err(png_error)?;
            writer.write_image_data(data).map_err(png_error)?;
            writer.finish().map_err(png_error)?;
            Ok(Image { height, width, colorspace: c as i32, encoded_image_string: encoded })
        })
        .collect()
}
