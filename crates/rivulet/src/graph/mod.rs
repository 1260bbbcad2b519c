//! The dataflow graph: an append-only arena of nodes whose edges carry
//! tensors. Ops applied to symbolic tensors add nodes here; a
//! [`Session`](crate::Session) runs them.
//!
//! Names are unique and scoped (`layer1/matmul`, `add_1`); every node keeps
//! the source location of the call that created it, its inferred output
//! dtypes and shapes, and its control dependencies. Because nodes are only
//! appended and an input always precedes its consumer, node ids are a
//! topological order.

mod convert;
mod display;
mod dot;
mod library;
mod serialize;
mod tensor;
mod transform;

pub use library::Function;
pub(crate) use tensor::Repr;
pub use tensor::Tensor;

use crate::error::{location_string, Error, OpContext, Result};
use crate::op::{describe, ConstValue, Meta, Metas, Op};
use crate::tensor::Device;
use parking_lot::{RwLock, RwLockReadGuard};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Index of a node in its graph.
pub type NodeId = usize;

/// Output `index` of node `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Edge {
    pub node: NodeId,
    pub index: usize,
}

/// One operation in a graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// The operation and its attributes.
    pub op: Op,
    /// Data inputs.
    pub inputs: Vec<Edge>,
    /// Nodes that must run before this one.
    pub control_inputs: Vec<NodeId>,
    /// Unique scoped name.
    pub name: String,
    /// `file:line:column` of the call that created the node.
    pub location: String,
    /// Inferred dtype and (possibly partial) shape of each output.
    pub outputs: Metas,
    /// The device asked for by the scope the node was made in (`None`:
    /// placed automatically when a session compiles it).
    pub device: Option<Device>,
}

impl Node {
    pub(crate) fn context(&self) -> OpContext {
        OpContext {
            op: self.op.type_name().to_string(),
            node: Some(self.name.clone()),
            inputs: Vec::new(),
            location: self.location.clone(),
        }
    }
}

/// A variable of the graph: its node, its initializer, whether it trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VariableRecord {
    pub node: NodeId,
    pub initializer: NodeId,
    pub trainable: bool,
}

#[derive(Default)]
pub(crate) struct GraphState {
    pub nodes: Vec<Node>,
    pub variables: Vec<VariableRecord>,
    names: FxHashMap<String, NodeId>,
    next_suffix: FxHashMap<String, usize>,
    scopes: Vec<String>,
    control: Vec<Vec<NodeId>>,
    /// The function library (control-flow branches and bodies).
    pub functions: Vec<Arc<Function>>,
    /// Stand-in variable nodes of a function graph: the outermost graph's
    /// variable node each one stands for.
    pub aliases: FxHashMap<NodeId, NodeId>,
}

impl GraphState {
    /// A unique name for `stem` under the current scope.
    fn unique_name(&mut self, stem: &str) -> String {
        let base = match self.scopes.last() {
            Some(scope) => format!("{scope}/{stem}"),
            None => stem.to_string(),
        };
        if !self.names.contains_key(&base) {
            return base;
        }
        let mut k = *self.next_suffix.get(&base).unwrap_or(&1);
        loop {
            let candidate = format!("{base}_{k}");
            k += 1;
            if !self.names.contains_key(&candidate) {
                self.next_suffix.insert(base, k);
                return candidate;
            }
        }
    }

    fn push(&mut self, node: Node) -> NodeId {
        let id = self.nodes.len();
        self.names.insert(node.name.clone(), id);
        self.nodes.push(node);
        id
    }
}

struct GraphInner {
    id: u64,
    state: RwLock<GraphState>,
}

/// A dataflow graph. Cloning gives another handle to the same graph.
#[derive(Clone)]
pub struct Graph {
    inner: Arc<GraphInner>,
}

impl Default for Graph {
    fn default() -> Graph {
        Graph::new()
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({} nodes)", self.num_nodes())
    }
}

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// Pops a name scope or control-dependency scope when dropped.
pub struct ScopeGuard {
    graph: Graph,
    kind: ScopeKind,
}

enum ScopeKind {
    Name,
    Control,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let mut s = self.graph.inner.state.write();
        match self.kind {
            ScopeKind::Name => {
                s.scopes.pop();
            }
            ScopeKind::Control => {
                s.control.pop();
            }
        }
    }
}

/// A handle to one node of a graph: a target to run, a control dependency.
#[derive(Clone)]
pub struct Operation {
    pub(crate) graph: Graph,
    pub(crate) id: NodeId,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Operation({} {})", self.name(), self.op_type())
    }
}

