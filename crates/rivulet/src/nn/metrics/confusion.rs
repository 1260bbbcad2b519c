//! Confusion counts at thresholds (Keras's `update_confusion_matrix_variables`)
//! and what the threshold metrics make of them: precision, recall, the
//! "X at Y" metrics and the area under the ROC or PR curve.
//!
//! Predictions above a threshold are positive. Counts are taken in f32 as
//! Keras does, per batch on the device, and summed over batches on the host.

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::nn::losses::squeeze_or_expand_to_same_rank;
use crate::ops::{self, Axes, Ctx};
use crate::tensor::DType;

/// Keras's stand-in for minus infinity (predictions outside the top k).
const NEG_INF: f64 = -1e10;
/// Keras's `epsilon()`: the outer thresholds of the AUC sit this far outside [0, 1].
pub(crate) const EPSILON: f64 = 1e-7;

/// How the counts are taken.
pub(crate) struct CountSpec<'a> {
    pub thresholds: &'a [f64],
    /// The thresholds are `0, 1/(n-1), ..., 1` ([`evenly_distributed`]),
    /// the outer two possibly moved outwards: count by buckets.
    pub evenly: bool,
    /// Keep only each row's `k` largest predictions.
    pub top_k: Option<usize>,
    /// Look at this class (column of the last axis) alone.
    pub class_id: Option<usize>,
    /// Count per label (column): counts `[thresholds, labels]`.
    pub multi_label: bool,
    /// Weights per label, multiplied into the counts (not with `multi_label`).
    pub label_weights: Option<&'a [f64]>,
}

/// Thresholds `0, 1/(n-1), ..., 1` (within 1e-7): counted by bucketing each
/// prediction once instead of comparing it with every threshold.
pub(crate) fn evenly_distributed(thresholds: &[f64]) -> bool {
    let n = thresholds.len();
    n >= 3
        && thresholds.iter().enumerate().all(|(i, &t)| {
            let even = (i as f32 / (n - 1) as f32) as f64;
            (t - even).abs() <= EPSILON + 1e-5 * even.abs()
        })
}

/// Thresholds must lie in [0, 1].
pub(crate) fn check_thresholds(what: &str, thresholds: &[f64]) -> Result<()> {
    if thresholds.is_empty() {
        bail!(invalid, "{what}: at least one threshold is needed");
    }
    if let Some(t) = thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        bail!(invalid, "{what}: threshold values must be in [0, 1], got {t}");
    }
    Ok(())
}

