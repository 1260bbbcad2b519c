//! A graph's function library: the branches and bodies of its control-flow
//! nodes, each a graph of its own with placeholders for arguments (as
//! TensorFlow 2 keeps `If`/`While` bodies in a `FunctionDefLibrary`).
//!
//! A function's inputs are its arguments, then the tensors of enclosing
//! graphs that its code used (captures, passed in by the calling node).
//! Variables of enclosing graphs are read and assigned inside a function
//! through stand-in `Variable` nodes that alias the variable of the
//! outermost graph, where a session keeps its value.

use super::{Edge, Graph, Node, NodeId};
use crate::error::{Error, Result};
use crate::op::{FunctionId, Op};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// One function of a library.
#[derive(Debug)]
pub struct Function {
    /// A readable name (`while/body`, `cond/then`).
    pub name: String,
    /// The function's own graph.
    pub graph: Graph,
    /// The placeholder of each input, in order.
    pub inputs: Vec<Edge>,
    /// What it returns.
    pub outputs: Vec<Edge>,
    /// Nodes run for their effect (assignments), needed or not by the outputs.
    pub effects: Vec<NodeId>,
    /// Inputs that carry a variable's handle (for ordering and gradients)
    /// and the stand-in read of that variable inside the function.
    pub variable_inputs: Vec<(usize, NodeId)>,
}

impl Function {
    /// Whether running it may change variables.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }
}

impl Graph {
    /// Add `f` to the library; its index is what control-flow ops name.
    pub(crate) fn add_function(&self, f: Function) -> Result<FunctionId> {
        let mut s = self.inner.state.write();
        let id = FunctionId::try_from(s.functions.len())
            .map_err(|_| Error::invalid("the graph's function library is full"))?;
        s.functions.push(Arc::new(f));
        Ok(id)
    }

    /// Function `id` of the library.
    pub fn function(&self, id: FunctionId) -> Result<Arc<Function>> {
        self.inner.state.read().function(id)
    }

    /// Every function of the library, in index order.
    pub fn functions(&self) -> Vec<Arc<Function>> {
        self.inner.state.read().functions.clone()
    }

    /// Node `node` (a stand-in `Variable`) reads and writes variable `root`
    /// of the outermost graph.
    pub(crate) fn set_variable_alias(&self, node: NodeId, root: NodeId) {
        self.inner.state.write().aliases.insert(node, root);
    }

    /// The outermost graph's variable node that variable node `node` stands for.
    pub fn resolve_variable(&self, node: NodeId) -> NodeId {
        self.inner.state.read().resolve_variable(node)
    }

    /// Copy the nodes of `f` into this graph, its inputs replaced by
    /// `inputs` (edges of this graph): a call, inlined. Returns the edges of
    /// its outputs and, for each of its variable stand-ins, the copy's node.
    pub(crate) fn inline(&self, f: &Function, inputs: &[Edge]) -> Result<(Vec<Edge>, FxHashMap<NodeId, NodeId>)> {
        if inputs.len() != f.inputs.len() {
            return Err(Error::invalid(format!(
                "function '{}' takes {} inputs, got {}",
                f.name,
                f.inputs.len(),
                inputs.len()
            )));
        }
        if f.graph.same_as(self) {
            return Err(Error::graph("internal: a function cannot be inlined into its own graph"));
        }
        let src = f.graph.read();
        let mut edge_map: FxHashMap<Edge, Edge> = f.inputs.iter().copied().zip(inputs.iter().copied()).collect();
        let mut node_map: FxHashMap<NodeId, NodeId> = FxHashMap::default();
        let mut functions: FxHashMap<FunctionId, FunctionId> = FxHashMap::default();
        let mut s = self.inner.state.write();
        for (id, node) in src.nodes.iter().enumerate() {
            if matches!(node.op, Op::Placeholder { .. }) {
                continue;
            }
            let mut copy: Node = node.clone();
            copy.inputs =
                node.inputs
                    .iter()
                    .map(|e| {
                        edge_map.get(e).copied().ok_or_else(|| {
                            Error::graph(format!("internal: function '{}' reads an unmapped edge", f.name))
                        })
                    })
                    .collect::<Result<_>>()?;
            copy.control_inputs = node.control_inputs.iter().filter_map(|c| node_map.get(c).copied()).collect();
            copy.op = relink(&node.op, &src, &mut s, &mut functions)?;
            copy.name = s.unique_name(node.name.rsplit('/').next().unwrap_or(&node.name));
            let new = s.push(copy);
            if matches!(node.op, Op::Variable { .. }) {
                let root = src.resolve_variable(id);
                s.aliases.insert(new, root);
            }
            node_map.insert(id, new);
            for index in 0..node.outputs.len() {
                edge_map.insert(Edge { node: id, index }, Edge { node: new, index });
            }
        }
        let outputs = f
            .outputs
            .iter()
            .map(|e| edge_map.get(e).copied().ok_or_else(|| Error::graph("internal: unmapped function output")))
            .collect::<Result<_>>()?;
        let stand_ins = f.variable_inputs.iter().filter_map(|(_, n)| node_map.get(n).map(|m| (*n, *m))).collect();
        Ok((outputs, stand_ins))
    }
}

/// `op` with the functions it names added to `dst`'s library (once each).
fn relink(
    op: &Op,
    src: &super::GraphState,
    dst: &mut super::GraphState,
    done: &mut FxHashMap<FunctionId, FunctionId>,
) -> Result<Op> {
    op.map_functions(|id| {
        if let Some(&m) = done.get(&id) {
            return Ok(m);
        }
        let f = src.function(id)?;
        let new = FunctionId::try_from(dst.functions.len())
            .map_err(|_| Error::invalid("the graph's function library is full"))?;
        dst.functions.push(f);
        done.insert(id, new);
        Ok(new)
    })
}

impl super::GraphState {
    pub(crate) fn function(&self, id: FunctionId) -> Result<Arc<Function>> {
        self.functions
            .get(id as usize)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no function {id} in the graph's library")))
    }

    pub(crate) fn resolve_variable(&self, node: NodeId) -> NodeId {
        self.aliases.get(&node).copied().unwrap_or(node)
    }
}
