//! Neural-network helpers that are ops of their own: `softmax`,
//! `log_softmax` (composites with a fused CPU kernel) and `top_k`.

use super::{apply, apply1, checked, creation as cr, elementwise as ew, movement as mv, reduce, Axes, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::window::Padding;
use crate::tensor::shape::normalize_axis;

/// `exp(x) / sum(exp(x))` along `axis` (`-1`: the last), shifted by the
/// maximum so that large inputs do not overflow.
#[track_caller]
pub fn softmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, x.rank()), "Softmax", &[x])?;
    apply1(Op::Softmax { axis }, &[x])
}

/// `x - logsumexp(x)` along `axis`, computed stably.
#[track_caller]
pub fn log_softmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, x.rank()), "LogSoftmax", &[x])?;
    apply1(Op::LogSoftmax { axis }, &[x])
}

/// The `k` largest entries along the last axis, largest first, and their
/// indices (i32); ties keep the lower index first.
#[track_caller]
pub fn top_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let mut out = apply(Op::TopK { k, sorted: true }, &[x])?;
    let indices = out.pop();
    let values = out.pop();
    match (values, indices) {
        (Some(v), Some(i)) => Ok((v, i)),
        _ => bail!(graph, "top_k produced no outputs"),
    }
}

/// Gradient of softmax / log-softmax along `axis`, from its output `y`.
pub(crate) fn softmax_grad(log: bool, axis: usize, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let axis = axis as i64;
    if log {
        // d/dx (x - logsumexp x) applied to g: g - softmax(x) * sum(g)
        ew::sub(g, &ew::mul(&ew::exp(y)?, &reduce::sum(g, axis, true)?)?)
    } else {
        // y * (g - sum(g * y))
        ew::mul(y, &ew::sub(g, &reduce::sum(&ew::mul(g, y)?, axis, true)?)?)
    }
}

// ---------------------------------------------------------------------------
// tf.nn functions composed of the primitive ops
// ---------------------------------------------------------------------------

/// `x` where positive, else `alpha * x` (TensorFlow's default `alpha` is 0.2).
#[track_caller]
pub fn leaky_relu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    ew::select(&ew::greater(x, 0.0)?, x, &ew::mul(x, alpha)?)
}

/// `log(sigmoid(x))`, as `-softplus(-x)` (no overflow either way).
#[track_caller]
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    ew::neg(&ew::softplus(&ew::neg(x)?)?)
}

/// `x / (1 + |x|)`.
#[track_caller]
pub fn softsign(x: &Tensor) -> Result<Tensor> {
    ew::div(x, &ew::add(&ew::abs(x)?, 1.0)?)
}

/// `x * sigmoid(beta * x)` (TensorFlow's `silu`, also called `swish`).
#[doc(alias = "swish")]
#[track_caller]
pub fn silu(x: &Tensor, beta: f64) -> Result<Tensor> {
    let z = if beta == 1.0 { x.clone() } else { ew::mul(x, beta)? };
    ew::mul(x, &ew::sigmoid(&z)?)
}

/// GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
/// (TensorFlow's `gelu(approximate=True)`; [`ew::gelu`] is the exact form).
#[track_caller]
pub fn gelu_approximate(x: &Tensor) -> Result<Tensor> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = ew::mul(&ew::add(x, &ew::mul(&ew::mul(&ew::square(x)?, x)?, 0.044715)?)?, c)?;
    ew::mul(&ew::mul(x, 0.5)?, &ew::add(&ew::tanh(&inner)?, 1.0)?)
}

/// `concat([relu(x), relu(-x)], axis)`: both signs, doubling `axis`.
#[track_caller]
pub fn crelu(x: &Tensor, axis: i64) -> Result<Tensor> {
    mv::concat(&[&ew::relu(x)?, &ew::relu(&ew::neg(x)?)?], axis)
}

/// `x + bias`, with `bias` (a vector) along the last axis.
#[track_caller]
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let last = x.rank().checked_sub(1).and_then(|a| x.shape().dim(a));
    if bias.rank() != 1 || (last.is_some() && bias.shape().dim(0) != last) {
        bail!(
            shape,
            "bias_add needs a bias vector as long as the last axis, got {:?} for {:?}",
            bias.shape(),
            x.shape()
        );
    }
    ew::add(x, bias)
}

