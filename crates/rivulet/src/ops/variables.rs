//! Variables: the only mutable state. In eager mode a [`Variable`] holds its
//! value; in a graph it is a `VariableV2` node whose value lives in each
//! [`Session`](crate::Session)'s variable store, set by an initializer and by
//! `Assign` nodes. The same `Variable` API serves both.

use super::{Meta, Op};
use crate::error::{bail, Error, Result};
use crate::graph::{Graph, NodeId, Operation};
use crate::runtime::VariableCell;
use crate::tensor::{DType, Shape, Tensor};
use serde::{Deserialize, Serialize};
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How an `Assign` node changes its variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignOp {
    /// `var = value`
    Assign,
    /// `var += value`
    AssignAdd,
    /// `var -= value`
    AssignSub,
}

impl AssignOp {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            AssignOp::Assign => "Assign",
            AssignOp::AssignAdd => "AssignAdd",
            AssignOp::AssignSub => "AssignSub",
        }
    }
}

pub(crate) fn infer_assign(f: AssignOp, var: &Meta, value: &Meta) -> Result<Meta> {
    if var.dtype != value.dtype {
        bail!(dtype, "{} of a {} variable with a {} value", f.type_name(), var.dtype, value.dtype);
    }
    if !var.shape.is_compatible_with(&value.shape) {
        bail!(shape, "{} of a variable of shape {} with a value of shape {}", f.type_name(), var.shape, value.shape);
    }
    Ok(var.clone())
}

static NEXT_VARIABLE: AtomicU64 = AtomicU64::new(1);

/// Mutable state for training: weights, optimizer slots, counters.
///
/// Cloning gives another handle to the same variable.
#[derive(Clone)]
pub struct Variable {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    name: String,
    trainable: bool,
    dtype: DType,
    shape: Shape,
    state: State,
}

enum State {
    /// The value's cell (shared with the sessions of functions that capture it).
    Eager(Arc<VariableCell>),
    Graph {
        graph: Graph,
        node: NodeId,
        handle: Tensor,
        initializer: NodeId,
    },
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Variable('{}', {}{}, trainable={})",
            self.inner.name, self.inner.dtype, self.inner.shape, self.inner.trainable
        )
    }
}

impl Variable {
    /// An eager variable holding `initial`.
    pub fn new(name: &str, initial: &Tensor, trainable: bool) -> Result<Variable> {
        let value = initial.value().map(|_| initial.clone()).map_err(|_| {
            Error::graph(format!("eager variable '{name}' needs a value; use Variable::in_graph for graph variables"))
        })?;
        Ok(Variable {
            inner: Arc::new(Inner {
                id: NEXT_VARIABLE.fetch_add(1, Ordering::Relaxed),
                name: name.to_string(),
                trainable,
                dtype: value.dtype(),
                shape: value.shape().clone(),
                state: State::Eager(VariableCell::new(value)),
            }),
        })
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
        let (node, mut outs) = g.add_node_named(op, &[], Some(name), location)?;
        let handle = outs.swap_remove(0);
        let leaf = g.node_name(node).rsplit('/').next().unwrap_or(name).to_string();
        let init_stem = format!("{leaf}/Assign");
        let (init, _) =
            g.add_node_named(Op::Assign { f: AssignOp::Assign }, &[&handle, initial], Some(&init_stem), location)?;
        g.register_variable(node, init, trainable);
        Ok(Variable {
            inner: Arc::new(Inner {
                id: NEXT_VARIABLE.fetch_add(1, Ordering::Relaxed),
                name: g.node_name(node),
                trainable,
                dtype: initial.dtype(),
                shape: initial.shape().clone(),
                state: State::Graph { graph: g.clone(), node, handle, initializer: init },
            }),
        })
    }

    /// The handle of an existing graph variable node (e.g. after loading a graph).
    pub(crate) fn from_graph_node(g: &Graph, node: NodeId, initializer: NodeId, trainable: bool) -> Result<Variable> {
        let n = g.node(node).ok_or_else(|| Error::not_found(format!("no node {node}")))?;
        let Op::Variable { dtype, shape } = n.op else {
            bail!(invalid, "node '{}' is not a variable", n.name);
        };
        let handle = Operation { graph: g.clone(), id: node }.output(0)?;
        Ok(Variable {
            inner: Arc::new(Inner {
                id: NEXT_VARIABLE.fetch_add(1, Ordering::Relaxed),
                name: n.name,
                trainable,
                dtype,
                shape,
                state: State::Graph { graph: g.clone(), node, handle, initializer },
            }),
        })
    }

