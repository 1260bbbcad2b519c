//! Convolutions and pooling (`tf.nn.convolution`, `conv2d`, `max_pool`,
//! ...), their gradients, and the options they share.
//!
//! The ops are channels-last; channels-first input (`NCHW`) is transposed
//! to it and the result back. f16 and bf16 run in f32 and round once at the
//! end, as TensorFlow's CPU kernels accumulate in f32.

use super::{apply1, checked, elementwise as ew, movement as mv, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
pub use crate::op::window::Padding;
use crate::op::window::{ConvSpec, PoolKind, PoolSpec, WindowOp};
use crate::tensor::shape::UNKNOWN;
use crate::tensor::DType;

/// Options of a convolution: per-axis strides and dilations (empty: all 1;
/// one value: the same on every spatial axis), padding, groups and layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvOptions {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
    pub groups: usize,
    /// Input and output are `[batch, channels, spatial...]` (`NCHW`).
    pub channels_first: bool,
}

impl Default for ConvOptions {
    fn default() -> ConvOptions {
        ConvOptions { strides: vec![], dilations: vec![], padding: Padding::Valid, groups: 1, channels_first: false }
    }
}

impl ConvOptions {
    /// Unit strides, no dilation, `padding`, one group, channels last.
    pub fn new(padding: Padding) -> ConvOptions {
        ConvOptions { padding, ..ConvOptions::default() }
    }
    pub fn strides(mut self, strides: &[usize]) -> ConvOptions {
        self.strides = strides.to_vec();
        self
    }
    pub fn dilations(mut self, dilations: &[usize]) -> ConvOptions {
        self.dilations = dilations.to_vec();
        self
    }
    pub fn groups(mut self, groups: usize) -> ConvOptions {
        self.groups = groups;
        self
    }
    pub fn channels_first(mut self, yes: bool) -> ConvOptions {
        self.channels_first = yes;
        self
    }
}

/// `values` spread to `r` axes: empty gives ones, one value repeats.
fn per_axis(what: &str, values: &[usize], r: usize) -> Result<Vec<usize>> {
    match values.len() {
        0 => Ok(vec![1; r]),
        1 => Ok(vec![values[0]; r]),
        n if n == r => Ok(values.to_vec()),
        n => bail!(invalid, "{what}: expected 1 or {r} values for {r} spatial dimensions, got {n} ({values:?})"),
    }
}

/// Spatial rank of a `[batch, spatial..., channels]` tensor.
fn spatial_rank(what: &str, x: &Tensor) -> Result<usize> {
    let rank = x.rank();
    if !(3..=5).contains(&rank) {
        bail!(shape, "{what}: expected input of rank 3 to 5 ([batch, spatial..., channels]), got {}", x.shape());
    }
    Ok(rank - 2)
}

/// `[batch, channels, spatial...]` → `[batch, spatial..., channels]`, and back.
fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    let mut perm = vec![0];
    perm.extend(2..r);
    perm.push(1);
    mv::transpose(x, &perm)
}

fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    let mut perm = vec![0, r - 1];
    perm.extend(1..r - 1);
    mv::transpose(x, &perm)
}

/// Run `f` on `x` channels-last and in f32 or f64 (f16/bf16 in f32), giving
/// the result back in `x`'s dtype and layout.
fn in_kernel_form(
    x: &Tensor,
    others: &[&Tensor],
    channels_first: bool,
    f: impl FnOnce(&Tensor, &[Tensor]) -> Result<Tensor>,
) -> Result<Tensor> {
    let dtype = x.dtype();
    for o in others {
        if o.dtype() != dtype {
            bail!(dtype, "expected one dtype, got {} and {}", dtype, o.dtype());
        }
    }
    let half = matches!(dtype, DType::F16 | DType::BF16);
    let widen = |t: &Tensor| if half { ew::cast(t, DType::F32) } else { Ok(t.clone()) };
    let mut xk = widen(x)?;
    if channels_first {
        xk = to_channels_last(&xk)?;
    }
    let others: Vec<Tensor> = others.iter().map(|t| widen(t)).collect::<Result<_>>()?;
    let mut y = f(&xk, &others)?;
    if channels_first {
        y = to_channels_first(&y)?;
    }
    if half {
        y = ew::cast(&y, dtype)?;
    }
    Ok(y)
}

fn conv_spec(what: &str, r: usize, opts: &ConvOptions) -> Result<ConvSpec> {
    Ok(ConvSpec {
        strides: per_axis(&format!("{what} strides"), &opts.strides, r)?,
        dilations: per_axis(&format!("{what} dilations"), &opts.dilations, r)?,
        padding: opts.padding.clone(),
        groups: opts.groups,
    })
}

