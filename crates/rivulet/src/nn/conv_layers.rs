//! Convolution and pooling layers, as Keras's: `Conv1D/2D/3D`,
//! `MaxPooling*`, `AveragePooling*`, `GlobalAveragePooling*`,
//! `GlobalMaxPooling*` (the spatial rank is a const parameter, and the
//! Keras names are aliases).

use super::init::Initializer;
use super::layers::{make_variable, unique_name, Activation, Layer};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::ops::{self, ConvOptions, Padding, PoolOptions, Variable};
use crate::tensor::{Shape, UNKNOWN};
use std::sync::OnceLock;

/// `activation(conv(x, kernel) + bias)` over `R` spatial axes; the kernel
/// is `[k..., in / groups, filters]`, Glorot-uniform, the bias zeros.
pub struct Conv<const R: usize> {
    name: String,
    filters: usize,
    kernel: [usize; R],
    options: ConvOptions,
    activation: Activation,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    vars: OnceLock<(Variable, Option<Variable>)>,
}

/// `keras.layers.Conv1D`.
pub type Conv1D = Conv<1>;
/// `keras.layers.Conv2D`.
pub type Conv2D = Conv<2>;
/// `keras.layers.Conv3D`.
pub type Conv3D = Conv<3>;

impl<const R: usize> Conv<R> {
    /// `filters` output channels, a `kernel` window, unit strides, `VALID`
    /// padding (Keras's defaults).
    pub fn new(filters: usize, kernel: [usize; R], activation: Activation) -> Conv<R> {
        Conv {
            name: unique_name(&format!("conv{R}d")),
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

    fn ensure_built(&self, x: &Tensor) -> Result<&(Variable, Option<Variable>)> {
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
        if channels == UNKNOWN || !channels.is_multiple_of(groups) || !self.filters.is_multiple_of(groups) {
            bail!(
                shape,
                "{}: {} input channels and {} filters must be known and divide into {groups} groups",
                self.name,
                x.shape(),
                self.filters
            );
        }
        let mut shape = self.kernel.to_vec();
        shape.extend([channels / groups, self.filters]);
        let kernel =
            make_variable(x, &format!("{}/kernel", self.name), self.kernel_init, Shape::from(shape), x.dtype(), true)?;
        let bias = if self.use_bias {
            let shape = Shape::new(&[self.filters]);
            Some(make_variable(x, &format!("{}/bias", self.name), self.bias_init, shape, x.dtype(), true)?)
        } else {
            None
        };
        let _ = self.vars.set((kernel, bias));
        self.vars.get().ok_or_else(|| Error::invalid("Conv: build failed"))
    }
}

impl<const R: usize> Layer for Conv<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let (kernel, bias) = self.ensure_built(x)?;
        let mut y = ops::convolution(x, &kernel.read(), &self.options)?;
        if let Some(b) = bias {
            let b = b.read();
            let b = if self.options.channels_first {
                let mut dims = vec![self.filters as i64];
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
            Some((k, b)) => std::iter::once(k.clone()).chain(b.clone()).collect(),
            None => Vec::new(),
        }
    }
    fn name(&self) -> &str {
        &self.name
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
fn check_rank<const R: usize>(layer: &str, x: &Tensor) -> Result<()> {
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
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
}
