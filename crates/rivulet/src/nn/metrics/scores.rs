//! Metrics of per-class totals: intersection over union (from a confusion
//! matrix), F-beta scores and R². Each batch gives totals on the device;
//! the score is computed from their sums on the host.

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::nn::losses::squeeze_or_expand_to_same_rank;
use crate::ops::{self, Axes};
use crate::tensor::DType;

/// Keras's `epsilon()`.
const EPS: f64 = 1e-7;

/// How F-beta combines the per-class scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FScoreAverage {
    /// One score per class.
    #[default]
    None,
    /// One score from the counts of all classes together.
    Micro,
    /// The mean of the per-class scores.
    Macro,
    /// The per-class scores weighted by each class's share of the labels.
    Weighted,
}

/// How R² combines its per-output scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum R2Aggregation {
    /// One score per output.
    None,
    /// The mean of the per-output scores.
    #[default]
    UniformAverage,
    /// The per-output scores weighted by each output's variance.
    VarianceWeightedAverage,
}

/// The class of each example: `x` itself (integers, truncated), or its
/// argmax along `axis` when `sparse` is false.
#[track_caller]
fn classes(x: &Tensor, sparse: bool, axis: i64) -> Result<Tensor> {
    let c = if sparse { ops::cast(x, DType::I64)? } else { ops::argmax(x, axis)? };
    ops::reshape(&c, &[-1])
}

/// The confusion matrix `[classes * classes]` (row: label, column:
/// prediction) of one batch, f64. Examples whose label or prediction is out
/// of range, or whose label is `ignore_class`, are left out.
#[track_caller]
pub(crate) fn confusion_state(
    labels: &Tensor,
    predictions: &Tensor,
    sample_weight: Option<&Tensor>,
    num_classes: usize,
    ignore_class: Option<i64>,
) -> Result<Vec<Tensor>> {
    let (t, p) = (ops::reshape(labels, &[-1])?, ops::reshape(predictions, &[-1])?);
    let c = num_classes as i64;
    let mut keep = ops::logical_and(
        &ops::logical_and(&ops::greater_equal(&t, 0i64)?, &ops::less(&t, c)?)?,
        &ops::logical_and(&ops::greater_equal(&p, 0i64)?, &ops::less(&p, c)?)?,
    )?;
    if let Some(ignore) = ignore_class {
        keep = ops::logical_and(&keep, &ops::not_equal(&t, ignore)?)?;
    }
    let ones = ops::ones_like(&ops::cast(&t, DType::F64)?)?;
    let weights = match sample_weight {
        Some(w) => ops::mul(&ones, &ops::reshape(&ops::cast(w, DType::F64)?, &[-1])?)?,
        None => ones,
    };
    let Some(cells) = num_classes.checked_mul(num_classes) else {
        bail!(invalid, "IoU: {num_classes} classes is too many");
    };
    let ids = ops::select(&keep, &ops::add(&ops::mul(&t, c)?, &p)?, -1i64)?;
    Ok(vec![ops::unsorted_segment_sum(&weights, &ids, cells)?])
}

/// Labels and predictions of an IoU metric as class indices.
#[track_caller]
pub(crate) fn iou_classes(
    y_true: &Tensor,
    y_pred: &Tensor,
    sparse_y_true: bool,
    sparse_y_pred: bool,
    axis: i64,
) -> Result<(Tensor, Tensor)> {
    Ok((classes(y_true, sparse_y_true, axis)?, classes(y_pred, sparse_y_pred, axis)?))
}

/// The mean IoU over `target_class_ids` of the summed confusion matrix,
/// over the classes that occur (in labels or predictions).
pub(crate) fn iou_result(cm: &[f64], num_classes: usize, target_class_ids: &[usize]) -> f64 {
    let (mut total, mut valid) = (0.0, 0.0);
    for &k in target_class_ids {
        let predicted: f64 = (0..num_classes).map(|i| cm[i * num_classes + k]).sum();
        let labelled: f64 = (0..num_classes).map(|j| cm[k * num_classes + j]).sum();
        let tp = cm[k * num_classes + k];
        let denominator = predicted + labelled - tp;
        if denominator > 1e-9 {
            total += tp / (denominator + EPS);
            valid += 1.0;
        }
    }
    total / (valid + EPS)
}

/// F-beta's totals of one batch: true positives, false positives, false
/// negatives and label weights, per class (or summed, for `Micro`).
#[track_caller]
pub(crate) fn fbeta_state(
    y_true: &Tensor,
    y_pred: &Tensor,
    sample_weight: Option<&Tensor>,
    average: FScoreAverage,
    threshold: Option<f64>,
) -> Result<Vec<Tensor>> {
    if y_true.rank() != 2 || y_pred.rank() != 2 || y_pred.shape().dim(1).is_none() {
        bail!(
            shape,
            "FBetaScore needs labels and predictions [batch, classes] with the classes known, got {:?} and {:?}",
            y_true.shape(),
            y_pred.shape()
        );
    }
    let f = DType::F32;
    let (t, p) = (ops::cast(y_true, f)?, ops::cast(y_pred, f)?);
    let predicted = match threshold {
        None => {
            ops::logical_and(&ops::greater_equal(&p, &ops::max(&p, -1, true)?)?, &ops::greater(&ops::abs(&p)?, 1e-9)?)?
        }
        Some(th) => ops::greater(&p, th)?,
    };
    let p = ops::cast(&predicted, f)?;
    let w = match sample_weight {
        Some(w) => {
            let w = ops::cast(w, f)?;
            let w = if w.rank() == 2 && w.shape().dims()[1] == 1 { ops::squeeze(&w, &[1])? } else { w };
            if w.rank() > 1 {
                bail!(shape, "FBetaScore takes one sample weight per example, got {:?}", w.shape());
            }
            Some(ops::expand_dims(&w, 1)?)
        }
        None => None,
    };
    let total = |v: Tensor| -> Result<Tensor> {
        let v = match &w {
            Some(w) => ops::mul(&v, w)?,
            None => v,
        };
        let s = match average {
            FScoreAverage::Micro => ops::reshape(&ops::sum(&v, Axes::All, false)?, &[1])?,
            _ => ops::sum(&v, 0, false)?,
        };
        ops::cast(&s, DType::F64)
    };
    Ok(vec![
        total(ops::mul(&p, &t)?)?,
        total(ops::mul(&p, &ops::sub(1.0, &t)?)?)?,
        total(ops::mul(&ops::sub(1.0, &p)?, &t)?)?,
        total(t.clone())?,
    ])
}

