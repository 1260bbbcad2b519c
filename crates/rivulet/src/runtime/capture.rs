//! Session plans replayed as device graphs (CUDA graphs): a training step
//! of a few hundred small kernels is one launch instead of hundreds, so the
//! host's cost per step stops bounding the GPU's.
//!
//! A plan whose work is on one accelerator splits into three parts
//! ([`segment`]): host steps the device part does not wait for (feeds'
//! neighbours, step counters, learning-rate schedules) run first, as
//! usual; the device steps are recorded once, on the plan's second run
//! (the first compiles the kernels), and replayed from then on; host steps
//! that read device results run after. A replay reads and writes fixed
//! addresses, so:
//!
//! - values entering the device part (feeds, the host part's results) are
//!   copied into buffers the graph owns before each replay;
//! - values leaving it (fetches, what the last host steps read) are copied
//!   out of the graph's memory after each replay, so a fetched tensor
//!   never changes under its holder;
//! - variables must stay where they were: optimizer updates and
//!   assignments write into the variable's own buffer, and a replay goes ahead only while every variable the graph touches
//!   is at its recorded address and every one it writes is held by its
//!   cell alone ([`VariableStore::replay_guard`]); otherwise the run goes
//!   step by step and the graph is recorded again later.
//!
//! A random step's kernel reads its stream from a device word that is
//! written before each launch with the step's next count, so each replay
//! draws what a run step by step would. A random op seeded by a tensor (a
//! step counter) reads that tensor on the device like any other input.
//!
//! Plans that cannot be replayed faithfully are never recorded: control
//! flow, collectives, or host steps between device steps. A recording
//! that fails (a kernel that would read back to the host, an in-place
//! update over a shared buffer) changes nothing (an assignment or update
//! over a shared buffer is refused before it queues anything): the run
//! goes on step by step and the plan is not recorded again.
//! `RIVULET_CUDA_GRAPHS=0` or [`enable_graph_capture`] turns recording off.

use super::plan::{Plan, Slot, Stateful};
use super::session::{collect, fill_slots, run_one, Mode};
use super::store::VariableStore;
use crate::backend::{self, Replay};
use crate::error::{Error, Result};
use crate::graph::NodeId;
use crate::op::Meta;
use crate::tensor::layout::Layout;
use crate::tensor::{DType, Device, Scalar, Shape, Value};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// 0: not decided yet (read `RIVULET_CUDA_GRAPHS`), 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether session plans on a GPU are recorded as CUDA graphs and replayed
/// (on by default; `RIVULET_CUDA_GRAPHS=0` turns it off at start-up).
/// Plans recorded before a switch off are not replayed after it.
pub fn enable_graph_capture(enabled: bool) {
    ENABLED.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether recording is on (see [`enable_graph_capture`]).
pub fn graph_capture_enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var("RIVULET_CUDA_GRAPHS")
                .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no"));
            let _ = ENABLED.compare_exchange(0, if off { 2 } else { 1 }, Ordering::Relaxed, Ordering::Relaxed);
            graph_capture_enabled()
        }
        v => v == 1,
    }
}

/// How a plan divides around its device part (see the module documentation).
#[derive(Debug)]
pub(crate) struct Segment {
    pub device: Device,
    /// Host steps run before the device part, in plan order.
    pub before: Vec<usize>,
    /// The device steps, in plan order: what is recorded.
    pub inside: Vec<usize>,
    /// Host steps that read device results, run after it.
    pub after: Vec<usize>,
    /// Slots the device part reads and does not produce.
    pub inputs: Vec<Slot>,
    /// Slots the device part produces that are fetched or read after it.
    pub outputs: Vec<Slot>,
    /// Variables the device part touches, and whether it writes them.
    pub variables: Vec<(NodeId, bool)>,
    /// Per step: the slots whose last reader it is in this order (the
    /// plan's own frees follow the plan's order, which this one changes).
    pub frees: Vec<Vec<Slot>>,
}

