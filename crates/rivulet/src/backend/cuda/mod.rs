//! The CUDA backend: NVIDIA GPUs found at run time.
//!
//! [`probe`] finds the driver without linking it; [`gpu`] holds a device's
//! context, stream, caching allocator ([`allocator`]) and compiled kernels;
//! elementwise ops and fused elementwise programs (pads included) run as
//! kernels generated from the same programs the CPU interprets
//! ([`codegen`]); reductions, scans, softmax, gathers, random numbers,
//! optimizer updates, copies, fills, scatters and top-k are the
//! templates of [`kernels`]; float matrix products go to cuBLAS, and
//! convolutions and pooling are window kernels with cuBLAS products
//! ([`window`]). Everything is queued on one stream
//! per device: a host read (`to_vec`, a transfer) synchronizes, nothing else
//! does, except kernels that can fail (an integer division or power, a
//! gather's index check), whose error word is read back at once (after
//! each replay, in a recorded graph). Optimizer updates run in place where
//! the store holds the buffers alone, so a variable keeps its address,
//! which recorded graphs rely on.

pub(crate) mod allocator;
pub(crate) mod blaslt;
pub(crate) mod codegen;
pub(crate) mod gpu;
pub(crate) mod kernels;
pub(crate) mod probe;
pub(crate) mod staging;
pub(crate) mod window;

use super::{Backend, KernelCtx, Values};
use crate::error::{Error, ErrorKind, Result};
use crate::op::creation::Distribution;
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::fused::{FusedProgram, Instr};
use crate::op::optim::UpdateRule;
use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::op::window::WindowOp;
use crate::op::{Meta, Op};
use crate::tensor::layout::Layout;
use crate::tensor::storage::Storage;
use crate::tensor::{DType, Device, Scalar, Shape, Value};
use codegen::FusedParams;
use gpu::{Function, Gpu};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Threads per block of the elementwise and column kernels.
const BLOCK: u32 = 256;

static TF32: AtomicBool = AtomicBool::new(true);

/// Whether f32 matrix products on GPUs may use TensorFloat-32 tensor cores
/// (TensorFlow's `tf.config.experimental.enable_tensor_float_32_execution`,
/// on by default as in TensorFlow: inputs rounded to 10-bit mantissas,
/// f32 accumulation).
pub fn enable_tensor_float_32_execution(enabled: bool) {
    TF32.store(enabled, Ordering::Relaxed);
}

/// Whether TensorFloat-32 is enabled (see [`enable_tensor_float_32_execution`]).
pub fn tensor_float_32_execution_enabled() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// What a generated kernel is looked up by: cheap for the one-op programs
/// of eager code (no formatting on the hot path), the program's text for
/// fused ones; with the operand dtypes and the rank.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Signature {
    Unary(UnaryOp),
    Binary(BinaryOp),
    Select,
    Cast,
    /// A fused program by its [`fingerprint`] (the entry keeps the program
    /// itself, compared on every hit).
    Program(u64),
}

/// A structural hash of a fused program, constants by their bits (cheaper
/// than formatting it, on every run of a plan step).
fn fingerprint(p: &FusedProgram) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    p.output.hash(&mut h);
    for ins in &p.instrs {
        std::mem::discriminant(ins).hash(&mut h);
        match ins {
            Instr::Input(k) => k.hash(&mut h),
            Instr::Scalar(v, d) => (scalar_bits(v), d).hash(&mut h),
            Instr::Unary(f, a) => (f, a).hash(&mut h),
            Instr::Binary(f, a, b) => (f, a, b).hash(&mut h),
            Instr::Select(c, a, b) => (c, a, b).hash(&mut h),
            Instr::Cast(d, a) => (d, a).hash(&mut h),
            Instr::Pad { operand, pads, value } => (operand, pads, scalar_bits(value)).hash(&mut h),
        }
    }
    h.finish()
}

/// A scalar's kind and bits (NaN equal to itself, -0 apart from +0).
fn scalar_bits(v: &Scalar) -> (u8, u64) {
    match *v {
        Scalar::Bool(b) => (0, b as u64),
        Scalar::I64(i) => (1, i as u64),
        Scalar::F64(f) => (2, f.to_bits()),
    }
}

/// Whether two programs are the same, constants compared by bits.
fn same_program(a: &FusedProgram, b: &FusedProgram) -> bool {
    let instr = |x: &Instr, y: &Instr| match (x, y) {
        (Instr::Scalar(u, d), Instr::Scalar(v, e)) => scalar_bits(u) == scalar_bits(v) && d == e,
        (Instr::Pad { operand: o, pads: p, value: u }, Instr::Pad { operand: q, pads: r, value: v }) => {
            o == q && p == r && scalar_bits(u) == scalar_bits(v)
        }
        _ => x == y,
    };
    a.output == b.output
        && a.reduce == b.reduce
        && a.instrs.len() == b.instrs.len()
        && a.instrs.iter().zip(&b.instrs).all(|(x, y)| instr(x, y))
}

/// A kernel signature with its operand dtypes, output dtype, rank and
/// whether it indexes in 32 bits.
type KernelKey = (Signature, smallvec::SmallVec<[DType; 4]>, DType, usize, bool);

/// A compiled generated kernel: the program it was made from (to check a
/// fingerprint hit), the function, and whether it can raise the error word.
#[derive(Clone)]
struct Generated {
    program: Option<Arc<FusedProgram>>,
    function: Function,
    can_fail: bool,
}

/// Scalars uploaded already, by dtype, bits and rank (eager code feeds the
/// same constants, `x + 1.0`, over and over; device values are immutable,
/// so one copy serves every use).
type ScalarKey = (DType, u64, usize);

/// The CUDA backend of one GPU.
pub(crate) struct CudaBackend {
    gpu: Arc<Gpu>,
    /// Generated elementwise kernels, and whether each can raise the
    /// integer-error flag.
    programs: Mutex<FxHashMap<KernelKey, Generated>>,
    scalars: Mutex<FxHashMap<ScalarKey, Value>>,
}

/// Most scalars kept uploaded.
const SCALAR_CACHE: usize = 1024;

/// The first GPU's backend, opened on first use; why there is none otherwise.
fn opened() -> &'static std::result::Result<CudaBackend, String> {
    static GPU0: OnceLock<std::result::Result<CudaBackend, String>> = OnceLock::new();
    GPU0.get_or_init(|| {
        let probe = probe::cuda_probe();
        if probe.library.is_none() || probe.problem.is_some() || probe.devices.is_empty() {
            return Err(probe.describe());
        }
        if std::env::var("RIVULET_DISABLE_GPU").is_ok_and(|v| !v.is_empty() && v != "0") {
            return Err("RIVULET_DISABLE_GPU is set; running on the CPU".to_string());
        }
        // SAFETY: these only try to open the libraries (no symbol is used).
        let (driver, nvrtc) =
            unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::nvrtc::sys::is_culib_present()) };
        if !driver {
            return Err("the CUDA driver library was found by path but not by its usual names".to_string());
        }
        if !nvrtc {
            return Err(
                "NVRTC (libnvrtc.so) was not found, so no kernel can be compiled; running on the CPU".to_string()
            );
        }
        let gpu = Gpu::open(0).map_err(|e| format!("opening gpu:0 failed: {}", e.message()))?;
        OPENED.store(true, Ordering::Relaxed);
        Ok(CudaBackend {
            gpu: Arc::new(gpu),
            programs: Mutex::new(FxHashMap::default()),
            scalars: Mutex::new(FxHashMap::default()),
        })
    })
}

/// The backend of GPU `index`, if this machine has it.
pub(crate) fn backend(index: u32) -> Option<&'static CudaBackend> {
    match (index, opened()) {
        (0, Ok(b)) => Some(b),
        _ => None,
    }
}

/// The GPUs this process can use.
pub(crate) fn devices() -> Vec<Device> {
    backend(0).map(|b| b.gpu.device).into_iter().collect()
}

/// The CUDA backend's state in a line, for `rivulet devices`: the GPU it
/// opened, or why it runs everything on the CPU.
pub fn gpu_status() -> String {
    match opened() {
        Ok(b) => {
            let s = b.gpu.memory_stats();
            format!(
                "{}: {} (compute capability {}.{}, {} multiprocessors); CUDA backend ready, pool {} B in use, {} B cached",
                b.gpu.device,
                b.gpu.name,
                b.gpu.capability.0,
                b.gpu.capability.1,
                b.gpu.multiprocessors,
                s.in_use,
                s.cached
            )
        }
        Err(why) => why.clone(),
    }
}

/// Give the GPU pool's cached blocks back to the driver (part of
/// [`crate::release_cached_memory`]); a GPU not opened yet holds nothing.
pub(crate) fn release_cached_memory() {
    if OPENED.load(Ordering::Relaxed) {
        if let Some(b) = backend(0) {
            b.scalars.lock().clear();
            b.gpu.release_cached();
        }
    }
}

