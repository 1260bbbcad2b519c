//! Neural-network helpers that are ops of their own: `softmax`,
//! `log_softmax` (composites with a fused CPU kernel) and `top_k`.

use super::{apply, apply1, checked, elementwise as ew, reduce, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
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