/// Split `plan` around its device part, or say why it cannot be replayed.
pub(crate) fn segment(plan: &Plan) -> std::result::Result<Segment, String> {
    let steps = &plan.steps;
    let mut device = None;
    for st in steps {
        if st.device == Device::CPU {
            continue;
        }
        match device {
            None => device = Some(st.device),
            Some(d) if d != st.device => return Err(format!("steps on {d} and {}", st.device)),
            Some(_) => {}
        }
    }
    let Some(device) = device else { return Err("no step runs on an accelerator".to_string()) };
    let name = |k: usize| steps[k].context.node.clone().unwrap_or_else(|| steps[k].context.op.clone());
    for (k, st) in steps.iter().enumerate() {
        if matches!(st.stateful, Stateful::Control { .. }) {
            return Err(format!("control flow ({})", name(k)));
        }
        if st.has_collective() {
            return Err(format!("a collective ({})", name(k)));
        }
    }
    let on_device: Vec<bool> = steps.iter().map(|s| s.device == device).collect();
    // Steps that wait, directly or not, for a device step.
    let mut waits = vec![false; steps.len()];
    // Steps that wait for a host step that waits for the device.
    let mut behind_host = vec![false; steps.len()];
    for k in 0..steps.len() {
        let host_after = !on_device[k] && waits[k];
        if on_device[k] && behind_host[k] {
            return Err(format!("{} on the device waits for host work on device results", name(k)));
        }
        for &d in &steps[k].dependents {
            let d = d as usize;
            waits[d] |= on_device[k] || waits[k];
            behind_host[d] |= host_after || behind_host[k];
        }
    }
    let mut seg = Segment {
        device,
        before: Vec::new(),
        inside: Vec::new(),
        after: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        variables: Vec::new(),
        frees: vec![Vec::new(); steps.len()],
    };
    let mut produced = vec![false; plan.num_slots];
    let mut read_after = vec![false; plan.num_slots];
    for k in 0..steps.len() {
        let st = &steps[k];
        if on_device[k] {
            seg.inside.push(k);
            for &s in &st.inputs {
                if !produced[s as usize] && !seg.inputs.contains(&s) {
                    seg.inputs.push(s);
                }
            }
            for s in st.outputs.iter().flatten() {
                produced[*s as usize] = true;
            }
            let touched: Vec<(NodeId, bool)> = match &st.stateful {
                Stateful::Read { var, .. } => vec![(*var, false)],
                Stateful::Update { vars, .. } => vars.iter().map(|(v, _)| (*v, true)).collect(),
                Stateful::Assign { var, .. } => vec![(*var, true)],
                _ => Vec::new(),
            };
            for (var, writes) in touched {
                match seg.variables.iter_mut().find(|(v, _)| *v == var) {
                    Some(seen) => seen.1 |= writes,
                    None => seg.variables.push((var, writes)),
                }
            }
        } else if waits[k] {
            seg.after.push(k);
            for &s in &st.inputs {
                read_after[s as usize] = true;
            }
        } else {
            seg.before.push(k);
        }
    }
    seg.outputs = (0..plan.num_slots as Slot)
        .filter(|&s| produced[s as usize] && (read_after[s as usize] || plan.fetched[s as usize]))
        .collect();
    let mut last_reader: Vec<Option<usize>> = vec![None; plan.num_slots];
    for &k in seg.before.iter().chain(&seg.inside).chain(&seg.after) {
        for &s in &steps[k].inputs {
            last_reader[s as usize] = Some(k);
        }
    }
    for (s, last) in last_reader.into_iter().enumerate() {
        if let (Some(k), false) = (last, plan.fetched[s]) {
            seg.frees[k].push(s as Slot);
        }
    }
    Ok(seg)
}

/// A plan's recording state.
pub(crate) struct Capture {
    segment: std::result::Result<Segment, String>,
    phase: Mutex<Phase>,
}

impl Default for Capture {
    fn default() -> Capture {
        Capture { segment: Err("not split yet".to_string()), phase: Mutex::default() }
    }
}

#[derive(Default)]
enum Phase {
    /// Runs so far without a graph (the first compiles kernels and makes
    /// the variables' buffers their own), and how many graphs were given up.
    #[default]
    Fresh,
    Warm {
        dropped: u32,
    },
    /// One thread is recording; the others run step by step meanwhile.
    Recording,
    Ready {
        graph: Arc<Graph>,
        dropped: u32,
    },
    /// Never again, and why.
    Off(String),
}

/// Whether a session request runs as a replayed device graph: from
/// [`crate::Session::graph_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphStatus {
    /// The request is not recorded, and why (its steps are all on the
    /// CPU, or do something a replay could not repeat faithfully).
    NotRecorded(String),
    /// Not recorded yet: the first run compiles the kernels, the next one
    /// records.
    Warming,
    /// Runs replay a recorded graph.
    Replaying,
    /// Recording is turned off ([`enable_graph_capture`], or the session's
    /// `SessionOptions::device_graphs`).
    Disabled,
}

impl Capture {
    /// The state of a freshly compiled `plan`: its split, or why it has none.
    pub(crate) fn for_plan(plan: &Plan) -> Capture {
        Capture { segment: segment(plan), phase: Mutex::default() }
    }

    /// Whether the plan has a device part to record.
    pub(crate) fn may_record(&self) -> bool {
        self.segment.is_ok()
    }

    /// Where the plan stands (see [`GraphStatus`]).
    pub(crate) fn status(&self) -> GraphStatus {
        if !graph_capture_enabled() {
            return GraphStatus::Disabled;
        }
        if let Err(why) = &self.segment {
            return GraphStatus::NotRecorded(why.clone());
        }
        match &*self.phase.lock() {
            Phase::Fresh | Phase::Warm { .. } | Phase::Recording => GraphStatus::Warming,
            Phase::Ready { .. } => GraphStatus::Replaying,
            Phase::Off(why) => GraphStatus::NotRecorded(why.clone()),
        }
    }
}

/// Graphs given up (variables moved, input shapes changed, a recording
/// refused over a shared buffer) before a plan stops being recorded.
const MAX_DROPPED: u32 = 3;

