//! A stream-ordered caching allocator for device memory: freed blocks are
//! kept, by stream and size, and handed out again without a driver call
//! (`cuMemAlloc` synchronizes the device and costs tens of microseconds).
//!
//! Stream order makes reuse safe without waiting: a block freed on stream S
//! is reused only by work enqueued on S after the free, which the stream
//! runs after every earlier use of the block. Blocks are never moved
//! between streams; [`CachingAllocator::release_cached`] (after the device
//! is synchronized) gives them back to the driver.
//!
//! A CUDA graph's memory is a private pool: while a plan is captured its
//! allocations use a key of their own instead of the stream (reused inside
//! the capture, whose work is one chain, as stream order), and those
//! blocks stay out of [`CachingAllocator::release_cached`] until the graph
//! is dropped ([`CachingAllocator::retire_pool`]), since its replays write
//! them at the addresses the capture recorded.
//!
//! The driver calls sit behind [`DeviceMemory`], so the bookkeeping is
//! tested on machines without a GPU.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Requests are rounded up to a multiple of this (the alignment CUDA gives).
const ROUND_SMALL: usize = 512;
/// From this size on, requests round to a quarter of their power of two, so
/// that cached blocks fit later requests of similar size.
const LARGE: usize = 1 << 20;

/// Raw device allocations: the driver, or a fake in tests.
pub(crate) trait DeviceMemory: Send + Sync {
    /// A block of `bytes`, or `None` when the device is out of memory.
    fn alloc(&self, bytes: usize) -> Option<u64>;
    /// Give back a block from [`DeviceMemory::alloc`].
    fn free(&self, ptr: u64, bytes: usize);
    /// The device's name, for errors.
    fn name(&self) -> String;
}

/// A block handed out: its address, usable size and stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub ptr: u64,
    pub bytes: usize,
    pub stream: u64,
}

/// Bytes in use by live blocks, kept in the cache, and the most ever in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemoryStats {
    pub in_use: usize,
    pub cached: usize,
    pub peak_in_use: usize,
}

#[derive(Default)]
struct Pools {
    /// Free blocks by stream (or private pool), then size.
    free: BTreeMap<(u64, usize), Vec<u64>>,
    /// Private pools of live graphs: their free blocks are not released.
    live_pools: Vec<u64>,
    stats: MemoryStats,
}

/// Keys of private pools have this bit set (streams are host pointers).
pub(crate) const PRIVATE_POOL: u64 = 1 << 63;

/// See the module documentation.
pub(crate) struct CachingAllocator<M: DeviceMemory> {
    memory: M,
    pools: Mutex<Pools>,
}

/// The size a request of `bytes` is served with.
pub(crate) fn rounded(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes < LARGE {
        return bytes.div_ceil(ROUND_SMALL) * ROUND_SMALL;
    }
    let quarter = bytes.next_power_of_two() / 4;
    bytes.div_ceil(quarter) * quarter
}

impl<M: DeviceMemory> CachingAllocator<M> {
    pub fn new(memory: M) -> CachingAllocator<M> {
        CachingAllocator { memory, pools: Mutex::new(Pools::default()) }
    }

    /// A block of at least `bytes` for work on `stream`: a cached one of the
    /// same rounded size from that stream, else a new one; when the device
    /// is full, the cache is given back and the request tried once more.
    pub fn alloc(&self, bytes: usize, stream: u64) -> Result<Block> {
        let size = rounded(bytes);
        {
            let mut pools = self.pools.lock();
            let reused = pools.free.get_mut(&(stream, size)).and_then(|v| v.pop());
            if let Some(ptr) = reused {
                if pools.free.get(&(stream, size)).is_some_and(|v| v.is_empty()) {
                    pools.free.remove(&(stream, size));
                }
                pools.stats.cached -= size;
                Self::count_in(&mut pools.stats, size);
                return Ok(Block { ptr, bytes: size, stream });
            }
        }
        let ptr = match self.memory.alloc(size) {
            Some(p) => p,
            None => {
                self.release_cached();
                self.memory.alloc(size).ok_or_else(|| self.out_of_memory(bytes, size))?
            }
        };
        Self::count_in(&mut self.pools.lock().stats, size);
        Ok(Block { ptr, bytes: size, stream })
    }

    fn count_in(stats: &mut MemoryStats, size: usize) {
        stats.in_use += size;
        stats.peak_in_use = stats.peak_in_use.max(stats.in_use);
    }

