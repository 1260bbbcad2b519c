//! Walking strided operands against a contiguous output.
//!
//! The output of an elementwise kernel is contiguous; its inputs may be
//! broadcast (stride 0), transposed, sliced with steps or reversed. After
//! coalescing, the innermost dimension is a *row*: kernels get, for each row,
//! the offset of every input at its start and the inner stride of each, and
//! run a tight loop that the compiler can vectorise when strides are 0 or 1.

use crate::tensor::layout::{coalesce, Layout, Strides};
use crate::tensor::Shape;
use rayon::prelude::*;

/// Row-wise iteration of K inputs broadcast to a common contiguous output shape.
pub(crate) struct Rows<const K: usize> {
    /// Coalesced shape (rank >= 1); the last dimension is the row.
    shape: Shape,
    /// Per input: strides for `shape`.
    strides: [Strides; K],
    /// Per input: offset of element zero.
    offsets: [isize; K],
}

impl<const K: usize> Rows<K> {
    /// `layouts` must already have the output's shape (broadcast views).
    pub fn new(out_shape: &Shape, layouts: [&Layout; K]) -> Rows<K> {
        let out_strides = out_shape.contiguous_strides();
        let mut all: Vec<&[isize]> = Vec::with_capacity(K + 1);
        all.push(&out_strides);
        for l in layouts.iter() {
            all.push(&l.strides);
        }
        // coalesce needs a fixed arity; merge with the output's strides as operand 0.
        let (shape, strides) = coalesce_dyn(out_shape, &all);
        let mut per_input: [Strides; K] = std::array::from_fn(|_| Strides::new());
        for (k, s) in per_input.iter_mut().enumerate() {
            *s = strides[k + 1].clone();
        }
        Rows { shape, strides: per_input, offsets: std::array::from_fn(|k| layouts[k].offset as isize) }
    }

    /// Length of one row.
    pub fn inner(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Inner stride of input `k`.
    pub fn inner_stride(&self, k: usize) -> isize {
        *self.strides[k].last().unwrap_or(&0)
    }
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len() - 1].iter().product()
    }

    /// Offsets of every input at the start of row `row`.
    fn row_offsets(&self, row: usize) -> [isize; K] {
        let mut offs = self.offsets;
        let mut rem = row;
        let outer = self.shape.len() - 1;
        for d in (0..outer).rev() {
            let idx = rem % self.shape[d];
            rem /= self.shape[d];
            for (k, off) in offs.iter_mut().enumerate() {
                *off += idx as isize * self.strides[k][d];
            }
        }
        offs
    }

    /// Call `f(row, offsets)` for rows `start..end` in order.
    pub fn for_rows(&self, start: usize, end: usize, mut f: impl FnMut(usize, [isize; K])) {
        if start >= end {
            return;
        }
        let outer = self.shape.len() - 1;
        let mut idx: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::from_elem(0, outer);
        let mut rem = start;
        for d in (0..outer).rev() {
            idx[d] = rem % self.shape[d];
            rem /= self.shape[d];
        }
        let mut offs = self.row_offsets(start);
        for row in start..end {
            f(row, offs);
            // Advance the odometer.
            let mut d = outer;
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                for (k, off) in offs.iter_mut().enumerate() {
                    *off += self.strides[k][d];
                }
                if idx[d] < self.shape[d] {
                    break;
                }
                for (k, off) in offs.iter_mut().enumerate() {
                    *off -= self.strides[k][d] * self.shape[d] as isize;
                }
                idx[d] = 0;
            }
        }
    }

    /// Fill a contiguous output row by row, in parallel over blocks of rows of
    /// at least `grain` elements: `f(out_row, offsets)`.
    pub fn fill<U: Send>(&self, out: &mut [U], grain: usize, f: impl Fn(&mut [U], [isize; K]) + Sync) {
        let inner = self.inner();
        let rows = self.rows();
        if inner == 0 || rows == 0 {
            return;
        }
        let rows_per_task = (grain / inner).max(1);
        if rows <= rows_per_task {
            self.for_rows(0, rows, |r, offs| f(&mut out[r * inner..(r + 1) * inner], offs));
            return;
        }
        out.par_chunks_mut(rows_per_task * inner).enumerate().for_each(|(t, chunk)| {
            let start = t * rows_per_task;
            let end = (start + chunk.len() / inner).min(rows);
            self.for_rows(start, end, |r, offs| {
                let local = (r - start) * inner;
                f(&mut chunk[local..local + inner], offs)
            });
        });
    }
}

/// [`coalesce`] for a runtime number of operands.
fn coalesce_dyn(shape: &[usize], strides: &[&[isize]]) -> (Shape, Vec<Strides>) {
    match strides.len() {
        2 => {
            let (s, st) = coalesce(shape, [strides[0], strides[1]]);
            (s, st.to_vec())
        }
        3 => {
            let (s, st) = coalesce(shape, [strides[0], strides[1], strides[2]]);
            (s, st.to_vec())
        }
        4 => {
            let (s, st) = coalesce(shape, [strides[0], strides[1], strides[2], strides[3]]);
            (s, st.to_vec())
        }
        n => {
            // Not used by the kernels (at most three inputs); keep the shape as is.
            let shape = if shape.is_empty() { Shape::new(&[1]) } else { Shape::new(shape) };
            let st = (0..n)
                .map(
                    |k| if strides[k].is_empty() { Strides::from_slice(&[0]) } else { Strides::from_slice(strides[k]) },
                )
                .collect();
            (shape, st)
        }
    }
}

impl Rows<1> {
    /// Copy the elements at flat output positions `start .. start + dst.len()`
    /// (row-major over the iterated shape) from `src` into `dst`.
    pub(crate) fn gather_flat<T: Copy>(&self, src: &[T], start: usize, dst: &mut [T]) {
        let inner = self.inner();
        if inner == 0 || dst.is_empty() {
            return;
        }
        let st = self.inner_stride(0);
        let (first_row, mut skip) = (start / inner, start % inner);
        let last_row = (start + dst.len()).div_ceil(inner);
        let mut written = 0;
        self.for_rows(first_row, last_row, |_, [off]| {
            let take = (inner - skip).min(dst.len() - written);
            let base = off + skip as isize * st;
            let out = &mut dst[written..written + take];
            match st {
                1 => out.copy_from_slice(&src[base as usize..base as usize + take]),
                0 => out.fill(src[base as usize]),
                _ => {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = src[(base + j as isize * st) as usize];
                    }
                }
            }
            written += take;
            skip = 0;
        });
    }
}
