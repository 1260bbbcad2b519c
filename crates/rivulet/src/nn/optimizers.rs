//! Optimizers: SGD, Momentum (and Nesterov), Adam, AdamW, RMSProp, Adagrad,
//! Adamax, Nadam, Adadelta, FTRL, Lion, and the composed Lamb, Adafactor,
//! Muon and ScheduleFreeAdamW, with learning-rate schedules and gradient
//! clipping by global norm.
//!
//! One optimizer works in both modes. `apply_gradients` on eager variables
//! updates them at once; on graph variables it adds the update nodes and
//! returns the train op to run. Each variable is updated by one fused
//! [`ApplyUpdate`](crate::Op::ApplyUpdate) op that follows the published
//! equations ([`UpdateRule`]), or by ops written out per variable
//! ([`ComposedRule`]) where a rule is not elementwise.

use super::composed_rules::ComposedRule;
use crate::autodiff::{gradients, tape, Unconnected};
use crate::error::{Error, Result};
use crate::graph::Operation;
use crate::graph::Tensor;
use crate::ops::{self, Ctx, UpdateRule, Variable};
use crate::tensor::Shape;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// A learning rate as a function of the number of updates done so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LearningRate {
    Constant(f64),
    /// `initial * rate^(step / decay_steps)` (floored exponent when `staircase`).
    ExponentialDecay {
        initial: f64,
        decay_steps: f64,
        decay_rate: f64,
        staircase: bool,
    },
    /// `initial * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2 + alpha)`.
    CosineDecay {
        initial: f64,
        decay_steps: f64,
        alpha: f64,
    },
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> LearningRate {
        LearningRate::Constant(v)
    }
}

impl LearningRate {
    /// The rate after `step` updates, as a number.
    pub fn value(&self, step: f64) -> f64 {
        match *self {
            LearningRate::Constant(v) => v,
            LearningRate::ExponentialDecay { initial, decay_steps, decay_rate, staircase } => {
                let p = step / decay_steps;
                initial * decay_rate.powf(if staircase { p.floor() } else { p })
            }
            LearningRate::CosineDecay { initial, decay_steps, alpha } => {
                let p = step.min(decay_steps) / decay_steps;
                initial * ((1.0 - alpha) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()) + alpha)
            }
        }
    }

    /// The rate after `step` updates, computed with ops (a graph node when
    /// `step` is symbolic).
    #[track_caller]
    pub fn tensor(&self, step: &Tensor) -> Result<Tensor> {
        match *self {
            LearningRate::Constant(v) => Ok(Tensor::scalar_of(v, step.dtype())),
            LearningRate::ExponentialDecay { initial, decay_steps, decay_rate, staircase } => {
                let p = ops::div(step, decay_steps)?;
                let p = if staircase { ops::floor(&p)? } else { p };
                ops::mul(&ops::pow(decay_rate, &p)?, initial)
            }
            LearningRate::CosineDecay { initial, decay_steps, alpha } => {
                let p = ops::div(&ops::minimum(step, decay_steps)?, decay_steps)?;
                let c =
                    ops::mul(&ops::add(&ops::cos(&ops::mul(&p, std::f64::consts::PI)?)?, 1.0)?, 0.5 * (1.0 - alpha))?;
                ops::mul(&ops::add(&c, alpha)?, initial)
            }
        }
    }
}

/// Scale `grads` so that their global L2 norm is at most `clip_norm`;
/// returns the clipped gradients and the norm before clipping.
#[track_caller]
pub fn clip_by_global_norm(grads: &[Tensor], clip_norm: f64) -> Result<(Vec<Tensor>, Tensor)> {
    let Some(first) = grads.first() else {
        return Err(Error::invalid("clip_by_global_norm needs at least one gradient"));
    };
    let mut total = ops::sum(&ops::square(first)?, ops::Axes::All, false)?;
    for g in &grads[1..] {
        total = ops::add(&total, &ops::sum(&ops::square(g)?, ops::Axes::All, false)?)?;
    }
    let norm = ops::sqrt(&total)?;
    let scale = ops::div(clip_norm, &ops::maximum(&norm, clip_norm)?)?;
    let clipped = grads.iter().map(|g| ops::mul(g, &scale)).collect::<Result<_>>()?;
    Ok((clipped, norm))
}

/// Per-variable optimizer state.
struct Slots {
    vars: Vec<Variable>,
}

