//! The session: runs parts of a graph, TensorFlow 1 style.
//!
//! `run(fetches, feeds)` looks up (or compiles once) the plan for that exact
//! request, checks the feeds, then executes the plan's steps through the same
//! kernels eager mode uses. Chains run on the calling thread; plans with
//! independent heavy branches run them concurrently on the shared pool.
//! A `Session` is `Send + Sync`: many threads may run it at once.

use super::plan::{compile, Compile, Plan, PlanReport, Slot, Stateful, Step};
use super::store::{uninitialized, VariableCell, VariableStore};
use super::Variable;
use crate::backend::{self, KernelCtx};
use crate::error::{Error, Result};
use crate::graph::{Edge, Graph, NodeId, Operation};
use crate::graph::{Repr, Tensor};
use crate::op::{AssignOp, BinaryOp, Op};
use crate::passes::PassOptions;
use crate::tensor::{Device, Value};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Settings of a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Run independent nodes concurrently when they are large enough to gain.
    pub inter_op_parallelism: bool,
    /// The graph optimizations applied when a plan is compiled.
    pub passes: PassOptions,
    /// Replay each request's GPU work as a recorded CUDA graph from its
    /// second run on (where [`crate::graph_capture_enabled`] too).
    pub device_graphs: bool,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions { inter_op_parallelism: true, passes: PassOptions::all(), device_graphs: true }
    }
}

impl SessionOptions {
    /// No graph optimization: plans run the graph as written (pruned).
    pub fn unoptimized() -> SessionOptions {
        SessionOptions { passes: PassOptions::none(), ..SessionOptions::default() }
    }
}

/// Where a run's time goes: from [`Session::profile`].
#[derive(Clone, Debug)]
pub struct RunProfile {
    /// How many runs the times are averaged over.
    pub runs: usize,
    /// Every step of the plan, in execution order.
    pub steps: Vec<StepProfile>,
}

/// One step's mean time in a [`RunProfile`].
#[derive(Clone, Debug)]
pub struct StepProfile {
    /// The node name (a fused step is named after the node it replaced).
    pub node: String,
    /// The op type.
    pub op: String,
    /// Where the step ran.
    pub device: crate::tensor::Device,
    pub seconds: f64,
}

impl RunProfile {
    /// Total seconds of all steps per run.
    pub fn total_seconds(&self) -> f64 {
        self.steps.iter().map(|s| s.seconds).sum()
    }

