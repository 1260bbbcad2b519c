//! Creation: constants, fills, ranges, identity matrices and seeded random
//! numbers. Ops without inputs take a [`Ctx`]: `Ctx::Eager` makes a value
//! now, `(&graph).into()` adds a node.
//!
//! Random numbers come from Philox 4x32-10, a counter-based generator: element
//! `i` of a draw depends only on the seed, the draw's stream and `i`, so the
//! numbers are the same on every machine and for every thread count.

use super::Axes;
use super::{apply1, apply1_in, Ctx, Op};
use crate::context;
use crate::error::Result;
use crate::graph::{Graph, Operation, Tensor};
use crate::op::creation::splitmix64;
pub use crate::op::creation::Distribution;
use crate::tensor::{DType, Scalar, Shape};
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

static GLOBAL_SEED: AtomicU64 = AtomicU64::new(0x05EE_D0F4_17E7);
static OP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Set the global seed: random ops created without a seed afterwards draw
/// a reproducible sequence (like `tf.random.set_seed`).
pub fn set_random_seed(seed: u64) {
    GLOBAL_SEED.store(seed, Ordering::SeqCst);
    OP_COUNTER.store(0, Ordering::SeqCst);
}

/// A fresh op seed from the global seed and a counter of random ops.
pub(crate) fn next_seed() -> u64 {
    let n = OP_COUNTER.fetch_add(1, Ordering::SeqCst);
    splitmix64(GLOBAL_SEED.load(Ordering::SeqCst) ^ splitmix64(n.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// Uniform samples on `[low, high)` shaped like `x` (its shape may be known
/// only at run time), of `x`'s dtype. `None` seeds from the global seed.
#[track_caller]
pub fn random_uniform_like(x: &Tensor, low: f64, high: f64, seed: Option<u64>) -> Result<Tensor> {
    let seed = seed.unwrap_or_else(next_seed);
    apply1(Op::RandomLike { dist: Distribution::Uniform { low, high }, seed }, &[x])
}

/// [`random_uniform_like`] whose numbers are fixed by `seed` and the i64
/// scalar tensor `offset` (e.g. a step counter kept in a variable) instead
/// of by how often the op has run.
#[track_caller]
pub fn random_uniform_like_offset(x: &Tensor, low: f64, high: f64, seed: u64, offset: &Tensor) -> Result<Tensor> {
    apply1(Op::RandomLike { dist: Distribution::Uniform { low, high }, seed }, &[x, offset])
}

/// A constant holding `value` (in a graph: a `Const` node).
#[track_caller]
pub fn constant<'a>(ctx: impl Into<Ctx<'a>>, value: impl Into<Tensor>) -> Result<Tensor> {
    let value = value.into();
    // A constant holds a value, never a symbolic tensor.
    let v = value.value()?.clone();
    match ctx.into() {
        Ctx::Eager if context::default_graph().is_none() => Ok(value),
        ctx => apply1_in(ctx, Op::Const { value: super::ConstValue(v) }, &[]),
    }
}

/// Graph nodes made by the graph's own methods, placed by the device scope
/// like every other op.
impl Graph {
    /// A placeholder: an input whose value is fed to [`Session::run`](crate::Session::run).
    /// `shape` may hold unknown dimensions: `[None, Some(784)]`.
    /// The name is made unique like any other (`x`, `x_1`, ...).
    #[track_caller]
    pub fn placeholder(&self, name: &str, dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
        let stem = if name.is_empty() { None } else { Some(name) };
        let op = Op::Placeholder { dtype, shape: shape.into() };
        let (_, mut out) = self.add_node_named(op, &[], stem, context::current_device(), Location::caller())?;
        Ok(out.swap_remove(0))
    }

    /// A no-op node that runs after `deps`: a single target for a group of ops.
    #[track_caller]
    pub fn group(&self, deps: &[&Operation]) -> Result<Operation> {
        let _guard = self.control_dependencies(deps)?;
        let (id, _) =
            self.add_node_named(Op::NoOp, &[], Some("group_deps"), context::current_device(), Location::caller())?;
        Ok(Operation { graph: self.clone(), id })
    }

    /// One target that runs every variable's initializer.
    #[track_caller]
    pub fn global_variables_initializer(&self) -> Result<Operation> {
        let inits: Vec<Operation> =
            self.read().variables.iter().map(|r| Operation { graph: self.clone(), id: r.initializer }).collect();
        let refs: Vec<&Operation> = inits.iter().collect();
        self.group(&refs)
    }

    /// A constant node holding `value`.
    #[track_caller]
    pub fn constant(&self, value: impl Into<Tensor>) -> Result<Tensor> {
        constant(self, value)
    }
}

/// A tensor of `shape` with every element `value`.
#[track_caller]
pub fn fill<'a>(
    ctx: impl Into<Ctx<'a>>,
    shape: impl Into<Shape>,
    value: impl Into<Scalar>,
    dtype: DType,
) -> Result<Tensor> {
    apply1_in(ctx.into(), Op::Fill { shape: shape.into(), value: value.into(), dtype }, &[])
}

/// Zeros of `shape`.
#[track_caller]
pub fn zeros<'a>(ctx: impl Into<Ctx<'a>>, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
    fill(ctx, shape, 0i64, dtype)
}

