//! Control flow: [`cond`], [`switch_case`] and [`while_loop`].
//!
//! Eagerly they run the Rust closures directly (only the taken branch, the
//! loop as a Rust loop), and gradient tapes see the ops the closures run.
//! In a graph (a default graph, symbolic inputs, or inside a traced
//! [`function`](crate::function)) each closure is run once on placeholders
//! of a graph of its own, which becomes a function of the enclosing graph's
//! library, and one `If`, `Case` or `While` node calls them: the loop is
//! not unrolled, and a session runs only the taken branch.
//!
//! Closures may use tensors of the enclosing graphs (they are captured:
//! passed to the node as extra inputs) and read and assign variables.
//! Inside a body, a variable read gives its value when that run of the body
//! starts (assignments made later in the same run are seen through their
//! outputs, as in TensorFlow 1 graphs).

use super::{Meta, Op};
use crate::context::{self, key, BodyState};
use crate::error::{location_string, Error, OpContext, Result};
use crate::graph::{Edge, Function, Graph, NodeId, Repr, Tensor};
use crate::op::control::{check_selector, keeps_invariant, merge_shapes};
use crate::op::{FunctionId, History, WhileSpec};
use crate::tensor::{DType, Device, Shape, Value};
use std::panic::Location;
use std::rc::Rc;
use std::sync::Arc;

/// A structure of tensors that control flow takes and returns: a tensor, a
/// `Vec` of structures, or a tuple of up to four (JAX's pytrees,
/// TensorFlow's nests).
pub trait Nest: Sized {
    /// Append the tensors in order.
    fn flatten_into(&self, out: &mut Vec<Tensor>);
    /// The same structure as `self`, holding the next tensors of `flat`.
    fn rebuild(&self, flat: &mut dyn Iterator<Item = Tensor>) -> Result<Self>;
    /// The tensors, in order.
    fn flatten(&self) -> Vec<Tensor> {
        let mut v = Vec::new();
        self.flatten_into(&mut v);
        v
    }
}

impl Nest for Tensor {
    fn flatten_into(&self, out: &mut Vec<Tensor>) {
        out.push(self.clone());
    }
    fn rebuild(&self, flat: &mut dyn Iterator<Item = Tensor>) -> Result<Tensor> {
        flat.next().ok_or_else(|| Error::invalid("internal: a structure has fewer tensors than its template"))
    }
}

impl<T: Nest> Nest for Vec<T> {
    fn flatten_into(&self, out: &mut Vec<Tensor>) {
        for x in self {
            x.flatten_into(out);
        }
    }
    fn rebuild(&self, flat: &mut dyn Iterator<Item = Tensor>) -> Result<Vec<T>> {
        self.iter().map(|x| x.rebuild(flat)).collect()
    }
}

macro_rules! nest_tuple {
    ($($name:ident $i:tt),+) => {
        impl<$($name: Nest),+> Nest for ($($name,)+) {
            fn flatten_into(&self, out: &mut Vec<Tensor>) {
                $(self.$i.flatten_into(out);)+
            }
            fn rebuild(&self, flat: &mut dyn Iterator<Item = Tensor>) -> Result<Self> {
                Ok(($(self.$i.rebuild(flat)?,)+))
            }
        }
    };
}
nest_tuple!(A 0);
nest_tuple!(A 0, B 1);
nest_tuple!(A 0, B 1, C 2);
nest_tuple!(A 0, B 1, C 2, D 3);
nest_tuple!(A 0, B 1, C 2, D 3, E 4);
nest_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
nest_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
nest_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// `template`'s structure around `flat` (which must hold exactly its tensors).
fn rebuild<T: Nest>(template: &T, flat: Vec<Tensor>) -> Result<T> {
    let n = flat.len();
    let mut it = flat.into_iter();
    let out = template.rebuild(&mut it)?;
    if it.next().is_some() {
        return Err(Error::invalid(format!("internal: {n} tensors for a smaller structure")));
    }
    Ok(out)
}

/// Settings of a [`while_loop`].
#[derive(Clone, Debug, Default)]
pub struct WhileOptions {
    /// Stop after this many iterations even if the condition still holds.
    pub maximum_iterations: Option<u64>,
    /// One shape per loop variable (flattened): dimensions that are
    /// [`UNKNOWN`](crate::tensor::UNKNOWN) may change from one iteration to
    /// the next. By default every shape stays as it enters.
    pub shape_invariants: Option<Vec<Shape>>,
    /// For gradients: keep the loop variables of only every `n`-th
    /// iteration, and recompute the others in the backward pass (like
    /// `jax.checkpoint`): memory of about `trips / n + n` states instead of
    /// `trips`, for about twice the forward work. `None` keeps every state.
    pub checkpoint_every: Option<u64>,
    /// Node name stem (default `while`).
    pub name: Option<String>,
}

