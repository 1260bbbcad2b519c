//! Convolution and pooling layers, as Keras's: `Conv1D/2D/3D`,
//! `DepthwiseConv2D`, `SeparableConv2D`, `Conv2DTranspose`, `MaxPooling*`, `AveragePooling*`, `GlobalAveragePooling*`,
//! `GlobalMaxPooling*` (the spatial rank is a const parameter, and the
//! Keras names are aliases).

use super::init::Initializer;
use super::layers::{make_variable, unique_name, Activation, Layer};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::ops::{self, ConvOptions, Padding, PoolOptions, Variable};
use crate::tensor::{Shape, UNKNOWN};
use std::sync::OnceLock;

/// Which convolution a [`Conv`] layer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvKind {
    /// `conv(x, kernel)`, kernel `[k..., in / groups, filters]`.
    Standard,
    /// Each input channel convolved with `multiplier` filters of its own:
    /// kernel `[k..., in, multiplier]`, `in · multiplier` outputs.
    Depthwise { multiplier: usize },
    /// A depthwise convolution, then a 1×1 one (`[1..., in · multiplier, filters]`).
    Separable { multiplier: usize },
    /// The transposed convolution, kernel `[k..., filters, in]`.
    Transpose,
}

/// `activation(conv(x, kernel) + bias)` over `R` spatial axes: Keras's
/// `Conv1D/2D/3D` ([`Conv::new`]), `DepthwiseConv2D` ([`Conv::depthwise`]),
/// `SeparableConv2D` ([`Conv::separable`]) and `Conv2DTranspose`
/// ([`Conv::transpose`]). Kernels are Glorot-uniform, the bias zeros.
pub struct Conv<const R: usize> {
    name: String,
    kind: ConvKind,
    filters: usize,
    kernel: [usize; R],
    options: ConvOptions,
    activation: Activation,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    /// The kernels (two for a separable convolution), then the bias.
    vars: OnceLock<(Vec<Variable>, Option<Variable>)>,
}

/// `keras.layers.Conv1D`.
pub type Conv1D = Conv<1>;
/// `keras.layers.Conv2D`.
pub type Conv2D = Conv<2>;
/// `keras.layers.Conv3D`.
pub type Conv3D = Conv<3>;
/// `keras.layers.DepthwiseConv2D`: made by [`Conv::depthwise`].
pub type DepthwiseConv2D = Conv<2>;
/// `keras.layers.SeparableConv2D`: made by [`Conv::separable`].
pub type SeparableConv2D = Conv<2>;
/// `keras.layers.Conv2DTranspose`: made by [`Conv::transpose`].
pub type Conv2DTranspose = Conv<2>;
/// `keras.layers.Conv3DTranspose`: made by [`Conv::transpose`].
pub type Conv3DTranspose = Conv<3>;

impl<const R: usize> Conv<R> {
    fn of(kind: ConvKind, stem: &str, filters: usize, kernel: [usize; R], activation: Activation) -> Conv<R> {
        Conv {
            name: unique_name(stem),
            kind,
            filters,
            kernel,
            options: ConvOptions::new(Padding::Valid),
            activation,
            use_bias: true,
            kernel_init: Initializer::GlorotUniform,
            bias_init: Initializer::Zeros,
            vars: OnceLock::new(),
        }
    }
    /// `filters` output channels, a `kernel` window, unit strides, `VALID`
    /// padding (Keras's defaults).
    pub fn new(filters: usize, kernel: [usize; R], activation: Activation) -> Conv<R> {
        Conv::of(ConvKind::Standard, &format!("conv{R}d"), filters, kernel, activation)
    }
    /// A depthwise convolution: `multiplier` filters per input channel.
    pub fn depthwise(kernel: [usize; R], multiplier: usize, activation: Activation) -> Conv<R> {
        Conv::of(ConvKind::Depthwise { multiplier }, &format!("depthwise_conv{R}d"), 0, kernel, activation)
    }
    /// A depthwise convolution (`multiplier` per channel), then a 1×1
    /// convolution to `filters` channels; strides, padding and dilation
    /// apply to the depthwise step.
    pub fn separable(filters: usize, kernel: [usize; R], multiplier: usize, activation: Activation) -> Conv<R> {
        Conv::of(ConvKind::Separable { multiplier }, &format!("separable_conv{R}d"), filters, kernel, activation)
    }
    /// The transposed convolution to `filters` channels: each spatial size
    /// grows to `in · stride` (`SAME`) or `in · stride + max(k' − stride, 0)`
    /// (`VALID`, `k'` the dilated kernel), as Keras's.
    pub fn transpose(filters: usize, kernel: [usize; R], activation: Activation) -> Conv<R> {
        Conv::of(ConvKind::Transpose, &format!("conv{R}d_transpose"), filters, kernel, activation)
    }
    pub fn padding(mut self, padding: Padding) -> Conv<R> {
        self.options.padding = padding;
        self
    }
    pub fn strides(mut self, strides: [usize; R]) -> Conv<R> {
        self.options.strides = strides.to_vec();
        self
    }
    pub fn dilation_rate(mut self, rate: [usize; R]) -> Conv<R> {
        self.options.dilations = rate.to_vec();
        self
    }
    pub fn groups(mut self, groups: usize) -> Conv<R> {
        self.options.groups = groups;
        self
    }
    /// Inputs `[batch, channels, spatial...]` (`data_format="channels_first"`).
    pub fn channels_first(mut self) -> Conv<R> {
        self.options.channels_first = true;
        self
    }
    pub fn without_bias(mut self) -> Conv<R> {
        self.use_bias = false;
        self
    }
    pub fn with_initializers(mut self, kernel: Initializer, bias: Initializer) -> Conv<R> {
        self.kernel_init = kernel;
        self.bias_init = bias;
        self
    }

