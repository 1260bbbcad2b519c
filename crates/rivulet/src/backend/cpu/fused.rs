//! Kernels of the fused ops: elementwise programs evaluated chunk by chunk
//! (each chunk's intermediates stay in cache), optionally folded by a
//! trailing reduction; and matmul with bias and activation.
//!
//! Every instruction uses the same scalar function as the op's own kernel,
//! and reductions fold in the same blocks and lane order, so fused and
//! unfused results are bitwise identical.

use super::elementwise::{bool_binary_fn, compare_fn, f32_predicate, f32_unary, float_binary_fn};
use super::loops::{Map, Select, Update, Zip, ZipInPlace};
use super::reduce::{fold_row, Num};
use super::simd::vectorize;
use super::strided::Rows;
use crate::error::{bail, Result};
use crate::ops::elementwise::UnaryOp;
use crate::ops::fused::{FusedProgram, Instr};
use crate::ops::reduce::ReduceOp;
use crate::ops::Meta;
use crate::tensor::layout::Layout;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Shape, Value};
use rayon::prelude::*;

/// Elements evaluated per chunk: a handful of registers of this size stay in L1/L2.
const CHUNK: usize = 1024;
/// Elements per parallel task (each task allocates its registers once).
const TASK: usize = 1 << 17;

/// Where an input's elements come from.
enum Source<'a, T> {
    /// Contiguous and of the full shape: chunks are sub-slices.
    Slice(&'a [T]),
    /// One element broadcast everywhere.
    Scalar(T),
    /// Anything else: gathered through its broadcast layout.
    Strided(&'a [T], Rows<1>),
}

enum AnySource<'a> {
    F32(Source<'a, f32>),
    Bool(Source<'a, bool>),
}

fn source<'a, T: crate::tensor::Element>(v: &'a Value, shape: &Shape) -> Result<Source<'a, T>> {
    if v.numel() == 1 {
        return Ok(Source::Scalar(
            crate::backend::cpu::movement::materialize(v)?.contiguous_slice::<T>().map(|s| s[0]).unwrap_or_default(),
        ));
    }
    if v.shape() == shape {
        if let Some(s) = v.contiguous_slice::<T>() {
            return Ok(Source::Slice(s));
        }
    }
    let l: Layout = v.layout.broadcast_to(shape)?;
    Ok(Source::Strided(v.buffer::<T>(), Rows::new(shape, [&l])))
}

/// A register's value for the current chunk.
#[derive(Clone, Copy)]
enum Val<'a> {
    F32(&'a [f32]),
    F32Scalar(f32),
    Bool(&'a [bool]),
    BoolScalar(bool),
}

/// Scratch buffers of one task: one per register that needs memory.
struct Scratch {
    f32s: Vec<Vec<f32>>,
    bools: Vec<Vec<bool>>,
    ahead: Lookahead,
}

impl Scratch {
    fn new(program: &FusedProgram, regs: &[Meta]) -> Scratch {
        // Inputs read in place and constants need no buffer.
        let needs = |i: usize| !matches!(program.instrs[i], Instr::Scalar(..));
        let f32s = (0..regs.len())
            .map(|i| if needs(i) && regs[i].dtype == DType::F32 { vec![0.0; CHUNK] } else { Vec::new() })
            .collect();
        let bools = (0..regs.len())
            .map(|i| if needs(i) && regs[i].dtype == DType::Bool { vec![false; CHUNK] } else { Vec::new() })
            .collect();
        Scratch { f32s, bools, ahead: Lookahead::new() }
    }
}

/// `(slice, stride)` of an operand: stride 0 repeats a scalar.
fn f32_operand<'a>(v: Val<'a>, tmp: &'a [f32; 1]) -> (&'a [f32], isize) {
    match v {
        Val::F32(s) => (s, 1),
        _ => (tmp, 0),
    }
}

fn scalar_f32(v: Val<'_>) -> f32 {
    if let Val::F32Scalar(x) = v {
        x
    } else {
        0.0
    }
}

fn scalar_bool(v: Val<'_>) -> bool {
    if let Val::BoolScalar(x) = v {
        x
    } else {
        false
    }
}

