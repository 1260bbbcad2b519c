//! Execution plans: what one distinct `(fetches, feeds, targets)` request
//! runs, compiled once and cached by the session.
//!
//! Compilation prunes the graph to what the request needs (stopping at fed
//! tensors), checks that every placeholder it reaches is fed, orders the
//! nodes, assigns a value slot to every edge, and records after which step
//! each slot dies so that intermediates are freed as early as possible.

use crate::error::{Error, OpContext, Result};
use crate::graph::{Edge, GraphState, NodeId};
use crate::ops::{Meta, Op};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Index of a value slot in a run.
pub(crate) type Slot = u32;

/// What a step does besides running a kernel.
pub(crate) enum Stateful {
    /// An ordinary op.
    No,
    /// Read a variable from the session's store.
    Read { var: NodeId, name: String },
    /// Update a variable in the store with the step's one data input.
    Assign { f: crate::ops::AssignOp, var: NodeId, name: String },
}

/// The data inputs of a node: an assignment's first input is the variable
/// it targets, not a value it reads.
pub(crate) fn data_inputs(node: &crate::graph::Node) -> &[Edge] {
    match node.op {
        Op::Assign { .. } => &node.inputs[1..],
        _ => &node.inputs,
    }
}

/// One node to execute.
pub(crate) struct Step {
    pub stateful: Stateful,
    pub op: Op,
    pub inputs: SmallVec<[Slot; 4]>,
    /// Slot for each output, `None` when nothing reads it.
    pub outputs: SmallVec<[Option<Slot>; 1]>,
    /// Slots whose last reader is this step (freed right after it, sequential runs).
    pub frees: SmallVec<[Slot; 2]>,
    /// Each input slot once (parallel runs count readers down per slot).
    pub reads: SmallVec<[Slot; 4]>,
    /// Steps that wait for this one (data or control), for the parallel executor.
    pub dependents: SmallVec<[u32; 4]>,
    /// How many steps this one waits for.
    pub num_deps: u32,
    /// The run counter of a random node (shared by every plan of the session).
    pub random_stream: Option<Arc<AtomicU64>>,
    /// Estimated elements produced, to decide whether threading pays.
    pub work: usize,
    pub context: OpContext,
}

/// A compiled request.
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub num_slots: usize,
    /// Per feed (in request order): its slot and expected dtype/shape.
    pub feeds: Vec<(Slot, Meta, String)>,
    /// Per fetch (in request order): its slot.
    pub fetches: Vec<Slot>,
    /// Run independent steps on several threads.
    pub parallel: bool,
    /// Per slot: how many steps read it, and whether it is fetched (never freed).
    pub readers: Vec<u32>,
    pub fetched: Vec<bool>,
}

/// Elements above which independent nodes are worth running in parallel.
const PARALLEL_WORK: usize = 1 << 16;

