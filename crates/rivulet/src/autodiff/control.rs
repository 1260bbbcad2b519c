//! Gradients through control flow, built as control flow themselves.
//!
//! - `If`/`Case`: a node of the same kind on the same selector, whose
//!   branch `b` computes the vector-Jacobian product of branch `b`. Only
//!   the taken branch's gradient runs, so an untaken branch's NaN never
//!   reaches the gradient; being ordinary branches, they differentiate
//!   again (gradients of gradients).
//! - `While`: a second forward loop that also keeps the loop variables
//!   entering each iteration (stacked; or every n-th of them with
//!   `checkpoint_every`), then a backward loop that walks them in reverse
//!   and applies the body's vector-Jacobian product, summing the gradients
//!   of captured tensors. The trip count is whatever the forward run found.
//!   With checkpoints, the backward loop recomputes each segment's states
//!   from its checkpoint (one forward loop per segment) before walking it.

use super::{gradients, Unconnected};
use crate::context::{self, Record};
use crate::error::{Error, Result};
use crate::graph::{Function, Graph, NodeId, Tensor};
use crate::op::{History, Op, WhileSpec};
use crate::ops::control::{branch_node, call_inline, while_node, Branches, LoopSpec};
use crate::ops::{self};
use crate::tensor::Shape;
use std::panic::Location;
use std::sync::Arc;

/// The graph new nodes go to: the body being built, else `t`'s graph.
fn target(t: &Tensor) -> Result<Graph> {
    if let Some(body) = context::current_body() {
        return Ok(body.graph.clone());
    }
    t.graph().cloned().ok_or_else(|| Error::graph("internal: control flow recorded on values"))
}

/// `t` as a tensor of the body being built (captured), or itself.
fn local(t: &Tensor) -> Result<Tensor> {
    match context::current_body() {
        Some(body) => body.capture(t),
        None => Ok(t.clone()),
    }
}

/// Gradients of a control-flow record's inputs.
pub(crate) fn gradient(r: &Record, grads: &[Option<Tensor>], wants: &[bool]) -> Result<Vec<Option<Tensor>>> {
    let Some(first) = r.outputs.first() else { return Ok(vec![None; r.inputs.len()]) };
    let graph = first.graph().cloned().ok_or_else(|| Error::graph("internal: control flow recorded on values"))?;
    match &r.op {
        Op::If { then_branch, else_branch, .. } => {
            let fs = vec![graph.function(*then_branch)?, graph.function(*else_branch)?];
            branches_gradient(r, &fs, true, grads, wants)
        }
        Op::Case { branches, .. } => {
            let fs = branches.iter().map(|&b| graph.function(b)).collect::<Result<Vec<_>>>()?;
            branches_gradient(r, &fs, false, grads, wants)
        }
        Op::While { spec } => while_gradient(r, &graph, spec, grads, wants),
        other => Err(Error::graph(format!("internal: {} is not control flow", other.type_name()))),
    }
}

/// Sources for the vector-Jacobian product of an inlined function: each
/// wanted input, or, for an input carrying a variable's handle, the
/// inlined stand-in read of that variable.
fn sources(f: &Function, inputs: &[Tensor], stand_ins: &[(NodeId, Tensor)], wanted: &[usize]) -> Vec<Tensor> {
    wanted
        .iter()
        .map(|&i| {
            let var = f.variable_inputs.iter().find(|(k, _)| *k == i).map(|(_, n)| *n);
            match var.and_then(|n| stand_ins.iter().find(|(s, _)| *s == n)) {
                Some((_, t)) => t.clone(),
                None => inputs[i].clone(),
            }
        })
        .collect()
}

