//! One GPU as the backend sees it: its primary context, the stream every
//! kernel and copy of the device is queued on, the caching allocator over
//! the driver's memory, compiled kernels (NVRTC, cached in memory and on
//! disk) and the cuBLAS handle.
//!
//! A plan can be captured as a CUDA graph ([`Gpu::begin_capture`]): the
//! capturing thread's launches go to a stream of the capture's own and its
//! allocations to a private pool, and the graph is replayed on the main
//! stream, ordered with everything else. While capturing, anything that
//! would wait for the device or copy host memory is refused (an error, so
//! the caller runs the plan uncaptured), and checks of the error word are
//! deferred to after each replay.
//!
//! Every driver call goes through cudarc's raw bindings, after
//! [`super::probe`] found the driver library (cudarc's loader panics
//! where it is missing) and after NVRTC's and cuBLAS's libraries were found
//! the same way.

use super::allocator::{Block, CachingAllocator, DeviceMemory, MemoryStats, PRIVATE_POOL};
use super::blaslt::BlasLt;
use super::staging::{Staging, StagingDevice, SLOTS};
use crate::error::{Error, Result};
use crate::tensor::storage::{DeviceAllocation, HostBuffer};
use crate::tensor::{Device, Value};
use cudarc::driver::{result as drv, sys};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A driver error as a rivulet error naming what was being done.
pub(crate) fn driver_error(what: &str, e: drv::DriverError) -> Error {
    let name = e.error_name().map(|c| c.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    Error::device(format!("CUDA {what} failed: {name}"))
}

/// Driver handles, shared by every thread (the driver API is thread-safe).
#[derive(Clone, Copy)]
struct Handles {
    ctx: sys::CUcontext,
    stream: sys::CUstream,
}
// SAFETY: CUDA contexts and streams may be used from any thread.
unsafe impl Send for Handles {}
// SAFETY: as above.
unsafe impl Sync for Handles {}

/// The driver's memory, under the caching allocator.
struct DriverMemory {
    handles: Handles,
    name: String,
}

impl DeviceMemory for DriverMemory {
    fn alloc(&self, bytes: usize) -> Option<u64> {
        make_current(self.handles.ctx).ok()?;
        // SAFETY: a plain allocation in the current context.
        unsafe { drv::malloc_sync(bytes) }.ok()
    }
    fn free(&self, ptr: u64, _bytes: usize) {
        if make_current(self.handles.ctx).is_err() {
            return;
        }
        // Queued kernels may still read the block: wait for them first.
        // SAFETY: the stream and the allocation are live; nothing uses the block after this.
        unsafe {
            let _ = drv::stream::synchronize(self.handles.stream);
            let _ = drv::free_sync(ptr);
        }
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    /// What this thread is capturing, if anything.
    static CAPTURE: RefCell<Option<Capturing>> = const { RefCell::new(None) };
}

/// A capture in progress on this thread.
struct Capturing {
    /// The GPU's address, to tell GPUs apart.
    gpu: usize,
    /// Where the captured work is queued (never run there: replays run on
    /// the device's stream). One per capture, so threads may record at once.
    stream: CaptureStream,
    pool: Arc<PrivatePool>,
    /// Error-word checks skipped while capturing (run after each replay).
    deferred_checks: usize,
    /// Values the graph reads that no plan slot holds (cached scalars).
    keep: Vec<Value>,
}

/// cuBLAS's workspace, ours so that a captured product never allocates
/// (cuBLAS drops a workspace it was given when its stream changes, so it is
/// set again with each stream).
const BLAS_WORKSPACE: usize = 32 << 20;

/// Make `ctx` current on this thread (once per thread and context).
fn make_current(ctx: sys::CUcontext) -> Result<()> {
    let key = ctx as usize;
    if CURRENT.with(|c| c.get()) == key {
        return Ok(());
    }
    // SAFETY: a live primary context.
    unsafe { drv::ctx::set_current(ctx) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
    CURRENT.with(|c| c.set(key));
    Ok(())
}

/// A compiled kernel.
#[derive(Clone, Copy)]
pub(crate) struct Function(sys::CUfunction);
// SAFETY: function handles are immutable and valid in every thread of the context.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

/// The cuBLAS handle, used by one thread at a time.
pub(crate) struct Blas(pub cudarc::cublas::sys::cublasHandle_t);
// SAFETY: a cuBLAS handle may move between threads; the mutex around it
// keeps its use to one at a time.
unsafe impl Send for Blas {}

/// Whether cuBLASLt was opened.
enum LtState {
    Unopened,
    Open(BlasLt),
    /// libcublasLt is missing: fused products keep two launches.
    Missing,
}

/// Copies of at least this many bytes go through the pinned slots (below,
/// the driver's own staging of pageable memory costs as little).
const STAGE_MIN: usize = 256 << 10;
/// Each pinned slot's size.
const STAGE_SLOT: usize = 8 << 20;

/// The pinned slots, their events and the stream their copies run on.
struct DriverSlots {
    ptrs: [*mut u8; SLOTS],
    events: [sys::CUevent; SLOTS],
    handles: Handles,
}
// SAFETY: pinned host memory and events may be used from any thread; the
// GPU's mutex keeps their use to one thread at a time.
unsafe impl Send for DriverSlots {}

impl DriverSlots {
    /// `SLOTS` pinned slots of `STAGE_SLOT` bytes, or why not (a locked-memory
    /// limit, say: copies then stay on the pageable path).
    fn open(handles: Handles) -> Result<DriverSlots> {
        let mut slots =
            DriverSlots { ptrs: [std::ptr::null_mut(); SLOTS], events: [std::ptr::null_mut(); SLOTS], handles };
        for i in 0..SLOTS {
            // SAFETY: a plain pinned allocation in the current context (freed in Drop).
            slots.ptrs[i] =
                unsafe { drv::malloc_host(STAGE_SLOT, 0) }.map_err(|e| driver_error("cuMemHostAlloc", e))? as *mut u8;
            slots.events[i] = drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| driver_error("cuEventCreate", e))?;
        }
        Ok(slots)
    }
}

impl Drop for DriverSlots {
    fn drop(&mut self) {
        if make_current(self.handles.ctx).is_err() {
            return;
        }
        for i in 0..SLOTS {
            // SAFETY: each was made in `open` (or is null) and is not used after this.
            unsafe {
                if !self.events[i].is_null() {
                    let _ = drv::event::synchronize(self.events[i]);
                    let _ = drv::event::destroy(self.events[i]);
                }
                if !self.ptrs[i].is_null() {
                    let _ = drv::free_host(self.ptrs[i] as *mut c_void);
                }
            }
        }
    }
}

impl StagingDevice for DriverSlots {
    fn slot(&mut self, slot: usize) -> &mut [u8] {
        // SAFETY: a live pinned allocation of STAGE_SLOT bytes, its copies
        // passed (the staging bookkeeping waits for them first).
        unsafe { std::slice::from_raw_parts_mut(self.ptrs[slot], STAGE_SLOT) }
    }
    fn queue_upload(&mut self, slot: usize, dst: u64, len: usize) -> Result<()> {
        // SAFETY: the slot holds `len` bytes and is not written until its
        // event has passed; `dst` holds them (the caller's allocation).
        unsafe {
            let src = std::slice::from_raw_parts(self.ptrs[slot], len);
            drv::memcpy_htod_async(dst, src, self.handles.stream).map_err(|e| driver_error("cuMemcpyHtoD", e))?;
            drv::event::record(self.events[slot], self.handles.stream).map_err(|e| driver_error("cuEventRecord", e))
        }
    }
    fn queue_download(&mut self, slot: usize, src: u64, len: usize) -> Result<()> {
        // SAFETY: as above; the slot is read only after its event has passed.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(self.ptrs[slot], len);
            drv::memcpy_dtoh_async(dst, src, self.handles.stream).map_err(|e| driver_error("cuMemcpyDtoH", e))?;
            drv::event::record(self.events[slot], self.handles.stream).map_err(|e| driver_error("cuEventRecord", e))
        }
    }
    fn wait(&mut self, slot: usize) -> Result<()> {
        // SAFETY: a live event.
        unsafe { drv::event::synchronize(self.events[slot]) }.map_err(|e| driver_error("cuEventSynchronize", e))
    }
}

/// The pinned staging of a GPU: opened on the first large copy.
enum Staged {
    Unopened,
    Open(Staging, DriverSlots),
    /// Pinned memory could not be had: every copy is pageable.
    Unavailable,
}

/// One GPU.
pub(crate) struct Gpu {
    pub device: Device,
    pub name: String,
    /// Compute capability, e.g. (9, 0).
    pub capability: (i32, i32),
    pub multiprocessors: u32,
    handles: Handles,
    allocator: CachingAllocator<DriverMemory>,
    kernels: Mutex<FxHashMap<String, Function>>,
    blas: Mutex<Option<Blas>>,
    /// cuBLASLt, for products with epilogues: opened on first use.
    blas_lt: Mutex<LtState>,
    /// The stream cuBLAS was last bound to, and its workspace.
    blas_stream: Mutex<(usize, Option<GpuBuffer>)>,
    next_pool: AtomicU64,
    /// The integer-error word generated kernels set (see `codegen`).
    error_word: u64,
    arch: &'static str,
    /// Pinned slots for large host copies (see `staging`).
    staging: Mutex<Staged>,
}

impl Gpu {
    /// Open GPU `index`: its primary context, a stream, the error word.
    pub fn open(index: u32) -> Result<Gpu> {
        drv::init().map_err(|e| driver_error("cuInit", e))?;
        let dev = drv::device::get(index as i32).map_err(|e| driver_error("cuDeviceGet", e))?;
        let name = drv::device::get_name(dev).unwrap_or_else(|_| "NVIDIA GPU".to_string());
        let attr = |a: sys::CUdevice_attribute| -> Result<i32> {
            // SAFETY: a valid device ordinal.
            unsafe { drv::device::get_attribute(dev, a) }.map_err(|e| driver_error("cuDeviceGetAttribute", e))
        };
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let sms = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        // SAFETY: a valid device; the context is released never (it lives as long as the process).
        let ctx = unsafe { drv::primary_ctx::retain(dev) }.map_err(|e| driver_error("cuDevicePrimaryCtxRetain", e))?;
        make_current(ctx)?;
        let stream =
            drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(|e| driver_error("cuStreamCreate", e))?;
        let handles = Handles { ctx, stream };
        let device = Device { kind: crate::tensor::DeviceKind::Gpu, index };
        let allocator = CachingAllocator::new(DriverMemory { handles, name: format!("{device} ({name})") });
        // SAFETY: a plain allocation in the current context, zeroed before use.
        let error_word = unsafe { drv::malloc_sync(8) }.map_err(|e| driver_error("cuMemAlloc", e))?;
        // SAFETY: the allocation just made, 8 bytes.
        unsafe { drv::memset_d8_sync(error_word, 0, 8) }.map_err(|e| driver_error("cuMemsetD8", e))?;
        let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
        Ok(Gpu {
            device,
            name,
            capability: (major, minor),
            multiprocessors: sms.max(1) as u32,
            handles,
            allocator,
            kernels: Mutex::new(FxHashMap::default()),
            blas: Mutex::new(None),
            blas_lt: Mutex::new(LtState::Unopened),
            blas_stream: Mutex::new((0, None)),
            next_pool: AtomicU64::new(1),
            error_word,
            arch,
            staging: Mutex::new(Staged::Unopened),
        })
    }

    /// Make this GPU's context current on the calling thread.
    #[inline]
    pub fn enter(&self) -> Result<()> {
        make_current(self.handles.ctx)
    }

    /// `bytes` of device memory (uninitialised), freed when the last
    /// storage over it drops.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<GpuBuffer> {
        let key = self.with_capture(|c| c.pool.key).unwrap_or(self.handles.stream as u64);
        let block = self.allocator.alloc(bytes.max(1), key)?;
        Ok(GpuBuffer { gpu: self.clone(), block: Some(block), bytes })
    }

    /// Give cached blocks back to the driver; the bytes released.
    pub fn release_cached(&self) -> usize {
        self.allocator.release_cached()
    }

    /// Bytes in use, cached and at the peak.
    pub fn memory_stats(&self) -> MemoryStats {
        self.allocator.stats()
    }

    /// `f` of this thread's capture on this GPU, if one is in progress.
    fn with_capture<R>(&self, f: impl FnOnce(&mut Capturing) -> R) -> Option<R> {
        let me = self as *const Gpu as usize;
        CAPTURE.with(|c| c.borrow_mut().as_mut().filter(|k| k.gpu == me).map(f))
    }

    /// The stream this thread's work goes to: the capture stream while
    /// capturing, else the device's stream.
    fn stream(&self) -> sys::CUstream {
        self.with_capture(|c| c.stream.0).unwrap_or(self.handles.stream)
    }

    /// An error unless this thread is outside a capture: `what` would wait
    /// for the device or read host memory when the graph is built, not when
    /// it is replayed.
    fn not_capturing(&self, what: &str) -> Result<()> {
        match self.with_capture(|_| ()) {
            Some(()) => Err(Error::unimplemented(format!("{what} cannot be captured in a CUDA graph"))),
            None => Ok(()),
        }
    }

    /// Keep `v` alive as long as the graph being captured (a value the
    /// graph reads that nothing else holds for it).
    pub fn keep_for_capture(&self, v: &Value) {
        self.with_capture(|c| c.keep.push(v.clone()));
    }

    /// Start capturing this thread's work on the GPU into a graph: until
    /// [`Gpu::end_capture`], launches are recorded, not run.
    pub fn begin_capture(self: &Arc<Self>) -> Result<()> {
        if CAPTURE.with(|c| c.borrow().is_some()) {
            return Err(Error::unimplemented("a CUDA graph capture inside another"));
        }
        self.enter()?;
        let stream = CaptureStream(
            drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(|e| driver_error("cuStreamCreate", e))?,
        );
        // Relaxed: other threads may allocate (and this one reuse its pool's
        // blocks) while the capture is open.
        // SAFETY: a live stream of the current context.
        unsafe { drv::stream::begin_capture(stream.0, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) }
            .map_err(|e| driver_error("cuStreamBeginCapture", e))?;
        let key = PRIVATE_POOL | self.next_pool.fetch_add(1, Ordering::Relaxed);
        self.allocator.open_pool(key);
        let pool = Arc::new(PrivatePool { gpu: self.clone(), key });
        let me = Arc::as_ptr(self) as usize;
        let capturing = Capturing { gpu: me, stream, pool, deferred_checks: 0, keep: Vec::new() };
        CAPTURE.with(|c| *c.borrow_mut() = Some(capturing));
        Ok(())
    }

    /// End this thread's capture: the graph, instantiated, or the error
    /// that invalidated the capture.
    pub fn end_capture(self: &Arc<Self>) -> Result<GpuGraph> {
        let me = Arc::as_ptr(self) as usize;
        let Some(capturing) = CAPTURE.with(|c| c.borrow_mut().take_if(|k| k.gpu == me)) else {
            return Err(Error::invalid("internal: ending a CUDA graph capture that was not begun"));
        };
        self.enter()?;
        // SAFETY: the capture's stream, capturing since `begin_capture`
        // (ending it even after an error takes the stream out of capture).
        let graph = unsafe { drv::stream::end_capture(capturing.stream.0) }
            .map_err(|e| driver_error("cuStreamEndCapture", e))?;
        // SAFETY: the graph just captured; the executable is independent of it.
        let exec = unsafe { drv::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        // SAFETY: the graph is not used after this.
        unsafe {
            let _ = drv::graph::destroy(graph);
        }
        let exec = exec.map_err(|e| driver_error("cuGraphInstantiate", e))?;
        Ok(GpuGraph { exec, deferred_checks: capturing.deferred_checks, keep: capturing.keep, pool: capturing.pool })
    }

    /// Wait for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.not_capturing("waiting for the device")?;
        self.enter()?;
        // SAFETY: a live stream.
        unsafe { drv::stream::synchronize(self.handles.stream) }.map_err(|e| driver_error("cuStreamSynchronize", e))
    }

    /// Copy host bytes to `dst` (queued; the bytes are in pinned slots or
    /// the driver's staging when the call returns, so `src` may be dropped
    /// after, and the device reads them while the host goes on).
    pub fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.not_capturing("a copy from host memory")?;
        self.enter()?;
        if src.len() >= STAGE_MIN {
            let mut staged = self.staging.lock();
            if let Some((staging, slots)) = self.open_staging(&mut staged) {
                return staging.upload(slots, dst, src);
            }
        }
        // SAFETY: `dst` holds at least `src.len()` bytes (the caller's allocation).
        unsafe { drv::memcpy_htod_async(dst, src, self.handles.stream) }.map_err(|e| driver_error("cuMemcpyHtoD", e))
    }

    /// The staging slots, opened on first use; `None` where pinned memory
    /// cannot be had (then never tried again: a locked-memory limit does
    /// not go away, and pageable copies work).
    fn open_staging<'a>(&self, staged: &'a mut Staged) -> Option<(&'a mut Staging, &'a mut DriverSlots)> {
        if let Staged::Unopened = staged {
            *staged = match DriverSlots::open(self.handles) {
                Ok(slots) => Staged::Open(Staging::new(STAGE_SLOT), slots),
                Err(_) => Staged::Unavailable,
            };
        }
        match staged {
            Staged::Open(staging, slots) => Some((staging, slots)),
            _ => None,
        }
    }

    /// Copy `dst.len()` bytes from `src` to the host, after all queued work.
    pub fn download(&self, dst: &mut [u8], src: u64) -> Result<()> {
        self.not_capturing("a copy to host memory")?;
        self.enter()?;
        if dst.len() >= STAGE_MIN {
            let mut staged = self.staging.lock();
            if let Some((staging, slots)) = self.open_staging(&mut staged) {
                // Its last event passed after everything queued before it.
                return staging.download(slots, dst, src);
            }
        }
        if !dst.is_empty() {
            // SAFETY: `src` holds at least `dst.len()` bytes.
            unsafe { drv::memcpy_dtoh_async(dst, src, self.handles.stream) }
                .map_err(|e| driver_error("cuMemcpyDtoH", e))?;
        }
        self.synchronize()
    }

    /// The kernel `name` of `source`, compiled on first use (NVRTC, then a
    /// PTX file in the disk cache named by `key`, so later processes skip
    /// the compiler).
    pub fn function(&self, key: &str, name: &str, source: impl FnOnce() -> String) -> Result<Function> {
        if let Some(f) = self.kernels.lock().get(key) {
            return Ok(*f);
        }
        self.enter()?;
        let ptx = match disk_cache_path(key, self.arch).and_then(|p| std::fs::read_to_string(p).ok()) {
            Some(ptx) => ptx,
            None => {
                let src = source();
                let ptx = compile(&src, self.arch)?;
                if let Some(p) = disk_cache_path(key, self.arch) {
                    // A cache, not data: a temporary name and a rename keep
                    // readers from a half-written file; losing it costs a compile.
                    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
                    if std::fs::write(&tmp, ptx.as_bytes()).is_ok() && std::fs::rename(&tmp, &p).is_err() {
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
                ptx
            }
        };
        let image = CString::new(ptx).map_err(|_| Error::device("NVRTC produced PTX with a NUL byte"))?;
        // SAFETY: a NUL-terminated PTX image; the module is kept for the process.
        let module = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| driver_error(&format!("loading kernel {name}"), e))?;
        let cname = CString::new(name).map_err(|_| Error::invalid("kernel name with a NUL byte"))?;
        // SAFETY: a live module.
        let f = unsafe { drv::module::get_function(module, cname) }
            .map_err(|e| driver_error(&format!("finding kernel {name}"), e))?;
        let f = Function(f);
        self.kernels.lock().insert(key.to_string(), f);
        Ok(f)
    }

    /// Launch `f` on the stream with one by-value argument per entry of `args`.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters, and every device pointer
    /// they hold must stay allocated until the kernel has run (stream order
    /// guarantees that for buffers freed to the caching allocator).
    pub unsafe fn launch(
        &self,
        f: Function,
        grid: (u32, u32, u32),
        block: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.enter()?;
        drv::launch_kernel(f.0, grid, (block, 1, 1), 0, self.stream(), args)
            .map_err(|e| driver_error("cuLaunchKernel", e))
    }

    /// The device address of the integer-error word.
    pub fn error_word(&self) -> u64 {
        self.error_word
    }

    /// Copy `bytes` between device buffers (queued on this thread's stream).
    pub fn copy_device(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: both buffers hold at least `bytes` (the caller's values).
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream()) }.map_err(|e| driver_error("cuMemcpyDtoD", e))
    }

    /// Read and clear the integer-error word (synchronizes). While
    /// capturing, the check is recorded for after each replay instead, and
    /// this answers 0.
    pub fn take_error(&self) -> Result<i32> {
        if self.with_capture(|c| c.deferred_checks += 1).is_some() {
            return Ok(0);
        }
        let mut word = [0u8; 4];
        self.download(&mut word, self.error_word)?;
        let code = i32::from_le_bytes(word);
        if code != 0 {
            // SAFETY: the live 8-byte error word.
            unsafe { drv::memset_d8_async(self.error_word, 0, 8, self.handles.stream) }
                .map_err(|e| driver_error("cuMemsetD8", e))?;
        }
        Ok(code)
    }

    /// The workspace cuBLAS and cuBLASLt share (their launches are in
    /// stream order), allocated on first use outside any capture.
    fn blas_workspace(self: &Arc<Self>, what: &str) -> Result<u64> {
        let mut bound = self.blas_stream.lock();
        if bound.1.is_none() {
            // Never from a graph's private pool.
            self.not_capturing(what)?;
            bound.1 = Some(self.alloc(BLAS_WORKSPACE)?);
        }
        Ok(bound.1.as_ref().map_or(0, GpuBuffer::ptr))
    }

    /// Run `f` with cuBLASLt (opened on first use), the shared workspace
    /// and its size, and this thread's stream; `Ok(false)` without
    /// libcublasLt.
    pub(super) fn with_blas_lt(
        self: &Arc<Self>,
        f: impl FnOnce(&mut BlasLt, u64, usize, sys::CUstream) -> Result<bool>,
    ) -> Result<bool> {
        self.enter()?;
        let workspace = self.blas_workspace("starting cuBLASLt")?;
        let mut state = self.blas_lt.lock();
        if matches!(*state, LtState::Unopened) {
            *state = match BlasLt::open() {
                Ok(lt) => LtState::Open(lt),
                Err(e) => {
                    log::info!("{e}: fused products use cuBLAS and a kernel");
                    LtState::Missing
                }
            };
        }
        match &mut *state {
            LtState::Open(lt) => f(lt, workspace, BLAS_WORKSPACE, self.stream()),
            _ => Ok(false),
        }
    }

    /// Run `f` with the cuBLAS handle (made on first use, bound to this
    /// thread's stream with our workspace).
    pub fn with_blas<R>(self: &Arc<Self>, f: impl FnOnce(&Blas) -> Result<R>) -> Result<R> {
        use cudarc::cublas::sys as blas;
        self.enter()?;
        let workspace = self.blas_workspace("starting cuBLAS")?;
        let mut guard = self.blas.lock();
        if guard.is_none() {
            // SAFETY: probe checked the library is present (see `super::available`).
            let present = unsafe { blas::is_culib_present() };
            if !present {
                return Err(Error::device("cuBLAS (libcublas) was not found: GPU matrix products are unavailable"));
            }
            let mut h: blas::cublasHandle_t = std::ptr::null_mut();
            // SAFETY: out-pointer to a handle; then bound to our live stream.
            unsafe {
                check_blas("cublasCreate", blas::cublasCreate_v2(&mut h))?;
            }
            *guard = Some(Blas(h));
        }
        let Some(b) = guard.as_ref() else { return Err(Error::device("cuBLAS handle missing")) };
        let stream = self.stream();
        let mut bound = self.blas_stream.lock();
        if bound.0 != stream as usize {
            // SAFETY: the live handle (under its mutex), a live stream, and a
            // workspace the GPU keeps for as long as the handle.
            unsafe {
                check_blas("cublasSetStream", blas::cublasSetStream_v2(b.0, stream as _))?;
                check_blas(
                    "cublasSetWorkspace",
                    blas::cublasSetWorkspace_v2(b.0, workspace as *mut c_void, BLAS_WORKSPACE),
                )?;
            }
            bound.0 = stream as usize;
        }
        drop(bound);
        f(b)
    }
}

