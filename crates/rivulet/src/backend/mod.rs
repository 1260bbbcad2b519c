//! Backends: where kernels run. A backend knows ops and values, never graphs.
//!
//! Every backend implements the [`Backend`] primitives (elementwise,
//! reductions, matmul, strided assembly, sequences, random numbers, gathers
//! and scatters, top-k, transfers); an op that is not a primitive is either a
//! view (one implementation for all, in [`views`]) or a composite that runs
//! as its decomposition ([`decompose`]) wherever the backend has no fused
//! kernel for it. The CPU backend has a kernel for every op and is always
//! present; the reference backend implements only the primitives, in plain
//! loops, and is the oracle the others are compared with.

pub(crate) mod cpu;
pub(crate) mod cuda;
pub(crate) mod decompose;
pub(crate) mod reference;
pub(crate) mod special;
pub(crate) mod views;

pub(crate) use cpu::optim::{update_operands, InPlaceUpdate};

use crate::error::{Error, Result};
use crate::op::creation::Distribution;
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::optim::UpdateRule;
use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::op::{Meta, Op};
use crate::tensor::layout::Layout;
use crate::tensor::{DType, Device, DeviceKind, Scalar, Value};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-call facts a kernel may need beyond its inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelCtx {
    /// Which stream of a seeded random op to draw: 0 in eager mode, the run
    /// count of the node in a session (so each run draws new numbers).
    pub random_stream: u64,
    /// Where the device reads the stream instead, when the op is recorded
    /// into a device graph: a u64 in the device's memory, rewritten before
    /// each replay ([`Backend::random_at`]).
    pub random_stream_at: Option<u64>,
}

impl KernelCtx {
    pub const EAGER: KernelCtx = KernelCtx { random_stream: 0, random_stream_at: None };
}

/// Outputs of one op: almost always one value.
pub(crate) type Values = SmallVec<[Value; 1]>;

/// What a device must implement. Inputs arrive on the backend's device, with
/// any layout (strided, broadcast, reversed views), and their output metas
/// already inferred; outputs are new values on the device.
pub(crate) trait Backend: Send + Sync {
    /// The device this backend runs.
    fn device(&self) -> Device;

    /// A kernel of the backend's own for `op`, where it has one (fused
    /// programs, composites, in-place forms): `None` runs the op the generic
    /// way (views, primitives, decompositions).
    fn kernel(&self, _op: &Op, _inputs: &[&Value], _outs: &[Meta], _ctx: &KernelCtx) -> Option<Result<Values>> {
        None
    }

