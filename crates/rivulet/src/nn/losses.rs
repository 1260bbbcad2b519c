//! Losses, averaged over the batch. The cross-entropies take logits (or
//! probabilities with `from_logits: false`) and are computed stably.

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, checked, Axes};
use crate::tensor::DType;

/// A loss for [`Sequential::compile`](super::Sequential::compile): Keras's
/// loss classes with their defaults. [`Loss::per_example`] is Keras's loss
/// function (one value per example, reduced over the last axis);
/// [`Loss::compute`] averages it over the batch as Keras's default
/// `sum_over_batch_size` reduction does, [`Loss::compute_with`] takes the
/// reduction and sample weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    MeanSquaredError,
    MeanAbsoluteError,
    /// `100 |y - p| / max(|y|, eps)`, averaged over the last axis.
    MeanAbsolutePercentageError,
    /// `(log(1 + max(p, eps)) - log(1 + max(y, eps)))^2`, averaged over the last axis.
    MeanSquaredLogarithmicError,
    /// Quadratic within `delta` of the target, linear beyond.
    Huber {
        delta: f64,
    },
    /// `log(cosh(p - y))`, averaged over the last axis.
    LogCosh,
    /// `max(1 - y p, 0)` with labels in {-1, 1} (0/1 labels are converted).
    Hinge,
    /// `max(1 - y p, 0)^2` with labels in {-1, 1} (0/1 labels are converted).
    SquaredHinge,
    /// `max(max((1 - y) p) - sum(y p) + 1, 0)` over one-hot labels.
    CategoricalHinge,
    /// `-cosine(y, p)` along `axis`.
    CosineSimilarity {
        axis: i64,
    },
    /// `sum(y log(y / p))` over the last axis, both clipped to `[eps, 1]`.
    KLDivergence,
    /// `p - y log(p + eps)`, averaged over the last axis.
    Poisson,
    /// Targets in {0, 1}; predictions one per target. `label_smoothing`
    /// pulls the targets towards 1/2.
    BinaryCrossentropy {
        from_logits: bool,
        label_smoothing: f64,
    },
    /// Binary cross-entropy scaled by `(1 - p_t)^gamma` (Lin et al. 2017),
    /// optionally by `alpha` for positives and `1 - alpha` for negatives.
    BinaryFocalCrossentropy {
        apply_class_balancing: bool,
        alpha: f64,
        gamma: f64,
        from_logits: bool,
        label_smoothing: f64,
    },
    /// One-hot (or soft) targets over the last axis. `label_smoothing`
    /// pulls them towards uniform.
    CategoricalCrossentropy {
        from_logits: bool,
        label_smoothing: f64,
    },
    /// Categorical cross-entropy scaled by `alpha (1 - p)^gamma`.
    CategoricalFocalCrossentropy {
        alpha: f64,
        gamma: f64,
        from_logits: bool,
        label_smoothing: f64,
    },
    /// Integer class targets.
    SparseCategoricalCrossentropy {
        from_logits: bool,
    },
    /// `(1 - p_y^q) / q` for integer class targets and probabilities (Zhang and Sabuncu 2018).
    CategoricalGeneralizedCrossEntropy {
        q: f64,
    },
    /// `1 - 2 sum(y p) / (sum(y) + sum(p) + eps)` over the whole batch.
    Dice,
    /// `1 - tp / (tp + alpha fp + beta fn + eps)` over the whole batch.
    Tversky {
        alpha: f64,
        beta: f64,
    },
    /// CTC ([`ops::ctc_loss`]) of logits `[batch, time, classes]` against
    /// integer labels `[batch, length]` padded with 0, class 0 the blank
    /// (Keras's `CTC`).
    Ctc,
    /// Circle loss (Sun et al. 2020) of L2-normalized embeddings `[batch,
    /// dim]` with integer labels `[batch]`: pairs of one label pulled
    /// together and pairs of different labels pushed apart, each weighted by
    /// how far it is from its optimum. Examples without a positive pair
    /// lose 0 and, as in Keras, are left out of the batch mean.
    Circle {
        gamma: f64,
        margin: f64,
        /// Leave each example's pair with itself out of its positives.
        remove_diagonal: bool,
    },
}

