//! Placement: each node gets a device, and a `CopyToDevice` node is
//! inserted wherever a value crosses from one device to another (one copy
//! per value and destination, shared by every reader there).
//!
//! A node runs where its device scope asked, else where automatic
//! placement says: the default device (the first GPU where one was found,
//! else the CPU; [`backend::default_device`]), except for ops that belong on
//! the host (integer and bool scalars, ops a GPU would run on host copies).
//! Variable reads and updates run where their variable was placed (the
//! session's store keeps each value on its device, so a GPU model's weights
//! never cross to the host). Integer and bool scalars placed on a GPU run
//! on the CPU (loop counters and predicates: TensorFlow keeps int32 in host
//! memory for the same reason). Feeds have no device until they arrive: the
//! step that reads a feed copies it if it must.

use super::{IrEdge, IrGraph, IrNode};
use crate::backend;
use crate::error::Result;
use crate::op::{Meta, Op};
use crate::tensor::{Device, DeviceKind};
use rustc_hash::FxHashMap;

/// Whether a node's value lives in the variable store.
fn is_variable_op(op: &Op) -> bool {
    matches!(op, Op::Variable { .. } | Op::Assign { .. } | Op::ReadVariable | Op::ResourceApplyUpdate { .. })
}

/// The metas of the values a node reads.
fn input_metas(ir: &IrGraph, n: &IrNode) -> Vec<Meta> {
    n.inputs.iter().filter_map(|e| ir.nodes[e.node].outputs.get(e.index).cloned()).collect()
}

/// Whether a node reads and makes only integer or bool scalars (loop
/// counters, trip limits, predicates; see [`backend::host_scalars`]): such
/// nodes run on the CPU when placed on a GPU, so a loop's condition is read
/// without waiting for the device.
fn host_scalar(ir: &IrGraph, n: &IrNode) -> bool {
    backend::host_scalars(&input_metas(ir, n), &n.outputs)
        && !is_variable_op(&n.op)
        && !matches!(n.op, Op::CopyToDevice { .. })
}

/// Give every live node a device and insert the copies; returns how many.
pub(crate) fn place(ir: &mut IrGraph) -> Result<usize> {
    let is_feed: Vec<bool> = {
        let mut v = vec![false; ir.nodes.len()];
        for f in &ir.feeds {
            v[f.0] = true;
        }
        v
    };
    let host_scalars: Vec<bool> = ir.nodes.iter().map(|n| !n.dead && host_scalar(ir, n)).collect();
    // Automatic placement: the default device, or the CPU for ops that
    // belong on the host.
    let automatic: Vec<Device> = ir
        .nodes
        .iter()
        .zip(&host_scalars)
        .map(|(n, &host)| match n.device {
            None if !n.dead && !host => backend::automatic_placement(&n.op, &input_metas(ir, n), &n.outputs),
            _ => Device::CPU,
        })
        .collect();
    // Reads, assignments and updates of a variable go where the variable
    // was placed (TensorFlow's colocation), unless asked elsewhere.
    let variable_device = ir.variable_devices.clone();
    for (i, n) in ir.nodes.iter_mut().enumerate() {
        if n.dead || is_feed[i] {
            continue;
        }
        // Control flow passes values to its bodies where they are: no device, no copies.
        if n.op.is_control_flow() {
            n.device = None;
            continue;
        }
        let device = match n.device {
            // Variables stay in the store where their scope put them, else
            // where automatic placement puts their value.
            None if is_variable_op(&n.op) => n
                .variables
                .first()
                .and_then(|(v, _)| variable_device.get(v))
                .copied()
                .unwrap_or_else(backend::default_device),
            Some(d) => {
                backend::backend(d).map_err(|e| e.with_context(|| n.context()))?;
                if d.kind == DeviceKind::Gpu && host_scalars[i] {
                    Device::CPU
                } else {
                    d
                }
            }
            None => automatic[i],
        };
        n.device = Some(device);
    }
    let needs_copy = |ir: &IrGraph, e: &IrEdge, to: Option<Device>| -> bool {
        let from = ir.nodes[e.node].device;
        from.is_some() && to.is_some() && from != to
    };
    let any = ir.nodes.iter().any(|n| !n.dead && n.inputs.iter().any(|e| needs_copy(ir, e, n.device)));
    if !any {
        return Ok(0);
    }
    // Rebuild the node list with each copy just before its first reader (the
    // list stays in topological order), remapping every reference.
    let old = std::mem::take(&mut ir.nodes);
    let mut new_index = vec![0usize; old.len()];
    let mut copies: FxHashMap<(IrEdge, Device), usize> = FxHashMap::default();
    let mut nodes: Vec<IrNode> = Vec::with_capacity(old.len() + 8);
    let mut count = 0;
    for (i, mut n) in old.into_iter().enumerate() {
        for k in 0..n.inputs.len() {
            let e = n.inputs[k];
            let (from, to) = (nodes[new_index[e.node]].device, n.device);
            let mapped = IrEdge { node: new_index[e.node], index: e.index };
            n.inputs[k] = match (from, to) {
                (Some(f), Some(t)) if f != t && !n.dead => {
                    let id = *copies.entry((e, t)).or_insert_with(|| {
                        let producer = &nodes[mapped.node];
                        let copy = IrNode {
                            op: Op::CopyToDevice { device: t },
                            inputs: vec![mapped],
                            control: Vec::new(),
                            name: format!("{}/copy_to_{}", producer.name, t.short_name().trim_start_matches('/')),
                            location: producer.location.clone(),
                            outputs: smallvec::smallvec![producer.outputs[mapped.index].clone()],
                            origin: None,
                            variables: Vec::new(),
                            functions: Vec::new(),
                            dead: false,
                            device: Some(t),
                        };
                        nodes.push(copy);
                        count += 1;
                        nodes.len() - 1
                    });
                    IrEdge { node: id, index: 0 }
                }
                _ => mapped,
            };
        }
        for c in &mut n.control {
            *c = new_index[*c];
        }
        new_index[i] = nodes.len();
        nodes.push(n);
    }
    ir.nodes = nodes;
    for e in &mut ir.fetches {
        e.node = new_index[e.node];
    }
    for f in &mut ir.feeds {
        f.0 = new_index[f.0];
    }
    for t in &mut ir.targets {
        *t = new_index[*t];
    }
    Ok(count)
}
