//! The CPU backend: a kernel for every op.

pub(crate) mod collective;
pub(crate) mod complex;
pub(crate) mod copy;
pub(crate) mod creation;
pub(crate) mod elementwise;
pub(crate) mod fold_f32;
pub(crate) mod fused;
pub(crate) mod host;
pub(crate) mod in_place;
pub(crate) mod linalg;
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
pub(crate) mod window;

pub use simd::simd_level;

use super::{Backend, KernelCtx, Values};
use crate::error::{Error, Result};
use crate::op::creation::Distribution;
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::movement::PadMode;
use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::op::{Meta, Op};
use crate::tensor::layout::Layout;
use crate::tensor::{Device, Scalar, Value};
use smallvec::{smallvec, SmallVec};

/// The optimized CPU backend: a kernel of its own for every op (fused
/// programs, composites and all), so nothing runs as a decomposition here.
pub(crate) struct CpuBackend;

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::CPU
    }
    fn kernel(&self, op: &Op, inputs: &[&Value], outs: &[Meta], ctx: &KernelCtx) -> Option<Result<Values>> {
        Some(execute(op, inputs, outs, ctx))
    }
    fn unary(&self, f: UnaryOp, x: &Value, out: &Meta) -> Result<Value> {
        elementwise::unary(f, x, out)
    }
    fn binary(&self, f: BinaryOp, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
        elementwise::binary(f, a, b, out)
    }
    fn select(&self, c: &Value, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
        elementwise::select(c, a, b, out)
    }
    fn cast(&self, x: &Value, out: &Meta) -> Result<Value> {
        elementwise::cast(x, out.dtype)
    }
    fn reduce(&self, f: ReduceOp, x: &Value, axes: &[usize], out: &Meta) -> Result<Value> {
        reduce::reduce(f, x, axes, out)
    }
    fn arg_reduce(&self, f: ArgOp, x: &Value, axis: usize, out: &Meta) -> Result<Value> {
        reduce::arg_reduce(f, x, axis, out)
    }
    fn scan(&self, f: ScanOp, x: &Value, axis: usize, exclusive: bool, reverse: bool, _: &Meta) -> Result<Value> {
        reduce::scan(f, x, axis, exclusive, reverse)
    }
    fn matmul(&self, a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value> {
        matmul::matmul(a, b, ta, tb, out)
    }
    fn assemble(&self, out: &Meta, fill: Scalar, pieces: &[(Layout, &Value)]) -> Result<Value> {
        movement::assemble(out, fill, pieces)
    }
    fn range(&self, start: Scalar, delta: Scalar, out: &Meta) -> Result<Value> {
        creation::range(start, delta, out)
    }
    fn random(&self, dist: &Distribution, out: &Meta, seed: u64, stream: u64) -> Result<Value> {
        creation::random(dist, &out.shape, out.dtype, seed, stream)
    }
    fn gather(&self, params: &Value, indices: &Value, axis: usize, batch_dims: usize, out: &Meta) -> Result<Value> {
        movement::gather(params, indices, axis, batch_dims, out)
    }
    fn gather_nd(&self, params: &Value, indices: &Value, out: &Meta) -> Result<Value> {
        movement::gather_nd(params, indices, out)
    }
    fn scatter_add(
        &self,
        updates: &Value,
        indices: &Value,
        axis: usize,
        batch_dims: usize,
        out: &Meta,
    ) -> Result<Value> {
        movement::gather_grad(updates, indices, axis, batch_dims, out)
    }
    fn scatter_nd(&self, indices: &Value, updates: &Value, out: &Meta) -> Result<Value> {
        movement::scatter_nd(indices, updates, out)
    }
    fn top_k(&self, x: &Value, k: usize, _: &[Meta]) -> Result<(Value, Value)> {
        nn::top_k(x, k)
    }
    fn upload(&self, host: &Value) -> Result<Value> {
        Ok(host.clone())
    }
    fn download(&self, v: &Value) -> Result<Value> {
        Ok(v.clone())
    }
}

/// The stream a random op draws here: the CPU records no device graphs, so
/// a stream in device memory is an internal error.
fn host_stream(ctx: &KernelCtx) -> Result<u64> {
    match ctx.random_stream_at {
        None => Ok(ctx.random_stream),
        Some(_) => Err(Error::invalid("internal: a random stream in device memory reached the CPU")),
    }
}