/// F-beta from the summed totals: one score per class for `None`, else one.
pub(crate) fn fbeta_result(state: &[Vec<f64>], average: FScoreAverage, beta: f64) -> Result<Vec<f64>> {
    let [tp, fp, fneg, label_weights] = state else {
        bail!(invalid, "FBetaScore needs 4 accumulators, got {}", state.len());
    };
    let b2 = beta * beta;
    let scores: Vec<f64> = (0..tp.len())
        .map(|k| {
            let precision = tp[k] / (tp[k] + fp[k] + EPS);
            let recall = tp[k] / (tp[k] + fneg[k] + EPS);
            precision * recall / (b2 * precision + recall + EPS) * (1.0 + b2)
        })
        .collect();
    Ok(match average {
        FScoreAverage::None => scores,
        FScoreAverage::Micro | FScoreAverage::Macro => vec![scores.iter().sum::<f64>() / scores.len().max(1) as f64],
        FScoreAverage::Weighted => {
            let total: f64 = label_weights.iter().sum::<f64>() + EPS;
            vec![scores.iter().zip(label_weights).map(|(s, w)| s * w / total).sum()]
        }
    })
}

/// R²'s totals of one batch, per output: weighted sums of the labels, of
/// their squares and of the squared errors, the weights, and the element count.
#[track_caller]
pub(crate) fn r2_state(y_true: &Tensor, y_pred: &Tensor, sample_weight: Option<&Tensor>) -> Result<Vec<Tensor>> {
    let f = DType::F64;
    let (t, p) = squeeze_or_expand_to_same_rank(&ops::cast(y_true, f)?, &ops::cast(y_pred, f)?, true)?;
    if t.rank() != 2 || p.rank() != 2 || p.shape().dim(1).is_none() {
        bail!(
            shape,
            "R2Score needs labels and predictions [batch, outputs] with the outputs known, got {:?} and {:?}",
            y_true.shape(),
            y_pred.shape()
        );
    }
    let ones = ops::ones_like(&t)?;
    let w = match sample_weight {
        Some(w) => {
            let w = ops::cast(w, f)?;
            let w = if w.rank() == 1 { ops::expand_dims(&w, 1)? } else { w };
            ops::mul(&ones, &w)?
        }
        None => ones,
    };
    let weighted = ops::mul(&t, &w)?;
    let columns = |x: &Tensor| ops::sum(x, 0, false);
    Ok(vec![
        columns(&weighted)?,
        columns(&ops::mul(&t, &weighted)?)?,
        columns(&ops::mul(&ops::square(&ops::sub(&t, &p)?)?, &w)?)?,
        columns(&w)?,
        ops::reshape(&ops::cast(&ops::size(&t, DType::I64)?, f)?, &[1])?,
    ])
}

/// R² from the summed totals, adjusted for `num_regressors` when it is
/// positive and smaller than the element count minus one (as Keras counts).
pub(crate) fn r2_result(state: &[Vec<f64>], aggregation: R2Aggregation, num_regressors: usize) -> Result<Vec<f64>> {
    let [sum, squared_sum, total_mse, count, samples] = state else {
        bail!(invalid, "R2Score needs 5 accumulators, got {}", state.len());
    };
    let (mut raw, mut total) = (Vec::with_capacity(sum.len()), Vec::with_capacity(sum.len()));
    for k in 0..sum.len() {
        let mean = sum[k] / count[k];
        let t = squared_sum[k] - sum[k] * mean;
        let r = 1.0 - total_mse[k] / t;
        raw.push(if r.is_infinite() { 0.0 } else { r });
        total.push(t);
    }
    let mut scores = match aggregation {
        R2Aggregation::None => raw,
        R2Aggregation::UniformAverage => vec![raw.iter().sum::<f64>() / raw.len().max(1) as f64],
        R2Aggregation::VarianceWeightedAverage => {
            vec![total.iter().zip(&raw).map(|(t, r)| t * r).sum::<f64>() / total.iter().sum::<f64>()]
        }
    };
    let n = samples.first().copied().unwrap_or(0.0);
    let p = num_regressors as f64;
    if num_regressors != 0 && p < n - 1.0 {
        for s in &mut scores {
            *s = 1.0 - (1.0 - *s) * (n - 1.0) / (n - p - 1.0);
        }
    }
    Ok(scores)
}
