//! Automatic differentiation, reverse mode.
//!
//! One engine serves both modes: it walks recorded op applications (graph
//! nodes for [`gradients`], eager ops for a [`GradientTape`]) backwards and
//! applies each op's gradient rule ([`Op::gradient`], written with the public
//! ops). On symbolic tensors the rules add nodes to the graph; on values they
//! compute at once — and, being ops themselves, they can be differentiated
//! again (gradients of gradients).

mod control;
pub mod tape;

pub use tape::GradientTape;

use crate::context::{key, Key, Record};
use crate::error::{Error, Result};
use crate::graph::Edge;
use crate::graph::Tensor;
use crate::ops::{self};
use rustc_hash::{FxHashMap, FxHashSet};

/// Add `g` to the gradient accumulated for `k`.
fn accumulate(grads: &mut FxHashMap<Key, Tensor>, k: Key, g: Tensor) -> Result<()> {
    match grads.remove(&k) {
        Some(prev) => {
            grads.insert(k, ops::add(&prev, &g)?);
        }
        None => {
            grads.insert(k, g);
        }
    }
    Ok(())
}

/// Reverse accumulation over `records` (in execution order) from `seeds`
/// (gradients of the targets) to `sources`. Returns the gradient of each
/// source, `None` where it does not depend on the targets.
pub(crate) fn backprop<'a>(
    records: impl DoubleEndedIterator<Item = &'a Record> + Clone,
    seeds: Vec<(Key, Tensor)>,
    sources: &[Key],
) -> Result<Vec<Option<Tensor>>> {
    // Forward: which tensors depend on a source (only those need gradients).
    let mut relevant: FxHashSet<Key> = sources.iter().copied().collect();
    for r in records.clone() {
        if r.inputs.iter().any(|t| relevant.contains(&key(t))) {
            relevant.extend(r.outputs.iter().map(key));
        }
    }
    let mut grads: FxHashMap<Key, Tensor> = FxHashMap::default();
    for (k, g) in seeds {
        accumulate(&mut grads, k, g)?;
    }
    for r in records.rev() {
        if !r.outputs.iter().any(|t| relevant.contains(&key(t))) {
            continue;
        }
        let out_grads: Vec<Option<Tensor>> = r.outputs.iter().map(|t| grads.get(&key(t)).cloned()).collect();
        if out_grads.iter().all(Option::is_none) {
            continue;
        }
        let wants: Vec<bool> = r.inputs.iter().map(|t| t.dtype().is_inexact() && relevant.contains(&key(t))).collect();
        if !wants.iter().any(|&w| w) {
            continue;
        }
        let in_grads = if r.op.is_control_flow() {
            control::gradient(r, &out_grads, &wants)?
        } else {
            r.op.gradient(&r.inputs, &r.outputs, &out_grads, &wants)?
        };
        for ((t, g), want) in r.inputs.iter().zip(in_grads).zip(&wants) {
            if let (Some(g), true) = (g, *want) {
                if g.dtype() != t.dtype() {
                    return Err(Error::dtype(format!(
                        "internal: the gradient rule of {} gave a {} gradient for a {} input",
                        r.op.type_name(),
                        g.dtype(),
                        t.dtype()
                    )));
                }
                accumulate(&mut grads, key(t), g)?;
            }
        }
    }
    Ok(sources.iter().map(|k| grads.get(k).cloned()).collect())
}

/// What to return for a source the targets do not depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Unconnected {
    /// `None` (TensorFlow's default).
    #[default]
    None,
    /// Zeros shaped like the source.
    Zero,
}

/// Symbolic gradients, like `tf.gradients`: add to the graph the nodes that
/// compute `sum(d ys / d xs)`, weighting each `ys[i]` by `grad_ys[i]` (ones
/// when not given). Every tensor must belong to the same graph.
#[track_caller]
pub fn gradients(
    ys: &[&Tensor],
    xs: &[&Tensor],
    grad_ys: Option<&[&Tensor]>,
    unconnected: Unconnected,
) -> Result<Vec<Option<Tensor>>> {
    let Some(graph) = ys.first().and_then(|y| y.graph()).cloned() else {
        return Err(Error::graph("gradients() needs symbolic targets (use a GradientTape in eager mode)"));
    };
    for t in ys.iter().chain(xs.iter()) {
        if !t.graph().is_some_and(|g| g.same_as(&graph)) {
            return Err(Error::graph(format!(
                "gradients(): every target and source must be a tensor of the same graph ({})",
                t.name().unwrap_or_else(|| "a value".to_string())
            )));
        }
    }
    if let Some(gy) = grad_ys {
        if gy.len() != ys.len() {
            return Err(Error::invalid(format!("gradients(): {} targets but {} grad_ys", ys.len(), gy.len())));
        }
    }
    // The nodes between the earliest source and the latest target (ids are topological).
    let first = xs.iter().filter_map(|x| x.op()).map(|o| o.id()).min().unwrap_or(0);
    let last = ys.iter().filter_map(|y| y.op()).map(|o| o.id()).max().unwrap_or(0);
    let records: Vec<Record> = {
        let state = graph.read();
        (first..=last.min(state.nodes.len().saturating_sub(1)))
            .map(|id| {
                let n = &state.nodes[id];
                let input = |e: &Edge| {
                    let m = &state.nodes[e.node].outputs[e.index];
                    Tensor::symbolic(graph.clone(), e.node, e.index, m.dtype, m.shape.clone())
                };
                Record {
                    op: n.op.clone(),
                    inputs: n.inputs.iter().map(input).collect(),
                    outputs: n
                        .outputs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| Tensor::symbolic(graph.clone(), id, i, m.dtype, m.shape.clone()))
                        .collect(),
                }
            })
            .collect()
    };
    let mut seeds = Vec::with_capacity(ys.len());
    for (i, y) in ys.iter().enumerate() {
        let g = match grad_ys {
            Some(gy) => gy[i].clone(),
            None => ops::ones_like(y)?,
        };
        seeds.push((key(y), g));
    }
    let sources: Vec<Key> = xs.iter().map(|x| key(x)).collect();
    let found = backprop(records.iter(), seeds, &sources)?;
    finish(found, xs, unconnected)
}

/// Apply the unconnected policy.
pub(crate) fn finish(
    found: Vec<Option<Tensor>>,
    xs: &[&Tensor],
    unconnected: Unconnected,
) -> Result<Vec<Option<Tensor>>> {
    found
        .into_iter()
        .zip(xs)
        .map(|(g, x)| match (g, unconnected) {
            (Some(g), _) => Ok(Some(g)),
            (None, Unconnected::None) => Ok(None),
            (None, Unconnected::Zero) => ops::zeros_like(x).map(Some),
        })
        .collect()
}