/// Wait for the work queued on every opened GPU.
pub(crate) fn synchronize() -> Result<()> {
    if OPENED.load(Ordering::Relaxed) {
        if let Some(b) = backend(0) {
            b.gpu.synchronize()?;
        }
    }
    Ok(())
}

/// Set once a GPU is open.
static OPENED: AtomicBool = AtomicBool::new(false);

/// The device address of `v`'s first element (its storage plus offset).
fn address(v: &Value) -> Result<u64> {
    let base = v
        .storage
        .device_memory()
        .map(|m| m.address())
        .ok_or_else(|| Error::invalid(format!("a {} value reached the CUDA backend without a copy", v.device())))?;
    Ok(base + (v.layout.offset * v.dtype.size()) as u64)
}

/// `v`'s storage address (without its offset).
fn base_address(v: &Value) -> Result<u64> {
    Ok(address(v)? - (v.layout.offset * v.dtype.size()) as u64)
}

/// `v`'s strides along `dims` (the output's, `v` right-aligned and
/// broadcast: stride 0 where `v` has extent 1).
fn broadcast_strides(v: &Value, dims: &[usize]) -> Vec<isize> {
    let shape = v.shape().dims();
    let off = dims.len() - shape.len();
    (0..dims.len()).map(|d| if d < off || shape[d - off] == 1 { 0 } else { v.layout.strides[d - off] }).collect()
}

/// Merge neighbouring dimensions that every operand walks as one, and
/// drop extents of 1: a contiguous elementwise op becomes rank 1.
fn coalesce(dims: &[usize], strides: &mut [Vec<isize>]) -> Vec<usize> {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<isize>> = vec![Vec::new(); strides.len()];
    for d in 0..dims.len() {
        if dims[d] == 1 {
            continue;
        }
        let merge = match out_dims.last() {
            Some(_) => strides.iter().zip(&out_strides).all(|(s, o)| {
                let last = *o.last().unwrap_or(&0);
                last == s[d] * dims[d] as isize
            }),
            None => false,
        };
        if merge {
            if let Some(n) = out_dims.last_mut() {
                *n *= dims[d];
            }
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                if let Some(x) = o.last_mut() {
                    *x = s[d];
                }
            }
        } else {
            out_dims.push(dims[d]);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        for o in out_strides.iter_mut() {
            o.push(0);
        }
    }
    for (s, o) in strides.iter_mut().zip(out_strides) {
        *s = o;
    }
    out_dims
}

/// Blocks for `n` elements at `BLOCK` threads each, for grid-stride loops.
fn grid_for(n: usize, sms: u32) -> u32 {
    let blocks = n.div_ceil(BLOCK as usize).max(1);
    blocks.min(sms as usize * 32) as u32
}

/// One argument of a launch: a pointer to the value.
fn arg<T>(x: &mut T) -> *mut c_void {
    x as *mut T as *mut c_void
}

/// The single-op fused program `f(inputs...)`.
fn single(instr: Instr, inputs: usize) -> FusedProgram {
    let mut instrs: Vec<Instr> = (0..inputs).map(Instr::Input).collect();
    instrs.push(instr);
    FusedProgram { output: inputs, instrs, reduce: None }
}

impl CudaBackend {
    /// A new contiguous value of `meta` (uninitialised) and its address.
    fn empty(&self, meta: &Meta) -> Result<(Value, u64)> {
        let n = meta.shape.checked_numel()?;
        let bytes = n.checked_mul(meta.dtype.size()).ok_or_else(|| Error::invalid("tensor too large"))?;
        let buf = self.gpu.alloc(bytes)?;
        let ptr = buf.ptr();
        let storage = Storage::on_device(self.gpu.device, Box::new(buf));
        Ok((
            Value { dtype: meta.dtype, layout: Layout::contiguous(meta.shape.clone()), storage: Arc::new(storage) },
            ptr,
        ))
    }

    /// `v` itself when contiguous, else a contiguous copy.
    fn contiguous(&self, v: &Value) -> Result<Value> {
        if v.layout.is_contiguous() {
            return Ok(v.clone());
        }
        let meta = Meta::new(v.dtype, v.shape().clone());
        self.assemble(&meta, Scalar::I64(0), &[(Layout::contiguous(v.shape().clone()), v)])
    }

    /// Run a generated elementwise kernel: `program` over `inputs` into `out`.
    fn run_program(&self, sig: Signature, program: &FusedProgram, inputs: &[&Value], out: &Meta) -> Result<Value> {
        let (value, out_ptr) = self.empty(out)?;
        let n = out.shape.numel_known();
        if n == 0 {
            return Ok(value);
        }
        let dims = out.shape.dims().to_vec();
        let (dims, strides) = if program.has_pads() {
            // Pads index per dimension: no merging; inputs under a pad
            // stride along its operand's space.
            let spaces = program.spaces()?;
            let in_space = codegen::input_spaces(program, &spaces, inputs.len())?;
            let strides: Vec<Vec<isize>> = inputs
                .iter()
                .zip(&in_space)
                .map(|(v, &sp)| broadcast_strides(v, &codegen::input_dims(program, &dims, sp)))
                .collect();
            (dims, strides)
        } else {
            let mut strides: Vec<Vec<isize>> = inputs.iter().map(|v| broadcast_strides(v, &dims)).collect();
            // The output's own (contiguous) strides join the merge test.
            strides.push(Layout::contiguous(out.shape.clone()).strides.to_vec());
            let dims = coalesce(&dims, &mut strides);
            strides.pop();
            (dims, strides)
        };
        let rank = dims.len();
        let narrow = n < (1 << 31);
        let fused = matches!(sig, Signature::Program(_));
        let signature: KernelKey = (sig, inputs.iter().map(|v| v.dtype).collect(), out.dtype, rank, narrow);
        let hit = self.programs.lock().get(&signature).and_then(|g| match &g.program {
            Some(p) if !same_program(p, program) => None,
            _ => Some((g.function, g.can_fail)),
        });
        let (f, can_fail) = match hit {
            Some(k) => k,
            None => {
                let metas: Vec<Meta> = inputs.iter().map(|v| Meta::new(v.dtype, Shape::new(&vec![1; rank]))).collect();
                let out_meta = Meta::new(out.dtype, Shape::new(&dims));
                let src = codegen::fused_elementwise_indexed(program, &metas, &out_meta, narrow)?;
                // The disk cache is keyed by the whole source, prelude included.
                let key = format!("{}_{:016x}", src.name, codegen::fnv1a(src.source.as_bytes()));
                let function = self.gpu.function(&key, &src.name, || src.source.clone())?;
                let can_fail = src.source.contains("p.error)");
                let program = fused.then(|| Arc::new(program.clone()));
                self.programs.lock().insert(signature, Generated { program, function, can_fail });
                (function, can_fail)
            }
        };
        let ins: Vec<(*const u8, Vec<isize>)> =
            inputs.iter().zip(strides).map(|(v, s)| Ok((address(v)? as *const u8, s))).collect::<Result<_>>()?;
        let mut params = FusedParams::new(out_ptr as *mut u8, self.gpu.error_word() as *mut i32, &dims, &ins)?;
        // SAFETY: the parameter block matches `RvParams`; every address is a
        // live device buffer, held by `inputs` and `value` until the kernel
        // has run (stream order).
        unsafe { self.gpu.launch(f, (grid_for(n, self.gpu.multiprocessors), 1, 1), BLOCK, &mut [arg(&mut params)])? };
        if can_fail {
            match self.gpu.take_error()? {
                0 => {}
                1 => return Err(Error::invalid("integer division by zero")),
                2 => return Err(Error::invalid("integers cannot be raised to a negative integer power")),
                c => return Err(Error::device(format!("generated kernel reported error {c}"))),
            }
        }
        Ok(value)
    }

    /// Launch a template instance with `args`.
    fn launch(&self, inst: kernels::Instance, grid: (u32, u32, u32), args: &mut [*mut c_void]) -> Result<()> {
        let f = self.gpu.function(&inst.key, &inst.name, || inst.source())?;
        // SAFETY: each caller passes the arguments of its template's
        // signature, over live device buffers.
        unsafe { self.gpu.launch(f, grid, BLOCK, args) }
    }

    /// Host fallback: run `f` on the CPU backend with `inputs` copied there,
    /// and copy its result back.
    fn on_host(&self, inputs: &[&Value], f: impl FnOnce(&dyn Backend, &[&Value]) -> Result<Value>) -> Result<Value> {
        let host: Vec<Value> = inputs.iter().map(|v| self.to_host(v)).collect::<Result<_>>()?;
        let refs: Vec<&Value> = host.iter().collect();
        self.upload(&f(super::backend(Device::CPU)?, &refs)?)
    }

