//! Batch-norm folding: a convolution or matmul followed by per-channel
//! scales and shifts (a bias, an inference-mode batch normalization) becomes
//! the product with a scaled kernel, plus one shift. The scale then costs a
//! multiply over the kernel instead of over every output element; with
//! constant (frozen) weights, constant folding precomputes it.
//!
//! Unlike the other passes this one changes results by rounding: it is off
//! in [`PassOptions::all`](super::PassOptions::all) and on in
//! [`PassOptions::inference`](super::PassOptions::inference).

use super::ir::{IrEdge, IrGraph, IrNode};
use super::rewrite::consumers;
use super::PassOptions;
use crate::error::Result;
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::window::WindowOp;
use crate::op::{Meta, Op};
use smallvec::smallvec;

/// Is this node a product whose last output axis is the kernel's last axis?
fn foldable_product(op: &Op) -> bool {
    match op {
        Op::MatMul { transpose_b, .. } => !transpose_b,
        Op::Window { f } => matches!(**f, WindowOp::Conv { .. }),
        _ => false,
    }
}

/// Fold every product's chain of per-channel `+ k`, `- k` and `· k` (with
/// at least one `·`) into its kernel.
pub(super) fn fold_batch_norm(ir: &mut IrGraph, _: &PassOptions) -> Result<()> {
    let mut appended = false;
    // Chains never share nodes (each link has one reader, and its vectors
    // are of lower rank than the links), so these stay true for every chain
    // while earlier chains are rewritten.
    let uses = ir.uses();
    let consumers = consumers(ir);
    for m in 0..ir.nodes.len() {
        if ir.nodes[m].dead || !foldable_product(&ir.nodes[m].op) || !ir.nodes[m].outputs[0].dtype.is_float() {
            continue;
        }
        let out = ir.nodes[m].outputs[0].clone();
        let Some(&channels) = out.shape.last() else { continue };
        // Walk the chain of single-use elementwise steps by per-channel vectors.
        let mut chain: Vec<(usize, BinaryOp, IrEdge)> = Vec::new();
        let mut cur = IrEdge { node: m, index: 0 };
        // One use, by a node (a fetch counts as a use and has no consumer).
        while uses.get(&cur).copied() == Some(1) {
            let Some(&next) = consumers.get(&cur).and_then(|c| c.first()) else { break };
            let node = &ir.nodes[next];
            let Op::Binary { f } = node.op else { break };
            let other = if node.inputs[0] == cur { node.inputs[1] } else { node.inputs[0] };
            let om = &ir.nodes[other.node].outputs[other.index];
            let per_channel = om.dtype == out.dtype
                && (om.shape.rank() == 0 || (om.shape.rank() == 1 && om.shape[0] == channels))
                && node.outputs[0] == out
                && node.device == ir.nodes[m].device
                && other != cur;
            let ok = match f {
                BinaryOp::Add | BinaryOp::Mul => per_channel,
                BinaryOp::Sub => per_channel && node.inputs[0] == cur,
                _ => false,
            };
            if !ok {
                break;
            }
            chain.push((next, f, other));
            cur = IrEdge { node: next, index: 0 };
        }
        // Control edges on the product or a link would be lost with them.
        if !chain.iter().any(|&(_, f, _)| f == BinaryOp::Mul)
            || std::iter::once(m).chain(chain.iter().map(|c| c.0)).any(|i| !ir.nodes[i].control.is_empty())
        {
            continue;
        }
        // Build the scale and shift vectors beside the chain.
        let root = chain.last().map(|c| c.0).unwrap_or(m);
        let (root_name, location) = (ir.nodes[root].name.clone(), ir.nodes[root].location.clone());
        let device = ir.nodes[m].device;
        let emit = |ir: &mut IrGraph, op: Op, inputs: Vec<IrEdge>, meta: Meta, what: &str| -> IrEdge {
            let node = IrNode {
                op,
                inputs,
                control: Vec::new(),
                name: format!("{root_name}/folded_{what}"),
                location: location.clone(),
                outputs: smallvec![meta],
                origin: None,
                variables: Vec::new(),
                functions: Vec::new(),
                dead: false,
                device,
            };
            IrEdge { node: ir.push(node), index: 0 }
        };
        // `a f k` for two vectors (or scalars): shaped like the larger.
        let combine = |ir: &mut IrGraph, f: BinaryOp, a: IrEdge, k: IrEdge, what: &str| {
            let (ma, mk) = (&ir.nodes[a.node].outputs[a.index], &ir.nodes[k.node].outputs[k.index]);
            let meta = if ma.shape.rank() >= mk.shape.rank() { ma.clone() } else { mk.clone() };
            emit(ir, Op::Binary { f }, vec![a, k], meta, what)
        };
        // y = product · scale + shift as the chain is walked (`None`: 1 and 0).
        let (mut scale, mut shift): (Option<IrEdge>, Option<IrEdge>) = (None, None);
        for &(_, f, k) in &chain {
            match f {
                BinaryOp::Mul => {
                    scale = Some(match scale {
                        Some(a) => combine(ir, f, a, k, "scale"),
                        None => k,
                    });
                    shift = shift.map(|b| combine(ir, f, b, k, "shift"));
                }
                BinaryOp::Add => {
                    shift = Some(match shift {
                        Some(b) => combine(ir, f, b, k, "shift"),
                        None => k,
                    });
                }
                _ => {
                    shift = Some(match shift {
                        Some(b) => combine(ir, f, b, k, "shift"),
                        None => {
                            let km = ir.nodes[k.node].outputs[k.index].clone();
                            emit(ir, Op::Unary { f: UnaryOp::Neg }, vec![k], km, "shift")
                        }
                    });
                }
            }
        }
        let Some(scale) = scale else { continue };
        let (x, w) = (ir.nodes[m].inputs[0], ir.nodes[m].inputs[1]);
        let wm = ir.nodes[w.node].outputs[w.index].clone();
        let scaled = emit(ir, Op::Binary { f: BinaryOp::Mul }, vec![w, scale], wm, "kernel");
        let product_op = ir.nodes[m].op.clone();
        match shift {
            Some(shift) => {
                let product = emit(ir, product_op, vec![x, scaled], out.clone(), "product");
                ir.nodes[root].op = Op::Binary { f: BinaryOp::Add };
                ir.nodes[root].inputs = vec![product, shift];
            }
            None => {
                ir.nodes[root].op = product_op;
                ir.nodes[root].inputs = vec![x, scaled];
            }
        }
        appended = true;
    }
    if appended {
        ir.sort_topologically();
    }
    Ok(())
}