/// A stream made for one capture, destroyed with it.
struct CaptureStream(sys::CUstream);

impl Drop for CaptureStream {
    fn drop(&mut self) {
        // SAFETY: a stream of ours, out of capture and with nothing queued
        // (captured work is never run on it).
        unsafe {
            let _ = drv::stream::destroy(self.0);
        }
    }
}

/// A private pool of the caching allocator: the memory of a graph, given
/// back once the graph is gone and its replays have run.
pub(crate) struct PrivatePool {
    gpu: Arc<Gpu>,
    key: u64,
}

impl Drop for PrivatePool {
    fn drop(&mut self) {
        // Replays queued on the stream still use the blocks.
        let _ = self.gpu.synchronize();
        self.gpu.allocator.retire_pool(self.key);
    }
}

/// A captured, instantiated CUDA graph.
pub(crate) struct GpuGraph {
    exec: sys::CUgraphExec,
    /// Error-word checks the captured kernels make (see [`Gpu::take_error`]).
    pub deferred_checks: usize,
    keep: Vec<Value>,
    pool: Arc<PrivatePool>,
}
// SAFETY: an executable graph may be launched from any thread; the Gpu
// launches one at a time per caller's lock.
unsafe impl Send for GpuGraph {}
// SAFETY: as above.
unsafe impl Sync for GpuGraph {}

