//! `GradientTape`: records eager ops for reverse-mode gradients, as in
//! TensorFlow 2.
//!
//! A tape records, while it lives, every eager op on this thread that reads
//! a tensor it watches (or one computed from such a tensor). Trainable
//! variables read during recording are watched automatically. Tapes nest:
//! the ops an inner tape runs to compute a gradient are recorded by the
//! outer tapes, which can then differentiate the gradient again.

use super::{backprop, finish, key, Key, Record, Unconnected};
use crate::error::{Error, Result};
use crate::ops::{self, Op, Variable};
use crate::tensor::Tensor;
use rustc_hash::FxHashSet;
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

struct TapeState {
    records: RefCell<Vec<Record>>,
    tracked: RefCell<FxHashSet<Key>>,
    /// Watched tensors, kept alive so that their addresses stay theirs.
    watched: RefCell<Vec<Tensor>>,
    /// Values of each variable read while recording, by variable id.
    variable_reads: RefCell<rustc_hash::FxHashMap<u64, Vec<Tensor>>>,
    watch_variables: bool,
    /// Not recording while it computes its own gradients.
    paused: Cell<bool>,
}

thread_local! {
    static ACTIVE: RefCell<Vec<Rc<TapeState>>> = const { RefCell::new(Vec::new()) };
    static UNTRACKED: Cell<usize> = const { Cell::new(0) };
}

/// True when some tape on this thread might record (cheap check for the
/// eager dispatch path).
#[inline]
pub(crate) fn any_active() -> bool {
    ACTIVE.with(|a| !a.borrow().is_empty()) && UNTRACKED.with(|u| u.get() == 0)
}

/// Record an eager op application on every active tape that tracks one of its inputs.
pub(crate) fn record(op: &Op, inputs: &[&Tensor], outputs: &[Tensor]) {
    if !any_active() {
        return;
    }
    let tapes: SmallVec<[Rc<TapeState>; 2]> = ACTIVE.with(|a| a.borrow().iter().cloned().collect());
    let in_keys: SmallVec<[Key; 4]> = inputs.iter().map(|t| key(t)).collect();
    for tape in tapes {
        if tape.paused.get() {
            continue;
        }
        let hit = {
            let tracked = tape.tracked.borrow();
            in_keys.iter().any(|k| tracked.contains(k))
        };
        if hit {
            tape.tracked.borrow_mut().extend(outputs.iter().map(key));
            tape.records.borrow_mut().push(Record {
                op: op.clone(),
                inputs: inputs.iter().map(|t| (*t).clone()).collect(),
                outputs: outputs.to_vec(),
            });
        }
    }
}

/// A trainable variable was read: watch its value on the tapes that watch variables.
pub(crate) fn watch_variable(var_id: u64, t: &Tensor) {
    if !any_active() {
        return;
    }
    ACTIVE.with(|a| {
        for tape in a.borrow().iter() {
            if tape.watch_variables && !tape.paused.get() {
                tape.watch_as(var_id, t);
            }
        }
    });
}

impl TapeState {
    fn watch(&self, t: &Tensor) {
        if self.tracked.borrow_mut().insert(key(t)) {
            self.watched.borrow_mut().push(t.clone());
        }
    }
    fn watch_as(&self, var_id: u64, t: &Tensor) {
        self.watch(t);
        let mut reads = self.variable_reads.borrow_mut();
        let list = reads.entry(var_id).or_default();
        if !list.iter().any(|r| key(r) == key(t)) {
            list.push(t.clone());
        }
    }
}

/// Run `f` without recording on any tape (optimizer updates, assignments).
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            UNTRACKED.with(|u| u.set(u.get() - 1));
        }
    }
    UNTRACKED.with(|u| u.set(u.get() + 1));
    let _restore = Restore;
    f()
}

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
        let state = Rc::new(TapeState {
            records: RefCell::new(Vec::new()),
            tracked: RefCell::new(FxHashSet::default()),
            watched: RefCell::new(Vec::new()),
            variable_reads: RefCell::new(rustc_hash::FxHashMap::default()),
            watch_variables: watch_accessed_variables,
            paused: Cell::new(false),
        });
        ACTIVE.with(|a| a.borrow_mut().push(state.clone()));
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
        ACTIVE.with(|a| a.borrow_mut().retain(|s| !Rc::ptr_eq(s, &self.state)));
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
        Ok(out)
    }
}

impl Drop for GradientTape {
    fn drop(&mut self) {
        self.stop_recording();
    }
}