    /// Seconds per run by op type, largest first.
    pub fn by_op(&self) -> Vec<(String, f64, usize)> {
        let mut sums: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
        for s in &self.steps {
            let e = sums.entry(&s.op).or_default();
            e.0 += s.seconds;
            e.1 += 1;
        }
        let mut v: Vec<(String, f64, usize)> = sums.into_iter().map(|(k, (t, n))| (k.to_string(), t, n)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

type PlanKey = SmallVec<[u64; 8]>;

/// A request's cache key, fetch edges, feed edges and target nodes.
type Request = (PlanKey, SmallVec<[Edge; 4]>, SmallVec<[Edge; 4]>, SmallVec<[NodeId; 2]>);

/// Runs a [`Graph`]: see the module documentation.
pub struct Session {
    graph: Graph,
    options: SessionOptions,
    plans: RwLock<FxHashMap<PlanKey, Arc<Plan>>>,
    random_counters: Mutex<FxHashMap<NodeId, Arc<AtomicU64>>>,
    variables: VariableStore,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({:?}, {} cached plans)", self.graph, self.plans.read().len())
    }
}

fn edge_of(graph: &Graph, t: &Tensor, role: &str) -> Result<Edge> {
    match &t.repr {
        Repr::Symbolic(s) if s.graph.same_as(graph) => Ok(Edge { node: s.node, index: s.index }),
        Repr::Symbolic(_) => {
            Err(Error::graph(format!("{role} {} belongs to another graph", t.name().unwrap_or_default())))
        }
        Repr::Value(_) => {
            Err(Error::graph(format!("{role} must be a symbolic tensor of the session's graph, got a value")))
        }
    }
}

impl Session {
    /// A session over `graph` with default options.
    pub fn new(graph: &Graph) -> Session {
        Session::with_options(graph, SessionOptions::default())
    }

    /// A session over `graph`.
    pub fn with_options(graph: &Graph, options: SessionOptions) -> Session {
        Session {
            graph: graph.clone(),
            options,
            plans: RwLock::new(FxHashMap::default()),
            random_counters: Mutex::new(FxHashMap::default()),
            variables: VariableStore::default(),
        }
    }

    /// Run `targets` for their effect (initializers, training steps).
    pub fn run_targets(&self, targets: &[&Operation]) -> Result<()> {
        self.run_with_targets(&[], &[], targets).map(drop)
    }

    fn graph_variable(&self, var: &Variable) -> Result<NodeId> {
        match (var.graph(), var.node()) {
            (Some(g), Some(node)) if g.same_as(&self.graph) => Ok(node),
            _ => Err(Error::graph(format!("variable '{}' is not a variable of this session's graph", var.name()))),
        }
    }

    /// The current value of a graph variable in this session.
    pub fn variable_value(&self, var: &Variable) -> Result<Tensor> {
        let node = self.graph_variable(var)?;
        match self.variables.get(node) {
            Some(v) => Ok(Tensor::from_value(v)),
            None => Err(uninitialized(var.name())),
        }
    }

    /// Set a graph variable's value in this session (restoring checkpoints).
    pub fn set_variable_value(&self, var: &Variable, value: &Tensor) -> Result<()> {
        let node = self.graph_variable(var)?;
        let v = value.value()?;
        if v.dtype != var.dtype() || v.shape() != var.shape() {
            return Err(Error::shape(format!(
                "variable '{}' is {}{}, the value is {}{}",
                var.name(),
                var.dtype(),
                var.shape(),
                v.dtype,
                v.shape()
            )));
        }
        // On the variable's device (a restored checkpoint comes from the host).
        let device = match self.graph.read().nodes[node].device {
            Some(d) => d,
            None => crate::backend::automatic_variable_device(&crate::op::Meta::new(v.dtype, v.shape().clone())),
        };
        self.variables.set(node, crate::backend::transfer(v, device)?);
        Ok(())
    }

    /// Keep a graph variable's value in `cell` (an eager variable's) from
    /// now on: see [`crate::function`].
    pub(crate) fn bind_variable(&self, var: &Variable, cell: Arc<VariableCell>) -> Result<()> {
        let node = self.graph_variable(var)?;
        self.variables.bind(node, cell);
        Ok(())
    }

    /// How many times each random node has run in this session, by node name
    /// (saved in checkpoints so that a resumed run draws the same numbers).
    pub fn random_streams(&self) -> std::collections::BTreeMap<String, u64> {
        let counters = self.random_counters.lock();
        counters.iter().map(|(&id, c)| (self.graph.node_name(id), c.load(Ordering::Relaxed))).collect()
    }

    /// Restore counts saved by [`Session::random_streams`].
    pub fn set_random_streams(&self, streams: &std::collections::BTreeMap<String, u64>) -> Result<()> {
        let mut counters = self.random_counters.lock();
        for (name, &count) in streams {
            let id = self.graph.operation(name)?.id();
            counters.entry(id).or_insert_with(|| Arc::new(AtomicU64::new(0))).store(count, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a graph variable has a value in this session.
    pub fn is_initialized(&self, var: &Variable) -> bool {
        self.graph_variable(var).is_ok_and(|n| self.variables.contains(n))
    }

    /// The session's graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Evaluate `fetches`, with `feeds` replacing the values of the listed
    /// tensors (placeholders, or any other tensor of the graph). Only the
    /// nodes the fetches need are run.
    pub fn run(&self, fetches: &[&Tensor], feeds: &[(&Tensor, &Tensor)]) -> Result<Vec<Tensor>> {
        self.run_with_targets(fetches, feeds, &[])
    }

    /// [`Session::run`], also running `targets` for their effect.
    pub fn run_with_targets(
        &self,
        fetches: &[&Tensor],
        feeds: &[(&Tensor, &Tensor)],
        targets: &[&Operation],
    ) -> Result<Vec<Tensor>> {
        let plan = self.plan_for(fetches, feeds, targets)?;
        self.execute_plan(&plan, feeds)
    }

    /// The (cached) plan of a request.
    pub(super) fn plan_for(
        &self,
        fetches: &[&Tensor],
        feeds: &[(&Tensor, &Tensor)],
        targets: &[&Operation],
    ) -> Result<Arc<Plan>> {
        let feed_keys: SmallVec<[&Tensor; 4]> = feeds.iter().map(|(t, _)| *t).collect();
        let (key, fetch_edges, feed_edges, target_ids) = self.request(fetches, &feed_keys, targets)?;
        self.plan(&key, &fetch_edges, &feed_edges, &target_ids)
    }

    /// Edges and the cache key of a request.
    fn request(&self, fetches: &[&Tensor], feeds: &[&Tensor], targets: &[&Operation]) -> Result<Request> {
        let mut key: PlanKey = SmallVec::new();
        let mut fetch_edges: SmallVec<[Edge; 4]> = SmallVec::new();
        for t in fetches {
            let e = edge_of(&self.graph, t, "fetch")?;
            key.extend([e.node as u64, e.index as u64]);
            fetch_edges.push(e);
        }
        key.push(u64::MAX);
        let mut feed_edges: SmallVec<[Edge; 4]> = SmallVec::new();
        for t in feeds {
            let e = edge_of(&self.graph, t, "feed key")?;
            key.extend([e.node as u64, e.index as u64]);
            feed_edges.push(e);
        }
        key.push(u64::MAX);
        let mut target_ids: SmallVec<[NodeId; 2]> = SmallVec::new();
        for op in targets {
            if !op.graph.same_as(&self.graph) {
                return Err(Error::graph(format!("target {} belongs to another graph", op.name())));
            }
            key.push(op.id as u64);
            target_ids.push(op.id);
        }
        Ok((key, fetch_edges, feed_edges, target_ids))
    }

    /// What compiling this request does: the IR after each pass, the fused
    /// groups, the in-place steps and the plan's peak memory.
    pub fn explain(&self, fetches: &[&Tensor], feeds: &[&Tensor], targets: &[&Operation]) -> Result<PlanReport> {
        let (_, fetch_edges, feed_edges, target_ids) = self.request(fetches, feeds, targets)?;
        Ok(self.compile(&fetch_edges, &feed_edges, &target_ids, true)?.report)
    }

    /// Compile a request. No lock is held while passes run (constant
    /// folding runs kernels, whose waiting threads may pick up work that
    /// needs these locks).
    fn compile(&self, fetches: &[Edge], feeds: &[Edge], targets: &[NodeId], keep_dumps: bool) -> Result<Plan> {
        let ir = crate::passes::IrGraph::extract(&self.graph.read(), fetches, feeds, targets)?;
        let mut counter =
            |id: NodeId| self.random_counters.lock().entry(id).or_insert_with(|| Arc::new(AtomicU64::new(0))).clone();
        let settings =
            Compile { passes: &self.options.passes, inter_op: self.options.inter_op_parallelism, keep_dumps };
        compile(ir, &mut counter, &settings)
    }

    /// Whether runs of this request replay a recorded device graph (CUDA
    /// graphs; see [`crate::enable_graph_capture`]), or why not. Compiles
    /// the request's plan if no run has.
    pub fn graph_status(
        &self,
        fetches: &[&Tensor],
        feeds: &[&Tensor],
        targets: &[&Operation],
    ) -> Result<super::capture::GraphStatus> {
        let (key, fetch_edges, feed_edges, target_ids) = self.request(fetches, feeds, targets)?;
        let plan = self.plan(&key, &fetch_edges, &feed_edges, &target_ids)?;
        if !self.options.device_graphs {
            return Ok(super::capture::GraphStatus::Disabled);
        }
        Ok(plan.capture.status())
    }

    /// Run the request `runs` times, one step after another, timing every
    /// step (like TensorFlow's `RunMetadata` step stats): where a run's time
    /// goes. Steps run sequentially here, so the total is the plan's work,
    /// not the wall time of a parallel run.
    ///
    /// Each run is a real run, with its effects: variables are updated and
    /// random ops draw, `runs` times (profiling a training step trains).
    /// The first run of a request also compiles its plan and warms caches;
    /// run it once before profiling to leave that out.
    pub fn profile(
        &self,
        fetches: &[&Tensor],
        feeds: &[(&Tensor, &Tensor)],
        targets: &[&Operation],
        runs: usize,
    ) -> Result<RunProfile> {
        if runs == 0 {
            return Err(Error::invalid("Session::profile needs at least one run"));
        }
        let plan = self.plan_for(fetches, feeds, targets)?;
        let values = self.feed_values(&plan, feeds)?;
        let mut profiler = Profiler::default();
        for _ in 0..runs {
            execute_sequential(&plan, &values, &self.variables, Some(&mut profiler), Mode::default())?;
        }
        let mut steps = Vec::new();
        profiler.rows(&plan, "", runs, &mut steps);
        Ok(RunProfile { runs, steps })
    }

    /// The fed values, checked against the plan's placeholders.
    fn feed_values<'v>(&self, plan: &Plan, feeds: &[(&Tensor, &'v Tensor)]) -> Result<SmallVec<[&'v Value; 4]>> {
        let mut values: SmallVec<[&Value; 4]> = SmallVec::new();
        for (i, (_, v)) in feeds.iter().enumerate() {
            let (_, meta, name) = &plan.feeds[i];
            let value = v.value().map_err(|_| {
                Error::graph(format!("the value fed for {name} is a symbolic tensor; feed a value (run it first)"))
            })?;
            if value.dtype != meta.dtype {
                return Err(Error::dtype(format!(
                    "feed for {name} has dtype {}, expected {}",
                    value.dtype, meta.dtype
                )));
            }
            if !value.shape().is_compatible_with(&meta.shape) {
                return Err(Error::shape(format!(
                    "feed for {name} has shape {}, expected {}",
                    value.shape(),
                    meta.shape
                )));
            }
            values.push(value);
        }
        Ok(values)
    }

    fn execute_plan(&self, plan: &Plan, feeds: &[(&Tensor, &Tensor)]) -> Result<Vec<Tensor>> {
        let values = self.feed_values(plan, feeds)?;
        let store = &self.variables;
        if self.options.device_graphs && plan.capture.may_record() {
            if let Some(out) = super::capture::run(plan, &values, store)? {
                return Ok(out.into_iter().map(Tensor::from_value).collect());
            }
        }
        let mode = Mode { device_graphs: self.options.device_graphs, ..Mode::default() };
        let out = if plan.parallel {
            execute_parallel(plan, &values, store, mode)?
        } else {
            execute_sequential(plan, &values, store, None, mode)?
        };
        Ok(out.into_iter().map(Tensor::from_value).collect())
    }

    fn plan(&self, key: &PlanKey, fetches: &[Edge], feeds: &[Edge], targets: &[NodeId]) -> Result<Arc<Plan>> {
        if let Some(p) = self.plans.read().get(key) {
            return Ok(p.clone());
        }
        let plan = Arc::new(self.compile(fetches, feeds, targets, false)?);
        // Concurrent first runs may both compile: the first plan stored is kept.
        Ok(self.plans.write().entry(key.clone()).or_insert(plan).clone())
    }

    /// Number of distinct plans compiled so far.
    pub fn num_cached_plans(&self) -> usize {
        self.plans.read().len()
    }
}

/// The stream a step's random op draws: the next of its counter, or, while
/// a device graph records it, the device address its replays read.
fn kernel_ctx(step: &Step, mode: Mode) -> KernelCtx {
    match (&step.random_stream, mode.random_stream_at) {
        (Some(_), Some(at)) => KernelCtx { random_stream: 0, random_stream_at: Some(at) },
        (Some(c), None) => KernelCtx { random_stream: c.fetch_add(1, Ordering::Relaxed), random_stream_at: None },
        (None, _) => KernelCtx::EAGER,
    }
}

/// How a run treats its steps.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Mode {
    /// Optimizer updates and assignments must keep each variable's buffer
    /// (a device graph being recorded), or fail.
    pub in_place_only: bool,
    /// Loop bodies may be replayed as recorded device graphs (the
    /// session's `SessionOptions::device_graphs`).
    pub device_graphs: bool,
    /// Where a random step being recorded reads its stream (see
    /// [`KernelCtx::random_stream_at`]).
    pub random_stream_at: Option<u64>,
}

fn run_step(
    step: &Step,
    inputs: &[&Value],
    store: &VariableStore,
    donated: Option<usize>,
    prof: Option<&mut Profiler>,
    mode: Mode,
) -> Result<SmallVec<[Value; 1]>> {
    let in_place_only = mode.in_place_only;
    let result = match &step.stateful {
        Stateful::Control { plan, .. } => plan.run(inputs, store, prof, mode.device_graphs),
        Stateful::No => match (&step.inferred, donated) {
            (Some(known), _) if known.matches(inputs) => {
                let donated = donated.filter(|_| step.device == Device::CPU);
                backend::execute_inferred(
                    step.device,
                    &step.op,
                    inputs,
                    &known.outputs,
                    donated,
                    &kernel_ctx(step, mode),
                )
            }
            (_, Some(pos)) if step.device == Device::CPU => {
                backend::execute_donating(&step.op, inputs, pos, &kernel_ctx(step, mode))
            }
            _ => backend::execute_on(step.device, &step.op, inputs, &kernel_ctx(step, mode)),
        },
        Stateful::Read { var, name } => match store.get(*var) {
            Some(v) => Ok(smallvec::smallvec![v]),
            None => Err(uninitialized(name)),
        },
        // The store keeps each variable on its step's device (placement puts
        // it where its scope asked, the CPU by default).
        Stateful::Assign { f, var, name } if inputs[0].device() != step.device => {
            assign(*f, *var, name, &backend::transfer(inputs[0], step.device)?, store, in_place_only)
        }
        Stateful::Assign { f, var, name } => assign(*f, *var, name, inputs[0], store, in_place_only),
        Stateful::Update { rule, vars } if inputs.iter().any(|v| v.device() != step.device) => {
            let here: Vec<Value> = inputs.iter().map(|v| backend::transfer(v, step.device)).collect::<Result<_>>()?;
            store.update(*rule, vars, &here[0], &here[1], &here[2], in_place_only).map(|v| v.into_iter().collect())
        }
        Stateful::Update { rule, vars } => {
            store.update(*rule, vars, inputs[0], inputs[1], inputs[2], in_place_only).map(|v| v.into_iter().collect())
        }
    };
    result.map_err(|e| {
        e.with_context(|| {
            let mut c = step.context.clone();
            c.inputs = inputs.iter().map(|v| format!("{}{}", v.dtype, v.shape())).collect();
            c
        })
    })
}

/// Update a variable; the output is its new value. AssignAdd/AssignSub
/// compute outside any lock and publish only if the variable did not
/// change meanwhile (see [`super::store::VariableCell::modify`]).
///
/// With `in_place_only` (a graph being captured), the new value is written
/// into the variable's own buffer ([`VariableStore::overwrite`]).
fn assign(
    f: AssignOp,
    var: NodeId,
    name: &str,
    value: &Value,
    store: &VariableStore,
    in_place_only: bool,
) -> Result<SmallVec<[Value; 1]>> {
    let binary = |f: AssignOp| Op::Binary { f: if f == AssignOp::AssignAdd { BinaryOp::Add } else { BinaryOp::Sub } };
    if in_place_only {
        let new = store.overwrite(var, name, |current| match f {
            AssignOp::Assign => Ok(value.clone()),
            _ => Ok(backend::execute(&binary(f), &[current, value], &KernelCtx::EAGER)?.swap_remove(0)),
        })?;
        return Ok(smallvec::smallvec![new]);
    }
    let new = match f {
        AssignOp::Assign => {
            store.assign(var, name, value)?;
            value.clone()
        }
        AssignOp::AssignAdd | AssignOp::AssignSub => {
            let op = binary(f);
            store.modify(var, name, |current| {
                Ok(backend::execute(&op, &[current, value], &KernelCtx::EAGER)?.swap_remove(0))
            })?
        }
    };
    Ok(smallvec::smallvec![new])
}

/// Step times of profiled runs, per plan (the request's and its bodies').
#[derive(Default)]
pub(super) struct Profiler {
    times: FxHashMap<usize, Vec<std::time::Duration>>,
}

impl Profiler {
    fn add(&mut self, plan: &Plan, step: usize, t: std::time::Duration) {
        let times = self
            .times
            .entry(plan as *const Plan as usize)
            .or_insert_with(|| vec![Default::default(); plan.steps.len()]);
        times[step] += t;
    }