impl WhileOptions {
    /// Stop after `n` iterations at most.
    pub fn maximum_iterations(mut self, n: u64) -> WhileOptions {
        self.maximum_iterations = Some(n);
        self
    }
    /// Let the listed dimensions change across iterations (see the field).
    pub fn shape_invariants(mut self, shapes: Vec<Shape>) -> WhileOptions {
        self.shape_invariants = Some(shapes);
        self
    }
    /// Recompute instead of storing for gradients (see the field).
    pub fn checkpoint_every(mut self, n: u64) -> WhileOptions {
        self.checkpoint_every = Some(n);
        self
    }
}

// ---------------------------------------------------------------------------
// Building bodies
// ---------------------------------------------------------------------------

impl BodyState {
    /// The tensor of this body's graph standing for `t` (a tensor of an
    /// enclosing graph becomes a placeholder, passed in by the calling node).
    pub(crate) fn capture(&self, t: &Tensor) -> Result<Tensor> {
        let Some(g) = t.graph() else { return Ok(t.clone()) };
        if g.same_as(&self.graph) {
            return Ok(t.clone());
        }
        let in_parent = if g.same_as(&self.parent) {
            t.clone()
        } else {
            match &self.outer {
                Some(outer) => outer.capture(t)?,
                None => {
                    return Err(Error::graph(format!(
                        "a control-flow body uses {}, a tensor of a graph that does not enclose it",
                        t.name().unwrap_or_default()
                    )))
                }
            }
        };
        let k = key(&in_parent);
        if let Some((_, p)) = self.captures.borrow().iter().find(|(o, _)| key(o) == k) {
            return Ok(p.clone());
        }
        let op = Op::Placeholder { dtype: in_parent.dtype(), shape: in_parent.shape().clone() };
        let (_, mut p) = self.graph.add_node_named(op, &[], Some("capture"), None, Location::caller())?;
        let p = p.swap_remove(0);
        self.captures.borrow_mut().push((in_parent, p.clone()));
        Ok(p)
    }

    /// The stand-in read, in this body, of variable node `node` of `graph`
    /// (whose read handle is `handle`).
    pub(crate) fn variable(&self, graph: &Graph, node: NodeId, handle: &Tensor) -> Result<Tensor> {
        let root = graph.resolve_variable(node);
        if let Some((_, t, _)) = self.variables.borrow().iter().find(|(r, _, _)| *r == root) {
            return Ok(t.clone());
        }
        let in_parent = if graph.same_as(&self.parent) {
            handle.clone()
        } else {
            match &self.outer {
                Some(outer) => outer.variable(graph, node, handle)?,
                None => {
                    return Err(Error::graph("a control-flow body uses a variable of a graph that does not enclose it"))
                }
            }
        };
        let op = Op::Variable { dtype: handle.dtype(), shape: handle.shape().clone() };
        let stem = graph.node_name(node).rsplit('/').next().unwrap_or("variable").to_string();
        let (id, mut t) = self.graph.add_node_named(op, &[], Some(&stem), None, Location::caller())?;
        self.graph.set_variable_alias(id, root);
        let t = t.swap_remove(0);
        self.variables.borrow_mut().push((root, t.clone(), in_parent));
        Ok(t)
    }
}

/// A branch being traced: it gets the placeholders of its arguments.
pub(crate) type BranchFn<'a> = Box<dyn FnOnce(&[Tensor]) -> Result<Vec<Tensor>> + 'a>;
/// Branches with their functions' names.
pub(crate) type Branches<'a> = Vec<(String, BranchFn<'a>)>;
/// An inlined call's outputs, and per variable stand-in the copy's read.
pub(crate) type Inlined = (Vec<Tensor>, Vec<(NodeId, Tensor)>);

/// A branch or body traced into its own graph.
struct Traced {
    state: Rc<BodyState>,
    args: Vec<Edge>,
    outputs: Vec<Tensor>,
}

