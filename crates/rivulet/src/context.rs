//! The runtime context of a thread (TensorFlow's eager context): one object
//! holding every scope that changes what an op call does.
//!
//! - device scopes: where ops created on this thread run or are placed;
//! - default graphs: ops on values add nodes there instead of running
//!   (`Graph::as_default`), with eager scopes (`None`) inside them;
//! - gradient tapes: what eager ops are recorded on;
//! - traces: the `function` being traced, which captures eager variables;
//! - bodies: the control-flow branches and loop bodies being built.
//!
//! Only the op-calling layer (`crate::ops`, variables, `function`) reads it.
//! Graphs, passes, plans and kernels never do: a rayon job runs with what
//! its op was given, not with a scope of the thread that happens to run it.
//! The context is per thread; a rayon worker that steals a job while it has
//! a scope open lends that scope to ops the job creates, so open scopes
//! around op calls, not around parallel loops.

use crate::backend;
use crate::error::Result;
use crate::graph::{Edge, Graph, Operation, Repr, Tensor};
use crate::op::Op;
use crate::runtime::Variable;
use crate::tensor::Device;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// The scopes open on one thread, innermost last.
struct Context {
    /// Open device scopes.
    devices: RefCell<Vec<Device>>,
    /// The innermost device scope (read by every op: a `Cell`, no borrow).
    device: Cell<Option<Device>>,
    /// Default graphs; `None` marks an eager scope.
    graphs: RefCell<Vec<Option<Graph>>>,
    /// Whether `graphs` ends in a graph, not an eager scope (every op reads it).
    graph_open: Cell<bool>,
    /// Recording tapes.
    tapes: RefCell<Vec<Rc<TapeState>>>,
    /// Depth of `untracked` sections.
    untracked: Cell<usize>,
    /// Traces in progress.
    traces: RefCell<Vec<Rc<TraceState>>>,
    /// Control-flow bodies being built.
    bodies: RefCell<Vec<Rc<BodyState>>>,
}

thread_local! {
    static CONTEXT: Context = const {
        Context {
            devices: RefCell::new(Vec::new()),
            device: Cell::new(None),
            graphs: RefCell::new(Vec::new()),
            graph_open: Cell::new(false),
            tapes: RefCell::new(Vec::new()),
            untracked: Cell::new(0),
            traces: RefCell::new(Vec::new()),
            bodies: RefCell::new(Vec::new()),
        }
    };
}

// ---------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------

/// The device of the innermost scope on this thread, if any.
#[inline]
pub(crate) fn current_device() -> Option<Device> {
    CONTEXT.with(|c| c.device.get())
}

/// Every device found on this machine, fastest first (the CPU, then the
/// reference device; GPUs join when their backend is found).
pub fn devices() -> Vec<Device> {
    backend::devices()
}

/// A device scope: ops created on this thread while it lives run on (eager)
/// or are placed on (graph) its device. Made by [`device_scope`]; ends when dropped.
#[must_use = "the scope ends when the guard is dropped"]
pub struct DeviceScope {
    // Not Send: the scope belongs to the thread that opened it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for DeviceScope {
    fn drop(&mut self) {
        CONTEXT.with(|c| {
            let mut s = c.devices.borrow_mut();
            s.pop();
            c.device.set(s.last().copied());
        });
    }
}

/// Open a device scope (TensorFlow's `with tf.device(name):`). `name` is a
/// TensorFlow device name (`/cpu:0`, `/device:GPU:0`, `/reference:0`); a
/// device this machine does not have is an error that lists the ones it has.
pub fn device_scope(name: &str) -> Result<DeviceScope> {
    let device = Device::parse(name)?;
    backend::backend(device)?;
    CONTEXT.with(|c| {
        c.devices.borrow_mut().push(device);
        c.device.set(Some(device));
    });
    Ok(DeviceScope { _not_send: std::marker::PhantomData })
}

/// Run `f` inside a device scope (see [`device_scope`]).
pub fn device<R>(name: &str, f: impl FnOnce() -> R) -> Result<R> {
    let _scope = device_scope(name)?;
    Ok(f())
}

// ---------------------------------------------------------------------------
// Default graphs
// ---------------------------------------------------------------------------

/// The innermost graph made default on this thread with [`Graph::as_default`]
/// (`None` inside an [`eager_scope`]).
#[inline]
pub(crate) fn default_graph() -> Option<Graph> {
    CONTEXT.with(|c| if c.graph_open.get() { c.graphs.borrow().last().cloned().flatten() } else { None })
}

