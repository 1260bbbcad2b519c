//! Execution plans: what one distinct `(fetches, feeds, targets)` request
//! runs, compiled once and cached by the session.
//!
//! Compilation extracts the part of the graph the request needs (stopping
//! at fed tensors; unfed placeholders are an error), runs the optimization
//! passes over it, then lowers it: a value slot per edge, steps in
//! topological order, the step after which each slot dies (so intermediates
//! are freed as early as possible), the steps whose output may overwrite an
//! input that dies there, and the plan's peak memory.

use crate::error::{OpContext, Result};
use crate::graph::NodeId;
use crate::op::{Meta, Metas, Op};
use crate::passes::IrNode;
use crate::passes::{self, IrEdge, IrGraph, PassDump, PassOptions};
use crate::tensor::Value;
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
    Assign { f: crate::op::AssignOp, var: NodeId, name: String },
    /// Apply an optimizer update to a variable and its slots in the store
    /// (inputs: gradient, learning rate, step).
    Update { rule: crate::op::optim::UpdateRule, vars: Vec<(NodeId, String)> },
    /// Run a branch or a loop: sub-plans of its own, run by the same
    /// executor. `vars` are the variables its bodies use; `writes`, whether
    /// they may assign them.
    Control { plan: Box<super::control::ControlPlan>, vars: Vec<NodeId>, writes: bool },
}

impl Stateful {
    /// The variables the step writes.
    fn writes(&self) -> SmallVec<[NodeId; 3]> {
        match self {
            Stateful::Assign { var, .. } => smallvec::smallvec![*var],
            Stateful::Update { vars, .. } => vars.iter().map(|(v, _)| *v).collect(),
            Stateful::Control { vars, writes: true, .. } => vars.iter().copied().collect(),
            Stateful::No | Stateful::Read { .. } | Stateful::Control { .. } => SmallVec::new(),
        }
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
    /// An input (by position) that dies here and whose buffer the output may reuse.
    pub donate: Option<usize>,
    /// Steps that wait for this one (data or control), for the parallel
    /// executor; the one with the longest path to the end of the run first.
    pub dependents: SmallVec<[u32; 4]>,
    /// How many steps this one waits for.
    pub num_deps: u32,
    /// The run counter of a random node (shared by every plan of the session).
    pub random_stream: Option<Arc<AtomicU64>>,
    /// Estimated elements produced, to decide whether threading pays.
    pub work: usize,
    /// Where the step runs (placement decided it).
    pub device: crate::tensor::Device,
    /// Input and output types inferred when the plan compiled, where every
    /// shape was fully known: a run whose inputs have exactly these types
    /// skips inference.
    pub inferred: Option<Inferred>,
    pub context: OpContext,
}

/// The types of a step, inferred once at compile time.
pub(crate) struct Inferred {
    pub inputs: SmallVec<[Meta; 4]>,
    pub outputs: Metas,
}

impl Inferred {
    /// For a stateless node whose input shapes are all fully known.
    fn of(ir: &IrGraph, node: &IrNode) -> Option<Inferred> {
        let inputs: SmallVec<[Meta; 4]> =
            node.inputs.iter().map(|e| ir.nodes[e.node].outputs[e.index].clone()).collect();
        if !inputs.iter().all(|m| m.shape.is_fully_known()) {
            return None;
        }
        let outputs = node.op.infer(&inputs).ok()?;
        // An output with an unknown (or too large) dimension is an error the
        // run reports, with the step's context.
        if !outputs.iter().all(|m| m.shape.checked_numel().is_ok()) {
            return None;
        }
        Some(Inferred { inputs, outputs })
    }