/// `[true positives, false positives, true negatives, false negatives]`,
/// each `[thresholds]` (or `[thresholds, labels]` with `multi_label`), f64.
#[track_caller]
pub(crate) fn counts(
    y_true: &Tensor,
    y_pred: &Tensor,
    sample_weight: Option<&Tensor>,
    spec: &CountSpec,
) -> Result<Vec<Tensor>> {
    let f = DType::F32;
    let (mut p, mut t) = squeeze_or_expand_to_same_rank(&ops::cast(y_pred, f)?, &ops::cast(y_true, f)?, true)?;
    let mut w = match sample_weight {
        Some(sw) => {
            let sw = ops::expand_dims(&ops::cast(sw, f)?, -1)?;
            Some(squeeze_or_expand_to_same_rank(&t, &sw, false)?.1)
        }
        None => None,
    };
    if let Some(k) = spec.top_k {
        p = filter_top_k(&p, k)?;
    }
    if let Some(c) = spec.class_id {
        if p.rank() < 2 || t.rank() != p.rank() {
            bail!(
                shape,
                "class_id needs labels and predictions [batch, classes], got {:?} and {:?}",
                t.shape(),
                p.shape()
            );
        }
        let column = |x: &Tensor| -> Result<Tensor> {
            let mut begin = vec![0usize; x.rank()];
            let mut size = vec![-1i64; x.rank()];
            begin[x.rank() - 1] = c;
            size[x.rank() - 1] = 1;
            ops::slice(x, &begin, &size)
        };
        match p.shape().dim(p.rank() - 1) {
            Some(n) if c < n => {}
            _ => bail!(invalid, "class_id {c} is out of range for predictions {:?}", p.shape()),
        }
        (t, p) = (column(&t)?, column(&p)?);
        // A weight per example still broadcasts; one per class follows its column.
        if let Some(sw) = &w {
            if sw.rank() == p.rank() && sw.shape().dim(sw.rank() - 1).is_some_and(|d| d > 1) {
                w = Some(column(sw)?);
            }
        }
    }
    if spec.multi_label && p.rank() != 2 {
        bail!(shape, "multi-label counts need predictions [batch, labels], got {:?}", p.shape());
    }
    // Weights broadcast to the predictions' shape (they are 1 without any).
    let ones = ops::ones_like(&p)?;
    let mut weights = match &w {
        Some(sw) => ops::mul(&ones, sw)?,
        None => ones,
    };
    if let (Some(lw), false) = (spec.label_weights, spec.multi_label) {
        let lw32: Vec<f32> = lw.iter().map(|&v| v as f32).collect();
        let lw = ops::constant(Ctx::of(&p), Tensor::from_slice(&lw32, [lw32.len()])?)?;
        weights = ops::mul(&weights, &lw)?;
    }
    let positive = ops::not_equal(&t, 0.0)?;
    let out =
        if spec.evenly { bucketed(&p, &positive, &weights, spec)? } else { compared(&p, &positive, &weights, spec)? };
    out.iter().map(|c| ops::cast(c, DType::F64)).collect()
}

/// Predictions outside each row's top `k` become -1e10.
#[track_caller]
fn filter_top_k(x: &Tensor, k: usize) -> Result<Tensor> {
    let classes = match x.shape().dim(x.rank().saturating_sub(1)) {
        Some(c) if x.rank() > 0 => c,
        _ => bail!(shape, "top_k needs predictions with a known last axis, got {:?}", x.shape()),
    };
    let (_, idx) = ops::top_k(x, k.min(classes))?;
    let mask = ops::sum(&ops::one_hot_with(&idx, classes, 1.0, 0.0, -1, x.dtype())?, -2, false)?;
    ops::add(&ops::mul(x, &mask)?, &ops::mul(&ops::sub(1.0, &mask)?, NEG_INF)?)
}

/// Evenly spaced thresholds: each prediction falls in one bucket
/// `ceil(p (n - 1)) - 1`; a reversed cumulative sum of the buckets gives
/// the counts above every threshold.
#[track_caller]
fn bucketed(p: &Tensor, positive: &Tensor, weights: &Tensor, spec: &CountSpec) -> Result<Vec<Tensor>> {
    let n = spec.thresholds.len();
    let with_epsilon = spec.thresholds[0] < 0.0 || spec.thresholds[n - 1] > 1.0;
    let p = ops::clip_by_value(p, 0.0, 1.0)?;
    let truth = ops::cast(positive, DType::F32)?;
    let true_labels = ops::mul(&truth, weights)?;
    let false_labels = ops::mul(&ops::sub(1.0, &truth)?, weights)?;
    let mut bucket = ops::sub(&ops::ceil(&ops::mul(&p, (n - 1) as f64)?)?, 1.0)?;
    if with_epsilon {
        bucket = ops::relu(&bucket)?;
    }
    let bucket = ops::cast(&bucket, DType::I64)?;
    let (tp, fp, total_true, total_false) = if spec.multi_label {
        let Some(labels) = p.shape().dim(1) else {
            bail!(shape, "multi-label counts need the number of labels known, got {:?}", p.shape());
        };
        // Label j's buckets are segments j n .. j n + n - 1; the dropped
        // bucket -1 must stay dropped.
        let offset = ops::mul(&ops::cumsum(&ops::ones_like(&bucket)?, 1, true, false)?, n as i64)?;
        let ids = ops::select(&ops::greater_equal(&bucket, 0i64)?, &ops::add(&bucket, &offset)?, -1i64)?;
        let per_label = |x: &Tensor| -> Result<Tensor> {
            let s = ops::unsorted_segment_sum(&ops::reshape(x, &[-1])?, &ops::reshape(&ids, &[-1])?, labels * n)?;
            let above = ops::cumsum(&ops::reshape(&s, &[labels as i64, n as i64])?, 1, false, true)?;
            ops::transpose(&above, &[1, 0])
        };
        (
            per_label(&true_labels)?,
            per_label(&false_labels)?,
            ops::sum(&true_labels, 0, false)?,
            ops::sum(&false_labels, 0, false)?,
        )
    } else {
        let ids = ops::reshape(&bucket, &[-1])?;
        let above = |x: &Tensor| -> Result<Tensor> {
            ops::cumsum(&ops::unsorted_segment_sum(&ops::reshape(x, &[-1])?, &ids, n)?, 0, false, true)
        };
        (
            above(&true_labels)?,
            above(&false_labels)?,
            ops::sum(&true_labels, Axes::All, false)?,
            ops::sum(&false_labels, Axes::All, false)?,
        )
    };
    let tn = ops::sub(&total_false, &fp)?;
    let fneg = ops::sub(&total_true, &tp)?;
    Ok(vec![tp, fp, tn, fneg])
}