/// Where a chunk's result goes.
enum OutChunk<'a> {
    F32(&'a mut [f32]),
    Bool(&'a mut [bool]),
}

/// Evaluate the program on the chunk `[start, start + len)` into `out`.
/// The last instruction computes straight into `out`; a result that is an
/// input or a constant is copied there.
fn eval_chunk<'a>(
    program: &FusedProgram,
    sources: &'a [AnySource<'a>],
    start: usize,
    len: usize,
    scratch: &'a mut Scratch,
    out: OutChunk<'a>,
) -> Result<()> {
    let n = program.instrs.len();
    let mut vals: Vec<Val<'a>> = Vec::with_capacity(n);
    // Hand out each register buffer once; earlier results are read through `vals`.
    let mut f32_bufs: Vec<Option<&'a mut [f32]>> =
        scratch.f32s.iter_mut().map(|b| if b.is_empty() { None } else { Some(&mut b[..len]) }).collect();
    let mut bool_bufs: Vec<Option<&'a mut [bool]>> =
        scratch.bools.iter_mut().map(|b| if b.is_empty() { None } else { Some(&mut b[..len]) }).collect();
    let is_f32_out = matches!(out, OutChunk::F32(_));
    match out {
        OutChunk::F32(o) => f32_bufs[program.output] = Some(o),
        OutChunk::Bool(o) => bool_bufs[program.output] = Some(o),
    }
    for (i, ins) in program.instrs.iter().enumerate() {
        let v = match ins {
            Instr::Input(k) => match &sources[*k] {
                AnySource::F32(Source::Slice(s)) => Val::F32(&s[start..start + len]),
                AnySource::F32(Source::Scalar(x)) => Val::F32Scalar(*x),
                AnySource::F32(Source::Strided(buf, rows)) => {
                    let d = f32_bufs[i].take().unwrap_or_default();
                    rows.gather_flat(buf, start, d);
                    Val::F32(d)
                }
                AnySource::Bool(Source::Slice(s)) => Val::Bool(&s[start..start + len]),
                AnySource::Bool(Source::Scalar(x)) => Val::BoolScalar(*x),
                AnySource::Bool(Source::Strided(buf, rows)) => {
                    let d = bool_bufs[i].take().unwrap_or_default();
                    rows.gather_flat(buf, start, d);
                    Val::Bool(d)
                }
            },
            Instr::Scalar(s, DType::Bool) => Val::BoolScalar(s.to_element::<bool>()),
            Instr::Scalar(s, _) => Val::F32Scalar(s.to_element::<f32>()),
            Instr::Unary(f, a) => {
                let x = vals[*a];
                match x {
                    Val::F32Scalar(v) => f32_unary!(*f, g => Val::F32Scalar(g(v)),
                        f32_predicate!(*f, g => Val::BoolScalar(g(v)), bail!(dtype, "fused {} of f32", f.name()))),
                    Val::F32(src) => f32_unary!(*f, g => {
                            let d = f32_bufs[i].take().unwrap_or_default();
                            vectorize(Map { src, off: 0, stride: 1, dst: &mut *d, f: g });
                            Val::F32(d)
                        },
                        f32_predicate!(*f, g => {
                            let d = bool_bufs[i].take().unwrap_or_default();
                            vectorize(Map { src, off: 0, stride: 1, dst: &mut *d, f: g });
                            Val::Bool(d)
                        }, bail!(dtype, "fused {} of f32", f.name()))),
                    Val::BoolScalar(v) if *f == UnaryOp::LogicalNot => Val::BoolScalar(!v),
                    Val::Bool(src) if *f == UnaryOp::LogicalNot => {
                        let d = bool_bufs[i].take().unwrap_or_default();
                        vectorize(Map { src, off: 0, stride: 1, dst: &mut *d, f: |b: bool| !b });
                        Val::Bool(d)
                    }
                    _ => bail!(dtype, "fused {} of bool", f.name()),
                }
            }
            Instr::Binary(f, a, b) => {
                let (x, y) = (vals[*a], vals[*b]);
                let both_scalar = matches!(x, Val::F32Scalar(_) | Val::BoolScalar(_))
                    && matches!(y, Val::F32Scalar(_) | Val::BoolScalar(_));
                match (x, y) {
                    (Val::F32(_) | Val::F32Scalar(_), Val::F32(_) | Val::F32Scalar(_)) => {
                        if both_scalar {
                            let (p, q) = (scalar_f32(x), scalar_f32(y));
                            float_binary_fn!(f32, *f, g => Val::F32Scalar(g(p, q)),
                                compare_fn!(f32, *f, g => Val::BoolScalar(g(p, q)), bail!(dtype, "fused {} of f32", f.name())))
                        } else {
                            let (tx, ty) = ([scalar_f32(x)], [scalar_f32(y)]);
                            let ((sa, ka), (sb, kb)) = (f32_operand(x, &tx), f32_operand(y, &ty));
                            float_binary_fn!(f32, *f, g => {
                                    let d = f32_bufs[i].take().unwrap_or_default();
                                    vectorize(Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: &mut *d, f: g });
                                    Val::F32(d)
                                },
                                compare_fn!(f32, *f, g => {
                                    let d = bool_bufs[i].take().unwrap_or_default();
                                    vectorize(Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: &mut *d, f: g });
                                    Val::Bool(d)
                                }, bail!(dtype, "fused {} of f32", f.name())))
                        }
                    }
                    _ => {
                        if both_scalar {
                            let (p, q) = (scalar_bool(x), scalar_bool(y));
                            bool_binary_fn!(*f, g => Val::BoolScalar(g(p, q)), bail!(dtype, "fused {} of bool", f.name()))
                        } else {
                            let (tx, ty) = ([scalar_bool(x)], [scalar_bool(y)]);
                            let (sa, ka): (&[bool], isize) = if let Val::Bool(s) = x { (s, 1) } else { (&tx, 0) };
                            let (sb, kb): (&[bool], isize) = if let Val::Bool(s) = y { (s, 1) } else { (&ty, 0) };
                            bool_binary_fn!(*f, g => {
                                let d = bool_bufs[i].take().unwrap_or_default();
                                vectorize(Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: &mut *d, f: g });
                                Val::Bool(d)
                            }, bail!(dtype, "fused {} of bool", f.name()))
                        }
                    }
                }
            }
            Instr::Select(c, a, b) => {
                let (cv, x, y) = (vals[*c], vals[*a], vals[*b]);
                let tc = [scalar_bool(cv)];
                let (sc, kc): (&[bool], isize) = if let Val::Bool(s) = cv { (s, 1) } else { (&tc, 0) };
                if matches!(x, Val::F32(_) | Val::F32Scalar(_)) {
                    let (tx, ty) = ([scalar_f32(x)], [scalar_f32(y)]);
                    let ((sa, ka), (sb, kb)) = (f32_operand(x, &tx), f32_operand(y, &ty));
                    let d = f32_bufs[i].take().unwrap_or_default();
                    vectorize(Select { c: (sc, 0, kc), a: (sa, 0, ka), b: (sb, 0, kb), dst: &mut *d });
                    Val::F32(d)
                } else {
                    let (tx, ty) = ([scalar_bool(x)], [scalar_bool(y)]);
                    let (sa, ka): (&[bool], isize) = if let Val::Bool(s) = x { (s, 1) } else { (&tx, 0) };
                    let (sb, kb): (&[bool], isize) = if let Val::Bool(s) = y { (s, 1) } else { (&ty, 0) };
                    let d = bool_bufs[i].take().unwrap_or_default();
                    vectorize(Select { c: (sc, 0, kc), a: (sa, 0, ka), b: (sb, 0, kb), dst: &mut *d });
                    Val::Bool(d)
                }
            }
            Instr::Cast(dtype, a) => match (vals[*a], dtype) {
                (Val::F32(s), DType::Bool) => {
                    let d = bool_bufs[i].take().unwrap_or_default();
                    vectorize(Map { src: s, off: 0, stride: 1, dst: &mut *d, f: |v: f32| v != 0.0 });
                    Val::Bool(d)
                }
                (Val::Bool(s), DType::F32) => {
                    let d = f32_bufs[i].take().unwrap_or_default();
                    vectorize(Map { src: s, off: 0, stride: 1, dst: &mut *d, f: |v: bool| if v { 1.0 } else { 0.0 } });
                    Val::F32(d)
                }
                (Val::F32Scalar(v), DType::Bool) => Val::BoolScalar(v != 0.0),
                (Val::BoolScalar(v), DType::F32) => Val::F32Scalar(if v { 1.0 } else { 0.0 }),
                (v, _) => v,
            },
        };
        vals.push(v);
        scratch.ahead.step(i, n);
    }
    // The output buffer is still here when the result was not computed into it.
    let v = vals[program.output];
    if is_f32_out {
        if let Some(o) = f32_bufs[program.output].take() {
            write_f32(v, o);
        }
    } else if let Some(o) = bool_bufs[program.output].take() {
        write_bool(v, o);
    }
    Ok(())
}

