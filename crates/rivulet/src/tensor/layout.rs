//! Layout: how a shape maps onto a flat buffer (strides in elements and an
//! offset). Views — transpose, broadcast, slice, reverse, reshape of
//! contiguous data — are new layouts over the same buffer.

use crate::error::{bail, Result};
use crate::tensor::shape::Shape;
use smallvec::SmallVec;

/// Strides in elements, outermost first; may be zero (broadcast) or negative (reversed).
pub type Strides = SmallVec<[isize; 4]>;

/// Shape + strides + offset of a tensor within its buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub(crate) shape: Shape,
    pub(crate) strides: Strides,
    pub(crate) offset: usize,
}

/// Copied as memory (a value's layout is cloned on every hand-over between
/// steps, so the derived element-by-element clone showed in dispatch costs).
impl Clone for Layout {
    fn clone(&self) -> Layout {
        Layout { shape: self.shape.clone(), strides: Strides::from_slice(&self.strides), offset: self.offset }
    }
}

impl Layout {
    /// Row-major layout of `shape` at offset 0.
    pub fn contiguous(shape: Shape) -> Layout {
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The strides in elements.
    pub fn strides(&self) -> &[isize] {
        &self.strides
    }
    /// The offset of element `[0, 0, ...]` in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel_known()
    }
    /// True when the elements are stored in row-major order without gaps
    /// (dimensions of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        // An empty tensor is contiguous, whatever its other (even huge) dimensions.
        if self.shape.contains(&0) {
            return true;
        }
        let mut expected: isize = 1;
        for i in (0..self.shape.rank()).rev() {
            let d = self.shape[i];
            if d == 1 {
                continue;
            }
            if self.strides[i] != expected {
                return false;
            }
            expected = expected.saturating_mul(d as isize);
        }
        true
    }

    /// Reorder dimensions: result dimension `i` is input dimension `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: Shape::new(&perm.iter().map(|&p| self.shape[p]).collect::<Vec<_>>()),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// View with broadcast to `target` (NumPy rules; broadcast dimensions get stride 0).
    pub fn broadcast_to(&self, target: &Shape) -> Result<Layout> {
        if target.rank() < self.shape.rank() {
            bail!(shape, "cannot broadcast shape {} to lower rank {}", self.shape, target);
        }
        let lead = target.rank() - self.shape.rank();
        let mut strides: Strides = SmallVec::from_elem(0, target.rank());
        for i in 0..self.shape.rank() {
            let (d, t) = (self.shape[i], target[lead + i]);
            if d == t {
                strides[lead + i] = self.strides[i];
            } else if d == 1 {
                strides[lead + i] = 0;
            } else {
                bail!(shape, "cannot broadcast shape {} to {}", self.shape, target);
            }
        }
        Ok(Layout { shape: target.clone(), strides, offset: self.offset })
    }

    /// The view as `shape`, when the data is contiguous; `None` otherwise
    /// (the caller copies first). Element counts must already agree.
    pub fn reshape_view(&self, shape: Shape) -> Option<Layout> {
        if !self.is_contiguous() {
            return None;
        }
        let strides = shape.contiguous_strides();
        Some(Layout { shape, strides, offset: self.offset })
    }

    /// Offset of the element at `index` (one entry per dimension, in range).
    pub fn offset_of(&self, index: &[usize]) -> usize {
        let mut off = self.offset as isize;
        for (i, &ix) in index.iter().enumerate() {
            off += ix as isize * self.strides[i];
        }
        off as usize
    }

    /// Inclusive range of buffer offsets this layout touches, for bounds checks.
    pub fn span(&self) -> (isize, isize) {
        let mut lo = self.offset as isize;
        let mut hi = lo;
        for (i, &d) in self.shape.iter().enumerate() {
            if d == 0 {
                return (self.offset as isize, self.offset as isize - 1);
            }
            let ext = (d as isize - 1) * self.strides[i];
            if ext < 0 {
                lo += ext;
            } else {
                hi += ext;
            }
        }
        (lo, hi)
    }
}

/// Merge adjacent dimensions that are laid out consecutively in every operand,
/// and drop dimensions of size 1, so that kernels loop over as few and as long
/// dimensions as possible. `strides[k]` are operand k's strides for `shape`.
/// Returns the new shape and per-operand strides (rank at least 1).
pub(crate) fn coalesce<const K: usize>(shape: &[usize], strides: [&[isize]; K]) -> (Shape, [Strides; K]) {
    let mut out_shape: SmallVec<[usize; 4]> = SmallVec::new();
    let mut out_strides: [Strides; K] = std::array::from_fn(|_| SmallVec::new());
    for i in 0..shape.len() {
        let d = shape[i];
        if d == 1 {
            continue;
        }
        if let Some(&last) = out_shape.last() {
            let mergeable = (0..K).all(|k| *out_strides[k].last().unwrap_or(&0) == strides[k][i] * d as isize);
            if mergeable {
                let n = out_shape.len() - 1;
                out_shape[n] = last * d;
                for k in 0..K {
                    let m = out_strides[k].len() - 1;
                    out_strides[k][m] = strides[k][i];
                }
                continue;
            }
        }
        out_shape.push(d);
        for k in 0..K {
            out_strides[k].push(strides[k][i]);
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in out_strides.iter_mut() {
            s.push(0);
        }
    }
    (Shape::new(&out_shape), out_strides)
}