    /// A host copy of `v`: strided views of elements wider than the copy
    /// kernels' 8 bytes (complex128) come over with their whole buffer and
    /// keep their layout, the rest contiguous.
    fn to_host(&self, v: &Value) -> Result<Value> {
        if v.layout.is_contiguous() || v.dtype.size() <= 8 {
            return self.download(v);
        }
        let memory =
            v.storage.device_memory().ok_or_else(|| Error::invalid("internal: a GPU value without device memory"))?;
        let buffer = memory.download()?;
        let elements = buffer.len_bytes() / v.dtype.size();
        Ok(Value::from_buffer(v.dtype, Shape::new(&[elements]), buffer).view(v.layout.clone()))
    }

    /// `(outer, R, inner)` of a contiguous `shape` reduced along `axes` (a
    /// run of neighbouring axes).
    fn split(dims: &[usize], first: usize, last: usize) -> (usize, usize, usize) {
        let p = |r: &[usize]| r.iter().product::<usize>();
        (p(&dims[..first]), p(&dims[first..=last]), p(&dims[last + 1..]))
    }

    /// Reduce a contiguous `[outer, R, inner]` value into `out`.
    fn reduce_contiguous(
        &self,
        f: ReduceOp,
        x: &Value,
        (outer, r, inner): (usize, usize, usize),
        out: &Meta,
    ) -> Result<Value> {
        let (value, out_ptr) = self.empty(out)?;
        let total = outer * inner;
        if total == 0 {
            return Ok(value);
        }
        let sms = self.gpu.multiprocessors as usize;
        let (mut inp, mut count) = (address(x)?, r as i64);
        let acc = kernels::acc_dtype(f, out.dtype);
        if inner == 1 {
            // Enough blocks to fill the GPU, each at least 2048 elements long.
            let parts = (4 * sms).div_ceil(outer).clamp(1, r.div_ceil(2048).max(1)).min(65_535) as i32;
            let mut rows = outer as i64;
            let mut len = r as i64;
            if parts > 1 {
                let (partial, part_ptr) = self.empty(&Meta::new(acc, Shape::new(&[outer * parts as usize])))?;
                let mut po = part_ptr;
                let mut one = parts;
                self.launch(
                    kernels::reduce(f, true, x.dtype, out.dtype, false),
                    ((outer * parts as usize) as u32, 1, 1),
                    &mut [arg(&mut inp), arg(&mut po), arg(&mut rows), arg(&mut len), arg(&mut one), arg(&mut count)],
                )?;
                let mut o = out_ptr;
                let mut plen = parts as i64;
                let mut single = 1i32;
                self.launch(
                    kernels::reduce(f, true, acc, out.dtype, true),
                    (outer as u32, 1, 1),
                    &mut [arg(&mut po), arg(&mut o), arg(&mut rows), arg(&mut plen), arg(&mut single), arg(&mut count)],
                )?;
                drop(partial);
                return Ok(value);
            }
            let mut o = out_ptr;
            let mut one = 1i32;
            self.launch(
                kernels::reduce(f, true, x.dtype, out.dtype, true),
                (outer as u32, 1, 1),
                &mut [arg(&mut inp), arg(&mut o), arg(&mut rows), arg(&mut len), arg(&mut one), arg(&mut count)],
            )?;
            return Ok(value);
        }
        let blocks = total.div_ceil(BLOCK as usize);
        // Split R when the columns alone would leave the GPU idle.
        let parts =
            if total < sms * 1024 { (sms * 2048).div_ceil(total).clamp(1, (r / 16).max(1)).min(65_535) } else { 1 };
        let (mut o64, mut r64, mut i64_) = (outer as i64, r as i64, inner as i64);
        if parts > 1 {
            let (partial, part_ptr) = self.empty(&Meta::new(acc, Shape::new(&[parts * total])))?;
            let mut po = part_ptr;
            let mut p32 = parts as i32;
            self.launch(
                kernels::reduce(f, false, x.dtype, out.dtype, false),
                (blocks as u32, parts as u32, 1),
                &mut [
                    arg(&mut inp),
                    arg(&mut po),
                    arg(&mut o64),
                    arg(&mut r64),
                    arg(&mut i64_),
                    arg(&mut p32),
                    arg(&mut count),
                ],
            )?;
            let (mut one_outer, mut rp, mut tot) = (1i64, parts as i64, total as i64);
            let mut o = out_ptr;
            let mut single = 1i32;
            self.launch(
                kernels::reduce(f, false, acc, out.dtype, true),
                (blocks as u32, 1, 1),
                &mut [
                    arg(&mut po),
                    arg(&mut o),
                    arg(&mut one_outer),
                    arg(&mut rp),
                    arg(&mut tot),
                    arg(&mut single),
                    arg(&mut count),
                ],
            )?;
            drop(partial);
            return Ok(value);
        }
        let mut o = out_ptr;
        let mut single = 1i32;
        self.launch(
            kernels::reduce(f, false, x.dtype, out.dtype, true),
            (blocks as u32, 1, 1),
            &mut [
                arg(&mut inp),
                arg(&mut o),
                arg(&mut o64),
                arg(&mut r64),
                arg(&mut i64_),
                arg(&mut single),
                arg(&mut count),
            ],
        )?;
        Ok(value)
    }

    /// `x` made contiguous with `axis` as the middle of `(outer, R, inner)`.
    fn along(&self, x: &Value, axis: usize) -> Result<(Value, (usize, usize, usize))> {
        let x = self.contiguous(x)?;
        let dims = x.shape().dims().to_vec();
        let split = Self::split(&dims, axis, axis);
        Ok((x, split))
    }

    /// The operand of a matrix product as cuBLAS takes it: its address,
    /// whether it is stored transposed relative to `transposed`, its
    /// leading dimension and its batch stride (0: one matrix for all).
    fn matrix_operand(&self, v: &Value, batch: &[usize]) -> Result<(Value, bool, i64, i64)> {
        let rank = v.shape().rank();
        let (rows, cols) = (v.shape()[rank - 2], v.shape()[rank - 1]);
        let (s0, s1) = (v.layout.strides[rank - 2], v.layout.strides[rank - 1]);
        // One stride steps through the batch when the operand's batch
        // dims (broadcast to the output's) nest exactly, or all broadcast.
        let vb = &v.shape().dims()[..rank - 2];
        let off = batch.len() - vb.len();
        let walked: Vec<(usize, isize)> = (0..batch.len())
            .filter(|&d| batch[d] != 1)
            .map(|d| (batch[d], if d < off || vb[d - off] == 1 { 0 } else { v.layout.strides[d - off] }))
            .collect();
        let one_stride = if walked.iter().all(|&(_, s)| s == 0) {
            Some(0)
        } else if walked.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0 as isize) {
            walked.last().map(|&(_, s)| s)
        } else {
            None
        };
        let row_major = s1 == 1 && (s0 >= cols.max(1) as isize || rows == 1);
        let col_major = s0 == 1 && (s1 >= rows.max(1) as isize || cols == 1) && !row_major;
        match (one_stride, row_major, col_major) {
            (Some(bs), true, _) if bs >= 0 => Ok((v.clone(), false, s0.max(cols.max(1) as isize) as i64, bs as i64)),
            (Some(bs), _, true) if bs >= 0 => Ok((v.clone(), true, s1.max(rows.max(1) as isize) as i64, bs as i64)),
            _ => {
                // A full contiguous copy, broadcast over the batch.
                let mut full: Vec<usize> = batch.to_vec();
                full.extend([rows, cols]);
                let meta = Meta::new(v.dtype, Shape::new(&full));
                let bcast = crate::backend::views::broadcast_to(v, &meta.shape)?;
                let c = self.assemble(&meta, Scalar::I64(0), &[(Layout::contiguous(meta.shape.clone()), &bcast)])?;
                let stride = if batch.iter().product::<usize>() > 1 { (rows * cols) as i64 } else { 0 };
                Ok((c, false, cols.max(1) as i64, stride))
            }
        }
    }
}

/// A row-major product `C[m, n] = op(A)[m, k] · op(B)[k, n]` (plus `C` where
/// `accumulate`), `batches` times: each operand is stored row-major with
/// its leading dimension and steps by its batch stride (elements); `ta`
/// and `tb` say the stored matrix is op's transpose. `P` is where an
/// operand lives: an address, or a place in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gemm<P> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: P,
    pub lda: usize,
    pub sa: usize,
    pub ta: bool,
    pub b: P,
    pub ldb: usize,
    pub sb: usize,
    pub tb: bool,
    pub c: P,
    pub ldc: usize,
    pub sc: usize,
    pub batches: usize,
    pub accumulate: bool,
}

