//! Keras's metrics, for `fit`/`evaluate` and for custom loops.
//!
//! A metric is described by [`Metric`] (Keras's metric classes with their
//! arguments). Its state is what Keras keeps in the metric's variables:
//! totals that add up over batches (a sum and a count, confusion counts, a
//! confusion matrix, per-class sums). [`Metric::batch_state`] computes one
//! batch's totals with graph ops, so they run on the batch's device, eagerly
//! or inside a training graph; [`MetricState`] adds them up on the host (in
//! f64) and computes the value, as Keras's `update_state`/`result`/
//! `reset_state` do.

mod confusion;
mod functions;
mod scores;

pub use confusion::{AucCurve, AucSummation};
pub use functions::{
    accuracy, binary_accuracy, categorical_accuracy, concordance_correlation, cosine_similarity, pearson_correlation,
    sparse_categorical_accuracy, sparse_top_k_categorical_accuracy, top_k_categorical_accuracy,
};
pub use scores::{FScoreAverage, R2Aggregation};

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::nn::losses::{squeeze_or_expand_to_same_rank, Loss};
use crate::ops::{self, checked, Axes};
use crate::tensor::DType;
use confusion::{check_thresholds, evenly_distributed, max_under_constraint, CountSpec, Counts, EPSILON};

/// A Keras metric and its arguments. The mean metrics average a value per
/// example over all examples seen; the others accumulate counts or totals
/// and compute their value from them. Constructors such as
/// [`Metric::auc`] and [`Metric::precision`] give Keras's defaults.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// How often predictions equal labels.
    Accuracy,
    /// How often `y_pred > threshold` matches 0/1 labels (threshold 0 for logits).
    BinaryAccuracy { threshold: f64 },
    /// How often the argmax of the predictions matches that of one-hot labels.
    CategoricalAccuracy,
    /// How often the argmax of the predictions matches integer labels.
    SparseCategoricalAccuracy,
    /// How often the one-hot label's class is among the `k` largest predictions.
    TopKCategoricalAccuracy { k: usize },
    /// How often the integer label is among the `k` largest predictions (or,
    /// `from_sorted_ids`, among the first `k` ids of `y_pred`).
    SparseTopKCategoricalAccuracy { k: usize, from_sorted_ids: bool },
    /// A loss function's mean per-example value (Keras's `MeanSquaredError`,
    /// `BinaryCrossentropy`, `KLDivergence`, `Poisson`, ... metrics).
    Loss(Loss),
    /// The mean cosine similarity along `axis` (positive, unlike the loss).
    CosineSimilarity { axis: i64 },
    /// The mean per-example Pearson correlation along `axis`.
    PearsonCorrelation { axis: i64 },
    /// The mean per-example concordance correlation along `axis`.
    ConcordanceCorrelation { axis: i64 },
    /// The square root of the mean squared error.
    RootMeanSquaredError,
    /// The (weighted) mean of values: of the predictions in `compile`, of
    /// anything with [`MetricState::update_values`].
    Mean,
    /// The (weighted) sum of values, as [`Metric::Mean`].
    Sum,
    /// Positives predicted (above each threshold) with a positive label.
    TruePositives { thresholds: Vec<f64> },
    /// Positives predicted with a negative label.
    FalsePositives { thresholds: Vec<f64> },
    /// Negatives predicted with a negative label.
    TrueNegatives { thresholds: Vec<f64> },
    /// Negatives predicted with a positive label.
    FalseNegatives { thresholds: Vec<f64> },
    /// `tp / (tp + fp)` at each threshold (0.5 by default; with `top_k`,
    /// a prediction in the row's top k is positive); `class_id` looks at one class.
    Precision { thresholds: Option<Vec<f64>>, top_k: Option<usize>, class_id: Option<usize> },
    /// `tp / (tp + fn)`, with [`Metric::Precision`]'s arguments.
    Recall { thresholds: Option<Vec<f64>>, top_k: Option<usize>, class_id: Option<usize> },
    /// The best precision among thresholds whose recall is at least `recall`.
    PrecisionAtRecall { recall: f64, num_thresholds: usize, class_id: Option<usize> },
    /// The best recall among thresholds whose precision is at least `precision`.
    RecallAtPrecision { precision: f64, num_thresholds: usize, class_id: Option<usize> },
    /// The best sensitivity among thresholds whose specificity is at least `specificity`.
    SensitivityAtSpecificity { specificity: f64, num_thresholds: usize, class_id: Option<usize> },
    /// The best specificity among thresholds whose sensitivity is at least `sensitivity`.
    SpecificityAtSensitivity { sensitivity: f64, num_thresholds: usize, class_id: Option<usize> },
    /// The area under the ROC or PR curve, by a Riemann sum over
    /// `num_thresholds` evenly spaced thresholds (or the given ones, with 0
    /// and 1 added). `multi_label` computes one area per label (column) and
    /// averages them, weighted by `label_weights`; otherwise `label_weights`
    /// weight the examples' columns.
    Auc {
        num_thresholds: usize,
        curve: AucCurve,
        summation: AucSummation,
        thresholds: Option<Vec<f64>>,
        multi_label: bool,
        label_weights: Option<Vec<f64>>,
        from_logits: bool,
    },
    /// Intersection over union of the classes `target_class_ids`, averaged:
    /// `tp / (tp + fp + fn)` from the confusion matrix of all batches.
    /// Labels (predictions) are class indices when `sparse_y_true`
    /// (`sparse_y_pred`), else scores whose argmax along `axis` is the class.
    IoU {
        num_classes: usize,
        target_class_ids: Vec<usize>,
        ignore_class: Option<i64>,
        sparse_y_true: bool,
        sparse_y_pred: bool,
        axis: i64,
    },
    /// IoU of 0/1 labels against `y_pred >= threshold`.
    BinaryIoU { target_class_ids: Vec<usize>, threshold: f64 },
    /// The F-beta score of multi-label predictions `[batch, classes]`:
    /// positive above `threshold`, or (without one) the largest of each row.
    FBetaScore { average: FScoreAverage, beta: f64, threshold: Option<f64> },
    /// The coefficient of determination of outputs `[batch, outputs]`,
    /// adjusted for `num_regressors` independent variables when positive.
    R2Score { aggregation: R2Aggregation, num_regressors: usize },
    /// A metric under another name (Keras's `name=` argument).
    Named { name: String, metric: Box<Metric> },
}