fn branches_gradient(
    r: &Record,
    fs: &[Arc<Function>],
    boolean: bool,
    grads: &[Option<Tensor>],
    wants: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (selector, args) = r.inputs.split_first().ok_or_else(|| Error::graph("internal: a branch without selector"))?;
    let with_grad: Vec<usize> =
        (0..r.outputs.len()).filter(|&i| grads[i].is_some() && r.outputs[i].dtype().is_inexact()).collect();
    let wanted: Vec<usize> = (0..args.len())
        .filter(|&i| wants.get(i + 1).copied().unwrap_or(false) && args[i].dtype().is_inexact())
        .collect();
    if with_grad.is_empty() || wanted.is_empty() {
        return Ok(vec![None; r.inputs.len()]);
    }
    let gys: Vec<Tensor> = with_grad.iter().filter_map(|&i| grads[i].clone()).collect();
    let parent = target(selector)?;
    let selector = local(selector)?;
    let operands: Vec<Tensor> = args.iter().chain(&gys).map(local).collect::<Result<_>>()?;
    let operand_refs: Vec<&Tensor> = operands.iter().collect();
    let n_args = args.len();
    let mut closures: Branches<'_> = Vec::new();
    for f in fs {
        let (with_grad, wanted) = (&with_grad, &wanted);
        let body = move |xs: &[Tensor]| -> Result<Vec<Tensor>> {
            let (caps, gs) = xs.split_at(n_args);
            let here = caps
                .first()
                .or(gs.first())
                .and_then(|t| t.graph().cloned())
                .ok_or_else(|| Error::graph("internal: a gradient branch without inputs"))?;
            let (outs, stand_ins) = call_inline(&here, f, caps)?;
            let ys: Vec<&Tensor> = with_grad.iter().map(|&i| &outs[i]).collect();
            let srcs = sources(f, caps, &stand_ins, wanted);
            let src_refs: Vec<&Tensor> = srcs.iter().collect();
            let g_refs: Vec<&Tensor> = gs.iter().collect();
            let found = gradients(&ys, &src_refs, Some(&g_refs), Unconnected::Zero)?;
            found.into_iter().map(|g| g.ok_or_else(|| Error::graph("internal: no gradient"))).collect()
        };
        closures.push((format!("{}/grad", f.name), Box::new(body)));
    }
    let outs = branch_node(&parent, &selector, boolean, &operand_refs, closures, Location::caller())?;
    let mut result = vec![None; r.inputs.len()];
    for (k, &i) in wanted.iter().enumerate() {
        result[i + 1] = Some(outs[k].clone());
    }
    Ok(result)
}

fn scalar_i64(v: i64) -> Tensor {
    Tensor::scalar(v)
}

/// What the backward loops need of the forward loop: its body, its
/// captures, which loop variables are float (`floats`, the ones with
/// gradients), which captures want gradients, and the loop variables'
/// shape invariants.
struct Backward<'a> {
    body: &'a Arc<Function>,
    captures: &'a [Tensor],
    floats: &'a [usize],
    wanted: &'a [usize],
    invariants: &'a [Shape],
}

/// The gradients a backward loop carries: of the float loop variables, of
/// the wanted captures.
type Carried = (Vec<Tensor>, Vec<Tensor>);

/// One step of a count-down loop: `(k, gx, gc)` to the next gradients.
type CountDownStep<'a> = dyn FnMut(&Tensor, &[Tensor], &[Tensor]) -> Result<Carried> + 'a;