/// Ones of `shape`.
#[track_caller]
pub fn ones<'a>(ctx: impl Into<Ctx<'a>>, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
    fill(ctx, shape, 1i64, dtype)
}

/// Zeros with the shape and dtype of `x` (the shape may be known only at run time).
#[track_caller]
pub fn zeros_like(x: &Tensor) -> Result<Tensor> {
    apply1(Op::FillLike { value: Scalar::I64(0) }, &[x])
}

/// Ones with the shape and dtype of `x`.
#[track_caller]
pub fn ones_like(x: &Tensor) -> Result<Tensor> {
    apply1(Op::FillLike { value: Scalar::I64(1) }, &[x])
}

/// `start, start + delta, ...` up to but excluding `limit`.
#[track_caller]
pub fn range<'a>(
    ctx: impl Into<Ctx<'a>>,
    start: impl Into<Scalar>,
    limit: impl Into<Scalar>,
    delta: impl Into<Scalar>,
    dtype: DType,
) -> Result<Tensor> {
    apply1_in(ctx.into(), Op::Range { start: start.into(), limit: limit.into(), delta: delta.into(), dtype }, &[])
}

/// `num` evenly spaced values from `start` to `stop`, both included.
#[track_caller]
pub fn linspace<'a>(ctx: impl Into<Ctx<'a>>, start: f64, stop: f64, num: usize, dtype: DType) -> Result<Tensor> {
    apply1_in(ctx.into(), Op::Linspace { start, stop, num, dtype }, &[])
}

/// A `rows x cols` matrix with ones on the main diagonal.
#[track_caller]
pub fn eye<'a>(ctx: impl Into<Ctx<'a>>, rows: usize, cols: usize, dtype: DType) -> Result<Tensor> {
    apply1_in(ctx.into(), Op::Eye { rows, cols, dtype }, &[])
}

#[track_caller]
fn random<'a>(ctx: Ctx<'a>, dist: Distribution, shape: Shape, dtype: DType, seed: Option<u64>) -> Result<Tensor> {
    let seed = seed.unwrap_or_else(next_seed);
    apply1_in(ctx, Op::Random { dist, shape, dtype, seed }, &[])
}

/// Uniform samples on `[low, high)`. The same `seed` gives the same numbers;
/// `None` draws a seed from the global one ([`set_random_seed`]). In a graph,
/// each run of the node draws new numbers (the same sequence per session).
#[track_caller]
pub fn random_uniform<'a>(
    ctx: impl Into<Ctx<'a>>,
    shape: impl Into<Shape>,
    low: f64,
    high: f64,
    dtype: DType,
    seed: Option<u64>,
) -> Result<Tensor> {
    random(ctx.into(), Distribution::Uniform { low, high }, shape.into(), dtype, seed)
}

