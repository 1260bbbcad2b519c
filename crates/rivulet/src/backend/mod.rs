//! Backends: where kernels run. The CPU backend is always present. A backend
//! knows ops and values, never graphs.

pub(crate) mod cpu;

pub(crate) use cpu::optim::{apply_update, update_operands, InPlaceUpdate};

use crate::error::Result;
use crate::ops::{Meta, Op};
use crate::tensor::Value;
use smallvec::SmallVec;

/// Per-call facts a kernel may need beyond its inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelCtx {
    /// Which stream of a seeded random op to draw: 0 in eager mode, the run
    /// count of the node in a session (so each run draws new numbers).
    pub random_stream: u64,
}

impl KernelCtx {
    pub const EAGER: KernelCtx = KernelCtx { random_stream: 0 };
}

/// Infer the outputs of `op` on these inputs and run its kernel. Eager calls
/// and session runs both come through here, so they agree bit for bit.
pub(crate) fn execute(op: &Op, inputs: &[&Value], ctx: &KernelCtx) -> Result<SmallVec<[Value; 1]>> {
    let metas: SmallVec<[Meta; 4]> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
    let outputs = op.infer(&metas)?;
    for m in &outputs {
        // Broadcasts and tiles of large inputs could describe more elements than exist.
        m.shape.checked_numel()?;
    }
    cpu::execute(op, inputs, &outputs, ctx)
}

/// [`execute`], writing the output into `inputs[donated]`'s buffer when the
/// kernel can and the buffer is not shared (the caller gives up that input).
pub(crate) fn execute_donating(
    op: &Op,
    inputs: &[&Value],
    donated: usize,
    ctx: &KernelCtx,
) -> Result<SmallVec<[Value; 1]>> {
    let metas: SmallVec<[Meta; 4]> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
    let outputs = op.infer(&metas)?;
    if outputs.len() == 1 {
        if let Some(v) = cpu::in_place::try_in_place(op, inputs, donated, &outputs[0]) {
            return Ok(smallvec::smallvec![v]);
        }
    }
    for m in &outputs {
        m.shape.checked_numel()?;
    }
    cpu::execute(op, inputs, &outputs, ctx)
}