    /// Keep `block` for later requests on its stream.
    pub fn free(&self, block: Block) {
        let mut pools = self.pools.lock();
        pools.stats.in_use -= block.bytes;
        pools.stats.cached += block.bytes;
        pools.free.entry((block.stream, block.bytes)).or_default().push(block.ptr);
    }

    /// Give every cached block back to the driver (the device must be idle
    /// for blocks freed by queued work), except the free blocks of live
    /// private pools; the bytes released.
    pub fn release_cached(&self) -> usize {
        self.release_where(|pools, key| !pools.live_pools.contains(&key))
    }

    /// Open private pool `key` (with [`PRIVATE_POOL`] set) for a graph
    /// being captured: allocate with `key` as the stream.
    pub fn open_pool(&self, key: u64) {
        debug_assert!(key & PRIVATE_POOL != 0);
        self.pools.lock().live_pools.push(key);
    }

    /// The graph of private pool `key` is gone (and its replays have run):
    /// its free blocks go back to the driver; blocks of it still held are
    /// released by a later [`CachingAllocator::release_cached`] once freed.
    pub fn retire_pool(&self, key: u64) -> usize {
        self.pools.lock().live_pools.retain(|&k| k != key);
        self.release_where(|_, k| k == key)
    }

    fn release_where(&self, release: impl Fn(&Pools, u64) -> bool) -> usize {
        let drained: Vec<((u64, usize), Vec<u64>)> = {
            let mut pools = self.pools.lock();
            let keys: Vec<(u64, usize)> = pools.free.keys().copied().filter(|&(k, _)| release(&pools, k)).collect();
            let drained: Vec<_> = keys.into_iter().filter_map(|k| pools.free.remove(&k).map(|v| (k, v))).collect();
            let bytes: usize = drained.iter().map(|((_, size), v)| size * v.len()).sum();
            pools.stats.cached -= bytes;
            drained
        };
        let mut released = 0;
        for ((_, size), ptrs) in drained {
            for ptr in ptrs {
                self.memory.free(ptr, size);
                released += size;
            }
        }
        released
    }

    pub fn stats(&self) -> MemoryStats {
        self.pools.lock().stats
    }

    fn out_of_memory(&self, bytes: usize, size: usize) -> Error {
        let s = self.stats();
        Error::device(format!(
            "out of memory on {}: allocating {bytes} bytes (a block of {size}) failed with {} bytes in use by \
             tensors (at most {} so far) and the cache emptied; free tensors or use a smaller batch",
            self.memory.name(),
            s.in_use,
            s.peak_in_use
        ))
    }
}

