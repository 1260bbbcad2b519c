//! The rewriting passes.

use super::ir::{IrEdge, IrGraph, Substitution};
use super::PassOptions;
use crate::backend::{self, KernelCtx};
use crate::error::Result;
use crate::graph::NodeId;
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::fused::{FusedProgram, FusedReduce, Instr};
use crate::op::reduce::ReduceOp;
use crate::op::window::WindowOp;
use crate::op::{AssignOp, ConstValue, Op};
use crate::tensor::dtype::with_dtype;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Scalar, Value};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

/// The value of a constant node.
fn const_value(ir: &IrGraph, e: IrEdge) -> Option<&Value> {
    match &ir.nodes[e.node].op {
        Op::Const { value } if !ir.nodes[e.node].dead => Some(&value.0),
        _ => None,
    }
}

/// The single value of a one-element constant, as f64.
fn const_scalar(ir: &IrGraph, e: IrEdge) -> Option<f64> {
    const_value(ir, e)?.scalar_f64()
}

/// Point every reader of `node`'s output 0 at `to` (when types agree).
fn forward(ir: &IrGraph, subst: &mut Substitution, node: usize, to: IrEdge) -> bool {
    let to_meta = &ir.nodes[to.node].outputs[to.index];
    if ir.nodes[node].outputs.len() != 1 || ir.nodes[node].outputs[0] != *to_meta {
        return false;
    }
    subst.insert(IrEdge { node, index: 0 }, to);
    true
}

/// Whether `c` is a zero that leaves `x` unchanged, bit for bit, as the
/// `side` operand of `x + c` (or of `x - c` when `subtract`).
/// In floating point `-0 + 0` is `+0`, so only `x + (-0)` and `x - (+0)` are
/// identities; every integer zero is.
fn neutral_zero(c: Option<f64>, dtype: DType, subtract: bool) -> bool {
    match c {
        Some(z) if z == 0.0 => !dtype.is_float() || z.is_sign_negative() != subtract,
        _ => false,
    }
}

/// `x * 1`, `x / 1`, `x + (-0)`, `x - 0`, `x - x` (integers), double
/// transposes, reshape of reshape, same-dtype casts, identities. Each keeps
/// the result bit for bit, except that a signaling NaN may stay signaling
/// where the arithmetic would have quieted it (NaN payloads are outside the
/// bitwise promise, as in IEEE 754).
pub(super) fn simplify(ir: &mut IrGraph, _: &PassOptions) -> Result<()> {
    let mut subst = Substitution::default();
    for i in 0..ir.nodes.len() {
        if ir.nodes[i].dead {
            continue;
        }
        subst.apply(&mut ir.nodes[i].inputs);
        let inputs = ir.nodes[i].inputs.clone();
        match ir.nodes[i].op.clone() {
            // An identity that moves a value to another device stays.
            Op::Identity | Op::StopGradient if ir.nodes[i].device == ir.nodes[inputs[0].node].device => {
                forward(ir, &mut subst, i, inputs[0]);
            }
            Op::Cast { dtype } if ir.nodes[inputs[0].node].outputs[inputs[0].index].dtype == dtype => {
                forward(ir, &mut subst, i, inputs[0]);
            }
            Op::Binary { f } => {
                let (a, b) = (inputs[0], inputs[1]);
                let (ca, cb) = (const_scalar(ir, a), const_scalar(ir, b));
                let dtype = ir.nodes[i].outputs[0].dtype;
                let keep = match f {
                    BinaryOp::Mul if cb == Some(1.0) => Some(a),
                    BinaryOp::Mul if ca == Some(1.0) => Some(b),
                    BinaryOp::Div if cb == Some(1.0) => Some(a),
                    BinaryOp::Add if neutral_zero(cb, dtype, false) => Some(a),
                    BinaryOp::Add if neutral_zero(ca, dtype, false) => Some(b),
                    BinaryOp::Sub if neutral_zero(cb, dtype, true) => Some(a),
                    _ => None,
                };
                if let Some(k) = keep {
                    forward(ir, &mut subst, i, k);
                } else if f == BinaryOp::Sub && a == b && dtype.is_int() {
                    // x - x = 0 for integers (floats keep it: inf - inf is NaN).
                    let shape = ir.nodes[i].outputs[0].shape.clone();
                    if shape.is_fully_known() {
                        let zeros =
                            shape.checked_numel().and_then(|n| with_dtype!(dtype, T => HostBuffer::zeroed::<T>(n)));
                        if let Ok(buffer) = zeros {
                            ir.nodes[i].op = Op::Const { value: ConstValue(Value::from_buffer(dtype, shape, buffer)) };
                            ir.nodes[i].inputs.clear();
                        }
                    }
                }
            }
            Op::Transpose { perm } => {
                let src = inputs[0];
                if perm.iter().enumerate().all(|(k, &p)| k == p) {
                    forward(ir, &mut subst, i, src);
                } else if let Op::Transpose { perm: inner } = ir.nodes[src.node].op.clone() {
                    let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
                    let origin = ir.nodes[src.node].inputs[0];
                    if composed.iter().enumerate().all(|(k, &p)| k == p) {
                        forward(ir, &mut subst, i, origin);
                    } else {
                        ir.nodes[i].op = Op::Transpose { perm: composed };
                        ir.nodes[i].inputs = vec![origin];
                    }
                }
            }
            Op::Reshape { .. } | Op::ReshapeLike => {
                let src = inputs[0];
                let (out, inp) = (&ir.nodes[i].outputs[0], &ir.nodes[src.node].outputs[src.index]);
                if out == inp && out.shape.is_fully_known() {
                    forward(ir, &mut subst, i, src);
                } else if matches!(ir.nodes[src.node].op, Op::Reshape { .. } | Op::ReshapeLike) {
                    // reshape(reshape(x)) = reshape(x), and x itself when the shapes agree.
                    let origin = ir.nodes[src.node].inputs[0];
                    ir.nodes[i].inputs[0] = origin;
                    let out = &ir.nodes[i].outputs[0];
                    if ir.nodes[origin.node].outputs[origin.index] == *out && out.shape.is_fully_known() {
                        forward(ir, &mut subst, i, origin);
                    }
                }
            }
            _ => {}
        }
    }
    ir.substitute(&subst);
    Ok(())
}

