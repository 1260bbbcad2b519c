//! Metrics reported by `fit` and `evaluate`.

use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{self, Axes};
use crate::tensor::DType;

/// A metric computed per batch and averaged over batches (weighted by size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Fraction of integer labels equal to the argmax of the predictions.
    SparseCategoricalAccuracy,
    /// Fraction of rows whose argmax matches the one-hot target's.
    CategoricalAccuracy,
    /// Fraction of predictions on the right side of 0.5 (probabilities) or 0 (logits).
    BinaryAccuracy { from_logits: bool },
    /// Mean absolute error.
    MeanAbsoluteError,
}

impl Metric {
    /// The name shown in the progress bar and the history.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::SparseCategoricalAccuracy | Metric::CategoricalAccuracy | Metric::BinaryAccuracy { .. } => {
                "accuracy"
            }
            Metric::MeanAbsoluteError => "mae",
        }
    }

    /// The metric's value on one batch, as an f32 scalar tensor.
    #[track_caller]
    pub fn compute(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let frac = |hits: Tensor| ops::mean(&ops::cast(&hits, DType::F32)?, Axes::All, false);
        match *self {
            Metric::SparseCategoricalAccuracy => {
                let predicted = ops::argmax(y_pred, -1)?;
                frac(ops::equal(&predicted, &ops::cast(y_true, DType::I64)?)?)
            }
            Metric::CategoricalAccuracy => frac(ops::equal(&ops::argmax(y_pred, -1)?, &ops::argmax(y_true, -1)?)?),
            Metric::BinaryAccuracy { from_logits } => {
                let threshold = if from_logits { 0.0 } else { 0.5 };
                let predicted = ops::greater(y_pred, threshold)?;
                frac(ops::equal(&predicted, &ops::greater(&ops::cast(y_true, y_pred.dtype())?, 0.5)?)?)
            }
            Metric::MeanAbsoluteError => {
                ops::cast(&crate::nn::losses::mean_absolute_error(y_true, y_pred)?, DType::F32)
            }
        }
    }
}

/// A running mean, weighted (Keras's `Mean` metric).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mean {
    total: f64,
    count: f64,
}

impl Mean {
    /// Add `value` with `weight`.
    pub fn update(&mut self, value: f64, weight: f64) {
        self.total += value * weight;
        self.count += weight;
    }
    /// The mean so far (0 before any update).
    pub fn result(&self) -> f64 {
        if self.count > 0.0 {
            self.total / self.count
        } else {
            0.0
        }
    }
    /// Forget everything.
    pub fn reset(&mut self) {
        *self = Mean::default();
    }
}
