//! Control-flow steps: a branch or a loop holds the plans of its functions
//! (compiled once, with the plan that holds them) and runs them with the
//! same executor as every other plan. A loop is a Rust loop over its
//! condition and body plans: no recursion, so the stack stays flat however
//! many iterations run, and each iteration's values replace the last.

use super::plan::{compile_function, compile_loop, Compile, Plan, PlanReport};
use super::session::{run_plan, run_sequential, Mode, Profiler};
use super::store::VariableStore;
use crate::backend::{self, KernelCtx};
use crate::error::{Error, Result};
use crate::op::control::keeps_invariant;
use crate::op::{History, Meta, Op};
use crate::passes::IrNode;
use crate::tensor::{Device, Scalar, Shape, Value};
use smallvec::SmallVec;
use std::sync::Arc;

/// The compiled functions of an `If`, `Case` or `While` step.
impl ControlPlan {
    /// Whether a body makes a collective call.
    pub(crate) fn has_collective(&self) -> bool {
        match self {
            ControlPlan::Branches { plans, .. } => plans.iter().any(|p| p.has_collective()),
            ControlPlan::While { cond, iteration, .. } => cond.has_collective() || iteration.has_collective(),
        }
    }
}

pub(crate) enum ControlPlan {
    /// `If` (`boolean`: branch 0 when true) or `Case` (branch `index`, the
    /// last one when out of range).
    Branches { boolean: bool, names: Vec<String>, plans: Vec<Arc<Plan>> },
    While {
        names: [String; 2],
        cond: Arc<Plan>,
        /// One iteration: the body, or (`fused`) the body then the
        /// condition on its results, as one plan (when neither uses
        /// variables, whose reads and writes would then need ordering).
        iteration: Arc<Plan>,
        fused: bool,
        /// The loop-invariant values the iteration plan reads after its
        /// own inputs, computed once before the loop.
        hoisted: Option<Arc<Plan>>,
        vars: Vec<Meta>,
        maximum_iterations: Option<u64>,
        history: History,
    },
}

impl ControlPlan {
    pub fn compile(node: &IrNode, settings: &Compile<'_>) -> Result<ControlPlan> {
        let plan = |i: usize| -> Result<Arc<Plan>> {
            let f =
                node.functions.get(i).ok_or_else(|| Error::graph("internal: a control-flow function is missing"))?;
            compile_function(f, settings).map(Arc::new).map_err(|e| e.with_context(|| node.context()))
        };
        let names: Vec<String> = node.functions.iter().map(|f| f.name.clone()).collect();
        Ok(match &node.op {
            Op::If { .. } => ControlPlan::Branches { boolean: true, names, plans: vec![plan(0)?, plan(1)?] },
            Op::Case { branches, .. } => ControlPlan::Branches {
                boolean: false,
                names,
                plans: (0..branches.len()).map(plan).collect::<Result<_>>()?,
            },
            Op::While { spec } => {
                let ([c, b], fused) = (&node.functions[..], node.variables.is_empty()) else {
                    return Err(Error::graph("internal: a loop needs a condition and a body"));
                };
                let (iteration, hoisted) =
                    compile_loop(c, b, fused, settings).map_err(|e| e.with_context(|| node.context()))?;
                let (iteration, hoisted) = (Arc::new(iteration), hoisted.map(Arc::new));
                ControlPlan::While {
                    names: [names[0].clone(), names[1].clone()],
                    cond: plan(0)?,
                    iteration,
                    fused,
                    hoisted,
                    vars: spec.vars.clone(),
                    maximum_iterations: spec.maximum_iterations,
                    history: spec.history,
                }
            }
            other => return Err(Error::graph(format!("internal: {} is not control flow", other.type_name()))),
        })
    }