/// `sum(x^2) / 2`.
#[track_caller]
pub fn l2_loss(x: &Tensor) -> Result<Tensor> {
    ew::mul(&reduce::sum(&ew::square(x)?, Axes::All, false)?, 0.5)
}

/// `x / sqrt(max(sum(x^2, axes), epsilon))` (TensorFlow's default epsilon is 1e-12).
#[track_caller]
pub fn l2_normalize(x: &Tensor, axes: impl Into<Axes>, epsilon: f64) -> Result<Tensor> {
    let ss = reduce::sum(&ew::square(x)?, axes, true)?;
    ew::mul(x, &ew::rsqrt(&ew::maximum(&ss, epsilon)?)?)
}

/// Mean and variance over `axes`.
#[track_caller]
pub fn moments(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<(Tensor, Tensor)> {
    let axes = axes.into();
    let m = reduce::mean(x, axes.clone(), true)?;
    let v = reduce::mean(&ew::squared_difference(x, &mv::stop_gradient(&m)?)?, axes.clone(), keepdims)?;
    let m = if keepdims { m } else { reduce::mean(x, axes, false)? };
    Ok((m, v))
}

/// Frequency-weighted mean and variance over `axes`.
#[track_caller]
pub fn weighted_moments(
    x: &Tensor,
    axes: impl Into<Axes>,
    weights: &Tensor,
    keepdims: bool,
) -> Result<(Tensor, Tensor)> {
    let axes = axes.into();
    let w = ew::add(&ew::mul(x, 0.0)?, weights)?;
    let total = reduce::sum(&w, axes.clone(), true)?;
    let m = ew::div_no_nan(&reduce::sum(&ew::mul(x, &w)?, axes.clone(), true)?, &total)?;
    let v = ew::div_no_nan(
        &reduce::sum(&ew::mul(&ew::squared_difference(x, &mv::stop_gradient(&m)?)?, &w)?, axes.clone(), true)?,
        &total,
    )?;
    if keepdims {
        return Ok((m, v));
    }
    let drop: Vec<i64> = axes.resolve(x.rank())?.into_iter().map(|a| a as i64).collect();
    Ok((mv::squeeze(&m, &drop)?, mv::squeeze(&v, &drop)?))
}

/// The sufficient statistics of `x` over `axes`: the count, the (shifted)
/// sum and sum of squares; `normalize_moments` turns them into moments.
#[track_caller]
pub fn sufficient_statistics(
    x: &Tensor,
    axes: impl Into<Axes>,
    shift: Option<&Tensor>,
    keepdims: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let axes = axes.into();
    let resolved = axes.resolve(x.rank())?;
    let count: usize = resolved.iter().map(|&a| x.shape().dim(a).unwrap_or(0)).product();
    let count = ew::cast(&ew::add(&ew::mul(&reduce::sum(x, Axes::All, false)?, 0.0)?, count as f64)?, x.dtype())?;
    let shifted = match shift {
        Some(s) => ew::sub(x, s)?,
        None => x.clone(),
    };
    Ok((count, reduce::sum(&shifted, axes.clone(), keepdims)?, reduce::sum(&ew::square(&shifted)?, axes, keepdims)?))
}

/// Mean and variance from sufficient statistics.
#[track_caller]
pub fn normalize_moments(
    counts: &Tensor,
    mean_ss: &Tensor,
    variance_ss: &Tensor,
    shift: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let divisor = ew::reciprocal(counts)?;
    let shifted_mean = ew::mul(mean_ss, &divisor)?;
    let mean = match shift {
        Some(s) => ew::add(&shifted_mean, s)?,
        None => shifted_mean.clone(),
    };
    let variance = ew::sub(&ew::mul(variance_ss, &divisor)?, &ew::square(&shifted_mean)?)?;
    Ok((mean, variance))
}

/// `(x - mean) * scale / sqrt(variance + epsilon) + offset`, computed as
/// TensorFlow does (one multiply and one add per element).
#[track_caller]
pub fn batch_normalization(
    x: &Tensor,
    mean: &Tensor,
    variance: &Tensor,
    offset: Option<&Tensor>,
    scale: Option<&Tensor>,
    epsilon: f64,
) -> Result<Tensor> {
    let mut inv = ew::rsqrt(&ew::add(variance, epsilon)?)?;
    if let Some(s) = scale {
        inv = ew::mul(&inv, s)?;
    }
    let shift = match offset {
        Some(o) => ew::sub(o, &ew::mul(mean, &inv)?)?,
        None => ew::neg(&ew::mul(mean, &inv)?)?,
    };
    ew::add(&ew::mul(x, &inv)?, &shift)
}

/// A per-channel vector `t` (`[channels]`) shaped to broadcast against a
/// rank-`rank` tensor along `axis` (`[channels, 1, ...]` unless `axis` is
/// the last).
pub(crate) fn along_axis(t: &Tensor, axis: usize, rank: usize) -> Result<Tensor> {
    if axis + 1 >= rank {
        return Ok(t.clone());
    }
    let mut dims = vec![-1];
    dims.extend(std::iter::repeat_n(1, rank - axis - 1));
    mv::reshape(t, &dims)
}

/// How [`fused_batch_norm`] normalizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    /// Added to the variance inside the square root (TensorFlow's default
    /// 1e-3); raised to at least 1.001e-5, as TensorFlow's wrapper does (its
    /// cuDNN kernels need that much).
    pub epsilon: f64,
    /// Normalize with the batch's statistics (else with the given ones).
    pub training: bool,
    /// While training with given running statistics: they move this far
    /// towards the batch's (`1 - momentum`); 1 returns the batch's own.
    pub exponential_avg_factor: f64,
    /// `x` is `[batch, channels, spatial...]` (`NCHW`).
    pub channels_first: bool,
}