    fn channel_axis(&self, x: &Tensor) -> usize {
        if self.options.channels_first {
            1
        } else {
            x.rank().saturating_sub(1)
        }
    }

    /// Output channels for `channels` input channels.
    fn out_channels(&self, channels: usize) -> usize {
        match self.kind {
            ConvKind::Depthwise { multiplier } => channels * multiplier,
            _ => self.filters,
        }
    }

    /// The kernels' shapes and names for `channels` input channels.
    fn kernel_shapes(&self, channels: usize) -> Vec<(&'static str, Vec<usize>)> {
        let with = |tail: [usize; 2]| self.kernel.iter().copied().chain(tail).collect::<Vec<usize>>();
        let groups = self.options.groups.max(1);
        match self.kind {
            ConvKind::Standard => vec![("kernel", with([channels / groups, self.filters]))],
            ConvKind::Depthwise { multiplier } => vec![("depthwise_kernel", with([channels, multiplier]))],
            ConvKind::Separable { multiplier } => vec![
                ("depthwise_kernel", with([channels, multiplier])),
                ("pointwise_kernel", [1; R].into_iter().chain([channels * multiplier, self.filters]).collect()),
            ],
            ConvKind::Transpose => vec![("kernel", with([self.filters, channels]))],
        }
    }

    fn ensure_built(&self, x: &Tensor) -> Result<&(Vec<Variable>, Option<Variable>)> {
        if let Some(v) = self.vars.get() {
            return Ok(v);
        }
        if x.rank() != R + 2 {
            bail!(
                shape,
                "{}: expected input of rank {} ([batch, {R} spatial, channels]), got {}",
                self.name,
                R + 2,
                x.shape()
            );
        }
        let channels = x.shape()[self.channel_axis(x)];
        let groups = self.options.groups.max(1);
        let grouped = self.kind == ConvKind::Standard;
        if channels == UNKNOWN
            || (grouped && (!channels.is_multiple_of(groups) || !self.filters.is_multiple_of(groups)))
        {
            bail!(
                shape,
                "{}: {} input channels and {} filters must be known and divide into {groups} groups",
                self.name,
                x.shape(),
                self.filters
            );
        }
        if let ConvKind::Depthwise { multiplier } | ConvKind::Separable { multiplier } = self.kind {
            if multiplier == 0 || channels.checked_mul(multiplier).is_none() {
                bail!(
                    invalid,
                    "{}: the depth multiplier must be positive and fit {channels} channels, got {multiplier}",
                    self.name
                );
            }
        }
        let mut kernels = Vec::new();
        for (what, shape) in self.kernel_shapes(channels) {
            let name = format!("{}/{what}", self.name);
            kernels.push(make_variable(x, &name, self.kernel_init, Shape::from(shape), x.dtype(), true)?);
        }
        let bias = if self.use_bias {
            let shape = Shape::new(&[self.out_channels(channels)]);
            Some(make_variable(x, &format!("{}/bias", self.name), self.bias_init, shape, x.dtype(), true)?)
        } else {
            None
        };
        let _ = self.vars.set((kernels, bias));
        self.vars.get().ok_or_else(|| Error::invalid("Conv: build failed"))
    }

