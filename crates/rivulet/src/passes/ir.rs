//! The graph IR that plan compilation optimizes: the part of a graph one
//! request needs, as an editable list of nodes in topological order.
//!
//! Fed tensors become `Placeholder` nodes, so a pass never looks past a feed.
//! Passes rewrite nodes in place (a node's inputs always come earlier in
//! the list) and mark the ones they make unnecessary dead.

use crate::error::{Error, OpContext, Result};
use crate::graph::{Edge, Function, GraphState, NodeId};
use crate::op::{Meta, Metas, Op};
use rustc_hash::FxHashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Output `index` of IR node `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrEdge {
    pub node: usize,
    pub index: usize,
}

/// A node of the IR.
#[derive(Clone, Debug)]
pub struct IrNode {
    pub op: Op,
    pub inputs: Vec<IrEdge>,
    /// Nodes that must run first.
    pub control: Vec<usize>,
    pub name: String,
    pub location: String,
    pub outputs: Metas,
    /// The graph node this came from (random-number streams are per node).
    pub origin: Option<NodeId>,
    /// For variable reads and assignments: the variable's graph node and
    /// name; for in-place optimizer updates, the variable and its slots.
    pub variables: Vec<(NodeId, String)>,
    /// For control flow: the branches (`If`: then, else; `Case`: in
    /// order) or the condition and body (`While`).
    pub functions: Vec<Arc<Function>>,
    /// Removed by a pass (or never needed).
    pub dead: bool,
    /// The device asked for (`None`: automatic); placement fills it in.
    pub device: Option<crate::tensor::Device>,
}

impl IrNode {
    pub(crate) fn context(&self) -> OpContext {
        OpContext {
            op: self.op.type_name().to_string(),
            node: Some(self.name.clone()),
            inputs: Vec::new(),
            location: self.location.clone(),
        }
    }
}

/// Pending "every reader of `old` reads `new` instead" rewrites.
///
/// A pass records them while it walks the nodes in order and resolves each
/// node's inputs through them when it reaches it (inputs precede their
/// readers, so they are final by then), then applies the rest with
/// [`IrGraph::substitute`]: linear in the graph, where rewriting every
/// reader at each replacement was quadratic.
#[derive(Default, Debug)]
pub struct Substitution(FxHashMap<IrEdge, IrEdge>);

impl Substitution {
    /// Readers of `old` will read `new`.
    pub fn insert(&mut self, old: IrEdge, new: IrEdge) {
        if old != new {
            self.0.insert(old, new);
        }
    }

    /// The edge that finally replaces `e` (itself when none does).
    pub fn resolve(&self, mut e: IrEdge) -> IrEdge {
        // Chains are short and never cycle: a replacement is never replaced by what it replaced.
        while let Some(&next) = self.0.get(&e) {
            e = next;
        }
        e
    }

    /// Resolve every edge of `edges` in place.
    pub fn apply(&self, edges: &mut [IrEdge]) {
        if self.0.is_empty() {
            return;
        }
        for e in edges {
            *e = self.resolve(*e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One request's graph, ready for optimization and lowering.
#[derive(Clone, Debug)]
pub struct IrGraph {
    pub nodes: Vec<IrNode>,
    /// What the request fetches.
    pub fetches: Vec<IrEdge>,
    /// Per feed of the request: its placeholder node and expected type.
    pub feeds: Vec<(usize, Meta, String)>,
    /// Nodes run for their effect.
    pub targets: Vec<usize>,
    /// Where each variable the request reads or writes lives (its node's
    /// scope, else automatic placement of its value), whether or not its
    /// `Variable` node is part of the request.
    pub variable_devices: FxHashMap<NodeId, crate::tensor::Device>,
}

impl IrGraph {
    /// The part of `g` that `fetches` and `targets` need, with `feeds` cut off
    /// as placeholders. Unfed placeholders on the way are an error.
    pub(crate) fn extract(g: &GraphState, fetches: &[Edge], feeds: &[Edge], targets: &[NodeId]) -> Result<IrGraph> {
        for node in &g.nodes {
            if let Op::Assign { .. } | Op::ReadVariable = node.op {
                let target = &g.nodes[node.inputs[0].node];
                if !matches!(target.op, Op::Variable { .. }) {
                    return Err(Error::invalid(format!(
                        "'{}' assigns to '{}', which is not a variable",
                        node.name, target.name
                    ))
                    .with_context(|| node.context()));
                }
            }
        }
        let fed: FxHashMap<Edge, usize> = feeds.iter().enumerate().map(|(i, e)| (*e, i)).collect();
        // A node all of whose outputs are fed never runs: a control dependency on it is satisfied.
        let fully_fed = |id: NodeId| {
            let outs = g.nodes[id].outputs.len();
            outs > 0 && (0..outs).all(|index| fed.contains_key(&Edge { node: id, index }))
        };
        let data_inputs = |id: NodeId| -> &[Edge] {
            let n = &g.nodes[id];
            match n.op {
                Op::Assign { .. } | Op::ReadVariable => &n.inputs[1..],
                _ => &n.inputs,
            }
        };
        let mut needed = vec![false; g.nodes.len()];
        let mut stack: Vec<NodeId> = fetches.iter().filter(|e| !fed.contains_key(e)).map(|e| e.node).collect();
        stack.extend_from_slice(targets);
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut needed[id], true) {
                continue;
            }
            for e in data_inputs(id) {
                if !fed.contains_key(e) && !needed[e.node] {
                    stack.push(e.node);
                }
            }
            for &c in &g.nodes[id].control_inputs {
                if !needed[c] && !fully_fed(c) {
                    stack.push(c);
                }
            }
        }
        for (id, node) in g.nodes.iter().enumerate() {
            if let (true, Op::Placeholder { dtype, shape }) = (needed[id], &node.op) {
                return Err(Error::precondition(format!(
                    "placeholder '{}' ({dtype}{shape}) must be fed: the fetches depend on it",
                    node.name
                ))
                .with_context(|| node.context()));
            }
        }
        let mut ir = IrGraph {
            nodes: Vec::new(),
            fetches: Vec::new(),
            feeds: Vec::new(),
            targets: Vec::new(),
            variable_devices: FxHashMap::default(),
        };
        // Feeds first: each fed edge is a placeholder of its own.
        let mut edge_map: FxHashMap<Edge, IrEdge> = FxHashMap::default();
        for e in feeds {
            if edge_map.contains_key(e) {
                let ir_node = edge_map[e].node;
                let node = &g.nodes[e.node];
                ir.feeds.push((ir_node, node.outputs[e.index].clone(), format!("{}:{}", node.name, e.index)));
                continue;
            }
            let node = &g.nodes[e.node];
            let meta = node.outputs[e.index].clone();
            let name = format!("{}:{}", node.name, e.index);
            let id = ir.nodes.len();
            ir.nodes.push(IrNode {
                op: Op::Placeholder { dtype: meta.dtype, shape: meta.shape.clone() },
                inputs: Vec::new(),
                control: Vec::new(),
                name: name.clone(),
                location: node.location.clone(),
                outputs: smallvec::smallvec![meta.clone()],
                origin: None,
                variables: Vec::new(),
                functions: Vec::new(),
                dead: false,
                device: None,
            });
            edge_map.insert(*e, IrEdge { node: id, index: 0 });
            ir.feeds.push((id, meta, name));
        }
        let mut node_map: FxHashMap<NodeId, usize> = FxHashMap::default();
        for (id, node) in g.nodes.iter().enumerate() {
            if !needed[id] {
                continue;
            }
            let map_edge = |e: &Edge, edge_map: &FxHashMap<Edge, IrEdge>, node_map: &FxHashMap<NodeId, usize>| {
                edge_map.get(e).copied().or_else(|| node_map.get(&e.node).map(|&n| IrEdge { node: n, index: e.index }))
            };
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for e in data_inputs(id) {
                match map_edge(e, &edge_map, &node_map) {
                    Some(ie) => inputs.push(ie),
                    None => {
                        return Err(Error::graph(format!(
                            "internal: input of '{}' is missing from the plan",
                            node.name
                        )))
                    }
                }
            }
            let control = node.control_inputs.iter().filter_map(|c| node_map.get(c).copied()).collect();
            let variables = match &node.op {
                Op::Variable { .. } => vec![(g.resolve_variable(id), node.name.clone())],
                Op::Assign { .. } | Op::ReadVariable => {
                    let var = node.inputs[0].node;
                    vec![(g.resolve_variable(var), g.nodes[var].name.clone())]
                }
                _ => Vec::new(),
            };
            for (var, _) in &variables {
                if let Some(v) = g.nodes.get(*var) {
                    let device = match v.device {
                        Some(d) => Some(d),
                        None => v.outputs.first().map(crate::backend::automatic_variable_device),
                    };
                    if let Some(d) = device {
                        ir.variable_devices.entry(*var).or_insert(d);
                    }
                }
            }
            let functions = match &node.op {
                Op::If { then_branch, else_branch, .. } => vec![g.function(*then_branch)?, g.function(*else_branch)?],
                Op::Case { branches, .. } => branches.iter().map(|&b| g.function(b)).collect::<Result<_>>()?,
                Op::While { spec } => vec![g.function(spec.cond)?, g.function(spec.body)?],
                _ => Vec::new(),
            };
            // Control flow touches the variables its functions use.
            let mut variables = variables;
            for f in &functions {
                let fg = f.graph.read();
                for (_, stand_in) in &f.variable_inputs {
                    let root = fg.resolve_variable(*stand_in);
                    if !variables.iter().any(|(v, _)| *v == root) {
                        variables.push((root, fg.nodes[*stand_in].name.clone()));
                    }
                }
            }
            let ir_id = ir.nodes.len();
            ir.nodes.push(IrNode {
                op: node.op.clone(),
                inputs,
                control,
                name: node.name.clone(),
                location: node.location.clone(),
                outputs: node.outputs.clone(),
                origin: Some(id),
                variables,
                functions,
                dead: false,
                device: node.device,
            });
            node_map.insert(id, ir_id);
        }
        for e in fetches {
            match edge_map
                .get(e)
                .copied()
                .or_else(|| node_map.get(&e.node).map(|&n| IrEdge { node: n, index: e.index }))
            {
                Some(ie) => ir.fetches.push(ie),
                None => return Err(Error::graph("internal: a fetch is missing from the plan")),
            }
        }
        ir.targets = targets.iter().filter_map(|t| node_map.get(t).copied()).collect();
        Ok(ir)
    }

    /// Number of live nodes.
    pub fn live_count(&self) -> usize {
        self.nodes.iter().filter(|n| !n.dead).count()
    }

    /// Consumers of each output, over live nodes (fetches count as consumers).
    pub fn uses(&self) -> FxHashMap<IrEdge, usize> {
        let mut uses: FxHashMap<IrEdge, usize> = FxHashMap::default();
        for n in self.nodes.iter().filter(|n| !n.dead) {
            for e in &n.inputs {
                *uses.entry(*e).or_default() += 1;
            }
        }
        for e in &self.fetches {
            *uses.entry(*e).or_default() += 1;
        }
        uses
    }

    /// Make every reader of an edge that `subst` replaces read its
    /// replacement: one sweep over the nodes and fetches, however many
    /// replacements a pass made.
    pub fn substitute(&mut self, subst: &Substitution) {
        if subst.is_empty() {
            return;
        }
        for n in self.nodes.iter_mut() {
            subst.apply(&mut n.inputs);
        }
        subst.apply(&mut self.fetches);
    }

    /// Mark everything the fetches and targets no longer need as dead.
    pub fn prune(&mut self) {
        let mut live = vec![false; self.nodes.len()];
        let mut stack: Vec<usize> = self.fetches.iter().map(|e| e.node).chain(self.targets.iter().copied()).collect();
        // Feeds stay: the request supplies them.
        stack.extend(self.feeds.iter().map(|f| f.0));
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut live[i], true) {
                continue;
            }
            stack.extend(self.nodes[i].inputs.iter().map(|e| e.node));
            stack.extend(self.nodes[i].control.iter().copied());
        }
        for (n, l) in self.nodes.iter_mut().zip(live) {
            if !l {
                n.dead = true;
            }
        }
    }

    /// A readable listing: one live node per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| !n.dead) {
            let inputs: Vec<String> = n.inputs.iter().map(|e| format!("%{}:{}", e.node, e.index)).collect();
            let outs: Vec<String> = n.outputs.iter().map(|m| m.to_string()).collect();
            let on = match n.device {
                Some(d) if d != crate::tensor::Device::CPU => format!(" @ {d}"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "%{i} = {}({}) -> {}  // {}{on}",
                n.op.type_name(),
                inputs.join(", "),
                outs.join(", "),
                n.name
            );
            if let Op::FusedElementwise { program } = &n.op {
                for line in program.describe().lines() {
                    let _ = writeln!(s, "      {line}");
                }
            }
        }
        let fetches: Vec<String> = self.fetches.iter().map(|e| format!("%{}:{}", e.node, e.index)).collect();
        let _ = writeln!(s, "fetch {}", fetches.join(", "));
        s
    }

    /// The live nodes in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph plan {\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n");
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| !n.dead) {
            let fused = match &n.op {
                Op::FusedElementwise { .. } | Op::FusedMatMul { .. } => true,
                Op::Window { f } => matches!(**f, crate::op::window::WindowOp::FusedConv { .. }),
                _ => false,
            };
            let style = if fused { ", style=filled, fillcolor=\"#fde68a\"" } else { "" };
            let label = n.name.replace('"', "\\\"");
            let on = match n.device {
                Some(d) if d != crate::tensor::Device::CPU => format!("\\n{}", d.short_name()),
                _ => String::new(),
            };
            let _ = writeln!(s, "  n{i} [label=\"{label}\\n{}{on}\"{style}];", n.op.type_name());
            for e in &n.inputs {
                let _ = writeln!(s, "  n{} -> n{i};", e.node);
            }
            for c in &n.control {
                let _ = writeln!(s, "  n{c} -> n{i} [style=dashed];");
            }
        }
        s.push_str("}\n");
        s
    }
}

impl IrGraph {
    /// Append a node (a pass that appends calls [`IrGraph::sort_topologically`]
    /// before anyone relies on the order again); returns its index.
    pub(crate) fn push(&mut self, node: IrNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Reorder the nodes so that each comes after its inputs and control
    /// dependencies, keeping the present order wherever it already holds,
    /// and renumber every reference to them.
    pub(crate) fn sort_topologically(&mut self) {
        let n = self.nodes.len();
        let mut order = Vec::with_capacity(n);
        // 0: unvisited, 1: on the stack, 2: placed.
        let mut state = vec![0u8; n];
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            // Iterative depth-first search: graphs may be deep.
            let mut stack = vec![(root, 0usize)];
            state[root] = 1;
            while let Some(&mut (i, ref mut next)) = stack.last_mut() {
                let node = &self.nodes[i];
                let deps = node.inputs.len() + node.control.len();
                if *next < deps {
                    let d = if *next < node.inputs.len() {
                        node.inputs[*next].node
                    } else {
                        node.control[*next - node.inputs.len()]
                    };
                    *next += 1;
                    if state[d] == 0 {
                        state[d] = 1;
                        stack.push((d, 0));
                    }
                } else {
                    state[i] = 2;
                    order.push(i);
                    stack.pop();
                }
            }
        }
        let mut new_index = vec![0; n];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let mut slots: Vec<Option<IrNode>> = std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
        self.nodes = order.iter().filter_map(|&old| slots[old].take()).collect();
        for node in &mut self.nodes {
            for e in &mut node.inputs {
                e.node = new_index[e.node];
            }
            for c in &mut node.control {
                *c = new_index[*c];
            }
        }
        for e in &mut self.fetches {
            e.node = new_index[e.node];
        }
        for f in &mut self.feeds {
            f.0 = new_index[f.0];
        }
        for t in &mut self.targets {
            *t = new_index[*t];
        }
    }
}