/// Any thresholds: every prediction against every threshold.
#[track_caller]
fn compared(p: &Tensor, positive: &Tensor, weights: &Tensor, spec: &CountSpec) -> Result<Vec<Tensor>> {
    let n = spec.thresholds.len();
    let th: Vec<f32> = spec.thresholds.iter().map(|&t| t as f32).collect();
    let (p, positive, weights, th_shape) = if spec.multi_label {
        (ops::expand_dims(p, 0)?, ops::expand_dims(positive, 0)?, ops::expand_dims(weights, 0)?, vec![n, 1, 1])
    } else {
        (ops::reshape(p, &[1, -1])?, ops::reshape(positive, &[1, -1])?, ops::reshape(weights, &[1, -1])?, vec![n, 1])
    };
    let th = ops::constant(Ctx::of(&p), Tensor::from_slice(&th, th_shape)?)?;
    let predicted = ops::greater(&p, &th)?;
    let (not_predicted, negative) = (ops::logical_not(&predicted)?, ops::logical_not(&positive)?);
    let count = |label: &Tensor, pred: &Tensor| -> Result<Tensor> {
        ops::sum(&ops::select(&ops::logical_and(label, pred)?, &weights, 0.0)?, 1, false)
    };
    Ok(vec![
        count(&positive, &predicted)?,
        count(&negative, &predicted)?,
        count(&negative, &not_predicted)?,
        count(&positive, &not_predicted)?,
    ])
}

/// `a / b`, 0 where `b` is 0.
pub(crate) fn div_no_nan(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// The counts as named slices.
pub(crate) struct Counts<'a> {
    pub tp: &'a [f64],
    pub fp: &'a [f64],
    pub tn: &'a [f64],
    pub fneg: &'a [f64],
}

impl<'a> Counts<'a> {
    pub fn of(state: &'a [Vec<f64>]) -> Result<Counts<'a>> {
        match state {
            [tp, fp, tn, fneg] if [fp, tn, fneg].iter().all(|v| v.len() == tp.len()) => Ok(Counts { tp, fp, tn, fneg }),
            _ => bail!(invalid, "confusion counts need 4 accumulators of one size, got {}", state.len()),
        }
    }
    pub fn precision(&self) -> Vec<f64> {
        self.tp.iter().zip(self.fp).map(|(&tp, &fp)| div_no_nan(tp, tp + fp)).collect()
    }
    pub fn recall(&self) -> Vec<f64> {
        self.tp.iter().zip(self.fneg).map(|(&tp, &f)| div_no_nan(tp, tp + f)).collect()
    }
    pub fn specificity(&self) -> Vec<f64> {
        self.tn.iter().zip(self.fp).map(|(&tn, &fp)| div_no_nan(tn, tn + fp)).collect()
    }
}

/// The largest `dependent` among thresholds where `constrained >= value` (0 if none).
pub(crate) fn max_under_constraint(constrained: &[f64], dependent: &[f64], value: f64) -> f64 {
    constrained.iter().zip(dependent).filter(|(&c, _)| c >= value).map(|(_, &d)| d).fold(0.0, f64::max)
}

/// Which curve the AUC integrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AucCurve {
    /// True positive rate against false positive rate.
    #[default]
    Roc,
    /// Precision against recall.
    Pr,
    /// Precision gain against recall gain (Flach and Kull 2015).
    PrGain,
}

