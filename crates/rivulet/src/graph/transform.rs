//! Whole-graph rewrites that make a new graph: pruning to what some outputs
//! need (exporting a serving signature), and freezing variables into
//! constants (loading one for inference).
//!
//! Both work on the serialized form and build the result through the same
//! checked loader as a graph read from a file, so node names, devices and
//! the function library carry over and the result is validated.

use super::serialize::{check_aliases, GraphDoc};
use super::{Edge, Graph, NodeId, Tensor};
use crate::error::{Error, Result};
use crate::op::{ConstValue, FunctionId, Op};
use crate::tensor::Value;
use rustc_hash::{FxHashMap, FxHashSet};

impl Graph {
    /// A new graph holding only what `outputs` need (their data and control
    /// inputs, recursively), with the same node names, and the functions
    /// the kept nodes call. Variables keep their nodes but not their
    /// initializers: the new graph lists no variables, and a session over it
    /// needs their values from elsewhere (a saved model's variables file).
    pub fn pruned(&self, outputs: &[&Tensor]) -> Result<Graph> {
        self.pruned_with_targets(outputs, &[])
    }

    /// [`Graph::pruned`], also keeping `targets` (nodes run for their effect) and what they need.
    pub fn pruned_with_targets(&self, outputs: &[&Tensor], targets: &[&super::Operation]) -> Result<Graph> {
        let mut roots = Vec::with_capacity(outputs.len() + targets.len());
        for op in targets {
            if !op.graph.same_as(self) {
                return Err(Error::graph(format!("pruned: operation '{}' is not of this graph", op.name())));
            }
            roots.push(op.id());
        }
        for t in outputs {
            match t.graph() {
                Some(g) if g.same_as(self) => roots.push(t.op().map(|o| o.id()).unwrap_or_default()),
                _ => {
                    return Err(Error::graph(format!(
                        "pruned: {} is not a tensor of this graph",
                        t.name().unwrap_or_else(|| "a value".into())
                    )))
                }
            }
        }
        let mut doc = self.to_doc();
        prune_doc(&mut doc, &roots)?;
        let g = Graph::from_doc(doc)?;
        check_aliases(&g, &g)?;
        Ok(g)
    }

    /// This graph with variables turned into constants of the given values
    /// (keyed by the outermost graph's variable node), at every depth of
    /// the function library: each variable node becomes a `Const`, each
    /// read of it an `Identity` of that constant. Variables that some node
    /// assigns (or updates) stay variables. Returns the new graph and the
    /// nodes of the variables left as they were.
    pub(crate) fn frozen(&self, values: &FxHashMap<NodeId, Value>) -> Result<(Graph, Vec<NodeId>)> {
        let mut doc = self.to_doc();
        let mut assigned = FxHashSet::default();
        assigned_roots(&doc, &mut assigned);
        let freeze: FxHashMap<NodeId, &Value> =
            values.iter().filter(|(n, _)| !assigned.contains(*n)).map(|(n, v)| (*n, v)).collect();
        freeze_doc(&mut doc, &freeze, true)?;
        let g = Graph::from_doc(doc)?;
        check_aliases(&g, &g)?;
        let mut kept: Vec<NodeId> = values.keys().filter(|n| assigned.contains(*n)).copied().collect();
        kept.sort_unstable();
        Ok((g, kept))
    }
}

/// The outermost variable node a variable node of `doc` stands for.
fn root_of(doc: &GraphDoc, aliases: &FxHashMap<usize, usize>, id: usize, outermost: bool) -> Option<usize> {
    match aliases.get(&id) {
        Some(&root) => Some(root),
        None if outermost && matches!(doc.nodes.get(id).map(|n| &n.op), Some(Op::Variable { .. })) => Some(id),
        None => None,
    }
}

/// Is this op a write to the variable of its first input?
fn writes_variable(op: &Op) -> bool {
    matches!(op, Op::Assign { .. } | Op::ResourceApplyUpdate { .. })
}

/// Every outermost variable that a node of `doc` (or of its library) writes.
fn assigned_roots(doc: &GraphDoc, out: &mut FxHashSet<usize>) {
    fn walk(doc: &GraphDoc, outermost: bool, out: &mut FxHashSet<usize>) {
        let aliases: FxHashMap<usize, usize> = doc.aliases.iter().copied().collect();
        for n in &doc.nodes {
            if writes_variable(&n.op) {
                // An optimizer update writes its slots too: every variable input counts.
                for e in &n.inputs {
                    if let Some(root) = root_of(doc, &aliases, e.node, outermost) {
                        out.insert(root);
                    }
                }
            }
        }
        for f in &doc.functions {
            walk(&f.graph, false, out);
        }
    }
    walk(doc, true, out)
}

