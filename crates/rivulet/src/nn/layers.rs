//! Layers: Dense, Dropout, LayerNorm, GroupNormalization, BatchNormalization, Embedding,
//! Flatten, activations, Rescaling and Identity.
//!
//! A layer creates its variables on its first call, where its input lives:
//! eager variables for a value, graph variables (with initializers) for a
//! symbolic tensor. After that the same layer object serves every call.

use super::init::Initializer;
use crate::autodiff::tape;
use crate::error::{bail, Error, Result};
use crate::graph::Operation;
use crate::graph::Tensor;
use crate::ops::creation::next_seed as creation_seed;
use crate::ops::{self, Ctx, Variable};
use crate::tensor::{DType, Shape, UNKNOWN};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A building block of a model.
pub trait Layer: Send + Sync {
    /// Apply the layer; `training` switches dropout and batch statistics.
    fn call(&self, x: &Tensor, training: bool) -> Result<Tensor>;
    /// The layer's variables (empty before the first call).
    fn variables(&self) -> Vec<Variable>;
    /// Its name (unique per process: `dense`, `dense_1`, ...).
    fn name(&self) -> &str;
    /// Its type, as Keras names it (`Dense`, `Conv2D`): shown by
    /// [`Sequential::summary`](super::Sequential::summary).
    fn kind(&self) -> String {
        "Layer".to_string()
    }
    /// Graph mode: state updates made by training calls (batch-norm moving
    /// averages) that must run with the train op. Taking them clears them.
    fn take_updates(&self) -> Vec<Operation> {
        Vec::new()
    }
    /// Create the variables that `call(x, false)` would not (before restoring
    /// a checkpoint into a fresh model).
    fn build(&self, _x: &Tensor) -> Result<()> {
        Ok(())
    }
    /// The trainable variables.
    fn trainable_variables(&self) -> Vec<Variable> {
        self.variables().into_iter().filter(|v| v.trainable()).collect()
    }
}

/// A unique layer name for `stem` (`dense`, `dense_1`, ...).
pub(super) fn unique_name(stem: &str) -> String {
    static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let mut counts = COUNTS.get_or_init(|| Mutex::new(HashMap::new())).lock();
    let n = counts.entry(stem.to_string()).or_insert(0);
    let name = if *n == 0 { stem.to_string() } else { format!("{stem}_{n}") };
    *n += 1;
    name
}

/// A variable created where `like` lives (eager, or in its graph).
pub(super) fn make_variable(
    like: &Tensor,
    name: &str,
    init: Initializer,
    shape: Shape,
    dtype: DType,
    trainable: bool,
) -> Result<Variable> {
    let seed = Some(creation_seed());
    match like.graph() {
        Some(g) => {
            let value = init.init(Ctx::Graph(g), shape, dtype, seed)?;
            Variable::in_graph(g, name, &value, trainable)
        }
        None => {
            let value = crate::context::eager_scope(|| tape::untracked(|| init.init(Ctx::Eager, shape, dtype, seed)))?;
            Variable::new(name, &value, trainable)
        }
    }
}

/// The size of the last axis of `x`, which must be known.
fn last_dim(x: &Tensor, layer: &str) -> Result<usize> {
    match x.shape().last() {
        Some(&d) if d != UNKNOWN => Ok(d),
        _ => Err(Error::shape(format!("{layer} needs inputs with a known last dimension, got {}", x.shape()))),
    }
}

/// An elementwise activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    Linear,
    Relu,
    Relu6,
    Sigmoid,
    Tanh,
    Softmax,
    LogSoftmax,
    Gelu,
    Elu,
    Selu,
    Softplus,
}

impl Activation {
    /// Apply it.
    #[track_caller]
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => ops::relu(x),
            Activation::Relu6 => ops::relu6(x),
            Activation::Sigmoid => ops::sigmoid(x),
            Activation::Tanh => ops::tanh(x),
            Activation::Softmax => ops::softmax(x, -1),
            Activation::LogSoftmax => ops::log_softmax(x, -1),
            Activation::Gelu => ops::gelu(x),
            Activation::Elu => ops::elu(x),
            Activation::Selu => ops::selu(x),
            Activation::Softplus => ops::softplus(x),
        }
    }
}

/// `activation(x @ kernel + bias)`, applied to the last axis.
pub struct Dense {
    name: String,
    units: usize,
    activation: Activation,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    vars: OnceLock<(Variable, Option<Variable>)>,
}