/// Uniform integers on `[low, high)` (i32 or i64).
#[track_caller]
pub fn random_uniform_int<'a>(
    ctx: impl Into<Ctx<'a>>,
    shape: impl Into<Shape>,
    low: i64,
    high: i64,
    dtype: DType,
    seed: Option<u64>,
) -> Result<Tensor> {
    random(ctx.into(), Distribution::UniformInt { low, high }, shape.into(), dtype, seed)
}

/// Normal samples with `mean` and `stddev`.
#[track_caller]
pub fn random_normal<'a>(
    ctx: impl Into<Ctx<'a>>,
    shape: impl Into<Shape>,
    mean: f64,
    stddev: f64,
    dtype: DType,
    seed: Option<u64>,
) -> Result<Tensor> {
    random(ctx.into(), Distribution::Normal { mean, stddev }, shape.into(), dtype, seed)
}

/// Normal samples within two standard deviations of `mean`.
#[track_caller]
pub fn truncated_normal<'a>(
    ctx: impl Into<Ctx<'a>>,
    shape: impl Into<Shape>,
    mean: f64,
    stddev: f64,
    dtype: DType,
    seed: Option<u64>,
) -> Result<Tensor> {
    random(ctx.into(), Distribution::TruncatedNormal { mean, stddev }, shape.into(), dtype, seed)
}

/// `num_samples` class indices per row of `logits` `[batch, classes]`
/// (unnormalized log-probabilities), drawn from the categorical
/// distribution of the row: `[batch, num_samples]` of `dtype` (i32 or
/// i64), TensorFlow's `tf.random.categorical`. The Gumbel-max trick: the
/// argmax of the logits plus Gumbel noise. `None` seeds from the global
/// seed; in a graph each run draws anew.
#[track_caller]
pub fn categorical(logits: &Tensor, num_samples: usize, dtype: DType, seed: Option<u64>) -> Result<Tensor> {
    categorical_draw(logits, num_samples, dtype, seed.unwrap_or_else(next_seed), None)
}

/// [`categorical`] whose numbers depend only on `seed` (TensorFlow's
/// `stateless_categorical`): the same seed gives the same samples on every
/// run and every device.
#[track_caller]
pub fn stateless_categorical(logits: &Tensor, num_samples: usize, dtype: DType, seed: [u64; 2]) -> Result<Tensor> {
    let offset = constant(Ctx::of(logits), Tensor::scalar(0i64))?;
    categorical_draw(logits, num_samples, dtype, stateless_seed(seed), Some(&offset))
}

/// One 64-bit op seed from a stateless seed pair.
fn stateless_seed([a, b]: [u64; 2]) -> u64 {
    splitmix64(a ^ splitmix64(b ^ 0x243F_6A88_85A3_08D3))
}

#[track_caller]
fn categorical_draw(
    logits: &Tensor,
    num_samples: usize,
    dtype: DType,
    seed: u64,
    offset: Option<&Tensor>,
) -> Result<Tensor> {
    super::checked(
        (|| {
            if logits.rank() != 2 || !logits.dtype().is_float() {
                crate::error::bail!(
                    shape,
                    "categorical needs float logits [batch, classes], got {}{}",
                    logits.dtype(),
                    logits.shape()
                );
            }
            if !matches!(dtype, DType::I32 | DType::I64) {
                crate::error::bail!(dtype, "categorical gives i32 or i64 samples, not {dtype}");
            }
            // The draw holds batch x samples x classes numbers.
            let classes = logits.shape().dim(1).unwrap_or(1).max(1);
            let batch = logits.shape().dim(0).unwrap_or(1).max(1);
            let cells = num_samples.checked_mul(classes).and_then(|c| c.checked_mul(batch));
            if num_samples > i32::MAX as usize || cells.is_none_or(|c| c > crate::tensor::shape::MAX_ELEMENTS) {
                crate::error::bail!(invalid, "categorical: {num_samples} samples of {classes} classes is too many");
            }
            let work = if matches!(logits.dtype(), DType::F32 | DType::F64) {
                logits.clone()
            } else {
                super::cast(logits, DType::F32)?
            };
            let samples = fill(Ctx::of(logits), [1, num_samples, 1], 0i64, work.dtype())?;
            let shaped = super::add(&super::expand_dims(&work, 1)?, &samples)?;
            // Uniforms in (0, 1): the smallest normal number keeps -log(u) finite.
            let low = if work.dtype() == DType::F64 { f64::MIN_POSITIVE } else { f64::from(f32::MIN_POSITIVE) };
            let u = match offset {
                Some(o) => random_uniform_like_offset(&shaped, low, 1.0, seed, o)?,
                None => random_uniform_like(&shaped, low, 1.0, Some(seed))?,
            };
            let gumbel = super::neg(&super::log(&super::neg(&super::log(&u)?)?)?)?;
            super::argmax_with(&super::add(&shaped, &gumbel)?, -1, dtype)
        })(),
        "Multinomial",
        &[logits],
    )
}

