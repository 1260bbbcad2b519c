//! Sliding-window ops: convolutions and pooling over 1 to 3 spatial
//! dimensions, and their gradients. Tensors are channels-last
//! (`[batch, spatial..., channels]`, TensorFlow's NHWC); the public
//! functions transpose channels-first input to it. [`Geometry`] is the one
//! place output sizes and padding are worked out, for shape inference, the
//! CPU kernels and the decompositions alike.

use super::{Meta, Metas};
use crate::error::{bail, Result};
use crate::tensor::shape::UNKNOWN;
use crate::tensor::{DType, Shape};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

/// How a window treats the borders (TensorFlow's `padding`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Padding {
    /// No padding: windows lie inside the input.
    Valid,
    /// Output size `ceil(input / stride)`, the padding split with the odd
    /// element after (TensorFlow's asymmetric `SAME`).
    Same,
    /// `(before, after)` per spatial dimension.
    Explicit { pads: Vec<(usize, usize)> },
}

/// A convolution's attributes; the window comes from the filter's shape
/// `[k..., in_channels / groups, out_channels]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvSpec {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
    /// Input channels and output channels are each cut into this many
    /// groups; group `j` of the output sees only group `j` of the input.
    pub groups: usize,
}

/// A pooling window's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolSpec {
    pub window: Vec<usize>,
    pub strides: Vec<usize>,
    pub padding: Padding,
}

/// Which reduction a pooling window does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// The largest element (padding never wins).
    Max,
    /// The mean of the elements inside the input (padding is not counted,
    /// as in TensorFlow).
    Avg,
}

/// A sliding-window op (inputs in brackets).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowOp {
    /// `[x, filter]`: the cross-correlation TensorFlow calls convolution.
    Conv { spec: ConvSpec },
    /// `[dy, filter]`: the gradient of `Conv` with respect to `x`, whose
    /// spatial size is `input_spatial` (strides > 1 make it ambiguous from
    /// `dy`); also the transposed convolution.
    ConvBackpropInput { spec: ConvSpec, input_spatial: Vec<usize> },
    /// `[x, dy]`: the gradient of `Conv` with respect to a filter of
    /// spatial size `window`.
    ConvBackpropFilter { spec: ConvSpec, window: Vec<usize> },
    /// `[x]`: max or average pooling per channel.
    Pool { f: PoolKind, spec: PoolSpec },
    /// `[x, dy]`: the gradient of `Pool` with respect to `x`. Max pooling
    /// sends each window's gradient to its first largest element.
    PoolGrad { f: PoolKind, spec: PoolSpec },
    /// `[x, g]`: the gradient of `PoolGrad { Max }` with respect to `dy`:
    /// `g` read at each window's first largest element.
    MaxPoolGradGrad { spec: PoolSpec },
    /// `[x, filter, bias]`: `activation(Conv(x, filter) + bias)` in one
    /// pass, f32 only. Made by plan optimization (after gradients are
    /// built), never by the public ops.
    FusedConv { spec: ConvSpec, activation: Option<super::elementwise::UnaryOp> },
}

/// Output size and padding before, per spatial dimension, of a window of
/// `k` taps `dilation` apart moved `stride` at a time.
fn out_size(
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    padding: &Padding,
    dim: usize,
) -> Result<(usize, usize)> {
    // Checked: sizes from a deserialized graph may be anything, and the
    // kernels index with these sums.
    let too_large =
        || crate::error::Error::shape(format!("the window along spatial dimension {dim} is too large to index"));
    let extent = (k - 1).checked_mul(dilation).and_then(|e| e.checked_add(1)).ok_or_else(too_large)?;
    Ok(match padding {
        Padding::Valid => {
            if input < extent {
                bail!(shape, "the window spans {extent} elements along spatial dimension {dim}, more than the input's {input} (VALID padding)");
            }
            ((input - extent) / stride + 1, 0)
        }
        Padding::Same => {
            let out = input.div_ceil(stride);
            let reach =
                (out.max(1) - 1).checked_mul(stride).and_then(|r| r.checked_add(extent)).ok_or_else(too_large)?;
            let total = reach.saturating_sub(input);
            (out, total / 2)
        }
        Padding::Explicit { pads } => {
            let (lo, hi) = pads[dim];
            let padded = input.checked_add(lo).and_then(|p| p.checked_add(hi)).ok_or_else(too_large)?;
            if padded < extent {
                bail!(shape, "the window spans {extent} elements along spatial dimension {dim}, more than the padded input's {padded}");
            }
            ((padded - extent) / stride + 1, lo)
        }
    })
}

