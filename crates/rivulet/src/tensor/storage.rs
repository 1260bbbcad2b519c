//! Host memory for tensor data: 64-byte aligned buffers (16 for tiny ones)
//! with a cache for large ones.
//!
//! Eager code allocates and frees a large buffer per op. Fresh pages from the
//! OS cost a page fault each on first touch, which for a 64 MB tensor is more
//! than the arithmetic; so buffers of at least [`CACHE_MIN_BYTES`] go back to
//! a per-size free list when dropped, up to a total of [`cache_limit`] bytes,
//! and the next allocation of that size reuses one.

use crate::error::{bail, Result};
use crate::tensor::dtype::Element;
use crate::tensor::Device;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const ALIGN: usize = 64;
/// Buffers smaller than this are not cached (malloc is fast for them).
/// Above about 128 KiB malloc's own reuse fails: glibc gives the top of the
/// heap back on free and faults the pages in again on the next allocation,
/// which in a loop over a 128² f64 grid cost more time than the arithmetic.
pub const CACHE_MIN_BYTES: usize = 64 * 1024;

/// A 64-byte aligned (16 under 64 bytes: see [`layout`]),
/// zero-initialised-on-first-use host allocation.
pub struct HostBuffer {
    ptr: NonNull<u8>,
    bytes: usize,
}

// SAFETY: the buffer owns its allocation; access is through &/&mut as usual.
unsafe impl Send for HostBuffer {}
// SAFETY: shared access is read-only; writes need &mut or the kernels'
// disjoint-range discipline on a buffer that no one else can see yet.
unsafe impl Sync for HostBuffer {}

struct Cache {
    free: Mutex<FxHashMap<usize, Vec<usize>>>,
    held: AtomicUsize,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache { free: Mutex::new(FxHashMap::default()), held: AtomicUsize::new(0) })
}

/// The most bytes the cache keeps (env `RIVULET_CPU_CACHE_BYTES`, default 2 GiB).
pub fn cache_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| std::env::var("RIVULET_CPU_CACHE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(2 << 30))
}

/// Buffers of at least this size are aligned to [`HUGE_PAGE`] and backed by
/// transparent huge pages where the OS offers them.
const HUGE_MIN_BYTES: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Buffers under [`ALIGN`] bytes (scalars, short vectors) are 16-byte
/// aligned and at least 16 bytes long: enough for every element type, and
/// what the allocator serves with plain `calloc`. A 64-byte alignment costs
/// them an aligned allocation, several times malloc's work, on every eager
/// scalar op and loop iteration.
const SMALL_ALIGN: usize = 16;

fn layout(bytes: usize) -> Layout {
    let (size, align) = match bytes {
        b if b >= HUGE_MIN_BYTES => (b, HUGE_PAGE),
        b if b < ALIGN => (b.max(SMALL_ALIGN), SMALL_ALIGN),
        b => (b, ALIGN),
    };
    // `bytes` is bounded by MAX_ELEMENTS * 8, far below isize::MAX.
    Layout::from_size_align(size, align).expect("buffer layout within isize::MAX")
}