    /// The plans that run, with their functions' names (a loop's body plan
    /// holds the condition too when they are fused).
    pub fn plans(&self) -> Vec<(&str, &Arc<Plan>)> {
        match self {
            ControlPlan::Branches { names, plans, .. } => names.iter().map(String::as_str).zip(plans).collect(),
            ControlPlan::While { names, cond, iteration, hoisted, .. } => {
                let mut v = vec![(names[0].as_str(), cond), (names[1].as_str(), iteration)];
                if let Some(h) = hoisted {
                    v.push(("loop invariants", h));
                }
                v
            }
        }
    }

    /// The reports of the functions' plans, for `Session::explain`.
    pub fn reports(&self, node: &str) -> Vec<(String, String, PlanReport)> {
        self.plans().into_iter().map(|(name, p)| (node.to_string(), name.to_string(), p.report.clone())).collect()
    }

    /// Run the step on its inputs. With `device_graphs`, an iteration's
    /// device work is replayed as a recorded graph where it can be (see
    /// `capture`): a loop of small kernels is one launch an iteration.
    pub fn run(
        &self,
        inputs: &[&Value],
        store: &VariableStore,
        mut prof: Option<&mut Profiler>,
        device_graphs: bool,
    ) -> Result<SmallVec<[Value; 1]>> {
        let mode = Mode { device_graphs, ..Mode::default() };
        match self {
            ControlPlan::Branches { boolean, plans, .. } => {
                let Some((selector, args)) = inputs.split_first() else {
                    return Err(Error::graph("internal: a branch step without a selector"));
                };
                let s = scalar(selector)?;
                let chosen = if *boolean {
                    if s != 0.0 {
                        0
                    } else {
                        1
                    }
                } else if s >= 0.0 && (s as usize) < plans.len() {
                    s as usize
                } else {
                    plans.len() - 1
                };
                Ok(run_plan(&plans[chosen], args, store, prof, mode)?.into_iter().collect())
            }
            ControlPlan::While { cond, iteration, fused, hoisted, vars, maximum_iterations, history, .. } => {
                let n = vars.len();
                let mut state: Vec<Value> = inputs.iter().map(|v| (*v).clone()).collect();
                let every = match history {
                    History::None => None,
                    History::Every { every } => Some((*every).max(1)),
                };
                let mut saved: Vec<Vec<Value>> = vec![Vec::new(); if every.is_some() { n } else { 0 }];
                let mut trips: u64 = 0;
                let (mut cond_frame, mut body_frame) = (Frame::new(cond), Frame::new(iteration));
                let invariants: SmallVec<[Value; 4]> = match hoisted {
                    Some(h) => run_plan(h, inputs, store, prof.as_deref_mut(), mode)?.into_iter().collect(),
                    None => SmallVec::new(),
                };
                // With the fused step, the condition of the next iteration
                // comes out of this iteration's run.
                let mut pending: Option<Value> = None;
                loop {
                    if maximum_iterations.is_some_and(|m| trips >= m) {
                        break;
                    }
                    let refs: SmallVec<[&Value; 8]> = state.iter().collect();
                    let go = match pending.take() {
                        Some(go) => go,
                        None => {
                            let mut c = cond_frame.run(&refs, store, prof.as_deref_mut(), mode)?;
                            if c.is_empty() {
                                return Err(Error::graph("internal: the loop condition returned nothing"));
                            }
                            c.swap_remove(0)
                        }
                    };
                    if scalar(&go)? == 0.0 {
                        break;
                    }
                    if let Some(k) = every {
                        if trips.is_multiple_of(k) {
                            for (list, v) in saved.iter_mut().zip(&state) {
                                list.push(v.clone());
                            }
                        }
                    }
                    let mut refs = refs;
                    refs.extend(invariants.iter());
                    let mut next = body_frame.run(&refs, store, prof.as_deref_mut(), mode)?;
                    drop(refs);
                    if *fused {
                        pending = next.pop();
                    }
                    if next.len() != n {
                        return Err(Error::graph("internal: the loop body returned the wrong number of values"));
                    }
                    for (i, (v, m)) in next.iter().zip(vars).enumerate() {
                        if v.dtype != m.dtype || !keeps_invariant(v.shape(), &m.shape) {
                            return Err(Error::shape(format!(
                                "iteration {trips}: the loop body made loop variable {i} {}{}, outside its invariant {m}",
                                v.dtype,
                                v.shape()
                            )));
                        }
                    }
                    for (slot, v) in state.iter_mut().zip(next) {
                        *slot = v;
                    }
                    trips += 1;
                }
                state.truncate(n);
                let mut out: SmallVec<[Value; 1]> = state.into_iter().collect();
                if every.is_some() {
                    for (i, (list, m)) in saved.iter().zip(vars).enumerate() {
                        out.push(stack(list, m).map_err(|e| {
                            Error::new(
                                e.kind(),
                                format!(
                                    "keeping loop variable {i} for the gradient: {} (a loop variable that changes \
                                     shape cannot be differentiated)",
                                    e.message()
                                ),
                            )
                        })?);
                    }
                    let count = i64::try_from(trips).map_err(|_| Error::invalid("trip count overflow"))?;
                    out.push(Value::from_le_bytes(crate::tensor::DType::I64, Shape::scalar(), &count.to_le_bytes())?);
                }
                Ok(out)
            }
        }
    }
}