impl Backward<'_> {
    /// The body inlined in the body being built, on `state` (the loop
    /// variables) and the captures.
    fn call_body(&self, state: Vec<Tensor>) -> Result<(Vec<Tensor>, crate::ops::control::Inlined)> {
        let mut inputs = state;
        for c in self.captures {
            inputs.push(local(c)?);
        }
        let here = inputs[0].graph().cloned().ok_or_else(|| Error::graph("internal: the state is not symbolic"))?;
        let inlined = call_inline(&here, self.body, &inputs)?;
        Ok((inputs, inlined))
    }

    /// A loop in `parent` with `k` running from `count - 1` down to 0,
    /// carrying the gradients: `step(k, gx, gc)` gives the next ones.
    fn count_down(
        &self,
        parent: &Graph,
        count: &Tensor,
        (gx, gc): Carried,
        step: &mut CountDownStep<'_>,
    ) -> Result<Carried> {
        let nf = self.floats.len();
        let mut vars = vec![ops::sub(count, &scalar_i64(1))?];
        vars.extend(gx);
        vars.extend(gc);
        let mut shapes = vec![Shape::scalar()];
        shapes.extend(self.floats.iter().map(|&j| self.invariants[j].clone()));
        shapes.extend(self.wanted.iter().map(|&m| self.captures[m].shape().clone()));
        let mut cond = |xs: &[Tensor]| ops::greater_equal(&xs[0], &scalar_i64(0));
        let mut body = |xs: &[Tensor]| -> Result<Vec<Tensor>> {
            let (gx, gc) = xs[1..].split_at(nf);
            let (gx, gc) = step(&xs[0], gx, gc)?;
            let mut next = vec![ops::sub(&xs[0], &scalar_i64(1))?];
            next.extend(gx);
            next.extend(gc);
            Ok(next)
        };
        let spec = LoopSpec {
            invariants: shapes,
            maximum_iterations: None,
            history: History::None,
            checkpoint_every: None,
            name: format!("{}/grad", self.body.name),
        };
        let outs = while_node(parent, &vars, &mut cond, &mut body, &spec, Location::caller())?;
        Ok((outs[1..1 + nf].to_vec(), outs[1 + nf..].to_vec()))
    }

    /// The backward loop over `count` stacked states `history` (the loop
    /// variables entering each iteration, oldest first): from the last
    /// state back to the first, apply the body's vector-Jacobian product
    /// to the loop variables' gradients and add the captures' to theirs.
    fn walk(&self, parent: &Graph, history: &[Tensor], count: &Tensor, carried: Carried) -> Result<Carried> {
        let n = history.len();
        self.count_down(parent, count, carried, &mut |i, gx, gc| {
            let state: Vec<Tensor> = history.iter().map(|h| ops::gather(h, i, 0, 0)).collect::<Result<_>>()?;
            let (inputs, (outs, stand_ins)) = self.call_body(state)?;
            let ys: Vec<&Tensor> = self.floats.iter().map(|&j| &outs[j]).collect();
            let mut wanted_inputs: Vec<usize> = self.floats.to_vec();
            wanted_inputs.extend(self.wanted.iter().map(|&m| n + m));
            let srcs = sources(self.body, &inputs, &stand_ins, &wanted_inputs);
            let src_refs: Vec<&Tensor> = srcs.iter().collect();
            let g_refs: Vec<&Tensor> = gx.iter().collect();
            let found = gradients(&ys, &src_refs, Some(&g_refs), Unconnected::Zero)?;
            let mut found = found
                .into_iter()
                .map(|g| g.ok_or_else(|| Error::graph("internal: no gradient")))
                .collect::<Result<Vec<_>>>()?;
            let dc = found.split_off(gx.len());
            let gc = gc.iter().zip(&dc).map(|(a, b)| ops::add(a, b)).collect::<Result<_>>()?;
            Ok((found, gc))
        })
    }

    /// The backward pass from checkpoints kept every `every` iterations:
    /// for each segment, last first, recompute its states from its
    /// checkpoint with a loop that keeps them, then walk them back.
    fn segmented(
        &self,
        parent: &Graph,
        checkpoints: &[Tensor],
        trips: &Tensor,
        every: u64,
        carried: Carried,
    ) -> Result<Carried> {
        let k = i64::try_from(every).map_err(|_| Error::invalid("checkpoint_every is too large"))?;
        let n = checkpoints.len();
        let segments = ops::floor_div(&ops::add(trips, &scalar_i64(k - 1))?, &scalar_i64(k))?;
        self.count_down(parent, &segments, carried, &mut |s, gx, gc| {
            let here =
                context::current_body().map(|b| b.graph.clone()).ok_or_else(|| Error::graph("internal: no body"))?;
            let start = ops::mul(s, &scalar_i64(k))?;
            let len = ops::minimum(&scalar_i64(k), &ops::sub(&local(trips)?, &start)?)?;
            // Recompute the segment's states: `len` runs of the body from the checkpoint.
            let mut seg_vars = vec![ops::constant(&here, scalar_i64(0))?];
            for c in checkpoints {
                seg_vars.push(ops::gather(&local(c)?, s, 0, 0)?);
            }
            let mut seg_cond = |ys: &[Tensor]| ops::less(&ys[0], &len);
            let mut seg_body = |ys: &[Tensor]| -> Result<Vec<Tensor>> {
                let (_, (outs, _)) = self.call_body(ys[1..].to_vec())?;
                let mut next = vec![ops::add(&ys[0], &scalar_i64(1))?];
                next.extend(outs);
                Ok(next)
            };
            let mut seg_shapes = vec![Shape::scalar()];
            seg_shapes.extend(self.invariants.iter().cloned());
            let seg_spec = LoopSpec {
                invariants: seg_shapes,
                maximum_iterations: None,
                history: History::Every { every: 1 },
                checkpoint_every: None,
                name: format!("{}/recompute", self.body.name),
            };
            let outs = while_node(&here, &seg_vars, &mut seg_cond, &mut seg_body, &seg_spec, Location::caller())?;
            // Outputs: the n + 1 variables, their n + 1 stacks, the count.
            self.walk(&here, &outs[n + 2..2 * n + 2], &outs[2 * n + 2], (gx.to_vec(), gc.to_vec()))
        })
    }
}