impl Default for BatchNormOptions {
    fn default() -> BatchNormOptions {
        BatchNormOptions { epsilon: 1e-3, training: true, exponential_avg_factor: 1.0, channels_first: false }
    }
}

/// Batch normalization over every axis but the channels
/// (`tf.compat.v1.nn.fused_batch_norm`, TensorFlow's `FusedBatchNormV3`).
///
/// Returns `(y, mean, variance)`. Training: `y` is normalized with the
/// batch mean and (biased) variance, and the statistics returned are the
/// batch mean and the Bessel-corrected variance (`n / (n - 1)` times), or,
/// with `exponential_avg_factor` `f` < 1, the given running statistics
/// moved by `f` towards those. Inference: `mean` and `variance` are
/// required and returned. As in TensorFlow, gradients flow through `y`
/// only, and to `x`, `scale` and `offset` only.
#[track_caller]
pub fn fused_batch_norm(
    x: &Tensor,
    scale: &Tensor,
    offset: &Tensor,
    mean: Option<&Tensor>,
    variance: Option<&Tensor>,
    options: &BatchNormOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut inputs = vec![x, scale, offset];
    inputs.extend(mean.into_iter().chain(variance));
    checked(fused_batch_norm_unchecked(x, scale, offset, mean, variance, options), "FusedBatchNormV3", &inputs)
}

