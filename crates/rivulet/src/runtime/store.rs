//! Variables' values: the cell each variable's value lives in (shared by
//! an eager variable and the sessions of the functions that capture it),
//! a session's cells by graph node, and the optimizer updates that
//! overwrite a variable and its slots in place.
//!
//! No lock is held while a kernel runs: a kernel's parallel loop may, on the
//! same thread, pick up a step of another run that wants the lock. For the
//! same reason a reader of a variable that is being overwritten never
//! simply waits: it runs the update's remaining chunks itself, and then
//! waits only for chunks that other threads are running right now.

use crate::backend::{self, InPlaceUpdate};
use crate::error::{Error, Result};
use crate::graph::NodeId;
use crate::graph::Tensor;
use crate::op::optim::UpdateRule;
use crate::op::Op;
use crate::tensor::{Device, Value};
use parking_lot::{RwLock, RwLockWriteGuard};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where one variable's value lives.
pub(crate) struct VariableCell {
    state: RwLock<State>,
}

enum State {
    Ready(Tensor),
    /// Being overwritten in place (together with the update's other cells).
    Updating(Arc<Update>),
    /// Only inside `update`, while it holds every cell's lock.
    Taken,
}

struct Update {
    job: InPlaceUpdate,
    cells: SmallVec<[Arc<VariableCell>; 3]>,
    /// Set once the new values are back in the cells.
    published: AtomicBool,
}

impl VariableCell {
    /// A cell holding `value` (a computed tensor).
    pub fn new(value: Tensor) -> Arc<VariableCell> {
        Arc::new(VariableCell { state: RwLock::new(State::Ready(value)) })
    }

    /// The current value.
    pub fn get(&self) -> Tensor {
        loop {
            let update = match &*self.state.read() {
                State::Ready(t) => return t.clone(),
                State::Updating(u) => u.clone(),
                // Never seen outside `update` (it holds the write lock).
                State::Taken => continue,
            };
            update.finish();
        }
    }

    /// Replace the value; with `expected`, only if the cell still holds that
    /// very value (false if not).
    fn compare_and_set(&self, value: Tensor, expected: Option<&Tensor>) -> bool {
        loop {
            let mut state = self.state.write();
            match &*state {
                State::Updating(u) => {
                    let u = u.clone();
                    drop(state);
                    u.finish();
                }
                State::Taken => {}
                State::Ready(old) => {
                    if expected.is_some_and(|e| !old.is_same_value(e)) {
                        return false;
                    }
                    *state = State::Ready(value);
                    return true;
                }
            }
        }
    }

    /// Replace the value.
    pub fn set(&self, value: Tensor) {
        self.compare_and_set(value, None);
    }

    /// Replace the value with `f(current)`. `f` runs without the lock (it
    /// may run parallel kernels, whose waiting thread may pick up work that
    /// wants this cell) and its result is published only if the value has
    /// not changed meanwhile; else `f` runs again on the new value, so
    /// concurrent updates are not lost. Comparing by identity is sound: an
    /// in-place update keeps a buffer's identity, but never touches one
    /// that someone (here, the held `current`) still holds.
    pub fn modify(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        loop {
            let current = self.get();
            let new = f(&current)?;
            if self.compare_and_set(new.clone(), Some(&current)) {
                return Ok(new);
            }
        }
    }
}

impl Update {
    /// Help the update to its end, and wait until it is published.
    fn finish(self: &Arc<Update>) {
        if self.job.help() {
            self.publish();
        }
        self.wait();
    }

    /// Run the chunks on the pool; whichever thread writes the last one
    /// publishes the new values at once (not after the loop returns: a
    /// reader waiting for them may sit on this thread's stack).
    fn drive(self: &Arc<Update>) {
        let threads = rayon::current_num_threads().min(self.job.chunks());
        if threads <= 1 {
            return self.finish();
        }
        (0..threads).into_par_iter().for_each(|_| {
            if self.job.help() {
                self.publish();
            }
        });
        self.wait();
    }