/// Run the kernel of `op` on values whose output metas are already inferred.
pub(crate) fn execute(op: &Op, inputs: &[&Value], outs: &[Meta], ctx: &KernelCtx) -> Result<SmallVec<[Value; 1]>> {
    let x = || inputs[0];
    let out = || &outs[0];
    let v: Value = match op {
        Op::Const { value } => super::transfer(&value.0, Device::CPU)?,
        Op::Placeholder { .. } => {
            return Err(Error::precondition("a placeholder has no value: feed it in Session::run"));
        }
        Op::Identity | Op::StopGradient | Op::CopyToDevice { .. } => x().clone(),
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
        Op::Pad { paddings, mode: PadMode::Constant, value } => movement::pad(x(), paddings, *value, out())?,
        // Reflections are strided copies: the shared decomposition is as fast.
        Op::Pad { .. } => return super::decompose::run(&CpuBackend, op, inputs, outs, ctx),
        Op::Reverse { axes } => movement::reverse(x(), axes),
        Op::OneHot { depth, on, off, axis, .. } => movement::one_hot(x(), *depth, *on, *off, *axis, out())?,
        Op::Fill { shape, value, dtype } => creation::fill(shape, *value, *dtype)?,
        Op::FillLike { value } => creation::fill(&out().shape, *value, out().dtype)?,
        Op::Range { start, delta, .. } => creation::range(*start, *delta, out())?,
        Op::Linspace { start, stop, .. } => creation::linspace(*start, *stop, out())?,
        Op::Eye { rows, cols, dtype } => creation::eye(*rows, *cols, *dtype)?,
        Op::Random { dist, shape, dtype, seed } => creation::random(dist, shape, *dtype, *seed, host_stream(ctx)?)?,
        Op::RandomLike { dist, seed } => match inputs.get(1) {
            Some(offset) => CpuBackend.random_offset(dist, out(), *seed, offset)?,
            None => creation::random(dist, &out().shape, out().dtype, *seed, host_stream(ctx)?)?,
        },
        Op::Softmax { axis } => nn::softmax(x(), *axis, false)?,
        Op::LogSoftmax { axis } => nn::softmax(x(), *axis, true)?,
        Op::SumTo => movement::sum_to(x(), out())?,
        Op::BroadcastLike | Op::BroadcastToDims => movement::broadcast_to(x(), &out().shape)?,
        Op::ShapeOf { dtype } => creation::shape_of(x().shape(), *dtype)?,
        Op::ReshapeLike => {
            let spec: Vec<i64> = out().shape.iter().map(|&d| d as i64).collect();
            movement::reshape(x(), &spec)?
        }
        Op::Size { dtype } => creation::fill(&crate::tensor::Shape::scalar(), (x().numel() as i64).into(), *dtype)?,
        Op::StridedSliceGrad { spec } => movement::strided_slice_grad(x(), spec, out())?,
        Op::GatherGrad { axis, batch_dims } => movement::gather_grad(inputs[0], inputs[1], *axis, *batch_dims, out())?,
        Op::GatherNdGrad => movement::scatter_nd(inputs[1], inputs[0], out())?,
        Op::SplitLike { axis } => return Ok(movement::split_like(x(), &inputs[1..], *axis)?.into()),
        Op::Variable { .. }
        | Op::Assign { .. }
        | Op::ReadVariable
        | Op::ResourceApplyUpdate { .. }
        | Op::If { .. }
        | Op::Case { .. }
        | Op::While { .. } => {
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
        Op::Host { f } => return Ok(host::run(*f, x(), outs)?.into_iter().collect()),
        Op::Collective { c } => return Ok(collective::run(c, inputs, outs)?.into_iter().collect()),
        Op::Linalg { f } => return Ok(linalg::run(*f, inputs, outs)?.into_iter().collect()),
        Op::Complex { f } => complex::parts(*f, inputs, out())?,
        Op::Fft { f } => complex::fft(*f, x(), out())?,
        Op::Window { f } => window::run(f, inputs, out())?,
    };
    Ok(smallvec![v])
}
