//! Keras's metric functions: one value per example, which the mean metrics
//! average over examples and batches. The loss-named ones
//! (`keras.metrics.mse`, `binary_crossentropy`, ...) are
//! [`Loss::per_example`](crate::nn::Loss::per_example).

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::nn::losses::squeeze_or_expand_to_same_rank;
use crate::ops::{self, checked};
use crate::tensor::DType;

/// Keras's `epsilon()`, which guards the correlations' divisions.
const EPS: f64 = 1e-7;

/// The float dtype a metric computes in: the predictions' own, or f32
/// (Keras's `floatx`) for integer and boolean predictions.
pub(crate) fn float_dtype(x: &Tensor) -> DType {
    if x.dtype().is_float() {
        x.dtype()
    } else {
        DType::F32
    }
}

/// The dtype Keras compares labels with predictions in: the predictions'
/// own (labels are cast, and truncated, to integer predictions), f32 for
/// boolean ones.
fn compare_dtype(y_pred: &Tensor) -> DType {
    if y_pred.dtype() == DType::Bool {
        DType::F32
    } else {
        y_pred.dtype()
    }
}

/// 1 where `y_true == y_pred`, else 0 (f32).
#[track_caller]
pub fn accuracy(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    checked(
        (|| {
            let (t, p) = squeeze_or_expand_to_same_rank(y_true, y_pred, true)?;
            let dtype = compare_dtype(&p);
            ops::cast(&ops::equal(&ops::cast(&t, dtype)?, &ops::cast(&p, dtype)?)?, DType::F32)
        })(),
        "accuracy",
        &[y_true, y_pred],
    )
}

/// 1 where `y_pred > threshold` agrees with `y_true` (0 or 1), else 0 (f32).
#[track_caller]
pub fn binary_accuracy(y_true: &Tensor, y_pred: &Tensor, threshold: f64) -> Result<Tensor> {
    checked(
        (|| {
            let (t, p) = squeeze_or_expand_to_same_rank(y_true, y_pred, true)?;
            let p = ops::cast(&p, float_dtype(&p))?;
            let predicted = ops::cast(&ops::greater(&p, threshold)?, t.dtype())?;
            ops::cast(&ops::equal(&t, &predicted)?, DType::F32)
        })(),
        "binary_accuracy",
        &[y_true, y_pred],
    )
}

/// 1 where the argmax of the predictions (last axis) is the argmax of the
/// one-hot labels, else 0 (f32).
#[track_caller]
pub fn categorical_accuracy(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    checked(
        (|| {
            let mut t = ops::argmax(y_true, -1)?;
            if t.rank() == y_pred.rank() {
                t = ops::squeeze(&t, &[-1])?;
            }
            ops::cast(&ops::equal(&t, &ops::argmax(y_pred, -1)?)?, DType::F32)
        })(),
        "categorical_accuracy",
        &[y_true, y_pred],
    )
}

/// 1 where the argmax of the predictions (last axis) is the integer label,
/// else 0 (f32). Labels may carry a trailing axis of 1.
#[track_caller]
pub fn sparse_categorical_accuracy(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    checked(
        (|| {
            let mut t = y_true.clone();
            if t.rank() == y_pred.rank() && t.shape().dims().last() == Some(&1) {
                t = ops::squeeze(&t, &[-1])?;
            }
            // Keras compares in the predictions' dtype: a label of 1.5 never
            // matches float predictions' classes.
            let dtype = compare_dtype(y_pred);
            let predicted = ops::cast(&ops::argmax(y_pred, -1)?, dtype)?;
            let mut hits = ops::cast(&ops::equal(&ops::cast(&t, dtype)?, &predicted)?, DType::F32)?;
            if hits.rank() > 1 && hits.shape().dims().last() == Some(&1) {
                hits = ops::squeeze(&hits, &[-1])?;
            }
            Ok(hits)
        })(),
        "sparse_categorical_accuracy",
        &[y_true, y_pred],
    )
}

/// 1 where the one-hot label's class is among the `k` largest predictions
/// (ties at the boundary count as in), else 0 (f32).
#[track_caller]
pub fn top_k_categorical_accuracy(y_true: &Tensor, y_pred: &Tensor, k: usize) -> Result<Tensor> {
    checked(top_k_hits(&ops::argmax(y_true, -1)?, y_pred, k, false), "top_k_categorical_accuracy", &[y_true, y_pred])
}