/// Ops that may be evaluated ahead of time when their inputs are constant.
fn foldable(op: &Op) -> bool {
    !op.is_stateful()
        && !matches!(
            op,
            Op::Const { .. } | Op::Placeholder { .. } | Op::NoOp | Op::FusedElementwise { .. } | Op::FusedMatMul { .. }
        )
}

/// Replace nodes whose inputs are all constants by their values.
pub(super) fn fold_constants(ir: &mut IrGraph, options: &PassOptions) -> Result<()> {
    for i in 0..ir.nodes.len() {
        let n = &ir.nodes[i];
        if n.dead || n.inputs.is_empty() || n.outputs.len() != 1 || !foldable(&n.op) {
            continue;
        }
        match n.outputs[0].shape.numel() {
            Some(k) if k <= options.constant_folding_limit => {}
            _ => continue,
        }
        let values: Option<Vec<Value>> = n.inputs.iter().map(|e| const_value(ir, *e).cloned()).collect();
        let Some(values) = values else { continue };
        let refs: Vec<&Value> = values.iter().collect();
        // An op that fails (integer division by zero) stays, to fail at run time with its context.
        if let Ok(mut out) = backend::execute(&n.op, &refs, &KernelCtx::EAGER) {
            if let Some(v) = out.pop() {
                let node = &mut ir.nodes[i];
                node.op = Op::Const { value: ConstValue(v) };
                node.inputs.clear();
            }
        }
    }
    Ok(())
}

/// Merge nodes that compute the same op on the same inputs.
pub(super) fn eliminate_common_subexpressions(ir: &mut IrGraph, _: &PassOptions) -> Result<()> {
    let mut seen: FxHashMap<String, usize> = FxHashMap::default();
    let mut subst = Substitution::default();
    for i in 0..ir.nodes.len() {
        // Merged inputs first, so that equal computations get equal keys.
        subst.apply(&mut ir.nodes[i].inputs);
        let n = &ir.nodes[i];
        if n.dead || n.op.is_stateful() || matches!(n.op, Op::Placeholder { .. } | Op::NoOp) {
            continue;
        }
        // Large constants are compared by reference only (hashing their text would cost more than it saves).
        if let Op::Const { value } = &n.op {
            if value.0.numel() > 64 {
                continue;
            }
        }
        // Constants are keyed by their exact bytes (their text rounds).
        let key = match &n.op {
            Op::Const { value } => {
                let bytes = value.0.to_le_bytes().unwrap_or_default();
                format!("const|{}|{}|{bytes:02x?}|{:?}|{:?}", value.0.dtype, value.0.shape(), n.control, n.device)
            }
            op => format!("{op:?}|{:?}|{:?}|{:?}", n.inputs, n.control, n.device),
        };
        match seen.get(&key) {
            Some(&first) => {
                for index in 0..ir.nodes[i].outputs.len() {
                    subst.insert(IrEdge { node: i, index }, IrEdge { node: first, index });
                }
                ir.nodes[i].dead = true;
            }
            None => {
                seen.insert(key, i);
            }
        }
    }
    ir.substitute(&subst);
    merge_loops(ir);
    Ok(())
}

