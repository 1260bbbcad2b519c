//! Variables: the only mutable state. In eager mode a [`Variable`] holds its
//! value in a cell; in a graph it is a `VariableV2` node whose value lives in
//! each [`Session`]'s variable store. This is the handle and what a session
//! needs of it; reading and assigning (which build ops) are in `crate::ops`.

use super::VariableCell;
use crate::error::{bail, Error, Result};
use crate::graph::{Graph, NodeId, Operation, Tensor};
use crate::op::Op;
use crate::tensor::{DType, Shape};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_VARIABLE: AtomicU64 = AtomicU64::new(1);

/// Mutable state for training: weights, optimizer slots, counters.
///
/// Cloning gives another handle to the same variable.
#[derive(Clone)]
pub struct Variable {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) trainable: bool,
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    pub(crate) state: State,
}

pub(crate) enum State {
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
    /// A new handle with a fresh id.
    pub(crate) fn from_parts(name: String, trainable: bool, dtype: DType, shape: Shape, state: State) -> Variable {
        Variable {
            inner: Arc::new(Inner {
                id: NEXT_VARIABLE.fetch_add(1, Ordering::Relaxed),
                name,
                trainable,
                dtype,
                shape,
                state,
            }),
        }
    }

    /// The handle of an existing graph variable node (e.g. after loading a graph).
    pub(crate) fn from_graph_node(g: &Graph, node: NodeId, initializer: NodeId, trainable: bool) -> Result<Variable> {
        let n = g.node(node).ok_or_else(|| Error::not_found(format!("no node {node}")))?;
        let Op::Variable { dtype, shape } = n.op else {
            bail!(invalid, "node '{}' is not a variable", n.name);
        };
        let handle = Operation { graph: g.clone(), id: node }.output(0)?;
        Ok(Variable::from_parts(
            n.name,
            trainable,
            dtype,
            shape,
            State::Graph { graph: g.clone(), node, handle, initializer },
        ))
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
}

impl Graph {
    /// Every variable of the graph, in creation order.
    pub fn variables(&self) -> Vec<Variable> {
        let records = self.read().variables.clone();
        records
            .iter()
            .filter_map(|r| Variable::from_graph_node(self, r.node, r.initializer, r.trainable).ok())
            .collect()
    }

    /// The variables optimizers train (TensorFlow's `trainable_variables`).
    pub fn trainable_variables(&self) -> Vec<Variable> {
        self.variables().into_iter().filter(|v| v.trainable()).collect()
    }
}