fn push_graph(g: Option<Graph>) {
    CONTEXT.with(|c| {
        c.graph_open.set(g.is_some());
        c.graphs.borrow_mut().push(g);
    });
}

/// Restores the previous default graph when dropped.
#[must_use = "the default graph is restored when the guard is dropped"]
pub struct DefaultGraphGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for DefaultGraphGuard {
    fn drop(&mut self) {
        CONTEXT.with(|c| {
            let mut g = c.graphs.borrow_mut();
            g.pop();
            c.graph_open.set(matches!(g.last(), Some(Some(_))));
        });
    }
}

/// Run `f` eagerly even inside `as_default` or a trace (TensorFlow's
/// `init_scope`): for initial values of variables created on first use.
pub fn eager_scope<R>(f: impl FnOnce() -> R) -> R {
    push_graph(None);
    let _guard = DefaultGraphGuard { _not_send: std::marker::PhantomData };
    f()
}

impl Graph {
    /// Make this the thread's default graph while the guard lives: ops on
    /// values (and creation ops with `Ctx::Eager`) then add nodes here, as in
    /// TensorFlow's `with graph.as_default():`.
    pub fn as_default(&self) -> DefaultGraphGuard {
        push_graph(Some(self.clone()));
        DefaultGraphGuard { _not_send: std::marker::PhantomData }
    }
}

// ---------------------------------------------------------------------------
// Tapes
// ---------------------------------------------------------------------------

/// One application of an op: what the gradient engine differentiates through.
pub(crate) struct Record {
    pub op: Op,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

/// Identity of a tensor: a graph edge, or the address of an eager value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Key {
    Edge(Edge),
    Value(usize),
}

pub(crate) fn key(t: &Tensor) -> Key {
    match &t.repr {
        Repr::Symbolic(s) => Key::Edge(Edge { node: s.node, index: s.index }),
        Repr::Value(v) => Key::Value(Arc::as_ptr(v) as usize),
    }
}

/// What one gradient tape has recorded (the tape itself is
/// `autodiff::GradientTape`).
pub(crate) struct TapeState {
    pub records: RefCell<Vec<Record>>,
    pub tracked: RefCell<FxHashSet<Key>>,
    /// Watched tensors, kept alive so that their addresses stay theirs.
    pub watched: RefCell<Vec<Tensor>>,
    /// Values of each variable read while recording, by variable id.
    pub variable_reads: RefCell<FxHashMap<u64, Vec<Tensor>>>,
    pub watch_variables: bool,
    /// Not recording while it computes its own gradients.
    pub paused: Cell<bool>,
}

impl TapeState {
    pub(crate) fn new(watch_variables: bool) -> TapeState {
        TapeState {
            records: RefCell::new(Vec::new()),
            tracked: RefCell::new(FxHashSet::default()),
            watched: RefCell::new(Vec::new()),
            variable_reads: RefCell::new(FxHashMap::default()),
            watch_variables,
            paused: Cell::new(false),
        }
    }
    pub(crate) fn watch(&self, t: &Tensor) {
        if self.tracked.borrow_mut().insert(key(t)) {
            self.watched.borrow_mut().push(t.clone());
        }
    }
    pub(crate) fn watch_as(&self, var_id: u64, t: &Tensor) {
        self.watch(t);
        let mut reads = self.variable_reads.borrow_mut();
        let list = reads.entry(var_id).or_default();
        if !list.iter().any(|r| key(r) == key(t)) {
            list.push(t.clone());
        }
    }
}

/// Start recording on `tape`.
pub(crate) fn push_tape(tape: Rc<TapeState>) {
    CONTEXT.with(|c| c.tapes.borrow_mut().push(tape));
}

/// Stop recording on `tape`.
pub(crate) fn remove_tape(tape: &Rc<TapeState>) {
    CONTEXT.with(|c| c.tapes.borrow_mut().retain(|s| !Rc::ptr_eq(s, tape)));
}

/// The tapes that may record now (none inside `untracked`).
#[inline]
fn active_tapes() -> Option<SmallVec<[Rc<TapeState>; 2]>> {
    CONTEXT.with(|c| {
        let tapes = c.tapes.borrow();
        if tapes.is_empty() || c.untracked.get() > 0 {
            return None;
        }
        Some(tapes.iter().cloned().collect())
    })
}