/// A loop and the same loop again keeping its states (made for its
/// gradient) run once: the first becomes the one that keeps its states,
/// and the second's readers read it. (The first comes earlier in the list,
/// so every reader still follows what it reads.)
fn merge_loops(ir: &mut IrGraph) {
    let mut subst = Substitution::default();
    for b in 0..ir.nodes.len() {
        let Op::While { spec: kept } = &ir.nodes[b].op else { continue };
        if ir.nodes[b].dead || kept.history == crate::op::History::None {
            continue;
        }
        let plain = (0..b).find(|&a| {
            let n = &ir.nodes[a];
            matches!(&n.op, Op::While { spec } if !n.dead
                && spec.history == crate::op::History::None
                && spec.cond == kept.cond
                && spec.body == kept.body
                && spec.vars == kept.vars
                && spec.maximum_iterations == kept.maximum_iterations)
                && n.inputs == ir.nodes[b].inputs
                && n.device == ir.nodes[b].device
        });
        let Some(a) = plain else { continue };
        ir.nodes[a].op = ir.nodes[b].op.clone();
        ir.nodes[a].outputs = ir.nodes[b].outputs.clone();
        for index in 0..ir.nodes[b].outputs.len() {
            subst.insert(IrEdge { node: b, index }, IrEdge { node: a, index });
        }
        ir.nodes[b].dead = true;
    }
    ir.substitute(&subst);
}

/// Activations the fused matmul can apply.
fn fusable_activation(f: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(f, Relu | Relu6 | Sigmoid | Tanh | Elu | Selu | Gelu | Softplus)
}

/// `activation(matmul(a, b) + bias)` as one FusedMatMul node, and
/// `activation(conv(x, filter) + bias)` as one FusedConv: the bias and the
/// activation run on each block of the product while it is in cache.
pub(super) fn fuse_matmul(ir: &mut IrGraph, _: &PassOptions) -> Result<()> {
    let uses = ir.uses();
    let single = |e: IrEdge| uses.get(&e).copied() == Some(1);
    let consumers = consumers(ir);
    for m in 0..ir.nodes.len() {
        let fused = |activation: Option<UnaryOp>| -> Option<Op> {
            match &ir.nodes[m].op {
                Op::MatMul { transpose_a, transpose_b } => {
                    Some(Op::FusedMatMul { transpose_a: *transpose_a, transpose_b: *transpose_b, activation })
                }
                Op::Window { f } => match &**f {
                    WindowOp::Conv { spec } => {
                        Some(Op::Window { f: Box::new(WindowOp::FusedConv { spec: spec.clone(), activation }) })
                    }
                    _ => None,
                },
                _ => None,
            }
        };
        let me = IrEdge { node: m, index: 0 };
        if fused(None).is_none() || ir.nodes[m].dead || ir.nodes[m].outputs[0].dtype != DType::F32 || !single(me) {
            continue;
        }
        let Some(&add) = consumers.get(&me).and_then(|c| c.first()) else { continue };
        if !matches!(ir.nodes[add].op, Op::Binary { f: BinaryOp::Add })
            || ir.nodes[add].outputs[0] != ir.nodes[m].outputs[0]
            || ir.nodes[add].device != ir.nodes[m].device
        {
            continue;
        }
        let ins = &ir.nodes[add].inputs;
        let bias = if ins[0] == me { ins[1] } else { ins[0] };
        let bm = &ir.nodes[bias.node].outputs[bias.index];
        let n = ir.nodes[m].outputs[0].shape.last().copied();
        if bm.shape.rank() != 1 || Some(bm.shape[0]) != n || bm.dtype != DType::F32 {
            continue;
        }
        let ae = IrEdge { node: add, index: 0 };
        let mut root = add;
        let mut activation = None;
        if single(ae) {
            if let Some(&act) = consumers.get(&ae).and_then(|c| c.first()) {
                if let Op::Unary { f } = ir.nodes[act].op {
                    if fusable_activation(f) && ir.nodes[act].device == ir.nodes[m].device {
                        root = act;
                        activation = Some(f);
                    }
                }
            }
        }
        // The product's control edges (and the add's, when the activation
        // becomes the fused node) would be lost with them.
        if !ir.nodes[m].control.is_empty() || (root != add && !ir.nodes[add].control.is_empty()) {
            continue;
        }
        let Some(op) = fused(activation) else { continue };
        let (a, b) = (ir.nodes[m].inputs[0], ir.nodes[m].inputs[1]);
        ir.nodes[root].op = op;
        ir.nodes[root].inputs = vec![a, b, bias];
    }
    Ok(())
}