/// A recorded device part. Fields drop in order: the graph's inputs and
/// outputs go back to its memory before the graph (and its pool) goes.
struct Graph {
    /// Buffers the device part reads its inputs from: per input slot, the
    /// buffer and whether it is refilled before each replay (constants are not).
    inputs: Vec<(Slot, Value, bool)>,
    outputs: Vec<(Slot, Output)>,
    /// Variables as recorded: where each value was and how it was laid
    /// out, and whether the graph writes it.
    variables: Vec<(NodeId, Recorded, bool)>,
    /// TensorFloat-32 as it was when the products were recorded.
    tf32: bool,
    /// The random steps' streams, written before each launch.
    random_streams: RandomStreams,
    /// One replay at a time: they share the input and output buffers. It
    /// guards what each input buffer was last filled from (held, so it
    /// cannot change): a loop's captures and invariants are copied once.
    lock: Mutex<Vec<Option<Value>>>,
    replay: Box<dyn Replay>,
}

/// The random steps' counters, and the device words (one i64 each, in
/// order) their kernels read the stream from.
struct RandomStreams {
    counters: Vec<Arc<AtomicU64>>,
    words: Value,
}

/// A variable's value as a graph recorded it.
#[derive(Clone, PartialEq)]
struct Recorded {
    address: u64,
    dtype: DType,
    layout: Layout,
}

impl Recorded {
    fn of(v: &Value) -> Option<Recorded> {
        Some(Recorded { address: v.device_address()?, dtype: v.dtype, layout: v.layout.clone() })
    }
}

/// Where a value leaving the device part is copied from after a replay.
enum Output {
    /// Memory the graph owns (or a constant's).
    Held(Value),
    /// A view of a variable's buffer (the graph holds no reference to it,
    /// which would stop the in-place updates).
    Variable { var: NodeId, layout: Layout, dtype: DType },
}

/// Why a graph was not made: for good, or for this run only.
enum NotRecorded {
    Never(String),
    NotNow(String),
}

/// Run `plan` with a recorded graph where it can have one: `None` when the
/// plan is not for recording (the caller runs it as usual).
pub(super) fn run(plan: &Plan, feeds: &[&Value], store: &VariableStore) -> Result<Option<Vec<Value>>> {
    let Ok(seg) = &plan.capture.segment else { return Ok(None) };
    if !graph_capture_enabled() {
        return Ok(None);
    }
    enum Action {
        Record(u32),
        Replay(Arc<Graph>, u32),
    }
    let action = {
        let mut phase = plan.capture.phase.lock();
        match &*phase {
            Phase::Fresh => {
                *phase = Phase::Warm { dropped: 0 };
                return Ok(None);
            }
            Phase::Warm { dropped } => {
                let dropped = *dropped;
                *phase = Phase::Recording;
                Action::Record(dropped)
            }
            Phase::Recording | Phase::Off(_) => return Ok(None),
            Phase::Ready { graph, dropped } => Action::Replay(graph.clone(), *dropped),
        }
    };
    // Whatever happens below (an error, a panic), a recording phase ends.
    let mut phase = PhaseGuard { plan, next: None, only_over: None };
    if let Action::Record(dropped) = action {
        phase.next = Some(Phase::Warm { dropped });
    }
    // No step here is control flow (the split refuses it): no mode to pass down.
    let step = |k: usize, slots: &mut [Option<Value>]| {
        run_one(plan, k, store, slots, None, Mode::default(), Some(&seg.frees[k]))
    };
    let mut slots: Vec<Option<Value>> = vec![None; plan.num_slots];
    fill_slots(plan, feeds, &mut slots)?;
    for &k in &seg.before {
        step(k, &mut slots)?;
    }
    let given_up = |dropped: u32, why: String| match dropped + 1 {
        n if n >= MAX_DROPPED => Phase::Off(why),
        n => Phase::Warm { dropped: n },
    };
    let replayed = match action {
        Action::Record(dropped) => match record(plan, seg, store, &mut slots)? {
            Ok(graph) => {
                let graph = Arc::new(graph);
                phase.next = Some(Phase::Ready { graph: graph.clone(), dropped });
                launch(&graph, seg, store, &mut slots, false)?
            }
            Err(NotRecorded::Never(why)) => {
                log::debug!("plan not recorded as a device graph: {why}");
                phase.next = Some(Phase::Off(why));
                false
            }
            Err(NotRecorded::NotNow(why)) => {
                log::debug!("plan not recorded as a device graph this time: {why}");
                phase.next = Some(given_up(dropped, why));
                false
            }
        },
        Action::Replay(graph, dropped) => {
            let done = launch(&graph, seg, store, &mut slots, true)?;
            if !done {
                // Variables moved, inputs changed shape, or TensorFloat-32
                // was switched: record again, a few times (unless another
                // run has moved the phase on meanwhile).
                phase.next = Some(given_up(dropped, "its variables or inputs keep changing".to_string()));
                phase.only_over = Some(graph);
            }
            done
        }
    };
    if !replayed {
        for &k in &seg.inside {
            step(k, &mut slots)?;
        }
    }
    for &k in &seg.after {
        step(k, &mut slots)?;
    }
    collect(plan, |s| slots[s as usize].clone()).map(Some)
}

