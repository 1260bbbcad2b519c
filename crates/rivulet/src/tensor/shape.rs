//! Shapes: the dimensions of a tensor, possibly with unknown dimensions in a graph.
//!
//! A value always has a fully known shape. A symbolic tensor in a graph may
//! have dimensions only known at run time (an unknown batch size); such a
//! dimension is [`UNKNOWN`] and prints as `?`, like TensorFlow's `None`.

use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;
use std::ops::Deref;

/// A dimension whose size is only known when the graph runs.
pub const UNKNOWN: usize = usize::MAX;

/// The largest number of elements a tensor may have (2^48), so that byte
/// counts and strides never overflow and a damaged header cannot request
/// an absurd allocation.
pub const MAX_ELEMENTS: usize = 1 << 48;

/// The dimensions of a tensor, outermost first. Scalars have rank 0.
#[derive(PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(SmallVec<[usize; 4]>);

/// Copied as memory (the derived clone goes element by element, and shapes
/// are cloned on every op's dispatch).
impl Clone for Shape {
    fn clone(&self) -> Shape {
        Shape(SmallVec::from_slice(&self.0))
    }
}

impl Shape {
    /// The multi-index of element `i` in row-major order (`i` below the
    /// element count).
    pub(crate) fn unravel(&self, mut i: usize) -> SmallVec<[usize; 4]> {
        let mut idx: SmallVec<[usize; 4]> = SmallVec::from_elem(0, self.rank());
        for d in (0..self.rank()).rev() {
            idx[d] = i % self[d];
            i /= self[d];
        }
        idx
    }

    /// The rank-0 shape.
    pub fn scalar() -> Shape {
        Shape(SmallVec::new())
    }
    /// A shape from its dimensions.
    pub fn new(dims: &[usize]) -> Shape {
        Shape(SmallVec::from_slice(dims))
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub(crate) fn dims_mut(&mut self) -> &mut SmallVec<[usize; 4]> {
        &mut self.0
    }
    /// Dimension `i`, or `None` when it is unknown or out of range.
    pub fn dim(&self, i: usize) -> Option<usize> {
        self.0.get(i).copied().filter(|&d| d != UNKNOWN)
    }
    /// True when no dimension is [`UNKNOWN`].
    pub fn is_fully_known(&self) -> bool {
        !self.0.contains(&UNKNOWN)
    }
    /// Number of elements (1 for a scalar); `None` when a dimension is unknown
    /// or the count would exceed [`MAX_ELEMENTS`].
    pub fn numel(&self) -> Option<usize> {
        let mut n: usize = 1;
        for &d in &self.0 {
            if d == UNKNOWN {
                return None;
            }
            n = n.checked_mul(d)?;
        }
        (n <= MAX_ELEMENTS).then_some(n)
    }
    /// Number of elements of a known shape (callers have checked it is
    /// known). Never overflows: an empty dimension makes it 0 whatever the
    /// others, and a count beyond `usize` (only internal views of empty
    /// tensors can describe one) saturates.
    pub(crate) fn numel_known(&self) -> usize {
        if self.0.contains(&0) {
            return 0;
        }
        self.0.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }
    /// Row-major (C order) strides in elements.
    pub(crate) fn contiguous_strides(&self) -> SmallVec<[isize; 4]> {
        let mut strides: SmallVec<[isize; 4]> = SmallVec::from_elem(0, self.rank());
        let mut acc: isize = 1;
        for i in (0..self.rank()).rev() {
            strides[i] = acc;
            acc = acc.wrapping_mul(self.0[i].max(1) as isize);
        }
        strides
    }
    /// Is this shape compatible with `other`: same rank, equal where both are known.
    pub fn is_compatible_with(&self, other: &Shape) -> bool {
        self.rank() == other.rank()
            && self.0.iter().zip(&other.0).all(|(&a, &b)| a == UNKNOWN || b == UNKNOWN || a == b)
    }

    /// Resolve a possibly negative axis against this rank (`-1` is the last axis).
    pub fn axis(&self, axis: i64) -> Result<usize> {
        normalize_axis(axis, self.rank())
    }
    /// Check that the shape is fully known and its element count is sane.
    pub(crate) fn checked_numel(&self) -> Result<usize> {
        match self.numel() {
            Some(n) => Ok(n),
            None if !self.is_fully_known() => bail!(shape, "shape {self} has unknown dimensions"),
            None => bail!(shape, "shape {self} has more than 2^48 elements"),
        }
    }
}

/// Resolve a possibly negative `axis` for a tensor of rank `rank`.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        bail!(invalid, "axis {axis} is out of range for rank {rank} (valid: {} to {})", -r, r - 1);
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// Resolve a list of axes: each in range, no duplicates; returned sorted.
pub(crate) fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank)?;
        if out.contains(&n) {
            bail!(invalid, "axis {a} is repeated in {axes:?}");
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// NumPy broadcasting of two shapes: align trailing dimensions; each pair must
/// be equal or contain a 1. Unknown dimensions broadcast optimistically.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape> {
    let rank = a.rank().max(b.rank());
    let mut out: SmallVec<[usize; 4]> = SmallVec::from_elem(1, rank);
    for i in 0..rank {
        let da = if i + a.rank() >= rank { a.0[i + a.rank() - rank] } else { 1 };
        let db = if i + b.rank() >= rank { b.0[i + b.rank() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (UNKNOWN, y) => y,
            (x, UNKNOWN) => x,
            _ => bail!(shape, "shapes {a} and {b} cannot be broadcast together (dimension {i}: {da} vs {db})"),
        };
    }
    Ok(Shape(out))
}

impl Deref for Shape {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, &d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if d == UNKNOWN {
                f.write_str("?")?;
            } else {
                write!(f, "{d}")?;
            }
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Shape {
        Shape::new(d)
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Shape {
        Shape(SmallVec::from_vec(d))
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(d: &Vec<usize>) -> Shape {
        Shape::new(d)
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Shape {
        Shape::new(&d)
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(d: &[usize; N]) -> Shape {
        Shape::new(d)
    }
}
/// Partial shapes: `None` is an unknown dimension.
impl<const N: usize> From<[Option<usize>; N]> for Shape {
    fn from(d: [Option<usize>; N]) -> Shape {
        Shape(d.iter().map(|x| x.unwrap_or(UNKNOWN)).collect())
    }
}
impl From<&[Option<usize>]> for Shape {
    fn from(d: &[Option<usize>]) -> Shape {
        Shape(d.iter().map(|x| x.unwrap_or(UNKNOWN)).collect())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Shape {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Shape {
        Shape::scalar()
    }
}

impl<const N: usize> PartialEq<[usize; N]> for Shape {
    fn eq(&self, other: &[usize; N]) -> bool {
        self.0.as_slice() == other
    }
}
impl PartialEq<[usize]> for Shape {
    fn eq(&self, other: &[usize]) -> bool {
        self.0.as_slice() == other
    }
}
impl PartialEq<&[usize]> for Shape {
    fn eq(&self, other: &&[usize]) -> bool {
        self.0.as_slice() == *other
    }
}
impl PartialEq<Vec<usize>> for Shape {
    fn eq(&self, other: &Vec<usize>) -> bool {
        self.0.as_slice() == other.as_slice()
    }
}