/// Live consumers of each output.
pub(super) fn consumers(ir: &IrGraph) -> FxHashMap<IrEdge, SmallVec<[usize; 2]>> {
    let mut c: FxHashMap<IrEdge, SmallVec<[usize; 2]>> = FxHashMap::default();
    for (i, n) in ir.nodes.iter().enumerate().filter(|(_, n)| !n.dead) {
        for e in &n.inputs {
            c.entry(*e).or_default().push(i);
        }
    }
    c
}

/// Can this node be an instruction of a fused program?
fn elementwise(ir: &IrGraph, i: usize) -> bool {
    let n = &ir.nodes[i];
    let ok_dtype = |d: DType| matches!(d, DType::F32 | DType::Bool);
    let in_types = n.inputs.iter().all(|e| ok_dtype(ir.nodes[e.node].outputs[e.index].dtype));
    let kind = match &n.op {
        // Every unary, binary and select op has an f32 or bool form in the
        // fused kernel.
        Op::Unary { .. } | Op::Binary { .. } | Op::Select => true,
        Op::Cast { dtype } => ok_dtype(*dtype),
        _ => false,
    };
    !n.dead && kind && in_types && n.outputs.len() == 1 && ok_dtype(n.outputs[0].dtype)
}

/// A one-element f32 or bool constant: becomes an immediate.
fn immediate(ir: &IrGraph, e: IrEdge) -> Option<(Scalar, DType)> {
    let t = const_value(ir, e)?;
    if !matches!(t.dtype, DType::F32 | DType::Bool) || t.shape().rank() != 0 {
        return None;
    }
    let v = t.scalar_f64()?;
    Some(if t.dtype == DType::Bool { (Scalar::Bool(v != 0.0), DType::Bool) } else { (Scalar::F64(v), DType::F32) })
}