impl GpuGraph {
    /// Run the graph on the device's stream, after the work queued there.
    pub fn launch(&self) -> Result<()> {
        let gpu = &self.pool.gpu;
        gpu.not_capturing("replaying a graph")?;
        gpu.enter()?;
        // SAFETY: a live executable graph and the device's stream.
        unsafe { drv::graph::launch(self.exec, gpu.handles.stream) }.map_err(|e| driver_error("cuGraphLaunch", e))
    }

    /// The GPU the graph runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.pool.gpu
    }
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        let gpu = &self.pool.gpu;
        if gpu.enter().is_ok() {
            let _ = gpu.synchronize();
            // SAFETY: no replay is queued any more; destroyed once.
            unsafe {
                let _ = drv::graph::exec_destroy(self.exec);
            }
        }
        self.keep.clear();
    }
}

/// A cuBLAS status as a result.
pub(crate) fn check_blas(what: &str, status: cudarc::cublas::sys::cublasStatus_t) -> Result<()> {
    if status == cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::device(format!("{what} failed: {status:?}")))
    }
}

/// Compile CUDA C to PTX for `arch`, IEEE-exact (no contraction into FMAs,
/// no flush to zero: the CPU's numbers).
pub(crate) fn compile(source: &str, arch: &'static str) -> Result<String> {
    use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    let opts = CompileOptions {
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        arch: Some(arch),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, opts).map_err(|e| Error::device(format!("NVRTC: {e}")))?;
    Ok(ptx.to_src())
}

