//! Reading and assigning variables (see [`Variable`]): eagerly on the
//! variable's cell, in a graph as `Assign` nodes, and inside a trace on the
//! captured stand-in. Tapes watch trainable variables as they are read.

use super::Op;
use crate::context::{self, Capture, TraceState};
use crate::error::{bail, Error, Result};
use crate::graph::{Graph, Tensor};
use crate::op::variables::infer_assign;
pub use crate::op::variables::AssignOp;
use crate::op::Meta;
pub use crate::runtime::Variable;
use crate::runtime::{State, VariableCell};
use std::panic::Location;

impl Variable {
    /// An eager variable holding `initial`, on the device of the innermost
    /// device scope, else where automatic placement puts a host value (the
    /// default device; the CPU for an integer or bool scalar), else where
    /// `initial` is.
    pub fn new(name: &str, initial: &Tensor, trainable: bool) -> Result<Variable> {
        let held = initial.value().map_err(|_| {
            Error::graph(format!("eager variable '{name}' needs a value; use Variable::in_graph for graph variables"))
        })?;
        let meta = Meta::new(held.dtype, held.shape().clone());
        let target = context::current_device().or_else(|| {
            (held.device() == crate::tensor::Device::CPU).then(|| crate::backend::automatic_variable_device(&meta))
        });
        let value = match target {
            Some(device) if device != held.device() => Tensor::from_value(crate::backend::transfer(held, device)?),
            _ => initial.clone(),
        };
        let (dtype, shape) = (value.dtype(), value.shape().clone());
        Ok(Variable::from_parts(name.to_string(), trainable, dtype, shape, State::Eager(VariableCell::new(value))))
    }

    /// A variable in graph `g`, initialised by `initial` (a value or any
    /// tensor of `g`, e.g. a random op) when its initializer runs.
    #[track_caller]
    pub fn in_graph(g: &Graph, name: &str, initial: &Tensor, trainable: bool) -> Result<Variable> {
        let location = Location::caller();
        if !initial.shape().is_fully_known() {
            bail!(shape, "variable '{name}' needs a fully known shape, got {}", initial.shape());
        }
        let op = Op::Variable { dtype: initial.dtype(), shape: initial.shape().clone() };
        let (node, mut outs) = g.add_node_named(op, &[], Some(name), context::current_device(), location)?;
        let handle = outs.swap_remove(0);
        let leaf = g.node_name(node).rsplit('/').next().unwrap_or(name).to_string();
        let init_stem = format!("{leaf}/Assign");
        let (init, _) = g.add_node_named(
            Op::Assign { f: AssignOp::Assign },
            &[&handle, initial],
            Some(&init_stem),
            context::current_device(),
            location,
        )?;
        g.register_variable(node, init, trainable);
        Ok(Variable::from_parts(
            g.node_name(node),
            trainable,
            initial.dtype(),
            initial.shape().clone(),
            State::Graph { graph: g.clone(), node, handle, initializer: init },
        ))
    }

    /// The value: in eager mode the current value (watched by active
    /// gradient tapes when trainable); in a graph a tensor that reads the
    /// variable when a session runs it.
    pub fn read(&self) -> Tensor {
        if let Some(handle) = self.in_body() {
            // Inside a body: a read in program order, after the body's
            // earlier assignments.
            return super::apply1(Op::ReadVariable, &[&handle]).unwrap_or(handle);
        }
        if let Some(t) = self.traced_value() {
            if self.inner.trainable {
                context::watch_variable(self.id(), &t);
            }
            return t;
        }
        match &self.inner.state {
            State::Eager(cell) => {
                let t = cell.get();
                if self.inner.trainable {
                    context::watch_variable(self.id(), &t);
                }
                t
            }
            State::Graph { handle, .. } => handle.clone(),
        }
    }

    /// Inside a control-flow body being built: the body's stand-in read of
    /// this variable (of the graph variable standing for it, in a trace).
    fn in_body(&self) -> Option<Tensor> {
        let body = context::current_body()?;
        let graph_var = match &self.inner.state {
            State::Graph { .. } => self.clone(),
            State::Eager(_) => context::current_trace()?.capture(self).ok()?,
        };
        let State::Graph { graph, node, handle, .. } = &graph_var.inner.state else { return None };
        if graph.same_as(&body.graph) {
            return None;
        }
        body.variable(graph, *node, handle).ok()
    }

    /// Inside a trace, an eager variable reads and writes its stand-in in
    /// the traced graph.
    fn traced(&self) -> Option<Variable> {
        if !matches!(self.inner.state, State::Eager(_)) {
            return None;
        }
        let trace = context::current_trace()?;
        trace.capture(self).ok()
    }

    /// Inside a trace: the value a read sees at this point of the program.
    fn traced_value(&self) -> Option<Tensor> {
        if !matches!(self.inner.state, State::Eager(_)) {
            return None;
        }
        context::current_trace()?.read(self).ok()
    }

    /// The current value without watching it (eager), or the read handle (graph).
    pub fn current(&self) -> Tensor {
        if let Some(handle) = self.in_body() {
            return super::apply1(Op::ReadVariable, &[&handle]).unwrap_or(handle);
        }
        if let Some(t) = self.traced_value() {
            return t;
        }
        match &self.inner.state {
            State::Eager(cell) => cell.get(),
            State::Graph { handle, .. } => handle.clone(),
        }
    }