/// N-D convolution (`tf.nn.convolution`): `x` `[batch, spatial..., in]`
/// (1 to 3 spatial axes), `filters` `[k..., in / groups, out]`; the result
/// is `[batch, out spatial..., out]`. Like TensorFlow it is a
/// cross-correlation (the filter is not flipped).
#[track_caller]
pub fn convolution(x: &Tensor, filters: &Tensor, opts: &ConvOptions) -> Result<Tensor> {
    let name = "Conv";
    checked(
        (|| {
            let r = spatial_rank(name, x)?;
            let spec = conv_spec(name, r, opts)?;
            in_kernel_form(x, &[filters], opts.channels_first, |x, w| {
                apply1(Op::Window { f: Box::new(WindowOp::Conv { spec }) }, &[x, &w[0]])
            })
        })(),
        if x.rank() == 5 { "Conv3D" } else { "Conv2D" },
        &[x, filters],
    )
}

/// 1-D convolution: `x` `[batch, width, in]`, `filters` `[k, in, out]`.
#[track_caller]
pub fn conv1d(x: &Tensor, filters: &Tensor, stride: usize, padding: Padding) -> Result<Tensor> {
    rank_checked(x, 3, "conv1d", || convolution(x, filters, &ConvOptions::new(padding).strides(&[stride])))
}

/// 2-D convolution (`tf.nn.conv2d`): `x` `[batch, h, w, in]`, `filters`
/// `[kh, kw, in, out]`.
#[track_caller]
pub fn conv2d(x: &Tensor, filters: &Tensor, strides: &[usize], padding: Padding) -> Result<Tensor> {
    rank_checked(x, 4, "conv2d", || convolution(x, filters, &ConvOptions::new(padding).strides(strides)))
}

/// 3-D convolution: `x` `[batch, d, h, w, in]`, `filters` `[kd, kh, kw, in, out]`.
#[track_caller]
pub fn conv3d(x: &Tensor, filters: &Tensor, strides: &[usize], padding: Padding) -> Result<Tensor> {
    rank_checked(x, 5, "conv3d", || convolution(x, filters, &ConvOptions::new(padding).strides(strides)))
}

#[track_caller]
fn rank_checked(x: &Tensor, rank: usize, what: &str, f: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    if x.rank() != rank {
        return checked(
            Err(crate::error::Error::shape(format!("{what} expects input of rank {rank}, got {}", x.shape()))),
            what,
            &[x],
        );
    }
    f()
}

/// Depthwise 2-D convolution (`tf.nn.depthwise_conv2d`): `filter`
/// `[kh, kw, in, multiplier]`; output channel `c · multiplier + m` is input
/// channel `c` convolved with `filter[.., c, m]`.
#[track_caller]
pub fn depthwise_conv2d(x: &Tensor, filter: &Tensor, strides: &[usize], padding: Padding) -> Result<Tensor> {
    depthwise_with(x, filter, &ConvOptions::new(padding).strides(strides))
}

/// [`depthwise_conv2d`] with dilations and layout from `opts` (its
/// `groups` is ignored: each channel is its own group).
#[track_caller]
pub fn depthwise_with(x: &Tensor, filter: &Tensor, opts: &ConvOptions) -> Result<Tensor> {
    let fs = filter.shape();
    let channels = if opts.channels_first { x.shape().dim(1) } else { x.shape().dim(x.rank().saturating_sub(1)) };
    let ok = fs.rank() == 4 && fs.is_fully_known() && channels == fs.dim(2);
    if !ok {
        return checked(
            Err(crate::error::Error::shape(format!(
                "depthwise_conv2d: expected a filter [kh, kw, in_channels, multiplier] matching the input's channels, got {} for input {}",
                fs,
                x.shape()
            ))),
            "DepthwiseConv2dNative",
            &[x, filter],
        );
    }
    let (c, m) = (fs[2], fs[3]);
    let w = mv::reshape(filter, &[fs[0] as i64, fs[1] as i64, 1, (c * m) as i64])?;
    convolution(x, &w, &ConvOptions { groups: c, ..opts.clone() })
}

/// Separable 2-D convolution (`tf.nn.separable_conv2d`): a depthwise
/// convolution, then a 1×1 `pointwise` `[1, 1, in · multiplier, out]`.
#[track_caller]
pub fn separable_conv2d(
    x: &Tensor,
    depthwise: &Tensor,
    pointwise: &Tensor,
    strides: &[usize],
    padding: Padding,
) -> Result<Tensor> {
    let d = depthwise_conv2d(x, depthwise, strides, padding)?;
    convolution(&d, pointwise, &ConvOptions::new(Padding::Valid))
}