/// [`fused_batch_norm`] without the error context.
fn fused_batch_norm_unchecked(
    x: &Tensor,
    scale: &Tensor,
    offset: &Tensor,
    mean: Option<&Tensor>,
    variance: Option<&Tensor>,
    o: &BatchNormOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    let r = x.rank();
    if r < 2 {
        bail!(shape, "fused_batch_norm needs [batch, ..., channels] input of rank >= 2, got {}", x.shape());
    }
    let axis = if o.channels_first { 1 } else { r - 1 };
    let channels = x.shape()[axis];
    for (what, t) in [("scale", Some(scale)), ("offset", Some(offset)), ("mean", mean), ("variance", variance)] {
        if let Some(t) = t {
            if t.rank() != 1 || t.shape()[0] != channels {
                bail!(
                    shape,
                    "fused_batch_norm: {what} must be [{channels}] for input {}, got {}",
                    x.shape(),
                    t.shape()
                );
            }
        }
    }
    if o.epsilon.is_nan() || o.epsilon < 0.0 || !(0.0..=1.0).contains(&o.exponential_avg_factor) {
        bail!(
            invalid,
            "fused_batch_norm: epsilon must be >= 0 and exponential_avg_factor in [0, 1], got {} and {}",
            o.epsilon,
            o.exponential_avg_factor
        );
    }
    // As in TensorFlow, the given statistics get no gradient.
    let mean = mean.map(mv::stop_gradient).transpose()?;
    let variance = variance.map(mv::stop_gradient).transpose()?;
    let (mean, variance) = (mean.as_ref(), variance.as_ref());
    let per_channel = |t: &Tensor| along_axis(t, axis, r);
    let axes: Vec<i64> = (0..r as i64).filter(|&a| a != axis as i64).collect();
    let epsilon = o.epsilon.max(1.001e-5);
    let (m, v, out_m, out_v) = if o.training {
        let (m, v) = moments(x, axes.clone(), false)?;
        let sizes: Vec<usize> = axes.iter().map(|&a| x.shape()[a as usize]).collect();
        let n = if sizes.contains(&crate::tensor::UNKNOWN) {
            reduce::sum(&cr::ones_like(x)?, axes.clone(), false)?
        } else {
            cr::constant(super::Ctx::of(x), Tensor::scalar(sizes.iter().product::<usize>() as f64))?
        };
        let n = ew::cast(&n, x.dtype())?;
        let corrected = ew::div(&ew::mul(&v, &n)?, &ew::maximum(&ew::sub(&n, 1.0)?, 1.0)?)?;
        let (bm, bv) = (mv::stop_gradient(&m)?, mv::stop_gradient(&corrected)?);
        let f = o.exponential_avg_factor;
        let (om, ov) = match (mean, variance) {
            (Some(rm), Some(rv)) if f < 1.0 => (
                ew::add(&ew::mul(rm, 1.0 - f)?, &ew::mul(&bm, f)?)?,
                ew::add(&ew::mul(rv, 1.0 - f)?, &ew::mul(&bv, f)?)?,
            ),
            _ => (bm, bv),
        };
        (m, v, om, ov)
    } else {
        let (Some(m), Some(v)) = (mean, variance) else {
            bail!(invalid, "fused_batch_norm: inference needs the mean and variance");
        };
        (m.clone(), v.clone(), m.clone(), v.clone())
    };
    let y = batch_normalization(
        x,
        &per_channel(&m)?,
        &per_channel(&v)?,
        Some(&per_channel(offset)?),
        Some(&per_channel(scale)?),
        epsilon,
    )?;
    Ok((y, out_m, out_v))
}

/// Group normalization (Wu & He 2018, `keras.layers.GroupNormalization`):
/// the channels (last axis) of each example are cut into `groups`, each
/// normalized over its channels and every spatial position, then scaled
/// and shifted per channel by `gamma` and `beta` (`[channels]`).
#[track_caller]
pub fn group_normalization(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    epsilon: f64,
) -> Result<Tensor> {
    let mut inputs = vec![x];
    inputs.extend(gamma.into_iter().chain(beta));
    checked(
        (|| {
            let dims = x.shape().dims().to_vec();
            let r = dims.len();
            let c = dims.last().copied().unwrap_or(0);
            if r < 2 || dims[1..].contains(&crate::tensor::UNKNOWN) || groups == 0 || !c.is_multiple_of(groups) {
                bail!(shape, "group_normalization needs [batch, ..., channels] with known non-batch sizes and channels divisible into {groups} groups, got {}", x.shape());
            }
            let mut grouped: Vec<i64> = vec![-1];
            grouped.extend(dims[1..r - 1].iter().map(|&d| d as i64));
            grouped.extend([groups as i64, (c / groups) as i64]);
            let g = mv::reshape(x, &grouped)?;
            let axes: Vec<i64> = (1..=r as i64).filter(|&a| a != r as i64 - 1).collect();
            let (m, v) = moments(&g, axes, true)?;
            // Keras folds gamma into the reciprocal deviation, per group.
            let split = |t: &Tensor| mv::reshape(t, &[groups as i64, (c / groups) as i64]);
            let (gamma, beta) = (gamma.map(split).transpose()?, beta.map(split).transpose()?);
            let normed = batch_normalization(&g, &m, &v, beta.as_ref(), gamma.as_ref(), epsilon)?;
            let mut back = vec![-1];
            back.extend(dims[1..].iter().map(|&d| d as i64));
            mv::reshape(&normed, &back)
        })(),
        "GroupNormalization",
        &inputs,
    )
}