    /// Set the value. Eager: at once, returning the new value. Graph: adds
    /// an `Assign` node and returns its output (run it as a target or fetch it).
    #[track_caller]
    pub fn assign(&self, value: &Tensor) -> Result<Tensor> {
        self.update(AssignOp::Assign, value)
    }
    /// Add to the value (see [`Variable::assign`]).
    #[track_caller]
    pub fn assign_add(&self, value: &Tensor) -> Result<Tensor> {
        self.update(AssignOp::AssignAdd, value)
    }
    /// Subtract from the value (see [`Variable::assign`]).
    #[track_caller]
    pub fn assign_sub(&self, value: &Tensor) -> Result<Tensor> {
        self.update(AssignOp::AssignSub, value)
    }

    #[track_caller]
    fn update(&self, f: AssignOp, value: &Tensor) -> Result<Tensor> {
        let location = Location::caller();
        if let Some(stand_in) = self.in_body() {
            // A body's assignment: a node of the body, run for its effect.
            let body = context::current_body().ok_or_else(|| Error::graph("internal: no body"))?;
            let value = body.capture(value)?;
            let (node, mut out) = body.graph.add_node_named(
                Op::Assign { f },
                &[&stand_in, &value],
                None,
                context::current_device(),
                location,
            )?;
            body.effects.borrow_mut().push(node);
            return Ok(out.swap_remove(0));
        }
        if let Some(mirror) = self.traced() {
            // The stand-in's own AssignAdd/Sub: atomic, so an update of the
            // variable from another thread meanwhile is not lost. A run
            // orders it after the earlier reads and writes of the variable,
            // and later reads in the trace see its result.
            let out = mirror.update(f, value)?;
            if let Some(trace) = context::current_trace() {
                trace.assigned(self, &out);
            }
            return Ok(out);
        }
        match &self.inner.state {
            State::Graph { graph, handle, .. } => {
                let (_, mut out) = graph.add_node_named(
                    Op::Assign { f },
                    &[handle, value],
                    None,
                    context::current_device(),
                    location,
                )?;
                Ok(out.swap_remove(0))
            }
            State::Eager(cell) => {
                let meta = Meta::new(self.inner.dtype, self.inner.shape.clone());
                infer_assign(f, &meta, &Meta::new(value.dtype(), value.shape().clone()))
                    .map_err(|e| e.with_context(|| self.context(f, location)))?;
                // Detach from any tape: the variable's new value is a fresh source.
                let v = value.value()?;
                let checked = |new: Tensor| -> Result<Tensor> {
                    if new.shape() != &self.inner.shape {
                        bail!(
                            shape,
                            "assigning shape {} to variable '{}' of shape {}",
                            new.shape(),
                            self.inner.name,
                            self.inner.shape
                        );
                    }
                    Ok(new)
                };
                // Eager even under a default graph: the cell holds values.
                let combine = |current: &Tensor| {
                    context::eager_scope(|| {
                        context::untracked(|| match f {
                            AssignOp::AssignSub => super::sub(current, value),
                            _ => super::add(current, value),
                        })
                    })
                };
                match f {
                    AssignOp::Assign => {
                        // The variable stays on its device.
                        let device = cell.get().value()?.device();
                        let new = checked(Tensor::from_value(crate::backend::transfer(v, device)?))?;
                        cell.set(new.clone());
                        Ok(new)
                    }
                    AssignOp::AssignAdd | AssignOp::AssignSub => cell.modify(|current| checked(combine(current)?)),
                }
            }
        }
    }

    fn context(&self, f: AssignOp, location: &Location<'_>) -> crate::error::OpContext {
        crate::error::OpContext {
            op: f.type_name().to_string(),
            node: Some(self.inner.name.clone()),
            inputs: vec![format!("{}{}", self.inner.dtype, self.inner.shape)],
            location: crate::error::location_string(location),
        }
    }
}

/// What a variable sees of a trace in progress.
impl TraceState {
    /// The stand-in of eager variable `v` in the traced graph (created on first use).
    pub(crate) fn capture(&self, v: &Variable) -> Result<Variable> {
        if let Some(c) = self.captures.borrow().iter().find(|c| c.eager.id() == v.id()) {
            return Ok(c.mirror.clone());
        }
        // The stand-in's value is the eager variable's: its initializer
        // never runs (a Fill node: no data is kept for it).
        let zero = super::zeros(&self.graph, v.shape().clone(), v.dtype())?;
        let mirror = Variable::in_graph(&self.graph, &format!("captured/{}", v.name()), &zero, v.trainable())?;
        self.captures.borrow_mut().push(Capture { eager: v.clone(), mirror: mirror.clone() });
        Ok(mirror)
    }

    /// The traced code assigned `value` to a captured variable.
    pub(crate) fn assigned(&self, v: &Variable, value: &Tensor) {
        self.effects.borrow_mut().extend(value.op());
        self.latest.borrow_mut().insert(v.id(), value.clone());
    }

    /// A control-flow node that may assign captured variables was traced:
    /// later reads in the trace read the variables after it runs.
    pub(crate) fn after_control_flow(&self, node: &crate::graph::Operation) -> Result<()> {
        let _deps = self.graph.control_dependencies(&[node])?;
        for c in self.captures.borrow().iter() {
            let State::Graph { handle, .. } = &c.mirror.inner.state else { continue };
            let read = super::apply1_in(super::Ctx::Graph(&self.graph), Op::ReadVariable, &[handle])?;
            self.latest.borrow_mut().insert(c.eager.id(), read);
        }
        Ok(())
    }

    /// The value a read of `v` sees here: the last assignment traced so far,
    /// else the variable's value when the run reads it (before this call's
    /// own writes).
    pub(crate) fn read(&self, v: &Variable) -> Result<Tensor> {
        if let Some(t) = self.latest.borrow().get(&v.id()) {
            return Ok(t.clone());
        }
        Ok(self.capture(v)?.current())
    }
}