impl Dense {
    /// `units` outputs, Glorot-uniform kernel, zero bias.
    pub fn new(units: usize, activation: Activation) -> Dense {
        Dense {
            name: unique_name("dense"),
            units,
            activation,
            use_bias: true,
            kernel_init: Initializer::GlorotUniform,
            bias_init: Initializer::Zeros,
            vars: OnceLock::new(),
        }
    }
    /// Without the bias term.
    pub fn without_bias(mut self) -> Dense {
        self.use_bias = false;
        self
    }
    /// Other initializers.
    pub fn with_initializers(mut self, kernel: Initializer, bias: Initializer) -> Dense {
        self.kernel_init = kernel;
        self.bias_init = bias;
        self
    }
    fn ensure_built(&self, x: &Tensor) -> Result<&(Variable, Option<Variable>)> {
        if let Some(v) = self.vars.get() {
            return Ok(v);
        }
        let input = last_dim(x, "Dense")?;
        let kernel = make_variable(
            x,
            &format!("{}/kernel", self.name),
            self.kernel_init,
            Shape::new(&[input, self.units]),
            x.dtype(),
            true,
        )?;
        let bias = if self.use_bias {
            Some(make_variable(
                x,
                &format!("{}/bias", self.name),
                self.bias_init,
                Shape::new(&[self.units]),
                x.dtype(),
                true,
            )?)
        } else {
            None
        };
        let _ = self.vars.set((kernel, bias));
        self.vars.get().ok_or_else(|| Error::invalid("Dense: build failed"))
    }
}

impl Layer for Dense {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let (kernel, bias) = self.ensure_built(x)?;
        let mut y = ops::matmul(x, &kernel.read())?;
        if let Some(b) = bias {
            y = ops::add(&y, &b.read())?;
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
    fn kind(&self) -> String {
        "Dense".to_string()
    }
}

/// Zeroes a fraction `rate` of the inputs while training, scaling the rest
/// by `1 / (1 - rate)`; the identity at inference.
///
/// Its random state is a variable `[seed, calls]`: each training call draws
/// a mask from both and counts itself, so a model restored from a checkpoint
/// draws the same masks as one that never stopped.
pub struct Dropout {
    name: String,
    rate: f64,
    state: OnceLock<Variable>,
    updates: Mutex<Vec<Operation>>,
}

impl Dropout {
    /// Dropout with probability `rate` in `[0, 1)`.
    pub fn new(rate: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&rate) {
            bail!(invalid, "dropout rate must be in [0, 1), got {rate}");
        }
        Ok(Dropout { name: unique_name("dropout"), rate, state: OnceLock::new(), updates: Mutex::new(Vec::new()) })
    }

    fn state(&self, like: &Tensor) -> Result<&Variable> {
        if self.state.get().is_none() {
            let init = Tensor::from([creation_seed() as i64, 0]);
            let name = format!("{}/rng_state", self.name);
            let v = match like.graph() {
                Some(g) => Variable::in_graph(g, &name, &init, false)?,
                None => Variable::new(&name, &init, false)?,
            };
            let _ = self.state.set(v);
        }
        self.state.get().ok_or_else(|| Error::invalid("Dropout: state"))
    }
}

impl Layer for Dropout {
    fn build(&self, x: &Tensor) -> Result<()> {
        self.state(x).map(drop)
    }
    fn call(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        if !training || self.rate == 0.0 {
            return Ok(x.clone());
        }
        let state = self.state(x)?;
        let step = Tensor::from([0i64, 1]);
        // offset = seed * K + calls (wrapping), a different stream per call,
        // computed where the state lives: on [1]-shaped halves, since ops
        // on integer scalars run on the host (a GPU draw would wait for a
        // round trip, and a recorded step could not hold it).
        let draw = |s: &Tensor| -> Result<Tensor> {
            let halves = ops::split(s, 2, 0)?;
            let offset = ops::add(&ops::mul(&halves[0], 0x2545_F491_4F6C_DD1Di64)?, &halves[1])?;
            ops::random_uniform_like_offset(x, 0.0, 1.0, 0x0D50_D5E1, &ops::reshape(&offset, &[])?)
        };
        let mask = if let (true, Some(g)) = (state.is_graph(), x.graph()) {
            // A graph layer (TensorFlow 1): draw from the state, then count
            // the call in an update op of its own, which the caller runs
            // (sessions also order a variable's writes after its reads; the
            // control edge states it in the graph).
            let mask = draw(&state.current())?;
            let _after = mask.op().map(|op| g.control_dependencies(&[&op])).transpose()?;
            let bumped = state.assign_add(&step)?;
            self.updates.lock().extend(bumped.op());
            mask
        } else {
            // Eager or traced: count the call and draw from the count
            // before it, taken from the increment's own result, so that
            // calls that overlap (traced calls on several threads) each
            // get a stream of their own.
            let bumped = if x.is_symbolic() {
                let bumped = state.assign_add(&step)?;
                self.updates.lock().extend(bumped.op());
                bumped
            } else {
                tape::untracked(|| state.assign_add(&step))?
            };
            draw(&ops::sub(&bumped, &step)?)?
        };
        let keep = ops::cast(&ops::greater_equal(&mask, self.rate)?, x.dtype())?;
        ops::mul(&ops::mul(x, &keep)?, 1.0 / (1.0 - self.rate))
    }
    fn variables(&self) -> Vec<Variable> {
        self.state.get().cloned().into_iter().collect()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Dropout".to_string()
    }
    fn take_updates(&self) -> Vec<Operation> {
        std::mem::take(&mut *self.updates.lock())
    }
}