/// Local response normalization along the last axis:
/// `x / (bias + alpha * sum(x^2 over depth_radius neighbours))^beta`.
#[doc(alias = "lrn")]
#[track_caller]
pub fn local_response_normalization(
    x: &Tensor,
    depth_radius: usize,
    bias: f64,
    alpha: f64,
    beta: f64,
) -> Result<Tensor> {
    let rank = x.rank();
    let Some(depth) = rank.checked_sub(1).and_then(|a| x.shape().dim(a)) else {
        bail!(shape, "local_response_normalization needs a known last axis, got {:?}", x.shape());
    };
    // A windowed sum as the difference of an exclusive running sum; a radius
    // past the depth reaches only zeros, so it is clamped to the depth.
    let r = depth_radius.min(depth);
    let mut pads = vec![(0, 0); rank];
    pads[rank - 1] = (r, r + 1);
    let c = reduce::cumsum(&mv::pad(&ew::square(x)?, &pads, mv::PadMode::Constant, 0)?, -1, true, false)?;
    let mut begin = vec![0usize; rank];
    let mut size = vec![-1i64; rank];
    size[rank - 1] = depth as i64;
    let lo = mv::slice(&c, &begin, &size)?;
    begin[rank - 1] = 2 * r + 1;
    let hi = mv::slice(&c, &begin, &size)?;
    let window = ew::sub(&hi, &lo)?;
    ew::div(x, &ew::pow(&ew::add(&ew::mul(&window, alpha)?, bias)?, beta)?)
}

/// Per-element `sigmoid` cross-entropy of `logits` against `labels` in
/// [0, 1], `max(z, 0) - z y + log(1 + e^-|z|)`, with TensorFlow's
/// derivative `sigmoid(z) - y` at `z = 0` too.
#[track_caller]
pub fn sigmoid_cross_entropy_with_logits(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    let y = ew::cast(labels, logits.dtype())?;
    let nonnegative = ew::greater_equal(logits, 0.0)?;
    let relu = ew::select(&nonnegative, logits, 0.0)?;
    let neg_abs = ew::select(&nonnegative, &ew::neg(logits)?, logits)?;
    ew::add(&ew::sub(&relu, &ew::mul(logits, &y)?)?, &ew::log1p(&ew::exp(&neg_abs)?)?)
}

/// Per-element sigmoid cross-entropy with positives weighted by `pos_weight`:
/// `(1 - y) z + (1 + (q - 1) y) (log(1 + e^-|z|) + max(-z, 0))`.
#[track_caller]
pub fn weighted_cross_entropy_with_logits(labels: &Tensor, logits: &Tensor, pos_weight: f64) -> Result<Tensor> {
    let y = ew::cast(labels, logits.dtype())?;
    let log_weight = ew::add(&ew::mul(&y, pos_weight - 1.0)?, 1.0)?;
    let tail = ew::add(&ew::log1p(&ew::exp(&ew::neg(&ew::abs(logits)?)?)?)?, &ew::relu(&ew::neg(logits)?)?)?;
    ew::add(&ew::mul(&ew::sub(1.0, &y)?, logits)?, &ew::mul(&log_weight, &tail)?)
}

/// Per-example softmax cross-entropy of `logits` against probability
/// `labels` along `axis`: `-sum(labels * log_softmax(logits))`. The gradient
/// reaches the labels too, as in TensorFlow 2.
#[track_caller]
pub fn softmax_cross_entropy_with_logits(labels: &Tensor, logits: &Tensor, axis: i64) -> Result<Tensor> {
    let y = ew::cast(labels, logits.dtype())?;
    ew::neg(&reduce::sum(&ew::mul(&y, &log_softmax(logits, axis)?)?, axis, false)?)
}

/// Per-example softmax cross-entropy of `logits` (`[..., classes]`) against
/// integer class `labels` (`[...]`); a label outside `0..classes` is an error.
#[track_caller]
pub fn sparse_softmax_cross_entropy_with_logits(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    if !labels.dtype().is_int() || logits.rank() != labels.rank() + 1 {
        bail!(
            shape,
            "sparse_softmax_cross_entropy_with_logits needs integer labels of the logits' shape without the last axis, got {} {:?} and {:?}",
            labels.dtype(),
            labels.shape(),
            logits.shape()
        );
    }
    let logp = log_softmax(logits, -1)?;
    let picked = mv::gather(&logp, &mv::expand_dims(labels, -1)?, -1, labels.rank())?;
    ew::neg(&mv::squeeze(&picked, &[-1])?)
}

