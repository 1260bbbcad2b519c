//! The public op functions (`add`, `matmul`, `sum`, ...), with their
//! gradient rules. One function serves both modes: it runs eagerly on values
//! (on the device of the innermost scope) and adds a node when given
//! symbolic tensors or under a default graph; eager calls are recorded on
//! the active gradient tapes. What each op is (attributes, shape inference)
//! is defined in `crate::op`, its kernels in `crate::backend`.
//!
//! Names follow TensorFlow (`add`, `reduce_sum` is [`sum`], `matmul`, ...).

pub mod array;
pub mod collective;
pub mod complex;
pub mod control;
pub mod conv;
pub mod creation;
pub mod ctc;
pub mod elementwise;
pub mod grid;
pub mod image;
pub mod linalg;
pub mod math;
pub mod movement;
pub mod nn;
pub mod optim;
pub mod reduce;
pub mod sampling;
pub mod signal;
pub mod variables;

pub use array::*;
pub use complex::{angle, complex, conj, imag, polar, real};
pub use control::{cond, switch_case, while_loop, Nest, WhileOptions};
pub use conv::*;
pub use creation::*;
pub use ctc::*;
pub use elementwise::*;
pub use grid::{roll, Boundary};
pub use image::{extract_patches, resize, ResizeMethod};
pub use linalg::*;
pub use math::*;
pub use movement::*;
pub use nn::*;
pub use optim::*;
pub use reduce::*;
pub use sampling::*;
pub use signal::{fft, fft2, fft3, ifft, ifft2, ifft3, irfft, irfft2, irfft3, rfft, rfft2, rfft3};
pub use variables::*;

pub use crate::op::{fused, ConstValue, Meta, Metas, Op, MAX_OUTPUTS};

use crate::context;
use crate::error::{location_string, Error, OpContext, Result};
use crate::graph::{Graph, Repr, Tensor};
use crate::tensor::Value;
use smallvec::SmallVec;
use std::panic::Location;

/// The context in which an op is created: eagerly, or into a graph.
#[derive(Clone, Copy)]
pub enum Ctx<'a> {
    /// Run now (unless a graph is the thread's default, see [`Graph::as_default`]).
    Eager,
    /// Add a node to this graph.
    Graph(&'a Graph),
}