/// Normalizes each example over its last axis, then scales and shifts
/// (Ba et al. 2016).
pub struct LayerNorm {
    name: String,
    epsilon: f64,
    vars: OnceLock<(Variable, Variable)>,
}

impl LayerNorm {
    /// With `epsilon` added to the variance (Keras default 1e-3).
    pub fn new(epsilon: f64) -> LayerNorm {
        LayerNorm { name: unique_name("layer_normalization"), epsilon, vars: OnceLock::new() }
    }
}

impl Layer for LayerNorm {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let (gamma, beta) = match self.vars.get() {
            Some(v) => v,
            None => {
                let d = Shape::new(&[last_dim(x, "LayerNorm")?]);
                let g =
                    make_variable(x, &format!("{}/gamma", self.name), Initializer::Ones, d.clone(), x.dtype(), true)?;
                let b = make_variable(x, &format!("{}/beta", self.name), Initializer::Zeros, d, x.dtype(), true)?;
                let _ = self.vars.set((g, b));
                self.vars.get().ok_or_else(|| Error::invalid("LayerNorm: build failed"))?
            }
        };
        let (mean, var) = ops::moments(x, -1, true)?;
        ops::batch_normalization(x, &mean, &var, Some(&beta.read()), Some(&gamma.read()), self.epsilon)
    }
    fn variables(&self) -> Vec<Variable> {
        self.vars.get().map(|(g, b)| vec![g.clone(), b.clone()]).unwrap_or_default()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "LayerNormalization".to_string()
    }
}

/// `keras.layers.LayerNormalization`.
pub type LayerNormalization = LayerNorm;

/// Normalizes groups of channels of each example (Wu & He 2018), then
/// scales and shifts each channel.
pub struct GroupNormalization {
    name: String,
    groups: usize,
    epsilon: f64,
    vars: OnceLock<(Variable, Variable)>,
}

impl GroupNormalization {
    /// `groups` groups over the last axis, epsilon 1e-3 (Keras's defaults
    /// but for the group count, which Keras sets to 32).
    pub fn new(groups: usize) -> GroupNormalization {
        GroupNormalization { name: unique_name("group_normalization"), groups, epsilon: 1e-3, vars: OnceLock::new() }
    }
    /// Another epsilon.
    pub fn epsilon(mut self, epsilon: f64) -> GroupNormalization {
        self.epsilon = epsilon;
        self
    }
}

impl Layer for GroupNormalization {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let (gamma, beta) = match self.vars.get() {
            Some(v) => v,
            None => {
                let d = Shape::new(&[last_dim(x, "GroupNormalization")?]);
                let n = &self.name;
                let g = make_variable(x, &format!("{n}/gamma"), Initializer::Ones, d.clone(), x.dtype(), true)?;
                let b = make_variable(x, &format!("{n}/beta"), Initializer::Zeros, d, x.dtype(), true)?;
                let _ = self.vars.set((g, b));
                self.vars.get().ok_or_else(|| Error::invalid("GroupNormalization: build failed"))?
            }
        };
        ops::group_normalization(x, self.groups, Some(&gamma.read()), Some(&beta.read()), self.epsilon)
    }
    fn variables(&self) -> Vec<Variable> {
        self.vars.get().map(|(g, b)| vec![g.clone(), b.clone()]).unwrap_or_default()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "GroupNormalization".to_string()
    }
}