fn while_gradient(
    r: &Record,
    graph: &Graph,
    spec: &WhileSpec,
    grads: &[Option<Tensor>],
    wants: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let n = spec.vars.len();
    if grads.iter().skip(n).any(Option::is_some) {
        return Err(Error::unimplemented(
            "second-order gradients through while_loop are not supported (they are through cond and switch_case)",
        ));
    }
    let captures = &r.inputs[n..];
    let floats: Vec<usize> = (0..n).filter(|&j| spec.vars[j].dtype.is_inexact()).collect();
    let wanted: Vec<usize> = (0..captures.len())
        .filter(|&m| wants.get(n + m).copied().unwrap_or(false) && captures[m].dtype().is_inexact())
        .collect();
    let any_var_wanted = floats.iter().any(|&j| wants.get(j).copied().unwrap_or(false));
    if floats.iter().all(|&j| grads[j].is_none()) || (wanted.is_empty() && !any_var_wanted) {
        return Ok(vec![None; r.inputs.len()]);
    }
    let body = graph.function(spec.body)?;
    let parent = target(&r.outputs[0])?;
    let every = spec.checkpoint_every.unwrap_or(1).max(1);
    // The forward loop again, keeping its states.
    let mut kept = spec.clone();
    kept.history = History::Every { every };
    let inputs: Vec<Tensor> = r.inputs.iter().map(local).collect::<Result<_>>()?;
    let input_refs: Vec<&Tensor> = inputs.iter().collect();
    let outs = parent.add_node(Op::While { spec: kept }, &input_refs, context::current_device(), Location::caller())?;
    let history: Vec<Tensor> = outs[n..2 * n].to_vec();
    let trips = outs[2 * n].clone();
    let captures: Vec<Tensor> = captures.iter().map(local).collect::<Result<_>>()?;
    let gx: Vec<Tensor> = floats
        .iter()
        .map(|&j| match &grads[j] {
            Some(g) => local(g),
            None => ops::zeros_like(&local(&r.outputs[j])?),
        })
        .collect::<Result<_>>()?;
    let gc: Vec<Tensor> = wanted.iter().map(|&m| ops::zeros_like(&captures[m])).collect::<Result<_>>()?;
    let invariants: Vec<Shape> = spec.vars.iter().map(|m| m.shape.clone()).collect();
    let backward =
        Backward { body: &body, captures: &captures, floats: &floats, wanted: &wanted, invariants: &invariants };
    let (gx, gc) = if every == 1 {
        backward.walk(&parent, &history, &trips, (gx, gc))?
    } else {
        backward.segmented(&parent, &history, &trips, every, (gx, gc))?
    };
    let mut result = vec![None; r.inputs.len()];
    for (k, &j) in floats.iter().enumerate() {
        if wants.get(j).copied().unwrap_or(false) {
            result[j] = Some(gx[k].clone());
        }
    }
    for (k, &m) in wanted.iter().enumerate() {
        result[n + m] = Some(gc[k].clone());
    }
    Ok(result)
}