    /// One row per step of `plan`, then its bodies' steps after each
    /// control-flow step (named `node/function/step`).
    fn rows(&self, plan: &Plan, prefix: &str, runs: usize, out: &mut Vec<StepProfile>) {
        let times = self.times.get(&(plan as *const Plan as usize));
        for (k, step) in plan.steps.iter().enumerate() {
            let node = step.context.node.clone().unwrap_or_default();
            let t = times.map(|t| t[k]).unwrap_or_default();
            out.push(StepProfile {
                node: format!("{prefix}{node}"),
                op: step.context.op.clone(),
                device: step.device,
                seconds: t.as_secs_f64() / runs as f64,
            });
            if let Stateful::Control { plan: control, .. } = &step.stateful {
                for (name, sub) in control.plans() {
                    let inner = format!("{prefix}{node}/{}/", name.rsplit('/').next().unwrap_or(name));
                    self.rows(sub, &inner, runs, out);
                }
            }
        }
    }
}

/// Run a plan on `feeds` (the functions of control flow).
pub(super) fn run_plan(
    plan: &Plan,
    feeds: &[&Value],
    store: &VariableStore,
    prof: Option<&mut Profiler>,
    mode: Mode,
) -> Result<Vec<Value>> {
    if plan.parallel && prof.is_none() {
        execute_parallel(plan, feeds, store, mode)
    } else {
        execute_sequential(plan, feeds, store, prof, mode)
    }
}

fn execute_sequential(
    plan: &Plan,
    feeds: &[&Value],
    store: &VariableStore,
    times: Option<&mut Profiler>,
    mode: Mode,
) -> Result<Vec<Value>> {
    let mut slots: SmallVec<[Option<Value>; 8]> = SmallVec::from_elem(None, plan.num_slots);
    run_sequential(plan, feeds, store, times, &mut slots, mode)?;
    collect(plan, |s| slots[s as usize].clone())
}

/// Run `plan`'s steps one after another in `slots` (one per slot of the
/// plan, all empty); the fetched values are left in their slots. A loop
/// reuses one set of slots for every iteration.
pub(super) fn run_sequential(
    plan: &Plan,
    feeds: &[&Value],
    store: &VariableStore,
    mut times: Option<&mut Profiler>,
    slots: &mut [Option<Value>],
    mode: Mode,
) -> Result<()> {
    fill_slots(plan, feeds, slots)?;
    for k in 0..plan.steps.len() {
        run_one(plan, k, store, slots, times.as_deref_mut(), mode, None)?;
    }
    Ok(())
}

/// Put `feeds` and the plan's constants in `slots`.
pub(super) fn fill_slots(plan: &Plan, feeds: &[&Value], slots: &mut [Option<Value>]) -> Result<()> {
    if feeds.len() != plan.feeds.len() || slots.len() != plan.num_slots {
        return Err(Error::graph(format!(
            "internal: {} values for a plan of {} inputs",
            feeds.len(),
            plan.feeds.len()
        )));
    }
    for (i, v) in feeds.iter().enumerate() {
        slots[plan.feeds[i].0 as usize] = Some((*v).clone());
    }
    for (s, v) in &plan.constants {
        slots[*s as usize] = Some(v.clone());
    }
    Ok(())
}

/// Run step `k` of `plan` over `slots`: its outputs stored, the slots that
/// die there freed. With `mode.in_place_only`, an optimizer update that cannot
/// overwrite its variable's buffers is an error instead of writing new
/// ones (a graph being captured must keep every variable's address).
/// `reorder` runs the steps in another order than the plan's: the slots
/// that die at this step in that order (nothing is donated then).
pub(super) fn run_one(
    plan: &Plan,
    k: usize,
    store: &VariableStore,
    slots: &mut [Option<Value>],
    mut times: Option<&mut Profiler>,
    mode: Mode,
    reorder: Option<&[Slot]>,
) -> Result<()> {
    let step = &plan.steps[k];
    let started = times.as_ref().map(|_| std::time::Instant::now());
    // An input that dies here may lend its buffer to the output.
    let donate = step.donate.filter(|_| reorder.is_none());
    let donated: Option<Value> = donate.and_then(|pos| slots[step.inputs[pos] as usize].take());
    let outputs = {
        let mut inputs: SmallVec<[&Value; 4]> = SmallVec::new();
        for (pos, &s) in step.inputs.iter().enumerate() {
            let v = if donate == Some(pos) { donated.as_ref() } else { slots[s as usize].as_ref() };
            match v {
                Some(v) => inputs.push(v),
                None => {
                    return Err(
                        Error::graph("internal: an input was freed before use").with_context(|| step.context.clone())
                    )
                }
            }
        }
        let donate = donate.filter(|_| donated.is_some());
        run_step(step, &inputs, store, donate, times.as_deref_mut(), mode)?
    };
    drop(donated);
    for (slot, v) in step.outputs.iter().zip(outputs) {
        if let Some(s) = slot {
            slots[*s as usize] = Some(v);
        }
    }
    for &s in reorder.unwrap_or(&step.frees) {
        slots[s as usize] = None;
    }
    if let (Some(t), Some(started)) = (times, started) {
        t.add(plan, k, started.elapsed());
    }
    Ok(())
}

pub(super) fn collect(plan: &Plan, mut get: impl FnMut(Slot) -> Option<Value>) -> Result<Vec<Value>> {
    plan.fetches.iter().map(|&s| get(s).ok_or_else(|| Error::graph("internal: a fetched value is missing"))).collect()
}

/// Shared state of a parallel run.
struct Run<'p> {
    plan: &'p Plan,
    store: &'p VariableStore,
    mode: Mode,
    slots: Vec<Mutex<Option<Value>>>,
    /// Readers still to run, per slot: the slot is freed when it reaches 0.
    readers: Vec<AtomicU32>,
    pending: Vec<AtomicU32>,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl<'p> Run<'p> {
    /// Run step `i`, then (on this thread) the step it made ready with the
    /// most work behind it, and so on; other ready steps go to the pool.
    fn exec<'s>(&'s self, scope: &rayon::Scope<'s>, mut i: usize) {
        loop {
            if self.failed.load(Ordering::Relaxed) {
                return;
            }
            let step = &self.plan.steps[i];
            let result =
                {
                    let held: SmallVec<[Option<Value>; 4]> =
                        step.inputs.iter().map(|&s| self.slots[s as usize].lock().clone()).collect();
                    let inputs: Option<SmallVec<[&Value; 4]>> = held.iter().map(|v| v.as_ref()).collect();
                    match inputs {
                        Some(inputs) => run_step(step, &inputs, self.store, None, None, self.mode),
                        None => Err(Error::graph("internal: an input was freed before use")
                            .with_context(|| step.context.clone())),
                    }
                };
            let outputs = match result {
                Ok(o) => o,
                Err(e) => {
                    self.failed.store(true, Ordering::Relaxed);
                    self.error.lock().get_or_insert(e);
                    return;
                }
            };
            for (slot, v) in step.outputs.iter().zip(outputs) {
                if let Some(s) = slot {
                    *self.slots[*s as usize].lock() = Some(v);
                }
            }
            // Steps finish in any order here: free a slot when its last reader is done.
            for &s in &step.reads {
                if self.readers[s as usize].fetch_sub(1, Ordering::AcqRel) == 1 && !self.plan.fetched[s as usize] {
                    *self.slots[s as usize].lock() = None;
                }
            }
            let mut next = None;
            for &d in &step.dependents {
                if self.pending[d as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                    if next.is_none() {
                        next = Some(d as usize);
                    } else {
                        let d = d as usize;
                        scope.spawn(move |s| self.exec(s, d));
                    }
                }
            }
            match next {
                Some(n) => i = n,
                None => return,
            }
        }
    }
}