/// Fuse chains and trees of elementwise ops, with an optional trailing reduction.
pub(super) fn fuse_elementwise(ir: &mut IrGraph, _: &PassOptions) -> Result<()> {
    let uses = ir.uses();
    let cons = consumers(ir);
    let mut taken: FxHashSet<usize> = FxHashSet::default();
    for root in (0..ir.nodes.len()).rev() {
        if taken.contains(&root) || !elementwise(ir, root) {
            continue;
        }
        // Grow backwards through producers whose every use is inside the
        // group: count each edge's readers inside it, and take the producer
        // in when the count reaches all of the edge's uses (a fetched edge
        // never does). Linear in the size of the group.
        let mut group: FxHashSet<usize> = FxHashSet::default();
        let mut inside: FxHashMap<IrEdge, usize> = FxHashMap::default();
        let mut joined = vec![root];
        group.insert(root);
        while let Some(g) = joined.pop() {
            for &e in &ir.nodes[g].inputs {
                let count = inside.entry(e).or_default();
                *count += 1;
                let p = e.node;
                if *count == uses.get(&e).copied().unwrap_or(0)
                    && !group.contains(&p)
                    && !taken.contains(&p)
                    && elementwise(ir, p)
                    && ir.nodes[p].device == ir.nodes[root].device
                {
                    group.insert(p);
                    joined.push(p);
                }
            }
        }
        // A trailing reduction over the root's trailing axes joins the group.
        let re = IrEdge { node: root, index: 0 };
        let mut reduce = None;
        let mut target = root;
        if uses.get(&re).copied() == Some(1) && ir.nodes[root].outputs[0].dtype == DType::F32 {
            if let Some(&r) = cons.get(&re).and_then(|c| c.first()) {
                if let (Op::Reduce { f, axes, keepdims }, true) =
                    (&ir.nodes[r].op, ir.nodes[r].device == ir.nodes[root].device)
                {
                    let rank = ir.nodes[root].outputs[0].shape.rank();
                    let trailing =
                        !axes.is_empty() && axes.iter().enumerate().all(|(k, &a)| a == rank - axes.len() + k);
                    let full = ir.nodes[root].outputs[0].shape.iter().all(|&d| d != crate::tensor::UNKNOWN);
                    if trailing && full && matches!(f, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min) {
                        reduce = Some(FusedReduce { f: *f, axes: axes.clone(), keepdims: *keepdims });
                        target = r;
                    }
                }
            }
        }
        let ops = group.len();
        if ops < 2 && reduce.is_none() {
            continue;
        }
        // Build the program in topological (index) order.
        let mut order: Vec<usize> = group.iter().copied().collect();
        order.sort_unstable();
        let mut instrs: Vec<Instr> = Vec::new();
        let mut reg_of: FxHashMap<IrEdge, usize> = FxHashMap::default();
        let mut inputs: Vec<IrEdge> = Vec::new();
        let mut operand = |e: IrEdge, instrs: &mut Vec<Instr>, reg_of: &mut FxHashMap<IrEdge, usize>| -> usize {
            if let Some(&r) = reg_of.get(&e) {
                return r;
            }
            let ins = match immediate(ir, e) {
                Some((v, d)) => Instr::Scalar(v, d),
                None => {
                    inputs.push(e);
                    Instr::Input(inputs.len() - 1)
                }
            };
            instrs.push(ins);
            reg_of.insert(e, instrs.len() - 1);
            instrs.len() - 1
        };
        for &g in &order {
            let ins = ir.nodes[g].inputs.clone();
            let regs: Vec<usize> = ins.iter().map(|e| operand(*e, &mut instrs, &mut reg_of)).collect();
            let ins = match &ir.nodes[g].op {
                Op::Unary { f } => Instr::Unary(*f, regs[0]),
                Op::Binary { f } => Instr::Binary(*f, regs[0], regs[1]),
                Op::Select => Instr::Select(regs[0], regs[1], regs[2]),
                Op::Cast { dtype } => Instr::Cast(*dtype, regs[0]),
                _ => continue,
            };
            instrs.push(ins);
            reg_of.insert(IrEdge { node: g, index: 0 }, instrs.len() - 1);
        }
        let Some(&output) = reg_of.get(&re) else { continue };
        let program = FusedProgram { instrs, output, reduce };
        // Check the program types as the fused op (falls back to no fusion otherwise).
        let metas: Vec<_> = inputs.iter().map(|e| ir.nodes[e.node].outputs[e.index].clone()).collect();
        match program.infer(&metas) {
            Ok(out) if out[0] == ir.nodes[target].outputs[0] => {}
            _ => continue,
        }
        taken.extend(group.iter().copied());
        let t = &mut ir.nodes[target];
        t.op = Op::FusedElementwise { program };
        t.inputs = inputs;
    }
    ir.prune();
    fuse_pads(ir);
    Ok(())
}

/// Shortest rows worth reading under a fused pad: the kernel cuts each row
/// at the pad's edges, and shorter chunks cost more per element than the
/// separate pad saves.
const FUSED_PAD_MIN_ROW: usize = 64;

