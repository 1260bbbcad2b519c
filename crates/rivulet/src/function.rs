//! `function`: trace a closure written against the eager API into a graph,
//! once per input signature, and run the optimized plan on later calls
//! (TensorFlow's `tf.function`, JAX's `jit`).
//!
//! While tracing, the closure's arguments are placeholders of a fresh graph
//! that is the thread's default, so every op it calls adds a node. Eager
//! variables it reads or assigns are captured: each gets a graph variable
//! standing for it, whose value lives in the eager variable's own cell (so
//! a call copies nothing in or out, and sees and makes the eager values).
//! Gradient tapes work inside (they record the symbolic ops).

use crate::context::{self, TraceState};
use crate::error::{Error, Result};
use crate::graph::{Graph, Operation, Tensor};
use crate::runtime::{Session, SessionOptions};
use crate::tensor::{DType, Shape, UNKNOWN};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::rc::Rc;

/// Dtype and shape of each argument of one trace.
type Signature = Vec<(DType, Shape)>;

struct Trace {
    signature: Signature,
    session: Session,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    effects: Vec<Operation>,
}

/// One trace of a [`Function`] (TensorFlow's `ConcreteFunction`): its
/// graph, the placeholders of its arguments, its outputs, and the session
/// that runs it, whose variables are the captured eager variables.
#[derive(Clone)]
pub struct ConcreteFunction {
    trace: std::sync::Arc<Trace>,
}

impl ConcreteFunction {
    /// The traced graph.
    pub fn graph(&self) -> &Graph {
        self.trace.session.graph()
    }
    /// The placeholder of each argument.
    pub fn inputs(&self) -> &[Tensor] {
        &self.trace.inputs
    }
    /// What the function returns.
    pub fn outputs(&self) -> &[Tensor] {
        &self.trace.outputs
    }
    /// Nodes run for their effect (variable assignments).
    pub fn effects(&self) -> &[Operation] {
        &self.trace.effects
    }
    /// The session running the trace (the captured variables' values live in it).
    pub fn session(&self) -> &Session {
        &self.trace.session
    }
}

/// How a [`Function`] traces.
#[derive(Clone, Debug, Default)]
pub struct FunctionOptions {
    /// Trace once for these argument types; `UNKNOWN` dimensions accept any
    /// size (like `tf.function(input_signature=...)`).
    pub input_signature: Option<Vec<(DType, Shape)>>,
    /// On a shape mismatch, retrace with the differing dimensions unknown
    /// instead of specialising again (TensorFlow's `reduce_retracing`).
    pub relax_shapes: bool,
    /// Session settings of the traced graphs (graph optimizations on by default).
    pub session: Option<SessionOptions>,
}

/// A traced function: see the module documentation.
pub struct Function<F> {
    f: F,
    options: FunctionOptions,
    traces: Mutex<Vec<std::sync::Arc<Trace>>>,
    reasons: Mutex<Vec<String>>,
}

/// Wrap `f` (written against the eager API) so that it runs as an optimized graph.
pub fn function<F>(f: F) -> Function<F>
where
    F: Fn(&[Tensor]) -> Result<Vec<Tensor>>,
{
    Function::with_options(f, FunctionOptions::default())
}

fn compatible(sig: &Signature, args: &[&Tensor]) -> bool {
    sig.len() == args.len()
        && sig.iter().zip(args).all(|((d, s), a)| *d == a.dtype() && s.is_compatible_with(a.shape()))
}