impl<P: Copy> Gemm<P> {
    /// The same product with its operands placed by `f`.
    pub fn place<Q>(&self, mut f: impl FnMut(P) -> Result<Q>) -> Result<Gemm<Q>> {
        Ok(Gemm {
            m: self.m,
            n: self.n,
            k: self.k,
            a: f(self.a)?,
            lda: self.lda,
            sa: self.sa,
            ta: self.ta,
            b: f(self.b)?,
            ldb: self.ldb,
            sb: self.sb,
            tb: self.tb,
            c: f(self.c)?,
            ldc: self.ldc,
            sc: self.sc,
            batches: self.batches,
            accumulate: self.accumulate,
        })
    }

    /// Whether cuBLAS's 32-bit sizes hold it.
    pub fn fits_cublas(&self) -> bool {
        let small = |x: usize| x <= i32::MAX as usize;
        [self.m, self.n, self.k, self.lda, self.ldb, self.ldc, self.batches].into_iter().all(small)
    }
}

impl CudaBackend {
    /// A float product on cuBLAS (`GemmEx`, or `GemmStridedBatchedEx` for
    /// several), TensorFloat-32 following `enable_tensor_float_32_execution`.
    fn gemm(&self, dt: DType, g: &Gemm<u64>) -> Result<()> {
        use cudarc::cublas::sys as blas;
        if !g.fits_cublas() {
            return Err(Error::unimplemented(format!(
                "a GPU matrix product of {}x{} by {}x{} exceeds cuBLAS's 32-bit sizes",
                g.m, g.k, g.k, g.n
            )));
        }
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T:
        // cuBLAS's first operand is B, its second A.
        let op = |t: bool| if t { blas::cublasOperation_t::CUBLAS_OP_T } else { blas::cublasOperation_t::CUBLAS_OP_N };
        let (data_type, compute) = match dt {
            DType::F32 if tensor_float_32_execution_enabled() => {
                (blas::cudaDataType::CUDA_R_32F, blas::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32)
            }
            DType::F32 => (blas::cudaDataType::CUDA_R_32F, blas::cublasComputeType_t::CUBLAS_COMPUTE_32F),
            DType::F64 => (blas::cudaDataType::CUDA_R_64F, blas::cublasComputeType_t::CUBLAS_COMPUTE_64F),
            DType::F16 => (blas::cudaDataType::CUDA_R_16F, blas::cublasComputeType_t::CUBLAS_COMPUTE_32F),
            DType::BF16 => (blas::cudaDataType::CUDA_R_16BF, blas::cublasComputeType_t::CUBLAS_COMPUTE_32F),
            d => return Err(Error::dtype(format!("cuBLAS products on the GPU do not take {d}"))),
        };
        let (one64, zero64) = (1f64, 0f64);
        let (one32, zero32) = (1f32, 0f32);
        let (alpha, beta): (*const c_void, *const c_void) = match (dt == DType::F64, g.accumulate) {
            (true, acc) => (&one64 as *const f64 as _, if acc { &one64 } else { &zero64 } as *const f64 as _),
            (false, acc) => (&one32 as *const f32 as _, if acc { &one32 } else { &zero32 } as *const f32 as _),
        };
        let (m, n, k) = (g.m as i32, g.n as i32, g.k as i32);
        let (pa, pb, pc) = (g.a as *const c_void, g.b as *const c_void, g.c as *mut c_void);
        self.gpu.with_blas(|h| {
            // SAFETY: the operands are live device buffers laid out as
            // described by the leading dimensions and batch strides; the
            // scalars outlive the (host-pointer-mode) call.
            unsafe {
                if g.batches == 1 {
                    // One product: the plain GEMM (cuBLAS picks its kernels
                    // for it as for cublasSgemm, not among batched ones).
                    return gpu::check_blas(
                        "cublasGemmEx",
                        blas::cublasGemmEx(
                            h.0,
                            op(g.tb),
                            op(g.ta),
                            n,
                            m,
                            k,
                            alpha,
                            pb,
                            data_type,
                            g.ldb as i32,
                            pa,
                            data_type,
                            g.lda as i32,
                            beta,
                            pc,
                            data_type,
                            g.ldc as i32,
                            compute,
                            blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                        ),
                    );
                }
                gpu::check_blas(
                    "cublasGemmStridedBatchedEx",
                    blas::cublasGemmStridedBatchedEx(
                        h.0,
                        op(g.tb),
                        op(g.ta),
                        n,
                        m,
                        k,
                        alpha,
                        pb,
                        data_type,
                        g.ldb as i32,
                        g.sb as i64,
                        pa,
                        data_type,
                        g.lda as i32,
                        g.sa as i64,
                        beta,
                        pc,
                        data_type,
                        g.ldc as i32,
                        g.sc as i64,
                        g.batches as i32,
                        compute,
                        blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    ),
                )
            }
        })
    }
}

impl CudaBackend {
    /// The `[B, O, A, I]` view of `params` and `[B, K]` of `indices` for a
    /// gather along `axis` with `batch_dims` (addresses filled by the caller).
    fn gather_params(
        &self,
        params: &Value,
        indices: &Value,
        axis: usize,
        batch_dims: usize,
        out: u64,
    ) -> Result<kernels::GatherParams> {
        if !matches!(indices.dtype, DType::I32 | DType::I64) {
            return Err(Error::dtype(format!("gather indices must be int32 or int64, got {}", indices.dtype)));
        }
        let pd = params.shape().dims();
        let prod = |r: &[usize]| r.iter().product::<usize>();
        let b = prod(&pd[..batch_dims]);
        let k = indices.numel().checked_div(b).unwrap_or(0);
        Ok(kernels::GatherParams {
            out,
            error: self.gpu.error_word(),
            b: b as i64,
            o: prod(&pd[batch_dims..axis]) as i64,
            a: pd[axis] as i64,
            i: prod(&pd[axis + 1..]) as i64,
            k: k as i64,
            idx64: (indices.dtype == DType::I64) as i32,
            ..Default::default()
        })
    }

    /// The error of an out-of-range index, if a gather kernel flagged one
    /// (reading the flag waits for the kernel).
    fn index_error(&self, params: &Value, axis: usize) -> Result<()> {
        match self.gpu.take_error()? {
            0 => Ok(()),
            _ => Err(Error::invalid(format!(
                "a gather index is out of range [0, {}) for axis {axis} of params {}",
                params.shape()[axis],
                params.shape()
            ))),
        }
    }

    /// The error of an out-of-range index vector, if a gather_nd or
    /// scatter_nd kernel flagged one (reading the flag waits for it).
    fn nd_index_error(&self, op: &str, params: &Shape, depth: i32) -> Result<()> {
        match self.gpu.take_error()? {
            0 => Ok(()),
            _ => Err(Error::invalid(format!(
                "{op}: an index is out of range for the first {depth} dimension(s) of {params}"
            ))),
        }
    }

    /// Softmax or log-softmax along the last axis: one block per row.
    fn softmax(&self, x: &Value, log: bool) -> Result<Value> {
        let x = self.contiguous(x)?;
        let meta = Meta::new(x.dtype, x.shape().clone());
        let (value, out_ptr) = self.empty(&meta)?;
        let dims = x.shape().dims();
        let len = dims.last().copied().unwrap_or(1);
        let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
        if rows == 0 || len == 0 {
            return Ok(value);
        }
        if rows > u32::MAX as usize {
            return Err(Error::unimplemented(format!("a GPU softmax over {rows} rows")));
        }
        let (mut i, mut o, mut l) = (address(&x)?, out_ptr, len as i64);
        self.launch(kernels::softmax(x.dtype, log), (rows as u32, 1, 1), &mut [arg(&mut i), arg(&mut o), arg(&mut l)])?;
        Ok(value)
    }

    /// One optimizer step as one kernel: new variable and slot values.
    fn apply_update(&self, rule: &UpdateRule, inputs: &[&Value]) -> Result<Vec<Value>> {
        self.update_kernel(rule, inputs, None)
    }