impl Metric {
    /// `TruePositives` at threshold 0.5.
    pub fn true_positives() -> Metric {
        Metric::TruePositives { thresholds: vec![0.5] }
    }
    /// `FalsePositives` at threshold 0.5.
    pub fn false_positives() -> Metric {
        Metric::FalsePositives { thresholds: vec![0.5] }
    }
    /// `TrueNegatives` at threshold 0.5.
    pub fn true_negatives() -> Metric {
        Metric::TrueNegatives { thresholds: vec![0.5] }
    }
    /// `FalseNegatives` at threshold 0.5.
    pub fn false_negatives() -> Metric {
        Metric::FalseNegatives { thresholds: vec![0.5] }
    }
    /// Precision at threshold 0.5.
    pub fn precision() -> Metric {
        Metric::Precision { thresholds: None, top_k: None, class_id: None }
    }
    /// Recall at threshold 0.5.
    pub fn recall() -> Metric {
        Metric::Recall { thresholds: None, top_k: None, class_id: None }
    }
    /// Precision at recall `recall`, over 200 thresholds.
    pub fn precision_at_recall(recall: f64) -> Metric {
        Metric::PrecisionAtRecall { recall, num_thresholds: 200, class_id: None }
    }
    /// Recall at precision `precision`, over 200 thresholds.
    pub fn recall_at_precision(precision: f64) -> Metric {
        Metric::RecallAtPrecision { precision, num_thresholds: 200, class_id: None }
    }
    /// Sensitivity at specificity `specificity`, over 200 thresholds.
    pub fn sensitivity_at_specificity(specificity: f64) -> Metric {
        Metric::SensitivityAtSpecificity { specificity, num_thresholds: 200, class_id: None }
    }
    /// Specificity at sensitivity `sensitivity`, over 200 thresholds.
    pub fn specificity_at_sensitivity(sensitivity: f64) -> Metric {
        Metric::SpecificityAtSensitivity { sensitivity, num_thresholds: 200, class_id: None }
    }
    /// Keras's `AUC()`: ROC, 200 thresholds, trapezoids, one label.
    pub fn auc() -> Metric {
        Metric::Auc {
            num_thresholds: 200,
            curve: AucCurve::Roc,
            summation: AucSummation::Interpolation,
            thresholds: None,
            multi_label: false,
            label_weights: None,
            from_logits: false,
        }
    }
    /// IoU of the classes `target_class_ids`, labels and predictions as class indices.
    pub fn iou(num_classes: usize, target_class_ids: Vec<usize>) -> Metric {
        Metric::IoU {
            num_classes,
            target_class_ids,
            ignore_class: None,
            sparse_y_true: true,
            sparse_y_pred: true,
            axis: -1,
        }
    }
    /// IoU averaged over all classes (Keras's `MeanIoU`).
    pub fn mean_iou(num_classes: usize) -> Metric {
        Metric::iou(num_classes, (0..num_classes).collect()).named("mean_io_u")
    }
    /// IoU of one-hot labels and class scores (Keras's `OneHotIoU`).
    pub fn one_hot_iou(num_classes: usize, target_class_ids: Vec<usize>) -> Metric {
        Metric::IoU {
            num_classes,
            target_class_ids,
            ignore_class: None,
            sparse_y_true: false,
            sparse_y_pred: false,
            axis: -1,
        }
        .named("one_hot_io_u")
    }
    /// [`Metric::one_hot_iou`] averaged over all classes (Keras's `OneHotMeanIoU`).
    pub fn one_hot_mean_iou(num_classes: usize) -> Metric {
        match Metric::one_hot_iou(num_classes, (0..num_classes).collect()) {
            Metric::Named { metric, .. } => metric.named("one_hot_mean_io_u"),
            m => m,
        }
    }
    /// Keras's `BinaryIoU()`: both classes, threshold 0.5.
    pub fn binary_iou() -> Metric {
        Metric::BinaryIoU { target_class_ids: vec![0, 1], threshold: 0.5 }
    }
    /// Keras's `F1Score` (F-beta with beta 1).
    pub fn f1_score(average: FScoreAverage, threshold: Option<f64>) -> Metric {
        Metric::FBetaScore { average, beta: 1.0, threshold }.named("f1_score")
    }
    /// Keras's `R2Score()`: the mean over outputs, not adjusted.
    pub fn r2_score() -> Metric {
        Metric::R2Score { aggregation: R2Aggregation::UniformAverage, num_regressors: 0 }
    }
    /// This metric under `name` in logs and histories.
    pub fn named(self, name: &str) -> Metric {
        Metric::Named { name: name.to_string(), metric: Box::new(self) }
    }