    /// Whether `values` have exactly the types inferred for.
    #[inline]
    pub fn matches(&self, values: &[&Value]) -> bool {
        values.len() == self.inputs.len()
            && values.iter().zip(&self.inputs).all(|(v, m)| v.dtype == m.dtype && *v.shape() == m.shape)
    }
}

/// A compiled request.
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub num_slots: usize,
    /// Constants (on their devices, copied there when the plan compiled):
    /// put in their slots when a run starts, instead of being steps.
    pub constants: Vec<(Slot, Value)>,
    /// Per feed (in request order): its slot and expected dtype/shape.
    pub feeds: Vec<(Slot, Meta, String)>,
    /// Per fetch (in request order): its slot.
    pub fetches: Vec<Slot>,
    /// Run independent steps on several threads.
    pub parallel: bool,
    /// Per slot: how many steps read it, and whether it is fetched (never freed).
    pub readers: Vec<u32>,
    pub fetched: Vec<bool>,
    /// What compilation did and how much memory the plan needs.
    pub report: PlanReport,
    /// Whether and how the plan's device part is replayed as a graph
    /// (its split decided here, at compile time).
    pub capture: super::capture::Capture,
}

/// What plan compilation did: for `Session::explain` and `rivulet inspect`.
#[derive(Clone, Debug, Default)]
pub struct PlanReport {
    /// The IR after each pass (the first entry is the pruned input).
    pub passes: Vec<PassDump>,
    /// Steps the plan runs.
    pub steps: usize,
    /// Fused groups: node name and a listing of the program.
    pub fused: Vec<(String, String)>,
    /// Steps whose output reuses a dying input's buffer.
    pub in_place: usize,
    /// Peak bytes of intermediate values alive at once (feeds and variables
    /// excluded); `None` when a shape is only known at run time.
    pub peak_bytes: Option<usize>,
    /// The plans of control-flow bodies: the node, the function, its report.
    pub bodies: Vec<(String, String, PlanReport)>,
}

/// Elements above which independent nodes are worth running in parallel.
const PARALLEL_WORK: usize = 1 << 16;

/// Plan compilation settings.
pub(crate) struct Compile<'a> {
    pub passes: &'a PassOptions,
    pub inter_op: bool,
    pub keep_dumps: bool,
}

/// Optimize and lower a request's IR (extracted by the caller under the
/// graph's lock; compiled without it, as constant folding runs kernels).
pub(crate) fn compile(
    mut ir: IrGraph,
    random_counter: &mut dyn FnMut(NodeId) -> Arc<AtomicU64>,
    settings: &Compile<'_>,
) -> Result<Plan> {
    let dumps = passes::optimize(&mut ir, settings.passes, settings.keep_dumps)?;
    let mut plan = lower(&ir, random_counter, settings)?;
    plan.report.passes = dumps;
    Ok(plan)
}

/// The plan of a loop's iteration and, when loop-invariant code motion
/// found anything, the plan that computes the invariant values once before
/// the loop (the iteration plan takes them as extra inputs, after its own).
///
/// With `fused`, the iteration is the body followed by the condition on the
/// body's results, as one plan (fetches: the next loop variables, then the
/// condition): one plan run per iteration instead of two.
pub(crate) fn compile_loop(
    cond: &crate::graph::Function,
    body: &crate::graph::Function,
    fused: bool,
    settings: &Compile<'_>,
) -> Result<(Plan, Option<Plan>)> {
    let mut ir = IrGraph::extract(&body.graph.read(), &body.outputs, &body.inputs, &body.effects)?;
    let n = body.outputs.len();
    if fused {
        let c = IrGraph::extract(&cond.graph.read(), &cond.outputs, &cond.inputs, &cond.effects)?;
        // The condition's inputs: the body's results for the loop variables,
        // the body's own inputs for the captures.
        let mut feed_edge: FxHashMap<usize, IrEdge> = FxHashMap::default();
        for (k, (node, _, _)) in c.feeds.iter().enumerate() {
            let e = if k < n { ir.fetches[k] } else { IrEdge { node: ir.feeds[k].0, index: 0 } };
            feed_edge.insert(*node, e);
        }
        let mut node_map: FxHashMap<usize, usize> = FxHashMap::default();
        for (i, node) in c.nodes.into_iter().enumerate() {
            if feed_edge.contains_key(&i) {
                continue;
            }
            let mut node = node;
            for e in &mut node.inputs {
                *e = match feed_edge.get(&e.node) {
                    Some(&f) => f,
                    None => IrEdge { node: node_map[&e.node], index: e.index },
                };
            }
            node.control = node.control.iter().filter_map(|c| node_map.get(c).copied()).collect();
            node_map.insert(i, ir.nodes.len());
            ir.nodes.push(node);
        }
        let map = |e: IrEdge| match feed_edge.get(&e.node) {
            Some(&f) => f,
            None => IrEdge { node: node_map[&e.node], index: e.index },
        };
        ir.fetches.extend(c.fetches.iter().map(|&e| map(e)));
        ir.targets.extend(c.targets.iter().filter_map(|t| node_map.get(t).copied()));
    }
    let before = match settings.passes.loop_invariant_code_motion {
        true => passes::hoist_loop_invariants(&mut ir, n),
        false => None,
    };
    let mut counter = |_: NodeId| Arc::new(AtomicU64::new(0));
    let iteration = compile(ir, &mut counter, settings)?;
    let before = before.map(|ir| compile(ir, &mut counter, settings)).transpose()?;
    Ok((iteration, before))
}

