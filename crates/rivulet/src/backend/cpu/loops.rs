//! The inner loops of the kernels, as [`Kernel`]s so that each is compiled
//! for AVX-512, AVX2 and plain x86-64 and picked at run time.
//!
//! Strides are in elements: 1 is contiguous, 0 repeats one element.

use super::simd::{vectorize, Kernel};

/// `dst[i] = f(src[off + i * stride])`.
pub(crate) struct Map<'a, T, U, F> {
    pub src: &'a [T],
    pub off: isize,
    pub stride: isize,
    pub dst: &'a mut [U],
    pub f: F,
}

impl<T: Copy, U, F: Fn(T) -> U> Kernel for Map<'_, T, U, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Map { src, off, stride, dst, f } = self;
        let n = dst.len();
        match stride {
            1 => {
                let s = &src[off as usize..off as usize + n];
                for (o, &x) in dst.iter_mut().zip(s) {
                    *o = f(x);
                }
            }
            0 => {
                let x = src[off as usize];
                for o in dst.iter_mut() {
                    *o = f(x);
                }
            }
            _ => {
                for (j, o) in dst.iter_mut().enumerate() {
                    *o = f(src[(off + j as isize * stride) as usize]);
                }
            }
        }
    }
}

/// `dst[i] = f(src[i])` over whole slices.
#[inline(always)]
pub(crate) fn map<T: Copy, U>(src: &[T], dst: &mut [U], f: impl Fn(T) -> U) {
    vectorize(Map { src, off: 0, stride: 1, dst, f })
}

/// `dst[i] = f(a[oa + i * sa], b[ob + i * sb])`.
pub(crate) struct Zip<'a, A, B, U, F> {
    pub a: &'a [A],
    pub oa: isize,
    pub sa: isize,
    pub b: &'a [B],
    pub ob: isize,
    pub sb: isize,
    pub dst: &'a mut [U],
    pub f: F,
}

impl<A: Copy, B: Copy, U, F: Fn(A, B) -> U> Kernel for Zip<'_, A, B, U, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Zip { a, oa, sa, b, ob, sb, dst, f } = self;
        let n = dst.len();
        match (sa, sb) {
            (1, 1) => {
                let (xa, xb) = (&a[oa as usize..oa as usize + n], &b[ob as usize..ob as usize + n]);
                for ((o, &x), &y) in dst.iter_mut().zip(xa).zip(xb) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let (xa, y) = (&a[oa as usize..oa as usize + n], b[ob as usize]);
                for (o, &x) in dst.iter_mut().zip(xa) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let (x, xb) = (a[oa as usize], &b[ob as usize..ob as usize + n]);
                for (o, &y) in dst.iter_mut().zip(xb) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (j, o) in dst.iter_mut().enumerate() {
                    let j = j as isize;
                    *o = f(a[(oa + j * sa) as usize], b[(ob + j * sb) as usize]);
                }
            }
        }
    }
}