    /// Wait for the chunks other threads are running (a few microseconds
    /// each; they wait for nothing) and for the publication.
    fn wait(&self) {
        let mut spins = 0u32;
        while !self.published.load(Ordering::Acquire) {
            if self.job.is_poisoned() {
                // A kernel bug, not bad input: the variable's value is lost.
                panic!("an in-place optimizer update panicked on another thread");
            }
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Put the new values back in the cells (they keep the only handles).
    fn publish(self: &Arc<Update>) {
        if let Some(values) = self.job.take_results() {
            for (cell, value) in self.cells.iter().zip(values) {
                let mut state = cell.state.write();
                if matches!(&*state, State::Updating(u) if Arc::ptr_eq(u, self)) {
                    *state = State::Ready(Tensor::from_value(value));
                }
            }
        }
        self.published.store(true, Ordering::Release);
    }
}

/// Write locks of several distinct cells, taken in address order (so two
/// updates of overlapping sets cannot wait for each other), by position.
fn lock_all(cells: &[Arc<VariableCell>]) -> Vec<RwLockWriteGuard<'_, State>> {
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| Arc::as_ptr(&cells[i]) as usize);
    let mut guards: Vec<Option<RwLockWriteGuard<'_, State>>> = (0..cells.len()).map(|_| None).collect();
    for i in order {
        guards[i] = Some(cells[i].state.write());
    }
    guards.into_iter().flatten().collect()
}