pub(crate) fn compile(
    g: &GraphState,
    fetches: &[Edge],
    feeds: &[Edge],
    targets: &[NodeId],
    random_counter: &mut dyn FnMut(NodeId) -> Arc<AtomicU64>,
    inter_op: bool,
) -> Result<Plan> {
    for node in &g.nodes {
        if let Op::Assign { .. } = node.op {
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
    let n = g.nodes.len();
    let fed: FxHashMap<Edge, usize> = feeds.iter().enumerate().map(|(i, e)| (*e, i)).collect();
    // A node all of whose outputs are fed never runs: a control dependency on it is satisfied.
    let fully_fed = |id: NodeId| {
        let outs = g.nodes[id].outputs.len();
        outs > 0 && (0..outs).all(|index| fed.contains_key(&Edge { node: id, index }))
    };
    // 1. Which nodes must run.
    let mut needed = vec![false; n];
    let mut stack: Vec<NodeId> = Vec::new();
    for e in fetches {
        if !fed.contains_key(e) {
            stack.push(e.node);
        }
    }
    stack.extend_from_slice(targets);
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut needed[id], true) {
            continue;
        }
        let node = &g.nodes[id];
        for e in data_inputs(node) {
            if !fed.contains_key(e) && !needed[e.node] {
                stack.push(e.node);
            }
        }
        for &c in &node.control_inputs {
            if !needed[c] && !fully_fed(c) {
                stack.push(c);
            }
        }
    }
    // 2. Placeholders must be fed.
    for (id, node) in g.nodes.iter().enumerate() {
        if needed[id] {
            if let Op::Placeholder { dtype, shape } = &node.op {
                return Err(Error::precondition(format!(
                    "placeholder '{}' ({dtype}{shape}) must be fed: the fetches depend on it",
                    node.name
                ))
                .with_context(|| node.context()));
            }
        }
    }
    // 3. Slots: feeds first, then every output of a needed node that is read or fetched.
    let mut slot_of: FxHashMap<Edge, Slot> = FxHashMap::default();
    let mut feeds_out = Vec::with_capacity(feeds.len());
    for e in feeds {
        let s = slot_of.len() as Slot;
        let slot = *slot_of.entry(*e).or_insert(s);
        let node = &g.nodes[e.node];
        let meta = node.outputs[e.index].clone();
        feeds_out.push((slot, meta, format!("{}:{}", node.name, e.index)));
    }
    let order: Vec<NodeId> = (0..n).filter(|&i| needed[i]).collect();
    let mut read: FxHashMap<Edge, ()> = FxHashMap::default();
    for &id in &order {
        for e in data_inputs(&g.nodes[id]) {
            read.insert(*e, ());
        }
    }
    for e in fetches {
        read.insert(*e, ());
    }
    for &id in &order {
        for index in 0..g.nodes[id].outputs.len() {
            let e = Edge { node: id, index };
            if read.contains_key(&e) && !slot_of.contains_key(&e) {
                let s = slot_of.len() as Slot;
                slot_of.insert(e, s);
            }
        }
    }
    let num_slots = slot_of.len();
    // 4. Steps.
    let step_of: FxHashMap<NodeId, u32> = order.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    let mut steps: Vec<Step> = order
        .iter()
        .map(|&id| {
            let node = &g.nodes[id];
            let inputs: SmallVec<[Slot; 4]> = data_inputs(node).iter().map(|e| slot_of[e]).collect();
            let stateful = match &node.op {
                Op::Variable { .. } => Stateful::Read { var: id, name: node.name.clone() },
                Op::Assign { f } => {
                    let var = node.inputs[0].node;
                    Stateful::Assign { f: *f, var, name: g.nodes[var].name.clone() }
                }
                _ => Stateful::No,
            };
            // A fed output keeps its fed value: the node runs for its other outputs only.
            let outputs = (0..node.outputs.len())
                .map(|index| {
                    let e = Edge { node: id, index };
                    if fed.contains_key(&e) {
                        None
                    } else {
                        slot_of.get(&e).copied()
                    }
                })
                .collect();
            let work = node.outputs.iter().map(|m| m.shape.numel().unwrap_or(PARALLEL_WORK)).sum();
            let mut reads: SmallVec<[Slot; 4]> = SmallVec::clone(&inputs);
            reads.sort_unstable();
            reads.dedup();
            Step {
                stateful,
                op: node.op.clone(),
                reads,
                inputs,
                outputs,
                frees: SmallVec::new(),
                dependents: SmallVec::new(),
                num_deps: 0,
                random_stream: matches!(node.op, Op::Random { .. } | Op::RandomLike { .. }).then(|| random_counter(id)),
                work,
                context: node.context(),
            }
        })
        .collect();
    // 5. Last readers: a slot dies after the last step that reads it, unless fetched.
    let fetched: Vec<Slot> = fetches.iter().map(|e| slot_of[e]).collect();
    let mut last_reader: Vec<Option<usize>> = vec![None; num_slots];
    for (i, st) in steps.iter().enumerate() {
        for &s in &st.inputs {
            last_reader[s as usize] = Some(i);
        }
    }
    for (slot, lr) in last_reader.iter().enumerate() {
        if let Some(i) = lr {
            if !fetched.contains(&(slot as Slot)) {
                let frees = &mut steps[*i].frees;
                if !frees.contains(&(slot as Slot)) {
                    frees.push(slot as Slot);
                }
            }
        }
    }
    // 6. Dependencies between steps, and a width estimate.
    let mut deps: Vec<SmallVec<[u32; 4]>> = vec![SmallVec::new(); steps.len()];
    for (i, &id) in order.iter().enumerate() {
        let node = &g.nodes[id];
        let mut ds: SmallVec<[u32; 4]> = SmallVec::new();
        for e in data_inputs(node) {
            if let Some(&p) = step_of.get(&e.node) {
                if !fed.contains_key(e) {
                    ds.push(p);
                }
            }
        }
        for c in &node.control_inputs {
            if let Some(&p) = step_of.get(c) {
                ds.push(p);
            }
        }
        // A fed output of a step that also runs: readers must not wait for it,
        // but they must not see it overwritten either (outputs above skip fed slots).
        ds.sort_unstable();
        ds.dedup();
        deps[i] = ds;
    }
    let mut level = vec![0usize; steps.len()];
    for i in 0..steps.len() {
        level[i] = deps[i].iter().map(|&p| level[p as usize] + 1).max().unwrap_or(0);
        steps[i].num_deps = deps[i].len() as u32;
        for &p in &deps[i] {
            steps[p as usize].dependents.push(i as u32);
        }
    }
    let mut width: FxHashMap<usize, (usize, usize)> = FxHashMap::default();
    for (i, st) in steps.iter().enumerate() {
        let w = width.entry(level[i]).or_default();
        w.0 += 1;
        w.1 += st.work;
    }
    let parallel = inter_op && width.values().any(|&(count, work)| count > 1 && work >= PARALLEL_WORK);
    let mut readers = vec![0u32; num_slots];
    for st in &steps {
        for &s in &st.reads {
            readers[s as usize] += 1;
        }
    }
    let mut is_fetched = vec![false; num_slots];
    for &s in &fetched {
        is_fetched[s as usize] = true;
    }
    Ok(Plan { steps, num_slots, feeds: feeds_out, fetches: fetched, parallel, readers, fetched: is_fetched })
}
