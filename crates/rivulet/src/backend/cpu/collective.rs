//! Kernels of the collective ops (`op::collective`): values to buffers, the
//! group's communicator, buffers back to values. Other backends run these on
//! host copies.
//!
//! A contiguous input is sent from its own memory (no copy); the result
//! arrives in a fresh buffer that becomes the output.

use super::copy::materialize;
use super::elementwise::cast;
use crate::collective::{self, Buffer, Parked, Reduction};
use crate::error::{bail, Result};
use crate::op::{CollectiveOp, Meta};
use crate::tensor::storage::HostBuffer;
use crate::tensor::storage::Storage;
use crate::tensor::{DType, Device, Layout, Shape, Value};
use half::{bf16, f16};
use smallvec::{smallvec, SmallVec};

/// Run `c` on CPU values.
pub(crate) fn run(c: &CollectiveOp, inputs: &[&Value], outs: &[Meta]) -> Result<SmallVec<[Value; 2]>> {
    let comm = match c.group() {
        Some(key) => Some(collective::lookup(key)?),
        None => None,
    };
    let comm = || comm.as_deref().ok_or_else(|| crate::error::Error::invalid("collective without a group"));
    let x = || inputs[0];
    Ok(match c {
        CollectiveOp::AllReduce { reduction, .. } => {
            let comm = comm()?;
            let out = comm.all_reduce(send_buffer(x())?, *reduction)?;
            let out = finish(out, *reduction, comm.size())?;
            smallvec![to_value(out, x().shape().clone())?]
        }
        CollectiveOp::Broadcast { root, .. } => {
            smallvec![to_value(comm()?.broadcast(send_buffer(x())?, *root)?, x().shape().clone())?]
        }
        CollectiveOp::AllGather { .. } => {
            smallvec![to_value(comm()?.all_gather(send_buffer(x())?)?, outs[0].shape.clone())?]
        }
        CollectiveOp::ReduceScatter { reduction, .. } => {
            let comm = comm()?;
            let size = comm.size();
            if x().shape().dims().first().is_none_or(|d| !d.is_multiple_of(size)) {
                bail!(shape, "reduce_scatter: axis 0 of {} does not split over {size} ranks", x().shape());
            }
            let mut dims = x().shape().dims().to_vec();
            dims[0] /= size;
            let out = finish(comm.reduce_scatter(send_buffer(x())?, *reduction)?, *reduction, size)?;
            smallvec![to_value(out, Shape::from(dims))?]
        }
        CollectiveOp::Barrier { .. } => {
            comm()?.barrier()?;
            smallvec![x().clone()]
        }
        CollectiveOp::StartAllReduce { reduction, wire, .. } => {
            let comm = comm()?;
            let dtype = inputs[0].dtype;
            let wire_dtype = wire.unwrap_or(dtype);
            let packed = if inputs.len() == 1 && wire_dtype == dtype {
                send_buffer(inputs[0])?
            } else {
                pack(inputs, wire_dtype)?
            };
            let pending = comm.start_all_reduce(packed, *reduction)?;
            let scale = (*reduction == Reduction::Mean).then(|| comm.size() as f64);
            let token = collective::park(Parked { pending, dtype, scale });
            smallvec![Value::from_buffer(DType::I64, Shape::scalar(), HostBuffer::from_slice(&[token as i64])?)]
        }
        CollectiveOp::WaitAllReduce { outputs } => {
            let token = x().scalar_f64().map(|t| t as u64).unwrap_or(0);
            let Parked { pending, dtype, scale } = collective::unpark(token)?;
            let buf = pending.wait()?;
            unpack(buf, dtype, scale, outputs)?
        }
    })
}

/// The elements of `v` as a send buffer: its own memory when contiguous.
fn send_buffer(v: &Value) -> Result<Buffer> {
    let size = v.dtype.size();
    if v.layout.is_contiguous() && v.numel() > 0 {
        return Ok(Buffer::shared(v.dtype, v.storage.clone(), v.layout.offset * size, v.numel() * size));
    }
    let m = materialize(v)?;
    let mut b = Buffer::new(v.dtype, v.numel())?;
    if v.numel() > 0 {
        b.bytes_mut()?.copy_from_slice(&m.storage.host().bytes()[m.layout.offset * size..][..v.numel() * size]);
    }
    Ok(b)
}