/// Record an op application on every active tape that tracks one of its inputs.
#[inline]
pub(crate) fn record(op: &Op, inputs: &[&Tensor], outputs: &[Tensor]) {
    let Some(tapes) = active_tapes() else { return };
    let in_keys: SmallVec<[Key; 4]> = inputs.iter().map(|t| key(t)).collect();
    for tape in tapes {
        if tape.paused.get() {
            continue;
        }
        let hit = {
            let tracked = tape.tracked.borrow();
            in_keys.iter().any(|k| tracked.contains(k))
        };
        if hit {
            tape.tracked.borrow_mut().extend(outputs.iter().map(key));
            tape.records.borrow_mut().push(Record {
                op: op.clone(),
                inputs: inputs.iter().map(|t| (*t).clone()).collect(),
                outputs: outputs.to_vec(),
            });
        }
    }
}

/// A trainable variable was read: watch its value on the tapes that watch variables.
pub(crate) fn watch_variable(var_id: u64, t: &Tensor) {
    let Some(tapes) = active_tapes() else { return };
    for tape in tapes {
        if tape.watch_variables && !tape.paused.get() {
            tape.watch_as(var_id, t);
        }
    }
}

/// Run `f` without recording on any tape (optimizer updates, assignments).
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            CONTEXT.with(|c| c.untracked.set(c.untracked.get() - 1));
        }
    }
    CONTEXT.with(|c| c.untracked.set(c.untracked.get() + 1));
    let _restore = Restore;
    f()
}

// ---------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------

/// One captured eager variable and its stand-in in the traced graph.
pub(crate) struct Capture {
    pub eager: Variable,
    pub mirror: Variable,
}

/// What a trace in progress collects (the tracing itself is `crate::function`).
pub(crate) struct TraceState {
    pub graph: Graph,
    pub captures: RefCell<Vec<Capture>>,
    /// Assignments made by the traced code: run as targets on every call.
    pub effects: RefCell<Vec<Operation>>,
    /// The latest value assigned to each captured variable (by id): reads
    /// after a write see it, in program order.
    pub latest: RefCell<FxHashMap<u64, Tensor>>,
}

/// The trace in progress on this thread, if any.
pub(crate) fn current_trace() -> Option<Rc<TraceState>> {
    CONTEXT.with(|c| c.traces.borrow().last().cloned())
}

/// Ends a trace when dropped.
pub(crate) struct TraceGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.traces.borrow_mut().pop());
    }
}

/// Make `trace` the trace in progress while the guard lives.
pub(crate) fn push_trace(trace: Rc<TraceState>) -> TraceGuard {
    CONTEXT.with(|c| c.traces.borrow_mut().push(trace));
    TraceGuard { _not_send: std::marker::PhantomData }
}

// ---------------------------------------------------------------------------
// Function bodies
// ---------------------------------------------------------------------------

/// A control-flow branch or body being built (the building itself is
/// `crate::ops::control`): its graph, the graph it is called from, and what
/// its code used of the enclosing graphs.
pub(crate) struct BodyState {
    pub graph: Graph,
    /// The graph of the node that will call it.
    pub parent: Graph,
    /// The body being built around this one, when bodies nest.
    pub outer: Option<Rc<BodyState>>,
    /// Tensors of enclosing graphs used here (as tensors of `parent`), and
    /// the placeholder standing for each.
    pub captures: RefCell<Vec<(Tensor, Tensor)>>,
    /// Variables of enclosing graphs used here, by the outermost graph's
    /// node: the stand-in read, and the handle in `parent` passed in.
    pub variables: RefCell<Vec<(crate::graph::NodeId, Tensor, Tensor)>>,
    /// Nodes run for their effect (assignments, nested control flow that assigns).
    pub effects: RefCell<Vec<crate::graph::NodeId>>,
}

/// The body being built on this thread, when its graph is the default graph.
pub(crate) fn current_body() -> Option<Rc<BodyState>> {
    CONTEXT.with(|c| {
        let body = c.bodies.borrow().last().cloned()?;
        let default = if c.graph_open.get() { c.graphs.borrow().last().cloned().flatten() } else { None };
        default.filter(|g| g.same_as(&body.graph)).map(|_| body)
    })
}

/// The innermost body being built, default graph or not.
pub(crate) fn innermost_body() -> Option<Rc<BodyState>> {
    CONTEXT.with(|c| c.bodies.borrow().last().cloned())
}

/// Ends a body when dropped.
pub(crate) struct BodyGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.bodies.borrow_mut().pop());
    }
}

/// Make `body` the body being built while the guard lives.
pub(crate) fn push_body(body: Rc<BodyState>) -> BodyGuard {
    CONTEXT.with(|c| c.bodies.borrow_mut().push(body));
    BodyGuard { _not_send: std::marker::PhantomData }
}