/// Gamma samples of shape `shape ++ params` with concentration `alpha` and
/// rate `beta` (default 1), `params` the two broadcast together
/// (TensorFlow's `tf.random.gamma`). Marsaglia and Tsang's method, its
/// rejections run as a `while_loop`; concentrations below 1 are boosted by
/// one and scaled by `u^(1/alpha)`. The samples differentiate in `alpha`
/// by implicit reparameterization (`-dP(alpha, x)/dalpha / pdf(x)`, as
/// TensorFlow) and in `beta`. `None` seeds from the global seed.
#[track_caller]
pub fn random_gamma(
    shape: impl Into<Shape>,
    alpha: &Tensor,
    beta: Option<&Tensor>,
    seed: Option<u64>,
) -> Result<Tensor> {
    let seed = seed.unwrap_or_else(next_seed);
    super::checked(gamma_draw(shape.into(), alpha, beta, seed), "RandomGamma", &[alpha])
}

/// [`random_gamma`] whose numbers depend only on `seed` (TensorFlow's
/// `stateless_gamma`).
#[track_caller]
pub fn stateless_gamma(
    shape: impl Into<Shape>,
    seed: [u64; 2],
    alpha: &Tensor,
    beta: Option<&Tensor>,
) -> Result<Tensor> {
    super::checked(gamma_draw(shape.into(), alpha, beta, stateless_seed(seed)), "StatelessRandomGammaV2", &[alpha])
}

/// Marsaglia and Tsang's rejection rounds before giving up (each accepts
/// with probability above 0.95; a sample still rejected after all is NaN).
const GAMMA_ROUNDS: u64 = 64;