/// Normalizes over the batch (every axis but the channels', the last by
/// default) while training and keeps moving averages for inference (Ioffe &
/// Szegedy 2015).
pub struct BatchNormalization {
    name: String,
    momentum: f64,
    epsilon: f64,
    /// The channel axis (Keras's `axis`): -1, or 1 for channels-first input.
    axis: i64,
    vars: OnceLock<[Variable; 4]>,
    updates: Mutex<Vec<Operation>>,
}

impl BatchNormalization {
    /// Keras defaults: momentum 0.99, epsilon 1e-3.
    pub fn new() -> BatchNormalization {
        BatchNormalization::with(0.99, 1e-3)
    }
    /// Explicit momentum and epsilon.
    pub fn with(momentum: f64, epsilon: f64) -> BatchNormalization {
        BatchNormalization {
            name: unique_name("batch_normalization"),
            momentum,
            epsilon,
            axis: -1,
            vars: OnceLock::new(),
            updates: Mutex::new(Vec::new()),
        }
    }
    /// Normalize per index of `axis` instead of the last (`axis=1` for
    /// channels-first input).
    pub fn axis(mut self, axis: i64) -> BatchNormalization {
        self.axis = axis;
        self
    }
}

impl Default for BatchNormalization {
    fn default() -> BatchNormalization {
        BatchNormalization::new()
    }
}

impl Layer for BatchNormalization {
    fn call(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let axis = crate::tensor::shape::normalize_axis(self.axis, x.rank())?;
        let channels = x.shape()[axis];
        if channels == UNKNOWN {
            bail!(shape, "BatchNormalization needs the size of axis {} known, got {}", self.axis, x.shape());
        }
        let along = |t: &Tensor| ops::nn::along_axis(t, axis, x.rank());
        let [gamma, beta, moving_mean, moving_var] = match self.vars.get() {
            Some(v) => v,
            None => {
                let d = Shape::new(&[channels]);
                let dt = x.dtype();
                let n = &self.name;
                let vars = [
                    make_variable(x, &format!("{n}/gamma"), Initializer::Ones, d.clone(), dt, true)?,
                    make_variable(x, &format!("{n}/beta"), Initializer::Zeros, d.clone(), dt, true)?,
                    make_variable(x, &format!("{n}/moving_mean"), Initializer::Zeros, d.clone(), dt, false)?,
                    make_variable(x, &format!("{n}/moving_variance"), Initializer::Ones, d, dt, false)?,
                ];
                let _ = self.vars.set(vars);
                self.vars.get().ok_or_else(|| Error::invalid("BatchNormalization: build failed"))?
            }
        };
        let (mean, var) = if training {
            let axes: Vec<i64> = (0..x.rank() as i64).filter(|&a| a != axis as i64).collect();
            let mean = ops::mean(x, axes.clone(), false)?;
            let var = ops::mean(&ops::square(&ops::sub(x, &along(&mean)?)?)?, axes, false)?;
            let m = self.momentum;
            let update = |moving: &Variable, batch: &Tensor| -> Result<Tensor> {
                let batch = ops::stop_gradient(batch)?;
                let new = ops::add(&ops::mul(&moving.current(), m)?, &ops::mul(&batch, 1.0 - m)?)?;
                moving.assign(&new)
            };
            if x.is_symbolic() {
                let a = update(moving_mean, &mean)?;
                let b = update(moving_var, &var)?;
                self.updates.lock().extend(a.op().into_iter().chain(b.op()));
            } else {
                tape::untracked(|| -> Result<()> {
                    update(moving_mean, &mean)?;
                    update(moving_var, &var)?;
                    Ok(())
                })?;
            }
            (mean, var)
        } else {
            (moving_mean.read(), moving_var.read())
        };
        // Keras's arithmetic: x·inv + (beta − mean·inv), inv = gamma / √(var + ε).
        let (beta, gamma) = (along(&beta.read())?, along(&gamma.read())?);
        ops::batch_normalization(x, &along(&mean)?, &along(&var)?, Some(&beta), Some(&gamma), self.epsilon)
    }
    fn variables(&self) -> Vec<Variable> {
        self.vars.get().map(|v| v.to_vec()).unwrap_or_default()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "BatchNormalization".to_string()
    }
    fn take_updates(&self) -> Vec<Operation> {
        std::mem::take(&mut *self.updates.lock())
    }
}

