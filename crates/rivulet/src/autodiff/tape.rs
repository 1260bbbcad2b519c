//! `GradientTape`: records eager ops for reverse-mode gradients, as in
//! TensorFlow 2.
//!
//! A tape records, while it lives, every eager op on this thread that reads
//! a tensor it watches (or one computed from such a tensor). Trainable
//! variables read during recording are watched automatically. Tapes nest:
//! the ops an inner tape runs to compute a gradient are recorded by the
//! outer tapes, which can then differentiate the gradient again.

use super::{backprop, finish, Unconnected};
use crate::context::{self, key, Key, TapeState};
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::{self, Variable};
use std::cell::Cell;
use std::rc::Rc;

/// Run `f` without recording on any tape (optimizer updates, assignments).
pub use crate::context::untracked;

/// Records eager ops for [`GradientTape::gradient`]. Recording starts at
/// creation and stops when the tape is dropped (or, for a non-persistent
/// tape, after its one `gradient` call).
pub struct GradientTape {
    state: Rc<TapeState>,
    persistent: bool,
    used: Cell<bool>,
}

impl Default for GradientTape {
    fn default() -> GradientTape {
        GradientTape::new()
    }
}

impl GradientTape {
    /// A tape that allows one `gradient` call and watches trainable variables.
    pub fn new() -> GradientTape {
        GradientTape::with_options(false, true)
    }

    /// A tape that allows any number of `gradient` calls.
    pub fn persistent() -> GradientTape {
        GradientTape::with_options(true, true)
    }

    /// Full control: `watch_accessed_variables: false` watches only what
    /// [`GradientTape::watch`] is given.
    pub fn with_options(persistent: bool, watch_accessed_variables: bool) -> GradientTape {
        let state = Rc::new(TapeState::new(watch_accessed_variables));
        context::push_tape(state.clone());
        GradientTape { state, persistent, used: Cell::new(false) }
    }

    /// Watch `t`: ops that read it (or values computed from it) are recorded.
    pub fn watch(&self, t: &Tensor) {
        self.state.watch(t);
    }

    /// Watch a variable: its current value, and every value read from it later.
    pub fn watch_variable(&self, v: &Variable) {
        self.state.watch_as(v.id(), &v.current());
    }

    /// Stop recording (the tape keeps what it has; gradients still work).
    pub fn stop_recording(&self) {
        context::remove_tape(&self.state);
    }

    /// Number of ops recorded so far.
    pub fn num_records(&self) -> usize {
        self.state.records.borrow().len()
    }

    /// Gradients of `target` with respect to each of `sources` (`None` where
    /// it does not depend on a source).
    pub fn gradient(&self, target: &Tensor, sources: &[&Tensor]) -> Result<Vec<Option<Tensor>>> {
        self.gradient_with(target, sources, None, Unconnected::None)
    }

    /// [`GradientTape::gradient`] with an output gradient (default ones) and
    /// a policy for unconnected sources.
    pub fn gradient_with(
        &self,
        target: &Tensor,
        sources: &[&Tensor],
        output_gradient: Option<&Tensor>,
        unconnected: Unconnected,
    ) -> Result<Vec<Option<Tensor>>> {
        if self.used.get() && !self.persistent {
            return Err(Error::precondition(
                "a non-persistent GradientTape can compute gradients only once (use GradientTape::persistent)",
            ));
        }
        self.used.set(true);
        // This tape must not record its own gradient computation; outer tapes do.
        self.state.paused.set(true);
        struct Unpause<'a>(&'a Cell<bool>);
        impl Drop for Unpause<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _unpause = Unpause(&self.state.paused);
        let seed = match output_gradient {
            Some(g) => g.clone(),
            None => ops::ones_like(target)?,
        };
        // Only watched tensors (and values computed from them) are sources.
        let tracked: Vec<Option<Key>> = {
            let t = self.state.tracked.borrow();
            sources.iter().map(|s| Some(key(s)).filter(|k| t.contains(k))).collect()
        };
        let source_keys: Vec<Key> = tracked.iter().flatten().copied().collect();
        let mut found_tracked = {
            let records = self.state.records.borrow();
            backprop(records.iter(), vec![(key(target), seed)], &source_keys)?
        }
        .into_iter();
        let found: Vec<Option<Tensor>> =
            tracked.iter().map(|k| k.and_then(|_| found_tracked.next().flatten())).collect();
        if !self.persistent {
            self.stop_recording();
            self.state.records.borrow_mut().clear();
        }
        finish(found, sources, unconnected)
    }

    /// Gradients with respect to variables: summed over every value of each
    /// variable read while recording (`None` for a variable not read).
    pub fn gradient_vars(&self, target: &Tensor, vars: &[&Variable]) -> Result<Vec<Option<Tensor>>> {
        self.gradient_vars_with(target, vars, Unconnected::None)
    }

    /// [`GradientTape::gradient_vars`] with TensorFlow's
    /// `unconnected_gradients`: `Unconnected::Zero` gives zeros of the
    /// variable's shape and dtype where the target does not depend on it.
    pub fn gradient_vars_with(
        &self,
        target: &Tensor,
        vars: &[&Variable],
        unconnected: Unconnected,
    ) -> Result<Vec<Option<Tensor>>> {
        let reads: Vec<Vec<Tensor>> = {
            let map = self.state.variable_reads.borrow();
            vars.iter().map(|v| map.get(&v.id()).cloned().unwrap_or_default()).collect()
        };
        let flat: Vec<&Tensor> = reads.iter().flatten().collect();
        let mut grads = self.gradient(target, &flat)?.into_iter();
        let mut out = Vec::with_capacity(vars.len());
        for r in &reads {
            let mut sum: Option<Tensor> = None;
            for _ in r {
                if let Some(g) = grads.next().flatten() {
                    sum = Some(match sum {
                        Some(s) => ops::add(&s, &g)?,
                        None => g,
                    });
                }
            }
            out.push(sum);
        }
        if unconnected == Unconnected::Zero {
            for (g, v) in out.iter_mut().zip(vars) {
                if g.is_none() {
                    *g = Some(ops::zeros(crate::ops::Ctx::Eager, v.shape().clone(), v.dtype())?);
                }
            }
        }
        Ok(out)
    }
}

impl Drop for GradientTape {
    fn drop(&mut self) {
        self.stop_recording();
    }
}