/// Where every window of an op lies: sizes, strides, dilations and the
/// padding before each spatial dimension, with batch and channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub window: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_before: Vec<usize>,
    pub channels: usize,
}

impl Geometry {
    /// The geometry of a window over `input` (`[batch, spatial..., channels]`,
    /// known spatial sizes). `batch` may be [`UNKNOWN`].
    pub fn new(
        input: &Shape,
        window: &[usize],
        strides: &[usize],
        dilations: &[usize],
        padding: &Padding,
    ) -> Result<Geometry> {
        let r = window.len();
        if input.rank() != r + 2 {
            bail!(shape, "expected input of rank {} ([batch, {r} spatial, channels]), got {input}", r + 2);
        }
        check_lengths(r, strides, dilations, padding)?;
        if window.contains(&0) {
            bail!(shape, "window sizes must be positive, got {window:?}");
        }
        if window.iter().try_fold(1usize, |acc, &k| acc.checked_mul(k)).is_none() {
            bail!(shape, "the window {window:?} has more taps than can be counted");
        }
        let spatial = &input.dims()[1..=r];
        if spatial.contains(&UNKNOWN) {
            bail!(shape, "the spatial dimensions of {input} must be known when the op is built");
        }
        let mut output = Vec::with_capacity(r);
        let mut pad_before = Vec::with_capacity(r);
        for d in 0..r {
            let (o, p) = out_size(spatial[d], window[d], strides[d], dilations[d], padding, d)?;
            output.push(o);
            pad_before.push(p);
        }
        Ok(Geometry {
            batch: input[0],
            input: spatial.to_vec(),
            output,
            window: window.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            pad_before,
            channels: input[r + 1],
        })
    }

    /// Spatial rank.
    pub fn rank(&self) -> usize {
        self.window.len()
    }
    /// Window taps.
    pub fn taps(&self) -> usize {
        self.window.iter().product()
    }
    /// `[batch, output spatial..., channels]`.
    pub fn output_shape(&self, channels: usize) -> Shape {
        let mut d = vec![self.batch];
        d.extend(&self.output);
        d.push(channels);
        Shape::from(d)
    }
}

/// A [`Geometry`] lifted to three spatial dimensions (lower ranks lead
/// with sizes of 1 and no padding): the form the kernels index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry3 {
    pub n: usize,
    pub c: usize,
    pub input: [usize; 3],
    pub output: [usize; 3],
    pub window: [usize; 3],
    pub strides: [usize; 3],
    pub dilations: [usize; 3],
    pub pad: [usize; 3],
}

impl Geometry3 {
    pub fn new(g: &Geometry) -> Geometry3 {
        let lift = |v: &[usize], fill: usize| {
            let mut a = [fill; 3];
            a[3 - v.len()..].copy_from_slice(v);
            a
        };
        Geometry3 {
            n: g.batch,
            c: g.channels,
            input: lift(&g.input, 1),
            output: lift(&g.output, 1),
            window: lift(&g.window, 1),
            strides: lift(&g.strides, 1),
            dilations: lift(&g.dilations, 1),
            pad: lift(&g.pad_before, 0),
        }
    }
    /// Input positions per image.
    pub fn in_positions(&self) -> usize {
        self.input.iter().product()
    }
    /// Output positions per image.
    pub fn out_positions(&self) -> usize {
        self.output.iter().product()
    }
    /// Window taps.
    pub fn taps(&self) -> usize {
        self.window.iter().product()
    }
    /// True when every window is one input element at its own position.
    pub fn is_pointwise(&self) -> bool {
        self.taps() == 1 && self.strides == [1; 3] && self.pad == [0; 3] && self.input == self.output
    }
}

fn check_lengths(r: usize, strides: &[usize], dilations: &[usize], padding: &Padding) -> Result<()> {
    if !(1..=3).contains(&r) {
        bail!(shape, "windows have 1 to 3 spatial dimensions, got {r}");
    }
    if strides.len() != r || dilations.len() != r {
        bail!(shape, "expected {r} strides and dilations, got {strides:?} and {dilations:?}");
    }
    if strides.contains(&0) || dilations.contains(&0) {
        bail!(invalid, "strides and dilations must be positive, got {strides:?} and {dilations:?}");
    }
    if let Padding::Explicit { pads } = padding {
        if pads.len() != r {
            bail!(shape, "expected {r} (before, after) paddings, got {pads:?}");
        }
    }
    Ok(())
}