/// Compile a function of a graph's library as a plan of its own: its
/// inputs are the feeds, its outputs the fetches, its effects the targets.
/// The same passes run inside (folding, CSE, fusion).
pub(crate) fn compile_function(f: &crate::graph::Function, settings: &Compile<'_>) -> Result<Plan> {
    let ir = IrGraph::extract(&f.graph.read(), &f.outputs, &f.inputs, &f.effects)?;
    // Random nodes of a body draw from counters of their own.
    let mut counter = |_: NodeId| Arc::new(AtomicU64::new(0));
    compile(ir, &mut counter, settings)
}

/// Ops whose output can take over an input's buffer (same shape and dtype).
impl Step {
    /// Whether running the step makes a collective call: a collective op,
    /// or control flow whose bodies hold one.
    pub(crate) fn has_collective(&self) -> bool {
        matches!(self.op, Op::Collective { .. })
            || matches!(&self.stateful, Stateful::Control { plan, .. } if plan.has_collective())
    }
}

impl Plan {
    /// Whether any step makes a collective call.
    pub(crate) fn has_collective(&self) -> bool {
        self.steps.iter().any(Step::has_collective)
    }
}

fn may_run_in_place(op: &Op) -> bool {
    match op {
        Op::Unary { .. } | Op::Binary { .. } => true,
        Op::FusedElementwise { program } => program.reduce.is_none() && !program.has_pads(),
        _ => false,
    }
}