/// Sets a plan's next phase when dropped, if one was decided; with
/// `only_over`, only if the phase still replays that graph.
struct PhaseGuard<'p> {
    plan: &'p Plan,
    next: Option<Phase>,
    only_over: Option<Arc<Graph>>,
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(next) = self.next.take() {
            let mut phase = self.plan.capture.phase.lock();
            let current = match (&self.only_over, &*phase) {
                (None, _) => true,
                (Some(ours), Phase::Ready { graph, .. }) => Arc::ptr_eq(ours, graph),
                (Some(_), _) => false,
            };
            if current {
                *phase = next;
            }
        }
    }
}

/// Ends a capture when dropped, if nothing else has (a panic while
/// recording would otherwise leave the thread capturing: its later
/// launches recorded, never run).
struct Capturing<'b> {
    backend: &'b dyn backend::Backend,
    open: bool,
}

impl Capturing<'_> {
    fn end(mut self) -> Result<Box<dyn Replay>> {
        self.open = false;
        self.backend.end_capture()
    }
}

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.backend.end_capture();
        }
    }
}

/// A fresh contiguous copy of `v` on `device`.
fn fresh_copy(v: &Value, device: Device) -> Result<Value> {
    let on = backend::transfer(v, device)?;
    let meta = Meta::new(on.dtype, on.shape().clone());
    backend::backend(device)?.assemble(&meta, Scalar::I64(0), &[(Layout::contiguous(on.shape().clone()), &on)])
}

/// Record the device part of a run whose host part has run: the graph, or
/// why there is none (the slots are as before then, for a run step by step).
fn record(
    plan: &Plan,
    seg: &Segment,
    store: &VariableStore,
    slots: &mut [Option<Value>],
) -> Result<std::result::Result<Graph, NotRecorded>> {
    let backend = backend::backend(seg.device)?;
    let missing = || Error::graph("internal: a value the device graph reads is missing");
    // Inputs: buffers of the graph's own, holding this run's values.
    let mut inputs = Vec::with_capacity(seg.inputs.len());
    let mut originals = Vec::with_capacity(seg.inputs.len());
    for &s in &seg.inputs {
        let v = slots[s as usize].clone().ok_or_else(missing)?;
        // A constant never changes: copied to the device once, if it is not there.
        let constant = plan.constants.iter().any(|(c, _)| *c == s);
        let held = if constant && v.device() == seg.device { v.clone() } else { fresh_copy(&v, seg.device)? };
        slots[s as usize] = Some(held.clone());
        inputs.push((s, held, !constant));
        originals.push((s, v));
    }
    let restore = |slots: &mut [Option<Value>], why: NotRecorded| {
        for &k in &seg.inside {
            for s in plan.steps[k].outputs.iter().flatten() {
                slots[*s as usize] = None;
            }
        }
        for (s, v) in &originals {
            slots[*s as usize] = Some(v.clone());
        }
        Ok(Err(why))
    };
    // Where the variables are: the graph bakes these addresses in.
    let recorded = |var: NodeId| store.get(var).as_ref().and_then(Recorded::of);
    let before: Vec<Option<Recorded>> = seg.variables.iter().map(|&(var, _)| recorded(var)).collect();
    let tf32 = crate::backend::cuda::tensor_float_32_execution_enabled();
    // A device word per random step for its stream, filled before the
    // recording starts (a fill recorded into the graph would run after the
    // words are written).
    let random: Vec<(usize, Arc<AtomicU64>)> =
        seg.inside.iter().filter_map(|&k| Some((k, plan.steps[k].random_stream.clone()?))).collect();
    let words = backend.assemble(&Meta::new(DType::I64, Shape::new(&[random.len()])), Scalar::I64(0), &[])?;
    let mut stream_at = vec![None; plan.steps.len()];
    for (j, (k, _)) in random.iter().enumerate() {
        stream_at[*k] = words.device_address().map(|a| a + 8 * j as u64);
    }
    if !backend.begin_capture()? {
        return restore(slots, NotRecorded::Never(format!("{} records no graphs", seg.device.short_name())));
    }
    let capturing = Capturing { backend, open: true };
    if !random.is_empty() && words.device_address().is_none() {
        drop(capturing);
        return restore(slots, NotRecorded::Never("the random streams' words are not in device memory".to_string()));
    }
    let random_streams = RandomStreams { counters: random.into_iter().map(|(_, c)| c).collect(), words };
    let mut failed = None;
    for &k in &seg.inside {
        let mode = Mode { in_place_only: true, device_graphs: false, random_stream_at: stream_at[k] };
        if let Err(e) = run_one(plan, k, store, slots, None, mode, Some(&seg.frees[k])) {
            failed = Some(e);
            break;
        }
    }
    let ended = capturing.end();
    let replay = match (failed, ended) {
        // A shared buffer (a variable value held elsewhere) may be let go
        // by the next run; anything else a kernel refused will not change.
        (Some(e), _) | (None, Err(e)) if e.kind() == crate::error::ErrorKind::FailedPrecondition => {
            return restore(slots, NotRecorded::NotNow(e.message().to_string()))
        }
        (Some(e), _) | (None, Err(e)) => return restore(slots, NotRecorded::Never(e.message().to_string())),
        (None, Ok(r)) => r,
    };
    // The variables' buffers, where the replays will find them (a run on
    // another thread may have moved one meanwhile: then the graph would
    // write where the variable no longer is).
    let mut variables = Vec::with_capacity(seg.variables.len());
    let mut current = Vec::with_capacity(seg.variables.len());
    for (&(var, writes), before) in seg.variables.iter().zip(before) {
        let Some(v) = store.get(var) else {
            return restore(slots, NotRecorded::NotNow("a variable lost its value".to_string()));
        };
        let (Some(now), Some(before)) = (Recorded::of(&v), before) else {
            return restore(
                slots,
                NotRecorded::Never(format!("a variable is not in {}'s memory", seg.device.short_name())),
            );
        };
        if now != before {
            return restore(slots, NotRecorded::NotNow("a variable moved while the graph was recorded".to_string()));
        }
        variables.push((var, now, writes));
        current.push((var, v));
    }
    let mut outputs = Vec::with_capacity(seg.outputs.len());
    for &s in &seg.outputs {
        let v = slots[s as usize].clone().ok_or_else(missing)?;
        let output = match current.iter().find(|(_, c)| Arc::ptr_eq(&c.storage, &v.storage)) {
            Some((var, _)) => Output::Variable { var: *var, layout: v.layout.clone(), dtype: v.dtype },
            None => Output::Held(v),
        };
        outputs.push((s, output));
    }
    drop(current);
    // What the steps left in the slots is the graph's memory now; the
    // slots get this run's values back (the inputs already hold them).
    for &k in &seg.inside {
        for s in plan.steps[k].outputs.iter().flatten() {
            slots[*s as usize] = None;
        }
    }
    let mut filled = vec![None; inputs.len()];
    for (k, (s, v)) in originals.into_iter().enumerate() {
        filled[k] = Some(v.clone());
        slots[s as usize] = Some(v);
    }
    Ok(Ok(Graph { inputs, outputs, variables, tf32, random_streams, lock: Mutex::new(filled), replay }))
}