/// Poisson negative log-likelihood from log rates, `exp(c) - z c`; with
/// `compute_full_loss`, plus Stirling's approximation of `log(z!)` where `z > 1`.
#[track_caller]
pub fn log_poisson_loss(targets: &Tensor, log_input: &Tensor, compute_full_loss: bool) -> Result<Tensor> {
    let loss = ew::sub(&ew::exp(log_input)?, &ew::mul(log_input, targets)?)?;
    if !compute_full_loss {
        return Ok(loss);
    }
    let stirling = ew::add(
        &ew::sub(&ew::xlogy(targets, targets)?, targets)?,
        &ew::mul(&ew::log(&ew::mul(targets, 2.0 * std::f64::consts::PI)?)?, 0.5)?,
    )?;
    let big = ew::greater(targets, 1.0)?;
    ew::add(&loss, &ew::select(&big, &stirling, 0.0)?)
}

/// The sum of per-example losses (times `sample_weight`) divided by the
/// global batch size (by default, the first dimension).
#[track_caller]
pub fn compute_average_loss(
    per_example_loss: &Tensor,
    sample_weight: Option<&Tensor>,
    global_batch_size: Option<usize>,
) -> Result<Tensor> {
    let l = match sample_weight {
        Some(w) => ew::mul(per_example_loss, w)?,
        None => per_example_loss.clone(),
    };
    let total = reduce::sum(&l, Axes::All, false)?;
    match global_batch_size {
        Some(n) => ew::div(&total, n as f64),
        None if per_example_loss.rank() == 0 => Ok(total),
        None => match per_example_loss.shape().dim(0) {
            Some(n) => ew::div(&total, n as f64),
            None if per_example_loss.rank() == 1 => ew::div(&total, &mv::size(per_example_loss, total.dtype())?),
            None => bail!(
                shape,
                "compute_average_loss needs a known batch size or global_batch_size, got {:?}",
                per_example_loss.shape()
            ),
        },
    }
}

/// A regularization loss scaled for the replicas of a distribution strategy
/// (one replica here, so the loss itself).
#[track_caller]
pub fn scale_regularization_loss(loss: &Tensor) -> Result<Tensor> {
    mv::identity(loss)
}

/// Rows of `params` picked by `ids` (TensorFlow's `embedding_lookup`).
#[track_caller]
pub fn embedding_lookup(params: &Tensor, ids: &Tensor) -> Result<Tensor> {
    mv::gather(params, ids, 0, 0)
}

/// Zero a fraction `rate` of the elements at random and scale the rest by
/// `1 / (1 - rate)`; the same `seed` keeps the same mask.
#[track_caller]
pub fn dropout(x: &Tensor, rate: f64, seed: Option<u64>) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        bail!(invalid, "dropout needs a rate in [0, 1), got {rate}");
    }
    if rate == 0.0 {
        return mv::identity(x);
    }
    let keep = ew::greater_equal(&cr::random_uniform_like(x, 0.0, 1.0, seed)?, rate)?;
    ew::select(&keep, &ew::mul(x, 1.0 / (1.0 - rate))?, 0.0)
}

/// TensorFlow 1's batch normalization: [`batch_normalization`] with `gamma`
/// applied only when `scale_after_normalization`.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn batch_norm_with_global_normalization(
    t: &Tensor,
    m: &Tensor,
    v: &Tensor,
    beta: &Tensor,
    gamma: &Tensor,
    variance_epsilon: f64,
    scale_after_normalization: bool,
) -> Result<Tensor> {
    batch_normalization(t, m, v, Some(beta), scale_after_normalization.then_some(gamma), variance_epsilon)
}