    /// The name in the progress bar and the history: Keras's default name
    /// for the metric class (or the one given with [`Metric::named`]).
    pub fn name(&self) -> String {
        let s = match self {
            Metric::Named { name, .. } => return name.clone(),
            Metric::Loss(l) => match l {
                Loss::LogCosh => "logcosh",
                _ => l.name(),
            },
            _ => self.class_name(),
        };
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        match out.as_str() {
            "a_u_c" => "auc".into(),
            "f_beta_score" => "fbeta_score".into(),
            _ => out,
        }
    }

    /// Keras's class name, which errors report.
    fn class_name(&self) -> &'static str {
        match self {
            Metric::Accuracy => "Accuracy",
            Metric::BinaryAccuracy { .. } => "BinaryAccuracy",
            Metric::CategoricalAccuracy => "CategoricalAccuracy",
            Metric::SparseCategoricalAccuracy => "SparseCategoricalAccuracy",
            Metric::TopKCategoricalAccuracy { .. } => "TopKCategoricalAccuracy",
            Metric::SparseTopKCategoricalAccuracy { .. } => "SparseTopKCategoricalAccuracy",
            Metric::Loss(_) => "LossMetric",
            Metric::CosineSimilarity { .. } => "CosineSimilarity",
            Metric::PearsonCorrelation { .. } => "PearsonCorrelation",
            Metric::ConcordanceCorrelation { .. } => "ConcordanceCorrelation",
            Metric::RootMeanSquaredError => "RootMeanSquaredError",
            Metric::Mean => "Mean",
            Metric::Sum => "Sum",
            Metric::TruePositives { .. } => "TruePositives",
            Metric::FalsePositives { .. } => "FalsePositives",
            Metric::TrueNegatives { .. } => "TrueNegatives",
            Metric::FalseNegatives { .. } => "FalseNegatives",
            Metric::Precision { .. } => "Precision",
            Metric::Recall { .. } => "Recall",
            Metric::PrecisionAtRecall { .. } => "PrecisionAtRecall",
            Metric::RecallAtPrecision { .. } => "RecallAtPrecision",
            Metric::SensitivityAtSpecificity { .. } => "SensitivityAtSpecificity",
            Metric::SpecificityAtSensitivity { .. } => "SpecificityAtSensitivity",
            Metric::Auc { .. } => "AUC",
            Metric::IoU { .. } => "IoU",
            Metric::BinaryIoU { .. } => "BinaryIoU",
            Metric::FBetaScore { .. } => "FBetaScore",
            Metric::R2Score { .. } => "R2Score",
            Metric::Named { metric, .. } => metric.class_name(),
        }
    }

    /// Refuse the arguments Keras's constructors refuse.
    pub fn check(&self) -> Result<()> {
        let what = self.class_name();
        let unit = |name: &str, v: f64| -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                bail!(invalid, "{what}: {name} must be in [0, 1], got {v}");
            }
            Ok(())
        };
        match self {
            Metric::TruePositives { thresholds }
            | Metric::FalsePositives { thresholds }
            | Metric::TrueNegatives { thresholds }
            | Metric::FalseNegatives { thresholds } => check_thresholds(what, thresholds)?,
            Metric::Precision { thresholds, top_k, .. } | Metric::Recall { thresholds, top_k, .. } => {
                if let Some(t) = thresholds {
                    check_thresholds(what, t)?;
                }
                if *top_k == Some(0) {
                    bail!(invalid, "{what}: top_k must be positive");
                }
            }
            Metric::PrecisionAtRecall { recall: v, num_thresholds: n, .. }
            | Metric::RecallAtPrecision { precision: v, num_thresholds: n, .. }
            | Metric::SensitivityAtSpecificity { specificity: v, num_thresholds: n, .. }
            | Metric::SpecificityAtSensitivity { sensitivity: v, num_thresholds: n, .. } => {
                unit("the target value", *v)?;
                if *n == 0 || *n > MAX_THRESHOLDS {
                    bail!(invalid, "{what}: num_thresholds must be in [1, {MAX_THRESHOLDS}], got {n}");
                }
            }
            Metric::Auc { num_thresholds, thresholds, multi_label, label_weights, .. } => {
                match thresholds {
                    Some(t) => check_thresholds(what, t)?,
                    None if *num_thresholds <= 1 || *num_thresholds > MAX_THRESHOLDS => {
                        bail!(invalid, "{what}: num_thresholds must be in [2, {MAX_THRESHOLDS}], got {num_thresholds}")
                    }
                    None => {}
                }
                if let (Some(w), true) = (label_weights, multi_label) {
                    if w.iter().any(|v| *v < 0.0) {
                        bail!(invalid, "{what}: label_weights must not be negative");
                    }
                }
            }
            Metric::IoU { num_classes, target_class_ids, .. } => {
                if target_class_ids.is_empty() {
                    bail!(invalid, "{what}: target_class_ids is empty");
                }
                if let Some(id) = target_class_ids.iter().find(|&&id| id >= *num_classes) {
                    bail!(invalid, "{what}: target class id {id} is out of range [0, {num_classes})");
                }
                if num_classes.checked_mul(*num_classes).is_none_or(|c| c > 1 << 26) {
                    bail!(invalid, "{what}: {num_classes} classes make too large a confusion matrix");
                }
            }
            Metric::BinaryIoU { target_class_ids, threshold } => {
                if target_class_ids.is_empty() || target_class_ids.iter().any(|&id| id > 1) {
                    bail!(invalid, "{what}: target_class_ids must be among 0 and 1, got {target_class_ids:?}");
                }
                if !threshold.is_finite() {
                    bail!(invalid, "{what}: threshold must be finite, got {threshold}");
                }
            }
            Metric::FBetaScore { beta, threshold, .. } => {
                if !(*beta > 0.0 && beta.is_finite()) {
                    bail!(invalid, "{what}: beta must be positive, got {beta}");
                }
                if let Some(t) = threshold {
                    if !(*t > 0.0 && *t <= 1.0) {
                        bail!(invalid, "{what}: threshold must be in (0, 1], got {t}");
                    }
                }
            }
            Metric::Named { metric, .. } => metric.check()?,
            _ => {}
        }
        Ok(())
    }

    /// One batch's totals (f64 tensors, in `y_pred`'s context: eager, or
    /// nodes of its graph). Summed over batches they are the metric's
    /// state, from which [`Metric::result`] computes its value.
    #[track_caller]
    pub fn batch_state(&self, y_true: &Tensor, y_pred: &Tensor, sample_weight: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.check()?;
        let mut inputs = vec![y_true, y_pred];
        inputs.extend(sample_weight);
        checked(self.state_parts(y_true, y_pred, sample_weight), self.class_name(), &inputs)
    }

    #[track_caller]
    fn state_parts(&self, y_true: &Tensor, y_pred: &Tensor, sw: Option<&Tensor>) -> Result<Vec<Tensor>> {
        if let Some(values) = self.per_example(y_true, y_pred)? {
            return mean_state(&values, sw);
        }
        match self {
            Metric::Mean => mean_state(y_pred, sw),
            Metric::Sum => {
                let (values, _) = samplewise(y_pred, sw, Reduce::Sum)?;
                Ok(vec![ops::sum(&values, Axes::All, false)?])
            }
            Metric::RootMeanSquaredError => {
                let dtype = functions::float_dtype(y_pred);
                let (t, p) =
                    squeeze_or_expand_to_same_rank(&ops::cast(y_true, dtype)?, &ops::cast(y_pred, dtype)?, true)?;
                mean_state(&ops::square(&ops::sub(&p, &t)?)?, sw)
            }
            Metric::TruePositives { thresholds }
            | Metric::FalsePositives { thresholds }
            | Metric::TrueNegatives { thresholds }
            | Metric::FalseNegatives { thresholds } => confusion::counts(
                y_true,
                y_pred,
                sw,
                &CountSpec {
                    thresholds,
                    evenly: evenly_distributed(thresholds),
                    top_k: None,
                    class_id: None,
                    multi_label: false,
                    label_weights: None,
                },
            ),
            Metric::Precision { thresholds, top_k, class_id } | Metric::Recall { thresholds, top_k, class_id } => {
                let default = if top_k.is_some() { confusion_default_top_k() } else { vec![0.5] };
                let t = thresholds.clone().unwrap_or(default);
                let spec = CountSpec {
                    thresholds: &t,
                    evenly: evenly_distributed(&t),
                    top_k: *top_k,
                    class_id: *class_id,
                    multi_label: false,
                    label_weights: None,
                };
                confusion::counts(y_true, y_pred, sw, &spec)
            }
            Metric::PrecisionAtRecall { num_thresholds, class_id, .. }
            | Metric::RecallAtPrecision { num_thresholds, class_id, .. }
            | Metric::SensitivityAtSpecificity { num_thresholds, class_id, .. }
            | Metric::SpecificityAtSensitivity { num_thresholds, class_id, .. } => {
                let t = at_thresholds(*num_thresholds);
                let spec = CountSpec {
                    thresholds: &t,
                    evenly: *num_thresholds > 1,
                    top_k: None,
                    class_id: *class_id,
                    multi_label: false,
                    label_weights: None,
                };
                confusion::counts(y_true, y_pred, sw, &spec)
            }
            Metric::Auc { thresholds, num_thresholds, multi_label, label_weights, from_logits, .. } => {
                let (t, evenly) = auc_thresholds(thresholds.as_deref(), *num_thresholds);
                let p = if *from_logits { ops::sigmoid(y_pred)? } else { y_pred.clone() };
                let spec = CountSpec {
                    thresholds: &t,
                    evenly,
                    top_k: None,
                    class_id: None,
                    multi_label: *multi_label,
                    label_weights: if *multi_label { None } else { label_weights.as_deref() },
                };
                confusion::counts(y_true, &p, sw, &spec)
            }
            Metric::IoU { num_classes, ignore_class, sparse_y_true, sparse_y_pred, axis, .. } => {
                let (t, p) = scores::iou_classes(y_true, y_pred, *sparse_y_true, *sparse_y_pred, *axis)?;
                scores::confusion_state(&t, &p, sw, *num_classes, *ignore_class)
            }
            Metric::BinaryIoU { threshold, .. } => {
                let t = ops::reshape(&ops::cast(y_true, DType::I64)?, &[-1])?;
                let p = ops::cast(&ops::greater_equal(&ops::cast(y_pred, DType::F32)?, *threshold)?, DType::I64)?;
                scores::confusion_state(&t, &ops::reshape(&p, &[-1])?, sw, 2, None)
            }
            Metric::FBetaScore { average, threshold, .. } => {
                scores::fbeta_state(y_true, y_pred, sw, *average, *threshold)
            }
            Metric::R2Score { .. } => scores::r2_state(y_true, y_pred, sw),
            Metric::Named { metric, .. } => metric.state_parts(y_true, y_pred, sw),
            _ => bail!(invalid, "{} has no per-batch state", self.class_name()),
        }
    }

    /// The per-example values of the mean metrics (`None` for the others).
    #[track_caller]
    fn per_example(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(match self {
            Metric::Accuracy => accuracy(y_true, y_pred)?,
            Metric::BinaryAccuracy { threshold } => binary_accuracy(y_true, y_pred, *threshold)?,
            Metric::CategoricalAccuracy => categorical_accuracy(y_true, y_pred)?,
            Metric::SparseCategoricalAccuracy => sparse_categorical_accuracy(y_true, y_pred)?,
            Metric::TopKCategoricalAccuracy { k } => top_k_categorical_accuracy(y_true, y_pred, *k)?,
            Metric::SparseTopKCategoricalAccuracy { k, from_sorted_ids } => {
                sparse_top_k_categorical_accuracy(y_true, y_pred, *k, *from_sorted_ids)?
            }
            Metric::Loss(l) => l.per_example(y_true, y_pred)?,
            Metric::CosineSimilarity { axis } => cosine_similarity(y_true, y_pred, *axis)?,
            Metric::PearsonCorrelation { axis } => pearson_correlation(y_true, y_pred, *axis)?,
            Metric::ConcordanceCorrelation { axis } => concordance_correlation(y_true, y_pred, *axis)?,
            _ => return Ok(None),
        }))
    }

    /// The state before any batch, where its size does not depend on the data.
    fn initial_state(&self) -> Option<Vec<Vec<f64>>> {
        let zeros = |parts: usize, len: usize| Some(vec![vec![0.0; len]; parts]);
        match self {
            Metric::Named { metric, .. } => metric.initial_state(),
            Metric::Sum => zeros(1, 1),
            Metric::TruePositives { thresholds }
            | Metric::FalsePositives { thresholds }
            | Metric::TrueNegatives { thresholds }
            | Metric::FalseNegatives { thresholds } => zeros(4, thresholds.len()),
            Metric::Precision { thresholds, .. } | Metric::Recall { thresholds, .. } => {
                zeros(4, thresholds.as_ref().map_or(1, Vec::len))
            }
            Metric::PrecisionAtRecall { num_thresholds, .. }
            | Metric::RecallAtPrecision { num_thresholds, .. }
            | Metric::SensitivityAtSpecificity { num_thresholds, .. }
            | Metric::SpecificityAtSensitivity { num_thresholds, .. } => zeros(4, *num_thresholds),
            Metric::Auc { thresholds, num_thresholds, multi_label: false, .. } => {
                zeros(4, auc_thresholds(thresholds.as_deref(), *num_thresholds).0.len())
            }
            Metric::IoU { num_classes, .. } => zeros(1, num_classes * num_classes),
            Metric::BinaryIoU { .. } => zeros(1, 4),
            Metric::Auc { .. } | Metric::FBetaScore { .. } | Metric::R2Score { .. } => None,
            _ => zeros(2, 1),
        }
    }

    /// The metric's value from its state (the batch totals summed): an f32
    /// scalar, or a vector for several thresholds, per-class F-beta scores
    /// or per-output R².
    pub fn result(&self, state: &[Vec<f64>]) -> Result<Tensor> {
        self.check()?;
        let (values, vector) = self.result_values(state)?;
        let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        if vector {
            Tensor::from_slice(&v, [v.len()])
        } else {
            Ok(Tensor::scalar(v.first().copied().unwrap_or(0.0)))
        }
    }

    /// The value as f64s, and whether it is a vector.
    fn result_values(&self, state: &[Vec<f64>]) -> Result<(Vec<f64>, bool)> {
        let first = |i: usize| -> Result<&Vec<f64>> {
            state.get(i).ok_or_else(|| crate::error::Error::invalid(format!("{}: state too short", self.class_name())))
        };
        let scalar = |v: f64| Ok((vec![v], false));
        let per_threshold = |v: Vec<f64>| {
            let vector = v.len() != 1;
            Ok((v, vector))
        };
        match self {
            Metric::Named { metric, .. } => metric.result_values(state),
            Metric::Sum => scalar(first(0)?.iter().sum()),
            Metric::RootMeanSquaredError => scalar(mean_result(state)?.sqrt()),
            Metric::TruePositives { .. } => per_threshold(Counts::of(state)?.tp.to_vec()),
            Metric::FalsePositives { .. } => per_threshold(Counts::of(state)?.fp.to_vec()),
            Metric::TrueNegatives { .. } => per_threshold(Counts::of(state)?.tn.to_vec()),
            Metric::FalseNegatives { .. } => per_threshold(Counts::of(state)?.fneg.to_vec()),
            Metric::Precision { .. } => per_threshold(Counts::of(state)?.precision()),
            Metric::Recall { .. } => per_threshold(Counts::of(state)?.recall()),
            Metric::PrecisionAtRecall { recall, .. } => {
                let c = Counts::of(state)?;
                scalar(max_under_constraint(&c.recall(), &c.precision(), *recall))
            }
            Metric::RecallAtPrecision { precision, .. } => {
                let c = Counts::of(state)?;
                scalar(max_under_constraint(&c.precision(), &c.recall(), *precision))
            }
            Metric::SensitivityAtSpecificity { specificity, .. } => {
                let c = Counts::of(state)?;
                scalar(max_under_constraint(&c.specificity(), &c.recall(), *specificity))
            }
            Metric::SpecificityAtSensitivity { sensitivity, .. } => {
                let c = Counts::of(state)?;
                scalar(max_under_constraint(&c.recall(), &c.specificity(), *sensitivity))
            }
            Metric::Auc { thresholds, num_thresholds, curve, summation, multi_label, label_weights, .. } => {
                let n = auc_thresholds(thresholds.as_deref(), *num_thresholds).0.len();
                let c = Counts::of(state)?;
                if c.tp.len() % n != 0 || [c.fp, c.tn, c.fneg].iter().any(|v| v.len() != c.tp.len()) {
                    bail!(invalid, "AUC: counts of {} for {n} thresholds", c.tp.len());
                }
                let weights = if *multi_label { label_weights.as_deref() } else { None };
                if let Some(w) = weights {
                    if w.len() != c.tp.len() / n {
                        bail!(invalid, "AUC: {} label weights for {} labels", w.len(), c.tp.len() / n);
                    }
                }
                scalar(confusion::auc(&c, n, *curve, *summation, *multi_label, weights))
            }
            Metric::IoU { num_classes, target_class_ids, .. } => {
                check_sizes("IoU", state, 1, num_classes * num_classes)?;
                scalar(scores::iou_result(first(0)?, *num_classes, target_class_ids))
            }
            Metric::BinaryIoU { target_class_ids, .. } => {
                check_sizes("BinaryIoU", state, 1, 4)?;
                scalar(scores::iou_result(first(0)?, 2, target_class_ids))
            }
            Metric::FBetaScore { average, beta, .. } => {
                check_sizes("FBetaScore", state, 4, first(0)?.len())?;
                Ok((scores::fbeta_result(state, *average, *beta)?, *average == FScoreAverage::None))
            }
            Metric::R2Score { aggregation, num_regressors } => {
                let outputs = first(0)?.len();
                check_sizes("R2Score", &state[..state.len().min(4)], 4, outputs)?;
                check_sizes("R2Score", &state[4..], 1, 1)?;
                Ok((scores::r2_result(state, *aggregation, *num_regressors)?, *aggregation == R2Aggregation::None))
            }
            _ => scalar(mean_result(state)?),
        }
    }
}