/// A zeroed allocation of `bytes`. Large ones ask for transparent huge pages
/// before their first touch: streaming over a 64 MB tensor then walks 32
/// page-table entries instead of 16,384, and first-touch faults drop by the
/// same factor.
fn allocate_zeroed(bytes: usize) -> *mut u8 {
    let l = layout(bytes);
    if bytes < HUGE_MIN_BYTES {
        // SAFETY: layout has nonzero size.
        return unsafe { alloc::alloc_zeroed(l) };
    }
    // SAFETY: layout has nonzero size.
    let raw = unsafe { alloc::alloc(l) };
    if raw.is_null() {
        return raw;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: `raw..raw + bytes` is our allocation, aligned to a huge page;
    // the advice changes only how the kernel backs it.
    unsafe {
        libc::madvise(raw.cast(), bytes, libc::MADV_HUGEPAGE);
    }
    // SAFETY: the allocation holds `bytes` bytes.
    unsafe { raw.write_bytes(0, bytes) };
    raw
}

impl HostBuffer {
    /// A buffer of `bytes` bytes. Contents are zeros for a fresh allocation and
    /// unspecified (but initialised) for a reused one.
    pub fn new(bytes: usize) -> Result<HostBuffer> {
        if bytes >= CACHE_MIN_BYTES {
            let c = cache();
            let reused = c.free.lock().get_mut(&bytes).and_then(|v| v.pop());
            if let Some(addr) = reused {
                c.held.fetch_sub(bytes, Ordering::Relaxed);
                // SAFETY: the address came from a live allocation of this size.
                return Ok(HostBuffer { ptr: unsafe { NonNull::new_unchecked(addr as *mut u8) }, bytes });
            }
        }
        check_request(bytes)?;
        let raw = allocate_zeroed(bytes);
        match NonNull::new(raw) {
            Some(ptr) => Ok(HostBuffer { ptr, bytes }),
            None => Err(crate::error::Error::new(
                crate::error::ErrorKind::InvalidArgument,
                format!("out of memory allocating {bytes} bytes"),
            )),
        }
    }

    /// A buffer for `n` elements of `T` whose contents the caller overwrites.
    /// Every byte is initialised, and bool buffers hold only valid values.
    pub fn for_elements<T: Element>(n: usize) -> Result<HostBuffer> {
        let mut b = HostBuffer::new(n * std::mem::size_of::<T>())?;
        if T::DTYPE == crate::tensor::DType::Bool && b.bytes >= CACHE_MIN_BYTES {
            b.bytes_mut().fill(0);
        }
        Ok(b)
    }

    /// A buffer holding `n` zeros of `T`.
    pub fn zeroed<T: Element>(n: usize) -> Result<HostBuffer> {
        let b = HostBuffer::new(n * std::mem::size_of::<T>())?;
        let mut b = b;
        if b.bytes >= CACHE_MIN_BYTES {
            // A reused buffer holds old data.
            b.bytes_mut().fill(0);
        }
        Ok(b)
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice<T: Element>(data: &[T]) -> Result<HostBuffer> {
        let mut b = HostBuffer::new(std::mem::size_of_val(data))?;
        b.as_mut_slice::<T>().copy_from_slice(data);
        Ok(b)
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for `bytes` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.bytes) }
    }
    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.bytes) }
    }
    /// The contents as elements of `T` (the caller knows the dtype).
    pub fn as_slice<T: Element>(&self) -> &[T] {
        // SAFETY: 16- or 64-byte alignment satisfies every element type; all bit
        // patterns the library writes are valid for the tensor's dtype (bool
        // buffers only ever receive 0 or 1, checked on import).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const T, self.bytes / std::mem::size_of::<T>()) }
    }
    /// The contents as elements of `T`, mutably.
    pub fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr() as *mut T, self.bytes / std::mem::size_of::<T>()) }
    }
    /// Raw base pointer, for kernels that write disjoint ranges from several threads.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Raw base pointer from a shared handle, for writing a buffer in place
    /// when the caller has proved it is the only user (see `cpu::in_place`).
    pub(crate) fn raw_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        if self.bytes >= CACHE_MIN_BYTES {
            let c = cache();
            if c.held.load(Ordering::Relaxed) + self.bytes <= cache_limit() {
                c.held.fetch_add(self.bytes, Ordering::Relaxed);
                c.free.lock().entry(self.bytes).or_default().push(self.ptr.as_ptr() as usize);
                return;
            }
        }
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout(self.bytes)) }
    }
}

/// Give every cached buffer back to the operating system.
pub fn release_cached_memory() {
    let c = cache();
    let drained: Vec<(usize, Vec<usize>)> = c.free.lock().drain().collect();
    for (bytes, addrs) in drained {
        for addr in addrs {
            c.held.fetch_sub(bytes, Ordering::Relaxed);
            // SAFETY: each address is a live allocation of `bytes` made in `new`.
            unsafe { alloc::dealloc(addr as *mut u8, layout(bytes)) }
        }
    }
}

/// The machine's physical memory in bytes (`usize::MAX` where unknown).
fn physical_memory() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf has no preconditions.
            let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
            if pages > 0 && size > 0 {
                return (pages as usize).saturating_mul(size as usize);
            }
        }
        usize::MAX
    })
}

/// Refuse a request that cannot be met: more than the machine's physical
/// memory (with overcommit the allocation would "succeed" and the process
/// be killed when it touches the pages) or beyond what any tensor may hold.
pub(crate) fn check_request(bytes: usize) -> Result<()> {
    if bytes > (crate::tensor::shape::MAX_ELEMENTS << 3) || bytes > physical_memory() {
        bail!(
            invalid,
            "out of memory: refusing to allocate {bytes} bytes (the machine has {} bytes)",
            physical_memory()
        );
    }
    Ok(())
}

/// An empty `Vec` with room for `n` elements, or an error where an
/// infallible allocation would abort the process: for lists whose length a
/// caller or a file controls (index lists, per-row scratch, outputs).
pub(crate) fn try_vec_with_capacity<T>(n: usize) -> Result<Vec<T>> {
    check_request(n.saturating_mul(std::mem::size_of::<T>()))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        crate::error::Error::new(
            crate::error::ErrorKind::InvalidArgument,
            format!("out of memory allocating {n} elements"),
        )
    })?;
    Ok(v)
}

/// `vec![value; n]`, fallibly (see [`try_vec_with_capacity`]).
pub(crate) fn try_vec<T: Clone>(value: T, n: usize) -> Result<Vec<T>> {
    let mut v = try_vec_with_capacity(n)?;
    v.resize(n, value);
    Ok(v)
}

/// A tensor's data and the device it lives on. The CPU and reference
/// devices keep host memory; an accelerator keeps its own, behind
/// [`DeviceAllocation`], with a host copy made on the first host read.
pub struct Storage {
    device: Device,
    memory: Memory,
}

