//! Creation: constants, fills, ranges, identity matrices and seeded random
//! numbers. Ops without inputs take a [`Ctx`]: `Ctx::Eager` makes a value
//! now, `(&graph).into()` adds a node.
//!
//! Random numbers come from Philox 4x32-10, a counter-based generator: element
//! `i` of a draw depends only on the seed, the draw's stream and `i`, so the
//! numbers are the same on every machine and for every thread count.

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