/// The transposed convolution (`tf.nn.conv_transpose`, the gradient of
/// [`convolution`] with respect to its input): `x` `[batch, spatial...,
/// in]`, `filters` `[k..., out, in]`, and the output's spatial size
/// `output_spatial` (needed: with strides > 1 several sizes convolve to
/// `x`'s).
#[track_caller]
pub fn conv_transpose(x: &Tensor, filters: &Tensor, output_spatial: &[usize], opts: &ConvOptions) -> Result<Tensor> {
    checked(
        (|| {
            let r = spatial_rank("conv_transpose", x)?;
            if output_spatial.len() != r {
                bail!(invalid, "conv_transpose: expected {r} output sizes, got {output_spatial:?}");
            }
            let spec = conv_spec("conv_transpose", r, opts)?;
            let input_spatial = output_spatial.to_vec();
            in_kernel_form(x, &[filters], opts.channels_first, |x, w| {
                apply1(Op::Window { f: Box::new(WindowOp::ConvBackpropInput { spec, input_spatial }) }, &[x, &w[0]])
            })
        })(),
        if x.rank() == 5 { "Conv3DBackpropInputV2" } else { "Conv2DBackpropInput" },
        &[x, filters],
    )
}

/// 2-D transposed convolution (`tf.nn.conv2d_transpose`) with `output_shape`
/// `[batch, h, w, out]` (only `h` and `w` are read).
#[track_caller]
pub fn conv2d_transpose(
    x: &Tensor,
    filters: &Tensor,
    output_shape: &[usize],
    strides: &[usize],
    padding: Padding,
) -> Result<Tensor> {
    transpose_of_rank(2, x, filters, output_shape, ConvOptions::new(padding).strides(strides))
}

/// 3-D transposed convolution with `output_shape` `[batch, d, h, w, out]`.
#[track_caller]
pub fn conv3d_transpose(
    x: &Tensor,
    filters: &Tensor,
    output_shape: &[usize],
    strides: &[usize],
    padding: Padding,
) -> Result<Tensor> {
    transpose_of_rank(3, x, filters, output_shape, ConvOptions::new(padding).strides(strides))
}

/// [`conv_transpose`] of `r` spatial axes, the sizes read from a full
/// `[batch, spatial..., channels]` output shape.
#[track_caller]
fn transpose_of_rank(
    r: usize,
    x: &Tensor,
    filters: &Tensor,
    output_shape: &[usize],
    opts: ConvOptions,
) -> Result<Tensor> {
    let spatial = if output_shape.len() == r + 2 { &output_shape[1..=r] } else { output_shape };
    rank_checked(x, r + 2, &format!("conv{r}d_transpose"), || conv_transpose(x, filters, spatial, &opts))
}

/// Options of a pooling window: its size, strides (empty: the window's
/// size, as Keras), padding and layout.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolOptions {
    pub window: Vec<usize>,
    pub strides: Vec<usize>,
    pub padding: Padding,
    pub channels_first: bool,
}

impl PoolOptions {
    /// A window of `window` (one value: on every axis), strides equal to it.
    pub fn new(window: &[usize], padding: Padding) -> PoolOptions {
        PoolOptions { window: window.to_vec(), strides: vec![], padding, channels_first: false }
    }
    pub fn strides(mut self, strides: &[usize]) -> PoolOptions {
        self.strides = strides.to_vec();
        self
    }
    pub fn channels_first(mut self, yes: bool) -> PoolOptions {
        self.channels_first = yes;
        self
    }
}

#[track_caller]
fn pool(x: &Tensor, f: PoolKind, opts: &PoolOptions) -> Result<Tensor> {
    let name = match f {
        PoolKind::Max => "MaxPool",
        PoolKind::Avg => "AvgPool",
    };
    checked(
        (|| {
            let r = spatial_rank(name, x)?;
            let window = per_axis(&format!("{name} window"), &opts.window, r)?;
            let strides = if opts.strides.is_empty() {
                window.clone()
            } else {
                per_axis(&format!("{name} strides"), &opts.strides, r)?
            };
            let spec = PoolSpec { window, strides, padding: opts.padding.clone() };
            in_kernel_form(x, &[], opts.channels_first, |x, _| {
                apply1(Op::Window { f: Box::new(WindowOp::Pool { f, spec }) }, &[x])
            })
        })(),
        name,
        &[x],
    )
}

/// Max pooling over 1 to 3 spatial axes (`tf.nn.max_pool`). Its gradient
/// goes to each window's first largest element; NaN never wins a window
/// that holds a number.
#[track_caller]
pub fn max_pool(x: &Tensor, opts: &PoolOptions) -> Result<Tensor> {
    pool(x, PoolKind::Max, opts)
}

/// Average pooling over 1 to 3 spatial axes (`tf.nn.avg_pool`); with `SAME`
/// padding a window averages only the elements inside the input.
#[track_caller]
pub fn avg_pool(x: &Tensor, opts: &PoolOptions) -> Result<Tensor> {
    pool(x, PoolKind::Avg, opts)
}