impl<M: DeviceMemory> Drop for CachingAllocator<M> {
    fn drop(&mut self) {
        self.release_where(|_, _| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// A device with `capacity` bytes that counts driver calls.
    struct Fake {
        capacity: usize,
        used: AtomicUsize,
        next: AtomicU64,
        allocs: AtomicUsize,
        frees: AtomicUsize,
    }

    impl Fake {
        fn new(capacity: usize) -> Fake {
            Fake {
                capacity,
                used: AtomicUsize::new(0),
                next: AtomicU64::new(0x1000),
                allocs: AtomicUsize::new(0),
                frees: AtomicUsize::new(0),
            }
        }
    }

    impl DeviceMemory for Fake {
        fn alloc(&self, bytes: usize) -> Option<u64> {
            let used = self.used.fetch_add(bytes, Ordering::SeqCst) + bytes;
            if used > self.capacity {
                self.used.fetch_sub(bytes, Ordering::SeqCst);
                return None;
            }
            self.allocs.fetch_add(1, Ordering::SeqCst);
            Some(self.next.fetch_add(bytes as u64, Ordering::SeqCst))
        }
        fn free(&self, _ptr: u64, bytes: usize) {
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            self.frees.fetch_add(1, Ordering::SeqCst);
        }
        fn name(&self) -> String {
            "gpu:0".to_string()
        }
    }

    #[test]
    fn sizes_round_to_512_bytes_then_to_quarters_of_a_power_of_two() {
        assert_eq!(rounded(0), 512);
        assert_eq!(rounded(1), 512);
        assert_eq!(rounded(512), 512);
        assert_eq!(rounded(513), 1024);
        assert_eq!(rounded((1 << 20) - 1), 1 << 20);
        assert_eq!(rounded(1 << 20), 1 << 20);
        assert_eq!(rounded((1 << 20) + 1), (1 << 20) + (1 << 19));
        assert_eq!(rounded(5_000_000), 6_291_456);
        for b in [1usize, 700, 1 << 20, 3 << 20, 123_456_789] {
            assert!(rounded(b) >= b && rounded(b) < b + b / 2 + 512, "{b}");
        }
    }

    #[test]
    fn a_freed_block_is_reused_on_its_stream_only() -> Result<()> {
        let a = CachingAllocator::new(Fake::new(1 << 30));
        let x = a.alloc(1000, 7)?;
        let ptr = x.ptr;
        a.free(x);
        assert_eq!(a.stats(), MemoryStats { in_use: 0, cached: 1024, peak_in_use: 1024 });
        let other = a.alloc(1000, 8)?;
        assert_ne!(other.ptr, ptr, "another stream gets a block of its own");
        let again = a.alloc(1020, 7)?;
        assert_eq!(again.ptr, ptr, "same stream, same rounded size: the cached block");
        assert_eq!(a.memory.allocs.load(Ordering::SeqCst), 2);
        a.free(again);
        a.free(other);
        assert_eq!(a.release_cached(), 2048);
        assert_eq!(a.memory.used.load(Ordering::SeqCst), 0);
        assert_eq!(a.stats().cached, 0);
        Ok(())
    }

    #[test]
    fn a_full_device_empties_the_cache_then_names_the_request() -> Result<()> {
        let a = CachingAllocator::new(Fake::new(4 << 20));
        let held = a.alloc(2 << 20, 0)?;
        let cached = a.alloc(1 << 20, 0)?;
        a.free(cached);
        // 2 MiB more fits only once the cached 1 MiB is given back.
        let more = a.alloc(2 << 20, 0)?;
        assert_eq!(a.memory.frees.load(Ordering::SeqCst), 1, "the cache was emptied");
        let e = a.alloc(3 << 20, 0).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("gpu:0") && m.contains("allocating 3145728 bytes"), "{m}");
        assert!(m.contains("4194304 bytes in use"), "{m}");
        a.free(held);
        a.free(more);
        assert_eq!(a.stats().in_use, 0);
        Ok(())
    }

    #[test]
    fn a_private_pool_outlives_release_until_its_graph_retires() -> Result<()> {
        let a = CachingAllocator::new(Fake::new(1 << 30));
        let pool = PRIVATE_POOL | 1;
        a.open_pool(pool);
        let x = a.alloc(1000, pool)?;
        let ptr = x.ptr;
        a.free(x);
        // Reused inside the capture, as stream order would allow.
        let again = a.alloc(900, pool)?;
        assert_eq!(again.ptr, ptr);
        a.free(again);
        let other = a.alloc(1000, 7)?;
        assert_ne!(other.ptr, ptr, "the stream never gets the pool's blocks");
        a.free(other);
        assert_eq!(a.release_cached(), 1024, "only the stream's block is released");
        assert_eq!(a.stats().cached, 1024, "the graph's block is kept");
        assert_eq!(a.retire_pool(pool), 1024);
        assert_eq!(a.stats(), MemoryStats { in_use: 0, cached: 0, peak_in_use: 1024 });
        // A block of the retired pool freed late is released as any other.
        a.open_pool(PRIVATE_POOL | 2);
        let late = a.alloc(512, PRIVATE_POOL | 2)?;
        assert_eq!(a.retire_pool(PRIVATE_POOL | 2), 0, "still held");
        a.free(late);
        assert_eq!(a.release_cached(), 512);
        assert_eq!(a.memory.used.load(Ordering::SeqCst), 0);
        Ok(())
    }

    #[test]
    fn threads_allocating_and_freeing_keep_the_books_straight() {
        let a = CachingAllocator::new(Fake::new(1 << 30));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let a = &a;
                s.spawn(move || {
                    for i in 0..500usize {
                        let b = a.alloc(512 * (1 + i % 7), t % 2).expect("room");
                        a.free(b);
                    }
                });
            }
        });
        let s = a.stats();
        assert_eq!(s.in_use, 0);
        assert_eq!(s.cached, a.memory.used.load(Ordering::SeqCst), "everything allocated is cached");
        assert!(a.memory.allocs.load(Ordering::SeqCst) <= 4 * 7, "blocks were reused");
    }
}
