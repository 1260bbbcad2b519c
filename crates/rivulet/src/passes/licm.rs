//! Loop-invariant code motion: the nodes of a loop body that depend only on
//! the loop's captures (not on the loop variables, not on state) are
//! computed once before the loop, and the body reads their values as extra
//! inputs.

use super::{IrEdge, IrGraph};
use crate::op::Op;

/// Move the loop-invariant nodes out of `body`, whose first `variant_feeds`
/// feeds are the loop variables (the others, captures, stay the same across
/// iterations). Returns the IR that computes them once (feeds: the body's
/// own; fetches: the hoisted values, which become the body's extra feeds
/// in that order), or `None` when nothing is invariant.
pub(crate) fn hoist_loop_invariants(body: &mut IrGraph, variant_feeds: usize) -> Option<IrGraph> {
    let n = body.nodes.len();
    let mut feed_position: Vec<Option<usize>> = vec![None; n];
    for (k, (node, _, _)) in body.feeds.iter().enumerate() {
        feed_position[*node].get_or_insert(k);
    }
    let mut invariant = vec![false; n];
    for i in 0..n {
        let node = &body.nodes[i];
        invariant[i] = !node.dead
            && match feed_position[i] {
                Some(k) => k >= variant_feeds,
                None => {
                    !node.op.is_stateful()
                        && !node.op.is_control_flow()
                        && !matches!(node.op, Op::Placeholder { .. })
                        && node.control.is_empty()
                        && node.outputs.len() == 1
                        && node.inputs.iter().all(|e| invariant[e.node])
                }
            };
    }
    // Hoist the invariant computations a variant node (or the body's result) reads.
    let worth = |i: usize| invariant[i] && feed_position[i].is_none() && !matches!(body.nodes[i].op, Op::Const { .. });
    let mut hoist = vec![false; n];
    for node in body.nodes.iter().enumerate().filter(|(i, nd)| !nd.dead && !invariant[*i]).map(|(_, nd)| nd) {
        for e in &node.inputs {
            if worth(e.node) {
                hoist[e.node] = true;
            }
        }
    }
    for e in &body.fetches {
        if worth(e.node) {
            hoist[e.node] = true;
        }
    }
    let hoisted: Vec<usize> = (0..n).filter(|&i| hoist[i]).collect();
    if hoisted.is_empty() {
        return None;
    }
    let mut before = body.clone();
    before.fetches = hoisted.iter().map(|&node| IrEdge { node, index: 0 }).collect();
    before.targets.clear();
    for &i in &hoisted {
        let node = &mut body.nodes[i];
        let meta = node.outputs[0].clone();
        node.op = Op::Placeholder { dtype: meta.dtype, shape: meta.shape.clone() };
        node.inputs.clear();
        node.control.clear();
        node.variables.clear();
        node.functions.clear();
        node.name = format!("{} (hoisted)", node.name);
        body.feeds.push((i, meta, node.name.clone()));
    }
    Some(before)
}