fn check_float(dtype: DType) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F64) {
        bail!(dtype, "expected f32 or f64, got {dtype}");
    }
    Ok(())
}

/// Checks a filter `[k..., in/groups, out]` against `channels` input
/// channels; gives the window sizes and the output channels.
pub(crate) fn filter_window(spec: &ConvSpec, filter: &Shape, channels: usize, r: usize) -> Result<(Vec<usize>, usize)> {
    if filter.rank() != r + 2 || !filter.is_fully_known() {
        bail!(
            shape,
            "expected a filter of known shape [{r} spatial, in_channels / groups, out_channels], got {filter}"
        );
    }
    let g = spec.groups;
    if g == 0 {
        bail!(invalid, "groups must be positive");
    }
    let (per_group, out) = (filter[r], filter[r + 1]);
    if channels != UNKNOWN && (!channels.is_multiple_of(g) || channels / g != per_group) {
        bail!(
            shape,
            "the input has {channels} channels, which in {g} group(s) does not match the filter's {per_group} per group (filter {filter})"
        );
    }
    if !out.is_multiple_of(g) {
        bail!(shape, "{out} output channels do not divide into {g} groups");
    }
    Ok((filter.dims()[..r].to_vec(), out))
}

impl ConvSpec {
    /// The geometry of this convolution of `x` by `filter`.
    pub fn geometry(&self, x: &Shape, filter: &Shape) -> Result<(Geometry, usize)> {
        let r = x.rank().saturating_sub(2);
        let (window, out) = filter_window(self, filter, x.dim(r + 1).unwrap_or(UNKNOWN), r)?;
        Ok((Geometry::new(x, &window, &self.strides, &self.dilations, &self.padding)?, out))
    }
}

impl PoolSpec {
    /// The geometry of this pooling of `x`. Explicit padding on either side
    /// must be smaller than the window (TensorFlow's rule), so no window
    /// over a non-empty input lies wholly in the padding.
    pub fn geometry(&self, x: &Shape) -> Result<Geometry> {
        let ones = vec![1; self.window.len()];
        let g = Geometry::new(x, &self.window, &self.strides, &ones, &self.padding)?;
        if let Padding::Explicit { pads } = &self.padding {
            for (d, (&(lo, hi), &k)) in pads.iter().zip(&self.window).enumerate() {
                if lo >= k || hi >= k {
                    bail!(
                        invalid,
                        "explicit padding ({lo}, {hi}) along spatial dimension {d} needs each side smaller than the window size {k}"
                    );
                }
            }
        }
        Ok(g)
    }
}