impl<F> Function<F>
where
    F: Fn(&[Tensor]) -> Result<Vec<Tensor>>,
{
    /// [`function`] with options.
    pub fn with_options(f: F, options: FunctionOptions) -> Function<F> {
        Function { f, options, traces: Mutex::new(Vec::new()), reasons: Mutex::new(Vec::new()) }
    }

    /// Why each trace happened (one entry per trace).
    pub fn trace_reasons(&self) -> Vec<String> {
        self.reasons.lock().clone()
    }

    /// Number of traces so far.
    pub fn num_traces(&self) -> usize {
        self.traces.lock().len()
    }

    /// Call it: trace if no trace fits the arguments, then run the graph.
    /// Calls from several threads may trace and run concurrently, also
    /// calls of one trace (none waits for another: a call from inside a
    /// parallel loop of another call is fine). Captured variables change as
    /// the run assigns them, as in TensorFlow 2: eager code on other threads
    /// may see a call's updates before it returns, and a call that fails
    /// keeps the updates it made before the error. See the memory model in
    /// docs/ARCHITECTURE.md for what overlapping calls see.
    pub fn call(&self, args: &[&Tensor]) -> Result<Vec<Tensor>> {
        if args.iter().any(|a| a.is_symbolic()) {
            return Err(Error::graph("a traced function takes values; call it eagerly"));
        }
        // The trace list is locked only to look up and publish a trace:
        // tracing runs eager kernels, and a thread waiting for one may pick
        // up another call (from a parallel loop) that needs the list. Two
        // first calls may both trace; the first published trace is kept.
        // Ok: a trace that fits; Err: the signature to trace, and why.
        let lookup = {
            let traces = self.traces.lock();
            match traces.iter().find(|t| compatible(&t.signature, args)) {
                Some(t) => Ok(t.clone()),
                None => Err(self.signature_for(&traces, args)?),
            }
        };
        let t = match lookup {
            Ok(found) => found,
            Err((signature, reason)) => {
                log::info!("rivulet::function: tracing ({reason})");
                let trace = std::sync::Arc::new(self.trace(signature)?);
                let mut traces = self.traces.lock();
                match traces.iter().find(|t| compatible(&t.signature, args)) {
                    Some(t) => t.clone(),
                    None => {
                        self.reasons.lock().push(reason);
                        traces.push(trace.clone());
                        trace
                    }
                }
            }
        };
        // No lock around the run: calls of one trace may overlap, as in
        // TensorFlow 2. Each variable op is atomic on its own (reads see a
        // whole value; `assign_add` and optimizer updates lose nothing),
        // and the plan orders a call's own reads and writes; a read and a
        // later assign in one call may interleave with another call's.
        let feeds: Vec<(&Tensor, &Tensor)> = t.inputs.iter().zip(args.iter().copied()).collect();
        let fetches: Vec<&Tensor> = t.outputs.iter().collect();
        let targets: Vec<&Operation> = t.effects.iter().collect();
        t.session.run_with_targets(&fetches, &feeds, &targets)
    }

    /// The trace for arguments of these types (`UNKNOWN` dimensions accept
    /// any size), tracing now if no trace has exactly this signature: what
    /// `tf.function.get_concrete_function` gives, e.g. to export.
    pub fn concrete(&self, signature: &[(DType, Shape)]) -> Result<ConcreteFunction> {
        let found = self.traces.lock().iter().find(|t| t.signature == signature).cloned();
        let trace = match found {
            Some(t) => t,
            None => {
                let trace = std::sync::Arc::new(self.trace(signature.to_vec())?);
                self.reasons.lock().push("concrete function requested".into());
                self.traces.lock().push(trace.clone());
                trace
            }
        };
        Ok(ConcreteFunction { trace })
    }

    /// The signature to trace for `args`, and why a new trace is needed.
    fn signature_for(&self, traces: &[std::sync::Arc<Trace>], args: &[&Tensor]) -> Result<(Signature, String)> {
        let exact: Signature = args.iter().map(|a| (a.dtype(), a.shape().clone())).collect();
        if let Some(sig) = &self.options.input_signature {
            if !compatible(sig, args) {
                let got: Vec<String> = exact.iter().map(|(d, s)| format!("{d}{s}")).collect();
                let want: Vec<String> = sig.iter().map(|(d, s)| format!("{d}{s}")).collect();
                return Err(Error::shape(format!(
                    "arguments ({}) do not match the input signature ({})",
                    got.join(", "),
                    want.join(", ")
                )));
            }
            return Ok((sig.clone(), "first call (input signature given)".into()));
        }
        let Some(last) = traces.last() else {
            let shown: Vec<String> = exact.iter().map(|(d, s)| format!("{d}{s}")).collect();
            return Ok((exact, format!("first call with ({})", shown.join(", "))));
        };
        let mut reasons = Vec::new();
        if last.signature.len() != exact.len() {
            reasons.push(format!("{} arguments instead of {}", exact.len(), last.signature.len()));
        }
        let mut relaxed = exact.clone();
        for (i, ((d, s), (td, ts))) in exact.iter().zip(&last.signature).enumerate() {
            if d != td {
                reasons.push(format!("argument {i} is {d}, was traced as {td}"));
            } else if !ts.is_compatible_with(s) {
                reasons.push(format!("argument {i} has shape {s}, was traced as {ts}"));
                if self.options.relax_shapes && s.rank() == ts.rank() {
                    let dims: Vec<usize> =
                        s.iter().zip(ts.iter()).map(|(&a, &b)| if a == b { a } else { UNKNOWN }).collect();
                    relaxed[i].1 = Shape::from(dims);
                }
            }
        }
        let sig = if self.options.relax_shapes { relaxed } else { exact };
        Ok((sig, format!("retracing: {}", reasons.join("; "))))
    }

    fn trace(&self, signature: Signature) -> Result<Trace> {
        let graph = Graph::new();
        let inputs: Vec<Tensor> = signature
            .iter()
            .enumerate()
            .map(|(i, (d, s))| graph.placeholder(&format!("arg{i}"), *d, s.clone()))
            .collect::<Result<_>>()?;
        let state = Rc::new(TraceState {
            graph: graph.clone(),
            captures: RefCell::new(Vec::new()),
            effects: RefCell::new(Vec::new()),
            latest: RefCell::new(rustc_hash::FxHashMap::default()),
        });
        let result = {
            let _trace = context::push_trace(state.clone());
            let _default = graph.as_default();
            (self.f)(&inputs)
        };
        let outputs: Vec<Tensor> = result?
            .into_iter()
            .map(|t| if t.is_symbolic() { Ok(t) } else { crate::ops::constant(&graph, t) })
            .collect::<Result<_>>()?;
        if let Some(o) = outputs.iter().find(|o| !o.graph().is_some_and(|g| g.same_as(&graph))) {
            return Err(Error::graph(format!(
                "traced function returned a tensor of another graph ({})",
                o.name().unwrap_or_default()
            )));
        }
        let effects = state.effects.borrow().clone();
        let session = Session::with_options(&graph, self.options.session.clone().unwrap_or_default());
        // A captured variable's stand-in keeps its value in the eager
        // variable's own cell: nothing is copied in or out of a call, and an
        // optimizer update can overwrite the eager variable's buffer.
        for c in state.captures.borrow().iter() {
            let cell = c.eager.cell().ok_or_else(|| {
                Error::graph(format!("internal: captured variable '{}' is not eager", c.eager.name()))
            })?;
            session.bind_variable(&c.mirror, cell.clone())?;
        }
        Ok(Trace { signature, session, inputs, outputs, effects })
    }
}