/// `inputs` (one dtype) cast to `wire` and laid end to end.
fn pack(inputs: &[&Value], wire: DType) -> Result<Buffer> {
    let total: usize = inputs.iter().map(|v| v.numel()).sum();
    let mut out = Buffer::new(wire, total)?;
    let bytes = out.bytes_mut()?;
    let mut at = 0;
    for v in inputs {
        let v = if v.dtype == wire { (*v).clone() } else { cast(v, wire)? };
        let m = materialize(&v)?;
        let n = m.numel() * wire.size();
        if n > 0 {
            bytes[at..at + n].copy_from_slice(&m.storage.host().bytes()[m.layout.offset * wire.size()..][..n]);
        }
        at += n;
    }
    Ok(out)
}

/// The reduced bucket back as tensors of `outputs`, cast back from the
/// wire dtype and divided by `scale` (the group size) for a mean.
fn unpack(buf: Buffer, dtype: DType, scale: Option<f64>, outputs: &[(DType, Shape)]) -> Result<SmallVec<[Value; 2]>> {
    let wire = buf.dtype();
    let total: usize = outputs.iter().map(|(_, s)| s.numel().unwrap_or(0)).sum();
    if total != buf.len() {
        bail!(invalid, "all-reduce wait: the bucket holds {} elements, its outputs {total}", buf.len());
    }
    if let Some((d, _)) = outputs.iter().find(|(d, _)| *d != dtype) {
        bail!(dtype, "all-reduce wait: a {d} output from a bucket of {dtype}");
    }
    // One buffer for the bucket; each output a view of its part (no copy),
    // cast back from the wire dtype where it differs.
    let whole = finish_scale(buf, scale)?;
    let storage = std::sync::Arc::new(Storage::host_on(Device::CPU, whole.into_host()?));
    let mut values = SmallVec::new();
    let mut at = 0;
    for (d, s) in outputs {
        let n = s.numel().unwrap_or(0);
        let mut layout = Layout::contiguous(s.clone());
        layout.offset = at;
        at += n;
        let v = Value { dtype: wire, layout, storage: storage.clone() };
        values.push(if *d == wire { v } else { cast(&v, *d)? });
    }
    Ok(values)
}

/// A reduced buffer, divided by the size for a mean.
fn finish(buf: Buffer, reduction: Reduction, size: usize) -> Result<Buffer> {
    finish_scale(buf, (reduction == Reduction::Mean).then_some(size as f64))
}

/// `buf` divided elementwise by `scale`, in its own dtype (TensorFlow's mean: a sum, then a division).
fn finish_scale(mut buf: Buffer, scale: Option<f64>) -> Result<Buffer> {
    let Some(s) = scale else { return Ok(buf) };
    match buf.dtype() {
        DType::F32 => buf.as_mut_slice::<f32>()?.iter_mut().for_each(|x| *x /= s as f32),
        DType::F64 => buf.as_mut_slice::<f64>()?.iter_mut().for_each(|x| *x /= s),
        DType::F16 => buf.as_mut_slice::<f16>()?.iter_mut().for_each(|x| *x = f16::from_f32(x.to_f32() / s as f32)),
        DType::BF16 => buf.as_mut_slice::<bf16>()?.iter_mut().for_each(|x| *x = bf16::from_f32(x.to_f32() / s as f32)),
        d => bail!(dtype, "a mean all-reduce needs floats, got {d}"),
    }
    Ok(buf)
}

/// A buffer as a contiguous value of `shape`.
fn to_value(buf: Buffer, shape: Shape) -> Result<Value> {
    let dtype = buf.dtype();
    if Some(buf.len()) != shape.numel() {
        bail!(invalid, "collective result of {} elements for shape {shape}", buf.len());
    }
    Ok(Value::from_buffer(dtype, shape, buf.into_host()?))
}
