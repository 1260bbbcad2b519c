//! Optimizer update rules as one fused elementwise op each (TensorFlow's
//! `ApplyAdam` family): the published equations and the shapes they give.

use super::{Meta, Metas};
use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};

/// The published update equations, with their constant hyper-parameters.
/// The learning rate and the step count are tensor inputs (schedules change them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRule {
    /// `w -= lr * g`
    Sgd,
    /// `a = momentum * a + g; w -= lr * a`, or with Nesterov
    /// `w -= lr * (g + momentum * a)` (slot: `a`).
    Momentum { momentum: f64, nesterov: bool },
    /// Kingma & Ba (2015) in Keras's form, epsilon outside the bias
    /// correction: `m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    /// w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`; with
    /// `weight_decay > 0` Keras's AdamW decays first, `w -= w * wd * lr`
    /// (Loshchilov & Hutter 2019) (slots: `m`, `v`).
    Adam { beta1: f64, beta2: f64, epsilon: f64, weight_decay: f64 },
    /// `ms = rho * ms + (1 - rho) * g^2; w -= lr * g / sqrt(ms + eps)`
    /// (Hinton's lecture 6e, with Keras's epsilon inside the root; slot: `ms`).
    RmsProp { rho: f64, epsilon: f64 },
    /// `acc += g^2; w -= lr * g / sqrt(acc + eps)` (Duchi et al. 2011, with
    /// Keras's epsilon inside the root; slot: `acc`, which `Optimizer`
    /// starts at Keras's `initial_accumulator_value`, 0.1).
    Adagrad { epsilon: f64 },
}

impl UpdateRule {
    /// Number of slot tensors the rule keeps per variable.
    pub fn num_slots(&self) -> usize {
        match self {
            UpdateRule::Sgd => 0,
            UpdateRule::Momentum { .. } | UpdateRule::RmsProp { .. } | UpdateRule::Adagrad { .. } => 1,
            UpdateRule::Adam { .. } => 2,
        }
    }
    /// Names of the slots, in input/output order.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self {
            UpdateRule::Sgd => &[],
            UpdateRule::Momentum { .. } => &["momentum"],
            UpdateRule::Adam { .. } => &["m", "v"],
            UpdateRule::RmsProp { .. } => &["ms"],
            UpdateRule::Adagrad { .. } => &["accumulator"],
        }
    }
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            UpdateRule::Sgd => "ApplyGradientDescent",
            UpdateRule::Momentum { .. } => "ApplyMomentum",
            UpdateRule::Adam { weight_decay, .. } if *weight_decay > 0.0 => "ApplyAdamW",
            UpdateRule::Adam { .. } => "ApplyAdam",
            UpdateRule::RmsProp { .. } => "ApplyRMSProp",
            UpdateRule::Adagrad { .. } => "ApplyAdagrad",
        }
    }
    /// Name of the in-place form (`Op::ResourceApplyUpdate`).
    pub(crate) fn resource_type_name(&self) -> &'static str {
        match self {
            UpdateRule::Sgd => "_ResourceApplyGradientDescent",
            UpdateRule::Momentum { .. } => "_ResourceApplyMomentum",
            UpdateRule::Adam { weight_decay, .. } if *weight_decay > 0.0 => "_ResourceApplyAdamW",
            UpdateRule::Adam { .. } => "_ResourceApplyAdam",
            UpdateRule::RmsProp { .. } => "_ResourceApplyRMSProp",
            UpdateRule::Adagrad { .. } => "_ResourceApplyAdagrad",
        }
    }
}

/// Inputs: `[var, grad, lr, step, slots...]`; outputs: `[var, slots...]`.
pub(crate) fn infer_update(rule: &UpdateRule, inputs: &[Meta]) -> Result<Metas> {
    let n = 4 + rule.num_slots();
    if inputs.len() != n {
        bail!(invalid, "{} takes {n} inputs, got {}", rule.type_name(), inputs.len());
    }
    let var = &inputs[0];
    if !var.dtype.is_float() {
        bail!(dtype, "{} updates floating-point variables, got {}", rule.type_name(), var.dtype);
    }
    for (i, m) in inputs.iter().enumerate().skip(1) {
        let scalar = i == 2 || i == 3;
        if m.dtype != var.dtype {
            bail!(dtype, "{} input {i} is {}, the variable is {}", rule.type_name(), m.dtype, var.dtype);
        }
        if scalar && m.shape.rank() != 0 {
            bail!(shape, "{} input {i} (learning rate or step) must be a scalar, got {}", rule.type_name(), m.shape);
        }
        if !scalar && !m.shape.is_compatible_with(&var.shape) {
            bail!(
                shape,
                "{} input {i} has shape {}, not the variable's shape {}",
                rule.type_name(),
                m.shape,
                var.shape
            );
        }
    }
    Ok((0..1 + rule.num_slots()).map(|_| var.clone()).collect())
}