/// 1 where the integer label is among the `k` largest predictions, else 0
/// (f32). With `from_sorted_ids`, `y_pred` holds class ids, best first, and
/// the label must be among the first `k`.
#[track_caller]
pub fn sparse_top_k_categorical_accuracy(
    y_true: &Tensor,
    y_pred: &Tensor,
    k: usize,
    from_sorted_ids: bool,
) -> Result<Tensor> {
    checked(top_k_hits(y_true, y_pred, k, from_sorted_ids), "sparse_top_k_categorical_accuracy", &[y_true, y_pred])
}

#[track_caller]
fn top_k_hits(labels: &Tensor, y_pred: &Tensor, k: usize, from_sorted_ids: bool) -> Result<Tensor> {
    if y_pred.rank() < 2 {
        bail!(shape, "top-k accuracy needs predictions [batch, classes], got {:?}", y_pred.shape());
    }
    let classes = y_pred.shape().dims()[y_pred.rank() - 1];
    let p = if y_pred.rank() > 2 { ops::reshape(y_pred, &[-1, classes as i64])? } else { y_pred.clone() };
    let t = if labels.rank() > 1 { ops::reshape(labels, &[-1])? } else { labels.clone() };
    let hits = if from_sorted_ids {
        let width = k.min(classes) as i64;
        let first = ops::slice(&p, &[0, 0], &[-1, width])?;
        let dtype = compare_dtype(&first);
        let eq = ops::equal(&ops::expand_dims(&ops::cast(&t, dtype)?, 1)?, &ops::cast(&first, dtype)?)?;
        ops::any(&eq, 1, false)?
    } else {
        ops::in_top_k(&ops::cast(&t, DType::I64)?, &p, k)?
    };
    let hits = ops::cast(&hits, DType::F32)?;
    if labels.rank() > 1 {
        ops::reshape_like(&hits, labels)
    } else {
        Ok(hits)
    }
}

/// The cosine of the angle between labels and predictions along `axis`.
#[track_caller]
pub fn cosine_similarity(y_true: &Tensor, y_pred: &Tensor, axis: i64) -> Result<Tensor> {
    ops::neg(&crate::nn::Loss::CosineSimilarity { axis }.per_example(y_true, y_pred)?)
}

/// Pearson's correlation of labels and predictions along `axis`, one per
/// example (population standard deviations, as Keras).
#[track_caller]
pub fn pearson_correlation(y_true: &Tensor, y_pred: &Tensor, axis: i64) -> Result<Tensor> {
    checked(
        (|| {
            let (t, p) = aligned_floats(y_true, y_pred)?;
            let standardize = |x: &Tensor| -> Result<Tensor> {
                let centered = ops::sub(x, &ops::mean(x, axis, true)?)?;
                let sd = ops::sqrt(&ops::variance(&centered, axis, true)?)?;
                ops::div(&centered, &sd)
            };
            ops::mean(&ops::mul(&standardize(&t)?, &standardize(&p)?)?, axis, false)
        })(),
        "pearson_correlation",
        &[y_true, y_pred],
    )
}

/// Lin's concordance correlation of labels and predictions along `axis`,
/// one per example, as Keras 3 computes it: its covariance term centres the
/// labels on the predictions' mean (see docs/DIFFERENCES.md).
#[track_caller]
pub fn concordance_correlation(y_true: &Tensor, y_pred: &Tensor, axis: i64) -> Result<Tensor> {
    checked(
        (|| {
            let (t, p) = aligned_floats(y_true, y_pred)?;
            let (t_mean, p_mean) = (ops::mean(&t, axis, true)?, ops::mean(&p, axis, true)?);
            let t_var = ops::variance(&ops::sub(&t, &t_mean)?, axis, true)?;
            let p_var = ops::variance(&ops::sub(&p, &p_mean)?, axis, true)?;
            let covar = ops::mul(&ops::sub(&t, &p_mean)?, &ops::sub(&p, &p_mean)?)?;
            let norm = ops::add(&ops::add(&t_var, &p_var)?, &ops::square(&ops::sub(&t_mean, &p_mean)?)?)?;
            ops::mean(&ops::div(&ops::mul(&covar, 2.0)?, &ops::add(&norm, EPS)?)?, axis, false)
        })(),
        "concordance_correlation",
        &[y_true, y_pred],
    )
}

/// Labels in the predictions' float dtype, ranks aligned.
#[track_caller]
fn aligned_floats(y_true: &Tensor, y_pred: &Tensor) -> Result<(Tensor, Tensor)> {
    let dtype = float_dtype(y_pred);
    let (t, p) = squeeze_or_expand_to_same_rank(y_true, y_pred, true)?;
    Ok((ops::cast(&t, dtype)?, ops::cast(&p, dtype)?))
}