/// The most thresholds a metric evaluates (each costs a row of counts per batch).
const MAX_THRESHOLDS: usize = 1 << 20;

/// Every accumulator of `state` has `len` values.
fn check_sizes(what: &str, state: &[Vec<f64>], parts: usize, len: usize) -> Result<()> {
    if state.len() != parts || state.iter().any(|s| s.len() != len) {
        let sizes: Vec<usize> = state.iter().map(Vec::len).collect();
        bail!(invalid, "{what}: a state of {parts} accumulators of {len} values expected, got sizes {sizes:?}");
    }
    Ok(())
}

/// Precision and recall with `top_k` and no thresholds: every prediction
/// in the top k counts (Keras's threshold of -1e10).
fn confusion_default_top_k() -> Vec<f64> {
    vec![-1e10]
}

/// The thresholds of the "X at Y" metrics: `0, 1/(n-1), ..., 1` (0.5 alone for n = 1).
fn at_thresholds(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.5];
    }
    let mut t = vec![0.0];
    t.extend((0..n.saturating_sub(2)).map(|i| (i + 1) as f64 / (n - 1) as f64));
    t.push(1.0);
    t
}

/// The AUC's thresholds: the given ones sorted (or `n - 2` evenly spaced
/// ones) between `-eps` and `1 + eps`, and whether they are evenly spaced.
fn auc_thresholds(given: Option<&[f64]>, n: usize) -> (Vec<f64>, bool) {
    let inner: Vec<f64> = match given {
        Some(t) => {
            let mut t = t.to_vec();
            t.sort_by(f64::total_cmp);
            t
        }
        None => (0..n.saturating_sub(2)).map(|i| (i + 1) as f64 / (n - 1) as f64).collect(),
    };
    let evenly = given.is_none() || {
        let mut all = vec![0.0];
        all.extend(&inner);
        all.push(1.0);
        evenly_distributed(&all)
    };
    let mut t = vec![-EPSILON];
    t.extend(inner);
    t.push(1.0 + EPSILON);
    (t, evenly)
}