/// Write a register's chunk into the output.
fn store<T: Copy>(v: &[T], scalar: T, is_scalar: bool, dst: &mut [T]) {
    if is_scalar {
        dst.fill(scalar);
    } else {
        dst.copy_from_slice(&v[..dst.len()]);
    }
}

fn write_f32(v: Val<'_>, dst: &mut [f32]) {
    match v {
        Val::F32(s) => store(s, 0.0, false, dst),
        other => store(&[], scalar_f32(other), true, dst),
    }
}

fn write_bool(v: Val<'_>, dst: &mut [bool]) {
    match v {
        Val::Bool(s) => store(s, false, false, dst),
        other => store(&[], scalar_bool(other), true, dst),
    }
}

/// The memory the next chunk will touch (its contiguous inputs and its
/// output), prefetched a slice at a time while the current chunk computes.
/// The hardware prefetcher stops at page boundaries and a chunk is about a
/// page, so without this each chunk would start by waiting on memory
/// (inputs, and the output lines a store must first read). Spreading the
/// requests over the chunk's instructions keeps them within the core's
/// outstanding-miss limit, so they overlap with the arithmetic.
struct Lookahead {
    /// `(start, bytes)` of each region. Only ever prefetched, never read:
    /// a prefetch is a hint that cannot fault.
    regions: Vec<(*const i8, usize)>,
}