fn execute_parallel(plan: &Plan, feeds: &[&Value], store: &VariableStore, mode: Mode) -> Result<Vec<Value>> {
    if feeds.len() != plan.feeds.len() {
        return Err(Error::graph(format!(
            "internal: {} values for a plan of {} inputs",
            feeds.len(),
            plan.feeds.len()
        )));
    }
    let run = Run {
        plan,
        store,
        mode,
        slots: (0..plan.num_slots).map(|_| Mutex::new(None)).collect(),
        readers: plan.readers.iter().map(|&n| AtomicU32::new(n)).collect(),
        pending: plan.steps.iter().map(|s| AtomicU32::new(s.num_deps)).collect(),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    for (i, v) in feeds.iter().enumerate() {
        *run.slots[plan.feeds[i].0 as usize].lock() = Some((*v).clone());
    }
    for (s, v) in &plan.constants {
        *run.slots[*s as usize].lock() = Some(v.clone());
    }
    let roots: Vec<usize> = plan.steps.iter().enumerate().filter(|(_, s)| s.num_deps == 0).map(|(i, _)| i).collect();
    rayon::in_place_scope(|scope| {
        for &r in &roots {
            let run = &run;
            scope.spawn(move |s| run.exec(s, r));
        }
    });
    if let Some(e) = run.error.lock().take() {
        return Err(e);
    }
    collect(plan, |s| run.slots[s as usize].lock().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ops, DType};

    /// After the first step (whose initial values the graph's constants
    /// share), Adam overwrites the variable in its own buffer, with the
    /// textbook numbers: a constant gradient moves each weight by lr a step.
    #[test]
    fn training_steps_update_variables_in_their_own_buffers() -> Result<()> {
        let g = Graph::new();
        let n = 1 << 16;
        let w = Variable::in_graph(&g, "w", &Tensor::zeros([n], DType::F32)?, true)?;
        let ones = g.constant(Tensor::ones([n], DType::F32)?)?;
        let loss = ops::sum(&ops::mul(&w.read(), &ones)?, crate::Axes::All, false)?;
        let train = crate::nn::Optimizer::adam(0.1).minimize(&loss, &[&w])?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let node = s.graph_variable(&w)?;
        let address = || s.variables.get(node).map(|v| v.storage.host().bytes().as_ptr() as usize);
        s.run_targets(&[&train])?;
        let first = address();
        for _ in 0..3 {
            s.run_targets(&[&train])?;
            assert_eq!(address(), first, "the update moved the variable");
        }
        let v = s.variable_value(&w)?.to_vec::<f32>()?;
        assert!(v.iter().all(|&x| (x + 0.4).abs() < 1e-5), "{}", v[0]);
        Ok(())
    }

    /// A step with a cheap and an expensive dependent lists the expensive one
    /// first (the one a parallel run goes on with), whatever the order of the
    /// fetches; both runs give the right values.
    #[test]
    fn dependents_are_ordered_by_the_work_behind_them() -> Result<()> {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [64, 256])?;
        let a = ops::mul(&x, &x)?;
        let cheap = ops::neg(&a)?;
        let w = g.constant(Tensor::ones([256, 256], DType::F32)?)?;
        let heavy = ops::relu(&ops::matmul(&a, &w)?)?;
        let session = Session::with_options(&g, SessionOptions::unoptimized());
        let feed = Tensor::ones([64, 256], DType::F32)?;
        for cheap_first in [true, false] {
            let fetches = if cheap_first { [&cheap, &heavy] } else { [&heavy, &cheap] };
            let plan = session.plan_for(&fetches, &[(&x, &feed)], &[])?;
            let op = |k: u32| plan.steps[k as usize].context.op.clone();
            let mul = plan.steps.iter().find(|s| s.context.op == "Mul").expect("the Mul step");
            let order: Vec<String> = mul.dependents.iter().map(|&k| op(k)).collect();
            assert_eq!(order, ["MatMul", "Neg"]);
            let out = session.run(&fetches, &[(&x, &feed)])?;
            let (c, h) = if cheap_first { (&out[0], &out[1]) } else { (&out[1], &out[0]) };
            assert!(c.to_vec::<f32>()?.iter().all(|&v| v == -1.0));
            assert!(h.to_vec::<f32>()?.iter().all(|&v| v == 256.0));
        }
        Ok(())
    }
}