/// How per-example values are reduced over their inner axes.
#[derive(Clone, Copy)]
enum Reduce {
    Mean,
    Sum,
}

/// Keras's `reduce_to_samplewise_values`: values (f64) reduced to one per
/// example, multiplied by the sample weights, and the weights per example.
#[track_caller]
fn samplewise(values: &Tensor, sample_weight: Option<&Tensor>, how: Reduce) -> Result<(Tensor, Option<Tensor>)> {
    let reduce = |x: &Tensor, from: usize| -> Result<Tensor> {
        let axes: Vec<i64> = (from as i64..x.rank() as i64).collect();
        match how {
            Reduce::Mean => ops::mean(x, axes, false),
            Reduce::Sum => ops::sum(x, axes, false),
        }
    };
    let mut values = ops::cast(values, DType::F64)?;
    let mut weights = None;
    if let Some(sw) = sample_weight {
        let (v, w) = squeeze_or_expand_to_same_rank(&values, &ops::cast(sw, DType::F64)?, true)?;
        let weight_rank = w.rank();
        values = if v.rank() > weight_rank { reduce(&v, weight_rank)? } else { v };
        let w = ops::mul(&ops::ones_like(&values)?, &w)?;
        values = ops::mul(&values, &w)?;
        weights = Some(if weight_rank > 1 { reduce(&w, 1)? } else { w });
    }
    if values.rank() > 1 {
        values = reduce(&values, 1)?;
    }
    Ok((values, weights))
}

