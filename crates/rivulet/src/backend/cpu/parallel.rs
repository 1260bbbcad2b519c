//! Intra-op parallelism on the shared rayon pool.
//!
//! Work is split by size, never by thread count, so results are identical
//! whatever the number of threads; small tensors stay on the calling thread.

use rayon::prelude::*;

/// Elements per parallel task for cheap elementwise work.
pub(crate) const GRAIN: usize = 1 << 15;

/// Map `src` into `dst` elementwise in parallel chunks of [`GRAIN`].
#[inline]
pub(crate) fn map_slices<A: Sync, U: Send>(src: &[A], dst: &mut [U], f: impl Fn(&[A], &mut [U]) + Sync) {
    if dst.len() <= GRAIN {
        f(src, dst);
    } else {
        dst.par_chunks_mut(GRAIN).zip(src.par_chunks(GRAIN)).for_each(|(d, s)| f(s, d));
    }
}

/// Fill `dst` in parallel: `f(start, chunk)` writes the chunk beginning at element `start`.
#[inline]
pub(crate) fn fill_chunks<U: Send>(dst: &mut [U], grain: usize, f: impl Fn(usize, &mut [U]) + Sync) {
    let grain = grain.max(1);
    if dst.len() <= grain {
        f(0, dst);
    } else {
        dst.par_chunks_mut(grain).enumerate().for_each(|(i, d)| f(i * grain, d));
    }
}

/// A buffer that tasks write in disjoint parts from several threads.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub(crate) *mut T);
// SAFETY: each task writes a disjoint part of a buffer whose owner lets no
// one else read or write it meanwhile (see the users).
unsafe impl<T: Send + Sync> Sync for Shared<T> {}
unsafe impl<T: Send + Sync> Send for Shared<T> {}
impl<T> Shared<T> {
    /// # Safety
    /// Ranges handed out must be disjoint, within the buffer, and not
    /// accessed by anyone else while the slice lives.
    pub(crate) unsafe fn part<'a>(self, r: &std::ops::Range<usize>) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(r.start), r.len())
    }
}