/// How [`Loss::compute_with`] combines the per-example losses (Keras's `reduction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The weighted sum divided by the number of per-example values (Keras's default).
    #[default]
    SumOverBatchSize,
    /// The weighted sum.
    Sum,
    /// The weighted sum divided by the sum of the weights.
    MeanWithSampleWeight,
    /// The weighted per-example losses themselves.
    None,
}

/// Keras's `epsilon()`: probabilities are clipped to `[EPS, 1 - EPS]` before
/// taking logs, and it guards the divisions.
const EPS: f64 = 1e-7;

impl Loss {
    /// The mean loss over the batch (Keras's `sum_over_batch_size`).
    #[track_caller]
    pub fn compute(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        self.compute_with(y_true, y_pred, Reduction::SumOverBatchSize, None)
    }

    /// The per-example losses, weighted by `sample_weight` (broadcast against
    /// them) and reduced by `reduction`.
    #[track_caller]
    pub fn compute_with(
        &self,
        y_true: &Tensor,
        y_pred: &Tensor,
        reduction: Reduction,
        sample_weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        checked(self.reduced(y_true, y_pred, reduction, sample_weight), self.op_name(), &[y_true, y_pred])
    }

    #[track_caller]
    fn reduced(
        &self,
        y_true: &Tensor,
        y_pred: &Tensor,
        reduction: Reduction,
        sample_weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        let per = self.per_example_parts(y_true, y_pred)?;
        let mut weight = sample_weight.map(|w| ops::cast(w, per.dtype())).transpose()?;
        if let Loss::Circle { .. } = self {
            // Keras masks the zero losses: the batch mean is over the rest.
            let valid = ops::greater(&per, 0.0)?;
            let mask = match reduction {
                Reduction::SumOverBatchSize => {
                    let count = ops::sum(&ops::cast(&valid, per.dtype())?, Axes::All, false)?;
                    let total = ops::cast(&ops::size(&per, DType::I64)?, per.dtype())?;
                    ops::select(&valid, &ops::div_no_nan(&total, &count)?, 0.0)?
                }
                _ => ops::cast(&valid, per.dtype())?,
            };
            weight = Some(match weight {
                Some(w) => ops::mul(&w, &mask)?,
                None => mask,
            });
        }
        let weighted = match &weight {
            Some(w) => ops::mul(&per, w)?,
            None => per.clone(),
        };
        match reduction {
            Reduction::None => Ok(weighted),
            Reduction::Sum => ops::sum(&weighted, Axes::All, false),
            Reduction::SumOverBatchSize => ops::mean(&weighted, Axes::All, false),
            Reduction::MeanWithSampleWeight => match &weight {
                Some(w) => {
                    let total = ops::sum(&ops::mul(&ops::ones_like(&per)?, w)?, Axes::All, false)?;
                    ops::div_no_nan(&ops::sum(&weighted, Axes::All, false)?, &total)
                }
                None => ops::mean(&per, Axes::All, false),
            },
        }
    }

    /// Keras's loss function: one loss per example (the last axis reduced;
    /// `Dice` and `Tversky` reduce everything).
    #[track_caller]
    pub fn per_example(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        checked(self.per_example_parts(y_true, y_pred), self.op_name(), &[y_true, y_pred])
    }