/// How an optimizer computes each variable's update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// One fused [`ApplyUpdate`](crate::Op::ApplyUpdate) op (elementwise rules).
    Fused(UpdateRule),
    /// Ops written out per variable (rules with norms, matrix products or
    /// slots of other shapes).
    Composed(ComposedRule),
}

/// Dynamic loss scaling (Keras's `LossScaleOptimizer`): the loss is
/// multiplied by a scale before differentiation and the gradients divided
/// by it; a step whose gradients are not all finite is skipped and halves
/// the scale, and `growth_steps` finite steps in a row double it.
struct LossScale {
    initial: f64,
    growth_steps: i64,
    /// The finite-step counter (i64) and the scale (f32), made on first use.
    state: Mutex<Option<(Variable, Variable)>>,
}

/// A gradient-descent optimizer (see the module documentation).
pub struct Optimizer {
    name: &'static str,
    update: Update,
    learning_rate: LearningRate,
    clip_norm: Option<f64>,
    /// Adagrad's accumulator starts here (Keras's `initial_accumulator_value`).
    initial_accumulator: f64,
    slots: Mutex<FxHashMap<u64, Slots>>,
    iterations: Mutex<Option<Variable>>,
    loss_scale: Option<LossScale>,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?}, lr={:?})", self.name, self.update, self.learning_rate)
    }
}