    /// The update kernel over `inputs` (variable, gradient, lr, step,
    /// slots): into new buffers, or with `into` over those values (the
    /// variable's and slots' own buffers: the kernel reads each element
    /// before it writes it).
    fn update_kernel(&self, rule: &UpdateRule, inputs: &[&Value], into: Option<&[Value]>) -> Result<Vec<Value>> {
        let (w, g) = (inputs[0], inputs[1]);
        let slots = &inputs[4..];
        if slots.len() != rule.num_slots() || g.shape() != w.shape() || slots.iter().any(|s| s.shape() != w.shape()) {
            return Err(Error::shape(format!(
                "optimizer update: the gradient and {} slots must have the variable's shape {}",
                rule.num_slots(),
                w.shape()
            )));
        }
        if g.dtype != w.dtype || slots.iter().any(|s| s.dtype != w.dtype) {
            return Err(Error::dtype(format!("optimizer update: gradient and slots must be {}", w.dtype)));
        }
        let meta = Meta::new(w.dtype, w.shape().clone());
        // lr and step as they are where the kernel reads their dtype, else cast to f64.
        let scalar = |v: &Value| -> Result<(Value, i32)> {
            if v.numel() != 1 {
                return Err(Error::invalid(format!("expected a scalar, got shape {}", v.shape())));
            }
            match kernels::UpdateParams::scalar_kind(v.dtype) {
                Some(kind) => Ok((v.clone(), kind)),
                None => Ok((self.cast(v, &Meta::new(DType::F64, v.shape().clone()))?, 0)),
            }
        };
        let ((lr, lr_kind), (step, step_kind)) = (scalar(inputs[2])?, scalar(inputs[3])?);
        let (w, g) = (self.contiguous(w)?, self.contiguous(g)?);
        let slots: Vec<Value> = slots.iter().map(|s| self.contiguous(s)).collect::<Result<_>>()?;
        let mut outs = Vec::with_capacity(1 + slots.len());
        let mut ptrs = [0u64; 3];
        for (k, p) in ptrs.iter_mut().take(1 + slots.len()).enumerate() {
            match into {
                Some(targets) => *p = address(&targets[k])?,
                None => {
                    let (v, ptr) = self.empty(&meta)?;
                    outs.push(v);
                    *p = ptr;
                }
            }
        }
        let n = meta.shape.numel_known();
        if n == 0 {
            return Ok(outs);
        }
        let slot = |k: usize| slots.get(k).map(address).transpose().map(|a| a.unwrap_or(0));
        let (rule_code, flag, h) = match *rule {
            UpdateRule::Sgd => (0, 0, [0.0; 4]),
            UpdateRule::Momentum { momentum, nesterov } => (1, nesterov as i32, [momentum, 0.0, 0.0, 0.0]),
            UpdateRule::Adam { beta1, beta2, epsilon, weight_decay } => (2, 0, [beta1, beta2, epsilon, weight_decay]),
            UpdateRule::RmsProp { rho, epsilon } => (3, 0, [rho, epsilon, 0.0, 0.0]),
            UpdateRule::Adagrad { epsilon } => (4, 0, [epsilon, 0.0, 0.0, 0.0]),
            // The newer rules run as their decomposition into generated elementwise kernels.
            _ => return Err(Error::unimplemented(format!("no CUDA kernel of its own for {}", rule.type_name()))),
        };
        let mut p = kernels::UpdateParams {
            w: address(&w)?,
            g: address(&g)?,
            s1: slot(0)?,
            s2: slot(1)?,
            w_out: ptrs[0],
            s1_out: ptrs[1],
            s2_out: ptrs[2],
            lr: address(&lr)?,
            step: address(&step)?,
            n: n as i64,
            h,
            rule: rule_code,
            flag,
            lr_kind,
            step_kind,
        };
        self.launch(kernels::apply_update(w.dtype), (grid_for(n, self.gpu.multiprocessors), 1, 1), &mut [arg(&mut p)])?;
        Ok(outs)
    }

    /// `FusedMatMul`: one cuBLASLt launch where [`blaslt::Epilogue::of`]
    /// has the epilogue (by default a bias with no activation), else the
    /// cuBLAS product, then bias and activation as one generated kernel
    /// (two launches where the decomposition makes three, with the same
    /// roundings).
    fn fused_matmul(
        &self,
        inputs: &[&Value],
        ta: bool,
        tb: bool,
        activation: Option<UnaryOp>,
        out: &Meta,
    ) -> Result<Value> {
        let epilogue = blaslt::Epilogue::of(activation).map(|e| (inputs[2], e));
        let (y, fused) = self.product(inputs[0], inputs[1], ta, tb, out, epilogue)?;
        if fused {
            return Ok(y);
        }
        self.bias_activation(&y, inputs[2], activation, out)
    }

    /// A matrix product, with `epilogue(product + bias)` fused on cuBLASLt
    /// where it runs it: the value, and whether the epilogue ran.
    fn product(
        &self,
        a: &Value,
        b: &Value,
        ta: bool,
        tb: bool,
        out: &Meta,
        epilogue: Option<(&Value, blaslt::Epilogue)>,
    ) -> Result<(Value, bool)> {
        let (value, c_ptr) = self.empty(out)?;
        let r = out.shape.rank();
        let (m, n) = (out.shape[r - 2], out.shape[r - 1]);
        let ar = a.shape().rank();
        let k = if ta { a.shape()[ar - 2] } else { a.shape()[ar - 1] };
        let batch: Vec<usize> = out.shape.dims()[..r - 2].to_vec();
        let batches: usize = batch.iter().product();
        if m == 0 || n == 0 || batches == 0 {
            return Ok((value, false));
        }
        if k == 0 {
            return Ok((self.assemble(out, Scalar::I64(0), &[])?, false));
        }
        let (av, a_flip, lda, sa) = self.matrix_operand(a, &batch)?;
        let (bv, b_flip, ldb, sb) = self.matrix_operand(b, &batch)?;
        let (pa, pb) = (address(&av)?, address(&bv)?);
        let dt = out.dtype;
        if !dt.is_float() {
            // Strided integer kernel: element (i, p) of op(A) and (p, j) of op(B).
            let at = ta ^ a_flip;
            let bt = tb ^ b_flip;
            // Row-major op(A)[i, p]: stored [i, p] (stride lda, 1) or transposed.
            let (sam, sak) = if at { (1, lda) } else { (lda, 1) };
            let (sbk, sbn) = if bt { (1, ldb) } else { (ldb, 1) };
            let mut p = kernels::MatmulParams {
                a: pa,
                b: pb,
                c: c_ptr,
                batch: batches as i64,
                m: m as i64,
                n: n as i64,
                k: k as i64,
                sab: sa,
                sam,
                sak,
                sbb: sb,
                sbk,
                sbn,
            };
            let total = batches * m * n;
            self.launch(kernels::matmul(dt), (total.div_ceil(BLOCK as usize) as u32, 1, 1), &mut [arg(&mut p)])?;
            return Ok((value, false));
        }
        let product = Gemm {
            m,
            n,
            k,
            a: pa,
            lda: lda as usize,
            sa: sa as usize,
            ta: ta ^ a_flip,
            b: pb,
            ldb: ldb as usize,
            sb: sb as usize,
            tb: tb ^ b_flip,
            c: c_ptr,
            ldc: n,
            sc: m * n,
            batches,
            accumulate: false,
        };
        let fused = match epilogue {
            // A bias of another length is left to the kernel, which reports it.
            Some((bias, e))
                if dt == DType::F32 && bias.dtype == dt && bias.numel() == n && bias.layout.is_contiguous() =>
            {
                self.gpu.matmul_epilogue(&product, e, address(bias)?, tensor_float_32_execution_enabled())?
            }
            _ => false,
        };
        if !fused {
            self.gemm(dt, &product)?;
        }
        drop((av, bv));
        Ok((value, fused))
    }

    /// `activation(y + bias)` as one generated kernel: the epilogue of the
    /// fused products.
    fn bias_activation(&self, y: &Value, bias: &Value, activation: Option<UnaryOp>, out: &Meta) -> Result<Value> {
        let mut instrs = vec![Instr::Input(0), Instr::Input(1), Instr::Binary(BinaryOp::Add, 0, 1)];
        if let Some(f) = activation {
            instrs.push(Instr::Unary(f, 2));
        }
        let program = FusedProgram { output: instrs.len() - 1, instrs, reduce: None };
        self.run_program(Signature::Program(fingerprint(&program)), &program, &[y, bias], out)
    }

    /// Samples of `dist` from the stream `(seed, stream)`, or with the
    /// stream read from device memory at `stream_at` when the kernel runs.
    fn draw(&self, dist: &Distribution, out: &Meta, seed: u64, stream: u64, stream_at: Option<u64>) -> Result<Value> {
        let d = out.dtype;
        let p = match (kernels::RandomParams::new(dist, out, seed, stream), stream_at) {
            (Some(p), at) => kernels::RandomParams { stream_at: at.unwrap_or(0), ..p },
            (None, Some(_)) => {
                // Not Unimplemented: that would send it to the CPU, which cannot read the stream either.
                return Err(Error::invalid(format!(
                    "{dist:?} draws into {d} are not recorded in device graphs (their kernel reads no stream on the device)"
                )));
            }
            // Other pairings (float draws into integers...) as the CPU makes them.
            (None, None) => return self.on_host(&[], |cpu, _| cpu.random(dist, out, seed, stream)),
        };
        self.launch_random(p, dist, out)
    }