impl WindowOp {
    /// The op type as TensorFlow spells it.
    pub fn type_name(&self) -> &'static str {
        let three = |n: usize| n == 3;
        match self {
            WindowOp::Conv { spec } if three(spec.strides.len()) => "Conv3D",
            WindowOp::Conv { .. } => "Conv2D",
            WindowOp::ConvBackpropInput { spec, .. } if three(spec.strides.len()) => "Conv3DBackpropInputV2",
            WindowOp::ConvBackpropInput { .. } => "Conv2DBackpropInput",
            WindowOp::ConvBackpropFilter { spec, .. } if three(spec.strides.len()) => "Conv3DBackpropFilterV2",
            WindowOp::ConvBackpropFilter { .. } => "Conv2DBackpropFilter",
            WindowOp::Pool { f: PoolKind::Max, spec } if three(spec.window.len()) => "MaxPool3D",
            WindowOp::Pool { f: PoolKind::Max, .. } => "MaxPool",
            WindowOp::Pool { f: PoolKind::Avg, spec } if three(spec.window.len()) => "AvgPool3D",
            WindowOp::Pool { f: PoolKind::Avg, .. } => "AvgPool",
            WindowOp::PoolGrad { f: PoolKind::Max, spec } if three(spec.window.len()) => "MaxPool3DGrad",
            WindowOp::PoolGrad { f: PoolKind::Max, .. } => "MaxPoolGrad",
            WindowOp::PoolGrad { f: PoolKind::Avg, spec } if three(spec.window.len()) => "AvgPool3DGrad",
            WindowOp::PoolGrad { f: PoolKind::Avg, .. } => "AvgPoolGrad",
            WindowOp::MaxPoolGradGrad { spec } if three(spec.window.len()) => "MaxPool3DGradGrad",
            WindowOp::MaxPoolGradGrad { .. } => "MaxPoolGradGrad",
            WindowOp::FusedConv { spec, .. } if three(spec.strides.len()) => "_FusedConv3D",
            WindowOp::FusedConv { .. } => "_FusedConv2D",
        }
    }

    /// Number of inputs.
    pub fn arity(&self) -> usize {
        match self {
            WindowOp::Pool { .. } => 1,
            WindowOp::FusedConv { .. } => 3,
            _ => 2,
        }
    }

    /// Dtype and shape of the output.
    pub fn infer(&self, inputs: &[Meta]) -> Result<Metas> {
        let (a, b) = (&inputs[0], inputs.get(1));
        check_float(a.dtype)?;
        if let Some(b) = b {
            if b.dtype != a.dtype {
                bail!(dtype, "both inputs must have one dtype, got {} and {}", a.dtype, b.dtype);
            }
        }
        let meta = |s: Shape| -> Result<Metas> { Ok(smallvec![Meta::new(a.dtype, s)]) };
        let second = || b.map(|m| &m.shape).unwrap_or(&a.shape);
        match self {
            WindowOp::Conv { spec } => {
                let (g, out) = spec.geometry(&a.shape, second())?;
                meta(g.output_shape(out))
            }
            WindowOp::FusedConv { spec, .. } => {
                let (g, out) = spec.geometry(&a.shape, second())?;
                let bias = inputs.get(2).map(|m| (m.dtype, m.shape.clone()));
                if a.dtype != DType::F32 || bias != Some((DType::F32, Shape::new(&[out]))) {
                    bail!(dtype, "_FusedConv computes in f32 with a bias of [{out}], got {} and {bias:?}", a.dtype);
                }
                meta(g.output_shape(out))
            }
            WindowOp::ConvBackpropInput { spec, input_spatial } => {
                // a = dy [batch, out spatial..., out_channels], b = filter.
                let filter = second();
                let r = input_spatial.len();
                let (window, out) = filter_window(spec, filter, UNKNOWN, r)?;
                let Some(channels) = filter[r].checked_mul(spec.groups) else {
                    bail!(shape, "{} channels per group times {} groups overflows", filter[r], spec.groups);
                };
                let mut x = vec![a.shape.dim(0).unwrap_or(UNKNOWN)];
                x.extend(input_spatial);
                x.push(channels);
                let x = Shape::from(x);
                let g = Geometry::new(&x, &window, &spec.strides, &spec.dilations, &spec.padding)?;
                check_dy(&g.output_shape(out), &a.shape)?;
                meta(x)
            }
            WindowOp::ConvBackpropFilter { spec, window } => {
                // a = x, b = dy.
                let r = window.len();
                if spec.groups == 0 {
                    bail!(invalid, "groups must be positive");
                }
                let g = Geometry::new(&a.shape, window, &spec.strides, &spec.dilations, &spec.padding)?;
                let dy = second();
                let out = dy.dim(r + 1).unwrap_or(UNKNOWN);
                if out == UNKNOWN || g.channels == UNKNOWN {
                    bail!(shape, "the channels of x {} and dy {dy} must be known", a.shape);
                }
                if !g.channels.is_multiple_of(spec.groups) || !out.is_multiple_of(spec.groups) {
                    bail!(
                        shape,
                        "{} input and {out} output channels do not divide into {} groups",
                        g.channels,
                        spec.groups
                    );
                }
                check_dy(&g.output_shape(out), dy)?;
                let mut f = window.clone();
                f.push(g.channels / spec.groups);
                f.push(out);
                meta(Shape::from(f))
            }
            WindowOp::Pool { spec, .. } => {
                let g = spec.geometry(&a.shape)?;
                meta(g.output_shape(g.channels))
            }
            WindowOp::PoolGrad { spec, .. } | WindowOp::MaxPoolGradGrad { spec } => {
                let g = spec.geometry(&a.shape)?;
                let expected = g.output_shape(g.channels);
                if matches!(self, WindowOp::PoolGrad { .. }) {
                    check_dy(&expected, second())?;
                    meta(a.shape.clone())
                } else {
                    if !second().is_compatible_with(&a.shape) {
                        bail!(shape, "the gradient {} must be shaped like x {}", second(), a.shape);
                    }
                    meta(expected)
                }
            }
        }
    }
}

/// `dy` must have the shape the forward op gives.
fn check_dy(expected: &Shape, dy: &Shape) -> Result<()> {
    if !expected.is_compatible_with(dy) {
        bail!(shape, "the gradient has shape {dy}, but the op's output is {expected}");
    }
    Ok(())
}
