//! Neural-network helpers that are ops of their own: `softmax`,
//! `log_softmax` (composites with a fused CPU kernel) and `top_k`.

use super::{apply, apply1, checked, creation as cr, elementwise as ew, movement as mv, reduce, Axes, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::tensor::shape::normalize_axis;
use crate::tensor::DType;

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

/// Connectionist temporal classification loss (Graves et al. 2006), per
/// example: `-log p(labels | logits)` summed over every alignment.
/// `labels` is `[batch, max_label_length]` (dense, padded past
/// `label_length`), `logits` is `[batch, time, classes]` (batch major, so
/// TensorFlow's `logits_time_major=False`), class `blank_index` is the
/// blank. The forward recursion runs in log space over the time steps
/// (unrolled: the graph grows with `time`); an alignment that cannot exist
/// costs about 1e30 rather than inf, which keeps gradients finite.
#[track_caller]
pub fn ctc_loss(
    labels: &Tensor,
    logits: &Tensor,
    label_length: &Tensor,
    logit_length: &Tensor,
    blank_index: usize,
) -> Result<Tensor> {
    let (dl, dz) = (labels.shape().dims(), logits.shape().dims());
    if !labels.dtype().is_int()
        || labels.rank() != 2
        || logits.rank() != 3
        || !labels.shape().is_fully_known()
        || !logits.shape().is_fully_known()
        || dl[0] != dz[0]
        || blank_index >= dz[2]
    {
        bail!(
            shape,
            "ctc_loss needs integer labels [batch, length] and logits [batch, time, classes] with the blank among the classes, got {} {:?}, {:?} and blank {blank_index}",
            labels.dtype(),
            labels.shape(),
            logits.shape()
        );
    }
    let (batch, max_len, time) = (dl[0], dl[1], dz[1]);
    let states = 2 * max_len + 1;
    const NEG: f64 = -1e30;
    let ctx = super::Ctx::of(logits);
    let logp = log_softmax(logits, -1)?;
    // The label sequence with blanks around and between: [batch, states].
    let labels = ew::cast(labels, DType::I64)?;
    let blanks = cr::fill(ctx, [batch, max_len], blank_index as i64, DType::I64)?;
    let pairs = mv::reshape(&mv::stack(&[&blanks, &labels], 2)?, &[batch as i64, 2 * max_len as i64])?;
    let ext = mv::concat(&[&pairs, &cr::fill(ctx, [batch, 1], blank_index as i64, DType::I64)?], 1)?;
    // Emissions: log-probability of each state's class at each step, [batch, time, states].
    let idx = mv::broadcast_to(&mv::expand_dims(&ext, 1)?, [batch, time, states])?;
    let emit = mv::gather(&logp, &idx, 2, 2)?;
    // A state may also be entered from two back: a label differing from the one two before.
    let skip = if states > 2 {
        let cur = mv::slice(&ext, &[0, 2], &[-1, -1])?;
        let back = mv::slice(&ext, &[0, 0], &[-1, states as i64 - 2])?;
        let ok = ew::logical_and(&ew::not_equal(&cur, blank_index as i64)?, &ew::not_equal(&cur, &back)?)?;
        mv::concat(&[&cr::fill(ctx, [batch, 2], false, DType::Bool)?, &ok], 1)?
    } else {
        cr::fill(ctx, [batch, states], false, DType::Bool)?
    };
    let lengths = ew::cast(logit_length, DType::I64)?;
    let step = |t: usize| mv::squeeze(&mv::slice(&emit, &[0, t, 0], &[-1, 1, -1])?, &[1]);
    let neg = |n: usize| cr::fill(ctx, [batch, n], NEG, logits.dtype());
    // alpha_0: the first blank or the first label.
    let first_two = mv::slice(&step(0)?, &[0, 0], &[-1, states.min(2) as i64])?;
    let mut alpha = if states > 2 { mv::concat(&[&first_two, &neg(states - 2)?], 1)? } else { first_two };
    for t in 1..time {
        let prev1 = mv::concat(&[&neg(1)?, &mv::slice(&alpha, &[0, 0], &[-1, states as i64 - 1])?], 1)?;
        let mut total = ew::logaddexp(&alpha, &prev1)?;
        if states > 2 {
            let prev2 = mv::concat(&[&neg(2)?, &mv::slice(&alpha, &[0, 0], &[-1, states as i64 - 2])?], 1)?;
            total = ew::logaddexp(&total, &ew::select(&skip, &prev2, NEG)?)?;
        }
        let next = ew::add(&total, &step(t)?)?;
        // Past an example's logit length its alphas stay as they are.
        let live = mv::expand_dims(&ew::less(t as i64, &lengths)?, 1)?;
        alpha = ew::select(&live, &next, &alpha)?;
    }
    // The path ends on the last label or the blank after it.
    let ll = ew::cast(label_length, DType::I64)?;
    let last_blank = mv::expand_dims(&ew::mul(&ll, 2i64)?, 1)?;
    let last_label = ew::maximum(&ew::sub(&last_blank, 1i64)?, 0i64)?;
    let end_blank = mv::squeeze(&mv::gather(&alpha, &last_blank, 1, 1)?, &[1])?;
    let end_label = mv::squeeze(&mv::gather(&alpha, &last_label, 1, 1)?, &[1])?;
    let has_label = ew::greater(&ll, 0i64)?;
    ew::neg(&ew::select(&has_label, &ew::logaddexp(&end_blank, &end_label)?, &end_blank)?)
}