impl Operation {
    /// The node's unique name.
    pub fn name(&self) -> String {
        self.graph.node_name(self.id)
    }
    /// The op type (`MatMul`, ...).
    pub fn op_type(&self) -> &'static str {
        self.graph.inner.state.read().nodes[self.id].op.type_name()
    }
    /// The node id within its graph.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The graph the node belongs to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// Number of outputs.
    pub fn num_outputs(&self) -> usize {
        self.graph.inner.state.read().nodes[self.id].outputs.len()
    }
    /// Output `index` as a symbolic tensor.
    pub fn output(&self, index: usize) -> Result<Tensor> {
        self.graph.output(Edge { node: self.id, index })
    }
    /// Where the node was created (`file:line:column`).
    pub fn location(&self) -> String {
        self.graph.inner.state.read().nodes[self.id].location.clone()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph {
            inner: Arc::new(GraphInner {
                id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
                state: RwLock::new(GraphState::default()),
            }),
        }
    }

    /// True when both handles refer to the same graph.
    pub fn same_as(&self, other: &Graph) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A number unique to this graph within the process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, GraphState> {
        self.inner.state.read()
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.inner.state.read().nodes.len()
    }

    /// A copy of node `id`.
    pub fn node(&self, id: NodeId) -> Option<Node> {
        self.inner.state.read().nodes.get(id).cloned()
    }

    /// Copies of all nodes, in creation (topological) order.
    pub fn nodes(&self) -> Vec<Node> {
        self.inner.state.read().nodes.clone()
    }

    pub(crate) fn node_name(&self, id: NodeId) -> String {
        self.inner.state.read().nodes.get(id).map(|n| n.name.clone()).unwrap_or_default()
    }

    /// The operation named `name`.
    pub fn operation(&self, name: &str) -> Result<Operation> {
        match self.inner.state.read().names.get(name) {
            Some(&id) => Ok(Operation { graph: self.clone(), id }),
            None => Err(Error::not_found(format!("no node named '{name}' in the graph"))),
        }
    }

    /// The tensor named `node:index` (or `node`, meaning output 0).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let (node, index) = match name.rsplit_once(':') {
            Some((n, i)) => match i.parse::<usize>() {
                Ok(i) => (n, i),
                Err(_) => (name, 0),
            },
            None => (name, 0),
        };
        let op = self.operation(node)?;
        op.output(index)
    }

    /// The symbolic tensor of edge `e`.
    pub(crate) fn tensor_at(&self, e: Edge) -> Result<Tensor> {
        self.output(e)
    }

    fn output(&self, e: Edge) -> Result<Tensor> {
        let s = self.inner.state.read();
        let node = s.nodes.get(e.node).ok_or_else(|| Error::not_found(format!("no node {}", e.node)))?;
        let meta = node.outputs.get(e.index).ok_or_else(|| {
            Error::invalid(format!("node '{}' has {} outputs, not {}", node.name, node.outputs.len(), e.index + 1))
        })?;
        Ok(Tensor::symbolic(self.clone(), e.node, e.index, meta.dtype, meta.shape.clone()))
    }

    /// Give node `op` the name `name` (which must be free).
    pub fn rename(&self, op: &Operation, name: &str) -> Result<()> {
        if !op.graph.same_as(self) {
            return Err(Error::graph("the operation belongs to another graph"));
        }
        let mut s = self.inner.state.write();
        let full = match s.scopes.last() {
            Some(scope) if !name.contains('/') => format!("{scope}/{name}"),
            _ => name.to_string(),
        };
        if full.is_empty() || full.contains(':') {
            return Err(Error::invalid(format!("'{full}' is not a valid node name (empty or contains ':')")));
        }
        if let Some(&other) = s.names.get(&full) {
            if other == op.id {
                return Ok(());
            }
            return Err(Error::invalid(format!("the name '{full}' is already used by another node")));
        }
        let old = std::mem::replace(&mut s.nodes[op.id].name, full.clone());
        s.names.remove(&old);
        s.names.insert(full, op.id);
        Ok(())
    }

    /// Nodes created while the guard lives get names under `name/`.
    pub fn name_scope(&self, name: &str) -> ScopeGuard {
        let mut s = self.inner.state.write();
        let full = match s.scopes.last() {
            Some(scope) => format!("{scope}/{name}"),
            None => name.to_string(),
        };
        s.scopes.push(full);
        ScopeGuard { graph: self.clone(), kind: ScopeKind::Name }
    }

    /// Nodes created while the guard lives run after `deps`.
    pub fn control_dependencies(&self, deps: &[&Operation]) -> Result<ScopeGuard> {
        if deps.iter().any(|d| !d.graph.same_as(self)) {
            return Err(Error::graph("a control dependency belongs to another graph"));
        }
        let mut s = self.inner.state.write();
        s.control.push(deps.iter().map(|d| d.id).collect());
        Ok(ScopeGuard { graph: self.clone(), kind: ScopeKind::Control })
    }

    /// Add a node for `op` on `inputs` (values become `Const` nodes).
    pub(crate) fn add_node(
        &self,
        op: Op,
        inputs: &[&Tensor],
        device: Option<Device>,
        location: &'static Location<'static>,
    ) -> Result<SmallVec<[Tensor; 1]>> {
        Ok(self.add_node_named(op, inputs, None, device, location)?.1)
    }

    /// [`Graph::add_node`] with an explicit name stem; returns the node id too.
    pub(crate) fn add_node_named(
        &self,
        op: Op,
        inputs: &[&Tensor],
        stem: Option<&str>,
        device: Option<Device>,
        location: &'static Location<'static>,
    ) -> Result<(NodeId, SmallVec<[Tensor; 1]>)> {
        if let Some(n) = stem {
            if n.contains(':') {
                return Err(Error::invalid(format!("'{n}' is not a valid node name (contains ':')")));
            }
        }
        let mut s = self.inner.state.write();
        let loc = location_string(location);
        // Type-check first, so that a failing op leaves the graph untouched.
        let mut metas: SmallVec<[Meta; 4]> = SmallVec::new();
        for t in inputs {
            match &t.repr {
                Repr::Symbolic(sym) => {
                    if !sym.graph.same_as(self) {
                        return Err(Error::graph(format!(
                            "{} mixes tensors from two different graphs",
                            op.type_name()
                        )));
                    }
                    metas.push(Meta::new(sym.dtype, sym.shape.clone()));
                }
                Repr::Value(v) => metas.push(Meta::new(v.dtype, v.shape().clone())),
            }
        }
        let stem = stem.map(str::to_string).unwrap_or_else(|| op.default_name());
        let outputs = match op.infer(&metas) {
            Ok(o) => o,
            Err(e) => {
                let name = s.unique_name(&stem);
                return Err(e.with_context(|| OpContext {
                    op: op.type_name().to_string(),
                    node: Some(name),
                    inputs: describe(&metas),
                    location: loc.clone(),
                }));
            }
        };
        // Values among the inputs become constants.
        let mut edges = Vec::with_capacity(inputs.len());
        for (t, meta) in inputs.iter().zip(&metas) {
            match &t.repr {
                Repr::Symbolic(sym) => edges.push(Edge { node: sym.node, index: sym.index }),
                Repr::Value(v) => {
                    let name = s.unique_name("Const");
                    let id = s.push(Node {
                        op: Op::Const { value: ConstValue((**v).clone()) },
                        inputs: Vec::new(),
                        control_inputs: Vec::new(),
                        name,
                        location: loc.clone(),
                        outputs: smallvec::smallvec![meta.clone()],
                        device,
                    });
                    edges.push(Edge { node: id, index: 0 });
                }
            }
        }
        let mut control: Vec<NodeId> = s.control.iter().flatten().copied().collect();
        control.sort_unstable();
        control.dedup();
        let name = s.unique_name(&stem);
        let id = s.push(Node {
            op,
            inputs: edges,
            control_inputs: control,
            name,
            location: loc,
            outputs: outputs.clone(),
            device,
        });
        drop(s);
        let tensors = outputs
            .into_iter()
            .enumerate()
            .map(|(i, m)| Tensor::symbolic(self.clone(), id, i, m.dtype, m.shape))
            .collect();
        Ok((id, tensors))
    }

    pub(crate) fn register_variable(&self, node: NodeId, initializer: NodeId, trainable: bool) {
        self.inner.state.write().variables.push(VariableRecord { node, initializer, trainable });
    }

    /// Add a node built elsewhere (deserialization), checked.
    pub(crate) fn push_checked(&self, node: Node) -> Result<NodeId> {
        let mut s = self.inner.state.write();
        if s.names.contains_key(&node.name) {
            return Err(Error::format(format!("duplicate node name '{}'", node.name)));
        }
        Ok(s.push(node))
    }
}

impl Tensor {
    /// Name the node producing this symbolic tensor `name` (no effect on values).
    pub fn named(self, name: &str) -> Result<Tensor> {
        if let Some(op) = self.op() {
            op.graph.rename(&op, name)?;
        }
        Ok(self)
    }
}
