//! The CPU backend: a kernel for every op.

pub(crate) mod creation;
pub(crate) mod elementwise;
pub(crate) mod fold_f32;
pub(crate) mod fused;
pub(crate) mod in_place;
pub(crate) mod loops;
pub(crate) mod math;
pub(crate) mod matmul;
pub(crate) mod movement;
pub(crate) mod nn;
pub(crate) mod optim;
pub(crate) mod parallel;
pub(crate) mod reduce;
pub(crate) mod simd;
pub(crate) mod strided;

pub use simd::simd_level;

use super::KernelCtx;
use crate::error::{Error, Result};
use crate::ops::{Meta, Op};
use crate::tensor::Value;
use smallvec::{smallvec, SmallVec};

/// Run the kernel of `op` on values whose output metas are already inferred.
pub(crate) fn execute(op: &Op, inputs: &[&Value], outs: &[Meta], ctx: &KernelCtx) -> Result<SmallVec<[Value; 1]>> {
    let x = || inputs[0];
    let out = || &outs[0];
    let v: Value = match op {
        Op::Const { value } => value.0.value()?.clone(),
        Op::Placeholder { .. } => {
            return Err(Error::precondition("a placeholder has no value: feed it in Session::run"));
        }
        Op::Identity | Op::StopGradient => x().clone(),
        Op::NoOp => return Ok(SmallVec::new()),
        Op::Unary { f } => elementwise::unary(*f, x(), out())?,
        Op::Binary { f } => elementwise::binary(*f, inputs[0], inputs[1], out())?,
        Op::Select => elementwise::select(inputs[0], inputs[1], inputs[2], out())?,
        Op::Cast { dtype } => elementwise::cast(x(), *dtype)?,
        Op::Reduce { f, axes, .. } => reduce::reduce(*f, x(), axes, out())?,
        Op::ArgReduce { f, axis, .. } => reduce::arg_reduce(*f, x(), *axis, out())?,
        Op::Scan { f, axis, exclusive, reverse } => reduce::scan(*f, x(), *axis, *exclusive, *reverse)?,
        Op::MatMul { transpose_a, transpose_b } => {
            matmul::matmul(inputs[0], inputs[1], *transpose_a, *transpose_b, out())?
        }
        Op::Reshape { shape } => movement::reshape(x(), shape)?,
        Op::Transpose { perm } => movement::transpose(x(), perm),
        Op::ExpandDims { axis } => movement::expand_dims(x(), *axis),
        Op::Squeeze { axes } => movement::squeeze(x(), axes),
        Op::BroadcastTo { .. } => movement::broadcast_to(x(), &out().shape)?,
        Op::Concat { axis } => movement::concat(inputs, *axis, out())?,
        Op::Split { axis, sizes } => return Ok(movement::split(x(), *axis, sizes).into()),
        Op::Unstack { axis, num } => return Ok(movement::unstack(x(), *axis, *num).into()),
        Op::Slice { begin, .. } => movement::slice(x(), begin, out()),
        Op::StridedSlice { spec } => movement::strided_slice(x(), spec)?,
        Op::Gather { axis, batch_dims } => movement::gather(inputs[0], inputs[1], *axis, *batch_dims, out())?,
        Op::GatherNd => movement::gather_nd(inputs[0], inputs[1], out())?,
        Op::ScatterNd { .. } => movement::scatter_nd(inputs[0], inputs[1], out())?,
        Op::Tile { multiples } => movement::tile(x(), multiples, out())?,
        Op::Pad { paddings, mode, value } => movement::pad(x(), paddings, *mode, *value, out())?,
        Op::Reverse { axes } => movement::reverse(x(), axes),
        Op::OneHot { depth, on, off, axis, .. } => movement::one_hot(x(), *depth, *on, *off, *axis, out())?,
        Op::Fill { shape, value, dtype } => creation::fill(shape, *value, *dtype)?,
        Op::FillLike { value } => creation::fill(&out().shape, *value, out().dtype)?,
        Op::Range { start, delta, .. } => creation::range(*start, *delta, out())?,
        Op::Linspace { start, stop, .. } => creation::linspace(*start, *stop, out())?,
        Op::Eye { rows, cols, dtype } => creation::eye(*rows, *cols, *dtype)?,
        Op::Random { dist, shape, dtype, seed } => creation::random(dist, shape, *dtype, *seed, ctx.random_stream)?,
        Op::RandomLike { dist, seed } => match inputs.get(1) {
            Some(offset) => {
                let off = elementwise::cast(offset, crate::tensor::DType::I64)?;
                let o = off.contiguous_slice::<i64>().and_then(|s| s.first().copied()).unwrap_or(0);
                let mixed = crate::ops::creation::splitmix64(*seed ^ crate::ops::creation::splitmix64(o as u64));
                creation::random(dist, &out().shape, out().dtype, mixed, 0)?
            }
            None => creation::random(dist, &out().shape, out().dtype, *seed, ctx.random_stream)?,
        },
        Op::Softmax { axis } => nn::softmax(x(), *axis, false)?,
        Op::LogSoftmax { axis } => nn::softmax(x(), *axis, true)?,
        Op::SumTo => movement::sum_to(x(), out())?,
        Op::BroadcastLike => movement::broadcast_to(x(), &out().shape)?,
        Op::ReshapeLike => {
            let spec: Vec<i64> = out().shape.iter().map(|&d| d as i64).collect();
            movement::reshape(x(), &spec)?
        }
        Op::Size { dtype } => creation::fill(&crate::tensor::Shape::scalar(), (x().numel() as i64).into(), *dtype)?,
        Op::StridedSliceGrad { spec } => movement::strided_slice_grad(x(), spec, out())?,
        Op::GatherGrad { axis, batch_dims } => movement::gather_grad(inputs[0], inputs[1], *axis, *batch_dims, out())?,
        Op::GatherNdGrad => movement::scatter_nd(inputs[1], inputs[0], out())?,
        Op::SplitLike { axis } => return Ok(movement::split_like(x(), &inputs[1..], *axis)?.into()),
        Op::Variable { .. } | Op::Assign { .. } | Op::ResourceApplyUpdate { .. } => {
            return Err(Error::precondition(
                "variables live in a Session (graph mode) or an eager Variable; this op cannot run on its own",
            ));
        }
        Op::ApplyUpdate { rule } => return Ok(optim::apply_update(rule, inputs)?.into()),
        Op::FusedElementwise { program } => fused::fused_elementwise(program, inputs, out())?,
        Op::FusedMatMul { transpose_a, transpose_b, activation } => {
            fused::fused_matmul(inputs[0], inputs[1], inputs[2], *transpose_a, *transpose_b, *activation, out())?
        }
        Op::TopK { k, .. } => {
            let (v, i) = nn::top_k(x(), *k)?;
            return Ok(smallvec![v, i]);
        }
    };
    Ok(smallvec![v])
}
