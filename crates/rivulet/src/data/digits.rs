//! The bundled handwritten-digits set.

use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::Shape;
use std::io::Read;

/// The 8x8 handwritten digits (UCI optical recognition set, as
/// scikit-learn's `load_digits`), split into training and test examples.
#[derive(Clone, Debug)]
pub struct Digits {
    /// `[1437, 64]` f32 pixels scaled to `[0, 1]`.
    pub train_x: Tensor,
    /// `[1437]` i32 labels 0..9.
    pub train_y: Tensor,
    /// `[360, 64]`.
    pub test_x: Tensor,
    /// `[360]`.
    pub test_y: Tensor,
}

const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Number of examples in the set.
pub const DIGITS_EXAMPLES: usize = 1797;
/// Examples in the test split (the rest train).
pub const DIGITS_TEST: usize = 360;

/// Parse the bundled CSV: 64 pixel values then the label per row.
fn parse_digits(text: &str) -> Result<(Vec<f32>, Vec<i32>)> {
    let mut pixels = Vec::with_capacity(DIGITS_EXAMPLES * 64);
    let mut labels = Vec::with_capacity(DIGITS_EXAMPLES);
    for (line_no, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            bail!(format, "digits line {}: {} fields, expected 65", line_no + 1, fields.len());
        }
        for f in &fields[..64] {
            let v: f32 =
                f.trim().parse().map_err(|_| Error::format(format!("digits line {}: bad pixel '{f}'", line_no + 1)))?;
            pixels.push(v / 16.0);
        }
        let label: i32 =
            fields[64].trim().parse().map_err(|_| Error::format(format!("digits line {}: bad label", line_no + 1)))?;
        labels.push(label);
    }
    if labels.len() != DIGITS_EXAMPLES {
        bail!(format, "digits: {} examples, expected {DIGITS_EXAMPLES}", labels.len());
    }
    Ok((pixels, labels))
}

/// The digits with a fixed split: the examples are permuted by a
/// Fisher-Yates shuffle driven by SplitMix64 from seed 0, then the first
/// 1,437 train and the last 360 test. The same on every machine.
pub fn load_digits() -> Result<Digits> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::format(format!("bundled digits data: {e}")))?;
    let (pixels, labels) = parse_digits(&text)?;
    let mut order: Vec<usize> = (0..DIGITS_EXAMPLES).collect();
    let mut state = 0u64;
    for i in (1..order.len()).rev() {
        state = crate::op::creation::splitmix64(state);
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let take = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
        let x: Vec<f32> = idx.iter().flat_map(|&i| pixels[i * 64..(i + 1) * 64].iter().copied()).collect();
        let y: Vec<i32> = idx.iter().map(|&i| labels[i]).collect();
        Ok((Tensor::from_vec(x, Shape::new(&[idx.len(), 64]))?, Tensor::from_vec(y, Shape::new(&[idx.len()]))?))
    };
    let cut = DIGITS_EXAMPLES - DIGITS_TEST;
    let (train_x, train_y) = take(&order[..cut])?;
    let (test_x, test_y) = take(&order[cut..])?;
    Ok(Digits { train_x, train_y, test_x, test_y })
}