/// Where the PTX of kernel `key` is cached: `$RIVULET_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/rivulet/kernels`, else `~/.cache/rivulet/kernels`
/// (`RIVULET_KERNEL_CACHE=off` turns the disk cache off).
fn disk_cache_path(key: &str, arch: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let dir = match std::env::var("RIVULET_KERNEL_CACHE") {
        Ok(v) if v == "off" => return None,
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => match std::env::var("XDG_CACHE_HOME") {
            Ok(v) if !v.is_empty() => PathBuf::from(v).join("rivulet/kernels"),
            _ => PathBuf::from(std::env::var("HOME").ok()?).join(".cache/rivulet/kernels"),
        },
    };
    std::fs::create_dir_all(&dir).ok()?;
    // The crate version is in the name: a new build never reads an old kernel.
    Some(dir.join(format!("{key}-{arch}-{}.ptx", env!("CARGO_PKG_VERSION"))))
}

/// Device memory of one value: a block of the caching allocator, given back
/// (stream-ordered: later work on the stream may reuse it at once) when dropped.
pub(crate) struct GpuBuffer {
    gpu: Arc<Gpu>,
    block: Option<Block>,
    bytes: usize,
}

impl GpuBuffer {
    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.block.as_ref().map_or(0, |b| b.ptr)
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.gpu.allocator.free(b);
        }
    }
}

impl DeviceAllocation for GpuBuffer {
    fn address(&self) -> u64 {
        self.ptr()
    }
    fn download(&self) -> Result<HostBuffer> {
        let mut host = HostBuffer::new(self.bytes)?;
        self.gpu.download(host.bytes_mut(), self.ptr())?;
        Ok(host)
    }
}