    /// The random kernel drawing `dist` with `p` (its output allocated here).
    fn launch_random(&self, mut p: kernels::RandomParams, dist: &Distribution, out: &Meta) -> Result<Value> {
        let (value, ptr) = self.empty(out)?;
        if p.n == 0 {
            return Ok(value);
        }
        p.out = ptr;
        let per = crate::op::creation::RandomStream::per_block(out.dtype, dist);
        let blocks = (p.n as usize).div_ceil(per);
        self.launch(
            kernels::random(out.dtype),
            (grid_for(blocks, self.gpu.multiprocessors), 1, 1),
            &mut [arg(&mut p)],
        )?;
        Ok(value)
    }

    /// A convolution, pooling or one of their gradients: its [`window::Plan`]
    /// run step by step (a `FusedConv` adds its bias and activation after).
    fn window(&self, f: &WindowOp, inputs: &[&Value], out: &Meta) -> Result<Value> {
        use window::Buf;
        let dt = out.dtype;
        let x = self.contiguous(inputs[0])?;
        let y = inputs.get(1).map(|v| self.contiguous(v)).transpose()?;
        let plan = window::plan(f, x.shape(), y.as_ref().map(|v| v.shape()), &out.shape, window::SCRATCH_ELEMENTS)?;
        let result = if plan.zeroed { self.assemble(out, Scalar::F64(0.0), &[])? } else { self.empty(out)?.0 };
        let scratch = match plan.scratch {
            0 => None,
            n => Some(self.empty(&Meta::new(dt, Shape::new(&[n])))?.0),
        };
        let base = |b: Buf| -> Result<u64> {
            let missing = || Error::invalid(format!("internal: {} plan without its {b:?}", f.type_name()));
            match b {
                Buf::X => address(&x),
                Buf::Y => address(y.as_ref().ok_or_else(missing)?),
                Buf::Out => address(&result),
                Buf::Scratch => address(scratch.as_ref().ok_or_else(missing)?),
            }
        };
        for step in &plan.steps {
            match step {
                window::Step::Launch { kernel, params, x: bx, y: by, out: bo } => {
                    let mut p = *params;
                    (p.x, p.out) = (base(*bx)?, base(*bo)?);
                    p.y = match by {
                        Some(b) => base(*b)?,
                        None => 0,
                    };
                    let grid = (grid_for(p.n as usize, self.gpu.multiprocessors), 1, 1);
                    self.launch(kernels::window(*kernel, dt, plan.narrow), grid, &mut [arg(&mut p)])?;
                }
                window::Step::Gemm(g) => {
                    let placed = g.place(|at| Ok(base(at.buf)? + (at.offset * dt.size()) as u64))?;
                    self.gemm(dt, &placed)?;
                }
            }
        }
        // The operands and scratch are held until here: past the queued steps (stream order).
        drop((x, y, scratch));
        match f {
            WindowOp::FusedConv { activation, .. } => self.bias_activation(&result, inputs[2], *activation, out),
            _ => Ok(result),
        }
    }
}

impl super::Replay for gpu::GpuGraph {
    fn launch(&self) -> Result<()> {
        gpu::GpuGraph::launch(self)
    }

    fn check(&self) -> Result<()> {
        if self.deferred_checks == 0 {
            return Ok(());
        }
        match self.gpu().take_error()? {
            0 => Ok(()),
            code => Err(Error::invalid(format!(
                "a kernel of the replayed CUDA graph reported {}; the step ran to its end, its variable updates \
                 included (set RIVULET_CUDA_GRAPHS=0 to run it op by op, stopping at the op that raises it)",
                match code {
                    1 => "an integer division by zero",
                    2 => "an integer raised to a negative integer power",
                    3 => "an index out of range in a gather or its gradient",
                    _ => "an error",
                }
            ))),
        }
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        self.gpu.device
    }

    fn kernel(&self, op: &Op, inputs: &[&Value], outs: &[Meta], _ctx: &KernelCtx) -> Option<Result<Values>> {
        match op {
            Op::FusedElementwise { program } if program.reduce.is_none() => {
                let [out] = outs else { return None };
                match self.run_program(Signature::Program(fingerprint(program)), program, inputs, out) {
                    Err(e) if e.kind() == ErrorKind::Unimplemented => None,
                    r => Some(r.map(|v| smallvec::smallvec![v])),
                }
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis }
                if inputs.len() == 1 && inputs[0].dtype.is_float() && *axis + 1 == inputs[0].shape().rank() =>
            {
                let log = matches!(op, Op::LogSoftmax { .. });
                Some(self.softmax(inputs[0], log).map(|v| smallvec::smallvec![v]))
            }
            Op::FusedMatMul { transpose_a, transpose_b, activation } => {
                let [out] = outs else { return None };
                let run = self.fused_matmul(inputs, *transpose_a, *transpose_b, *activation, out);
                Some(run.map(|v| smallvec::smallvec![v]))
            }
            Op::Window { f } if outs.len() == 1 && window::takes(outs[0].dtype) => {
                match self.window(f, inputs, &outs[0]) {
                    // Beyond cuBLAS's sizes: the decomposition's products.
                    Err(e) if e.kind() == ErrorKind::Unimplemented => None,
                    r => Some(r.map(|v| smallvec::smallvec![v])),
                }
            }
            Op::ApplyUpdate { rule } if inputs.first().is_some_and(|w| w.dtype.is_float()) => {
                match self.apply_update(rule, inputs) {
                    Err(e) if e.kind() == ErrorKind::Unimplemented => None,
                    r => Some(r.map(Values::from_vec)),
                }
            }
            _ => None,
        }
    }

    fn unary(&self, f: UnaryOp, x: &Value, out: &Meta) -> Result<Value> {
        self.run_program(Signature::Unary(f), &single(Instr::Unary(f, 0), 1), &[x], out)
    }
    fn binary(&self, f: BinaryOp, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
        self.run_program(Signature::Binary(f), &single(Instr::Binary(f, 0, 1), 2), &[a, b], out)
    }
    fn select(&self, c: &Value, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
        self.run_program(Signature::Select, &single(Instr::Select(0, 1, 2), 3), &[c, a, b], out)
    }
    fn cast(&self, x: &Value, out: &Meta) -> Result<Value> {
        self.run_program(Signature::Cast, &single(Instr::Cast(out.dtype, 0), 1), &[x], out)
    }

    fn reduce(&self, f: ReduceOp, x: &Value, axes: &[usize], out: &Meta) -> Result<Value> {
        let x = self.contiguous(x)?;
        let dims = x.shape().dims().to_vec();
        if axes.is_empty() {
            // Nothing reduced: an elementwise pass (the mean of one is itself).
            return self.reduce_contiguous(f, &x, (x.numel(), 1, 1), out);
        }
        let neighbours = axes.windows(2).all(|w| w[1] == w[0] + 1);
        let (x, split) = if neighbours {
            (x, Self::split(&dims, axes[0], axes[axes.len() - 1]))
        } else {
            // Reduced axes last: a transposed contiguous copy.
            let kept: Vec<usize> = (0..dims.len()).filter(|d| !axes.contains(d)).collect();
            let mut perm = kept.clone();
            perm.extend_from_slice(axes);
            let t = crate::backend::views::transpose(&x, &perm);
            let c = self.contiguous(&t)?;
            let outer: usize = kept.iter().map(|&d| dims[d]).product();
            let r: usize = axes.iter().map(|&d| dims[d]).product();
            (c, (outer, r, 1))
        };
        self.reduce_contiguous(f, &x, split, out)
    }

    fn arg_reduce(&self, f: ArgOp, x: &Value, axis: usize, out: &Meta) -> Result<Value> {
        let (x, (outer, r, inner)) = self.along(x, axis)?;
        let (value, out_ptr) = self.empty(out)?;
        let total = outer * inner;
        if total == 0 {
            return Ok(value);
        }
        if r == 0 {
            return Err(Error::invalid(format!("{f:?} over an empty axis {axis}")));
        }
        let (mut i, mut o) = (address(&x)?, out_ptr);
        let (mut a, mut b, mut c) = (outer as i64, r as i64, inner as i64);
        self.launch(
            kernels::arg_reduce(f, x.dtype, out.dtype),
            (total.div_ceil(BLOCK as usize) as u32, 1, 1),
            &mut [arg(&mut i), arg(&mut o), arg(&mut a), arg(&mut b), arg(&mut c)],
        )?;
        Ok(value)
    }