#[track_caller]
fn gamma_draw(shape: Shape, alpha: &Tensor, beta: Option<&Tensor>, seed: u64) -> Result<Tensor> {
    use super::{
        add, cast, div, exp, igamma_grad_a, less, lgamma, log, logical_and, logical_not, mul, pow, select, sqrt,
        square, stop_gradient, sub, xlogy,
    };
    if !alpha.dtype().is_float() || beta.is_some_and(|b| !b.dtype().is_float()) {
        crate::error::bail!(dtype, "gamma needs float concentrations and rates");
    }
    let params = match beta {
        Some(b) => crate::tensor::shape::broadcast_shapes(alpha.shape(), b.shape())?,
        None => alpha.shape().clone(),
    };
    let mut dims = shape.dims().to_vec();
    dims.extend_from_slice(params.dims());
    let out = Shape::new(&dims);
    if out.numel().is_none() {
        crate::error::bail!(shape, "gamma needs known shapes, got {shape} and {params}");
    }
    let dtype = if matches!(alpha.dtype(), DType::F32 | DType::F64) { alpha.dtype() } else { DType::F32 };
    let a = super::broadcast_to(&cast(alpha, dtype)?, out.clone())?;
    let a_value = stop_gradient(&a)?;
    // Marsaglia-Tsang for a >= 1; a < 1 draws at a + 1.
    let boosted = select(&less(&a_value, 1.0)?, &add(&a_value, 1.0)?, &a_value)?;
    let d = sub(&boosted, 1.0 / 3.0)?;
    let c = div(1.0, &sqrt(&mul(&d, 9.0)?)?)?;
    let uniform = |salt: u64, offset: &Tensor| {
        random_uniform_like_offset(&a_value, f64::from(f32::MIN_POSITIVE), 1.0, splitmix64(seed ^ salt), offset)
    };
    let start = (
        constant(Ctx::of(&a), Tensor::scalar(0i64))?,
        mul(&a_value, f64::NAN)?,
        // Concentrations that are not positive (or NaN) give NaN at once.
        logical_not(&super::greater(&a_value, 0.0)?)?,
    );
    let (_, sample, _) = super::while_loop(
        |(i, _, done): &(Tensor, Tensor, Tensor)| {
            logical_and(&less(i, GAMMA_ROUNDS as i64)?, &super::any(&logical_not(done)?, Axes::All, false)?)
        },
        |(i, x, done): &(Tensor, Tensor, Tensor)| {
            let (u1, u2, u3) = (uniform(1, i)?, uniform(2, i)?, uniform(3, i)?);
            // Box-Muller: a standard normal from two uniforms.
            let z = mul(&sqrt(&mul(&log(&u1)?, -2.0)?)?, &super::cos(&mul(&u2, std::f64::consts::TAU)?)?)?;
            let v = pow(&add(&mul(&c, &z)?, 1.0)?, 3.0)?;
            let positive = super::greater(&v, 0.0)?;
            let safe_v = select(&positive, &v, 1.0)?;
            let bound = add(&mul(&square(&z)?, 0.5)?, &mul(&d, &add(&sub(1.0, &safe_v)?, &log(&safe_v)?)?)?)?;
            let accept = logical_and(&positive, &less(&log(&u3)?, &bound)?)?;
            let fresh = logical_and(&accept, &logical_not(done)?)?;
            Ok((add(i, 1i64)?, select(&fresh, &mul(&d, &safe_v)?, x)?, super::logical_or(done, &accept)?))
        },
        start,
        &super::WhileOptions::default(),
    )?;
    // a < 1: x_a = x_(a+1) u^(1/a).
    let scale = pow(&uniform(4, &constant(Ctx::of(&a), Tensor::scalar(0i64))?)?, &div(1.0, &a_value)?)?;
    let x = stop_gradient(&select(&less(&a_value, 1.0)?, &mul(&sample, &scale)?, &sample)?)?;
    // Implicit reparameterization: dx/da = -(dP(a, x)/da) / pdf(x; a), 0 where x is 0.
    let log_pdf = sub(&sub(&xlogy(&sub(&a_value, 1.0)?, &x)?, &x)?, &lgamma(&a_value)?)?;
    let dxda = super::div_no_nan(&super::neg(&igamma_grad_a(&a_value, &x)?)?, &exp(&log_pdf)?)?;
    let dxda = stop_gradient(&select(&super::greater(&x, 0.0)?, &dxda, 0.0)?)?;
    let x = add(&x, &mul(&sub(&a, &a_value)?, &dxda)?)?;
    let x = match beta {
        Some(b) => div(&x, &cast(b, dtype)?)?,
        None => x,
    };
    cast(&x, alpha.dtype())
}

/// Eager shorthands.
impl Tensor {
    /// Zeros of `shape` (eager).
    #[track_caller]
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        zeros(Ctx::Eager, shape, dtype)
    }
    /// Ones of `shape` (eager).
    #[track_caller]
    pub fn ones(shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        ones(Ctx::Eager, shape, dtype)
    }
    /// Standard normal f32 samples of `shape` from `seed` (eager).
    #[track_caller]
    pub fn randn(shape: impl Into<Shape>, seed: u64) -> Result<Tensor> {
        random_normal(Ctx::Eager, shape, 0.0, 1.0, DType::F32, Some(seed))
    }
}