/// The values of locked cells, if all are ready.
fn ready(guards: &[RwLockWriteGuard<'_, State>]) -> Option<Vec<Tensor>> {
    guards
        .iter()
        .map(|g| match &**g {
            State::Ready(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// Apply `rule` to `cells` (the variable's, then its slots') and return
/// their new values: over the old buffers when nothing else holds them (no
/// run, view, fetch or eager read), else into new ones.
///
/// With `in_place_only` (a graph being captured), a device update that
/// cannot overwrite the buffers is an error, and no cell changes.
pub(crate) fn update(
    rule: UpdateRule,
    cells: &[Arc<VariableCell>],
    grad: &Value,
    lr: &Value,
    step: &Value,
    in_place_only: bool,
) -> Result<Vec<Value>> {
    let distinct = cells.iter().enumerate().all(|(i, c)| cells[..i].iter().all(|d| !Arc::ptr_eq(c, d)));
    if cells.len() != 1 + rule.num_slots() || !distinct {
        return Err(Error::invalid(format!(
            "{} updates a variable and {} distinct slots, got {} variables",
            rule.type_name(),
            rule.num_slots(),
            cells.len()
        )));
    }
    // On the host, chunk by chunk on the pool; on a device, by its backend's
    // in-place kernel where it has one (queued, so no lock waits long).
    let host = grad.device() == Device::CPU;
    // Kernels (a copy of a strided gradient, casts) run before any lock.
    let (grad, lr_f, step_f) = if host { backend::update_operands(grad, lr, step)? } else { (grad.clone(), 0.0, 0.0) };
    loop {
        let mut guards = lock_all(cells);
        let busy = guards.iter().find_map(|g| match &**g {
            State::Updating(u) => Some(u.clone()),
            _ => None,
        });
        if let Some(u) = busy {
            drop(guards);
            u.finish();
            continue;
        }
        if !host {
            match update_on_device(rule, &mut guards, &grad, lr, step) {
                Some(Ok(values)) => return Ok(values),
                Some(Err(e)) => return Err(e),
                None if in_place_only => {
                    return Err(Error::precondition(format!(
                        "{} over buffers something else holds (or without an in-place kernel) in a captured graph",
                        rule.type_name()
                    )))
                }
                None => {}
            }
        }
        if host && guards.iter().all(|g| matches!(&**g, State::Ready(t) if t.is_unique() && t.device() == Device::CPU))
        {
            let taken = take_values(&mut guards);
            let job = if taken.iter().all(|r| r.is_ok()) {
                let values: Vec<Value> = taken.into_iter().filter_map(|r| r.ok()).collect();
                InPlaceUpdate::new(rule, values, &grad, lr_f, step_f)
                    .map_err(|back| back.into_iter().map(Tensor::from_value).collect::<Vec<_>>())
            } else {
                Err(taken.into_iter().map(|r| r.map_or_else(|t| t, Tensor::from_value)).collect())
            };
            match job {
                Ok(job) => {
                    let u = Arc::new(Update {
                        job,
                        cells: cells.iter().cloned().collect(),
                        published: AtomicBool::new(false),
                    });
                    for g in guards.iter_mut() {
                        **g = State::Updating(u.clone());
                    }
                    drop(guards);
                    u.drive();
                    return Ok(cells.iter().filter_map(|c| c.get().value().ok().cloned()).collect());
                }
                Err(back) => {
                    for (g, t) in guards.iter_mut().zip(back) {
                        **g = State::Ready(t);
                    }
                }
            }
        }
        let Some(old) = ready(&guards) else { continue };
        drop(guards);
        // A buffer is held elsewhere: new ones, like the pure op, published
        // only if no other update came first (else computed again).
        log::debug!("{}: a variable or slot buffer is shared; writing new buffers", rule.type_name());
        let old_values: Vec<&Value> = old.iter().map(|t| t.value()).collect::<Result<_>>()?;
        let mut inputs: Vec<&Value> = vec![old_values[0], &grad, lr, step];
        inputs.extend(old_values[1..].iter().copied());
        // On the variable's device, by that backend's kernel.
        let op = Op::ApplyUpdate { rule };
        let new = backend::execute_on(old_values[0].device(), &op, &inputs, &backend::KernelCtx::EAGER)?.into_vec();
        let mut guards = lock_all(cells);
        let unchanged = guards.iter().zip(&old).all(|(g, o)| matches!(&**g, State::Ready(t) if t.is_same_value(o)));
        if unchanged {
            for (g, v) in guards.iter_mut().zip(&new) {
                **g = State::Ready(Tensor::from_value(v.clone()));
            }
            return Ok(new);
        }
    }
}

/// The values of the locked cells, taken out (each cell `Taken` until the
/// caller puts a value back): `Err` gives back a value that is not held by
/// its cell alone. Under every lock, nobody can clone a unique one now.
fn take_values(guards: &mut [RwLockWriteGuard<'_, State>]) -> Vec<std::result::Result<Value, Tensor>> {
    guards
        .iter_mut()
        .filter_map(|g| match std::mem::replace(&mut **g, State::Taken) {
            State::Ready(t) => Some(t.into_unique_value()),
            _ => None,
        })
        .collect()
}

/// Drop the host copy of the device value in a locked cell, which the
/// cell holds alone and whose buffer is being overwritten in place.
fn forget_host_copy(state: &mut State) {
    if let State::Ready(t) = std::mem::replace(state, State::Taken) {
        *state = State::Ready(match t.into_unique_value() {
            Ok(mut v) => {
                if let Some(storage) = Arc::get_mut(&mut v.storage) {
                    storage.forget_host_copy();
                }
                Tensor::from_value(v)
            }
            Err(t) => t,
        });
    }
}

/// The in-place update of values on `grad`'s device (under every cell's
/// lock, held alone): `None` where a buffer is shared or the backend has no
/// in-place kernel for the rule, and the caller writes new buffers.
fn update_on_device(
    rule: UpdateRule,
    guards: &mut [RwLockWriteGuard<'_, State>],
    grad: &Value,
    lr: &Value,
    step: &Value,
) -> Option<Result<Vec<Value>>> {
    let device = grad.device();
    if !guards.iter().all(|g| matches!(&**g, State::Ready(t) if t.is_unique() && t.device() == device)) {
        return None;
    }
    let backend = match backend::backend(device) {
        Ok(b) => b,
        Err(e) => return Some(Err(e)),
    };
    let taken = take_values(guards);
    if !taken.iter().all(|r| r.is_ok()) {
        for (g, r) in guards.iter_mut().zip(taken) {
            **g = State::Ready(r.map_or_else(|t| t, Tensor::from_value));
        }
        return None;
    }
    let mut values: Vec<Value> = taken.into_iter().filter_map(|r| r.ok()).collect();
    let ran = backend.update_in_place(&rule, &mut values, grad, lr, step);
    let out = values.clone();
    for (g, v) in guards.iter_mut().zip(values) {
        **g = State::Ready(Tensor::from_value(v));
    }
    match ran {
        Ok(true) => Some(Ok(out)),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    }
}

/// A shape error unless `new` has the shape of `old`, the value of variable `name`.
fn same_shape(name: &str, new: &Value, old: &Tensor) -> Result<()> {
    if new.shape() != old.shape() {
        return Err(Error::shape(format!(
            "assigning shape {} to variable '{name}' of shape {}",
            new.shape(),
            old.shape()
        )));
    }
    Ok(())
}

/// A session's variables: a cell per graph variable node (bound to an
/// eager variable's own cell for a traced function's captures).
#[derive(Default)]
pub(crate) struct VariableStore {
    cells: RwLock<FxHashMap<NodeId, Arc<VariableCell>>>,
}

impl VariableStore {
    fn cell(&self, var: NodeId) -> Option<Arc<VariableCell>> {
        self.cells.read().get(&var).cloned()
    }

    /// The current value of `var`, `None` when it has none.
    pub fn get(&self, var: NodeId) -> Option<Value> {
        self.cell(var)?.get().value().ok().cloned()
    }

    pub fn contains(&self, var: NodeId) -> bool {
        self.cells.read().contains_key(&var)
    }

    /// Set `var` to `value`.
    pub fn set(&self, var: NodeId, value: Value) {
        let cell = match self.cells.write().entry(var) {
            std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(VariableCell::new(Tensor::from_value(value)));
                return;
            }
        };
        // Outside the map's lock: the cell may be in an update to help along.
        cell.set(Tensor::from_value(value));
    }

    /// Keep `var`'s value in `cell` from now on (a traced function's
    /// stand-in for the eager variable that owns the cell).
    pub fn bind(&self, var: NodeId, cell: Arc<VariableCell>) {
        self.cells.write().insert(var, cell);
    }

    /// Set `var` (named `name`) to `value` of the same shape.
    pub fn assign(&self, var: NodeId, name: &str, value: &Value) -> Result<()> {
        match self.cell(var) {
            Some(cell) => {
                same_shape(name, value, &cell.get())?;
                cell.set(Tensor::from_value(value.clone()));
            }
            None => self.set(var, value.clone()),
        }
        Ok(())
    }

    /// Set `var` (named `name`) to `f(current)`, of the same shape: see
    /// [`VariableCell::modify`].
    pub fn modify(&self, var: NodeId, name: &str, f: impl Fn(&Value) -> Result<Value>) -> Result<Value> {
        let cell = self.cell(var).ok_or_else(|| uninitialized(name))?;
        let new = cell.modify(|current| {
            let new = Tensor::from_value(f(current.value()?)?);
            same_shape(name, new.value()?, current)?;
            Ok(new)
        })?;
        Ok(new.value()?.clone())
    }

    /// Write `f(current)` into `var`'s own buffer, for a graph being
    /// captured (the variable keeps its address): an error, with nothing
    /// changed, where something else holds the buffer or its device cannot
    /// copy into it. The output is the variable's value.
    pub fn overwrite(&self, var: NodeId, name: &str, f: impl FnOnce(&Value) -> Result<Value>) -> Result<Value> {
        let cell = self.cell(var).ok_or_else(|| uninitialized(name))?;
        let mut guard = cell.state.write();
        let current = match &*guard {
            State::Ready(t) if t.is_unique() => t.value()?.clone(),
            _ => {
                return Err(Error::precondition(format!(
                    "assigning variable '{name}' while something else holds its buffer, in a captured graph"
                )))
            }
        };
        let new = f(&current)?;
        if new.dtype != current.dtype || new.shape() != current.shape() {
            return Err(Error::shape(format!(
                "assigning {}{} to variable '{name}' of {}{}",
                new.dtype,
                new.shape(),
                current.dtype,
                current.shape()
            )));
        }
        backend::backend(current.device())?.copy_into(&current, &new)?;
        drop(current);
        // The host copy a read made is stale now.
        forget_host_copy(&mut guard);
        match &*guard {
            State::Ready(t) => Ok(t.value()?.clone()),
            _ => Err(Error::graph("internal: a variable lost its value")),
        }
    }

    /// For a graph replay: with every cell of `vars` locked, when each
    /// holds a value that `fits` what the capture recorded (its address and
    /// layout), and each written one (`true`) holds it alone, forget the written values'
    /// host copies (the replay overwrites their buffers) and run `f`, which
    /// queues the replay. `None` when a variable moved or is shared: the
    /// caller runs the plan step by step instead.
    pub fn replay_guard<R>(
        &self,
        vars: &[(NodeId, bool)],
        fits: &dyn Fn(NodeId, &Value) -> bool,
        f: impl FnOnce(&dyn Fn(NodeId) -> Option<Value>) -> R,
    ) -> Option<R> {
        // Distinct cells (a function's stand-ins may share one).
        let mut cells: Vec<(Arc<VariableCell>, NodeId, bool)> = Vec::with_capacity(vars.len());
        for &(var, written) in vars {
            let cell = self.cell(var)?;
            match cells.iter_mut().find(|(c, ..)| Arc::ptr_eq(c, &cell)) {
                Some(seen) => seen.2 |= written,
                None => cells.push((cell, var, written)),
            }
        }
        let arcs: Vec<Arc<VariableCell>> = cells.iter().map(|(c, ..)| c.clone()).collect();
        let mut guards = lock_all(&arcs);
        for (g, &(_, var, written)) in guards.iter().zip(&cells) {
            let State::Ready(t) = &**g else { return None };
            let v = t.value().ok()?;
            if !fits(var, v) || (written && !t.is_unique()) {
                return None;
            }
        }
        for (g, &(_, _, written)) in guards.iter_mut().zip(&cells) {
            if !written {
                continue;
            }
            // Unique under the lock (checked above).
            forget_host_copy(g);
        }
        // The values, for `f` to read (under the locks, `get` would wait).
        let values: Vec<(NodeId, Value)> = vars
            .iter()
            .filter_map(|&(var, _)| {
                let cell = self.cell(var)?;
                let k = arcs.iter().position(|c| Arc::ptr_eq(c, &cell))?;
                match &*guards[k] {
                    State::Ready(t) => t.value().ok().map(|v| (var, v.clone())),
                    _ => None,
                }
            })
            .collect();
        let lookup = |var: NodeId| values.iter().find(|(v, _)| *v == var).map(|(_, x)| x.clone());
        let out = f(&lookup);
        drop(values);
        drop(guards);
        Some(out)
    }

    /// An optimizer update of `vars` (the variable, then its slots): see [`update`].
    pub fn update(
        &self,
        rule: UpdateRule,
        vars: &[(NodeId, String)],
        grad: &Value,
        lr: &Value,
        step: &Value,
        in_place_only: bool,
    ) -> Result<Vec<Value>> {
        let cells: Vec<Arc<VariableCell>> =
            vars.iter().map(|(v, name)| self.cell(*v).ok_or_else(|| uninitialized(name))).collect::<Result<_>>()?;
        update(rule, &cells, grad, lr, step, in_place_only)
    }
}

/// The error for reading a variable before its initializer ran.
pub(super) fn uninitialized(name: &str) -> Error {
    Error::precondition(format!(
        "variable '{name}' is not initialized: run its initializer (graph.global_variables_initializer()) first"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::storage::HostBuffer;
    use crate::tensor::{DType, Shape};

    fn value(data: &[f32]) -> Value {
        Value::from_buffer(DType::F32, Shape::new(&[data.len()]), HostBuffer::from_slice(data).expect("buffer"))
    }

    fn scalar(v: f32) -> Value {
        Value::from_buffer(DType::F32, Shape::scalar(), HostBuffer::from_slice(&[v]).expect("buffer"))
    }

    fn address(v: &Value) -> *const u8 {
        v.storage.host().bytes().as_ptr()
    }

    fn on_reference(data: &[f32]) -> Value {
        Value::from_buffer_on(
            Device::REFERENCE,
            DType::F32,
            Shape::new(&[data.len()]),
            HostBuffer::from_slice(data).expect("buffer"),
        )
    }

    /// On a device, the same rules through the backend's in-place form (the
    /// reference device's stands in for a GPU's): Adam over a variable and
    /// two slots nobody else holds keeps all three buffers, and
    /// `in_place_only` refuses, changing nothing, when a buffer is held.
    #[test]
    fn device_updates_keep_their_buffers_or_refuse_when_asked_to() -> Result<()> {
        let store = VariableStore::default();
        let vars: Vec<(NodeId, String)> = ["w", "m", "v"].iter().enumerate().map(|(i, n)| (i, n.to_string())).collect();
        store.set(0, on_reference(&[1.0, -2.0, 3.0]));
        store.set(1, on_reference(&[0.0; 3]));
        store.set(2, on_reference(&[0.0; 3]));
        let grad = on_reference(&[0.5, -0.25, 2.0]);
        let scalar = |x: f32| {
            HostBuffer::from_slice(&[x])
                .map(|b| Value::from_buffer_on(Device::REFERENCE, DType::F32, Shape::scalar(), b))
        };
        let (lr, step) = (scalar(0.1)?, scalar(1.0)?);
        let adam = UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
        let before: Vec<*const u8> = (0..3).map(|i| address(&store.get(i).expect("value"))).collect();
        let new = store.update(adam, &vars, &grad, &lr, &step, true)?;
        let after: Vec<*const u8> = new.iter().map(address).collect();
        assert_eq!(after, before, "every buffer is updated in place");
        // Keras's first Adam step: w - lr·sign(g) (up to epsilon).
        let w = new[0].contiguous_slice::<f32>().expect("w").to_vec();
        for (got, want) in w.iter().zip([0.9f32, -1.9, 2.9]) {
            assert!((got - want).abs() < 1e-5, "{w:?}");
        }
        let m = new[1].contiguous_slice::<f32>().expect("m").to_vec();
        assert_eq!(m, vec![0.05, -0.025, 0.2]);
        drop(new);
        let held = store.get(1).expect("m");
        let refused = store.update(adam, &vars, &grad, &lr, &step, true);
        assert!(refused.is_err_and(|e| e.kind() == crate::error::ErrorKind::FailedPrecondition));
        assert_eq!(address(&store.get(0).expect("w")), before[0], "nothing changed");
        assert_eq!(store.get(0).expect("w").contiguous_slice::<f32>().expect("w"), &w[..]);
        // Without the flag, new buffers, and the holder keeps its value.
        let moved = store.update(adam, &vars, &grad, &lr, &step, false)?;
        assert_ne!(address(&moved[1]), address(&held));
        assert_eq!(held.contiguous_slice::<f32>().expect("m"), &[0.05, -0.025, 0.2]);
        Ok(())
    }

    /// A variable nobody else holds is updated in its own buffer; one that a
    /// reader still holds gets a new buffer and the reader keeps the old
    /// value. Both give the pure op's numbers.
    #[test]
    fn updates_write_in_place_only_when_nobody_else_holds_the_buffers() -> Result<()> {
        let n = 40_000;
        let (w, g) = (vec![1.0f32; n], vec![0.5f32; n]);
        let store = VariableStore::default();
        let vars = [(0usize, "w".to_string())];
        store.set(0, value(&w));
        let (lr, step, grad) = (scalar(0.1), scalar(1.0), value(&g));
        let before = address(&store.get(0).expect("w"));
        let new = store.update(UpdateRule::Sgd, &vars, &grad, &lr, &step, false)?;
        assert_eq!(address(&new[0]), before, "a unique buffer is updated in place");
        assert!(new[0].contiguous_slice::<f32>().expect("w").iter().all(|&x| x == 0.95));
        drop(new);
        let held = store.get(0).expect("w");
        let new = store.update(UpdateRule::Sgd, &vars, &grad, &lr, &step, false)?;
        assert_ne!(address(&new[0]), address(&held), "a held buffer is not overwritten");
        assert!(held.contiguous_slice::<f32>().expect("held").iter().all(|&x| x == 0.95));
        assert!(store.get(0).expect("w").contiguous_slice::<f32>().expect("w").iter().all(|&x| x == 0.9));
        let missing = store.update(UpdateRule::Sgd, &[(7, "nope".to_string())], &grad, &lr, &step, false);
        assert!(missing.is_err_and(|e| e.to_string().contains("'nope' is not initialized")));
        let twice = [(0usize, "w".to_string()), (0usize, "w".to_string())];
        let adam = UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
        assert!(store
            .update(adam, &[twice[0].clone(), twice[0].clone(), twice[1].clone()], &grad, &lr, &step, false)
            .is_err());
        Ok(())
    }

    /// A gradient of the wrong shape is an error that leaves the variable
    /// as it was (readable, not stuck mid-update); a variable without
    /// elements updates to nothing.
    #[test]
    fn bad_or_empty_updates_leave_the_variable_readable() -> Result<()> {
        let store = VariableStore::default();
        store.set(0, value(&[1.0, 2.0, 3.0]));
        let (lr, step) = (scalar(0.1), scalar(1.0));
        let bad = store.update(UpdateRule::Sgd, &[(0, "w".to_string())], &value(&[1.0, 2.0]), &lr, &step, false);
        assert!(bad.is_err_and(|e| e.to_string().contains("the variable's shape")));
        assert_eq!(store.get(0).expect("w").contiguous_slice::<f32>(), Some(&[1.0f32, 2.0, 3.0][..]));
        store.set(1, value(&[]));
        let out = store.update(UpdateRule::Sgd, &[(1, "e".to_string())], &value(&[]), &lr, &step, false)?;
        assert_eq!(out[0].numel(), 0);
        assert_eq!(store.get(1).expect("e").numel(), 0);
        Ok(())
    }

    /// Reads and updates of a variable from many threads at once: each read
    /// sees a whole value (every element from the same update), no update is
    /// lost (held buffers take the copying path, which retries), and nothing
    /// waits forever.
    #[test]
    fn reads_during_in_place_updates_see_whole_values() -> Result<()> {
        let n = 200_000;
        let store = VariableStore::default();
        store.set(0, value(&vec![0.0f32; n]));
        let vars = [(0usize, "w".to_string())];
        let (lr, step, grad) = (scalar(1.0), scalar(1.0), value(&vec![-1.0f32; n]));
        let updates = 50;
        let reads: Vec<f32> = (0..updates * 4)
            .into_par_iter()
            .map(|i| {
                if i % 4 == 0 {
                    store.update(UpdateRule::Sgd, &vars, &grad, &lr, &step, false).map(|_| -1.0)
                } else {
                    let v = store.get(0).expect("w");
                    let s = v.contiguous_slice::<f32>().expect("w");
                    assert!(s.iter().all(|&x| x == s[0]), "a read saw a half-updated value");
                    Ok(s[0])
                }
            })
            .collect::<Result<_>>()?;
        assert!(reads.iter().all(|&r| r == -1.0 || (0.0..=updates as f32).contains(&r)));
        let last = store.get(0).expect("w");
        assert!(last.contiguous_slice::<f32>().expect("w").iter().all(|&x| x == updates as f32));
        Ok(())
    }
}