/// A constant `Pad` read only by a fused program goes into that program,
/// with what it pads (a fused program of its own, or any tensor): the
/// padding is then never written out, the padded tensor never stored, and
/// the operand is computed only where the result is not padding (B7's
/// `u + 0.2 * pad(laplacian(u))` is one pass over the grid).
fn fuse_pads(ir: &mut IrGraph) {
    let uses = ir.uses();
    let controlled: FxHashSet<usize> = ir.nodes.iter().filter(|n| !n.dead).flat_map(|n| n.control.clone()).collect();
    let plain = |ir: &IrGraph, i: usize, device| {
        let n = &ir.nodes[i];
        !n.dead && n.control.is_empty() && !controlled.contains(&i) && n.device == device
    };
    for o in 0..ir.nodes.len() {
        let Op::FusedElementwise { program } = &ir.nodes[o].op else { continue };
        if ir.nodes[o].dead || program.reduce.is_some() {
            continue;
        }
        let out = ir.nodes[o].outputs[0].clone();
        let row = out.shape.last().copied().unwrap_or(0);
        if !out.shape.is_fully_known() || row < FUSED_PAD_MIN_ROW {
            continue;
        }
        let mut program = program.clone();
        let mut inputs = ir.nodes[o].inputs.clone();
        let device = ir.nodes[o].device;
        let mut k = 0;
        while k < inputs.len() {
            let e = inputs[k];
            let pad_node = &ir.nodes[e.node];
            let Op::Pad { paddings, mode: crate::op::movement::PadMode::Constant, value } = &pad_node.op else {
                k += 1;
                continue;
            };
            let pads_so_far = program.instrs.iter().filter(|i| matches!(i, Instr::Pad { .. })).count();
            if uses.get(&e) != Some(&1)
                || !plain(ir, e.node, device)
                || pad_node.outputs[0].shape != out.shape
                || !matches!(pad_node.outputs[0].dtype, DType::F32 | DType::Bool)
                || pads_so_far >= 4
            {
                k += 1;
                continue;
            }
            // What is padded: a fused program read only here, or an input.
            let ie = pad_node.inputs[0];
            let inner = match &ir.nodes[ie.node].op {
                Op::FusedElementwise { program: p }
                    if p.reduce.is_none()
                        && !p.has_pads()
                        && uses.get(&ie) == Some(&1)
                        && plain(ir, ie.node, device) =>
                {
                    Some((p.clone(), ir.nodes[ie.node].inputs.clone()))
                }
                _ => None,
            };
            let (inner, inner_inputs) = inner
                .unwrap_or_else(|| (FusedProgram { instrs: vec![Instr::Input(0)], output: 0, reduce: None }, vec![ie]));
            let merged = splice_pad(&program, k, inputs.len(), &inner, paddings, *value);
            let mut merged_inputs: Vec<IrEdge> = inputs.clone();
            merged_inputs.remove(k);
            merged_inputs.extend(inner_inputs);
            let metas: Vec<_> = merged_inputs.iter().map(|e| ir.nodes[e.node].outputs[e.index].clone()).collect();
            match merged.infer(&metas) {
                Ok(m) if m[0] == out => {
                    program = merged;
                    inputs = merged_inputs;
                }
                _ => k += 1,
            }
        }
        if inputs != ir.nodes[o].inputs {
            ir.nodes[o].op = Op::FusedElementwise { program };
            ir.nodes[o].inputs = inputs;
        }
    }
    ir.prune();
}

/// `outer` with its input `k` (of `n`) replaced by `inner`'s result padded
/// with `value`: `inner`'s instructions go where that input was read, its
/// inputs after the others (`outer`'s inputs after `k` move down one).
fn splice_pad(
    outer: &FusedProgram,
    k: usize,
    n: usize,
    inner: &FusedProgram,
    pads: &[(usize, usize)],
    value: Scalar,
) -> FusedProgram {
    let mut instrs = Vec::with_capacity(outer.instrs.len() + inner.instrs.len() + 1);
    let mut moved = vec![0usize; outer.instrs.len()];
    let renumber = |q: usize| if q > k { q - 1 } else { q };
    for (i, ins) in outer.instrs.iter().enumerate() {
        let ins = match ins {
            Instr::Input(q) if *q == k => {
                let base = instrs.len();
                for x in &inner.instrs {
                    instrs.push(match x {
                        Instr::Input(j) => Instr::Input(n - 1 + j),
                        other => other.map_registers(|r| base + r),
                    });
                }
                Instr::Pad { operand: base + inner.output, pads: pads.to_vec(), value }
            }
            Instr::Input(q) => Instr::Input(renumber(*q)),
            other => other.map_registers(|r| moved[r]),
        };
        instrs.push(ins);
        moved[i] = instrs.len() - 1;
    }
    FusedProgram { instrs, output: moved[outer.output], reduce: outer.reduce.clone() }
}

