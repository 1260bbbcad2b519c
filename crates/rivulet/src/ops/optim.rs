//! Optimizer update rules as one fused elementwise op each (TensorFlow's
//! `ApplyAdam` family): the new value of a variable and of its slots from
//! the gradient, in one pass over memory. The op is pure — the optimizer
//! assigns its outputs — so it runs the same in eager and graph mode.

use super::{apply, Op};
use crate::error::Result;
use crate::graph::Tensor;
pub use crate::op::optim::UpdateRule;

/// New values of a variable and its slots after one update (see [`UpdateRule`]).
/// `step` is the 1-based update count (Adam's bias correction).
#[track_caller]
pub fn apply_update(
    rule: UpdateRule,
    var: &Tensor,
    grad: &Tensor,
    lr: &Tensor,
    step: &Tensor,
    slots: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let mut inputs: Vec<&Tensor> = vec![var, grad, lr, step];
    inputs.extend_from_slice(slots);
    Ok(apply(Op::ApplyUpdate { rule }, &inputs)?.into_vec())
}