impl Lookahead {
    fn new() -> Lookahead {
        Lookahead { regions: Vec::new() }
    }

    /// Point at elements `[start, start + len)` of every contiguous input and of `out`.
    fn aim<T>(&mut self, sources: &[AnySource<'_>], start: usize, len: usize, out: &[T]) {
        fn region<T>(s: &[T]) -> (*const i8, usize) {
            (s.as_ptr().cast::<i8>(), std::mem::size_of_val(s))
        }
        self.regions.clear();
        for src in sources {
            match src {
                AnySource::F32(Source::Slice(s)) => {
                    self.regions.push(region(s.get(start..start + len).unwrap_or_default()))
                }
                AnySource::Bool(Source::Slice(s)) => {
                    self.regions.push(region(s.get(start..start + len).unwrap_or_default()))
                }
                _ => {}
            }
        }
        self.regions.push(region(out));
    }

    /// Prefetch part `k` of `parts` of every region.
    fn step(&self, k: usize, parts: usize) {
        for &(base, bytes) in &self.regions {
            let lines = bytes.div_ceil(64);
            let (from, to) = (lines * k / parts, lines * (k + 1) / parts);
            for line in from..to {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a prefetch is a hint that never faults; the address
                // is within the region anyway.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(base.wrapping_add(line * 64))
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (base, line);
            }
        }
    }
}

/// Evaluate the program over `[start, start + dst.len())` into `dst`, chunk by chunk.
fn eval_range(
    program: &FusedProgram,
    sources: &[AnySource<'_>],
    start: usize,
    dst: &mut [f32],
    scratch: &mut Scratch,
) -> Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let len = CHUNK.min(dst.len() - done);
        let next = CHUNK.min(dst.len() - done - len);
        scratch.ahead.aim(sources, start + done + len, next, &dst[done + len..done + len + next]);
        eval_chunk(program, sources, start + done, len, scratch, OutChunk::F32(&mut dst[done..done + len]))?;
        done += len;
    }
    Ok(())
}