    /// The op name errors report (Keras's class name).
    fn op_name(&self) -> &'static str {
        match self {
            Loss::MeanSquaredError => "MeanSquaredError",
            Loss::MeanAbsoluteError => "MeanAbsoluteError",
            Loss::MeanAbsolutePercentageError => "MeanAbsolutePercentageError",
            Loss::MeanSquaredLogarithmicError => "MeanSquaredLogarithmicError",
            Loss::Huber { .. } => "Huber",
            Loss::LogCosh => "LogCosh",
            Loss::Hinge => "Hinge",
            Loss::SquaredHinge => "SquaredHinge",
            Loss::CategoricalHinge => "CategoricalHinge",
            Loss::CosineSimilarity { .. } => "CosineSimilarity",
            Loss::KLDivergence => "KLDivergence",
            Loss::Poisson => "Poisson",
            Loss::BinaryCrossentropy { .. } => "BinaryCrossentropy",
            Loss::BinaryFocalCrossentropy { .. } => "BinaryFocalCrossentropy",
            Loss::CategoricalCrossentropy { .. } => "CategoricalCrossentropy",
            Loss::CategoricalFocalCrossentropy { .. } => "CategoricalFocalCrossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "SparseCategoricalCrossentropy",
            Loss::CategoricalGeneralizedCrossEntropy { .. } => "CategoricalGeneralizedCrossEntropy",
            Loss::Dice => "Dice",
            Loss::Tversky { .. } => "Tversky",
            Loss::Ctc => "CTC",
            Loss::Circle { .. } => "Circle",
        }
    }

    #[track_caller]
    fn per_example_parts(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let dtype = y_pred.dtype();
        // Keras's loss functions first align ranks that differ by a trailing
        // axis of 1: labels [batch] against predictions [batch, 1].
        let aligned = match self {
            Loss::Ctc | Loss::Circle { .. } => None,
            _ => Some(squeeze_or_expand_to_same_rank(y_true, y_pred, true)?),
        };
        let (y_true, y_pred) = match &aligned {
            Some((t, p)) => (t, p),
            None => (y_true, y_pred),
        };
        match *self {
            Loss::MeanSquaredError => mean_last(&ops::square(&ops::sub(y_pred, &ops::cast(y_true, dtype)?)?)?),
            Loss::MeanAbsoluteError => mean_last(&ops::abs(&ops::sub(y_pred, &ops::cast(y_true, dtype)?)?)?),
            Loss::MeanAbsolutePercentageError => {
                let y = ops::cast(y_true, dtype)?;
                let d = ops::abs(&ops::div(&ops::sub(&y, y_pred)?, &ops::maximum(&ops::abs(&y)?, EPS)?)?)?;
                ops::mul(&mean_last(&d)?, 100.0)
            }
            Loss::MeanSquaredLogarithmicError => {
                let first = ops::log1p(&ops::maximum(y_pred, EPS)?)?;
                let second = ops::log1p(&ops::maximum(&ops::cast(y_true, dtype)?, EPS)?)?;
                mean_last(&ops::square(&ops::sub(&first, &second)?)?)
            }
            Loss::Huber { delta } => mean_last(&huber_elements(&ops::cast(y_true, dtype)?, y_pred, delta)?),
            Loss::LogCosh => {
                let x = ops::sub(y_pred, &ops::cast(y_true, dtype)?)?;
                let lc = ops::sub(&ops::add(&x, &ops::softplus(&ops::mul(&x, -2.0)?)?)?, std::f64::consts::LN_2)?;
                mean_last(&lc)
            }
            Loss::Hinge => {
                mean_last(&ops::relu(&ops::sub(1.0, &ops::mul(&hinge_labels(&ops::cast(y_true, dtype)?)?, y_pred)?)?)?)
            }
            Loss::SquaredHinge => mean_last(&ops::square(&ops::relu(&ops::sub(
                1.0,
                &ops::mul(&hinge_labels(&ops::cast(y_true, dtype)?)?, y_pred)?,
            )?)?)?),
            Loss::CategoricalHinge => {
                let y = ops::cast(y_true, dtype)?;
                let pos = ops::sum(&ops::mul(&y, y_pred)?, -1, false)?;
                let neg = ops::max(&ops::mul(&ops::sub(1.0, &y)?, y_pred)?, -1, false)?;
                ops::maximum(&ops::add(&ops::sub(&neg, &pos)?, 1.0)?, 0.0)
            }
            Loss::CosineSimilarity { axis } => {
                let a = ops::l2_normalize(&ops::cast(y_true, dtype)?, axis, 1e-12)?;
                let b = ops::l2_normalize(y_pred, axis, 1e-12)?;
                ops::neg(&ops::sum(&ops::mul(&a, &b)?, axis, false)?)
            }
            Loss::KLDivergence => {
                let yt = ops::clip_by_value(&ops::cast(y_true, dtype)?, EPS, 1.0)?;
                let p = ops::clip_by_value(y_pred, EPS, 1.0)?;
                ops::sum(&ops::mul(&yt, &ops::log(&ops::div(&yt, &p)?)?)?, -1, false)
            }
            Loss::Poisson => mean_last(&ops::sub(
                y_pred,
                &ops::mul(&ops::cast(y_true, dtype)?, &ops::log(&ops::add(y_pred, EPS)?)?)?,
            )?),
            Loss::BinaryCrossentropy { from_logits, label_smoothing } => {
                let y = smooth_binary(ops::cast(y_true, dtype)?, label_smoothing)?;
                mean_last(&binary_elements(&y, y_pred, from_logits)?)
            }
            Loss::BinaryFocalCrossentropy { apply_class_balancing, alpha, gamma, from_logits, label_smoothing } => {
                let y = smooth_binary(ops::cast(y_true, dtype)?, label_smoothing)?;
                let p = if from_logits { ops::sigmoid(y_pred)? } else { y_pred.clone() };
                let bce = binary_elements(&y, &p, false)?;
                let p_t = ops::add(&ops::mul(&y, &p)?, &ops::mul(&ops::sub(1.0, &y)?, &ops::sub(1.0, &p)?)?)?;
                let mut focal = ops::mul(&ops::pow(&ops::sub(1.0, &p_t)?, gamma)?, &bce)?;
                if apply_class_balancing {
                    let w = ops::add(&ops::mul(&y, alpha)?, &ops::mul(&ops::sub(1.0, &y)?, 1.0 - alpha)?)?;
                    focal = ops::mul(&w, &focal)?;
                }
                mean_last(&focal)
            }
            Loss::CategoricalCrossentropy { from_logits, label_smoothing } => {
                let y = smooth_categorical(ops::cast(y_true, dtype)?, label_smoothing, y_pred)?;
                ops::neg(&ops::sum(&ops::mul(&y, &log_probs(y_pred, from_logits)?)?, -1, false)?)
            }
            Loss::CategoricalFocalCrossentropy { alpha, gamma, from_logits, label_smoothing } => {
                let y = smooth_categorical(ops::cast(y_true, dtype)?, label_smoothing, y_pred)?;
                let p = if from_logits { ops::softmax(y_pred, -1)? } else { y_pred.clone() };
                let p = ops::clip_by_value(&ops::div(&p, &ops::sum(&p, -1, true)?)?, EPS, 1.0 - EPS)?;
                let cce = ops::neg(&ops::mul(&y, &ops::log(&p)?)?)?;
                let w = ops::mul(&ops::pow(&ops::sub(1.0, &p)?, gamma)?, alpha)?;
                ops::sum(&ops::mul(&w, &cce)?, -1, false)
            }
            Loss::SparseCategoricalCrossentropy { from_logits } => {
                sparse_per_example(y_true, &log_probs(y_pred, from_logits)?)
            }
            Loss::CategoricalGeneralizedCrossEntropy { q } => {
                if q <= 0.0 || q > 1.0 {
                    bail!(invalid, "categorical_generalized_cross_entropy needs q in (0, 1], got {q}");
                }
                let classes = y_pred.shape().dims().last().copied().unwrap_or(0);
                let onehot = ops::one_hot_with(&ops::cast(y_true, DType::I64)?, classes, 1.0, 0.0, -1, dtype)?;
                let p = ops::sum(&ops::mul(y_pred, &onehot)?, -1, false)?;
                ops::div(&ops::sub(1.0, &ops::pow(&p, q)?)?, q)
            }
            Loss::Dice => {
                let y = ops::cast(y_true, dtype)?;
                let inter = ops::sum(&ops::mul(&y, y_pred)?, Axes::All, false)?;
                let total =
                    ops::add(&ops::add(&ops::sum(&y, Axes::All, false)?, &ops::sum(y_pred, Axes::All, false)?)?, EPS)?;
                ops::sub(1.0, &ops::div(&ops::mul(&inter, 2.0)?, &total)?)
            }
            Loss::Ctc => {
                let (batch, time) = match y_pred.shape().dims() {
                    [b, t, _] => (*b, *t),
                    _ => bail!(shape, "CTC needs predictions [batch, time, classes], got {:?}", y_pred.shape()),
                };
                let label_length = ops::count_nonzero(y_true, -1, false)?;
                let logit_length = ops::fill(ops::Ctx::of(y_pred), [batch], time as i64, DType::I64)?;
                ops::ctc_loss(y_true, y_pred, &label_length, &logit_length, 0)
            }
            Loss::Circle { gamma, margin, remove_diagonal } => circle(y_true, y_pred, gamma, margin, remove_diagonal),
            Loss::Tversky { alpha, beta } => {
                let y = ops::cast(y_true, dtype)?;
                let tp = ops::sum(&ops::mul(&y, y_pred)?, Axes::All, false)?;
                let fp = ops::sum(&ops::mul(&ops::sub(1.0, y_pred)?, &y)?, Axes::All, false)?;
                let fneg = ops::sum(&ops::mul(y_pred, &ops::sub(1.0, &y)?)?, Axes::All, false)?;
                let denom =
                    ops::add(&ops::add(&ops::add(&tp, &ops::mul(&fp, alpha)?)?, &ops::mul(&fneg, beta)?)?, EPS)?;
                ops::sub(1.0, &ops::div(&tp, &denom)?)
            }
        }
    }

    /// The Keras name (`loss` in the progress bar is always "loss").
    pub fn name(&self) -> &'static str {
        match self {
            Loss::MeanSquaredError => "mean_squared_error",
            Loss::MeanAbsoluteError => "mean_absolute_error",
            Loss::MeanAbsolutePercentageError => "mean_absolute_percentage_error",
            Loss::MeanSquaredLogarithmicError => "mean_squared_logarithmic_error",
            Loss::Huber { .. } => "huber",
            Loss::LogCosh => "log_cosh",
            Loss::Hinge => "hinge",
            Loss::SquaredHinge => "squared_hinge",
            Loss::CategoricalHinge => "categorical_hinge",
            Loss::CosineSimilarity { .. } => "cosine_similarity",
            Loss::KLDivergence => "kl_divergence",
            Loss::Poisson => "poisson",
            Loss::BinaryCrossentropy { .. } => "binary_crossentropy",
            Loss::BinaryFocalCrossentropy { .. } => "binary_focal_crossentropy",
            Loss::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            Loss::CategoricalFocalCrossentropy { .. } => "categorical_focal_crossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
            Loss::CategoricalGeneralizedCrossEntropy { .. } => "categorical_generalized_cross_entropy",
            Loss::Dice => "dice",
            Loss::Tversky { .. } => "tversky",
            Loss::Ctc => "ctc",
            Loss::Circle { .. } => "circle",
        }
    }
}