/// How the area between two thresholds is summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AucSummation {
    /// Trapezoids (for PR, Davis and Goadrich's interpolation).
    #[default]
    Interpolation,
    /// The lower of the two heights.
    Minoring,
    /// The higher of the two heights.
    Majoring,
}

/// The area under the curve from counts `[n, labels]` (labels = 1 unless
/// multi-label), averaged over labels (weighted by `label_weights` when given).
pub(crate) fn auc(
    c: &Counts,
    n: usize,
    curve: AucCurve,
    summation: AucSummation,
    multi_label: bool,
    label_weights: Option<&[f64]>,
) -> f64 {
    let labels = c.tp.len().checked_div(n).unwrap_or(0);
    let at = |v: &[f64], i: usize, l: usize| v[i * labels + l];
    let mut by_label = vec![0.0; labels];
    for (l, area) in by_label.iter_mut().enumerate() {
        for i in 0..n.saturating_sub(1) {
            *area += match (curve, summation) {
                (AucCurve::Pr, AucSummation::Interpolation) => {
                    let (tp0, tp1) = (at(c.tp, i, l), at(c.tp, i + 1, l));
                    let (p0, p1) = (tp0 + at(c.fp, i, l), tp1 + at(c.fp, i + 1, l));
                    let dtp = tp0 - tp1;
                    let slope = div_no_nan(dtp, (p0 - p1).max(0.0));
                    let intercept = tp1 - slope * p1;
                    let ratio = if p0 > 0.0 && p1 > 0.0 { div_no_nan(p0, p1.max(0.0)) } else { 1.0 };
                    div_no_nan(slope * (dtp + intercept * ratio.ln()), (tp1 + at(c.fneg, i + 1, l)).max(0.0))
                }
                _ => {
                    let (x0, y0) = point(c, i * labels + l, curve);
                    let (x1, y1) = point(c, (i + 1) * labels + l, curve);
                    let height = match summation {
                        AucSummation::Interpolation => (y0 + y1) / 2.0,
                        AucSummation::Minoring => y0.min(y1),
                        AucSummation::Majoring => y0.max(y1),
                    };
                    (x0 - x1) * height
                }
            };
        }
    }
    if !multi_label {
        return by_label.iter().sum();
    }
    match label_weights {
        Some(w) => div_no_nan(by_label.iter().zip(w).map(|(a, w)| a * w).sum(), w.iter().sum()),
        None => by_label.iter().sum::<f64>() / labels.max(1) as f64,
    }
}

/// The curve's point at flat index `j` of the counts.
fn point(c: &Counts, j: usize, curve: AucCurve) -> (f64, f64) {
    let (tp, fp, tn, fneg) = (c.tp[j], c.fp[j], c.tn[j], c.fneg[j]);
    let recall = div_no_nan(tp, tp + fneg);
    match curve {
        AucCurve::Roc => (div_no_nan(fp, fp + tn), recall),
        AucCurve::Pr => (recall, div_no_nan(tp, tp + fp)),
        AucCurve::PrGain => {
            let scale = div_no_nan(tp + fneg, tn + fp);
            if tp == 0.0 {
                (0.0, 1.0)
            } else {
                ((1.0 - scale * fneg / tp).max(0.0), 1.0 - scale * fp / tp)
            }
        }
    }
}