pub(crate) fn fused_elementwise(program: &FusedProgram, inputs: &[&Value], out: &Meta) -> Result<Value> {
    let metas: Vec<Meta> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
    let shape = program.shape(&metas)?;
    let regs = program.registers(&metas)?;
    let n = shape.numel_known();
    let sources: Vec<AnySource<'_>> = inputs
        .iter()
        .map(|v| match v.dtype {
            DType::F32 => source::<f32>(v, &shape).map(AnySource::F32),
            DType::Bool => source::<bool>(v, &shape).map(AnySource::Bool),
            d => bail!(dtype, "fused programs read f32 or bool inputs, got {d}"),
        })
        .collect::<Result<_>>()?;
    let Some(reduce) = &program.reduce else {
        // Plain elementwise: parallel tasks of whole chunks.
        return match regs[program.output].dtype {
            DType::Bool => {
                let mut buf = HostBuffer::for_elements::<bool>(n)?;
                let out_s = buf.as_mut_slice::<bool>();
                let task = |t: usize, d: &mut [bool]| -> Result<()> {
                    let mut scratch = Scratch::new(program, &regs);
                    let mut done = 0;
                    while done < d.len() {
                        let len = CHUNK.min(d.len() - done);
                        let next = CHUNK.min(d.len() - done - len);
                        scratch.ahead.aim(&sources, t * TASK + done + len, next, &d[done + len..done + len + next]);
                        eval_chunk(
                            program,
                            &sources,
                            t * TASK + done,
                            len,
                            &mut scratch,
                            OutChunk::Bool(&mut d[done..done + len]),
                        )?;
                        done += len;
                    }
                    Ok(())
                };
                out_s.par_chunks_mut(TASK).enumerate().try_for_each(|(t, d)| task(t, d))?;
                Ok(Value::from_buffer(DType::Bool, shape, buf))
            }
            _ => {
                let mut buf = HostBuffer::for_elements::<f32>(n)?;
                buf.as_mut_slice::<f32>().par_chunks_mut(TASK).enumerate().try_for_each(|(t, d)| {
                    eval_range(program, &sources, t * TASK, d, &mut Scratch::new(program, &regs))
                })?;
                Ok(Value::from_buffer(DType::F32, shape, buf))
            }
        };
    };
    // A trailing reduction: rows of length r, each folded exactly as the
    // plain reduction kernel folds it.
    let r: usize = reduce.axes.iter().map(|&a| shape[a]).product();
    let rows = n.checked_div(r).unwrap_or_else(|| shape[..shape.rank() - reduce.axes.len()].iter().product());
    let fold: fn(&[f32]) -> f32 = match reduce.f {
        ReduceOp::Sum | ReduceOp::Mean => f32::row_sum,
        ReduceOp::Max => f32::row_max,
        ReduceOp::Min => f32::row_min,
        f => bail!(invalid, "fused {} reduction", f.name()),
    };
    let finish = |v: f32| if reduce.f == ReduceOp::Mean { v.div_count(r) } else { v };
    let mut out_buf = HostBuffer::for_elements::<f32>(rows)?;
    let outs = out_buf.as_mut_slice::<f32>();
    let row_value = |row: usize, scratch: &mut Scratch, tmp: &mut Vec<f32>| -> Result<f32> {
        tmp.resize(r, 0.0);
        eval_range(program, &sources, row * r, tmp, scratch)?;
        Ok(finish(fold_row(tmp, &fold)))
    };
    if rows == 1 && r > 2 * super::reduce::BLOCK {
        // One long row: its blocks in parallel, folded in order (as fold_row_parallel).
        let block = super::reduce::BLOCK;
        let partials: Vec<f32> = (0..r.div_ceil(block))
            .into_par_iter()
            .map(|b| -> Result<f32> {
                let len = block.min(r - b * block);
                let mut tmp = vec![0.0f32; len];
                eval_range(program, &sources, b * block, &mut tmp, &mut Scratch::new(program, &regs))?;
                Ok(fold(&tmp))
            })
            .collect::<Result<_>>()?;
        outs[0] = finish(fold(&partials));
    } else {
        let per_task = (TASK / r.max(1)).max(1);
        outs.par_chunks_mut(per_task).enumerate().try_for_each(|(t, o)| -> Result<()> {
            let (mut scratch, mut tmp) = (Scratch::new(program, &regs), Vec::new());
            for (k, v) in o.iter_mut().enumerate() {
                *v = row_value(t * per_task + k, &mut scratch, &mut tmp)?;
            }
            Ok(())
        })?;
    }
    Ok(Value::from_buffer(DType::F32, out.shape.clone(), out_buf))
}

/// `activation(op(a) @ op(b) + bias)`: the matmul, then bias and activation
/// on each output row while it is in cache.
pub(crate) fn fused_matmul(
    a: &Value,
    b: &Value,
    bias: &Value,
    ta: bool,
    tb: bool,
    act: Option<UnaryOp>,
    out: &Meta,
) -> Result<Value> {
    let y = super::matmul::matmul(a, b, ta, tb, out)?;
    let n = *out.shape.last().unwrap_or(&1);
    let bias_c = super::movement::materialize(bias)?;
    let bias_s = bias_c.contiguous_slice::<f32>().unwrap_or(&[]);
    if bias_s.len() != n && bias_s.len() != 1 {
        bail!(shape, "FusedMatMul bias of {} elements for rows of {n}", bias_s.len());
    }
    let stride = if bias_s.len() == 1 { 0 } else { 1 };
    let storage =
        std::sync::Arc::try_unwrap(y.storage).map_err(|_| crate::Error::invalid("FusedMatMul output is shared"))?;
    let crate::tensor::storage::Storage::Host(mut buf) = storage;
    let data = buf.as_mut_slice::<f32>();
    let rows_per_task = (TASK / n.max(1)).max(1);
    data.par_chunks_mut(rows_per_task * n.max(1)).try_for_each(|chunk| -> Result<()> {
        for row in chunk.chunks_mut(n.max(1)) {
            float_binary_fn!(f32, crate::ops::elementwise::BinaryOp::Add, g => vectorize(ZipInPlace { x: &mut *row, y: bias_s, stride, f: g }), ());
            if let Some(f) = act {
                f32_unary!(f, g => vectorize(Update { x: &mut *row, f: g }), bail!(dtype, "fused activation {}", f.name()));
            }
        }
        Ok(())
    })?;
    Ok(Value::from_buffer(DType::F32, out.shape.clone(), buf))
}