/// The total and the count of the mean metrics.
#[track_caller]
fn mean_state(values: &Tensor, sample_weight: Option<&Tensor>) -> Result<Vec<Tensor>> {
    let (values, weights) = samplewise(values, sample_weight, Reduce::Mean)?;
    let count = match weights {
        Some(w) => ops::sum(&w, Axes::All, false)?,
        None => ops::cast(&ops::size(&values, DType::I64)?, DType::F64)?,
    };
    Ok(vec![ops::sum(&values, Axes::All, false)?, count])
}

/// `total / count`, 0 before any example.
fn mean_result(state: &[Vec<f64>]) -> Result<f64> {
    match state {
        [total, count] => Ok(confusion::div_no_nan(total.iter().sum(), count.iter().sum())),
        _ => bail!(invalid, "a mean metric needs 2 accumulators, got {}", state.len()),
    }
}

/// A metric's running state, like a Keras metric object: `update_state`
/// with each batch, `result` for the value so far, `reset_state` to start over.
#[derive(Clone, Debug)]
pub struct MetricState {
    metric: Metric,
    state: Option<Vec<Vec<f64>>>,
}

impl MetricState {
    /// A fresh state for `metric` (its arguments checked).
    pub fn new(metric: Metric) -> Result<MetricState> {
        metric.check()?;
        Ok(MetricState { metric, state: None })
    }