/// Binary targets pulled towards 1/2: `y (1 - s) + s / 2` (Keras's `label_smoothing`).
fn smooth_binary(y: Tensor, smoothing: f64) -> Result<Tensor> {
    if smoothing == 0.0 {
        return Ok(y);
    }
    ops::add(&ops::mul(&y, 1.0 - smoothing)?, 0.5 * smoothing)
}

/// One-hot targets pulled towards uniform over the last axis of `pred`:
/// `y (1 - s) + s / classes` (Keras's `label_smoothing`).
fn smooth_categorical(y: Tensor, smoothing: f64, pred: &Tensor) -> Result<Tensor> {
    if smoothing == 0.0 {
        return Ok(y);
    }
    let classes = pred.shape().dims().last().copied().unwrap_or(1) as f64;
    ops::add(&ops::mul(&y, 1.0 - smoothing)?, smoothing / classes)
}

/// Keras's circle loss per example (see [`Loss::Circle`]).
fn circle(labels: &Tensor, embeddings: &Tensor, gamma: f64, margin: f64, remove_diagonal: bool) -> Result<Tensor> {
    let b = match embeddings.shape().dims() {
        [b, _] => *b,
        _ => bail!(shape, "Circle needs embeddings [batch, dim], got {:?}", embeddings.shape()),
    };
    let labels = ops::reshape(&ops::cast(labels, DType::I64)?, &[-1, 1])?;
    if labels.shape().dims() != [b, 1] {
        bail!(shape, "Circle needs one integer label per embedding ({b}), got {:?}", labels.shape());
    }
    let distance = ops::maximum(&ops::sub(1.0, &ops::matmul_t(embeddings, embeddings, false, true)?)?, 0.0)?;
    let mut positive = ops::equal(&labels, &ops::transpose(&labels, &[1, 0])?)?;
    let negative = ops::logical_not(&positive)?;
    if remove_diagonal {
        // Row numbers made at run time (the batch may be unknown in a graph).
        let row = ops::cumsum(&ops::ones_like(&labels)?, 0, false, false)?;
        let diagonal = ops::equal(&row, &ops::transpose(&row, &[1, 0])?)?;
        positive = ops::logical_and(&positive, &ops::logical_not(&diagonal)?)?;
    }
    let dtype = embeddings.dtype();
    let (pos_mask, neg_mask) = (ops::cast(&positive, dtype)?, ops::cast(&negative, dtype)?);
    let pos_weight = ops::maximum(&ops::mul(&ops::add(&distance, margin)?, &pos_mask)?, 0.0)?;
    let neg_weight = ops::maximum(&ops::mul(&ops::sub(1.0 + margin, &distance)?, &neg_mask)?, 0.0)?;
    let pos = ops::mul(&ops::mul(&pos_weight, &ops::sub(margin, &distance)?)?, -gamma)?;
    let neg = ops::mul(&ops::mul(&neg_weight, &ops::sub(1.0 - margin, &distance)?)?, gamma)?;
    let p = ops::logsumexp(&ops::select(&positive, &pos, f64::NEG_INFINITY)?, 1, false)?;
    let n = ops::logsumexp(&ops::select(&negative, &neg, f64::NEG_INFINITY)?, 1, false)?;
    ops::softplus(&ops::add(&p, &n)?)
}