impl<'a> Ctx<'a> {
    /// The context `x` lives in: its graph, or eager (for ops without inputs
    /// that go beside `x`, such as a `range` of indices).
    pub fn of(x: &'a Tensor) -> Ctx<'a> {
        match x.graph() {
            Some(g) => Ctx::Graph(g),
            None => Ctx::Eager,
        }
    }
}

impl<'a> From<&'a Graph> for Ctx<'a> {
    fn from(g: &'a Graph) -> Ctx<'a> {
        Ctx::Graph(g)
    }
}

/// Apply `op` to `inputs`: run it now if every input is a value and no graph
/// is in scope, else add a node to the graph of the symbolic inputs.
#[track_caller]
pub(crate) fn apply(op: Op, inputs: &[&Tensor]) -> Result<SmallVec<[Tensor; 1]>> {
    apply_in(Ctx::Eager, op, inputs)
}

/// [`apply`] for single-output ops.
#[track_caller]
pub(crate) fn apply1(op: Op, inputs: &[&Tensor]) -> Result<Tensor> {
    apply_in(Ctx::Eager, op, inputs).map(|mut v| v.swap_remove(0))
}

/// [`apply`] with an explicit context (for ops without inputs).
#[track_caller]
pub(crate) fn apply_in(ctx: Ctx<'_>, op: Op, inputs: &[&Tensor]) -> Result<SmallVec<[Tensor; 1]>> {
    apply_located(ctx, op, inputs, Location::caller())
}

fn apply_located(
    ctx: Ctx<'_>,
    op: Op,
    inputs: &[&Tensor],
    location: &'static Location<'static>,
) -> Result<SmallVec<[Tensor; 1]>> {
    let mut target: Option<&Graph> = match ctx {
        Ctx::Graph(g) => Some(g),
        Ctx::Eager => None,
    };
    let mut checked_body = false;
    for t in inputs {
        if let Repr::Symbolic(s) = &t.repr {
            // Inside a control-flow body, tensors of enclosing graphs are
            // captured (looked at once, at the first symbolic input: eager
            // calls never get here).
            if !std::mem::replace(&mut checked_body, true) {
                if let Some(body) = context::current_body() {
                    if inputs.iter().any(|t| t.graph().is_some_and(|g| !g.same_as(&body.graph))) {
                        let captured: SmallVec<[Tensor; 4]> =
                            inputs.iter().map(|t| body.capture(t)).collect::<Result<_>>()?;
                        let refs: SmallVec<[&Tensor; 4]> = captured.iter().collect();
                        return apply_located(ctx, op, &refs, location);
                    }
                }
            }
            match target {
                None => target = Some(&s.graph),
                Some(g) if !g.same_as(&s.graph) => {
                    return Err(Error::graph(format!(
                        "{} mixes tensors from two different graphs (input {})",
                        op.type_name(),
                        t.name().unwrap_or_default()
                    ))
                    .with_context(|| op_context(&op, None, inputs, location)))
                }
                Some(_) => {}
            }
        }
    }
    let graph = match target {
        Some(g) => Some(g.clone()),
        None => context::default_graph(),
    };
    if let Some(g) = graph {
        let outputs = g.add_node(op.clone(), inputs, context::current_device(), location)?;
        // Tapes record symbolic ops too (a tape inside a traced function).
        context::record(&op, inputs, &outputs);
        return Ok(outputs);
    }
    eager(&op, inputs, location)
}

#[track_caller]
pub(crate) fn apply1_in(ctx: Ctx<'_>, op: Op, inputs: &[&Tensor]) -> Result<Tensor> {
    apply_in(ctx, op, inputs).map(|mut v| v.swap_remove(0))
}

/// Check an operand list for the variadic helpers.
pub(crate) fn nonempty<'a>(what: &str, xs: &'a [&'a Tensor]) -> Result<&'a [&'a Tensor]> {
    if xs.is_empty() {
        return Err(Error::invalid(format!("{what} needs at least one tensor")));
    }
    Ok(xs)
}

/// Give an error of a public function the context of its call: op type,
/// inputs, the caller's line. Used for argument errors found before the op
/// is built (a bad axis, say), and around composites, whose inner ops would
/// otherwise report a line inside the library.
#[track_caller]
pub(crate) fn checked<T>(r: Result<T>, op_type: &str, inputs: &[&Tensor]) -> Result<T> {
    let location = Location::caller();
    r.map_err(|e| {
        e.at_caller(|| OpContext {
            op: op_type.to_string(),
            node: None,
            inputs: inputs.iter().map(|t| format!("{}{}", t.dtype(), t.shape())).collect(),
            location: location_string(location),
        })
    })
}

fn op_context(op: &Op, node: Option<String>, inputs: &[&Tensor], location: &Location<'_>) -> OpContext {
    OpContext {
        op: op.type_name().to_string(),
        node,
        inputs: inputs.iter().map(|t| format!("{}{}", t.dtype(), t.shape())).collect(),
        location: location_string(location),
    }
}

/// Run an op on values now.
fn eager(op: &Op, inputs: &[&Tensor], location: &'static Location<'static>) -> Result<SmallVec<[Tensor; 1]>> {
    let mut values: SmallVec<[&Value; 4]> = SmallVec::new();
    for t in inputs {
        // All inputs are values here: symbolic ones took the graph path.
        values.push(t.value()?);
    }
    let ctx = crate::backend::KernelCtx::EAGER;
    let outputs = match context::current_device() {
        Some(device) => crate::backend::execute_on(device, op, &values, &ctx),
        None => crate::backend::execute_automatic(op, &values, &ctx),
    }
    .map_err(|e| e.with_context(|| op_context(op, None, inputs, location)))?;
    let outputs: SmallVec<[Tensor; 1]> = outputs.into_iter().map(Tensor::from_value).collect();
    context::record(op, inputs, &outputs);
    Ok(outputs)
}

impl Op {
    /// Gradients with respect to each input, given the gradient flowing into
    /// each output (`None`: zero). Written with the public ops, so it builds
    /// nodes for symbolic tensors and computes values eagerly, and can itself
    /// be differentiated. `wants[i]` says whether input `i` needs one; rules
    /// may skip the others. `None` in the result means no gradient.
    pub(crate) fn gradient(
        &self,
        inputs: &[Tensor],
        outputs: &[Tensor],
        grads: &[Option<Tensor>],
        wants: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let none = || vec![None; inputs.len()];
        let Some(g) = grads.first().cloned().flatten().or_else(|| {
            // Multi-output ops may only have gradients for later outputs.
            if grads.iter().any(|g| g.is_some()) {
                outputs.first().and_then(|y| zeros_like(y).ok())
            } else {
                None
            }
        }) else {
            return Ok(none());
        };
        let want = |i: usize| wants.get(i).copied().unwrap_or(false);
        Ok(match self {
            Op::Identity | Op::CopyToDevice { .. } | Op::ReadVariable => vec![Some(g)],
            Op::If { .. } | Op::Case { .. } | Op::While { .. } => {
                return Err(Error::graph("internal: control flow is differentiated by autodiff"))
            }
            Op::StopGradient
            | Op::NoOp
            | Op::Assign { .. }
            | Op::FillLike { .. }
            | Op::RandomLike { .. }
            | Op::ArgReduce { .. }
            | Op::ApplyUpdate { .. }
            | Op::ResourceApplyUpdate { .. } => none(),
            // Fused ops exist only in optimized plans, after gradients are built.
            Op::FusedElementwise { .. } | Op::FusedMatMul { .. } => {
                return Err(Error::unimplemented(
                    "fused ops have no gradient: differentiate the graph before optimizing",
                ))
            }
            Op::Unary { f } => vec![elementwise::unary_grad(*f, &inputs[0], &outputs[0], &g)?],
            Op::Binary { f } => {
                elementwise::binary_grad(*f, &inputs[0], &inputs[1], &outputs[0], &g, [want(0), want(1)])?.to_vec()
            }
            Op::Select => {
                let (c, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
                vec![
                    None,
                    if want(1) { Some(movement::sum_to(&select(c, &g, 0.0)?, a)?) } else { None },
                    if want(2) { Some(movement::sum_to(&select(c, 0.0, &g)?, b)?) } else { None },
                ]
            }
            Op::Cast { dtype } => {
                let from = inputs[0].dtype();
                if from.is_inexact() && dtype.is_inexact() {
                    vec![Some(cast(&g, from)?)]
                } else {
                    none()
                }
            }
            Op::Reduce { f, axes, keepdims } => {
                vec![reduce::reduce_grad(*f, axes, *keepdims, &inputs[0], &outputs[0], &g)?]
            }
            Op::Scan { f, axis, exclusive, reverse } => {
                vec![Some(reduce::scan_grad(*f, *axis, *exclusive, *reverse, &inputs[0], &outputs[0], &g)?)]
            }
            Op::MatMul { transpose_a, transpose_b } => {
                linalg::matmul_grad(*transpose_a, *transpose_b, &inputs[0], &inputs[1], &g, [want(0), want(1)])?
                    .to_vec()
            }
            Op::Softmax { axis } => vec![Some(nn::softmax_grad(false, *axis, &outputs[0], &g)?)],
            Op::LogSoftmax { axis } => vec![Some(nn::softmax_grad(true, *axis, &outputs[0], &g)?)],
            Op::TopK { .. } => {
                let Some(gv) = grads[0].clone() else { return Ok(none()) };
                let last = inputs[0].rank() - 1;
                vec![Some(movement::gather_grad(&gv, &outputs[1], &inputs[0], last, last)?)]
            }
            Op::Host { f: crate::op::HostOp::IsotonicRegression } => match &grads[0] {
                Some(gv) => vec![Some(nn::segment_average(gv, &outputs[1])?)],
                None => none(),
            },
            Op::Host { f: crate::op::HostOp::UniqueRows } => none(),
            Op::Collective {
                c: crate::op::CollectiveOp::StartAllReduce { .. } | crate::op::CollectiveOp::WaitAllReduce { .. },
            } => none(),
            Op::Collective { c } => collective::collective_grad(c, &inputs[0], &outputs[0], &g)?,
            Op::Linalg { f } => linalg::linalg_grad(*f, inputs, outputs, grads, wants)?,
            Op::Complex { f } => complex::complex_grad(*f, inputs, &g, wants)?,
            Op::Fft { f } => vec![Some(signal::fft_grad(*f, &inputs[0], &g)?)],
            Op::Window { f } => conv::window_grad(f, inputs, &g, wants)?,
            Op::Const { .. }
            | Op::Placeholder { .. }
            | Op::Variable { .. }
            | Op::Fill { .. }
            | Op::Range { .. }
            | Op::Linspace { .. }
            | Op::Eye { .. }
            | Op::Random { .. } => none(),
            crate::op::movement_ops!() => movement::movement_grad(self, inputs, outputs, grads)?,
        })
    }
}