fn lower(
    ir: &IrGraph,
    random_counter: &mut dyn FnMut(NodeId) -> Arc<AtomicU64>,
    settings: &Compile<'_>,
) -> Result<Plan> {
    let is_feed: Vec<bool> = {
        let mut v = vec![false; ir.nodes.len()];
        for f in &ir.feeds {
            v[f.0] = true;
        }
        v
    };
    // Slots: feeds first, then every output that is read or fetched.
    let mut slot_of: FxHashMap<IrEdge, Slot> = FxHashMap::default();
    let mut feeds_out = Vec::with_capacity(ir.feeds.len());
    for (node, meta, name) in &ir.feeds {
        let e = IrEdge { node: *node, index: 0 };
        let next = slot_of.len() as Slot;
        let slot = *slot_of.entry(e).or_insert(next);
        feeds_out.push((slot, meta.clone(), name.clone()));
    }
    let is_constant = |i: usize| matches!(ir.nodes[i].op, Op::Const { .. }) && !ir.nodes[i].dead && !is_feed[i];
    let mut constants = Vec::new();
    for i in (0..ir.nodes.len()).filter(|&i| is_constant(i)) {
        if let Op::Const { value } = &ir.nodes[i].op {
            let e = IrEdge { node: i, index: 0 };
            let next = slot_of.len() as Slot;
            let slot = *slot_of.entry(e).or_insert(next);
            // On a device, copied there once, when the plan compiles.
            let device = ir.nodes[i].device.unwrap_or(crate::tensor::Device::CPU);
            let value =
                crate::backend::transfer(&value.0, device).map_err(|e| e.with_context(|| ir.nodes[i].context()))?;
            constants.push((slot, value));
        }
    }
    let order: Vec<usize> =
        (0..ir.nodes.len()).filter(|&i| !ir.nodes[i].dead && !is_feed[i] && !is_constant(i)).collect();
    let order = start_collectives_early(ir, order);
    let mut read: FxHashMap<IrEdge, ()> = FxHashMap::default();
    for &i in &order {
        for e in &ir.nodes[i].inputs {
            read.insert(*e, ());
        }
    }
    for e in &ir.fetches {
        read.insert(*e, ());
    }
    for &i in &order {
        for index in 0..ir.nodes[i].outputs.len() {
            let e = IrEdge { node: i, index };
            if read.contains_key(&e) && !slot_of.contains_key(&e) {
                let s = slot_of.len() as Slot;
                slot_of.insert(e, s);
            }
        }
    }
    let num_slots = slot_of.len();
    let step_of: FxHashMap<usize, u32> = order.iter().enumerate().map(|(k, &i)| (i, k as u32)).collect();
    let mut steps: Vec<Step> = order
        .iter()
        .map(|&i| {
            let node = &ir.nodes[i];
            let inputs: SmallVec<[Slot; 4]> = node.inputs.iter().map(|e| slot_of[e]).collect();
            let stateful = match (&node.op, &node.variables[..]) {
                (op, vars) if op.is_control_flow() => Stateful::Control {
                    plan: Box::new(super::control::ControlPlan::compile(node, settings)?),
                    vars: vars.iter().map(|(v, _)| *v).collect(),
                    writes: node.functions.iter().any(|f| f.has_effects()),
                },
                (Op::Variable { .. }, [(var, name)]) => Stateful::Read { var: *var, name: name.clone() },
                (Op::Assign { f }, [(var, name)]) => Stateful::Assign { f: *f, var: *var, name: name.clone() },
                (Op::ReadVariable, [(var, name)]) => Stateful::Read { var: *var, name: name.clone() },
                (Op::ResourceApplyUpdate { rule }, vars) => Stateful::Update { rule: *rule, vars: vars.to_vec() },
                _ => Stateful::No,
            };
            let outputs =
                (0..node.outputs.len()).map(|index| slot_of.get(&IrEdge { node: i, index }).copied()).collect();
            let work = node.outputs.iter().map(|m| m.shape.numel().unwrap_or(PARALLEL_WORK)).sum();
            let mut reads: SmallVec<[Slot; 4]> = inputs.clone();
            reads.sort_unstable();
            reads.dedup();
            // A run count for draws seeded by a number (one seeded by a
            // tensor takes its stream from that tensor).
            let random = matches!(node.op, Op::Random { .. })
                || matches!(node.op, Op::RandomLike { .. }) && node.inputs.len() == 1;
            let inferred = match stateful {
                Stateful::No => Inferred::of(ir, node),
                _ => None,
            };
            Ok(Step {
                stateful,
                op: node.op.clone(),
                reads,
                inputs,
                outputs,
                frees: SmallVec::new(),
                donate: None,
                dependents: SmallVec::new(),
                num_deps: 0,
                random_stream: match (random, node.origin) {
                    (true, Some(o)) => Some(random_counter(o)),
                    _ => None,
                },
                work,
                device: node.device.unwrap_or(crate::tensor::Device::CPU),
                inferred,
                context: node.context(),
            })
        })
        .collect::<Result<_>>()?;
    // Last readers: a slot dies after the last step that reads it, unless fetched.
    let fetched: Vec<Slot> = ir.fetches.iter().map(|e| slot_of[e]).collect();
    let mut is_fetched = vec![false; num_slots];
    for &s in &fetched {
        is_fetched[s as usize] = true;
    }
    let mut last_reader: Vec<Option<usize>> = vec![None; num_slots];
    for (k, st) in steps.iter().enumerate() {
        for &s in &st.inputs {
            last_reader[s as usize] = Some(k);
        }
    }
    for (slot, lr) in last_reader.iter().enumerate() {
        if let (Some(k), false) = (lr, is_fetched[slot]) {
            let frees = &mut steps[*k].frees;
            if !frees.contains(&(slot as Slot)) {
                frees.push(slot as Slot);
            }
        }
    }
    // In place: an elementwise step may write into an input that dies there
    // and has exactly the output's type (the executor checks it is not shared).
    let mut in_place = 0;
    if settings.passes.in_place {
        for (k, &i) in order.iter().enumerate() {
            let node = &ir.nodes[i];
            if !may_run_in_place(&node.op) || node.outputs.len() != 1 || !node.outputs[0].shape.is_fully_known() {
                continue;
            }
            let out = &node.outputs[0];
            let pos = node.inputs.iter().position(|e| {
                let s = slot_of[e];
                let dies_here = steps[k].frees.contains(&s);
                let once = node.inputs.iter().filter(|x| *x == e).count() == 1;
                dies_here && once && !is_feed[e.node] && ir.nodes[e.node].outputs[e.index] == *out
            });
            if pos.is_some() {
                steps[k].donate = pos;
                in_place += 1;
            }
        }
    }
    // Dependencies between steps, and a width estimate.
    let mut deps: Vec<SmallVec<[u32; 4]>> = vec![SmallVec::new(); steps.len()];
    for (k, &i) in order.iter().enumerate() {
        let node = &ir.nodes[i];
        let mut ds: SmallVec<[u32; 4]> = node
            .inputs
            .iter()
            .filter_map(|e| step_of.get(&e.node).copied())
            .chain(node.control.iter().filter_map(|c| step_of.get(c).copied()))
            .collect();
        ds.sort_unstable();
        ds.dedup();
        deps[k] = ds;
    }
    // Program order between reads and writes of one variable (TensorFlow 2's
    // automatic control dependencies): a write waits for the earlier reads
    // and writes of its variable, so parallel runs cannot reorder them.
    // An in-place update also waits for the earlier steps that take those
    // reads' values as inputs, so that this run has usually let go of the
    // buffers by then. (A view of a read, or a later reader, can still hold
    // one: the update then writes new buffers.)
    let mut touched: FxHashMap<NodeId, Vec<u32>> = FxHashMap::default();
    let mut slot_readers: FxHashMap<Slot, Vec<u32>> = FxHashMap::default();
    for (k, st) in steps.iter().enumerate() {
        for &s in &st.reads {
            slot_readers.entry(s).or_default().push(k as u32);
        }
    }
    let mut users: FxHashMap<NodeId, Vec<u32>> = FxHashMap::default();
    // And a `ReadVariableOp` (or control flow that only reads) waits for the
    // earlier writes, so that it sees them (a `Variable` node is the
    // variable's handle: it reads whenever its step runs).
    let mut writers: FxHashMap<NodeId, Vec<u32>> = FxHashMap::default();
    for (k, st) in steps.iter().enumerate() {
        if let Stateful::Control { vars, writes: false, .. } = &st.stateful {
            for var in vars {
                touched.entry(*var).or_default().push(k as u32);
                deps[k].extend(writers.get(var).into_iter().flatten().copied());
            }
        }
        if let Stateful::Read { var, .. } = &st.stateful {
            if matches!(st.op, Op::ReadVariable) {
                deps[k].extend(writers.get(var).into_iter().flatten().copied());
            }
            touched.entry(*var).or_default().push(k as u32);
            for slot in st.outputs.iter().flatten() {
                users.entry(*var).or_default().extend(slot_readers.get(slot).into_iter().flatten().copied());
            }
        }
        let in_place = matches!(st.stateful, Stateful::Update { .. });
        for var in st.stateful.writes() {
            let earlier = touched.entry(var).or_default();
            deps[k].extend(earlier.iter().copied());
            earlier.push(k as u32);
            writers.entry(var).or_default().push(k as u32);
            if in_place {
                deps[k].extend(users.get(&var).into_iter().flatten().copied().filter(|&j| (j as usize) < k));
            }
        }
        deps[k].sort_unstable();
        deps[k].dedup();
    }
    let mut level = vec![0usize; steps.len()];
    for k in 0..steps.len() {
        level[k] = deps[k].iter().map(|&p| level[p as usize] + 1).max().unwrap_or(0);
        steps[k].num_deps = deps[k].len() as u32;
        for &p in &deps[k] {
            steps[p as usize].dependents.push(k as u32);
        }
    }
    // Critical-path order: a thread that finishes a step goes on with the
    // dependent that has the most estimated work left behind it and hands
    // the others to the pool, so the longest chain never waits for a
    // sleeping thread to wake up.
    let costs: Vec<f64> = order.iter().map(|&i| estimated_nanos(ir, i)).collect();
    let mut remaining = vec![0f64; steps.len()];
    for k in (0..steps.len()).rev() {
        let after = steps[k].dependents.iter().map(|&d| remaining[d as usize]).fold(0.0, f64::max);
        remaining[k] = costs[k] + after;
    }
    for st in &mut steps {
        st.dependents.sort_by(|&a, &b| remaining[b as usize].total_cmp(&remaining[a as usize]));
    }
    let mut width: FxHashMap<usize, (usize, usize)> = FxHashMap::default();
    for (k, st) in steps.iter().enumerate() {
        let w = width.entry(level[k]).or_default();
        w.0 += 1;
        w.1 += st.work;
    }
    // A collective blocks its thread until the other ranks arrive, and every
    // rank must make its calls in the same order: a plan with one runs its
    // steps in order on the calling thread, never on the shared pool (whose
    // threads the ranks of a group of threads would exhaust).
    let collective = steps.iter().any(Step::has_collective);
    let parallel =
        settings.inter_op && !collective && width.values().any(|&(count, work)| count > 1 && work >= PARALLEL_WORK);
    let mut readers = vec![0u32; num_slots];
    for st in &steps {
        for &s in &st.reads {
            readers[s as usize] += 1;
        }
    }
    let peak_bytes = peak_memory(ir, &order, &steps, &slot_of);
    let fused = order
        .iter()
        .filter_map(|&i| match &ir.nodes[i].op {
            Op::FusedElementwise { program } => Some((ir.nodes[i].name.clone(), program.describe())),
            Op::FusedMatMul { activation, .. } => {
                let act = activation.map(|f| format!(" + {}", f.name())).unwrap_or_default();
                Some((ir.nodes[i].name.clone(), format!("matmul + bias{act}\n")))
            }
            Op::Window { f } => match &**f {
                crate::op::window::WindowOp::FusedConv { activation, .. } => {
                    let act = activation.map(|f| format!(" + {}", f.name())).unwrap_or_default();
                    Some((ir.nodes[i].name.clone(), format!("conv + bias{act}\n")))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut plan = Plan {
        report: PlanReport {
            passes: Vec::new(),
            steps: steps.len() + constants.len(),
            fused,
            in_place,
            peak_bytes,
            bodies: steps
                .iter()
                .filter_map(|st| match &st.stateful {
                    Stateful::Control { plan, .. } => Some(plan.reports(st.context.node.as_deref().unwrap_or(""))),
                    _ => None,
                })
                .flatten()
                .collect(),
        },
        steps,
        num_slots,
        constants,
        feeds: feeds_out,
        fetches: fetched,
        parallel,
        readers,
        fetched: is_fetched,
        capture: Default::default(),
    };
    plan.capture = super::capture::Capture::for_plan(&plan);
    Ok(plan)
}

/// `order` with each all-reduce start moved up to just after the last of
/// its inputs, and each wait down to just before its first use: a gradient
/// bucket goes to the communicator as soon as the backward pass has
/// produced it, and the rest of the backward pass (and the updates of the
/// buckets that came back earlier) runs while it travels.
fn start_collectives_early(ir: &IrGraph, order: Vec<usize>) -> Vec<usize> {
    let is_start =
        |i: usize| matches!(ir.nodes[i].op, Op::Collective { c: crate::op::CollectiveOp::StartAllReduce { .. } });
    if !order.iter().any(|&i| is_start(i)) {
        return order;
    }
    let mut out: Vec<usize> = Vec::with_capacity(order.len());
    for &i in &order {
        if !is_start(i) {
            out.push(i);
            continue;
        }
        let node = &ir.nodes[i];
        let producers: Vec<usize> = node.inputs.iter().map(|e| e.node).chain(node.control.iter().copied()).collect();
        // After its producers, and after the previous collective that calls
        // the communicator (the calls keep their order; a wait calls nothing,
        // so the next bucket may start before the previous one is waited for).
        let calls = |j: usize| matches!(&ir.nodes[j].op, Op::Collective { c } if !matches!(c, crate::op::CollectiveOp::WaitAllReduce { .. }));
        let after = out.iter().rposition(|&j| producers.contains(&j) || calls(j)).map_or(0, |p| p + 1);
        out.insert(after, i);
    }
    // Each wait as late as possible: just before the first step that uses
    // its results (or depends on it), so that the steps before it (the
    // updates of buckets that arrived earlier) run while its bucket travels.
    let is_wait =
        |i: usize| matches!(ir.nodes[i].op, Op::Collective { c: crate::op::CollectiveOp::WaitAllReduce { .. } });
    let waits: Vec<usize> = out.iter().copied().filter(|&i| is_wait(i)).collect();
    for w in waits {
        let Some(at) = out.iter().position(|&j| j == w) else { continue };
        let uses = |j: usize| ir.nodes[j].inputs.iter().any(|e| e.node == w) || ir.nodes[j].control.contains(&w);
        let first_use = out[at + 1..].iter().position(|&j| uses(j)).map_or(out.len(), |p| at + 1 + p);
        out.remove(at);
        out.insert(first_use - 1, w);
    }
    out
}

/// A rough time of one node on one thread, for critical-path ordering:
/// products at ~50 G multiply-adds per second, everything else at a few
/// elements (read or written, whichever is more) per nanosecond, and a
/// microsecond of dispatch each.
fn estimated_nanos(ir: &IrGraph, i: usize) -> f64 {
    let node = &ir.nodes[i];
    let count = |m: &Meta| m.shape.numel().unwrap_or(PARALLEL_WORK);
    let written: usize = node.outputs.iter().map(count).sum();
    let read = node.inputs.iter().map(|e| count(&ir.nodes[e.node].outputs[e.index])).max().unwrap_or(0);
    let elements = written.max(read);
    let depth = match node.op {
        Op::MatMul { transpose_a, .. } | Op::FusedMatMul { transpose_a, .. } => node.inputs.first().and_then(|e| {
            let shape = &ir.nodes[e.node].outputs[e.index].shape;
            let r = shape.rank();
            shape.dim(if transpose_a { r.checked_sub(2)? } else { r.checked_sub(1)? })
        }),
        _ => None,
    };
    1_000.0
        + match depth {
            Some(k) => written as f64 * k as f64 / 50.0,
            None => elements as f64 / 4.0,
        }
}

/// Peak bytes of intermediates alive at once when the steps run in order:
/// outputs are allocated by their step (none for views and in-place
/// outputs) and freed after their last reader. Variable reads, feeds,
/// constants and in-place updates use storage the plan does not allocate.
fn peak_memory(ir: &IrGraph, order: &[usize], steps: &[Step], slot_of: &FxHashMap<IrEdge, Slot>) -> Option<usize> {
    let mut size: FxHashMap<Slot, usize> = FxHashMap::default();
    for (&i, st) in order.iter().zip(steps) {
        let node = &ir.nodes[i];
        let owns = !matches!(
            node.op,
            Op::Const { .. }
                | Op::Variable { .. }
                | Op::Identity
                | Op::StopGradient
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::ExpandDims { .. }
                | Op::Squeeze { .. }
                | Op::BroadcastTo { .. }
                | Op::BroadcastLike
                | Op::BroadcastToDims
                | Op::Slice { .. }
                | Op::StridedSlice { .. }
                | Op::Reverse { .. }
                | Op::Split { .. }
                | Op::Unstack { .. }
                | Op::SplitLike { .. }
                | Op::Assign { .. }
                | Op::ReadVariable
                | Op::ResourceApplyUpdate { .. }
        ) && st.donate.is_none();
        for (index, m) in node.outputs.iter().enumerate() {
            if let Some(&s) = slot_of.get(&IrEdge { node: i, index }) {
                let bytes = if owns { m.shape.numel()? * m.dtype.size() } else { 0 };
                size.insert(s, bytes);
            }
        }
    }
    let (mut live, mut peak) = (0usize, 0usize);
    for st in steps {
        for s in st.outputs.iter().flatten() {
            live += size.get(s).copied().unwrap_or(0);
        }
        peak = peak.max(live);
        for s in &st.frees {
            live -= size.get(s).copied().unwrap_or(0).min(live);
        }
    }
    Some(peak)
}