    /// The variable's name (the node name in a graph).
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }
    /// Shape.
    pub fn shape(&self) -> &Shape {
        &self.inner.shape
    }
    /// Whether optimizers train it (and tapes watch it automatically).
    pub fn trainable(&self) -> bool {
        self.inner.trainable
    }
    /// A number unique to this variable in the process (the same for every
    /// handle to one graph variable).
    pub fn id(&self) -> u64 {
        match &self.inner.state {
            State::Graph { graph, node, .. } => (graph.id() << 32) | *node as u64,
            State::Eager(_) => self.inner.id | (1 << 63),
        }
    }
    /// True for a variable of a graph.
    pub fn is_graph(&self) -> bool {
        matches!(self.inner.state, State::Graph { .. })
    }
    /// The graph node of a graph variable.
    pub fn node(&self) -> Option<NodeId> {
        match &self.inner.state {
            State::Graph { node, .. } => Some(*node),
            State::Eager(_) => None,
        }
    }
    /// The graph of a graph variable.
    pub fn graph(&self) -> Option<&Graph> {
        match &self.inner.state {
            State::Graph { graph, .. } => Some(graph),
            State::Eager(_) => None,
        }
    }
    /// The cell holding an eager variable's value.
    pub(crate) fn cell(&self) -> Option<&Arc<VariableCell>> {
        match &self.inner.state {
            State::Eager(cell) => Some(cell),
            State::Graph { .. } => None,
        }
    }
    /// The op that sets the initial value (graph variables).
    pub fn initializer(&self) -> Option<Operation> {
        match &self.inner.state {
            State::Graph { graph, initializer, .. } => Some(Operation { graph: graph.clone(), id: *initializer }),
            State::Eager(_) => None,
        }
    }

    /// The value: in eager mode the current value (watched by active
    /// gradient tapes when trainable); in a graph a tensor that reads the
    /// variable when a session runs it.
    pub fn read(&self) -> Tensor {
        if let Some(t) = self.traced_value() {
            if self.inner.trainable {
                crate::autodiff::tape::watch_variable(self.id(), &t);
            }
            return t;
        }
        match &self.inner.state {
            State::Eager(cell) => {
                let t = cell.get();
                if self.inner.trainable {
                    crate::autodiff::tape::watch_variable(self.id(), &t);
                }
                t
            }
            State::Graph { handle, .. } => handle.clone(),
        }
    }

    /// Inside a trace, an eager variable reads and writes its stand-in in
    /// the traced graph.
    fn traced(&self) -> Option<Variable> {
        if !matches!(self.inner.state, State::Eager(_)) {
            return None;
        }
        let trace = crate::runtime::function::current_trace()?;
        trace.capture(self).ok()
    }

    /// Inside a trace: the value a read sees at this point of the program.
    fn traced_value(&self) -> Option<Tensor> {
        if !matches!(self.inner.state, State::Eager(_)) {
            return None;
        }
        crate::runtime::function::current_trace()?.read(self).ok()
    }

    /// The current value without watching it (eager), or the read handle (graph).
    pub fn current(&self) -> Tensor {
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
        if let Some(mirror) = self.traced() {
            // The stand-in's own AssignAdd/Sub: atomic, so an update of the
            // variable from another thread meanwhile is not lost. A run
            // orders it after the earlier reads and writes of the variable,
            // and later reads in the trace see its result.
            let out = mirror.update(f, value)?;
            if let Some(trace) = crate::runtime::function::current_trace() {
                trace.assigned(self, &out);
            }
            return Ok(out);
        }
        match &self.inner.state {
            State::Graph { graph, handle, .. } => {
                let (_, mut out) = graph.add_node_named(Op::Assign { f }, &[handle, value], None, location)?;
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
                    crate::graph::eager_scope(|| {
                        crate::autodiff::tape::untracked(|| match f {
                            AssignOp::AssignSub => super::sub(current, value),
                            _ => super::add(current, value),
                        })
                    })
                };
                match f {
                    AssignOp::Assign => {
                        let new = checked(Tensor::from_value(v.clone()))?;
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
