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
    /// Keras 3's velocity form: `m = momentum * m - lr * g; w += m`, or with
    /// Nesterov `w += momentum * m - lr * g` (slot: `m`). The learning rate
    /// is inside the velocity, so under a schedule it differs from TF1's
    /// `a = momentum * a + g; w -= lr * a`.
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
    /// Adam with the infinity norm (Kingma & Ba 2015, section 7.1), Keras's
    /// form: `m += (g - m)(1 - b1); u = max(b2 u, |g|);
    /// w -= lr m / ((1 - b1^t)(u + eps))` (slots: `m`, `u`).
    Adamax { beta1: f64, beta2: f64, epsilon: f64 },
    /// Adam with Nesterov momentum (Dozat 2016), Keras's form with the
    /// momentum schedule `u_t = b1 (1 - 0.5 * 0.96^t)` (slots: `m`, `v`).
    Nadam { beta1: f64, beta2: f64, epsilon: f64 },
    /// Zeiler (2012): `ag = rho ag + (1 - rho) g^2;
    /// d = -sqrt(ad + eps) g / sqrt(ag + eps); ad = rho ad + (1 - rho) d^2;
    /// w += lr d` (slots: `ag`, `ad`).
    Adadelta { rho: f64, epsilon: f64 },
    /// Follow-the-regularized-leader (McMahan et al. 2013) as Keras computes
    /// it, with `l2` already including `beta / (2 lr)` (slots: the
    /// accumulator, which `Optimizer` starts at 0.1, and `linear`).
    Ftrl { learning_rate_power: f64, l1: f64, l2: f64, l2_shrinkage: f64, beta: f64 },
    /// RMSprop with Keras's `momentum` and `centered` options:
    /// `v = rho v + (1 - rho) g^2`; centered: `a = rho a + (1 - rho) g`,
    /// `d = v - a^2 + eps`, else `d = v + eps`; `i = lr g / sqrt(d)`;
    /// `m = momentum m + i; w -= m` (slots: `v`, `a`, `m`).
    RmsPropMomentum { rho: f64, momentum: f64, epsilon: f64, centered: bool },
    /// Adam with AMSGrad's running maximum of `v` (Reddi et al. 2018), Keras's
    /// form (slots: `m`, `v`, `v_hat`).
    AdamAmsgrad { beta1: f64, beta2: f64, epsilon: f64 },
    /// Chen et al. (2023): `w -= lr sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g` (slot: `m`).
    Lion { beta1: f64, beta2: f64 },
}

/// Nadam's momentum-schedule factors at 1-based `step`: `(u_t, u_(t+1),
/// prod_(i<=t) u_i, prod_(i<=t+1) u_i)`.
pub(crate) fn nadam_schedule(beta1: f64, step: f64) -> (f64, f64, f64, f64) {
    let u = |i: f64| beta1 * (1.0 - 0.5 * 0.96f64.powf(i));
    // prod u_i = b1^t prod (1 - 0.96^i / 2), and past i = 1000 those factors
    // are 1 to within 2e-18: a bounded loop whatever the step count (the
    // CPU kernel asks once per chunk).
    let t = step.max(0.0);
    let (mut decay, mut rest) = (1.0f64, 1.0f64);
    for _ in 0..(t.min(1000.0) as u32) {
        decay *= 0.96;
        rest *= 1.0 - 0.5 * decay;
    }
    let product = beta1.powf(t) * rest;
    let next = u(step + 1.0);
    (u(step), next, product, product * next)
}

impl UpdateRule {
    /// Number of slot tensors the rule keeps per variable.
    pub fn num_slots(&self) -> usize {
        match self {
            UpdateRule::Sgd => 0,
            UpdateRule::Momentum { .. }
            | UpdateRule::RmsProp { .. }
            | UpdateRule::Adagrad { .. }
            | UpdateRule::Lion { .. } => 1,
            UpdateRule::Adam { .. }
            | UpdateRule::Adamax { .. }
            | UpdateRule::Nadam { .. }
            | UpdateRule::Adadelta { .. }
            | UpdateRule::Ftrl { .. } => 2,
            UpdateRule::RmsPropMomentum { .. } | UpdateRule::AdamAmsgrad { .. } => 3,
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
            UpdateRule::Adamax { .. } => &["m", "u"],
            UpdateRule::Nadam { .. } => &["m", "v"],
            UpdateRule::Adadelta { .. } => &["accumulated_grad", "accumulated_delta_var"],
            UpdateRule::Ftrl { .. } => &["accumulator", "linear"],
            UpdateRule::Lion { .. } => &["m"],
            UpdateRule::RmsPropMomentum { .. } => &["velocity", "average_gradient", "momentum"],
            UpdateRule::AdamAmsgrad { .. } => &["m", "v", "v_hat"],
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
            UpdateRule::Adamax { .. } => "ApplyAdaMax",
            UpdateRule::Nadam { .. } => "ApplyNadam",
            UpdateRule::Adadelta { .. } => "ApplyAdadelta",
            UpdateRule::Ftrl { .. } => "ApplyFtrl",
            UpdateRule::Lion { .. } => "ApplyLion",
            UpdateRule::RmsPropMomentum { centered: true, .. } => "ApplyCenteredRMSProp",
            UpdateRule::RmsPropMomentum { .. } => "ApplyRMSPropMomentum",
            UpdateRule::AdamAmsgrad { .. } => "ApplyAdamAmsgrad",
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
            UpdateRule::Adamax { .. } => "_ResourceApplyAdaMax",
            UpdateRule::Nadam { .. } => "_ResourceApplyNadam",
            UpdateRule::Adadelta { .. } => "_ResourceApplyAdadelta",
            UpdateRule::Ftrl { .. } => "_ResourceApplyFtrl",
            UpdateRule::Lion { .. } => "_ResourceApplyLion",
            UpdateRule::RmsPropMomentum { centered: true, .. } => "_ResourceApplyCenteredRMSProp",
            UpdateRule::RmsPropMomentum { .. } => "_ResourceApplyRMSPropMomentum",
            UpdateRule::AdamAmsgrad { .. } => "_ResourceApplyAdamAmsgrad",
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