/// `tf.nn.max_pool2d`: `x` `[batch, h, w, channels]`.
#[track_caller]
pub fn max_pool2d(x: &Tensor, window: &[usize], strides: &[usize], padding: Padding) -> Result<Tensor> {
    rank_checked(x, 4, "max_pool2d", || max_pool(x, &PoolOptions::new(window, padding).strides(strides)))
}

/// `tf.nn.avg_pool2d`: `x` `[batch, h, w, channels]`.
#[track_caller]
pub fn avg_pool2d(x: &Tensor, window: &[usize], strides: &[usize], padding: Padding) -> Result<Tensor> {
    rank_checked(x, 4, "avg_pool2d", || avg_pool(x, &PoolOptions::new(window, padding).strides(strides)))
}

/// The spatial sizes of a channels-last tensor, which must be known.
fn spatial_of(t: &Tensor) -> Result<Vec<usize>> {
    let s = t.shape();
    let dims = s.dims()[1..s.rank() - 1].to_vec();
    if dims.contains(&UNKNOWN) {
        bail!(shape, "the spatial dimensions of {s} must be known to differentiate a convolution");
    }
    Ok(dims)
}

/// Gradients of the window ops with respect to each input. The
/// convolution's three ops are linear in each input, so each one's gradient
/// is another of the three; pooling's gradients are the `PoolGrad` ops.
pub(crate) fn window_grad(f: &WindowOp, inputs: &[Tensor], g: &Tensor, wants: &[bool]) -> Result<Vec<Option<Tensor>>> {
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    let window = |f: WindowOp, xs: &[&Tensor]| apply1(Op::Window { f: Box::new(f) }, xs);
    let (a, b) = (&inputs[0], inputs.get(1));
    let b = || b.ok_or_else(|| crate::error::Error::graph("internal: a window gradient lost its second input"));
    // The three convolution ops, for the spec of the one being differentiated.
    let conv = |spec: &ConvSpec, x: &Tensor, w: &Tensor| window(WindowOp::Conv { spec: spec.clone() }, &[x, w]);
    // The input gradient, shaped like `x`.
    let input = |spec: &ConvSpec, dy: &Tensor, w: &Tensor, x: &Tensor| {
        let input_spatial = spatial_of(x)?;
        window(WindowOp::ConvBackpropInput { spec: spec.clone(), input_spatial }, &[dy, w])
    };
    // The filter gradient, shaped like `w`.
    let filter = |spec: &ConvSpec, x: &Tensor, dy: &Tensor, w: &Tensor| {
        let window_size = w.shape().dims()[..w.rank() - 2].to_vec();
        window(WindowOp::ConvBackpropFilter { spec: spec.clone(), window: window_size }, &[x, dy])
    };
    let pair = |first: Option<Result<Tensor>>, second: Option<Result<Tensor>>| -> Result<Vec<Option<Tensor>>> {
        Ok(vec![first.transpose()?, second.transpose()?])
    };
    match f {
        WindowOp::Conv { spec } => {
            let w = b()?;
            pair(want(0).then(|| input(spec, g, w, a)), want(1).then(|| filter(spec, a, g, w)))
        }
        // y = Bi(dy, w): dL/d(dy) = conv(g, w), dL/dw = Bf(g, dy).
        WindowOp::ConvBackpropInput { spec, .. } => {
            let w = b()?;
            pair(want(0).then(|| conv(spec, g, w)), want(1).then(|| filter(spec, g, a, w)))
        }
        // y = Bf(x, dy): dL/dx = Bi(dy, g), dL/d(dy) = conv(x, g).
        WindowOp::ConvBackpropFilter { spec, .. } => {
            let dy = b()?;
            pair(want(0).then(|| input(spec, dy, g, a)), want(1).then(|| conv(spec, a, g)))
        }
        WindowOp::Pool { f, spec } => {
            Ok(vec![Some(window(WindowOp::PoolGrad { f: *f, spec: spec.clone() }, &[a, g])?)])
        }
        // The pooling gradients are piecewise constant in x (zero almost
        // everywhere) and linear in dy.
        WindowOp::PoolGrad { f: PoolKind::Max, spec } => {
            pair(None, want(1).then(|| window(WindowOp::MaxPoolGradGrad { spec: spec.clone() }, &[a, g])))
        }
        WindowOp::PoolGrad { f: PoolKind::Avg, spec } => {
            pair(None, want(1).then(|| window(WindowOp::Pool { f: PoolKind::Avg, spec: spec.clone() }, &[g])))
        }
        WindowOp::MaxPoolGradGrad { spec } => {
            pair(None, want(1).then(|| window(WindowOp::PoolGrad { f: PoolKind::Max, spec: spec.clone() }, &[a, g])))
        }
        WindowOp::FusedConv { .. } => Err(crate::error::Error::unimplemented(
            "fused ops have no gradient: differentiate the graph before optimizing",
        )),
    }
}