/// A plan and the slots it runs in, kept from one iteration to the next.
struct Frame<'p> {
    plan: &'p Plan,
    slots: Vec<Option<Value>>,
}

impl<'p> Frame<'p> {
    fn new(plan: &'p Plan) -> Frame<'p> {
        Frame { plan, slots: vec![None; if plan.parallel { 0 } else { plan.num_slots }] }
    }

    fn run(
        &mut self,
        feeds: &[&Value],
        store: &VariableStore,
        prof: Option<&mut Profiler>,
        mode: Mode,
    ) -> Result<SmallVec<[Value; 4]>> {
        // An iteration's device part replayed (not when profiling step by step).
        if mode.device_graphs && self.plan.capture.may_record() && prof.is_none() {
            if let Some(out) = super::capture::run(self.plan, feeds, store)? {
                return Ok(out.into_iter().collect());
            }
        }
        if self.plan.parallel {
            return Ok(run_plan(self.plan, feeds, store, prof, mode)?.into_iter().collect());
        }
        let ran = run_sequential(self.plan, feeds, store, prof, &mut self.slots, mode);
        let out = ran.and_then(|()| {
            self.plan
                .fetches
                .iter()
                .map(|&s| {
                    self.slots[s as usize].clone().ok_or_else(|| Error::graph("internal: a fetched value is missing"))
                })
                .collect()
        });
        for s in &mut self.slots {
            *s = None;
        }
        out
    }
}

/// A scalar's value as f64 (a selector or a condition).
fn scalar(v: &Value) -> Result<f64> {
    let host;
    let v = if v.device() == Device::CPU {
        v
    } else {
        host = backend::transfer(v, Device::CPU)?;
        &host
    };
    v.scalar_f64().ok_or_else(|| Error::shape(format!("expected a scalar, got {}{}", v.dtype, v.shape())))
}

/// `values` stacked along a new first axis (an empty stack of `meta`'s
/// shape, unknown dimensions as 0, when there are none).
fn stack(values: &[Value], meta: &Meta) -> Result<Value> {
    let ctx = KernelCtx::EAGER;
    if values.is_empty() {
        let mut dims = vec![0usize];
        dims.extend(meta.shape.dims().iter().map(|&d| if d == crate::tensor::UNKNOWN { 0 } else { d }));
        let op = Op::Fill { shape: Shape::from(dims), value: Scalar::from(0i64), dtype: meta.dtype };
        return backend::execute(&op, &[], &ctx).map(|mut v| v.swap_remove(0));
    }
    let expanded: Vec<Value> = values
        .iter()
        .map(|v| backend::execute(&Op::ExpandDims { axis: 0 }, &[v], &ctx).map(|mut o| o.swap_remove(0)))
        .collect::<Result<_>>()?;
    let refs: Vec<&Value> = expanded.iter().collect();
    backend::execute(&Op::Concat { axis: 0 }, &refs, &ctx).map(|mut v| v.swap_remove(0))
}