    /// `f(x)` elementwise.
    fn unary(&self, f: UnaryOp, x: &Value, out: &Meta) -> Result<Value>;
    /// `f(a, b)` elementwise, both broadcast to `out`'s shape.
    fn binary(&self, f: BinaryOp, a: &Value, b: &Value, out: &Meta) -> Result<Value>;
    /// `c ? a : b` elementwise, all broadcast to `out`'s shape.
    fn select(&self, c: &Value, a: &Value, b: &Value, out: &Meta) -> Result<Value>;
    /// Conversion to `out.dtype`.
    fn cast(&self, x: &Value, out: &Meta) -> Result<Value>;
    /// Reduction over `axes` (distinct, increasing).
    fn reduce(&self, f: ReduceOp, x: &Value, axes: &[usize], out: &Meta) -> Result<Value>;
    /// Index of the largest or smallest element along `axis`.
    fn arg_reduce(&self, f: ArgOp, x: &Value, axis: usize, out: &Meta) -> Result<Value>;
    /// Cumulative sum or product along `axis`.
    fn scan(&self, f: ScanOp, x: &Value, axis: usize, exclusive: bool, reverse: bool, out: &Meta) -> Result<Value>;
    /// Batched matrix product with broadcast batch dimensions.
    fn matmul(&self, a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value>;
    /// A new contiguous value of `out`, filled with `fill`, then each piece
    /// written into the region its layout describes within `out`'s
    /// row-major buffer (the strided copy behind contiguous copies, concat,
    /// pad, tile and slice gradients).
    fn assemble(&self, out: &Meta, fill: Scalar, pieces: &[(Layout, &Value)]) -> Result<Value>;
    /// `start + i * delta` for each position `i` of `out` (integers exact).
    fn range(&self, start: Scalar, delta: Scalar, out: &Meta) -> Result<Value>;
    /// Samples of `dist` from the counter-based stream `(seed, stream)`:
    /// the same numbers on every backend.
    fn random(&self, dist: &Distribution, out: &Meta, seed: u64, stream: u64) -> Result<Value>;
    /// [`Backend::random`] with the stream read on the device from
    /// `stream_at` when the kernel runs (a recorded graph's replays draw
    /// new numbers). Only backends that record graphs have it.
    fn random_at(&self, dist: &Distribution, out: &Meta, seed: u64, stream_at: u64) -> Result<Value> {
        let _ = (dist, out, seed, stream_at);
        Err(Error::unimplemented(format!("{} reads no random stream from device memory", self.device())))
    }
    /// [`Backend::random`] from stream 0 of the seed that `seed` and the
    /// i64 scalar `offset` make ([`crate::op::creation::offset_seed`]). A
    /// backend that reads `offset` where it lives has no host round trip,
    /// and a recorded graph reads each replay's offset.
    fn random_offset(&self, dist: &Distribution, out: &Meta, seed: u64, offset: &Value) -> Result<Value> {
        random_offset_on_host(self, dist, out, seed, offset)
    }
    /// Slices of `params` along `axis` picked by `indices` (TensorFlow's GatherV2).
    fn gather(&self, params: &Value, indices: &Value, axis: usize, batch_dims: usize, out: &Meta) -> Result<Value>;
    /// Slices of `params` picked by index vectors (the last axis of `indices`).
    fn gather_nd(&self, params: &Value, indices: &Value, out: &Meta) -> Result<Value>;
    /// Zeros of `out` with `updates` added where [`Backend::gather`] would
    /// have read them (the gradient of gather).
    fn scatter_add(
        &self,
        updates: &Value,
        indices: &Value,
        axis: usize,
        batch_dims: usize,
        out: &Meta,
    ) -> Result<Value>;
    /// Zeros of `out` with `updates` added at the index vectors of `indices`.
    fn scatter_nd(&self, indices: &Value, updates: &Value, out: &Meta) -> Result<Value>;
    /// The `k` largest entries along the last axis, and their indices.
    fn top_k(&self, x: &Value, k: usize, outs: &[Meta]) -> Result<(Value, Value)>;
    /// A copy of a CPU value on this device.
    fn upload(&self, host: &Value) -> Result<Value>;
    /// A copy of a value of this device on the CPU.
    fn download(&self, v: &Value) -> Result<Value>;

    /// Apply an optimizer `rule` in place over `targets` (the variable, then
    /// its slots: values of this device the caller holds alone), with
    /// `grad`, `lr` and `step` on this device: `Ok(false)` where the backend
    /// has no in-place form of the rule, and the caller writes new buffers.
    /// Keeps a variable at one address, which a captured graph relies on.
    fn update_in_place(
        &self,
        _rule: &UpdateRule,
        _targets: &mut [Value],
        _grad: &Value,
        _lr: &Value,
        _step: &Value,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Start recording this thread's work on the device as a graph to
    /// replay (CUDA graphs): `Ok(false)` where the backend cannot.
    fn begin_capture(&self) -> Result<bool> {
        Ok(false)
    }

    /// End the recording begun by [`Backend::begin_capture`]: the graph, or
    /// the error that spoiled the capture.
    fn end_capture(&self) -> Result<Box<dyn Replay>> {
        Err(Error::unimplemented(format!("{} records no graphs", self.device())))
    }

    /// Write `src` (a value of this device or the CPU, of `dst`'s dtype and
    /// shape) into `dst`, a contiguous value of this device that the caller
    /// holds alone: a captured graph's inputs, refilled before each replay.
    fn copy_into(&self, _dst: &Value, _src: &Value) -> Result<()> {
        Err(Error::unimplemented(format!("{} records no graphs", self.device())))
    }
}

/// A recorded graph of device work (see [`Backend::begin_capture`]).
pub(crate) trait Replay: Send + Sync {
    /// Queue one run of the graph after the device's queued work.
    fn launch(&self) -> Result<()>;
    /// After a launch, the errors its kernels flagged (waits for the device
    /// where the graph has checks to make).
    fn check(&self) -> Result<()>;
}

static CPU: cpu::CpuBackend = cpu::CpuBackend;
static REFERENCE: reference::ReferenceBackend = reference::ReferenceBackend;

/// Every device found on this machine, fastest first: GPUs (when the
/// CUDA backend found one), the CPU, the reference device.
pub fn devices() -> Vec<Device> {
    let mut all = cuda::devices();
    all.extend([Device::CPU, Device::REFERENCE]);
    all
}

/// Give cached memory back: the host buffer cache and every GPU pool.
pub fn release_cached_memory() {
    crate::tensor::storage::release_cached_memory();
    cuda::release_cached_memory();
}

/// The backend of `device`, or an error naming it and the devices there are.
pub(crate) fn backend(device: Device) -> Result<&'static dyn Backend> {
    let gpu = if device.kind == DeviceKind::Gpu { cuda::backend(device.index) } else { None };
    match (device.kind, device.index, gpu) {
        (DeviceKind::Cpu, 0, _) => Ok(&CPU),
        (DeviceKind::Reference, 0, _) => Ok(&REFERENCE),
        (DeviceKind::Gpu, _, Some(b)) => Ok(b),
        _ => Err(Error::invalid(format!(
            "no device {device} on this machine (devices: {})",
            devices().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The default device, once decided: 0 until then, else
/// `kind code << 32 | index` (see [`default_device`]).
static DEFAULT_DEVICE: AtomicU64 = AtomicU64::new(0);

fn encode_device(d: Device) -> u64 {
    let kind = match d.kind {
        DeviceKind::Cpu => 1u64,
        DeviceKind::Reference => 2,
        DeviceKind::Gpu => 3,
    };
    kind << 32 | u64::from(d.index)
}

fn decode_device(bits: u64) -> Device {
    let kind = match bits >> 32 {
        2 => DeviceKind::Reference,
        3 => DeviceKind::Gpu,
        _ => DeviceKind::Cpu,
    };
    Device { kind, index: bits as u32 }
}

/// Where ops run when no device scope names a device and their inputs are
/// host values (TensorFlow's automatic placement): the first GPU where one
/// was found, else the CPU. `RIVULET_DEFAULT_DEVICE` (a device name, or
/// `auto`) and [`set_default_device`] choose another.
///
/// Within that rule some ops still run on the CPU: those whose values are
/// all integer or bool scalars (loop counters and predicates, read without
/// waiting for the device, as TensorFlow keeps int32 in host memory) and
/// those the device would run on host copies anyway (see [`host_only`]).
#[inline]
pub fn default_device() -> Device {
    match DEFAULT_DEVICE.load(Ordering::Relaxed) {
        0 => decide_default_device(),
        bits => decode_device(bits),
    }
}

#[cold]
fn decide_default_device() -> Device {
    let automatic = || devices().into_iter().find(|d| d.kind == DeviceKind::Gpu).unwrap_or(Device::CPU);
    let chosen = match std::env::var("RIVULET_DEFAULT_DEVICE") {
        Ok(name) if !name.trim().is_empty() && !name.trim().eq_ignore_ascii_case("auto") => {
            match Device::parse(&name).and_then(|d| backend(d).map(|_| d)) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("rivulet: ignoring RIVULET_DEFAULT_DEVICE: {e}");
                    automatic()
                }
            }
        }
        _ => automatic(),
    };
    // A concurrent `set_default_device` wins over this first decision.
    match DEFAULT_DEVICE.compare_exchange(0, encode_device(chosen), Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => chosen,
        Err(bits) => decode_device(bits),
    }
}

/// Make `name` (`/cpu:0`, `/gpu:0`, `/reference:0`...) the default device
/// of this process (like PyTorch's `torch.set_default_device`); `None`
/// goes back to the automatic choice. Device scopes still win. A device
/// this machine lacks is an error naming the devices there are.
pub fn set_default_device(name: Option<&str>) -> Result<()> {
    let bits = match name {
        Some(name) => {
            let d = Device::parse(name)?;
            backend(d)?;
            encode_device(d)
        }
        None => 0,
    };
    DEFAULT_DEVICE.store(bits, Ordering::Relaxed);
    Ok(())
}

/// [`Backend::random_offset`] with the offset read on the host (one round
/// trip from the device).
pub(crate) fn random_offset_on_host<B: Backend + ?Sized>(
    be: &B,
    dist: &Distribution,
    out: &Meta,
    seed: u64,
    offset: &Value,
) -> Result<Value> {
    let host = cpu::elementwise::cast(&be.download(offset)?, DType::I64)?;
    let Some(&o) = host.contiguous_slice::<i64>().and_then(|s| s.first()) else {
        return Err(Error::invalid(format!("a random seed offset must be a scalar, got shape {}", offset.shape())));
    };
    be.random(dist, out, crate::op::creation::offset_seed(seed, o), 0)
}

/// Whether an op on these values belongs on the host even when automatic
/// placement chose another device: every value it reads and makes is an
/// integer or bool scalar (a loop counter, a trip limit, a predicate).
pub(crate) fn host_scalars<'a>(inputs: impl IntoIterator<Item = &'a Meta>, outputs: &[Meta]) -> bool {
    let small = |m: &Meta| m.shape.rank() == 0 && !m.dtype.is_float() && !m.dtype.is_complex();
    !outputs.is_empty() && outputs.iter().all(small) && inputs.into_iter().all(small)
}

/// Whether every device other than the CPU runs `op` on host copies of
/// its values (row-sequential host algorithms, collectives, factorizations,
/// complex values): automatic placement leaves such ops on the CPU, as
/// TensorFlow places an op without a GPU kernel there.
pub(crate) fn host_only(op: &Op, values: impl IntoIterator<Item = DType>) -> bool {
    matches!(op, Op::Host { .. } | Op::Collective { .. } | Op::Linalg { .. } | Op::Complex { .. } | Op::Fft { .. })
        || values.into_iter().any(|d| d.is_complex())
}

/// The device automatic placement gives an op that no scope places, whose
/// inputs are on the host: the default device, unless the op belongs on
/// the host (see [`default_device`]).
pub(crate) fn automatic_placement(op: &Op, inputs: &[Meta], outputs: &[Meta]) -> Device {
    let default = default_device();
    if default == Device::CPU
        || host_scalars(inputs, outputs)
        || host_only(op, inputs.iter().chain(outputs).map(|m| m.dtype))
    {
        Device::CPU
    } else {
        default
    }
}

/// Where a variable that no scope places lives: where automatic placement
/// puts its value (the default device; the CPU for an integer or bool
/// scalar such as a step counter).
pub(crate) fn automatic_variable_device(meta: &Meta) -> Device {
    let op = Op::Variable { dtype: meta.dtype, shape: meta.shape.clone() };
    automatic_placement(&op, &[], std::slice::from_ref(meta))
}

/// TensorFlow's soft placement: an op that `device` cannot run (its
/// backend says `Unimplemented`: a rank or size past a kernel's limits)
/// runs on the CPU instead, its inputs copied there; readers of its outputs
/// copy them on as they need.
fn or_on_cpu(device: Device, ran: Result<Values>, op: &Op, inputs: &[&Value], ctx: &KernelCtx) -> Result<Values> {
    match ran {
        Err(e) if device != Device::CPU && e.kind() == crate::error::ErrorKind::Unimplemented => {
            let host: SmallVec<[Value; 4]> = inputs.iter().map(|v| transfer(v, Device::CPU)).collect::<Result<_>>()?;
            let host: SmallVec<[&Value; 4]> = host.iter().collect();
            let outputs = infer(op, &host)?;
            cpu::execute(op, &host, &outputs, ctx)
        }
        ran => ran,
    }
}

/// Where an op on inputs from these devices runs when nothing asks for a
/// device: where all of them are, else the fastest of them (a GPU before
/// the CPU before the reference device; copies bring the others); the CPU
/// for an op without inputs.
pub(crate) fn automatic_device(inputs: impl IntoIterator<Item = Device>) -> Device {
    let speed = |d: &Device| match d.kind {
        DeviceKind::Gpu => 0,
        DeviceKind::Cpu => 1,
        DeviceKind::Reference => 2,
    };
    let mut found: Option<Device> = None;
    for d in inputs {
        match found {
            Some(f) if speed(&f) <= speed(&d) => {}
            _ => found = Some(d),
        }
    }
    found.unwrap_or(Device::CPU)
}

/// Wait until every device has finished the work queued on it (like
/// `torch.cuda.synchronize()`): for timing; results are synchronized by
/// any read anyway.
pub fn synchronize() -> Result<()> {
    cuda::synchronize()
}

/// `v` on `device`: itself when it is there, else a copy (through the host).
pub(crate) fn transfer(v: &Value, device: Device) -> Result<Value> {
    let from = v.device();
    if from == device {
        return Ok(v.clone());
    }
    let host = if from == Device::CPU { v.clone() } else { backend(from)?.download(v)? };
    if device == Device::CPU {
        return Ok(host);
    }
    backend(device)?.upload(&host)
}

/// Infer the outputs of `op` on these inputs and run it on the device where
/// all the inputs are (or the fastest one). Eager calls and session runs both
/// come through here, so they agree bit for bit.
pub(crate) fn execute(op: &Op, inputs: &[&Value], ctx: &KernelCtx) -> Result<Values> {
    if inputs.iter().all(|v| v.device() == Device::CPU) {
        // The common case, without a dynamic call: every op has a CPU kernel.
        let outputs = infer(op, inputs)?;
        return cpu::execute(op, inputs, &outputs, ctx);
    }
    let device = automatic_device(inputs.iter().map(|v| v.device()));
    execute_on(device, op, inputs, ctx)
}

/// [`execute`] for an op that no device scope places (eager user ops): on
/// host inputs (or none) it runs where automatic placement says, else as
/// [`execute`] (where its inputs are, the fastest of them).
pub(crate) fn execute_automatic(op: &Op, inputs: &[&Value], ctx: &KernelCtx) -> Result<Values> {
    if !inputs.iter().all(|v| v.device() == Device::CPU) || default_device() == Device::CPU {
        return execute(op, inputs, ctx);
    }
    let outputs = infer(op, inputs)?;
    let metas: SmallVec<[Meta; 4]> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
    let device = automatic_placement(op, &metas, &outputs);
    if device == Device::CPU {
        return cpu::execute(op, inputs, &outputs, ctx);
    }
    // The outputs inferred above hold on the device: no second inference.
    let moved: SmallVec<[Value; 4]> = inputs.iter().map(|v| transfer(v, device)).collect::<Result<_>>()?;
    let moved: SmallVec<[&Value; 4]> = moved.iter().collect();
    or_on_cpu(device, run_inferred(backend(device)?, op, &moved, &outputs, ctx), op, inputs, ctx)
}

/// [`execute`] on `device`; inputs elsewhere are copied there first.
pub(crate) fn execute_on(device: Device, op: &Op, inputs: &[&Value], ctx: &KernelCtx) -> Result<Values> {
    let local = inputs.iter().all(|v| v.device() == device);
    if local && device == Device::CPU {
        let outputs = infer(op, inputs)?;
        return cpu::execute(op, inputs, &outputs, ctx);
    }
    let be = backend(device)?;
    if !local {
        let moved: SmallVec<[Value; 4]> = inputs.iter().map(|v| transfer(v, device)).collect::<Result<_>>()?;
        let moved: SmallVec<[&Value; 4]> = moved.iter().collect();
        let outputs = infer(op, &moved)?;
        return or_on_cpu(device, run_inferred(be, op, &moved, &outputs, ctx), op, inputs, ctx);
    }
    let outputs = infer(op, inputs)?;
    or_on_cpu(device, run_inferred(be, op, inputs, &outputs, ctx), op, inputs, ctx)
}

/// [`execute_on`] (or [`execute_donating`], with `donated`) with the outputs
/// already inferred: a compiled plan's step whose shapes were known when it
/// compiled, run on inputs of exactly those shapes.
pub(crate) fn execute_inferred(
    device: Device,
    op: &Op,
    inputs: &[&Value],
    outputs: &[Meta],
    donated: Option<usize>,
    ctx: &KernelCtx,
) -> Result<Values> {
    if !inputs.iter().all(|v| v.device() == device) {
        return execute_on(device, op, inputs, ctx);
    }
    if device != Device::CPU {
        return or_on_cpu(device, run_inferred(backend(device)?, op, inputs, outputs, ctx), op, inputs, ctx);
    }
    if let (Some(pos), [out]) = (donated, outputs) {
        if let Some(v) = cpu::in_place::try_in_place(op, inputs, pos, out) {
            return Ok(smallvec::smallvec![v]);
        }
    }
    cpu::execute(op, inputs, outputs, ctx)
}

/// The output metas of `op` on these values, each within the element limit.
#[inline(always)]
fn infer(op: &Op, inputs: &[&Value]) -> Result<crate::op::Metas> {
    let mut metas: SmallVec<[Meta; 4]> = SmallVec::new();
    for v in inputs {
        metas.push(Meta::new(v.dtype, v.shape().clone()));
    }
    let outputs = match op {
        Op::BroadcastToDims => infer_from_values(op, inputs, &metas)?,
        _ => op.infer(&metas)?,
    };
    for m in &outputs {
        // Broadcasts and tiles of large inputs could describe more elements than exist.
        m.shape.checked_numel()?;
    }
    Ok(outputs)
}

/// The outputs of an op whose shape is an input's values: `BroadcastToDims`
/// (kept out of line, off the path of every other op).
#[cold]
#[inline(never)]
fn infer_from_values(op: &Op, inputs: &[&Value], metas: &[Meta]) -> Result<crate::op::Metas> {
    let host = transfer(inputs[1], Device::CPU)?;
    let ints = cpu::elementwise::cast(&host, crate::tensor::DType::I64)?;
    let dims = ints
        .contiguous_slice::<i64>()
        .ok_or_else(|| Error::invalid(format!("{}: a shape that is not contiguous after a cast", op.type_name())))?;
    Ok(smallvec::smallvec![crate::op::movement::broadcast_to_dims(&metas[0], &metas[1], dims)?])
}

/// Run `op` on `be`, inputs on its device and outputs inferred: the
/// backend's own kernel where it has one, else views, primitives and
/// decompositions.
fn run_inferred(be: &dyn Backend, op: &Op, inputs: &[&Value], outs: &[Meta], ctx: &KernelCtx) -> Result<Values> {
    if be.device() != Device::CPU
        && (inputs.iter().any(|v| v.dtype.is_complex()) || outs.iter().any(|m| m.dtype.is_complex()))
    {
        // Complex values are moved and taken apart on the host only (their
        // arithmetic is real ops on the parts, which run here as usual).
        return decompose::on_host(be, inputs, |v| Ok(cpu::execute(op, v, outs, ctx)?.into_iter().collect()));
    }
    if let Some(r) = be.kernel(op, inputs, outs, ctx) {
        return r;
    }
    decompose::run(be, op, inputs, outs, ctx)
}

/// [`execute`], writing the output into `inputs[donated]`'s buffer when the
/// kernel can and the buffer is not shared (the caller gives up that input).
pub(crate) fn execute_donating(op: &Op, inputs: &[&Value], donated: usize, ctx: &KernelCtx) -> Result<Values> {
    if !inputs.iter().all(|v| v.device() == Device::CPU) {
        return execute(op, inputs, ctx);
    }
    let outputs = infer(op, inputs)?;
    if outputs.len() == 1 {
        if let Some(v) = cpu::in_place::try_in_place(op, inputs, donated, &outputs[0]) {
            return Ok(smallvec::smallvec![v]);
        }
    }
    run_inferred(&CPU, op, inputs, &outputs, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Soft placement: what a device cannot run (Unimplemented) runs on the
    /// CPU with the CPU's result; other errors stay errors.
    #[test]
    fn ops_a_device_cannot_run_fall_back_to_the_cpu() {
        let buf = crate::tensor::storage::HostBuffer::from_slice(&[1.0f32, -2.0]).expect("buffer");
        let x = Value::from_buffer(DType::F32, crate::tensor::Shape::new(&[2]), buf);
        let on_reference = transfer(&x, Device::REFERENCE).expect("copy");
        let op = Op::Unary { f: UnaryOp::Neg };
        let ctx = KernelCtx::EAGER;
        let unable = || Err(Error::unimplemented("no kernel here"));
        let out = or_on_cpu(Device::REFERENCE, unable(), &op, &[&on_reference], &ctx).expect("on the CPU");
        assert_eq!(out[0].device(), Device::CPU);
        assert_eq!(out[0].contiguous_slice::<f32>().expect("f32"), &[-1.0, 2.0]);
        let failed = or_on_cpu(Device::REFERENCE, Err(Error::invalid("bad")), &op, &[&on_reference], &ctx);
        assert!(matches!(failed, Err(e) if e.kind() == crate::error::ErrorKind::InvalidArgument));
        // The CPU's own Unimplemented is the answer.
        assert!(or_on_cpu(Device::CPU, unable(), &op, &[&x], &ctx).is_err());
    }
}
