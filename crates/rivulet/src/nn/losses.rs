//! Losses, averaged over the batch. The cross-entropies take logits (or
//! probabilities with `from_logits: false`) and are computed stably.

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, checked, Axes};

/// A loss for [`Sequential::compile`](super::Sequential::compile).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    MeanSquaredError,
    MeanAbsoluteError,
    /// Quadratic within `delta` of the target, linear beyond.
    Huber {
        delta: f64,
    },
    /// Targets in {0, 1}; predictions one per target.
    BinaryCrossentropy {
        from_logits: bool,
    },
    /// One-hot (or soft) targets over the last axis.
    CategoricalCrossentropy {
        from_logits: bool,
    },
    /// Integer class targets.
    SparseCategoricalCrossentropy {
        from_logits: bool,
    },
}

/// Probabilities are clipped to `[EPS, 1 - EPS]` before taking logs (as Keras).
const EPS: f64 = 1e-7;

impl Loss {
    /// The mean loss over the batch.
    #[track_caller]
    pub fn compute(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        checked(self.compute_parts(y_true, y_pred), self.op_name(), &[y_true, y_pred])
    }

    /// The op name errors report (Keras's class name).
    fn op_name(&self) -> &'static str {
        match self {
            Loss::MeanSquaredError => "MeanSquaredError",
            Loss::MeanAbsoluteError => "MeanAbsoluteError",
            Loss::Huber { .. } => "Huber",
            Loss::BinaryCrossentropy { .. } => "BinaryCrossentropy",
            Loss::CategoricalCrossentropy { .. } => "CategoricalCrossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "SparseCategoricalCrossentropy",
        }
    }

    #[track_caller]
    fn compute_parts(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        match *self {
            Loss::MeanSquaredError => mse_parts(y_true, y_pred),
            Loss::MeanAbsoluteError => mae_parts(y_true, y_pred),
            Loss::Huber { delta } => huber_parts(y_true, y_pred, delta),
            Loss::BinaryCrossentropy { from_logits } => {
                if from_logits {
                    bce_parts(y_true, y_pred)
                } else {
                    let p = ops::clip_by_value(y_pred, EPS, 1.0 - EPS)?;
                    bce_parts(y_true, &ops::sub(&ops::log(&p)?, &ops::log1p(&ops::neg(&p)?)?)?)
                }
            }
            Loss::CategoricalCrossentropy { from_logits } => {
                let logp = log_probs(y_pred, from_logits)?;
                let y = ops::cast(y_true, logp.dtype())?;
                ops::neg(&ops::mean(&ops::sum(&ops::mul(&y, &logp)?, -1, false)?, Axes::All, false)?)
            }
            Loss::SparseCategoricalCrossentropy { from_logits } => {
                sparse_parts(y_true, &log_probs(y_pred, from_logits)?)
            }
        }
    }

    /// The Keras name (`loss` in the progress bar is always "loss").
    pub fn name(&self) -> &'static str {
        match self {
            Loss::MeanSquaredError => "mean_squared_error",
            Loss::MeanAbsoluteError => "mean_absolute_error",
            Loss::Huber { .. } => "huber",
            Loss::BinaryCrossentropy { .. } => "binary_crossentropy",
            Loss::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
        }
    }
}

#[track_caller]
fn log_probs(y_pred: &Tensor, from_logits: bool) -> Result<Tensor> {
    if from_logits {
        ops::log_softmax(y_pred, -1)
    } else {
        ops::log(&ops::clip_by_value(y_pred, EPS, 1.0 - EPS)?)
    }
}

/// `mean((y_pred - y_true)^2)`.
#[track_caller]
pub fn mean_squared_error(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    checked(mse_parts(y_true, y_pred), "MeanSquaredError", &[y_true, y_pred])
}

#[track_caller]
fn mse_parts(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    ops::mean(&ops::square(&ops::sub(y_pred, y_true)?)?, Axes::All, false)
}

/// `mean(|y_pred - y_true|)`.
#[track_caller]
pub fn mean_absolute_error(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    checked(mae_parts(y_true, y_pred), "MeanAbsoluteError", &[y_true, y_pred])
}

#[track_caller]
fn mae_parts(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    ops::mean(&ops::abs(&ops::sub(y_pred, y_true)?)?, Axes::All, false)
}

/// Huber loss: `0.5 e^2` for `|e| <= delta`, else `delta (|e| - delta / 2)`.
#[track_caller]
pub fn huber(y_true: &Tensor, y_pred: &Tensor, delta: f64) -> Result<Tensor> {
    checked(huber_parts(y_true, y_pred, delta), "Huber", &[y_true, y_pred])
}

#[track_caller]
fn huber_parts(y_true: &Tensor, y_pred: &Tensor, delta: f64) -> Result<Tensor> {
    if delta <= 0.0 || !delta.is_finite() {
        bail!(invalid, "huber delta must be positive, got {delta}");
    }
    let e = ops::abs(&ops::sub(y_pred, y_true)?)?;
    let quad = ops::mul(&ops::square(&e)?, 0.5)?;
    let lin = ops::mul(&ops::sub(&e, 0.5 * delta)?, delta)?;
    ops::mean(&ops::select(&ops::less_equal(&e, delta)?, &quad, &lin)?, Axes::All, false)
}

/// Binary cross-entropy from logits `z`: `max(z, 0) - z y + log(1 + e^-|z|)`,
/// with TensorFlow's kinks: both `max` and `|z|` take the `z >= 0` branch at
/// 0, so the gradient is `sigmoid(z) - y` there too (0.5 - y, not -y).
#[track_caller]
pub fn binary_crossentropy_with_logits(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    checked(bce_parts(labels, logits), "SigmoidCrossEntropyWithLogits", &[labels, logits])
}

#[track_caller]
fn bce_parts(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    let y = ops::cast(labels, logits.dtype())?;
    let nonnegative = ops::greater_equal(logits, 0.0)?;
    let relu = ops::select(&nonnegative, logits, 0.0)?;
    let neg_abs = ops::select(&nonnegative, &ops::neg(logits)?, logits)?;
    let per = ops::add(&ops::sub(&relu, &ops::mul(logits, &y)?)?, &ops::log1p(&ops::exp(&neg_abs)?)?)?;
    ops::mean(&per, Axes::All, false)
}

/// Sparse categorical cross-entropy from log-probabilities `logp` (last axis)
/// and integer class labels.
#[track_caller]
pub fn sparse_categorical_crossentropy(labels: &Tensor, logp: &Tensor) -> Result<Tensor> {
    checked(sparse_parts(labels, logp), "SparseCategoricalCrossentropy", &[labels, logp])
}

#[track_caller]
fn sparse_parts(labels: &Tensor, logp: &Tensor) -> Result<Tensor> {
    let Some(&classes) = logp.shape().last() else {
        bail!(shape, "sparse cross-entropy needs predictions with a class axis, got a scalar");
    };
    let onehot = ops::one_hot_with(labels, classes, 1.0, 0.0, -1, logp.dtype())?;
    ops::neg(&ops::mean(&ops::sum(&ops::mul(&onehot, logp)?, -1, false)?, Axes::All, false)?)
}

/// Mean sparse softmax cross-entropy of `logits` against integer `labels`.
#[track_caller]
pub fn sparse_softmax_cross_entropy(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    checked(sparse_softmax_parts(labels, logits), "SparseSoftmaxCrossEntropyWithLogits", &[labels, logits])
}

#[track_caller]
fn sparse_softmax_parts(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    sparse_parts(labels, &ops::log_softmax(logits, -1)?)
}