    /// The metric this state belongs to.
    pub fn metric(&self) -> &Metric {
        &self.metric
    }

    /// Add a batch of eager tensors (labels, predictions, optional weights).
    #[track_caller]
    pub fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor, sample_weight: Option<&Tensor>) -> Result<()> {
        if y_true.is_symbolic() || y_pred.is_symbolic() || sample_weight.is_some_and(Tensor::is_symbolic) {
            bail!(
                invalid,
                "{}.update_state takes values; in a graph, fetch Metric::batch_state and pass the results to accumulate",
                self.metric.class_name()
            );
        }
        let batch = crate::autodiff::tape::untracked(|| self.metric.batch_state(y_true, y_pred, sample_weight))?;
        self.accumulate(&batch)
    }

    /// Add values to [`Metric::Mean`] or [`Metric::Sum`] (the predictions of
    /// [`MetricState::update_state`]), optionally weighted.
    #[track_caller]
    pub fn update_values(&mut self, values: &Tensor, sample_weight: Option<&Tensor>) -> Result<()> {
        self.update_state(values, values, sample_weight)
    }

    /// Add one batch's totals, as computed by [`Metric::batch_state`] (the
    /// values of its tensors, from a session run or eagerly).
    pub fn accumulate(&mut self, batch: &[Tensor]) -> Result<()> {
        let values: Vec<Vec<f64>> = batch.iter().map(host_values).collect::<Result<_>>()?;
        match &mut self.state {
            None => self.state = Some(values),
            Some(state) => {
                let sizes = |s: &[Vec<f64>]| s.iter().map(Vec::len).collect::<Vec<_>>();
                if sizes(state) != sizes(&values) {
                    bail!(
                        invalid,
                        "{}: a batch with state sizes {:?} after batches with {:?} (did the number of classes change?)",
                        self.metric.class_name(),
                        sizes(&values),
                        sizes(state)
                    );
                }
                for (acc, v) in state.iter_mut().zip(values) {
                    for (a, b) in acc.iter_mut().zip(v) {
                        *a += b;
                    }
                }
            }
        }
        Ok(())
    }

    /// The value over every batch since the last reset.
    pub fn result(&self) -> Result<Tensor> {
        match &self.state {
            Some(s) => self.metric.result(s),
            None => match self.metric.initial_state() {
                Some(s) => self.metric.result(&s),
                None => bail!(invalid, "{}: no result before the first update_state", self.metric.class_name()),
            },
        }
    }

    /// The value as f64s (one, or one per threshold, class or output).
    pub fn result_values(&self) -> Result<Vec<f64>> {
        match &self.state {
            Some(s) => Ok(self.metric.result_values(s)?.0),
            None => self.result().and_then(|t| host_values(&t)),
        }
    }

    /// Forget every batch.
    pub fn reset_state(&mut self) {
        self.state = None;
    }
}

/// A tensor's values as f64s, on the host.
fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    if t.is_symbolic() {
        bail!(invalid, "metric state must be values, got a symbolic tensor {:?}", t.shape());
    }
    ops::cast(t, DType::F64)?.to_vec::<f64>()
}

/// A running mean, weighted (the loss in `fit`'s logs).
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