    /// `x` convolved with the depthwise `kernel` `[k..., in, multiplier]`:
    /// one group per input channel.
    fn depthwise_conv(&self, x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        let ks = kernel.shape().dims();
        let mut dims: Vec<i64> = self.kernel.iter().map(|&k| k as i64).collect();
        dims.extend([1, (ks[R] * ks[R + 1]) as i64]);
        let groups = ks[R];
        ops::convolution(x, &ops::reshape(kernel, &dims)?, &ConvOptions { groups, ..self.options.clone() })
    }

    /// The transposed convolution's output spatial sizes for `x`.
    fn transpose_sizes(&self, x: &Tensor) -> Result<Vec<usize>> {
        let first = if self.options.channels_first { 2 } else { 1 };
        let spatial = &x.shape().dims()[first..first + R];
        if spatial.contains(&UNKNOWN) || self.kernel.contains(&0) {
            bail!(
                shape,
                "{}: the spatial sizes of {} and the kernel {:?} must be known and positive",
                self.name,
                x.shape(),
                self.kernel
            );
        }
        let at = |v: &[usize], d: usize| v.get(d).copied().unwrap_or(1);
        (0..R)
            .map(|d| {
                let (s, k) = (at(&self.options.strides, d), self.kernel[d]);
                let dilated = (k - 1).checked_mul(at(&self.options.dilations, d)).and_then(|v| v.checked_add(1));
                let size = match (&self.options.padding, dilated) {
                    (Padding::Same, Some(_)) => spatial[d].checked_mul(s),
                    (_, Some(kd)) => spatial[d].checked_mul(s).and_then(|v| v.checked_add(kd.saturating_sub(s))),
                    _ => None,
                };
                size.ok_or_else(|| Error::shape(format!("{}: the output of {} overflows", self.name, x.shape())))
            })
            .collect()
    }
}

impl<const R: usize> Layer for Conv<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        check_rank::<R>(&self.name, x)?;
        let (kernels, bias) = self.ensure_built(x)?;
        let mut y = match self.kind {
            ConvKind::Standard => ops::convolution(x, &kernels[0].read(), &self.options)?,
            ConvKind::Depthwise { .. } => self.depthwise_conv(x, &kernels[0].read())?,
            ConvKind::Separable { .. } => {
                let d = self.depthwise_conv(x, &kernels[0].read())?;
                let pointwise = ConvOptions { channels_first: self.options.channels_first, ..ConvOptions::default() };
                ops::convolution(&d, &kernels[1].read(), &pointwise)?
            }
            ConvKind::Transpose => {
                let sizes = self.transpose_sizes(x)?;
                ops::conv_transpose(x, &kernels[0].read(), &sizes, &self.options)?
            }
        };
        if let Some(b) = bias {
            let b = b.read();
            let b = if self.options.channels_first {
                let mut dims = vec![b.shape()[0] as i64];
                dims.extend([1; R]);
                ops::reshape(&b, &dims)?
            } else {
                b
            };
            y = ops::add(&y, &b)?;
        }
        self.activation.apply(&y)
    }
    fn variables(&self) -> Vec<Variable> {
        match self.vars.get() {
            Some((k, b)) => k.iter().cloned().chain(b.clone()).collect(),
            None => Vec::new(),
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        let d = format!("{R}D");
        match self.kind {
            ConvKind::Standard => format!("Conv{d}"),
            ConvKind::Depthwise { .. } => format!("DepthwiseConv{d}"),
            ConvKind::Separable { .. } => format!("SeparableConv{d}"),
            ConvKind::Transpose => format!("Conv{d}Transpose"),
        }
    }
    fn build(&self, x: &Tensor) -> Result<()> {
        self.ensure_built(x).map(drop)
    }
}

/// Max or average pooling over `R` spatial axes.
pub struct Pooling<const R: usize> {
    name: String,
    max: bool,
    options: PoolOptions,
}

