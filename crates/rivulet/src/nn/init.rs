//! Weight initializers (Keras names and formulas), seeded so that the same
//! seed gives the same weights on every machine.

use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{self, Ctx};
use crate::tensor::{DType, Shape};

/// How a variable's first value is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    Zeros,
    Ones,
    Constant(f64),
    RandomNormal {
        mean: f64,
        stddev: f64,
    },
    RandomUniform {
        low: f64,
        high: f64,
    },
    TruncatedNormal {
        mean: f64,
        stddev: f64,
    },
    /// Uniform on `±sqrt(6 / (fan_in + fan_out))` (Glorot & Bengio 2010).
    GlorotUniform,
    /// Truncated normal with stddev `sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Uniform on `±sqrt(6 / fan_in)` (He et al. 2015).
    HeUniform,
    /// Truncated normal with stddev `sqrt(2 / fan_in)`.
    HeNormal,
}

/// Stddev of a standard normal truncated to ±2, used to correct truncated draws.
const TRUNCATED_STD: f64 = 0.879_625_661_034_239_8;

/// `(fan_in, fan_out)` of a weight shape: matrices `[in, out]`; kernels
/// `[..receptive field.., in, out]`.
pub fn fans(shape: &Shape) -> (f64, f64) {
    match shape.rank() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f64, shape[0] as f64),
        r => {
            let receptive: usize = shape[..r - 2].iter().product();
            ((shape[r - 2] * receptive) as f64, (shape[r - 1] * receptive) as f64)
        }
    }
}

impl Initializer {
    /// A tensor of `shape` drawn from this initializer (a node in a graph context).
    #[track_caller]
    pub fn init<'a>(
        &self,
        ctx: impl Into<Ctx<'a>>,
        shape: impl Into<Shape>,
        dtype: DType,
        seed: Option<u64>,
    ) -> Result<Tensor> {
        let ctx = ctx.into();
        let shape = shape.into();
        let (fan_in, fan_out) = fans(&shape);
        match *self {
            Initializer::Zeros => ops::zeros(ctx, shape, dtype),
            Initializer::Ones => ops::ones(ctx, shape, dtype),
            Initializer::Constant(v) => ops::fill(ctx, shape, v, dtype),
            Initializer::RandomNormal { mean, stddev } => ops::random_normal(ctx, shape, mean, stddev, dtype, seed),
            Initializer::RandomUniform { low, high } => ops::random_uniform(ctx, shape, low, high, dtype, seed),
            Initializer::TruncatedNormal { mean, stddev } => {
                ops::truncated_normal(ctx, shape, mean, stddev, dtype, seed)
            }
            Initializer::GlorotUniform => {
                let limit = (6.0 / (fan_in + fan_out).max(1.0)).sqrt();
                ops::random_uniform(ctx, shape, -limit, limit, dtype, seed)
            }
            Initializer::GlorotNormal => {
                let std = (2.0 / (fan_in + fan_out).max(1.0)).sqrt() / TRUNCATED_STD;
                ops::truncated_normal(ctx, shape, 0.0, std, dtype, seed)
            }
            Initializer::HeUniform => {
                let limit = (6.0 / fan_in.max(1.0)).sqrt();
                ops::random_uniform(ctx, shape, -limit, limit, dtype, seed)
            }
            Initializer::HeNormal => {
                let std = (2.0 / fan_in.max(1.0)).sqrt() / TRUNCATED_STD;
                ops::truncated_normal(ctx, shape, 0.0, std, dtype, seed)
            }
        }
    }
}