/// Looks up rows of a `[input_dim, output_dim]` table by integer index.
pub struct Embedding {
    name: String,
    input_dim: usize,
    output_dim: usize,
    dtype: DType,
    table: OnceLock<Variable>,
}

impl Embedding {
    /// A table of `input_dim` rows of `output_dim` f32 values (uniform ±0.05, as Keras).
    pub fn new(input_dim: usize, output_dim: usize) -> Embedding {
        Embedding { name: unique_name("embedding"), input_dim, output_dim, dtype: DType::F32, table: OnceLock::new() }
    }
}

impl Layer for Embedding {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let table = match self.table.get() {
            Some(t) => t,
            None => {
                let init = Initializer::RandomUniform { low: -0.05, high: 0.05 };
                let shape = Shape::new(&[self.input_dim, self.output_dim]);
                // The table lives where the indices do; its dtype is float.
                let v = match x.graph() {
                    Some(g) => {
                        let value = init.init(Ctx::Graph(g), shape, self.dtype, Some(creation_seed()))?;
                        Variable::in_graph(g, &format!("{}/embeddings", self.name), &value, true)?
                    }
                    None => make_variable(
                        &Tensor::scalar(0.0f32),
                        &format!("{}/embeddings", self.name),
                        init,
                        shape,
                        self.dtype,
                        true,
                    )?,
                };
                let _ = self.table.set(v);
                self.table.get().ok_or_else(|| Error::invalid("Embedding: build failed"))?
            }
        };
        ops::gather(&table.read(), x, 0, 0)
    }
    fn variables(&self) -> Vec<Variable> {
        self.table.get().cloned().into_iter().collect()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Embedding".to_string()
    }
}

/// Reshapes `[batch, d1, d2, ...]` to `[batch, d1 * d2 * ...]`.
pub struct Flatten {
    name: String,
}

impl Flatten {
    pub fn new() -> Flatten {
        Flatten { name: unique_name("flatten") }
    }
}

impl Default for Flatten {
    fn default() -> Flatten {
        Flatten::new()
    }
}

impl Layer for Flatten {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let rest = &x.shape()[1.min(x.rank())..];
        if rest.contains(&UNKNOWN) {
            bail!(shape, "Flatten needs every dimension but the first known, got {}", x.shape());
        }
        ops::reshape(x, &[-1, rest.iter().product::<usize>() as i64])
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Flatten".to_string()
    }
}

/// An activation as a layer of its own.
pub struct ActivationLayer {
    name: String,
    activation: Activation,
}

impl ActivationLayer {
    pub fn new(activation: Activation) -> ActivationLayer {
        ActivationLayer { name: unique_name("activation"), activation }
    }
}

impl Layer for ActivationLayer {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        self.activation.apply(x)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Activation".to_string()
    }
}

/// `x · scale + offset`, in floating point (`keras.layers.Rescaling`: e.g.
/// `1/255` to bring pixels into `[0, 1]`); integer input becomes f32.
pub struct Rescaling {
    name: String,
    scale: f64,
    offset: f64,
}

impl Rescaling {
    pub fn new(scale: f64, offset: f64) -> Rescaling {
        Rescaling { name: unique_name("rescaling"), scale, offset }
    }
}

impl Layer for Rescaling {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let x = if x.dtype().is_float() { x.clone() } else { ops::cast(x, DType::F32)? };
        ops::add(&ops::mul(&x, self.scale)?, self.offset)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Rescaling".to_string()
    }
}

/// `x` where `x > 0`, else `negative_slope · x` (`keras.layers.LeakyReLU`,
/// whose default slope is 0.3).
pub struct LeakyReLU {
    name: String,
    negative_slope: f64,
}

impl LeakyReLU {
    pub fn new(negative_slope: f64) -> LeakyReLU {
        LeakyReLU { name: unique_name("leaky_re_lu"), negative_slope }
    }
}

impl Default for LeakyReLU {
    fn default() -> LeakyReLU {
        LeakyReLU::new(0.3)
    }
}

impl Layer for LeakyReLU {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ops::leaky_relu(x, self.negative_slope)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "LeakyReLU".to_string()
    }
}

/// Passes its input through (`keras.layers.Identity`).
pub struct Identity {
    name: String,
}

impl Identity {
    pub fn new() -> Identity {
        Identity { name: unique_name("identity") }
    }
}

impl Default for Identity {
    fn default() -> Identity {
        Identity::new()
    }
}

impl Layer for Identity {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Identity".to_string()
    }
}