/// An optimizer update whose inputs are reads of a variable and its slots
/// and whose every result is assigned straight back to them (what
/// `apply_gradients` builds) becomes one node that updates them in the
/// store, over their old buffers when no one else holds those.
///
/// Only when those assignments are the variables' only writers in the
/// request: then nothing in the run changes the variables between the
/// reads and the update, so the update's own read of them sees what the
/// reads saw (unless another run or thread writes them meanwhile; then the
/// update builds on that write instead of overwriting it).
pub(super) fn update_in_place(ir: &mut IrGraph, _: &PassOptions) -> Result<()> {
    let cons = consumers(ir);
    let fetched: FxHashSet<IrEdge> = ir.fetches.iter().copied().collect();
    let mut writers: FxHashMap<NodeId, Vec<usize>> = FxHashMap::default();
    for (i, n) in ir.nodes.iter().enumerate().filter(|(_, n)| !n.dead) {
        if let (Op::Assign { .. }, Some((var, _))) = (&n.op, n.variables.first()) {
            writers.entry(*var).or_default().push(i);
        }
    }
    // Assignments replaced so far, by the update that replaces them (for
    // control dependencies: applied in one sweep at the end, and looked up
    // meanwhile).
    let mut moved: FxHashMap<usize, usize> = FxHashMap::default();
    let mut subst = Substitution::default();
    for u in 0..ir.nodes.len() {
        let Op::ApplyUpdate { rule } = ir.nodes[u].op else { continue };
        if ir.nodes[u].dead || ir.nodes[u].inputs.len() != 4 + rule.num_slots() {
            continue;
        }
        // Input position of the variable, then of each slot; output j is its new value.
        let positions: Vec<usize> = std::iter::once(0).chain(4..4 + rule.num_slots()).collect();
        let mut vars: Vec<(NodeId, String)> = Vec::new();
        let mut assigns: Vec<usize> = Vec::new();
        for (j, &pos) in positions.iter().enumerate() {
            let read = &ir.nodes[ir.nodes[u].inputs[pos].node];
            let (Op::Variable { .. }, [(var, name)]) = (&read.op, &read.variables[..]) else { break };
            let out = IrEdge { node: u, index: j };
            let assign = match cons.get(&out).map(|c| &c[..]) {
                Some(&[a]) if !fetched.contains(&out) => a,
                _ => break,
            };
            let a = &ir.nodes[assign];
            let plain = matches!(a.op, Op::Assign { f: AssignOp::Assign }) && a.inputs == [out];
            let same_var = a.variables.first().map(|v| v.0) == Some(*var);
            let only_writer = writers.get(var).is_some_and(|w| w == &[assign]);
            // The update takes the assignment's place earlier in the order.
            let control_before = a.control.iter().all(|&c| moved.get(&c).copied().unwrap_or(c) < u);
            if !(plain && same_var && only_writer && control_before) {
                break;
            }
            vars.push((*var, name.clone()));
            assigns.push(assign);
        }
        let distinct = vars.iter().map(|v| v.0).collect::<FxHashSet<_>>().len() == vars.len();
        if vars.len() != positions.len() || !distinct {
            continue;
        }
        let ins = ir.nodes[u].inputs.clone();
        let mut control = ir.nodes[u].control.clone();
        for &pos in &positions {
            control.extend(ir.nodes[ins[pos].node].control.iter().copied());
        }
        for &a in &assigns {
            control.extend(ir.nodes[a].control.iter().copied());
        }
        for c in control.iter_mut() {
            *c = moved.get(c).copied().unwrap_or(*c);
        }
        control.sort_unstable();
        control.dedup();
        let node = &mut ir.nodes[u];
        node.op = Op::ResourceApplyUpdate { rule };
        node.inputs = vec![ins[1], ins[2], ins[3]];
        node.control = control;
        node.variables = vars;
        for (j, &a) in assigns.iter().enumerate() {
            subst.insert(IrEdge { node: a, index: 0 }, IrEdge { node: u, index: j });
            moved.insert(a, u);
            for t in ir.targets.iter_mut().filter(|t| **t == a) {
                *t = u;
            }
            ir.nodes[a].dead = true;
        }
        ir.targets.sort_unstable();
        ir.targets.dedup();
    }
    ir.substitute(&subst);
    if !moved.is_empty() {
        for n in ir.nodes.iter_mut() {
            if n.control.iter().any(|c| moved.contains_key(c)) {
                for c in n.control.iter_mut() {
                    *c = moved.get(c).copied().unwrap_or(*c);
                }
                n.control.sort_unstable();
                n.control.dedup();
            }
        }
    }
    Ok(())
}