/// Keras's rank alignment of two tensors whose ranks differ by one: where
/// the longer one ends in an axis of 1, that axis is squeezed, or (with
/// `expand_rank_1`, when the shorter one is a vector) the vector gets a
/// trailing axis of 1. Other pairs are returned as they are.
#[track_caller]
pub fn squeeze_or_expand_to_same_rank(a: &Tensor, b: &Tensor, expand_rank_1: bool) -> Result<(Tensor, Tensor)> {
    let (ra, rb) = (a.rank(), b.rank());
    let (mut a, mut b) = (a.clone(), b.clone());
    if ra == rb + 1 && a.shape().dims().last() == Some(&1) {
        if rb == 1 && expand_rank_1 {
            b = ops::expand_dims(&b, -1)?;
        } else {
            a = ops::squeeze(&a, &[-1])?;
        }
    } else if rb == ra + 1 && b.shape().dims().last() == Some(&1) {
        if ra == 1 && expand_rank_1 {
            a = ops::expand_dims(&a, -1)?;
        } else {
            b = ops::squeeze(&b, &[-1])?;
        }
    }
    Ok((a, b))
}

/// The mean of all of `t`'s elements.
#[track_caller]
fn mean_all(t: Result<Tensor>) -> Result<Tensor> {
    ops::mean(&t?, Axes::All, false)
}