/// Freeze the variables of `values` in `doc` and its library; returns the
/// nodes of `doc` that became constants.
fn freeze_doc(doc: &mut GraphDoc, values: &FxHashMap<NodeId, &Value>, outermost: bool) -> Result<FxHashSet<usize>> {
    let aliases: FxHashMap<usize, usize> = doc.aliases.iter().copied().collect();
    let mut frozen = FxHashSet::default();
    for id in 0..doc.nodes.len() {
        if !matches!(doc.nodes[id].op, Op::Variable { .. }) {
            continue;
        }
        if let Some(value) = root_of(doc, &aliases, id, outermost).and_then(|r| values.get(&r)) {
            doc.nodes[id].op = Op::Const { value: ConstValue((*value).clone()) };
            frozen.insert(id);
        }
    }
    for n in doc.nodes.iter_mut() {
        if matches!(n.op, Op::ReadVariable) && n.inputs.first().is_some_and(|e| frozen.contains(&e.node)) {
            n.op = Op::Identity;
            n.inputs.truncate(1);
        }
    }
    doc.aliases.retain(|(n, _)| !frozen.contains(n));
    for f in doc.functions.iter_mut() {
        let inner = freeze_doc(&mut f.graph, values, false)?;
        f.variable_inputs.retain(|(_, stand_in)| !inner.contains(stand_in));
    }
    Ok(frozen)
}

/// Keep the nodes `roots` need and the functions they call; renumber
/// nodes, functions and the variable aliases of the library.
fn prune_doc(doc: &mut GraphDoc, roots: &[NodeId]) -> Result<()> {
    let n = doc.nodes.len();
    // The outermost variables each function of the library (at any depth) stands in for.
    fn alias_roots(doc: &GraphDoc, out: &mut Vec<usize>) {
        out.extend(doc.aliases.iter().map(|(_, root)| *root));
        for f in &doc.functions {
            alias_roots(&f.graph, out);
        }
    }
    let function_roots: Vec<Vec<usize>> = doc
        .functions
        .iter()
        .map(|f| {
            let mut roots = Vec::new();
            alias_roots(&f.graph, &mut roots);
            roots
        })
        .collect();
    let top_aliases: FxHashMap<usize, usize> = doc.aliases.iter().copied().collect();
    let mut keep = vec![false; n];
    let mut stack: Vec<NodeId> = roots.to_vec();
    while let Some(id) = stack.pop() {
        match keep.get_mut(id) {
            Some(k) if !*k => *k = true,
            Some(_) => continue,
            None => return Err(Error::graph(format!("pruned: node {id} does not exist"))),
        }
        let node = &doc.nodes[id];
        stack.extend(node.inputs.iter().map(|e| e.node));
        stack.extend(node.control_inputs.iter().copied());
        // The variables its stand-ins and its functions' stand-ins read.
        stack.extend(top_aliases.get(&id).copied());
        for f in node.op.functions() {
            stack.extend(function_roots.get(f as usize).into_iter().flatten().copied());
        }
    }
    let mut new_id = vec![usize::MAX; n];
    let mut next = 0;
    for (id, k) in keep.iter().enumerate() {
        if *k {
            new_id[id] = next;
            next += 1;
        }
    }
    let mut old_functions: Vec<Option<_>> = std::mem::take(&mut doc.functions).into_iter().map(Some).collect();
    let mut function_map: FxHashMap<FunctionId, FunctionId> = FxHashMap::default();
    let old_nodes = std::mem::take(&mut doc.nodes);
    for (id, mut node) in old_nodes.into_iter().enumerate() {
        if !keep[id] {
            continue;
        }
        let edge = |e: &Edge| Edge { node: new_id[e.node], index: e.index };
        node.inputs = node.inputs.iter().map(edge).collect();
        node.control_inputs = node.control_inputs.iter().map(|&c| new_id[c]).collect();
        node.op = node.op.map_functions(|f| {
            if let Some(&m) = function_map.get(&f) {
                return Ok(m);
            }
            let doc_f = old_functions.get_mut(f as usize).and_then(Option::take).ok_or_else(|| {
                Error::format(format!("node '{}' calls function {f}, which does not exist", node.name))
            })?;
            let m = FunctionId::try_from(doc.functions.len())
                .map_err(|_| Error::invalid("the graph's function library is full"))?;
            doc.functions.push(doc_f);
            function_map.insert(f, m);
            Ok(m)
        })?;
        doc.nodes.push(node);
    }
    let remap_root = |root: usize| -> Result<usize> {
        match new_id.get(root) {
            Some(&m) if m != usize::MAX => Ok(m),
            _ => Err(Error::graph(format!("pruned: a kept function uses variable node {root}, which is not kept"))),
        }
    };
    let mut aliases = Vec::with_capacity(doc.aliases.len());
    for &(node, root) in &doc.aliases {
        if keep.get(node).copied().unwrap_or(false) {
            aliases.push((new_id[node], remap_root(root)?));
        }
    }
    doc.aliases = aliases;
    fn remap_library(doc: &mut GraphDoc, remap: &dyn Fn(usize) -> Result<usize>) -> Result<()> {
        for f in doc.functions.iter_mut() {
            for alias in f.graph.aliases.iter_mut() {
                alias.1 = remap(alias.1)?;
            }
            remap_library(&mut f.graph, remap)?;
        }
        Ok(())
    }
    remap_library(doc, &remap_root)
}