/// The closest sequence in least squares along `axis` that is
/// non-increasing (`decreasing`, TensorFlow's default) or non-decreasing,
/// and each element's segment: the run of elements pooled to one mean,
/// numbered from 0 along the axis (int32). Float inputs keep their dtype,
/// integers give float64, as `tf.nn.isotonic_regression`. The gradient
/// averages the incoming gradient over each segment.
#[track_caller]
pub fn isotonic_regression(x: &Tensor, decreasing: bool, axis: i64) -> Result<(Tensor, Tensor)> {
    let axis = checked(normalize_axis(axis, x.rank()), "IsotonicRegression", &[x])?;
    if !x.dtype().is_numeric() {
        bail!(dtype, "isotonic_regression needs a numeric dtype, got {}", x.dtype());
    }
    let last = x.rank() - 1;
    let mut perm: Vec<usize> = (0..x.rank()).collect();
    perm.swap(axis, last);
    let moved = if axis == last { x.clone() } else { mv::transpose(x, &perm)? };
    let moved = ew::cast(&moved, crate::op::host::isotonic_dtype(moved.dtype()))?;
    let input = if decreasing { moved } else { ew::neg(&moved)? };
    let mut out = apply(Op::Host { f: crate::op::HostOp::IsotonicRegression }, &[&input])?;
    let (Some(segments), Some(y)) = (out.pop(), out.pop()) else {
        bail!(graph, "isotonic_regression produced no outputs");
    };
    let y = if decreasing { y } else { ew::neg(&y)? };
    if axis == last {
        Ok((y, segments))
    } else {
        Ok((mv::transpose(&y, &perm)?, mv::transpose(&segments, &perm)?))
    }
}

/// The gradient of isotonic regression: `g` averaged over each run of equal
/// `segments` ids along the last axis (an `[n, n]` same-segment matrix per
/// row, so that it is made of ops and differentiates again).
pub(crate) fn segment_average(g: &Tensor, segments: &Tensor) -> Result<Tensor> {
    let same = ew::equal(&mv::expand_dims(segments, -1)?, &mv::expand_dims(segments, -2)?)?;
    let same = ew::cast(&same, g.dtype())?;
    let sums = mv::squeeze(&super::linalg::matmul(&same, &mv::expand_dims(g, -1)?)?, &[-1])?;
    ew::div(&sums, &reduce::sum(&same, -1, false)?)
}

/// Run a windowed `op` with dilation `dilation_rate` over the spatial axes
/// `1..=dilation_rate.len()` of `input` as an undilated one: space-to-batch
/// by the rate, `op` with `Valid` padding, batch-to-space back
/// (`tf.nn.with_space_to_batch`). `Same` padding needs the window's
/// `filter_shape`. With every rate 1, `op` runs on `input` with `padding`.
#[track_caller]
pub fn with_space_to_batch(
    input: &Tensor,
    dilation_rate: &[usize],
    padding: Padding,
    filter_shape: Option<&[usize]>,
    op: impl FnOnce(&Tensor, Padding) -> Result<Tensor>,
) -> Result<Tensor> {
    let m = dilation_rate.len();
    let dims = input.shape().dims();
    if m == 0 || input.rank() < m + 1 || !input.shape().is_fully_known() || dilation_rate.contains(&0) {
        bail!(
            shape,
            "with_space_to_batch needs positive rates for spatial axes 1..={m} of a known shape, got rates {dilation_rate:?} for {:?}",
            input.shape()
        );
    }
    if dilation_rate.iter().all(|&r| r == 1) {
        return op(input, padding);
    }
    let base: Vec<(usize, usize)> = match (padding, filter_shape) {
        (Padding::Valid, _) => vec![(0, 0); m],
        (Padding::Same, Some(f)) if f.len() == m && !f.contains(&0) => f
            .iter()
            .zip(dilation_rate)
            .map(|(&k, &r)| {
                let extra = (k - 1).saturating_mul(r);
                (extra / 2, extra - extra / 2)
            })
            .collect(),
        (Padding::Same, f) => {
            bail!(invalid, "with_space_to_batch: Same padding needs a filter shape of {m} positive sizes, got {f:?}")
        }
        (Padding::Explicit { pads }, _) => {
            bail!(invalid, "with_space_to_batch takes Valid or Same padding, got explicit {pads:?}")
        }
    };
    let (paddings, crops) = super::array::required_space_to_batch_paddings(&dims[1..=m], dilation_rate, Some(&base))?;
    let converted = super::array::space_to_batch_nd(input, dilation_rate, &paddings)?;
    let result = op(&converted, Padding::Valid)?;
    super::array::batch_to_space(&result, dilation_rate, &crops)
}