/// The mean over the last axis.
#[track_caller]
fn mean_last(t: &Tensor) -> Result<Tensor> {
    ops::mean(t, -1, false)
}

/// Hinge labels: {0, 1} labels become {-1, 1}; other labels stay (Keras's rule).
#[track_caller]
fn hinge_labels(y: &Tensor) -> Result<Tensor> {
    let binary = ops::all(&ops::logical_or(&ops::equal(y, 0.0)?, &ops::equal(y, 1.0)?)?, Axes::All, false)?;
    ops::select(&binary, &ops::sub(&ops::mul(y, 2.0)?, 1.0)?, y)
}

/// Elementwise binary cross-entropy: from logits stably, from probabilities
/// as Keras (clipped to `[eps, 1 - eps]`).
#[track_caller]
fn binary_elements(y: &Tensor, y_pred: &Tensor, from_logits: bool) -> Result<Tensor> {
    if from_logits {
        return ops::sigmoid_cross_entropy_with_logits(y, y_pred);
    }
    let p = ops::clip_by_value(y_pred, EPS, 1.0 - EPS)?;
    let pos = ops::mul(y, &ops::log(&p)?)?;
    let neg = ops::mul(&ops::sub(1.0, y)?, &ops::log(&ops::sub(1.0, &p)?)?)?;
    ops::neg(&ops::add(&pos, &neg)?)
}