impl Optimizer {
    fn with_rule(name: &'static str, rule: UpdateRule, learning_rate: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_update(name, Update::Fused(rule), learning_rate)
    }
    fn with_update(name: &'static str, update: Update, learning_rate: impl Into<LearningRate>) -> Optimizer {
        Optimizer {
            name,
            update,
            learning_rate: learning_rate.into(),
            clip_norm: None,
            initial_accumulator: 0.1,
            slots: Mutex::new(FxHashMap::default()),
            iterations: Mutex::new(None),
            loss_scale: None,
        }
    }
    /// Plain gradient descent.
    pub fn sgd(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("SGD", UpdateRule::Sgd, lr)
    }
    /// Gradient descent with momentum, optionally Nesterov's.
    pub fn momentum(lr: impl Into<LearningRate>, momentum: f64, nesterov: bool) -> Optimizer {
        Optimizer::with_rule("Momentum", UpdateRule::Momentum { momentum, nesterov }, lr)
    }
    /// Adam with the usual defaults (beta1 0.9, beta2 0.999, epsilon 1e-7 as Keras).
    pub fn adam(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::adam_with(lr, 0.9, 0.999, 1e-7)
    }
    /// Adam with explicit constants.
    pub fn adam_with(lr: impl Into<LearningRate>, beta1: f64, beta2: f64, epsilon: f64) -> Optimizer {
        Optimizer::with_rule("Adam", UpdateRule::Adam { beta1, beta2, epsilon, weight_decay: 0.0 }, lr)
    }
    /// AdamW: Adam with decoupled weight decay.
    pub fn adamw(lr: impl Into<LearningRate>, weight_decay: f64) -> Optimizer {
        Optimizer::with_rule("AdamW", UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay }, lr)
    }
    /// RMSProp (rho 0.9, epsilon 1e-7 as Keras).
    pub fn rmsprop(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("RMSProp", UpdateRule::RmsProp { rho: 0.9, epsilon: 1e-7 }, lr)
    }
    /// Adagrad as Keras has it: epsilon 1e-7 inside the root, the
    /// accumulator starting at 0.1 (see [`Optimizer::with_initial_accumulator_value`]).
    pub fn adagrad(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Adagrad", UpdateRule::Adagrad { epsilon: 1e-7 }, lr)
    }
    /// RMSprop with Keras's `momentum` and `centered` options (rho 0.9, epsilon 1e-7).
    pub fn rmsprop_with(lr: impl Into<LearningRate>, momentum: f64, centered: bool) -> Optimizer {
        Optimizer::with_rule("RMSProp", UpdateRule::RmsPropMomentum { rho: 0.9, momentum, epsilon: 1e-7, centered }, lr)
    }
    /// Adam with AMSGrad (Keras's `amsgrad=True`; beta1 0.9, beta2 0.999, epsilon 1e-7).
    pub fn adam_amsgrad(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Adam", UpdateRule::AdamAmsgrad { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }, lr)
    }
    /// Adamax with Keras's defaults (beta1 0.9, beta2 0.999, epsilon 1e-7).
    pub fn adamax(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Adamax", UpdateRule::Adamax { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }, lr)
    }
    /// Nadam with Keras's defaults (beta1 0.9, beta2 0.999, epsilon 1e-7).
    pub fn nadam(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Nadam", UpdateRule::Nadam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }, lr)
    }
    /// Adadelta with Keras's defaults (rho 0.95, epsilon 1e-7).
    pub fn adadelta(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Adadelta", UpdateRule::Adadelta { rho: 0.95, epsilon: 1e-7 }, lr)
    }
    /// FTRL with Keras's defaults (learning-rate power -0.5, no
    /// regularization, the accumulator starting at 0.1).
    pub fn ftrl(lr: impl Into<LearningRate>) -> Optimizer {
        let rule = UpdateRule::Ftrl { learning_rate_power: -0.5, l1: 0.0, l2: 0.0, l2_shrinkage: 0.0, beta: 0.0 };
        Optimizer::with_rule("Ftrl", rule, lr)
    }
    /// Lion with Keras's defaults (beta1 0.9, beta2 0.99).
    pub fn lion(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Lion", UpdateRule::Lion { beta1: 0.9, beta2: 0.99 }, lr)
    }
    /// Lamb with Keras's defaults (beta1 0.9, beta2 0.999, epsilon 1e-7).
    pub fn lamb(lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::composed("Lamb", ComposedRule::Lamb { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }, lr)
    }
    /// Adafactor with Keras's defaults (beta_2_decay -0.8, epsilon_1 1e-30,
    /// epsilon_2 1e-3, clip threshold 1).
    pub fn adafactor(lr: impl Into<LearningRate>) -> Optimizer {
        let rule =
            ComposedRule::Adafactor { beta_2_decay: -0.8, epsilon_1: 1e-30, epsilon_2: 1e-3, clip_threshold: 1.0 };
        Optimizer::composed("Adafactor", rule, lr)
    }
    /// Muon with Keras's defaults: momentum 0.95 (Nesterov), five
    /// Newton-Schulz steps (3.4445, -4.7750, 2.0315), RMS rate 0.2, weight
    /// decay 0.004 for matrices and AdamW variables alike (beta1 0.9,
    /// beta2 0.999, epsilon 1e-7, the same learning rate), embeddings by AdamW.
    pub fn muon(lr: impl Into<LearningRate>) -> Optimizer {
        let rule = ComposedRule::Muon {
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            epsilon: 1e-7,
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
            ns_coefficients: (3.4445, -4.7750, 2.0315),
            rms_rate: Some(0.2),
            adam_lr_ratio: 1.0,
            weight_decay: 0.004,
            adam_weight_decay: 0.004,
            exclude_embeddings: true,
        };
        Optimizer::composed("Muon", rule, lr)
    }
    /// ScheduleFreeAdamW with Keras's defaults (beta1 0.9, beta2 0.999,
    /// epsilon 1e-8, no warmup). Its base sequence starts at a variable's
    /// value at the optimizer's first step, so every variable must take
    /// part from the first update on.
    pub fn schedule_free_adamw(lr: impl Into<LearningRate>) -> Optimizer {
        let rule = ComposedRule::ScheduleFreeAdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, warmup_steps: 0 };
        Optimizer::composed("ScheduleFreeAdamW", rule, lr)
    }
    /// Any fused rule.
    pub fn new(rule: UpdateRule, lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_rule("Optimizer", rule, lr)
    }
    /// Any composed rule, under a display name.
    pub fn composed(name: &'static str, rule: ComposedRule, lr: impl Into<LearningRate>) -> Optimizer {
        Optimizer::with_update(name, Update::Composed(rule), lr)
    }
    /// Where Adagrad's and FTRL's accumulators start (Keras's
    /// `initial_accumulator_value`, 0.1 by default; other slots start at 0).
    pub fn with_initial_accumulator_value(mut self, value: f64) -> Optimizer {
        self.initial_accumulator = value;
        self
    }
    /// Keras's `LossScaleOptimizer(inner)`: dynamic loss scaling from 2^15,
    /// doubled after 2000 finite steps (see [`Optimizer::with_loss_scale`]).
    pub fn loss_scale_optimizer(inner: Optimizer) -> Optimizer {
        inner.with_loss_scale(32768.0, 2000)
    }
    /// Scale losses dynamically (mixed precision): [`Optimizer::minimize`]
    /// and `Sequential::fit` multiply the loss by the scale (a custom loop
    /// calls [`Optimizer::scale_loss`]), and every update divides the
    /// gradients by it. A step with a gradient that is not finite changes
    /// no variable and halves the scale; `growth_steps` finite steps in a
    /// row double it.
    pub fn with_loss_scale(mut self, initial_scale: f64, growth_steps: u64) -> Optimizer {
        self.loss_scale = Some(LossScale {
            initial: initial_scale,
            growth_steps: growth_steps.clamp(1, i64::MAX as u64) as i64,
            state: Mutex::new(None),
        });
        self
    }
    /// The current loss scale (a float32 variable), with loss scaling on and
    /// after the first update or [`Optimizer::scale_loss`].
    pub fn dynamic_scale(&self) -> Option<Variable> {
        self.loss_scale.as_ref().and_then(|ls| ls.state.lock().as_ref().map(|(_, scale)| scale.clone()))
    }
    /// `loss` times the loss scale (the loss itself without loss scaling).
    #[track_caller]
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        match &self.loss_scale {
            None => Ok(loss.clone()),
            Some(ls) => {
                let (_, scale) = self.loss_scale_state(ls, loss.graph())?;
                ops::mul(loss, &ops::cast(&scale.current(), loss.dtype())?)
            }
        }
    }

    fn loss_scale_state(&self, ls: &LossScale, graph: Option<&crate::graph::Graph>) -> Result<(Variable, Variable)> {
        let mut state = ls.state.lock();
        if let Some(s) = &*state {
            return Ok(s.clone());
        }
        let (counter, scale) = (Tensor::scalar(0i64), Tensor::scalar(ls.initial as f32));
        let made = match graph {
            Some(g) => (
                Variable::in_graph(g, "optimizer/loss_scale/step_counter", &counter, false)?,
                Variable::in_graph(g, "optimizer/loss_scale/dynamic_scale", &scale, false)?,
            ),
            None => (
                Variable::new("optimizer/loss_scale/step_counter", &counter, false)?,
                Variable::new("optimizer/loss_scale/dynamic_scale", &scale, false)?,
            ),
        };
        *state = Some(made.clone());
        Ok(made)
    }

    /// Clip gradients to this global norm before each update.
    pub fn with_clip_norm(mut self, clip_norm: f64) -> Optimizer {
        self.clip_norm = Some(clip_norm);
        self
    }
    /// The fused update rule (`None` for a composed rule).
    pub fn rule(&self) -> Option<UpdateRule> {
        match self.update {
            Update::Fused(rule) => Some(rule),
            Update::Composed(_) => None,
        }
    }
    /// How the optimizer updates each variable.
    pub fn update(&self) -> Update {
        self.update
    }
    /// The learning-rate schedule.
    pub fn learning_rate(&self) -> LearningRate {
        self.learning_rate
    }
    /// The optimizer's display name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The update counter (an i64 variable, created on first use).
    pub fn iterations(&self) -> Option<Variable> {
        self.iterations.lock().clone()
    }

    /// Every variable the optimizer owns: the counter and the slots of each
    /// variable it has updated, with stable names (for checkpoints).
    pub fn state_variables(&self) -> Vec<(String, Variable)> {
        let mut out = Vec::new();
        if let Some(it) = self.iterations() {
            out.push(("optimizer/iterations".to_string(), it));
        }
        if let Some((counter, scale)) = self.loss_scale.as_ref().and_then(|ls| ls.state.lock().clone()) {
            out.push((counter.name().to_string(), counter));
            out.push((scale.name().to_string(), scale));
        }
        let slots = self.slots.lock();
        let mut entries: Vec<&Slots> = slots.values().collect();
        entries.sort_by(|a, b| a.vars[0].name().cmp(b.vars[0].name()));
        for s in entries {
            for v in &s.vars {
                out.push((format!("optimizer/{}", v.name()), v.clone()));
            }
        }
        out
    }

    fn counter(&self, like: &Variable) -> Result<Variable> {
        let mut it = self.iterations.lock();
        if let Some(v) = &*it {
            return Ok(v.clone());
        }
        let zero = Tensor::scalar(0i64);
        let v = match like.graph() {
            Some(g) => Variable::in_graph(g, "optimizer/iterations", &zero, false)?,
            None => Variable::new("optimizer/iterations", &zero, false)?,
        };
        *it = Some(v.clone());
        Ok(v)
    }

    fn slots_for(&self, var: &Variable) -> Result<Vec<Variable>> {
        if let Some(s) = self.slots.lock().get(&var.id()) {
            return Ok(s.vars.clone());
        }
        // Eager zeros are made without the lock: a large fill runs in
        // parallel, and a thread waiting for it may pick up another update
        // that needs the lock. (Values are never written in place, so the
        // slots may share them.)
        // Ok: the variable's graph; Err: the eager slots' initial values.
        let specs: Vec<(&str, Shape)> = match self.update {
            Update::Fused(rule) => rule.slot_names().iter().map(|n| (*n, var.shape().clone())).collect(),
            Update::Composed(rule) => {
                rule.slots(var.name(), var.shape()).into_iter().map(|s| (s.name, s.shape)).collect()
            }
        };
        let accumulates = matches!(self.update, Update::Fused(UpdateRule::Adagrad { .. } | UpdateRule::Ftrl { .. }));
        let init = |k: usize| if accumulates && k == 0 { self.initial_accumulator } else { 0.0 };
        let home = match var.graph() {
            Some(g) => Ok(g),
            // Eager even when first used inside a traced function.
            None => Err(specs
                .iter()
                .enumerate()
                .map(|(k, (_, shape))| {
                    crate::context::eager_scope(|| ops::fill(Ctx::Eager, shape.clone(), init(k), var.dtype()))
                })
                .collect::<Result<Vec<_>>>()?),
        };
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(&var.id()) {
            return Ok(s.vars.clone());
        }
        let mut vars = Vec::new();
        for (k, (name, shape)) in specs.iter().enumerate() {
            let slot_name = format!("{}/{}", var.name(), name);
            let v = match &home {
                Ok(g) => {
                    let start = ops::fill(Ctx::Graph(g), shape.clone(), init(k), var.dtype())?;
                    Variable::in_graph(g, &slot_name, &start, false)?
                }
                Err(starts) => Variable::new(&slot_name, &starts[k], false)?,
            };
            vars.push(v);
        }
        slots.insert(var.id(), Slots { vars: vars.clone() });
        Ok(vars)
    }

    /// The slot variables of `var` (after it has been updated or built).
    pub fn slots(&self, var: &Variable) -> Option<Vec<Variable>> {
        self.slots.lock().get(&var.id()).map(|s| s.vars.clone())
    }

    /// Create the counter and the slots of `vars` without updating anything
    /// (before restoring a checkpoint).
    pub fn build(&self, vars: &[&Variable]) -> Result<()> {
        if let Some(first) = vars.first() {
            self.counter(first)?;
            if let Some(ls) = &self.loss_scale {
                self.loss_scale_state(ls, first.graph())?;
            }
        }
        for v in vars {
            self.slots_for(v)?;
        }
        Ok(())
    }

    /// Apply one update. Eager variables change at once (`Ok(None)`); for
    /// graph variables this adds the update nodes and returns the train op.
    #[track_caller]
    pub fn apply_gradients(&self, grads_and_vars: &[(Tensor, &Variable)]) -> Result<Option<Operation>> {
        let Some((_, first)) = grads_and_vars.first() else {
            return Err(Error::invalid("apply_gradients needs at least one (gradient, variable) pair"));
        };
        let graph_mode = first.is_graph();
        if grads_and_vars.iter().any(|(_, v)| v.is_graph() != graph_mode) {
            return Err(Error::graph("apply_gradients mixes eager and graph variables"));
        }
        let counter = self.counter(first)?;
        let body = || -> Result<Option<Operation>> {
            let mut grads: Vec<Tensor> = grads_and_vars.iter().map(|(g, _)| g.clone()).collect();
            // With loss scaling: unscaled gradients, and (in a graph) the
            // condition under which the step applies.
            let mut applies: Option<Tensor> = None;
            let mut targets: Vec<Operation> = Vec::new();
            if let Some(ls) = &self.loss_scale {
                let (steps, scale) = self.loss_scale_state(ls, first.graph())?;
                let (old_steps, old_scale) = (steps.current(), scale.current());
                let mut finite = Tensor::scalar(true);
                for g in &grads {
                    finite = ops::logical_and(&finite, &ops::all(&ops::is_finite(g)?, ops::Axes::All, false)?)?;
                }
                let grown = ops::equal(&old_steps, ls.growth_steps - 1)?;
                let next_steps = ops::select(&finite, &ops::select(&grown, 0i64, &ops::add(&old_steps, 1i64)?)?, 0i64)?;
                let next_scale = ops::select(
                    &finite,
                    &ops::select(&grown, &ops::mul(&old_scale, 2.0)?, &old_scale)?,
                    &ops::mul(&old_scale, 0.5)?,
                )?;
                grads = grads.iter().map(|g| ops::div(g, &ops::cast(&old_scale, g.dtype())?)).collect::<Result<_>>()?;
                targets.extend(steps.assign(&next_steps)?.op());
                targets.extend(scale.assign(&next_scale)?.op());
                if !finite.is_symbolic() {
                    if !finite.to_vec::<bool>()?.first().copied().unwrap_or(false) {
                        // Eagerly, a skipped step changes nothing else.
                        return Ok(None);
                    }
                } else {
                    applies = Some(finite);
                }
            }
            // Keep the old value where a conditional step does not apply.
            let kept = |new: &Tensor, old: &Tensor| -> Result<Tensor> {
                match &applies {
                    Some(c) => ops::select(c, new, old),
                    None => Ok(new.clone()),
                }
            };
            // The schedule sees the count before this update; derive it from the
            // incremented value so no separate read can race with the increment.
            let after = match &applies {
                None => counter.assign_add(&Tensor::scalar(1i64))?,
                Some(_) => {
                    let old = counter.current();
                    counter.assign(&kept(&ops::add(&old, 1i64)?, &old)?)?
                }
            };
            let before = ops::sub(&after, 1i64)?;
            if let Some(c) = self.clip_norm {
                grads = clip_by_global_norm(&grads, c)?.0;
            }
            for (g, (_, var)) in grads.iter().zip(grads_and_vars) {
                let dtype = var.dtype();
                if !dtype.is_float() {
                    return Err(Error::dtype(format!(
                        "variable '{}' is {dtype}; only float variables train",
                        var.name()
                    )));
                }
                let step = ops::cast(&after, dtype)?;
                let lr = self.learning_rate.tensor(&ops::cast(&before, dtype)?)?;
                let slots = self.slots_for(var)?;
                let slot_values: Vec<Tensor> = slots.iter().map(|s| s.read()).collect();
                let slot_refs: Vec<&Tensor> = slot_values.iter().collect();
                let g = if g.dtype() == dtype { g.clone() } else { ops::cast(g, dtype)? };
                let old = var.current();
                let (value, new_slots) = match self.update {
                    Update::Fused(rule) => {
                        let mut new = ops::apply_update(rule, &old, &g, &lr, &step, &slot_refs)?;
                        let rest = new.split_off(1);
                        (new.remove(0), rest)
                    }
                    Update::Composed(rule) => rule.apply(var.name(), &old, &g, &lr, &step, &slot_values)?,
                };
                let a = var.assign(&kept(&value, &old)?)?;
                targets.extend(a.op());
                for ((slot, value), old) in slots.iter().zip(&new_slots).zip(&slot_values) {
                    targets.extend(slot.assign(&kept(value, old)?)?.op());
                }
            }
            if let Some(op) = after.op() {
                targets.push(op);
            }
            match first.graph() {
                Some(g) => {
                    let refs: Vec<&Operation> = targets.iter().collect();
                    Ok(Some(g.group(&refs)?))
                }
                None => Ok(None),
            }
        };
        if graph_mode {
            body()
        } else {
            // Updates are not part of any gradient computation.
            tape::untracked(body)
        }
    }

    /// Graph mode: the train op for `loss` (gradients, then updates of `vars`).
    #[track_caller]
    pub fn minimize(&self, loss: &Tensor, vars: &[&Variable]) -> Result<Operation> {
        if !loss.is_symbolic() {
            return Err(Error::graph(
                "minimize() builds a train op in a graph; in eager mode use a GradientTape and apply_gradients",
            ));
        }
        let reads: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
        let refs: Vec<&Tensor> = reads.iter().collect();
        let grads = gradients(&[&self.scale_loss(loss)?], &refs, None, Unconnected::Zero)?;
        let pairs: Vec<(Tensor, &Variable)> =
            grads.into_iter().zip(vars).map(|(g, v)| (g.unwrap_or_else(|| Tensor::scalar(0.0f32)), *v)).collect();
        self.apply_gradients(&pairs)?.ok_or_else(|| Error::graph("minimize() produced no train op"))
    }
}