/// `keras.layers.MaxPooling1D` (and 2D, 3D below).
pub type MaxPooling1D = Pooling<1>;
pub type MaxPooling2D = Pooling<2>;
pub type MaxPooling3D = Pooling<3>;
/// `keras.layers.AveragePooling1D` (and 2D, 3D below): the same type,
/// made by [`Pooling::average`].
pub type AveragePooling1D = Pooling<1>;
pub type AveragePooling2D = Pooling<2>;
pub type AveragePooling3D = Pooling<3>;

impl<const R: usize> Pooling<R> {
    fn with(max: bool, pool_size: [usize; R]) -> Pooling<R> {
        let stem = if max { format!("max_pooling{R}d") } else { format!("average_pooling{R}d") };
        Pooling { name: unique_name(&stem), max, options: PoolOptions::new(&pool_size, Padding::Valid) }
    }
    /// Max pooling over `pool_size`, strides equal to it, `VALID` padding (Keras's defaults).
    pub fn new(pool_size: [usize; R]) -> Pooling<R> {
        Pooling::with(true, pool_size)
    }
    /// Average pooling over `pool_size`, strides equal to it, `VALID` padding.
    pub fn average(pool_size: [usize; R]) -> Pooling<R> {
        Pooling::with(false, pool_size)
    }
    pub fn strides(mut self, strides: [usize; R]) -> Pooling<R> {
        self.options.strides = strides.to_vec();
        self
    }
    pub fn padding(mut self, padding: Padding) -> Pooling<R> {
        self.options.padding = padding;
        self
    }
    pub fn channels_first(mut self) -> Pooling<R> {
        self.options.channels_first = true;
        self
    }
}

/// `x` must be `[batch, R spatial, channels]` (or channels first).
pub(super) fn check_rank<const R: usize>(layer: &str, x: &Tensor) -> Result<()> {
    if x.rank() != R + 2 {
        bail!(shape, "{layer}: expected input of rank {} ([batch, {R} spatial, channels]), got {}", R + 2, x.shape());
    }
    Ok(())
}

impl<const R: usize> Layer for Pooling<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        check_rank::<R>(&self.name, x)?;
        if self.max {
            ops::max_pool(x, &self.options)
        } else {
            ops::avg_pool(x, &self.options)
        }
    }
    fn kind(&self) -> String {
        format!("{}Pooling{R}D", if self.max { "Max" } else { "Average" })
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// The mean or maximum over all `R` spatial axes: `[batch, channels]`.
pub struct GlobalPooling<const R: usize> {
    name: String,
    max: bool,
    channels_first: bool,
}

/// `keras.layers.GlobalAveragePooling2D` (and the others below; the max
/// forms come from [`GlobalPooling::max`]).
pub type GlobalAveragePooling1D = GlobalPooling<1>;
pub type GlobalAveragePooling2D = GlobalPooling<2>;
pub type GlobalAveragePooling3D = GlobalPooling<3>;
pub type GlobalMaxPooling1D = GlobalPooling<1>;
pub type GlobalMaxPooling2D = GlobalPooling<2>;
pub type GlobalMaxPooling3D = GlobalPooling<3>;

impl<const R: usize> GlobalPooling<R> {
    /// The mean over the spatial axes.
    pub fn new() -> GlobalPooling<R> {
        GlobalPooling { name: unique_name(&format!("global_average_pooling{R}d")), max: false, channels_first: false }
    }
    /// The maximum over the spatial axes.
    pub fn max() -> GlobalPooling<R> {
        GlobalPooling { name: unique_name(&format!("global_max_pooling{R}d")), max: true, channels_first: false }
    }
    pub fn channels_first(mut self) -> GlobalPooling<R> {
        self.channels_first = true;
        self
    }
}

impl<const R: usize> Default for GlobalPooling<R> {
    fn default() -> GlobalPooling<R> {
        GlobalPooling::new()
    }
}

impl<const R: usize> Layer for GlobalPooling<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        check_rank::<R>(&self.name, x)?;
        let first = if self.channels_first { 2 } else { 1 };
        let axes: Vec<i64> = (first..first + R).map(|a| a as i64).collect();
        if self.max {
            ops::max(x, axes, false)
        } else {
            ops::mean(x, axes, false)
        }
    }
    fn kind(&self) -> String {
        format!("Global{}Pooling{R}D", if self.max { "Max" } else { "Average" })
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
}