/// Replay `graph` for this run: refill its inputs from the slots (unless
/// they hold this run's values already), launch it, copy its outputs into
/// the slots. `false` when the variables, the inputs' types or the
/// TensorFloat-32 switch are not what was recorded: nothing ran, and the
/// caller runs step by step.
fn launch(
    graph: &Graph,
    seg: &Segment,
    store: &VariableStore,
    slots: &mut [Option<Value>],
    refill: bool,
) -> Result<bool> {
    let backend = backend::backend(seg.device)?;
    let mut filled = graph.lock.lock();
    if graph.tf32 != crate::backend::cuda::tensor_float_32_execution_enabled() {
        return Ok(false);
    }
    for (s, held, _) in &graph.inputs {
        match &slots[*s as usize] {
            Some(v) if v.dtype == held.dtype && v.shape() == held.shape() => {}
            _ => return Ok(false),
        }
    }
    // The inputs are the graph's own buffers: refilled under its lock only
    // (a host copy may wait for the device; the variables stay readable).
    if refill {
        for (k, (s, held, refilled)) in graph.inputs.iter().enumerate() {
            let (true, Some(v)) = (*refilled, &slots[*s as usize]) else { continue };
            let same = |last: &Value| Arc::ptr_eq(&last.storage, &v.storage) && last.layout == v.layout;
            if filled[k].as_ref().is_some_and(same) {
                continue;
            }
            filled[k] = None;
            backend.copy_into(held, v)?;
            filled[k] = Some(v.clone());
        }
    }
    let copy = |source: &Value| -> Result<Value> {
        let shape: Shape = source.shape().clone();
        let meta = Meta::new(source.dtype, shape.clone());
        backend.assemble(&meta, Scalar::I64(0), &[(Layout::contiguous(shape), source)])
    };
    let vars: Vec<(NodeId, bool)> = graph.variables.iter().map(|(v, _, w)| (*v, *w)).collect();
    let fits = |var: NodeId, value: &Value| {
        graph.variables.iter().any(|(v, r, _)| *v == var && Recorded::of(value).as_ref() == Some(r))
    };
    // Under the variables' locks: the launch, and the copies of variables
    // fetched (before anything else can change them).
    let ran = store.replay_guard(&vars, &fits, |variable| -> Result<Vec<(Slot, Value)>> {
        // This run's stream for each random step, as a run step by step
        // would draw it: one copy for all.
        let streams = &graph.random_streams;
        if !streams.counters.is_empty() {
            let bytes: Vec<u8> =
                streams.counters.iter().flat_map(|c| c.fetch_add(1, Ordering::Relaxed).to_le_bytes()).collect();
            backend
                .copy_into(&streams.words, &Value::from_le_bytes(DType::I64, streams.words.shape().clone(), &bytes)?)?;
        }
        graph.replay.launch()?;
        let mut copies = Vec::new();
        for (s, output) in &graph.outputs {
            if let Output::Variable { var, layout, dtype } = output {
                match variable(*var) {
                    Some(v) if v.dtype == *dtype => copies.push((*s, copy(&v.view(layout.clone()))?)),
                    _ => return Err(Error::graph("internal: a variable of the device graph is missing")),
                }
            }
        }
        Ok(copies)
    });
    let Some(copies) = ran else { return Ok(false) };
    for (s, v) in copies? {
        slots[s as usize] = Some(v);
    }
    for (s, output) in &graph.outputs {
        if let Output::Held(v) = output {
            slots[*s as usize] = Some(copy(v)?);
        }
    }
    graph.replay.check()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Graph, Operation, Tensor};
    use crate::op::Op;
    use crate::runtime::{Session, Variable};
    use crate::{ops, Axes};

    const REF: &str = "/reference:0";

    /// A linear model trained with Adam, its products on `device` (its step
    /// counter on the CPU, as integer scalars are): the graph, the loss, the
    /// feeds, the train op.
    fn linear(g: &Graph, device: &str) -> Result<(Tensor, Tensor, Tensor, Operation)> {
        crate::device(device, || {
            let x = g.placeholder("x", DType::F32, [8, 3])?;
            let y = g.placeholder("y", DType::F32, [8, 1])?;
            let w0 = Tensor::from_vec(vec![0.1f32, -0.2, 0.3], [3, 1])?;
            let w = Variable::in_graph(g, "w", &w0, true)?;
            let err = ops::sub(&ops::matmul(&x, &w.read())?, &y)?;
            let loss = ops::mean(&ops::mul(&err, &err)?, Axes::All, false)?;
            let train = crate::nn::Optimizer::adam(0.1).minimize(&loss, &[&w])?;
            Ok((loss, x, y, train))
        })?
    }

    fn batch() -> Result<(Tensor, Tensor)> {
        let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4).collect();
        let y: Vec<f32> = (0..8).map(|i| 0.5 - (i as f32) / 8.0).collect();
        Ok((Tensor::from_vec(x, [8, 3])?, Tensor::from_vec(y, [8, 1])?))
    }

    #[test]
    fn a_training_step_splits_into_host_prologue_and_device_part() -> Result<()> {
        let g = Graph::new();
        let (loss, x, y, train) = linear(&g, REF)?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let (xv, yv) = batch()?;
        let plan = s.plan_for(&[&loss], &[(&x, &xv), (&y, &yv)], &[&train])?;
        let seg = segment(&plan).map_err(Error::invalid)?;
        assert_eq!(seg.device, Device::REFERENCE);
        assert!(!seg.inside.is_empty());
        assert!(seg.inside.iter().all(|&k| plan.steps[k].device == Device::REFERENCE));
        assert!(seg.before.iter().chain(&seg.after).all(|&k| plan.steps[k].device == Device::CPU));
        // Adam's step counter lives in the scope's device, and is counted there.
        let counts = |k: &usize| matches!(plan.steps[*k].stateful, Stateful::Assign { .. });
        assert!(seg.inside.iter().any(counts), "the step counter is counted on the device");
        assert!(seg.after.is_empty(), "nothing waits on the host for the device");
        // Both feeds go in; the loss comes out.
        for (slot, _, _) in &plan.feeds {
            assert!(seg.inputs.contains(slot), "feed slot {slot} is an input");
        }
        assert_eq!(seg.outputs, plan.fetches);
        // The weights, Adam's two slots and the counter are written; nothing else touched.
        assert_eq!(seg.variables.len(), 4, "{:?}", seg.variables);
        assert!(seg.variables.iter().all(|&(_, writes)| writes));
        // Inputs are not produced inside, outputs are.
        let produced: Vec<Slot> =
            seg.inside.iter().flat_map(|&k| plan.steps[k].outputs.iter().flatten().copied()).collect();
        assert!(seg.inputs.iter().all(|s| !produced.contains(s)));
        assert!(seg.outputs.iter().all(|s| produced.contains(s)));
        Ok(())
    }

    /// The reference device records no graphs: the plan falls back to runs
    /// step by step through the same split, with the CPU build's numbers.
    #[test]
    fn a_device_that_records_nothing_runs_the_split_plan_step_by_step() -> Result<()> {
        let (xv, yv) = batch()?;
        let mut losses = Vec::new();
        let mut statuses = Vec::new();
        for device in [REF, "/cpu:0"] {
            let g = Graph::new();
            let (loss, x, y, train) = linear(&g, device)?;
            let s = Session::new(&g);
            s.run_targets(&[&g.global_variables_initializer()?])?;
            let mut run = Vec::new();
            for _ in 0..4 {
                let out = s.run_with_targets(&[&loss], &[(&x, &xv), (&y, &yv)], &[&train])?;
                run.push(out[0].to_scalar::<f32>()?);
                statuses.push(s.graph_status(&[&loss], &[&x, &y], &[&train])?);
            }
            losses.push(run);
        }
        if graph_capture_enabled() {
            assert_eq!(statuses[0], GraphStatus::Warming, "the first run only warms up");
            assert_eq!(statuses[1], GraphStatus::NotRecorded("/reference:0 records no graphs".to_string()));
            assert_eq!(statuses[3], statuses[1], "and is not tried again");
            assert_eq!(statuses[4], GraphStatus::NotRecorded("no step runs on an accelerator".to_string()));
        }
        for (a, b) in losses[0].iter().zip(&losses[1]) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{:?} vs {:?}", losses[0], losses[1]);
        }
        assert!(losses[0][3] < losses[0][0], "it trains: {:?}", losses[0]);
        Ok(())
    }

    /// Running host steps first and device steps next changes which step
    /// reads a slot last: a host step that read a feed last in the plan's
    /// order, or a device step that read a value last that a host step
    /// reads later in the split order, must not free it early.
    #[test]
    fn the_split_order_frees_slots_by_its_own_last_readers() -> Result<()> {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [4])?;
        let on_cpu = |f: &dyn Fn() -> Result<Tensor>| crate::device("/cpu:0", f)?;
        let (y, w) = crate::device(REF, || -> Result<(Tensor, Tensor)> {
            let y = ops::sigmoid(&ops::mul(&x, 3.0)?)?;
            Ok((y.clone(), ops::mul(&y, 2.0)?))
        })??;
        // Built after the device part's readers of x, and before its last reader of y.
        let total = on_cpu(&|| ops::sum(&x, Axes::All, false))?;
        let after = on_cpu(&|| ops::tanh(&y))?;
        let w = crate::device(REF, || ops::add(&w, &y))??;
        let s = Session::new(&g);
        let xv = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.0], [4])?;
        let plan = s.plan_for(&[&total, &after, &w], &[(&x, &xv)], &[])?;
        let seg = segment(&plan).map_err(Error::invalid)?;
        assert!(!seg.before.is_empty() && !seg.after.is_empty(), "{seg:?}");
        let sig = |v: f32| 1.0 / (1.0 + (-3.0 * v).exp());
        for run in 0..3 {
            let out = s.run(&[&total, &after, &w], &[(&x, &xv)])?;
            assert_eq!(out[0].to_scalar::<f32>()?, 1.5, "run {run}");
            let (a, b) = (out[1].to_vec::<f32>()?, out[2].to_vec::<f32>()?);
            for (k, v) in [0.5f32, -1.0, 2.0, 0.0].into_iter().enumerate() {
                assert!((a[k] - sig(v).tanh()).abs() < 1e-6, "run {run}: {a:?}");
                assert!((b[k] - 3.0 * sig(v)).abs() < 1e-6, "run {run}: {b:?}");
            }
        }
        Ok(())
    }

    /// A loop's iterations go through the same split (the counter and the
    /// condition on the host, the update on the device); on a device that
    /// records nothing they run step by step, with the CPU's numbers.
    #[test]
    fn loop_iterations_run_through_the_split() -> Result<()> {
        let mut runs = Vec::new();
        for device in [REF, "/cpu:0"] {
            let g = Graph::new();
            let (x, out) = crate::device(device, || -> Result<(Tensor, Tensor)> {
                let x = g.placeholder("x", DType::F32, [5])?;
                let (_, y) = crate::ops::while_loop(
                    |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(6i32)),
                    |(i, y): &(Tensor, Tensor)| {
                        Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(&ops::mul(y, 0.5)?, 1.0)?))
                    },
                    (Tensor::scalar(0i32), x.clone()),
                    &crate::ops::WhileOptions::default(),
                )?;
                Ok((x, y))
            })??;
            let s = Session::new(&g);
            let xv = Tensor::from_vec(vec![0.0f32, 1.0, -2.0, 8.0, 3.5], [5])?;
            let a = s.run(&[&out], &[(&x, &xv)])?[0].to_vec::<f32>()?;
            let b = s.run(&[&out], &[(&x, &xv)])?[0].to_vec::<f32>()?;
            assert_eq!(a, b, "{device}: the second call agrees");
            runs.push(a);
        }
        // y -> y/2 + 1 six times: 2 + (y0 - 2) / 64.
        for (k, y0) in [0.0f32, 1.0, -2.0, 8.0, 3.5].into_iter().enumerate() {
            let want = 2.0 + (y0 - 2.0) / 64.0;
            assert!((runs[0][k] - want).abs() < 1e-6 && runs[0][k] == runs[1][k], "{runs:?}");
        }
        Ok(())
    }

    /// Random steps on the device join the recorded part (their streams
    /// read on the device); run through the split, each run draws the next
    /// stream, as on the CPU.
    #[test]
    fn random_steps_on_the_device_split_and_draw_a_new_stream_each_run() -> Result<()> {
        let mut runs = Vec::new();
        for device in ["/cpu:0", REF] {
            let g = Graph::new();
            let (r, x_in) = crate::device(device, || -> Result<(Tensor, Tensor)> {
                let x = g.placeholder("x", DType::F32, [4, 4])?;
                Ok((ops::relu(&ops::dropout(&ops::exp(&x)?, 0.5, Some(3))?)?, x))
            })??;
            let s = Session::new(&g);
            let x = Tensor::from_vec((0..16).map(|i| i as f32 / 8.0 - 1.0).collect::<Vec<_>>(), [4, 4])?;
            if device == REF {
                let plan = s.plan_for(&[&r], &[(&x_in, &x)], &[])?;
                let seg = segment(&plan).map_err(Error::graph)?;
                let random = plan.steps.iter().position(|st| st.random_stream.is_some()).expect("a random step");
                assert!(seg.inside.contains(&random), "the random step is recorded with the rest");
            }
            let mut masks = Vec::new();
            for _ in 0..4 {
                masks.push(s.run(&[&r], &[(&x_in, &x)])?[0].to_vec::<f32>()?);
            }
            assert!(masks.windows(2).all(|w| w[0] != w[1]), "{device}: every run draws anew");
            runs.push(masks);
        }
        assert_eq!(runs[0], runs[1], "the reference device draws the CPU's numbers run by run");
        Ok(())
    }

    /// A random step seeded by a tensor (Dropout's step counter) is
    /// recorded with the rest: it reads the offset like any other input,
    /// so each run draws from the counter's value then.
    #[test]
    fn random_steps_seeded_by_a_tensor_are_recorded_and_follow_it() -> Result<()> {
        let mut runs = Vec::new();
        for device in ["/cpu:0", REF] {
            let g = Graph::new();
            let (r, bump, x_in) = crate::device(device, || -> Result<(Tensor, Tensor, Tensor)> {
                let x = g.placeholder("x", DType::F32, [4, 4])?;
                let counter = Variable::in_graph(&g, "counter", &Tensor::scalar(0x2545_F491_4F6C_DD1Di64), false)?;
                let offset = ops::add(&counter.read(), &g.constant(Tensor::scalar(-7i64))?)?;
                let r = ops::random_uniform_like_offset(&ops::exp(&x)?, 0.0, 1.0, 5, &offset)?;
                Ok((r, counter.assign_add(&Tensor::scalar(1i64))?, x))
            })??;
            let s = Session::new(&g);
            s.run_targets(&[&g.global_variables_initializer()?])?;
            let x = Tensor::from_vec((0..16).map(|i| i as f32 / 8.0 - 1.0).collect::<Vec<_>>(), [4, 4])?;
            if device == REF {
                let plan = s.plan_for(&[&r], &[(&x_in, &x)], &[])?;
                let seg = segment(&plan).map_err(Error::graph)?;
                let random = plan.steps.iter().position(|st| matches!(st.op, Op::RandomLike { .. })).expect("a draw");
                assert!(seg.inside.contains(&random), "the seeded draw is recorded with the rest");
            }
            let mut masks = Vec::new();
            for _ in 0..3 {
                // Twice per counter value: the same numbers; then the next value.
                let a = s.run(&[&r], &[(&x_in, &x)])?[0].to_vec::<f32>()?;
                assert_eq!(a, s.run(&[&r], &[(&x_in, &x)])?[0].to_vec::<f32>()?, "{device}: the same offset");
                masks.push(a);
                s.run(&[&bump], &[])?;
            }
            assert!(masks.windows(2).all(|w| w[0] != w[1]), "{device}: a new offset draws anew");
            runs.push(masks);
        }
        assert_eq!(runs[0], runs[1], "the reference device draws the CPU's numbers");
        Ok(())
    }

    /// The `Dropout` layer's draw in a graph waits for no op on integer
    /// scalars: those run on the host when placed on a GPU, which would
    /// put host work on device results before a device step, and the
    /// training step could not be recorded.
    #[test]
    fn the_dropout_layers_offset_is_computed_on_the_states_device() -> Result<()> {
        use crate::nn::layers::{Dropout, Layer};
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [4, 8])?;
        Dropout::new(0.5)?.call(&x, true)?;
        let nodes = g.nodes();
        let draw = nodes.iter().position(|n| matches!(n.op, Op::RandomLike { .. })).expect("a draw");
        let mut ancestors = std::collections::BTreeSet::new();
        let mut stack = vec![draw];
        while let Some(i) = stack.pop() {
            for e in &nodes[i].inputs {
                if ancestors.insert(e.node) {
                    stack.push(e.node);
                }
            }
        }
        assert!(ancestors.len() > 3, "the draw reads the state through its offset");
        for &i in &ancestors {
            let n = &nodes[i];
            let inputs: Vec<Meta> = n.inputs.iter().map(|e| nodes[e.node].outputs[e.index].clone()).collect();
            // Constants and placeholders read nothing from the device.
            if !inputs.is_empty() {
                let host = backend::host_scalars(&inputs, &n.outputs);
                assert!(!host, "{} ({}) runs on the host between the state and the draw", n.name, n.op.type_name());
            }
        }
        Ok(())
    }

    #[test]
    fn plans_a_replay_would_not_repeat_faithfully_are_never_recorded() -> Result<()> {
        let why = |g: &Graph, fetch: &Tensor| -> Result<String> {
            let s = Session::new(g);
            s.run_targets(&[&g.global_variables_initializer()?])?;
            let plan = s.plan_for(&[fetch], &[], &[])?;
            Ok(segment(&plan).err().unwrap_or_default())
        };
        // A host step between device steps.
        let g = Graph::new();
        let out = crate::device(REF, || -> Result<Tensor> {
            let a = Variable::in_graph(&g, "a", &Tensor::from_vec(vec![2.0f32, 0.5, 0.5, 3.0], [2, 2])?, true)?;
            let a = a.read();
            let spd = ops::matmul(&a, &a)?;
            let l = crate::device("/cpu:0", || ops::tanh(&spd))??;
            ops::exp(&ops::matmul(&l, &a)?)
        })??;
        assert!(why(&g, &out)?.contains("waits for host work on device results"), "{}", why(&g, &out)?);
        // All on the CPU.
        let g = Graph::new();
        let c = ops::exp(&g.constant(Tensor::ones([3], DType::F32)?)?)?;
        assert_eq!(why(&g, &c)?, "no step runs on an accelerator");
        Ok(())
    }
}