fn edge(t: &Tensor) -> Result<Edge> {
    match &t.repr {
        Repr::Symbolic(s) => Ok(Edge { node: s.node, index: s.index }),
        Repr::Value(_) => Err(Error::graph("internal: a function output is not symbolic")),
    }
}

/// Run `f` on placeholders of a new graph, as a function that a node of
/// `parent` will call.
fn trace(
    parent: &Graph,
    args: &[Meta],
    location: &'static Location<'static>,
    f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Traced> {
    let graph = Graph::new();
    let mut placeholders = Vec::with_capacity(args.len());
    let mut arg_edges = Vec::with_capacity(args.len());
    for (i, m) in args.iter().enumerate() {
        let op = Op::Placeholder { dtype: m.dtype, shape: m.shape.clone() };
        let (id, mut t) = graph.add_node_named(op, &[], Some(&format!("arg{i}")), None, location)?;
        arg_edges.push(Edge { node: id, index: 0 });
        placeholders.push(t.swap_remove(0));
    }
    let state = Rc::new(BodyState {
        graph: graph.clone(),
        parent: parent.clone(),
        outer: context::innermost_body().filter(|b| b.graph.same_as(parent)),
        captures: Default::default(),
        variables: Default::default(),
        effects: Default::default(),
    });
    let outputs = {
        let _body = context::push_body(state.clone());
        let _default = graph.as_default();
        f(&placeholders)?
    };
    let outputs = outputs
        .iter()
        .map(|t| if t.is_symbolic() { state.capture(t) } else { super::constant(&graph, t.clone()) })
        .collect::<Result<Vec<_>>>()?;
    // Variables used here are passed in as handles too: the calling node
    // then reads after earlier writes, and gradients reach them.
    let handles: Vec<Tensor> = state.variables.borrow().iter().map(|(_, _, h)| h.clone()).collect();
    for h in &handles {
        state.capture(h)?;
    }
    Ok(Traced { state, args: arg_edges, outputs })
}

/// Add traced functions to `parent`'s library, all taking the union of
/// their captures after their arguments; returns their ids and the
/// captured tensors (of `parent`), to pass after the arguments.
fn link(parent: &Graph, traced: Vec<(String, Traced)>) -> Result<(Vec<FunctionId>, Vec<Tensor>)> {
    let mut union: Vec<Tensor> = Vec::new();
    for (_, t) in &traced {
        for (outer, _) in t.state.captures.borrow().iter() {
            if !union.iter().any(|u| key(u) == key(outer)) {
                union.push(outer.clone());
            }
        }
    }
    let mut ids = Vec::with_capacity(traced.len());
    for (name, t) in traced {
        let graph = t.state.graph.clone();
        let captures = t.state.captures.borrow();
        let mut inputs = t.args.clone();
        for u in &union {
            match captures.iter().find(|(o, _)| key(o) == key(u)) {
                Some((_, p)) => inputs.push(edge(p)?),
                None => {
                    let op = Op::Placeholder { dtype: u.dtype(), shape: u.shape().clone() };
                    let (id, _) = graph.add_node_named(op, &[], Some("unused"), None, Location::caller())?;
                    inputs.push(Edge { node: id, index: 0 });
                }
            }
        }
        let mut variable_inputs = Vec::new();
        for (_, stand_in, handle) in t.state.variables.borrow().iter() {
            if let Some(pos) = union.iter().position(|u| key(u) == key(handle)) {
                variable_inputs.push((t.args.len() + pos, edge(stand_in)?.node));
            }
        }
        let f = Function {
            name,
            graph: graph.clone(),
            inputs,
            outputs: t.outputs.iter().map(edge).collect::<Result<_>>()?,
            effects: t.state.effects.borrow().clone(),
            variable_inputs,
        };
        ids.push(parent.add_function(f)?);
    }
    Ok((ids, union))
}

/// The graph a control-flow call builds into, or `None` to run it eagerly.
fn target_graph(inputs: &[&Tensor]) -> Option<Graph> {
    if let Some(body) = context::current_body() {
        return Some(body.graph.clone());
    }
    if let Some(g) = context::default_graph() {
        return Some(g);
    }
    inputs.iter().find_map(|t| t.graph().cloned())
}

/// After building a control-flow node: a body enclosing it runs it for its
/// effect, and so does a trace.
fn note_effects(node: &Tensor, fns: &[FunctionId], parent: &Graph) -> Result<()> {
    let effects = fns.iter().map(|&f| parent.function(f).map(|f| f.has_effects())).collect::<Result<Vec<_>>>()?;
    if !effects.iter().any(|&e| e) {
        return Ok(());
    }
    let Some(op) = node.op() else { return Ok(()) };
    if let Some(body) = context::current_body() {
        if body.graph.same_as(parent) {
            body.effects.borrow_mut().push(op.id());
            return Ok(());
        }
    }
    if let Some(trace) = context::current_trace() {
        if trace.graph.same_as(parent) {
            trace.effects.borrow_mut().push(op.clone());
            trace.after_control_flow(&op)?;
        }
    }
    Ok(())
}

/// The value of an eager selector (a bool or integer scalar).
fn eager_selector(t: &Tensor, op: &str, boolean: bool) -> Result<i64> {
    check_selector(op, &Meta::new(t.dtype(), t.shape().clone()), boolean)?;
    let v = t.value()?;
    let host: Value;
    let v = if v.device() == Device::CPU {
        v
    } else {
        host = crate::backend::transfer(v, Device::CPU)?;
        &host
    };
    v.scalar_f64().map(|x| x as i64).ok_or_else(|| Error::invalid(format!("{op}: the selector has no value")))
}

fn context_of(op: &str, inputs: &[&Tensor], location: &Location<'_>) -> OpContext {
    OpContext {
        op: op.to_string(),
        node: None,
        inputs: inputs.iter().map(|t| format!("{}{}", t.dtype(), t.shape())).collect(),
        location: location_string(location),
    }
}

/// The branches' common output types; an error if they differ in count or dtype.
fn branch_outputs(op: &str, outputs: &[Vec<Tensor>]) -> Result<Vec<Meta>> {
    let first = &outputs[0];
    let mut metas: Vec<Meta> = first.iter().map(|t| Meta::new(t.dtype(), t.shape().clone())).collect();
    for (b, outs) in outputs.iter().enumerate().skip(1) {
        if outs.len() != first.len() {
            return Err(Error::invalid(format!(
                "{op}: branch {b} returns {} tensors, branch 0 returns {}",
                outs.len(),
                first.len()
            )));
        }
        for (i, (m, t)) in metas.iter_mut().zip(outs).enumerate() {
            let merged = (m.dtype == t.dtype()).then(|| merge_shapes(&m.shape, t.shape())).flatten();
            match merged {
                Some(s) => m.shape = s,
                None => {
                    return Err(Error::invalid(format!(
                        "{op}: output {i} is {m} in branch 0 but {}{} in branch {b}",
                        t.dtype(),
                        t.shape()
                    )))
                }
            }
        }
    }
    Ok(metas)
}

/// A branching node: `selector` chooses one of `branches`, each called on
/// `args` (plus captures). Returns the node's outputs.
pub(crate) fn branch_node(
    parent: &Graph,
    selector: &Tensor,
    boolean: bool,
    args: &[&Tensor],
    branches: Branches<'_>,
    location: &'static Location<'static>,
) -> Result<Vec<Tensor>> {
    let op_name = if boolean { "If" } else { "Case" };
    let arg_metas: Vec<Meta> = args.iter().map(|t| Meta::new(t.dtype(), t.shape().clone())).collect();
    let mut traced = Vec::with_capacity(branches.len());
    for (name, f) in branches {
        let mut f = Some(f);
        let mut call = |xs: &[Tensor]| match f.take() {
            Some(f) => f(xs),
            None => Err(Error::invalid("internal: a branch traced twice")),
        };
        traced.push((name, trace(parent, &arg_metas, location, &mut call)?));
    }
    let outs: Vec<Vec<Tensor>> = traced.iter().map(|(_, t)| t.outputs.clone()).collect();
    let outputs = branch_outputs(op_name, &outs)?;
    let (ids, captures) = link(parent, traced)?;
    let op = if boolean {
        Op::If { then_branch: ids[0], else_branch: ids[1], outputs }
    } else {
        Op::Case { branches: ids.clone(), outputs }
    };
    let mut inputs: Vec<&Tensor> = vec![selector];
    inputs.extend_from_slice(args);
    inputs.extend(captures.iter());
    let outs = apply_at(parent, op, &inputs, location)?;
    if let Some(first) = outs.first() {
        note_effects(first, &ids, parent)?;
    } else {
        return Err(Error::invalid(format!("{op_name}: the branches return no tensors")));
    }
    Ok(outs)
}

/// Add a node to `graph` (the control-flow builders call this, not `apply`,
/// because their inputs are already tensors of `graph`).
fn apply_at(graph: &Graph, op: Op, inputs: &[&Tensor], location: &'static Location<'static>) -> Result<Vec<Tensor>> {
    let outs = graph.add_node(op.clone(), inputs, context::current_device(), location)?;
    context::record(&op, inputs, &outs);
    Ok(outs.into_vec())
}

/// `true_fn()` if `pred` is true, else `false_fn()` (TensorFlow's `tf.cond`).
/// Both must return the same structure with the same dtypes; where their
/// shapes differ, the result's dimension is unknown. Only the taken branch
/// runs, so a branch that would divide by zero does not poison the result
/// or its gradient.
#[track_caller]
pub fn cond<T: Nest>(
    pred: &Tensor,
    true_fn: impl FnOnce() -> Result<T>,
    false_fn: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let location = Location::caller();
    let Some(parent) = target_graph(&[pred]) else {
        let p = eager_selector(pred, "If", true).map_err(|e| e.at_caller(|| context_of("If", &[pred], location)))?;
        return if p != 0 { true_fn() } else { false_fn() };
    };
    let branches: Vec<(String, Closure<'_, T>)> =
        vec![("cond/then".into(), Box::new(true_fn)), ("cond/else".into(), Box::new(false_fn))];
    structured_branches(&parent, pred, true, branches, location)
}

/// A branch closure of `cond`/`switch_case`, boxed.
type Closure<'f, T> = Box<dyn FnOnce() -> Result<T> + 'f>;

/// A branching node over closures that return structures: each traced
/// into a function, the node's outputs put back in the first one's shape.
fn structured_branches<'f, T: Nest>(
    parent: &Graph,
    selector: &Tensor,
    boolean: bool,
    branches: Vec<(String, Closure<'f, T>)>,
    location: &'static Location<'static>,
) -> Result<T> {
    let op = if boolean { "If" } else { "Case" };
    let selector = capture_into(parent, selector)?;
    let template = std::cell::RefCell::new(None);
    let record = |r: Result<T>| -> Result<Vec<Tensor>> {
        let t = r?;
        let flat = t.flatten();
        template.borrow_mut().get_or_insert(t);
        Ok(flat)
    };
    let record = &record;
    let traced: Branches<'_> = branches
        .into_iter()
        .map(|(name, f)| {
            let b: BranchFn<'_> = Box::new(move |_: &[Tensor]| record(f()));
            (name, b)
        })
        .collect();
    let outs = branch_node(parent, &selector, boolean, &[], traced, location)
        .map_err(|e| e.at_caller(|| context_of(op, &[&selector], location)))?;
    let template = template.into_inner().ok_or_else(|| Error::invalid("internal: no branch traced"))?;
    rebuild(&template, outs)
}

/// Branch `index` of `branches`, or `default` when the index is out of
/// range (TensorFlow's `tf.switch_case`; without a default, the last
/// branch is the default). Only the chosen branch runs.
#[track_caller]
pub fn switch_case<T: Nest>(
    index: &Tensor,
    branches: &[&dyn Fn() -> Result<T>],
    default: Option<&dyn Fn() -> Result<T>>,
) -> Result<T> {
    let location = Location::caller();
    if branches.is_empty() {
        return Err(Error::invalid("switch_case needs at least one branch")
            .at_caller(|| context_of("Case", &[index], location)));
    }
    let mut all: Vec<&dyn Fn() -> Result<T>> = branches.to_vec();
    if let Some(d) = default {
        all.push(d);
    }
    let Some(parent) = target_graph(&[index]) else {
        let i =
            eager_selector(index, "Case", false).map_err(|e| e.at_caller(|| context_of("Case", &[index], location)))?;
        let n = branches.len() as i64;
        let chosen = if (0..n).contains(&i) { i as usize } else { all.len() - 1 };
        return all[chosen]();
    };
    let boxed: Vec<(String, Closure<'_, T>)> =
        all.iter().enumerate().map(|(i, &f)| (format!("case/branch{i}"), Box::new(f) as Closure<'_, T>)).collect();
    structured_branches(&parent, index, false, boxed, location)
}

/// `t` as a tensor of `graph`: captured when building a body, a constant for a value.
fn capture_into(graph: &Graph, t: &Tensor) -> Result<Tensor> {
    if let Some(body) = context::current_body() {
        if body.graph.same_as(graph) {
            return body.capture(t);
        }
    }
    if !t.is_symbolic() {
        return super::constant(graph, t.clone());
    }
    Ok(t.clone())
}

/// Repeat `body` while `cond` holds (TensorFlow's `tf.while_loop`): returns
/// the loop variables after the last iteration. The body must return the
/// same structure, with each tensor's dtype unchanged and its shape within
/// the shape invariant (by default: unchanged).
///
/// Eagerly this is a Rust loop. In a graph it is one `While` node: a
/// session runs the whole loop in one `run`, with the trip count decided at
/// run time; gradients flow through it (see [`WhileOptions::checkpoint_every`]).
#[track_caller]
pub fn while_loop<T: Nest>(
    cond: impl Fn(&T) -> Result<Tensor>,
    body: impl Fn(&T) -> Result<T>,
    loop_vars: T,
    options: &WhileOptions,
) -> Result<T> {
    let location = Location::caller();
    let flat = loop_vars.flatten();
    let refs: Vec<&Tensor> = flat.iter().collect();
    let invariants = invariants(&flat, options).map_err(|e| e.at_caller(|| context_of("While", &refs, location)))?;
    let parent = match target_graph(&refs) {
        Some(g) => g,
        None => {
            // Values in, but a condition on tensors of a graph (a
            // placeholder it closes over): the loop belongs in that graph.
            let first = cond(&loop_vars).map_err(|e| e.at_caller(|| context_of("While", &refs, location)))?;
            match first.graph() {
                Some(g) => g.clone(),
                None => {
                    return eager_while(&cond, &body, loop_vars, first, &invariants, options.maximum_iterations)
                        .map_err(|e| e.at_caller(|| context_of("While", &refs, location)))
                }
            }
        }
    };
    let mut cond_fn = |xs: &[Tensor]| -> Result<Tensor> { cond(&rebuild(&loop_vars, xs.to_vec())?) };
    let mut body_fn =
        |xs: &[Tensor]| -> Result<Vec<Tensor>> { Ok(body(&rebuild(&loop_vars, xs.to_vec())?)?.flatten()) };
    let spec = LoopSpec {
        invariants,
        maximum_iterations: options.maximum_iterations,
        history: History::None,
        checkpoint_every: options.checkpoint_every,
        name: options.name.clone().unwrap_or_else(|| "while".into()),
    };
    let outs = while_node(&parent, &flat, &mut cond_fn, &mut body_fn, &spec, location)
        .map_err(|e| e.at_caller(|| context_of("While", &refs, location)))?;
    rebuild(&loop_vars, outs)
}

/// Each loop variable's invariant: the given one (checked against the
/// entering value), else its entering shape.
fn invariants(flat: &[Tensor], options: &WhileOptions) -> Result<Vec<Shape>> {
    match &options.shape_invariants {
        None => Ok(flat.iter().map(|t| t.shape().clone()).collect()),
        Some(shapes) => {
            if shapes.len() != flat.len() {
                return Err(Error::invalid(format!(
                    "{} shape invariants for {} loop variables",
                    shapes.len(),
                    flat.len()
                )));
            }
            for (i, (t, s)) in flat.iter().zip(shapes).enumerate() {
                let ok =
                    keeps_invariant(t.shape(), s) || (!t.shape().is_fully_known() && t.shape().is_compatible_with(s));
                if !ok {
                    return Err(Error::shape(format!(
                        "loop variable {i} enters with shape {}, outside its shape invariant {s}",
                        t.shape()
                    )));
                }
            }
            Ok(shapes.clone())
        }
    }
}

/// Check the next loop variables against the entering ones and the invariants.
fn check_next(next: &[Tensor], dtypes: &[DType], invariants: &[Shape]) -> Result<()> {
    if next.len() != dtypes.len() {
        return Err(Error::invalid(format!(
            "the loop body returns {} tensors for {} loop variables",
            next.len(),
            dtypes.len()
        )));
    }
    for (i, ((t, d), inv)) in next.iter().zip(dtypes).zip(invariants).enumerate() {
        if t.dtype() != *d {
            return Err(Error::dtype(format!("the loop body turns loop variable {i} from {d} into {}", t.dtype())));
        }
        if !keeps_invariant(t.shape(), inv) {
            return Err(Error::shape(format!(
                "the loop body returns shape {} for loop variable {i}, outside its shape invariant {inv} \
                 (give shape_invariants to let a dimension change)",
                t.shape()
            )));
        }
    }
    Ok(())
}

/// The loop run eagerly; `first` is the condition on the entering values.
fn eager_while<T: Nest>(
    cond: &impl Fn(&T) -> Result<Tensor>,
    body: &impl Fn(&T) -> Result<T>,
    mut vars: T,
    first: Tensor,
    invariants: &[Shape],
    maximum_iterations: Option<u64>,
) -> Result<T> {
    let dtypes: Vec<DType> = vars.flatten().iter().map(|t| t.dtype()).collect();
    let mut trips = 0u64;
    let mut first = Some(first);
    loop {
        if maximum_iterations.is_some_and(|m| trips >= m) {
            return Ok(vars);
        }
        let c = match first.take() {
            Some(c) => c,
            None => cond(&vars)?,
        };
        if eager_selector(&c, "While condition", true)? == 0 {
            return Ok(vars);
        }
        let next = body(&vars)?;
        check_next(&next.flatten(), &dtypes, invariants)?;
        vars = next;
        trips += 1;
    }
}

/// What a `While` node is asked to be.
pub(crate) struct LoopSpec {
    pub invariants: Vec<Shape>,
    pub maximum_iterations: Option<u64>,
    pub history: History,
    pub checkpoint_every: Option<u64>,
    pub name: String,
}

/// Build a `While` node in `parent` over `vars` (tensors of any graph
/// enclosing it): returns the loop variables after the loop, then, with a
/// history, the stacked states and the trip count.
pub(crate) fn while_node(
    parent: &Graph,
    vars: &[Tensor],
    cond: &mut dyn FnMut(&[Tensor]) -> Result<Tensor>,
    body: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    spec: &LoopSpec,
    location: &'static Location<'static>,
) -> Result<Vec<Tensor>> {
    let vars: Vec<Tensor> = vars.iter().map(|t| capture_into(parent, t)).collect::<Result<_>>()?;
    let metas: Vec<Meta> = vars.iter().zip(&spec.invariants).map(|(t, s)| Meta::new(t.dtype(), s.clone())).collect();
    let dtypes: Vec<DType> = metas.iter().map(|m| m.dtype).collect();
    let mut cond_call = |xs: &[Tensor]| -> Result<Vec<Tensor>> {
        let c = cond(xs)?;
        check_selector("While condition", &Meta::new(c.dtype(), c.shape().clone()), true)?;
        Ok(vec![c])
    };
    let traced_cond = trace(parent, &metas, location, &mut cond_call)?;
    let mut body_call = |xs: &[Tensor]| -> Result<Vec<Tensor>> {
        let next = body(xs)?;
        check_next(&next, &dtypes, &spec.invariants)?;
        Ok(next)
    };
    let traced_body = trace(parent, &metas, location, &mut body_call)?;
    let (ids, captures) =
        link(parent, vec![(format!("{}/cond", spec.name), traced_cond), (format!("{}/body", spec.name), traced_body)])?;
    let op = Op::While {
        spec: WhileSpec {
            cond: ids[0],
            body: ids[1],
            vars: metas,
            maximum_iterations: spec.maximum_iterations,
            history: spec.history,
            checkpoint_every: spec.checkpoint_every,
        },
    };
    let mut inputs: Vec<&Tensor> = vars.iter().collect();
    inputs.extend(captures.iter());
    let outs = apply_at(parent, op, &inputs, location)?;
    if let Some(first) = outs.first() {
        note_effects(first, &ids, parent)?;
    }
    Ok(outs)
}

/// Call function `f` of `graph`'s library on `inputs` (tensors of the
/// current default graph) by copying its nodes there. Returns its outputs
/// and, per variable stand-in of `f`, the copy's read.
pub(crate) fn call_inline(graph: &Graph, f: &Arc<Function>, inputs: &[Tensor]) -> Result<Inlined> {
    let edges: Vec<Edge> = inputs.iter().map(edge).collect::<Result<_>>()?;
    let (outs, stand_ins) = graph.inline(f, &edges)?;
    let outs = outs.into_iter().map(|e| graph.tensor_at(e)).collect::<Result<_>>()?;
    let stand_ins = stand_ins
        .into_iter()
        .map(|(src, dst)| Ok((src, graph.tensor_at(Edge { node: dst, index: 0 })?)))
        .collect::<Result<_>>()?;
    Ok((outs, stand_ins))
}