/// Memory on an accelerator, owned by its backend (dropping it gives the
/// memory back to the backend's pool). Device values are never written
/// after their kernel has produced them, so a host copy stays true; the
/// exceptions are a variable's buffers, updated in place by their only
/// holder, who forgets the host copy ([`Storage::forget_host_copy`]).
pub(crate) trait DeviceAllocation: Send + Sync {
    /// The device address.
    fn address(&self) -> u64;
    /// A host copy of the bytes, after the device's queued work (a host
    /// read synchronizes).
    fn download(&self) -> Result<HostBuffer>;
}

/// The memory behind a [`Storage`].
pub(crate) enum Memory {
    Host(HostBuffer),
    Device { memory: Box<dyn DeviceAllocation>, host_copy: OnceLock<HostBuffer> },
}

impl Storage {
    /// Host memory on `device` (the CPU or the reference device).
    #[inline]
    pub(crate) fn host_on(device: Device, buffer: HostBuffer) -> Storage {
        Storage { device, memory: Memory::Host(buffer) }
    }
    /// Memory of an accelerator.
    pub(crate) fn on_device(device: Device, memory: Box<dyn DeviceAllocation>) -> Storage {
        Storage { device, memory: Memory::Device { memory, host_copy: OnceLock::new() } }
    }
    /// The device the data lives on.
    #[inline]
    pub fn device(&self) -> Device {
        self.device
    }
    /// The accelerator memory, for its backend (`None` for host memory).
    #[inline]
    pub(crate) fn device_memory(&self) -> Option<&dyn DeviceAllocation> {
        match &self.memory {
            Memory::Host(_) => None,
            Memory::Device { memory, .. } => Some(memory.as_ref()),
        }
    }
    /// Make sure [`Storage::host`] can answer: a device value is copied to
    /// the host once (synchronizing its device); the error of that copy is
    /// returned here rather than met inside `host`.
    pub(crate) fn sync_host(&self) -> Result<()> {
        if let Memory::Device { memory, host_copy } = &self.memory {
            if host_copy.get().is_none() {
                let copy = memory.download()?;
                // A concurrent reader may have set it first: same bytes.
                let _ = host_copy.set(copy);
            }
        }
        Ok(())
    }
    /// The host memory (of the CPU or reference device; a device value's
    /// host copy, made now if [`Storage::sync_host`] has not made it).
    #[inline]
    pub(crate) fn host(&self) -> &HostBuffer {
        match &self.memory {
            Memory::Host(b) => b,
            Memory::Device { memory, host_copy } => host_copy.get_or_init(|| {
                // Only a failing driver gets here: user-facing reads call
                // `sync_host` first and return its error.
                memory.download().unwrap_or_else(|e| panic!("reading a {} tensor back failed: {e}", self.device))
            }),
        }
    }
    /// Drop the host copy of a device value whose device memory the caller
    /// (holding the only reference) has just overwritten in place.
    pub(crate) fn forget_host_copy(&mut self) {
        if let Memory::Device { host_copy, .. } = &mut self.memory {
            host_copy.take();
        }
    }
    /// The host memory, mutably (the caller holds the only reference; host
    /// devices only: the CPU backend's in-place kernels).
    pub(crate) fn host_mut(&mut self) -> &mut HostBuffer {
        match &mut self.memory {
            Memory::Host(b) => b,
            Memory::Device { .. } => unreachable!("in-place host kernels run on host values only"),
        }
    }
    /// The host memory, taken (host devices only, like [`Storage::host_mut`]).
    pub(crate) fn into_host(self) -> HostBuffer {
        match self.memory {
            Memory::Host(b) => b,
            Memory::Device { .. } => unreachable!("host kernels take host values only"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size is zeroed and aligned for any element: 16 bytes under 64
    /// bytes (the allocator's plain path), 64 from there; reused buffers too.
    #[test]
    fn buffers_are_zeroed_and_aligned_for_every_element_type() {
        for bytes in (0..200).chain([CACHE_MIN_BYTES, CACHE_MIN_BYTES + 8]) {
            for _ in 0..2 {
                let b = HostBuffer::new(bytes).expect("allocation");
                let at = b.ptr.as_ptr() as usize;
                let want = if bytes < ALIGN { SMALL_ALIGN } else { ALIGN };
                assert_eq!(at % want, 0, "{bytes} bytes at {at:#x}");
                assert_eq!(b.len_bytes(), bytes);
                assert_eq!(b.as_slice::<f64>().len(), bytes / 8);
                assert_eq!(b.as_slice::<num_complex::Complex<f64>>().len(), bytes / 16);
                let z = HostBuffer::zeroed::<u8>(bytes).expect("allocation");
                assert!(z.bytes().iter().all(|&x| x == 0), "{bytes} zeroed bytes");
                // Dropped with the layout it was made with (a mismatch aborts under the allocator's checks).
                drop((b, z));
            }
        }
    }
}