/// `dst[i] = c[i] ? a[i] : b[i]` with strides.
pub(crate) struct Select<'a, T> {
    pub c: (&'a [bool], isize, isize),
    pub a: (&'a [T], isize, isize),
    pub b: (&'a [T], isize, isize),
    pub dst: &'a mut [T],
}

/// One operand of a select loop: a contiguous run or one repeated value.
pub(crate) trait Lane<T>: Copy {
    fn at(self, i: usize) -> T;
}
impl<T: Copy> Lane<T> for &[T] {
    #[inline(always)]
    fn at(self, i: usize) -> T {
        self[i]
    }
}
/// A value repeated in every lane (stride 0).
#[derive(Clone, Copy)]
pub(crate) struct Splat<T>(pub T);
impl<T: Copy> Lane<T> for Splat<T> {
    #[inline(always)]
    fn at(self, _: usize) -> T {
        self.0
    }
}

#[inline(always)]
fn select_lanes<T: Copy>(dst: &mut [T], c: impl Lane<bool>, a: impl Lane<T>, b: impl Lane<T>) {
    for (i, o) in dst.iter_mut().enumerate() {
        *o = if c.at(i) { a.at(i) } else { b.at(i) };
    }
}

impl<T: Copy> Kernel for Select<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Select { c, a, b, dst } = self;
        let n = dst.len();
        // Contiguous runs of exactly n elements (so indexing needs no checks
        // the compiler can't see through), or None for a general stride.
        fn run_of<T>(x: (&[T], isize, isize), n: usize) -> Option<&[T]> {
            if x.2 == 1 {
                x.0.get(usize::try_from(x.1).ok()?..).and_then(|s| s.get(..n))
            } else {
                None
            }
        }
        fn splat_of<T: Copy>(x: (&[T], isize, isize)) -> Option<Splat<T>> {
            if x.2 == 0 {
                usize::try_from(x.1).ok().and_then(|i| x.0.get(i)).map(|&v| Splat(v))
            } else {
                None
            }
        }
        let (rc, ra, rb) = (run_of(c, n), run_of(a, n), run_of(b, n));
        let (sc, sa, sb) = (splat_of(c), splat_of(a), splat_of(b));
        match (rc, ra, rb, sc, sa, sb) {
            (Some(c), Some(a), Some(b), ..) => select_lanes(dst, c, a, b),
            (Some(c), Some(a), None, _, _, Some(b)) => select_lanes(dst, c, a, b),
            (Some(c), None, Some(b), _, Some(a), _) => select_lanes(dst, c, a, b),
            (Some(c), None, None, _, Some(a), Some(b)) => select_lanes(dst, c, a, b),
            (None, Some(a), Some(b), Some(c), ..) => select_lanes(dst, c, a, b),
            _ => {
                for (j, o) in dst.iter_mut().enumerate() {
                    let j = j as isize;
                    *o = if c.0[(c.1 + j * c.2) as usize] {
                        a.0[(a.1 + j * a.2) as usize]
                    } else {
                        b.0[(b.1 + j * b.2) as usize]
                    };
                }
            }
        }
    }
}

/// Independent accumulators per fold: enough to hide add latency.
pub(crate) const LANES: usize = 32;

/// Fold a slice with [`LANES`] accumulators, then the lanes in a fixed
/// tree, then the tail: the same bits at every vector width.
pub(crate) struct Fold<'a, T, F> {
    pub x: &'a [T],
    pub id: T,
    pub f: F,
}

impl<T: Copy, F: Fn(T, T) -> T> Kernel for Fold<'_, T, F> {
    type Output = T;
    #[inline(always)]
    fn run(self) -> T {
        let Fold { x, id, f } = self;
        let mut acc = [id; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] = f(acc[i], c[i]);
            }
        }
        let mut w = LANES;
        while w > 1 {
            w /= 2;
            for i in 0..w {
                acc[i] = f(acc[i], acc[i + w]);
            }
        }
        let mut r = acc[0];
        for &v in chunks.remainder() {
            r = f(r, v);
        }
        r
    }
}

/// `acc[j] = f(acc[j], x[k * stride + j])` for every row `k` of `x`.
pub(crate) struct Accumulate<'a, T, F> {
    pub acc: &'a mut [T],
    pub x: &'a [T],
    pub rows: usize,
    pub stride: usize,
    pub f: F,
}

impl<T: Copy, F: Fn(T, T) -> T> Kernel for Accumulate<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Accumulate { acc, x, rows, stride, f } = self;
        let n = acc.len();
        for k in 0..rows {
            let row = &x[k * stride..k * stride + n];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = f(*a, v);
            }
        }
    }
}

/// `x[i] = f(x[i])` in place.
pub(crate) struct Update<'a, T, F> {
    pub x: &'a mut [T],
    pub f: F,
}

impl<T: Copy, F: Fn(T) -> T> Kernel for Update<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        for v in self.x.iter_mut() {
            *v = (self.f)(*v);
        }
    }
}

/// `x[i] = f(x[i], y[i * stride])` in place (stride 0 or 1).
pub(crate) struct ZipInPlace<'a, T, F> {
    pub x: &'a mut [T],
    pub y: &'a [T],
    pub stride: usize,
    pub f: F,
}

impl<T: Copy, F: Fn(T, T) -> T> Kernel for ZipInPlace<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ZipInPlace { x, y, stride, f } = self;
        if stride == 0 {
            let v = y[0];
            for a in x.iter_mut() {
                *a = f(*a, v);
            }
        } else {
            for (a, &b) in x.iter_mut().zip(y) {
                *a = f(*a, b);
            }
        }
    }
}