#[track_caller]
fn huber_elements(y: &Tensor, y_pred: &Tensor, delta: f64) -> Result<Tensor> {
    if delta <= 0.0 || !delta.is_finite() {
        bail!(invalid, "huber delta must be positive, got {delta}");
    }
    let e = ops::abs(&ops::sub(y_pred, y)?)?;
    let quad = ops::mul(&ops::square(&e)?, 0.5)?;
    let lin = ops::mul(&ops::sub(&e, 0.5 * delta)?, delta)?;
    ops::select(&ops::less_equal(&e, delta)?, &quad, &lin)
}

/// Log-probabilities over the last axis: from logits stably, from
/// probabilities as Keras (renormalized to sum to 1, then clipped to
/// `[eps, 1 - eps]`, so the gradient reaches every class).
#[track_caller]
fn log_probs(y_pred: &Tensor, from_logits: bool) -> Result<Tensor> {
    if y_pred.rank() == 0 {
        bail!(shape, "cross-entropy needs predictions with a class axis, got a scalar");
    }
    if from_logits {
        ops::log_softmax(y_pred, -1)
    } else {
        let p = ops::div(y_pred, &ops::sum(y_pred, -1, true)?)?;
        ops::log(&ops::clip_by_value(&p, EPS, 1.0 - EPS)?)
    }
}

/// `mean((y_pred - y_true)^2)`.
#[track_caller]
pub fn mean_squared_error(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    Loss::MeanSquaredError.compute(y_true, y_pred)
}

/// `mean(|y_pred - y_true|)`.
#[track_caller]
pub fn mean_absolute_error(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    Loss::MeanAbsoluteError.compute(y_true, y_pred)
}

/// Huber loss: `0.5 e^2` for `|e| <= delta`, else `delta (|e| - delta / 2)`, averaged.
#[track_caller]
pub fn huber(y_true: &Tensor, y_pred: &Tensor, delta: f64) -> Result<Tensor> {
    Loss::Huber { delta }.compute(y_true, y_pred)
}

/// Mean binary cross-entropy from logits `z`: `max(z, 0) - z y + log(1 + e^-|z|)`,
/// with TensorFlow's kinks: both `max` and `|z|` take the `z >= 0` branch at
/// 0, so the gradient is `sigmoid(z) - y` there too (0.5 - y, not -y).
#[track_caller]
pub fn binary_crossentropy_with_logits(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 }.compute(labels, logits)
}

/// Sparse categorical cross-entropy from log-probabilities `logp` (last axis)
/// and integer class labels.
#[track_caller]
pub fn sparse_categorical_crossentropy(labels: &Tensor, logp: &Tensor) -> Result<Tensor> {
    checked(mean_all(sparse_per_example(labels, logp)), "SparseCategoricalCrossentropy", &[labels, logp])
}

/// `-logp[label]` per example.
#[track_caller]
fn sparse_per_example(labels: &Tensor, logp: &Tensor) -> Result<Tensor> {
    let Some(&classes) = logp.shape().dims().last() else {
        bail!(shape, "sparse cross-entropy needs predictions with a class axis, got a scalar");
    };
    let onehot = ops::one_hot_with(labels, classes, 1.0, 0.0, -1, logp.dtype())?;
    ops::neg(&ops::sum(&ops::mul(&onehot, logp)?, -1, false)?)
}

/// Mean sparse softmax cross-entropy of `logits` against integer `labels`.
#[track_caller]
pub fn sparse_softmax_cross_entropy(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    checked(
        mean_all(ops::sparse_softmax_cross_entropy_with_logits(labels, logits)),
        "SparseSoftmaxCrossEntropyWithLogits",
        &[labels, logits],
    )
}