    fn scan(&self, f: ScanOp, x: &Value, axis: usize, exclusive: bool, reverse: bool, out: &Meta) -> Result<Value> {
        let (x, (outer, r, inner)) = self.along(x, axis)?;
        let (value, out_ptr) = self.empty(out)?;
        let total = outer * inner;
        if total == 0 || r == 0 {
            return Ok(value);
        }
        let (mut i, mut o) = (address(&x)?, out_ptr);
        let (mut a, mut b, mut c) = (outer as i64, r as i64, inner as i64);
        let (mut e, mut rv) = (exclusive as i32, reverse as i32);
        self.launch(
            kernels::scan(f, x.dtype),
            (total.div_ceil(BLOCK as usize) as u32, 1, 1),
            &mut [arg(&mut i), arg(&mut o), arg(&mut a), arg(&mut b), arg(&mut c), arg(&mut e), arg(&mut rv)],
        )?;
        Ok(value)
    }

    fn matmul(&self, a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value> {
        Ok(self.product(a, b, ta, tb, out, None)?.0)
    }

    fn assemble(&self, out: &Meta, fill: Scalar, pieces: &[(Layout, &Value)]) -> Result<Value> {
        if out.dtype.size() > 8 {
            // complex128: wider than the fill and copy kernels' elements.
            let values: Vec<&Value> = pieces.iter().map(|(_, v)| *v).collect();
            return self.on_host(&values, |cpu, x| {
                let placed: Vec<(Layout, &Value)> = pieces.iter().zip(x).map(|((l, _), v)| (l.clone(), *v)).collect();
                cpu.assemble(out, fill, &placed)
            });
        }
        let (value, out_ptr) = self.empty(out)?;
        let n = out.shape.numel_known();
        if n == 0 {
            return Ok(value);
        }
        let size = out.dtype.size();
        let whole = Layout::contiguous(out.shape.clone());
        if !pieces.iter().any(|(l, _)| *l == whole) {
            // The fill's bits in the output dtype, as the CPU converts it.
            let host = super::backend(Device::CPU)?.assemble(&Meta::new(out.dtype, Shape::scalar()), fill, &[])?;
            let mut bits = [0u8; 8];
            bits[..size].copy_from_slice(&host.storage.host().bytes()[..size]);
            let (mut o, mut count, mut b) = (out_ptr, n as i64, u64::from_le_bytes(bits));
            self.launch(
                kernels::fill(size),
                (grid_for(n, self.gpu.multiprocessors), 1, 1),
                &mut [arg(&mut o), arg(&mut count), arg(&mut b)],
            )?;
        }
        for (layout, v) in pieces {
            let m = v.numel();
            if m == 0 {
                continue;
            }
            if v.dtype != out.dtype || v.shape() != &layout.shape {
                return Err(Error::invalid(format!(
                    "assemble: a {}{} piece for a {}{} region of {}{}",
                    v.dtype,
                    v.shape(),
                    out.dtype,
                    layout.shape,
                    out.dtype,
                    out.shape
                )));
            }
            if v.shape().rank() > 8 {
                return Err(Error::unimplemented("GPU copies of rank above 8"));
            }
            let mut p = kernels::CopyParams {
                src: base_address(v)?,
                dst: out_ptr,
                n: m as i64,
                src_offset: v.layout.offset as i64,
                dst_offset: layout.offset as i64,
                rank: v.shape().rank() as i32,
                ..Default::default()
            };
            for d in 0..v.shape().rank() {
                p.dims[d] = v.shape()[d] as i64;
                p.src_strides[d] = v.layout.strides[d] as i64;
                p.dst_strides[d] = layout.strides[d] as i64;
            }
            self.launch(kernels::copy(size), (grid_for(m, self.gpu.multiprocessors), 1, 1), &mut [arg(&mut p)])?;
        }
        Ok(value)
    }

    fn range(&self, start: Scalar, delta: Scalar, out: &Meta) -> Result<Value> {
        let (value, out_ptr) = self.empty(out)?;
        let n = out.shape.numel_known();
        if n == 0 {
            return Ok(value);
        }
        let integer = matches!((start, delta), (Scalar::I64(_), Scalar::I64(_))) && !out.dtype.is_float();
        let (mut o, mut count) = (out_ptr, n as i64);
        let (mut s, mut d) = (start.as_f64(), delta.as_f64());
        let (mut si, mut di) = match (start, delta) {
            (Scalar::I64(a), Scalar::I64(b)) => (a, b),
            _ => (0, 0),
        };
        let mut int = integer as i32;
        self.launch(
            kernels::range(out.dtype),
            (n.div_ceil(BLOCK as usize) as u32, 1, 1),
            &mut [arg(&mut o), arg(&mut count), arg(&mut s), arg(&mut d), arg(&mut si), arg(&mut di), arg(&mut int)],
        )?;
        Ok(value)
    }

    fn random(&self, dist: &Distribution, out: &Meta, seed: u64, stream: u64) -> Result<Value> {
        self.draw(dist, out, seed, stream, None)
    }

    fn random_at(&self, dist: &Distribution, out: &Meta, seed: u64, stream_at: u64) -> Result<Value> {
        self.draw(dist, out, seed, 0, Some(stream_at))
    }

    fn random_offset(&self, dist: &Distribution, out: &Meta, seed: u64, offset: &Value) -> Result<Value> {
        if offset.dtype != DType::I64 || offset.numel() != 1 {
            return crate::backend::random_offset_on_host(self, dist, out, seed, offset);
        }
        match kernels::RandomParams::new(dist, out, seed, 0) {
            Some(p) => self.launch_random(kernels::RandomParams { seed_at: address(offset)?, ..p }, dist, out),
            // Draws the kernel does not make, from the offset read on the host.
            None => crate::backend::random_offset_on_host(self, dist, out, seed, offset),
        }
    }

    fn gather(&self, params: &Value, indices: &Value, axis: usize, batch_dims: usize, out: &Meta) -> Result<Value> {
        if params.dtype.size() > 8 {
            return self.on_host(&[params, indices], |cpu, x| cpu.gather(x[0], x[1], axis, batch_dims, out));
        }
        let (value, ptr) = self.empty(out)?;
        let mut p = self.gather_params(params, indices, axis, batch_dims, ptr)?;
        let n = out.shape.numel_known();
        if n == 0 {
            return Ok(value);
        }
        let (src, idx) = (self.contiguous(params)?, self.contiguous(indices)?);
        (p.src, p.idx) = (address(&src)?, address(&idx)?);
        let size = params.dtype.size();
        self.launch(kernels::gather(size), (grid_for(n, self.gpu.multiprocessors), 1, 1), &mut [arg(&mut p)])?;
        self.index_error(params, axis)?;
        Ok(value)
    }

    fn gather_nd(&self, params: &Value, indices: &Value, out: &Meta) -> Result<Value> {
        let geometry =
            kernels::GatherNdParams::new(params.shape(), indices.shape(), indices.dtype, params.dtype.size());
        let Some(mut p) = geometry else {
            // What the kernel does not take (see `GatherNdParams::new`), and the CPU's errors.
            return self.on_host(&[params, indices], |cpu, x| cpu.gather_nd(x[0], x[1], out));
        };
        let (value, ptr) = self.empty(out)?;
        if p.n == 0 {
            return Ok(value);
        }
        let (src, idx) = (self.contiguous(params)?, self.contiguous(indices)?);
        (p.src, p.idx, p.out, p.error) = (address(&src)?, address(&idx)?, ptr, self.gpu.error_word());
        let blocks = grid_for(p.n as usize, self.gpu.multiprocessors);
        self.launch(kernels::gather_nd(params.dtype.size()), (blocks, 1, 1), &mut [arg(&mut p)])?;
        self.nd_index_error("gather_nd", params.shape(), p.k)?;
        Ok(value)
    }

    fn scatter_add(
        &self,
        updates: &Value,
        indices: &Value,
        axis: usize,
        batch_dims: usize,
        out: &Meta,
    ) -> Result<Value> {
        if !matches!(out.dtype, DType::F32 | DType::F64 | DType::I32) {
            // atomicAdd has no form for these: the CPU's kernel, copied over.
            return self.on_host(&[updates, indices], |cpu, x| cpu.scatter_add(x[0], x[1], axis, batch_dims, out));
        }
        let value = self.assemble(out, Scalar::I64(0), &[])?;
        if updates.numel() == 0 || out.shape.numel_known() == 0 {
            return Ok(value);
        }
        // The output has the gathered params' shape.
        let mut p = self.gather_params(&value, indices, axis, batch_dims, address(&value)?)?;
        let (src, idx) = (self.contiguous(updates)?, self.contiguous(indices)?);
        (p.src, p.idx) = (address(&src)?, address(&idx)?);
        let n = updates.numel();
        self.launch(
            kernels::scatter_add(out.dtype),
            (grid_for(n, self.gpu.multiprocessors), 1, 1),
            &mut [arg(&mut p)],
        )?;
        self.index_error(&value, axis)?;
        Ok(value)
    }

    fn scatter_nd(&self, indices: &Value, updates: &Value, out: &Meta) -> Result<Value> {
        let geometry = kernels::GatherNdParams::new(&out.shape, indices.shape(), indices.dtype, out.dtype.size());
        // atomicAdd has no form for the other dtypes.
        let atomic = kernels::SCATTER_ND_DTYPES.contains(&out.dtype) && updates.dtype == out.dtype;
        let Some(mut p) = geometry.filter(|_| atomic) else {
            return self.on_host(&[indices, updates], |cpu, x| cpu.scatter_nd(x[0], x[1], out));
        };
        if updates.numel() as i64 != p.n {
            return Err(Error::shape(format!(
                "scatter_nd updates {} do not match indices {} and shape {}",
                updates.shape(),
                indices.shape(),
                out.shape
            )));
        }
        let value = self.assemble(out, Scalar::I64(0), &[])?;
        if p.n == 0 || out.shape.numel_known() == 0 {
            return Ok(value);
        }
        let (src, idx) = (self.contiguous(updates)?, self.contiguous(indices)?);
        (p.src, p.idx, p.out, p.error) = (address(&src)?, address(&idx)?, address(&value)?, self.gpu.error_word());
        let blocks = grid_for(p.n as usize, self.gpu.multiprocessors);
        self.launch(kernels::scatter_nd(out.dtype), (blocks, 1, 1), &mut [arg(&mut p)])?;
        self.nd_index_error("scatter_nd", &out.shape, p.k)?;
        Ok(value)
    }

    fn top_k(&self, x: &Value, k: usize, outs: &[Meta]) -> Result<(Value, Value)> {
        let n = x.shape().last().copied().unwrap_or(1);
        let rows = x.numel().checked_div(n).unwrap_or(0);
        let passes = kernels::top_k_passes(n, k);
        let index = outs.get(1).map(|m| m.dtype);
        let (Some(passes), [values_meta, index_meta], Some(DType::I32 | DType::I64)) = (passes, outs, index) else {
            // k = 0, rows too long for the kernel, and the CPU's errors.
            let host = self.download(x)?;
            let (values, indices) = super::backend(Device::CPU)?.top_k(&host, k, outs)?;
            return Ok((self.upload(&values)?, self.upload(&indices)?));
        };
        if !x.dtype.is_numeric() {
            return Err(Error::dtype(format!("top_k does not accept {}", x.dtype)));
        }
        let (values, vals_ptr) = self.empty(values_meta)?;
        let (indices, idx_ptr) = self.empty(index_meta)?;
        if rows == 0 {
            return Ok((values, indices));
        }
        if rows > i32::MAX as usize {
            return Err(Error::unimplemented(format!("a GPU top_k over {rows} rows")));
        }
        let x = self.contiguous(x)?;
        let mut candidates: Option<Value> = None;
        for &(m, chunks) in &passes {
            let last = chunks == 1;
            let next = match last {
                true => None,
                false => Some(self.empty(&Meta::new(DType::I32, Shape::new(&[rows, chunks * k])))?),
            };
            let (mut xp, mut cand) = (address(&x)?, candidates.as_ref().map_or(Ok(0), address)?);
            let (mut nn, mut mm, mut keep) = (n as i64, m as i64, k as i32);
            let (mut vp, mut ip) = if last { (vals_ptr, idx_ptr) } else { (0, 0) };
            let mut np = next.as_ref().map_or(0, |(_, p)| *p);
            self.launch(
                kernels::top_k(x.dtype, index_meta.dtype),
                (rows as u32, chunks as u32, 1),
                &mut [
                    arg(&mut xp),
                    arg(&mut cand),
                    arg(&mut nn),
                    arg(&mut mm),
                    arg(&mut keep),
                    arg(&mut vp),
                    arg(&mut ip),
                    arg(&mut np),
                ],
            )?;
            candidates = next.map(|(v, _)| v);
        }
        Ok((values, indices))
    }

    fn update_in_place(
        &self,
        rule: &UpdateRule,
        targets: &mut [Value],
        grad: &Value,
        lr: &Value,
        step: &Value,
    ) -> Result<bool> {
        let known = matches!(
            rule,
            UpdateRule::Sgd
                | UpdateRule::Momentum { .. }
                | UpdateRule::Adam { .. }
                | UpdateRule::RmsProp { .. }
                | UpdateRule::Adagrad { .. }
        );
        let Some(w) = targets.first() else { return Ok(false) };
        if !known || !w.dtype.is_float() || targets.iter().any(|t| !t.layout.is_contiguous()) {
            return Ok(false);
        }
        let mut inputs: Vec<&Value> = vec![w, grad, lr, step];
        inputs.extend(&targets[1..]);
        self.update_kernel(rule, &inputs, Some(targets))?;
        // The host copies a read made are stale now.
        for t in targets.iter_mut() {
            Arc::get_mut(&mut t.storage)
                .ok_or_else(|| Error::invalid("internal: an in-place update of a shared buffer"))?
                .forget_host_copy();
        }
        Ok(true)
    }

    fn begin_capture(&self) -> Result<bool> {
        self.gpu.begin_capture()?;
        Ok(true)
    }

    fn end_capture(&self) -> Result<Box<dyn super::Replay>> {
        Ok(Box::new(self.gpu.end_capture()?))
    }

    fn copy_into(&self, dst: &Value, src: &Value) -> Result<()> {
        if dst.dtype != src.dtype || dst.shape() != src.shape() || !dst.layout.is_contiguous() {
            return Err(Error::invalid(format!(
                "internal: copying {}{} into {}{}",
                src.dtype,
                src.shape(),
                dst.dtype,
                dst.shape()
            )));
        }
        let bytes = dst.numel() * dst.dtype.size();
        if src.device() == self.gpu.device {
            let src = self.contiguous(src)?;
            return self.gpu.copy_device(address(dst)?, address(&src)?, bytes);
        }
        let host = super::transfer(src, Device::CPU)?;
        let host = match host.layout.is_contiguous() {
            true => host,
            false => super::backend(Device::CPU)?.assemble(
                &Meta::new(host.dtype, host.shape().clone()),
                Scalar::I64(0),
                &[(Layout::contiguous(host.shape().clone()), &host)],
            )?,
        };
        let at = host.layout.offset * host.dtype.size();
        self.gpu.upload(address(dst)?, &host.storage.host().bytes()[at..at + bytes])
    }

    fn upload(&self, host: &Value) -> Result<Value> {
        let size = host.dtype.size();
        // Elements of at most 8 bytes (complex128 is never cached).
        let scalar_key = (host.numel() == 1 && size <= 8).then(|| {
            let at = host.layout.offset * size;
            let mut bits = [0u8; 8];
            bits[..size].copy_from_slice(&host.storage.host().bytes()[at..at + size]);
            (host.dtype, u64::from_le_bytes(bits), host.shape().rank())
        });
        if let Some(key) = scalar_key {
            if let Some(v) = self.scalars.lock().get(&key) {
                // A graph being captured reads it after the cache may have let go.
                self.gpu.keep_for_capture(v);
                return Ok(v.view(Layout::contiguous(host.shape().clone())));
            }
        }
        let v = self.upload_new(host)?;
        if let Some(key) = scalar_key {
            let mut cache = self.scalars.lock();
            if cache.len() >= SCALAR_CACHE {
                cache.clear();
            }
            cache.insert(key, v.clone());
        }
        Ok(v)
    }

    fn download(&self, v: &Value) -> Result<Value> {
        let c = self.contiguous(v)?;
        let n = c.numel();
        let size = c.dtype.size();
        let mut buf = crate::tensor::storage::HostBuffer::new(n * size)?;
        if n > 0 {
            self.gpu.download(buf.bytes_mut(), address(&c)?)?;
        }
        Ok(Value::from_buffer(c.dtype, c.shape().clone(), buf))
    }
}

impl CudaBackend {
    /// A fresh device copy of a host value.
    fn upload_new(&self, host: &Value) -> Result<Value> {
        let meta = Meta::new(host.dtype, host.shape().clone());
        let (value, ptr) = self.empty(&meta)?;
        let n = host.numel();
        if n == 0 {
            return Ok(value);
        }
        let contiguous;
        let src = if host.layout.is_contiguous() {
            host
        } else {
            contiguous = super::backend(Device::CPU)?.assemble(
                &meta,
                Scalar::I64(0),
                &[(Layout::contiguous(meta.shape.clone()), host)],
            )?;
            &contiguous
        };
        let size = src.dtype.size();
        let at = src.layout.offset * size;
        self.gpu.upload(ptr, &src.storage.host().bytes()[at..at + n * size])?;
        Ok(value)
    }
}
