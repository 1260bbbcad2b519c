//! Kernels of the fused ops: elementwise programs evaluated chunk by chunk
//! (each chunk's intermediates stay in cache), optionally folded by a
//! trailing reduction; and matmul with bias and activation.
//!
//! A program is lowered once per call ([`Lowered`]): constants folded,
//! scratch buffers reused, and small patterns computed inside the loop of
//! the op that reads them, so that a chunk is stored and reloaded fewer
//! times. Every step uses the same scalar functions as the ops' own kernels,
//! in the same order, and reductions fold in the same blocks and lane order,
//! so fused and unfused results are bitwise identical.

use super::elementwise::{bool_binary_fn, compare_fn, f32_predicate, f32_unary, float_binary_fn};
use super::loops::{Lane, Map, Select, Splat, Update, Zip, ZipInPlace};
use super::reduce::Num;
use super::simd::{vectorize, Kernel};
use super::strided::Rows;
use crate::error::{bail, Result};
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::fused::{FusedProgram, Instr};
use crate::op::reduce::ReduceOp;
use crate::op::Meta;
use crate::tensor::layout::Layout;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Shape, Value};
use rayon::prelude::*;

/// Elements evaluated per chunk: a handful of registers of this size stay in L1/L2.
const CHUNK: usize = 1024;
/// Elements of a tile of whole rows computed by one call (see `Geometry::walk`).
const TILE: usize = 1 << 15;
/// Elements per parallel task (each task allocates its registers once).
const TASK: usize = 1 << 17;

/// A contiguous input, read a chunk at a time through a raw pointer: when a
/// fused step runs in place, the output is written into one of its inputs,
/// and each chunk's view of that input must end before the chunk is written.
#[derive(Clone, Copy)]
struct Run<'a, T> {
    ptr: *const T,
    len: usize,
    _input: std::marker::PhantomData<&'a [T]>,
}

// SAFETY: a `Run` is a shared view of an input; the threads that read it
// through `chunk` read disjoint or unwritten ranges (see `chunk`).
unsafe impl<T: Sync> Sync for Run<'_, T> {}

impl<'a, T> Run<'a, T> {
    fn new(s: &'a [T]) -> Run<'a, T> {
        Run { ptr: s.as_ptr(), len: s.len(), _input: std::marker::PhantomData }
    }

    /// Elements `[start, start + len)` (clipped to the input). Nothing
    /// writes them while the slice is in use: an in-place run writes a chunk
    /// only after evaluating it, and other threads own other chunks.
    fn chunk(&self, start: usize, len: usize) -> &'a [T] {
        let start = start.min(self.len);
        let len = len.min(self.len - start);
        // SAFETY: in bounds of the input (clipped above); see the doc comment
        // for why the elements are not written meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) }
    }
}

/// Where an input's elements come from.
enum Source<'a, T> {
    /// Contiguous and of the full shape: chunks are sub-slices.
    Slice(Run<'a, T>),
    /// One element broadcast everywhere.
    Scalar(T),
    /// Anything else: gathered through its broadcast layout.
    Strided(&'a [T], Rows<1>),
}

enum AnySource<'a> {
    F32(Source<'a, f32>),
    Bool(Source<'a, bool>),
}

/// Below this row length, strided inputs are gathered rather than read in
/// place a row at a time: chunks that short cost more in per-step overhead
/// than the gather saves.
const ROW_MIN: usize = 64;

/// Where an input's chunk starts, as a function of the position of the
/// chunk's first element in the output: `base + Σ index[d] · strides[d]`,
/// an element of the input's buffer (a `Slice`) or a flat position in its
/// broadcast shape (a `Strided` input). An input read under a pad is
/// shifted by the pad's leading widths, so its base may be negative: it is
/// read only where the pad is not padding, and there the sum is in range.
#[derive(Clone, Debug, Default)]
struct Addr {
    base: isize,
    strides: smallvec::SmallVec<[isize; 4]>,
}

impl Addr {
    /// Row-major positions in `shape`, shifted by `lo`.
    fn row_major(shape: &Shape, lo: &[usize]) -> Addr {
        Addr::strided(0, shape.contiguous_strides().iter().copied().collect(), lo)
    }

    fn strided(offset: isize, strides: smallvec::SmallVec<[isize; 4]>, lo: &[usize]) -> Addr {
        let shift: isize = strides.iter().zip(lo).map(|(&s, &l)| s * l as isize).sum();
        Addr { base: offset - shift, strides }
    }

    /// The start at `index`, in wrapping arithmetic: out of range (or
    /// "negative") only for an input under a pad where it is padding, which
    /// no step reads, and `Run::chunk` clips that to nothing anyway.
    fn at(&self, index: &[usize]) -> usize {
        let off = self.base + index.iter().zip(&self.strides).map(|(&i, &s)| i as isize * s).sum::<isize>();
        off as usize
    }

    /// How far the start moves per element along a row.
    fn along_row(&self) -> usize {
        self.strides.last().copied().unwrap_or(0) as usize
    }
}

/// An input, where its chunks start, and whether it is read in place a row
/// at a time (so chunks must not cross rows).
type Placed<'a, T> = (Source<'a, T>, Addr, bool);

/// `v` as an input of the index space `space` (the program's shape, or a
/// pad's unpadded shape), shifted by the pad's leading widths `lo`.
fn source<'a, T: crate::tensor::Element>(v: &'a Value, space: &Shape, lo: &[usize]) -> Result<Placed<'a, T>> {
    if v.numel() == 1 {
        let x = crate::backend::cpu::copy::materialize(v)?.contiguous_slice::<T>().map(|s| s[0]).unwrap_or_default();
        return Ok((Source::Scalar(x), Addr::default(), false));
    }
    if v.shape() == space {
        if let Some(s) = v.contiguous_slice::<T>() {
            return Ok((Source::Slice(Run::new(s)), Addr::row_major(space, lo), false));
        }
    }
    let l: Layout = v.layout.broadcast_to(space)?;
    let row = space.last().copied().unwrap_or(0);
    if row >= ROW_MIN && l.strides.last() == Some(&1) && l.strides.iter().all(|&s| s >= 0) {
        // Rows of the view are runs of its buffer: read them in place.
        let addr = Addr::strided(l.offset as isize, l.strides.iter().copied().collect(), lo);
        return Ok((Source::Slice(Run::new(v.buffer::<T>())), addr, true));
    }
    Ok((Source::Strided(v.buffer::<T>(), Rows::new(space, [&l])), Addr::row_major(space, lo), false))
}

/// One pad's unpadded region, `[lo, end)` per dimension of the output.
struct PadBox {
    lo: smallvec::SmallVec<[usize; 4]>,
    end: smallvec::SmallVec<[usize; 4]>,
}

/// How the output is cut into chunks, and where each input's chunk starts.
///
/// Flat mode (the common case: every input is contiguous, broadcast or
/// gathered) cuts the output anywhere. Row mode, for programs that pad or
/// read a strided view in place, keeps each chunk on one side of every pad
/// edge, and within one row unless its lowering reads only inputs laid
/// out as the output (`flat`), so that each input's chunk is one run of
/// its buffer and each pad is wholly padding or wholly its operand.
struct Geometry {
    dims: smallvec::SmallVec<[usize; 4]>,
    row_mode: bool,
    /// Positions within a row that chunks do not straddle (pad edges).
    cuts: smallvec::SmallVec<[usize; 8]>,
    pads: Vec<PadBox>,
    addrs: Vec<Addr>,
    /// Per lowering: whether every input it reads is addressed row-major in
    /// the output's shape, so that its chunks may run on across rows (a
    /// pad's edge columns, otherwise one-element chunks at each row's ends,
    /// then share one chunk per pair of rows).
    flat: Vec<bool>,
    /// Per input: how far its start moves from one row to the next of a
    /// plane.
    row_steps: Vec<usize>,
}

/// Where each input's elements of a chunk start (see [`Addr`]).
type Starts = smallvec::SmallVec<[usize; 8]>;

/// A run of columns `[lo, hi)` of a row that one lowering computes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Segment {
    lo: usize,
    hi: usize,
    lowering: usize,
}

impl Geometry {
    /// The lowering of position `col` of a row where the pads `row_pads` hold it.
    fn lowering_at(&self, row_pads: usize, col: usize) -> usize {
        let last = self.dims.len() - 1;
        self.pads
            .iter()
            .enumerate()
            .filter(|&(p, b)| row_pads & (1 << p) != 0 && b.lo[last] <= col && col < b.end[last])
            .map(|(p, _)| 1 << p)
            .sum()
    }

    /// Move `index` (its last entry ignored) to the next row; false at the last one.
    fn next_row(&self, index: &mut [usize]) -> bool {
        let last = self.dims.len() - 1;
        for d in (0..last).rev() {
            index[d] += 1;
            if index[d] < self.dims[d] {
                return true;
            }
            index[d] = 0;
        }
        false
    }

    /// The pads whose region holds the row of `index`, in every dimension
    /// but the last (bit `p` for pad `p`).
    fn row_pads(&self, index: &[usize]) -> usize {
        let last = index.len().saturating_sub(1);
        let inside = |b: &PadBox| (0..last).all(|d| b.lo[d] <= index[d] && index[d] < b.end[d]);
        self.pads.iter().enumerate().filter(|(_, b)| inside(b)).map(|(p, _)| 1 << p).sum()
    }

    /// A row where the pads `row_pads` hold it, cut at the pad edges into
    /// runs of one lowering each.
    fn segments(&self, row_pads: usize) -> smallvec::SmallVec<[Segment; 8]> {
        let row_len = self.dims.last().copied().unwrap_or(1);
        let mut out: smallvec::SmallVec<[Segment; 8]> = smallvec::SmallVec::new();
        let mut lo = 0;
        for &hi in self.cuts.iter().chain(std::iter::once(&row_len)) {
            if hi <= lo {
                continue;
            }
            let lowering = self.lowering_at(row_pads, lo);
            match out.last_mut() {
                Some(s) if s.lowering == lowering => s.hi = hi,
                _ => out.push(Segment { lo, hi, lowering }),
            }
            lo = hi;
        }
        out
    }

    /// Cut the `len` output elements from `start` into chunks, in order,
    /// and call `f` on each.
    ///
    /// Flat mode cuts every `CHUNK` elements. Row mode cuts each row into
    /// its segments (computed once per kind of row), then each segment into
    /// chunks; a chunk whose lowering is `flat` runs on into the next
    /// segment of the same lowering, across rows. Where every lowering of a
    /// kind of row is in `tiles`, whole rows of that kind are walked a tile
    /// at a time: each segment once, for up to `TILE` elements' worth of
    /// rows (B7: three calls per 32 rows, where one per segment of each row
    /// made two thirds of the time bookkeeping).
    fn walk(&self, start: usize, len: usize, tiles: &[bool], mut f: impl FnMut(Piece<'_>) -> Result<()>) -> Result<()> {
        let Some(last) = self.dims.len().checked_sub(1).filter(|_| self.row_mode) else {
            let mut starts: Starts = smallvec::smallvec![0; self.addrs.len()];
            let mut done = 0;
            while done < len {
                let n = CHUNK.min(len - done);
                starts.fill(start + done);
                f(Piece { starts: &starts, offset: done, len: n, rows: 1, lowering: 0 })?;
                done += n;
            }
            return Ok(());
        };
        let row_len = self.dims[last];
        if len == 0 || row_len == 0 {
            return Ok(());
        }
        let mut index: smallvec::SmallVec<[usize; 4]> = smallvec::smallvec![0; self.dims.len()];
        let mut rest = start;
        for d in (0..self.dims.len()).rev() {
            index[d] = rest % self.dims[d].max(1);
            rest /= self.dims[d].max(1);
        }
        let mut col = std::mem::replace(&mut index[last], 0);
        // Each input's start at the row's first element, moved a row at a time.
        let mut row: Starts = self.addrs.iter().map(|a| a.at(&index)).collect();
        let along: Starts = self.addrs.iter().map(Addr::along_row).collect();
        // Each input's start at column `c` of the row.
        let place = |starts: &mut Starts, row: &Starts, c: usize| {
            for ((st, r), k) in starts.iter_mut().zip(row).zip(&along) {
                *st = r.wrapping_add(c.wrapping_mul(*k));
            }
        };
        let mut kind = (usize::MAX, smallvec::SmallVec::<[Segment; 8]>::new(), false);
        // The chunk being gathered: its starts, and `(offset, len, lowering)`.
        let mut starts: Starts = smallvec::smallvec![0; self.addrs.len()];
        let mut open: Option<(usize, usize, usize)> = None;
        /// Hand the gathered chunk, if any, to `f`.
        fn close<F: FnMut(Piece<'_>) -> Result<()>>(
            open: &mut Option<(usize, usize, usize)>,
            starts: &[usize],
            f: &mut F,
        ) -> Result<()> {
            match open.take() {
                Some((offset, len, lowering)) => f(Piece { starts, offset, len, rows: 1, lowering }),
                None => Ok(()),
            }
        }
        let mut done = 0;
        loop {
            let row_pads = self.row_pads(&index);
            if row_pads != kind.0 {
                let segments = self.segments(row_pads);
                let tiled = segments.iter().all(|s| tiles.get(s.lowering) == Some(&true));
                kind = (row_pads, segments, tiled);
            }
            // A tile: this row and the next whole ones of its plane held by the same pads.
            let mut rows = 1;
            if kind.2 && col == 0 && last > 0 {
                let most = (TILE / row_len).min((len - done) / row_len).min(self.dims[last - 1] - index[last - 1]);
                let mut next = index.clone();
                while rows < most {
                    next[last - 1] = index[last - 1] + rows;
                    if self.row_pads(&next) != row_pads {
                        break;
                    }
                    rows += 1;
                }
            }
            if rows > 1 {
                close(&mut open, &starts, &mut f)?;
                for s in &kind.1 {
                    let mut c = s.lo;
                    while c < s.hi {
                        let n = (s.hi - c).min(CHUNK);
                        place(&mut starts, &row, c);
                        f(Piece { starts: &starts, offset: done + c, len: n, rows, lowering: s.lowering })?;
                        c += n;
                    }
                }
                done += rows * row_len;
                index[last - 1] += rows - 1;
            } else {
                for s in &kind.1 {
                    let mut c = s.lo.max(col);
                    while c < s.hi && done < len {
                        let n = (s.hi - c).min(len - done);
                        if let Some(o) = open.as_mut() {
                            if o.2 == s.lowering && self.flat[s.lowering] && o.1 < CHUNK {
                                let m = n.min(CHUNK - o.1);
                                (o.1, c, done) = (o.1 + m, c + m, done + m);
                                continue;
                            }
                        }
                        close(&mut open, &starts, &mut f)?;
                        place(&mut starts, &row, c);
                        let m = n.min(CHUNK);
                        open = Some((done, m, s.lowering));
                        (c, done) = (c + m, done + m);
                    }
                }
            }
            if done >= len || !self.next_row(&mut index) {
                break;
            }
            if rows == 1 && index[last - 1] > 0 {
                // The next row of the same plane.
                row.iter_mut().zip(&self.row_steps).for_each(|(r, k)| *r = r.wrapping_add(*k));
            } else {
                row.iter_mut().zip(&self.addrs).for_each(|(r, a)| *r = a.at(&index));
            }
            col = 0;
        }
        close(&mut open, &starts, &mut f)
    }
}

/// A chunk of the output to compute, or a tile of `rows` chunks a row
/// apart (see `Geometry::row_steps`).
struct Piece<'s> {
    /// Where each input's elements of the (first) chunk start.
    starts: &'s [usize],
    /// The (first) chunk's first element, from the walk's start.
    offset: usize,
    len: usize,
    rows: usize,
    lowering: usize,
}

/// An f32 operand of a step within the current chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
enum F32In {
    /// A scratch buffer.
    Buf(usize),
    /// A contiguous input, read in place.
    Input(usize),
    Const(f32),
}

/// A bool operand of a step within the current chunk.
#[derive(Clone, Copy, Debug)]
enum BoolIn {
    Buf(usize),
    Input(usize),
    Const(bool),
}

/// A register's value in the lowered program.
#[derive(Clone, Copy, Debug)]
enum Reg {
    F32(F32In),
    Bool(BoolIn),
    /// Computed inside the step of its only reader (see [`Lowered`]).
    Absorbed,
    /// Computed straight into the output chunk.
    Output,
}

/// Where a step writes its chunk.
#[derive(Clone, Copy, Debug)]
enum Dst {
    Buf(usize),
    Out,
}

/// `a * b` followed by one addition or subtraction with `c`, in the order
/// the program wrote it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum MulThen {
    /// `a * b + c`
    Add,
    /// `a * b - c`
    Sub,
    /// `c + a * b`
    AddTo,
    /// `c - a * b`
    SubFrom,
}

/// A product with a constant, folded into a running value `acc` as a
/// [`MulThen`] writes it: with `scaled`, `acc * k` is its product and the
/// run `x` its `c`; otherwise `x * k` is the product and `acc` the `c`.
/// `k` is a number (not NaN), so the product's operand order cannot show.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Link {
    op: MulThen,
    scaled: bool,
    x: F32In,
    k: f32,
}

/// Scalar arithmetic feeding a unary op, as written: `x * scale`, `x + shift`
/// or `x * scale + shift` (a subtraction of `k` is the addition of `-k`,
/// exactly, by IEEE 754's definition).
#[derive(Clone, Copy, Debug)]
struct Affine {
    scale: Option<f32>,
    shift: Option<f32>,
}

/// One pass over the chunk.
#[derive(Clone, Debug)]
enum Step {
    /// Gather a broadcast (strided) input into a buffer.
    GatherF32 {
        input: usize,
        dst: Dst,
    },
    GatherBool {
        input: usize,
        dst: Dst,
    },
    /// f32 -> f32, or f32 -> bool for the predicates.
    Unary {
        f: UnaryOp,
        a: F32In,
        to_bool: bool,
        dst: Dst,
    },
    /// `f(affine(a))`, f32 -> f32.
    AffineUnary {
        f: UnaryOp,
        a: F32In,
        affine: Affine,
        dst: Dst,
    },
    Not {
        a: BoolIn,
        dst: Dst,
    },
    /// f32 arithmetic (or a comparison, `to_bool`).
    Binary {
        f: BinaryOp,
        a: F32In,
        b: F32In,
        to_bool: bool,
        dst: Dst,
    },
    BoolBinary {
        f: BinaryOp,
        a: BoolIn,
        b: BoolIn,
        dst: Dst,
    },
    MulThen {
        op: MulThen,
        a: F32In,
        b: F32In,
        c: F32In,
        dst: Dst,
    },
    /// `((t0 + t1) + t2) [+ t3]`, three or four runs in one pass.
    Sum {
        terms: smallvec::SmallVec<[F32In; 4]>,
        dst: Dst,
    },
    /// A sum as above, then one or two links, in one pass: a stencil's
    /// update `u + (sum - c * 4) * 0.2` (B7) without storing and reloading
    /// the chunk between them.
    SumChain {
        terms: smallvec::SmallVec<[F32In; 4]>,
        links: smallvec::SmallVec<[Link; 2]>,
        dst: Dst,
    },
    /// `a * f(b)`, or `f(b) * a` with `unary_first`.
    MulUnary {
        f: UnaryOp,
        a: F32In,
        b: F32In,
        unary_first: bool,
        dst: Dst,
    },
    SelectF32 {
        c: BoolIn,
        a: F32In,
        b: F32In,
        dst: Dst,
    },
    SelectBool {
        c: BoolIn,
        a: BoolIn,
        b: BoolIn,
        dst: Dst,
    },
    ToBool {
        a: F32In,
        dst: Dst,
    },
    ToF32 {
        a: BoolIn,
        dst: Dst,
    },
}

impl Step {
    /// The destination, and whether it holds bools.
    fn dst(&self) -> (Dst, bool) {
        match *self {
            Step::GatherBool { dst, .. }
            | Step::Not { dst, .. }
            | Step::BoolBinary { dst, .. }
            | Step::SelectBool { dst, .. }
            | Step::ToBool { dst, .. } => (dst, true),
            Step::Unary { dst, to_bool, .. } | Step::Binary { dst, to_bool, .. } => (dst, to_bool),
            Step::GatherF32 { dst, .. }
            | Step::AffineUnary { dst, .. }
            | Step::MulThen { dst, .. }
            | Step::Sum { dst, .. }
            | Step::SumChain { dst, .. }
            | Step::MulUnary { dst, .. }
            | Step::SelectF32 { dst, .. }
            | Step::ToF32 { dst, .. } => (dst, false),
        }
    }
}

/// A fused program lowered for one call: constants folded, broadcast inputs
/// gathered, scratch buffers reused once their register dies, and two
/// patterns computed inside their reader's loop instead of in a pass of
/// their own (each pass stores the chunk and the next reloads it):
/// - scalar arithmetic feeding a unary op: `tanh(x * 1.5 + 0.5)`;
/// - a product feeding an addition or subtraction: `t - x * x`;
/// - a unary op feeding a product: `t * sigmoid(x)`.
///
/// Then a sum of three or four runs and the one or two steps that update it
/// with a product with a constant become one pass ([`Step::SumChain`]).
///
/// The arithmetic and its order are the program's own (no contraction into
/// fused multiply-adds), so results are bitwise those of the unfused ops.
struct Lowered {
    steps: Vec<Step>,
    /// The program's result, copied into the output when no step computed
    /// it there (an input, a constant, or a register read again later).
    result: Reg,
    f32_bufs: usize,
    bool_bufs: usize,
}

/// One cache line of f32 scratch: buffers made of lines start on a line,
/// so that a pass's full-width stores never split two lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A chunk's f32 scratch buffer, cache-line aligned.
#[derive(Default)]
struct Lines(Vec<Line>);

impl Lines {
    fn new(len: usize) -> Lines {
        Lines(vec![Line([0.0; 16]); len.div_ceil(16)])
    }
}

impl std::ops::Deref for Lines {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32s with no padding (repr C, 64 bytes).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<f32>(), self.0.len() * 16) }
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<f32>(), self.0.len() * 16) }
    }
}

/// Scratch buffers of one task.
struct Scratch {
    f32s: Vec<Lines>,
    bools: Vec<Vec<bool>>,
    ahead: Lookahead,
}

impl Scratch {
    fn new(lowerings: &[Lowered]) -> Scratch {
        let f32s = lowerings.iter().map(|l| l.f32_bufs).max().unwrap_or(0);
        let bools = lowerings.iter().map(|l| l.bool_bufs).max().unwrap_or(0);
        Scratch {
            f32s: (0..f32s).map(|_| Lines::new(CHUNK)).collect(),
            bools: vec![vec![false; CHUNK]; bools],
            ahead: Lookahead::new(),
        }
    }
}

fn const_f32(r: Option<Reg>) -> Option<f32> {
    if let Some(Reg::F32(F32In::Const(v))) = r {
        Some(v)
    } else {
        None
    }
}

fn const_bool(r: Option<Reg>) -> Option<bool> {
    if let Some(Reg::Bool(BoolIn::Const(v))) = r {
        Some(v)
    } else {
        None
    }
}

/// The value of every register that is a constant once the inputs are known
/// (scalar inputs, literals, and what is computed from constants only),
/// computed with the ops' own scalar functions.
fn fold_constants(program: &FusedProgram, sources: &[AnySource<'_>]) -> Result<Vec<Option<Reg>>> {
    let mut c: Vec<Option<Reg>> = Vec::with_capacity(program.instrs.len());
    for ins in &program.instrs {
        let all = ins.operands().iter().all(|&r| c[r].is_some());
        let cf = |r: usize| const_f32(c[r]).unwrap_or(0.0);
        let cb = |r: usize| const_bool(c[r]).unwrap_or(false);
        let v = match ins {
            Instr::Input(k) => match sources.get(*k) {
                Some(AnySource::F32(Source::Scalar(x))) => Some(Reg::F32(F32In::Const(*x))),
                Some(AnySource::Bool(Source::Scalar(x))) => Some(Reg::Bool(BoolIn::Const(*x))),
                _ => None,
            },
            _ if !all => None,
            Instr::Scalar(s, DType::Bool) => Some(Reg::Bool(BoolIn::Const(s.to_element::<bool>()))),
            Instr::Scalar(s, _) => Some(Reg::F32(F32In::Const(s.to_element::<f32>()))),
            Instr::Unary(f, a) => Some(match c[*a] {
                Some(Reg::F32(_)) => {
                    let v = cf(*a);
                    f32_unary!(*f, g => Reg::F32(F32In::Const(g(v))),
                        f32_predicate!(*f, g => Reg::Bool(BoolIn::Const(g(v))), bail!(dtype, "fused {} of f32", f.name())))
                }
                _ if *f == UnaryOp::LogicalNot => Reg::Bool(BoolIn::Const(!cb(*a))),
                _ => bail!(dtype, "fused {} of bool", f.name()),
            }),
            Instr::Binary(f, a, b) => Some(match c[*a] {
                Some(Reg::F32(_)) => {
                    let (p, q) = (cf(*a), cf(*b));
                    float_binary_fn!(f32, *f, g => Reg::F32(F32In::Const(g(p, q))),
                        compare_fn!(f32, *f, g => Reg::Bool(BoolIn::Const(g(p, q))), bail!(dtype, "fused {} of f32", f.name())))
                }
                _ => {
                    let (p, q) = (cb(*a), cb(*b));
                    bool_binary_fn!(*f, g => Reg::Bool(BoolIn::Const(g(p, q))), bail!(dtype, "fused {} of bool", f.name()))
                }
            }),
            Instr::Select(p, a, b) => {
                if cb(*p) {
                    c[*a]
                } else {
                    c[*b]
                }
            }
            Instr::Cast(to, a) => match (c[*a], to) {
                (Some(Reg::F32(_)), DType::Bool) => Some(Reg::Bool(BoolIn::Const(cf(*a) != 0.0))),
                (Some(Reg::Bool(_)), DType::F32) => Some(Reg::F32(F32In::Const(if cb(*a) { 1.0 } else { 0.0 }))),
                (v, _) => v,
            },
            Instr::Pad { .. } => bail!(invalid, "internal: fused pad {} was not specialized", c.len()),
        };
        c.push(v);
    }
    Ok(c)
}

/// The operand of `x op k` that is not the constant `k`, when `k` is a
/// number (not NaN: then the order of a commutative op cannot show in a NaN
/// payload) and, for a subtraction, on the right.
fn scalar_side(program: &FusedProgram, r: usize, consts: &[Option<Reg>]) -> Option<(usize, f32)> {
    let Instr::Binary(op, x, y) = program.instrs[r] else { return None };
    let num = |r: usize| const_f32(consts[r]).filter(|v| !v.is_nan());
    match (op, num(x), num(y)) {
        (BinaryOp::Mul | BinaryOp::Add | BinaryOp::Sub, None, Some(k)) if consts[x].is_none() => Some((x, k)),
        (BinaryOp::Mul | BinaryOp::Add, Some(k), None) if consts[y].is_none() => Some((y, k)),
        _ => None,
    }
}

/// Which registers are computed inside their reader's step, and which
/// additions sum three or four terms in one pass (their inner additions
/// absorbed).
fn absorptions(
    program: &FusedProgram,
    regs: &[Meta],
    consts: &[Option<Reg>],
    readers: &[usize],
) -> (Vec<bool>, Vec<Option<Terms>>) {
    let n = program.instrs.len();
    let mut absorbed = vec![false; n];
    let mut sums: Vec<Option<Terms>> = vec![None; n];
    let is_f32 = |r: usize| regs[r].dtype == DType::F32;
    // A register that can vanish into its only reader.
    let private = |r: usize, absorbed: &[bool]| readers[r] == 1 && consts[r].is_none() && is_f32(r) && !absorbed[r];
    let op_of = |r: usize| if let Instr::Binary(op, ..) = program.instrs[r] { Some(op) } else { None };
    // Readers first, so that the outermost pattern wins.
    for c in (0..n).rev() {
        if absorbed[c] || consts[c].is_some() || !is_f32(c) {
            continue;
        }
        match program.instrs[c] {
            // Not under a negation: the compiler may fold `-(x * k)` into
            // `x * -k`, which keeps the sign of a NaN that the op flips.
            Instr::Unary(f, a) if f != UnaryOp::Neg && is_f32(a) && private(a, &absorbed) => {
                let Some((x, _)) = scalar_side(program, a, consts) else { continue };
                absorbed[a] = true;
                // `(x * s) + t`: the product goes in too.
                if op_of(a) != Some(BinaryOp::Mul)
                    && op_of(x) == Some(BinaryOp::Mul)
                    && private(x, &absorbed)
                    && scalar_side(program, x, consts).is_some()
                {
                    absorbed[x] = true;
                }
            }
            // `a * f(b)`: the unary op in the product's loop (not a negation,
            // which the compiler may move into the product, see above).
            Instr::Binary(BinaryOp::Mul, a, b) => {
                let unary =
                    |r: usize| matches!(program.instrs[r], Instr::Unary(f, x) if f != UnaryOp::Neg && is_f32(x));
                if let Some(r) = [b, a].into_iter().find(|&r| private(r, &absorbed) && unary(r)) {
                    let other = if r == b { a } else { b };
                    if consts[other].is_none() {
                        absorbed[r] = true;
                    }
                }
            }
            Instr::Binary(op @ (BinaryOp::Add | BinaryOp::Sub), a, b) => {
                if let Some(r) = [b, a].into_iter().find(|&r| private(r, &absorbed) && op_of(r) == Some(BinaryOp::Mul))
                {
                    absorbed[r] = true;
                } else if op == BinaryOp::Add {
                    // `((t0 + t1) + t2) + t3`: the inner sums go in.
                    let (mut terms, mut inner): (Terms, Terms) = (smallvec::smallvec![b], Terms::new());
                    let mut left = a;
                    while terms.len() < 3 && private(left, &absorbed) {
                        let Instr::Binary(BinaryOp::Add, x, y) = program.instrs[left] else { break };
                        terms.push(y);
                        inner.push(left);
                        left = x;
                    }
                    terms.push(left);
                    terms.reverse();
                    if terms.len() >= 3 && terms.iter().all(|&t| consts[t].is_none() && is_f32(t)) {
                        inner.iter().for_each(|&r| absorbed[r] = true);
                        sums[c] = Some(terms);
                    }
                }
            }
            _ => {}
        }
    }
    (absorbed, sums)
}

/// The terms of a sum computed in one pass, in the program's order.
type Terms = smallvec::SmallVec<[usize; 4]>;

/// The registers instruction `i` reads, looking through absorbed ones.
fn reads_through(program: &FusedProgram, i: usize, absorbed: &[bool]) -> smallvec::SmallVec<[usize; 4]> {
    let mut out = smallvec::SmallVec::new();
    let mut stack: smallvec::SmallVec<[usize; 4]> = program.instrs[i].operands().into_iter().collect();
    while let Some(r) = stack.pop() {
        if absorbed[r] {
            stack.extend(program.instrs[r].operands());
        } else if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Scratch buffers handed out and taken back as registers live and die.
#[derive(Default)]
struct Pool {
    free: Vec<usize>,
    count: usize,
}

impl Pool {
    fn take(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.count += 1;
            self.count - 1
        })
    }
}

fn lower(program: &FusedProgram, regs: &[Meta], sources: &[AnySource<'_>]) -> Result<Lowered> {
    let n = program.instrs.len();
    let consts = fold_constants(program, sources)?;
    let mut readers = vec![0usize; n];
    for ins in &program.instrs {
        for r in ins.operands() {
            readers[r] += 1;
        }
    }
    let direct_out = readers[program.output] == 0;
    readers[program.output] += 1;
    let (absorbed, sums) = absorptions(program, regs, &consts, &readers);
    // A no-op cast is its operand under another name: both are one value,
    // with one buffer, which lives until the last read of either.
    let mut root: Vec<usize> = (0..n).collect();
    for i in 0..n {
        if let Instr::Cast(to, a) = program.instrs[i] {
            if regs[a].dtype == to {
                root[i] = root[a];
            }
        }
    }
    // The instruction after which each value (by root) is dead.
    let mut last_read = vec![0usize; n];
    for i in 0..n {
        if !absorbed[i] {
            for r in reads_through(program, i, &absorbed) {
                last_read[root[r]] = last_read[root[r]].max(i);
            }
        }
    }
    last_read[root[program.output]] = usize::MAX;
    let (mut fpool, mut bpool) = (Pool::default(), Pool::default());
    let mut vals: Vec<Reg> = Vec::with_capacity(n);
    let mut steps = Vec::new();
    let fin = |vals: &[Reg], r: usize| if let Reg::F32(v) = vals[r] { v } else { F32In::Const(0.0) };
    let bin = |vals: &[Reg], r: usize| if let Reg::Bool(v) = vals[r] { v } else { BoolIn::Const(false) };
    for (i, ins) in program.instrs.iter().enumerate() {
        if absorbed[i] {
            vals.push(Reg::Absorbed);
            continue;
        }
        if let Some(c) = consts[i] {
            vals.push(c);
            continue;
        }
        let to_bool = regs[i].dtype == DType::Bool;
        let mut dst = || -> (Dst, Reg) {
            if i == program.output && direct_out {
                (Dst::Out, Reg::Output)
            } else if to_bool {
                let k = bpool.take();
                (Dst::Buf(k), Reg::Bool(BoolIn::Buf(k)))
            } else {
                let k = fpool.take();
                (Dst::Buf(k), Reg::F32(F32In::Buf(k)))
            }
        };
        let (step, v) = match *ins {
            Instr::Input(k) => match &sources[k] {
                AnySource::F32(Source::Strided(..)) => {
                    let (d, v) = dst();
                    (Some(Step::GatherF32 { input: k, dst: d }), v)
                }
                AnySource::Bool(Source::Strided(..)) => {
                    let (d, v) = dst();
                    (Some(Step::GatherBool { input: k, dst: d }), v)
                }
                AnySource::F32(_) => (None, Reg::F32(F32In::Input(k))),
                AnySource::Bool(_) => (None, Reg::Bool(BoolIn::Input(k))),
            },
            Instr::Scalar(..) => bail!(invalid, "internal: fused constant {i} was not folded"),
            Instr::Unary(f, a) => {
                let (d, v) = dst();
                let step = match vals[a] {
                    Reg::Absorbed => {
                        let (src, affine) = affine_of(program, a, &vals, &consts);
                        Step::AffineUnary { f, a: src, affine, dst: d }
                    }
                    Reg::Bool(x) if f == UnaryOp::LogicalNot => Step::Not { a: x, dst: d },
                    Reg::Bool(_) => bail!(dtype, "fused {} of bool", f.name()),
                    _ => Step::Unary { f, a: fin(&vals, a), to_bool, dst: d },
                };
                (Some(step), v)
            }
            Instr::Binary(f, x, y) => {
                let (d, v) = dst();
                let step = match (vals[x], vals[y]) {
                    _ if sums[i].is_some() => {
                        let terms = sums[i].iter().flatten().map(|&t| fin(&vals, t)).collect();
                        Step::Sum { terms, dst: d }
                    }
                    (Reg::Absorbed, _) | (_, Reg::Absorbed) if f == BinaryOp::Mul => {
                        let unary_first = matches!(vals[x], Reg::Absorbed);
                        let (u, other) = if unary_first { (x, y) } else { (y, x) };
                        let Instr::Unary(g, src) = program.instrs[u] else {
                            bail!(invalid, "internal: fused register {u} absorbed into {i} is not a unary op");
                        };
                        Step::MulUnary { f: g, a: fin(&vals, other), b: fin(&vals, src), unary_first, dst: d }
                    }
                    (Reg::Absorbed, _) | (_, Reg::Absorbed) => {
                        let left = matches!(vals[x], Reg::Absorbed);
                        let (m, c) = if left { (x, fin(&vals, y)) } else { (y, fin(&vals, x)) };
                        let Instr::Binary(BinaryOp::Mul, p, q) = program.instrs[m] else {
                            bail!(invalid, "internal: fused register {m} absorbed into {i} is not a product");
                        };
                        let op = match (f, left) {
                            (BinaryOp::Add, true) => MulThen::Add,
                            (BinaryOp::Sub, true) => MulThen::Sub,
                            (BinaryOp::Add, false) => MulThen::AddTo,
                            _ => MulThen::SubFrom,
                        };
                        Step::MulThen { op, a: fin(&vals, p), b: fin(&vals, q), c, dst: d }
                    }
                    (Reg::Bool(p), Reg::Bool(q)) => Step::BoolBinary { f, a: p, b: q, dst: d },
                    _ => Step::Binary { f, a: fin(&vals, x), b: fin(&vals, y), to_bool, dst: d },
                };
                (Some(step), v)
            }
            Instr::Select(c, x, y) => {
                let (d, v) = dst();
                let step = if to_bool {
                    Step::SelectBool { c: bin(&vals, c), a: bin(&vals, x), b: bin(&vals, y), dst: d }
                } else {
                    Step::SelectF32 { c: bin(&vals, c), a: fin(&vals, x), b: fin(&vals, y), dst: d }
                };
                (Some(step), v)
            }
            Instr::Cast(to, a) => match (vals[a], to) {
                (Reg::F32(x), DType::Bool) => {
                    let (d, v) = dst();
                    (Some(Step::ToBool { a: x, dst: d }), v)
                }
                (Reg::Bool(x), DType::F32) => {
                    let (d, v) = dst();
                    (Some(Step::ToF32 { a: x, dst: d }), v)
                }
                // A no-op cast: the register itself.
                (v, _) => (None, v),
            },
            Instr::Pad { .. } => bail!(invalid, "internal: fused pad {i} was not specialized"),
        };
        steps.extend(step);
        // Buffers of registers that die here go back to the pool, after this
        // step took its own: a step never writes a buffer it reads.
        let mut dying: smallvec::SmallVec<[usize; 4]> =
            reads_through(program, i, &absorbed).into_iter().map(|r| root[r]).filter(|&q| last_read[q] == i).collect();
        dying.sort_unstable();
        dying.dedup();
        for q in dying {
            match vals[q] {
                Reg::F32(F32In::Buf(k)) => fpool.free.push(k),
                Reg::Bool(BoolIn::Buf(k)) => bpool.free.push(k),
                _ => {}
            }
        }
        vals.push(v);
    }
    let result = vals[program.output];
    chain_sums(&mut steps, result);
    Ok(Lowered { steps, result, f32_bufs: fpool.count, bool_bufs: bpool.count })
}

/// The f32 operands a step reads.
fn f32_reads(step: &Step) -> smallvec::SmallVec<[F32In; 4]> {
    match step {
        Step::Unary { a, .. } | Step::AffineUnary { a, .. } | Step::ToBool { a, .. } => smallvec::smallvec![*a],
        Step::Binary { a, b, .. } | Step::MulUnary { a, b, .. } | Step::SelectF32 { a, b, .. } => {
            smallvec::smallvec![*a, *b]
        }
        Step::MulThen { a, b, c, .. } => smallvec::smallvec![*a, *b, *c],
        Step::Sum { terms, .. } => terms.clone(),
        Step::SumChain { terms, links, .. } => terms.iter().copied().chain(links.iter().map(|l| l.x)).collect(),
        Step::GatherF32 { .. }
        | Step::GatherBool { .. }
        | Step::Not { .. }
        | Step::BoolBinary { .. }
        | Step::SelectBool { .. }
        | Step::ToF32 { .. } => smallvec::SmallVec::new(),
    }
}

/// `step` as a link on the running value in buffer `acc`: a product with a
/// number and one other run, read once.
fn as_link(step: &Step, acc: usize) -> Option<Link> {
    let Step::MulThen { op, a, b, c, .. } = *step else { return None };
    let is_acc = |o: F32In| matches!(o, F32In::Buf(k) if k == acc);
    let number = |o: F32In| if let F32In::Const(k) = o { Some(k).filter(|k| !k.is_nan()) } else { None };
    let run = |o: F32In| !matches!(o, F32In::Const(_)) && !is_acc(o);
    let (factor, k) = match (number(a), number(b)) {
        (None, Some(k)) => (a, k),
        (Some(k), None) => (b, k),
        _ => return None,
    };
    if is_acc(factor) && run(c) {
        Some(Link { op, scaled: true, x: c, k })
    } else if is_acc(c) && run(factor) {
        Some(Link { op, scaled: false, x: factor, k })
    } else {
        None
    }
}

/// Merge each sum with the one or two steps after it that are links on its
/// result (B7's update), where that result is read nowhere else: the chain
/// then runs in one pass instead of three. The merged step keeps the last
/// link's destination, which must not be a buffer it reads.
fn chain_sums(steps: &mut Vec<Step>, result: Reg) {
    // Whether buffer `b` is read after step `from` before being written again.
    let live_after = |steps: &[Step], from: usize, b: usize| -> bool {
        if matches!(result, Reg::F32(F32In::Buf(k)) if k == b) {
            return true;
        }
        for s in &steps[from + 1..] {
            if f32_reads(s).iter().any(|o| matches!(o, F32In::Buf(k) if *k == b)) {
                return true;
            }
            if matches!(s.dst(), (Dst::Buf(k), false) if k == b) {
                return false;
            }
        }
        false
    };
    let mut i = 0;
    while i < steps.len() {
        let Step::Sum { terms, dst: Dst::Buf(mut acc) } = &steps[i] else {
            i += 1;
            continue;
        };
        let terms = terms.clone();
        let mut links: smallvec::SmallVec<[Link; 2]> = smallvec::SmallVec::new();
        let mut dst = Dst::Buf(acc);
        while links.len() < 2 {
            let next = i + 1 + links.len();
            let Some(link) = steps.get(next).and_then(|s| as_link(s, acc)) else { break };
            let (to, _) = steps[next].dst();
            let reads_dst = |b: usize| {
                terms
                    .iter()
                    .chain(links.iter().map(|l| &l.x))
                    .chain([&link.x])
                    .any(|o| matches!(o, F32In::Buf(k) if *k == b))
            };
            if live_after(steps, next, acc) || matches!(to, Dst::Buf(b) if reads_dst(b)) {
                break;
            }
            links.push(link);
            dst = to;
            match to {
                Dst::Buf(b) => acc = b,
                Dst::Out => break,
            }
        }
        if !links.is_empty() {
            let merged = links.len();
            steps[i] = Step::SumChain { terms, links, dst };
            steps.drain(i + 1..=i + merged);
        }
        i += 1;
    }
}

/// The source and scalar arithmetic of the absorbed register `r` feeding a unary op.
fn affine_of(program: &FusedProgram, r: usize, vals: &[Reg], consts: &[Option<Reg>]) -> (F32In, Affine) {
    let op = |r: usize| if let Instr::Binary(op, ..) = program.instrs[r] { op } else { BinaryOp::Add };
    let operand = |x: usize| if let Reg::F32(v) = vals[x] { v } else { F32In::Const(0.0) };
    let Some((x, k)) = scalar_side(program, r, consts) else {
        return (F32In::Const(0.0), Affine { scale: None, shift: None });
    };
    match op(r) {
        BinaryOp::Mul => (operand(x), Affine { scale: Some(k), shift: None }),
        outer => {
            let shift = Some(if outer == BinaryOp::Sub { -k } else { k });
            match (vals[x], scalar_side(program, x, consts)) {
                (Reg::Absorbed, Some((y, s))) => (operand(y), Affine { scale: Some(s), shift }),
                _ => (operand(x), Affine { scale: None, shift }),
            }
        }
    }
}

/// A chunk of an operand: a run of elements or one value for all.
#[derive(Clone, Copy)]
enum Chunk<'a, T> {
    Run(&'a [T]),
    Splat(T),
}

impl<'a, T: Copy> Chunk<'a, T> {
    /// `(slice, stride)` for the strided loops; `one` holds a splat value.
    fn strided(self, one: &'a [T; 1]) -> (&'a [T], isize) {
        match self {
            Chunk::Run(s) => (s, 1),
            Chunk::Splat(_) => (&one[..], 0),
        }
    }
    fn splat_or(self, default: T) -> [T; 1] {
        match self {
            Chunk::Splat(v) => [v],
            Chunk::Run(_) => [default],
        }
    }
}

/// A chunk's position: where each input's elements start, and its length.
type Span<'s> = (&'s [usize], usize);

/// The chunk `at` of an f32 operand.
fn f32_chunk<'a>(o: F32In, bufs: &'a [Lines], sources: &'a [AnySource<'a>], at: Span<'_>) -> Chunk<'a, f32> {
    match o {
        F32In::Buf(k) => Chunk::Run(&bufs[k][..at.1]),
        F32In::Input(k) => match &sources[k] {
            AnySource::F32(Source::Slice(s)) => Chunk::Run(s.chunk(at.0[k], at.1)),
            AnySource::F32(Source::Scalar(v)) => Chunk::Splat(*v),
            _ => Chunk::Splat(0.0),
        },
        F32In::Const(v) => Chunk::Splat(v),
    }
}

/// The chunk `at` of a bool operand.
fn bool_chunk<'a>(o: BoolIn, bufs: &'a [Vec<bool>], sources: &'a [AnySource<'a>], at: Span<'_>) -> Chunk<'a, bool> {
    match o {
        BoolIn::Buf(k) => Chunk::Run(&bufs[k][..at.1]),
        BoolIn::Input(k) => match &sources[k] {
            AnySource::Bool(Source::Slice(s)) => Chunk::Run(s.chunk(at.0[k], at.1)),
            AnySource::Bool(Source::Scalar(v)) => Chunk::Splat(*v),
            _ => Chunk::Splat(false),
        },
        BoolIn::Const(v) => Chunk::Splat(v),
    }
}

/// Where a chunk's result goes.
enum OutChunk<'a> {
    F32(&'a mut [f32]),
    Bool(&'a mut [bool]),
}

/// `dst[i] = op(a[i] * b[i], c[i])`, operands in the program's order.
struct MulThenLoop<'a> {
    op: MulThen,
    a: Chunk<'a, f32>,
    b: Chunk<'a, f32>,
    c: Chunk<'a, f32>,
    dst: &'a mut [f32],
}

#[inline(always)]
fn mul_then_lanes(
    dst: &mut [f32],
    a: impl Lane<f32>,
    b: impl Lane<f32>,
    c: impl Lane<f32>,
    f: impl Fn(f32, f32, f32) -> f32,
) {
    for (i, o) in dst.iter_mut().enumerate() {
        *o = f(a.at(i), b.at(i), c.at(i));
    }
}

impl Kernel for MulThenLoop<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let MulThenLoop { op, a, b, c, dst } = self;
        let n = dst.len();
        fn run(x: Chunk<'_, f32>, n: usize) -> Option<&[f32]> {
            if let Chunk::Run(s) = x {
                s.get(..n)
            } else {
                None
            }
        }
        let splat = |x: Chunk<'_, f32>| Splat(x.splat_or(0.0)[0]);
        macro_rules! lanes {
            ($f:expr) => {
                match (run(a, n), run(b, n), run(c, n)) {
                    (Some(a), Some(b), Some(c)) => mul_then_lanes(dst, a, b, c, $f),
                    (Some(a), Some(b), None) => mul_then_lanes(dst, a, b, splat(c), $f),
                    (Some(a), None, Some(c)) => mul_then_lanes(dst, a, splat(b), c, $f),
                    (None, Some(b), Some(c)) => mul_then_lanes(dst, splat(a), b, c, $f),
                    (Some(a), None, None) => mul_then_lanes(dst, a, splat(b), splat(c), $f),
                    (None, Some(b), None) => mul_then_lanes(dst, splat(a), b, splat(c), $f),
                    (None, None, Some(c)) => mul_then_lanes(dst, splat(a), splat(b), c, $f),
                    _ => mul_then_lanes(dst, splat(a), splat(b), splat(c), $f),
                }
            };
        }
        match op {
            MulThen::Add => lanes!(|a: f32, b: f32, c: f32| a * b + c),
            MulThen::Sub => lanes!(|a: f32, b: f32, c: f32| a * b - c),
            MulThen::AddTo => lanes!(|a: f32, b: f32, c: f32| c + a * b),
            MulThen::SubFrom => lanes!(|a: f32, b: f32, c: f32| c - a * b),
        }
    }
}

/// `dst[i] = ((t0[i] + t1[i]) + t2[i]) [+ t3[i]]`: one pass where three
/// additions would store and reload the chunk twice more (B7's laplacian).
struct SumLoop<'a> {
    terms: SumRuns<'a>,
    dst: &'a mut [f32],
}

/// The runs of a sum's three or four terms.
#[derive(Clone, Copy)]
struct SumRuns<'a> {
    three: [&'a [f32]; 3],
    fourth: Option<&'a [f32]>,
}

impl<'a> SumRuns<'a> {
    /// The runs of a sum's three or four `terms`, each read through `run`.
    fn of(terms: &[F32In], run: impl Fn(F32In) -> Chunk<'a, f32>) -> Result<SumRuns<'a>> {
        let run = |t: Option<&F32In>| match t.map(|&t| run(t)) {
            Some(Chunk::Run(r)) => Ok(r),
            _ => bail!(invalid, "internal: fused sum of {} terms, or of a constant", terms.len()),
        };
        let fourth = if terms.len() > 3 { Some(run(terms.get(3))?) } else { None };
        Ok(SumRuns { three: [run(terms.first())?, run(terms.get(1))?, run(terms.get(2))?], fourth })
    }

    /// The terms' runs, each cut to `n`; `None` when one is shorter.
    #[inline(always)]
    fn cut(self, n: usize) -> Option<SumRuns<'a>> {
        let [a, b, c] = self.three;
        let fourth = match self.fourth {
            Some(d) => Some(d.get(..n)?),
            None => None,
        };
        Some(SumRuns { three: [a.get(..n)?, b.get(..n)?, c.get(..n)?], fourth })
    }

    /// Each run moved on by `r` rows of `steps[k]` elements (term `k`).
    #[inline(always)]
    fn row(self, r: usize, steps: [usize; 4]) -> SumRuns<'a> {
        let at = |s: &'a [f32], k: usize| s.get(r * steps[k]..).unwrap_or(&[]);
        let [a, b, c] = self.three;
        SumRuns { three: [at(a, 0), at(b, 1), at(c, 2)], fourth: self.fourth.map(|d| at(d, 3)) }
    }
}

impl Kernel for SumLoop<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let SumLoop { terms, dst } = self;
        let n = dst.len();
        let Some(SumRuns { three: [a, b, c], fourth }) = terms.cut(n) else { return };
        match fourth {
            None => {
                for i in 0..n {
                    dst[i] = a[i] + b[i] + c[i];
                }
            }
            Some(d) => {
                for i in 0..n {
                    dst[i] = a[i] + b[i] + c[i] + d[i];
                }
            }
        }
    }
}

/// [`Step::SumChain`]'s loop: the runs of its terms, and each link with the
/// run of its `x`.
struct SumChainLoop<'a> {
    terms: SumRuns<'a>,
    first: (Link, &'a [f32]),
    second: Option<(Link, &'a [f32])>,
    dst: &'a mut [f32],
}

/// `f(acc, x)` for a link (see [`Link`]), bound to `$f` in `$body`: one
/// compiled loop per kind of link, the constant in a register.
macro_rules! with_link {
    ($l:expr, $f:ident => $body:expr) => {{
        let k = $l.k;
        match ($l.op, $l.scaled) {
            (MulThen::Add, true) => {
                let $f = move |a: f32, x: f32| a * k + x;
                $body
            }
            (MulThen::Sub, true) => {
                let $f = move |a: f32, x: f32| a * k - x;
                $body
            }
            (MulThen::AddTo, true) => {
                let $f = move |a: f32, x: f32| x + a * k;
                $body
            }
            (MulThen::SubFrom, true) => {
                let $f = move |a: f32, x: f32| x - a * k;
                $body
            }
            (MulThen::Add, false) => {
                let $f = move |a: f32, x: f32| x * k + a;
                $body
            }
            (MulThen::Sub, false) => {
                let $f = move |a: f32, x: f32| x * k - a;
                $body
            }
            (MulThen::AddTo, false) => {
                let $f = move |a: f32, x: f32| a + x * k;
                $body
            }
            (MulThen::SubFrom, false) => {
                let $f = move |a: f32, x: f32| a - x * k;
                $body
            }
        }
    }};
}

/// `dst[i] = g(f(sum(i), x[i]), y[i])`, every run already cut to `dst`'s length.
#[inline(always)]
fn chain_lanes(
    dst: &mut [f32],
    sum: impl Fn(usize) -> f32,
    x: &[f32],
    f: impl Fn(f32, f32) -> f32,
    y: &[f32],
    g: impl Fn(f32, f32) -> f32,
) {
    let n = dst.len();
    let (x, y) = (&x[..n], &y[..n]);
    for i in 0..n {
        dst[i] = g(f(sum(i), x[i]), y[i]);
    }
}

impl Kernel for SumChainLoop<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let SumChainLoop { terms, first, second, dst } = self;
        let n = dst.len();
        let Some(SumRuns { three: [a, b, c], fourth }) = terms.cut(n) else { return };
        if first.1.len() < n || second.is_some_and(|s| s.1.len() < n) {
            return;
        }
        macro_rules! second {
            ($sum:expr) => {
                with_link!(first.0, f => match second {
                    None => chain_lanes(dst, $sum, first.1, f, first.1, |v: f32, _: f32| v),
                    // Both links read one run (B7's `u` and its centre view
                    // are the same elements): one load per lane, not two.
                    Some(second) if std::ptr::eq(second.1.as_ptr(), first.1.as_ptr()) =>
                        with_link!(second.0, g => chain_lanes(dst, $sum, first.1, f, first.1, g)),
                    Some(second) => with_link!(second.0, g => chain_lanes(dst, $sum, first.1, f, second.1, g)),
                })
            };
        }
        match fourth {
            None => second!(|i: usize| a[i] + b[i] + c[i]),
            Some(d) => second!(|i: usize| a[i] + b[i] + c[i] + d[i]),
        }
    }
}

/// `dst[i] = f(a[i], b[i])` over contiguous runs only (one loop to compile
/// per function, where `Zip` has one per stride pattern).
struct ZipRuns<'a, F> {
    a: &'a [f32],
    b: &'a [f32],
    dst: &'a mut [f32],
    f: F,
}

impl<F: Fn(f32, f32) -> f32> Kernel for ZipRuns<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ZipRuns { a, b, dst, f } = self;
        for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    }
}

/// Run one step on the chunk `at`, writing into its destination: `fd` for
/// f32 results, `bd` for bool results.
fn exec(
    step: &Step,
    fb: &[Lines],
    bb: &[Vec<bool>],
    sources: &[AnySource<'_>],
    at: Span<'_>,
    fd: &mut [f32],
    bd: &mut [bool],
) -> Result<()> {
    let fc = |o: F32In| f32_chunk(o, fb, sources, at);
    let bc = |o: BoolIn| bool_chunk(o, bb, sources, at);
    match *step {
        Step::GatherF32 { input, .. } => {
            if let AnySource::F32(Source::Strided(buf, rows)) = &sources[input] {
                rows.gather_flat(buf, at.0[input], fd);
            }
        }
        Step::GatherBool { input, .. } => {
            if let AnySource::Bool(Source::Strided(buf, rows)) = &sources[input] {
                rows.gather_flat(buf, at.0[input], bd);
            }
        }
        Step::Unary { f, a, .. } => {
            let x = fc(a);
            let one = x.splat_or(0.0);
            let (src, stride) = x.strided(&one);
            f32_unary!(f, g => vectorize(Map { src, off: 0, stride, dst: fd, f: g }),
                f32_predicate!(f, g => vectorize(Map { src, off: 0, stride, dst: bd, f: g }),
                    bail!(dtype, "fused {} of f32", f.name())))
        }
        Step::AffineUnary { f, a, affine, .. } => {
            let x = fc(a);
            let one = x.splat_or(0.0);
            let (src, stride) = x.strided(&one);
            f32_unary!(f, g => match affine {
                Affine { scale: Some(s), shift: Some(t) } =>
                    vectorize(Map { src, off: 0, stride, dst: fd, f: move |v: f32| g(v * s + t) }),
                Affine { scale: Some(s), shift: None } =>
                    vectorize(Map { src, off: 0, stride, dst: fd, f: move |v: f32| g(v * s) }),
                Affine { scale: None, shift: Some(t) } =>
                    vectorize(Map { src, off: 0, stride, dst: fd, f: move |v: f32| g(v + t) }),
                Affine { scale: None, shift: None } =>
                    vectorize(Map { src, off: 0, stride, dst: fd, f: g }),
            }, bail!(dtype, "fused {} of f32", f.name()))
        }
        Step::Not { a, .. } => {
            let x = bc(a);
            let one = x.splat_or(false);
            let (src, stride) = x.strided(&one);
            vectorize(Map { src, off: 0, stride, dst: bd, f: |b: bool| !b });
        }
        Step::Binary { f, a, b, .. } => {
            let (x, y) = (fc(a), fc(b));
            let (ox, oy) = (x.splat_or(0.0), y.splat_or(0.0));
            let ((sa, ka), (sb, kb)) = (x.strided(&ox), y.strided(&oy));
            float_binary_fn!(f32, f, g => vectorize(Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: fd, f: g }),
                compare_fn!(f32, f, g => vectorize(Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: bd, f: g }),
                    bail!(dtype, "fused {} of f32", f.name())))
        }
        Step::BoolBinary { f, a, b, .. } => {
            let (x, y) = (bc(a), bc(b));
            let (ox, oy) = (x.splat_or(false), y.splat_or(false));
            let ((sa, ka), (sb, kb)) = (x.strided(&ox), y.strided(&oy));
            bool_binary_fn!(f, g => vectorize(Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: bd, f: g }),
                bail!(dtype, "fused {} of bool", f.name()))
        }
        Step::MulThen { op, a, b, c, .. } => vectorize(MulThenLoop { op, a: fc(a), b: fc(b), c: fc(c), dst: fd }),
        Step::Sum { ref terms, .. } => vectorize(SumLoop { terms: SumRuns::of(terms, fc)?, dst: fd }),
        Step::SumChain { ref terms, ref links, .. } => {
            let link = |l: Option<&Link>| -> Result<(Link, &[f32])> {
                match l.map(|l| (*l, fc(l.x))) {
                    Some((l, Chunk::Run(r))) => Ok((l, r)),
                    _ => bail!(invalid, "internal: fused link to a constant"),
                }
            };
            let second = if links.len() > 1 { Some(link(links.get(1))?) } else { None };
            vectorize(SumChainLoop { terms: SumRuns::of(terms, fc)?, first: link(links.first())?, second, dst: fd });
        }
        Step::MulUnary { f, a, b, unary_first, .. } => {
            let (Chunk::Run(a), Chunk::Run(b)) = (fc(a), fc(b)) else {
                bail!(invalid, "internal: fused product of a unary op with a constant");
            };
            f32_unary!(f, g => if unary_first {
                vectorize(ZipRuns { a, b, dst: fd, f: move |p: f32, q: f32| g(q) * p })
            } else {
                vectorize(ZipRuns { a, b, dst: fd, f: move |p: f32, q: f32| p * g(q) })
            }, bail!(dtype, "fused {} of f32", f.name()))
        }
        Step::SelectF32 { c, a, b, .. } => {
            let (p, x, y) = (bc(c), fc(a), fc(b));
            let (op, ox, oy) = (p.splat_or(false), x.splat_or(0.0), y.splat_or(0.0));
            let ((sc, kc), (sa, ka), (sb, kb)) = (p.strided(&op), x.strided(&ox), y.strided(&oy));
            vectorize(Select { c: (sc, 0, kc), a: (sa, 0, ka), b: (sb, 0, kb), dst: fd });
        }
        Step::SelectBool { c, a, b, .. } => {
            let (p, x, y) = (bc(c), bc(a), bc(b));
            let (op, ox, oy) = (p.splat_or(false), x.splat_or(false), y.splat_or(false));
            let ((sc, kc), (sa, ka), (sb, kb)) = (p.strided(&op), x.strided(&ox), y.strided(&oy));
            vectorize(Select { c: (sc, 0, kc), a: (sa, 0, ka), b: (sb, 0, kb), dst: bd });
        }
        Step::ToBool { a, .. } => {
            let x = fc(a);
            let one = x.splat_or(0.0);
            let (src, stride) = x.strided(&one);
            vectorize(Map { src, off: 0, stride, dst: bd, f: |v: f32| v != 0.0 });
        }
        Step::ToF32 { a, .. } => {
            let x = bc(a);
            let one = x.splat_or(false);
            let (src, stride) = x.strided(&one);
            vectorize(Map { src, off: 0, stride, dst: fd, f: |v: bool| if v { 1.0 } else { 0.0 } });
        }
    }
    Ok(())
}

/// Rows of chunks of one shape, run in one call ([`exec_tile`]): row `r`
/// of input `k` starts `r * steps[k]` after the chunk's start, and of the
/// output `r * out_step`.
struct Tile<'s> {
    rows: usize,
    steps: &'s [usize],
    out_step: usize,
}

/// A tile's f32 operand: a run covering all its rows (row `r` starting at
/// `r * step`), or one value.
#[derive(Clone, Copy)]
enum TileIn<'a> {
    Run(&'a [f32], usize),
    Splat([f32; 1]),
}

impl<'a> TileIn<'a> {
    /// Row `r`'s chunk as `(slice, stride)` for the strided loops.
    #[inline(always)]
    fn strided(&self, r: usize) -> (&[f32], isize) {
        match self {
            TileIn::Run(s, k) => (s.get(r * k..).unwrap_or(&[]), 1),
            TileIn::Splat(v) => (&v[..], 0),
        }
    }

    /// Row `r`'s chunk.
    #[inline(always)]
    fn row(self, r: usize) -> Chunk<'a, f32> {
        match self {
            TileIn::Run(s, k) => Chunk::Run(s.get(r * k..).unwrap_or(&[])),
            TileIn::Splat([v]) => Chunk::Splat(v),
        }
    }
}

/// A kernel run on each row of a tile, all in one vectorized call:
/// `make(r)` is row `r`'s.
struct EachRow<F> {
    rows: usize,
    make: F,
}

impl<K: Kernel<Output = ()>, F: Fn(usize) -> K> Kernel for EachRow<F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        for r in 0..self.rows {
            (self.make)(r).run();
        }
    }
}

/// Whether [`exec_tile`] runs a lowering: one step, computing f32s
/// straight into the output from inputs and constants only, or none (a
/// pad's padding, or an input copied).
fn tileable(l: &Lowered) -> bool {
    let ok = |o: &F32In| !matches!(o, F32In::Buf(_));
    let step = match (&l.steps[..], l.result) {
        ([], Reg::F32(o)) => return ok(&o),
        ([step], Reg::Output) => step,
        _ => return false,
    };
    if !matches!(step.dst(), (Dst::Out, false)) {
        return false;
    }
    match step {
        // Only the ops `exec_tile` has a loop for (f32 to f32).
        Step::Unary { f, a, .. } | Step::AffineUnary { f, a, .. } => ok(a) && f32_unary!(*f, _g => true, false),
        Step::Binary { f, a, b, .. } => ok(a) && ok(b) && float_binary_fn!(f32, *f, _g => true, false),
        Step::MulThen { a, b, c, .. } => ok(a) && ok(b) && ok(c),
        Step::Sum { terms, .. } => terms.iter().all(ok),
        Step::SumChain { terms, links, .. } => terms.iter().all(ok) && links.iter().all(|l| ok(&l.x)),
        _ => false,
    }
}

/// Run a [`tileable`] step on a tile whose first row is the chunk `at`,
/// writing row `r` at `out + r * tile.out_step`: the step's dispatch once
/// per tile instead of once per row (B7: one call per edge column and one
/// for the interior of 32 rows). `false` when an operand does not cover
/// the tile (then nothing was written): never, for a tile of the walk.
fn exec_tile(lowered: &Lowered, sources: &[AnySource<'_>], at: Span<'_>, tile: &Tile<'_>, out: *mut f32) -> bool {
    let (starts, len) = at;
    let rows = tile.rows;
    let operand = |o: F32In| -> Option<TileIn<'_>> {
        match o {
            F32In::Const(v) => Some(TileIn::Splat([v])),
            F32In::Input(k) => match sources.get(k)? {
                AnySource::F32(Source::Scalar(v)) => Some(TileIn::Splat([*v])),
                AnySource::F32(Source::Slice(s)) => {
                    let step = *tile.steps.get(k)?;
                    let need = (rows - 1).checked_mul(step)?.checked_add(len)?;
                    let run = s.chunk(*starts.get(k)?, need);
                    (run.len() == need).then_some(TileIn::Run(run, step))
                }
                _ => None,
            },
            F32In::Buf(_) => None,
        }
    };
    macro_rules! operand {
        ($o:expr) => {
            match operand($o) {
                Some(x) => x,
                None => return false,
            }
        };
    }
    // A run's `(slice, step)`.
    macro_rules! run {
        ($o:expr) => {
            match operand!($o) {
                TileIn::Run(s, k) => (s, k),
                TileIn::Splat(_) => return false,
            }
        };
    }
    // SAFETY: the tile's output rows lie within the caller's output range,
    // which this task alone writes, and are disjoint (`out_step >= len`);
    // no other view of them is alive while the step runs.
    let dst = |r: usize| unsafe { std::slice::from_raw_parts_mut(out.add(r * tile.out_step), len) };
    let step = match (&lowered.steps[..], lowered.result) {
        ([], Reg::F32(o)) => {
            let x = operand!(o);
            vectorize(EachRow {
                rows,
                make: |r| {
                    let (src, stride) = x.strided(r);
                    Map { src, off: 0, stride, dst: dst(r), f: |v: f32| v }
                },
            });
            return true;
        }
        ([step], Reg::Output) => step,
        _ => return false,
    };
    match *step {
        Step::Unary { f, a, to_bool: false, .. } => {
            let x = operand!(a);
            f32_unary!(f, g => vectorize(EachRow { rows, make: |r| {
                let (src, stride) = x.strided(r);
                Map { src, off: 0, stride, dst: dst(r), f: g }
            } }), return false)
        }
        Step::AffineUnary { f, a, affine, .. } => {
            let x = operand!(a);
            let map = |r: usize| {
                let (src, stride) = x.strided(r);
                (src, stride, dst(r))
            };
            f32_unary!(f, g => match affine {
                Affine { scale: Some(s), shift: Some(t) } => vectorize(EachRow { rows, make: |r| {
                    let (src, stride, dst) = map(r);
                    Map { src, off: 0, stride, dst, f: move |v: f32| g(v * s + t) }
                } }),
                Affine { scale: Some(s), shift: None } => vectorize(EachRow { rows, make: |r| {
                    let (src, stride, dst) = map(r);
                    Map { src, off: 0, stride, dst, f: move |v: f32| g(v * s) }
                } }),
                Affine { scale: None, shift: Some(t) } => vectorize(EachRow { rows, make: |r| {
                    let (src, stride, dst) = map(r);
                    Map { src, off: 0, stride, dst, f: move |v: f32| g(v + t) }
                } }),
                Affine { scale: None, shift: None } => vectorize(EachRow { rows, make: |r| {
                    let (src, stride, dst) = map(r);
                    Map { src, off: 0, stride, dst, f: g }
                } }),
            }, return false)
        }
        Step::Binary { f, a, b, to_bool: false, .. } => {
            let (x, y) = (operand!(a), operand!(b));
            float_binary_fn!(f32, f, g => vectorize(EachRow { rows, make: |r| {
                let ((sa, ka), (sb, kb)) = (x.strided(r), y.strided(r));
                Zip { a: sa, oa: 0, sa: ka, b: sb, ob: 0, sb: kb, dst: dst(r), f: g }
            } }), return false)
        }
        Step::MulThen { op, a, b, c, .. } => {
            let (a, b, c) = (operand!(a), operand!(b), operand!(c));
            vectorize(EachRow {
                rows,
                make: |r| MulThenLoop { op, a: a.row(r), b: b.row(r), c: c.row(r), dst: dst(r) },
            })
        }
        Step::Sum { ref terms, .. } | Step::SumChain { ref terms, .. } => {
            let (Some(&t0), Some(&t1), Some(&t2)) = (terms.first(), terms.get(1), terms.get(2)) else {
                return false;
            };
            let fourth = match terms.get(3) {
                Some(&t) => Some(run!(t)),
                None => None,
            };
            let [(a, ka), (b, kb), (c, kc)] = [run!(t0), run!(t1), run!(t2)];
            let steps = [ka, kb, kc, fourth.map_or(0, |f| f.1)];
            let terms = SumRuns { three: [a, b, c], fourth: fourth.map(|f| f.0) };
            let row_terms = |r: usize| terms.row(r, steps);
            match step {
                Step::SumChain { links, .. } => {
                    let Some(l) = links.first() else { return false };
                    let (s, k) = run!(l.x);
                    let first = (*l, s, k);
                    let second = match links.get(1) {
                        Some(l) => {
                            let (s, k) = run!(l.x);
                            Some((*l, s, k))
                        }
                        None => None,
                    };
                    fn moved((l, s, k): (Link, &[f32], usize), r: usize) -> (Link, &[f32]) {
                        (l, s.get(r * k..).unwrap_or(&[]))
                    }
                    vectorize(EachRow {
                        rows,
                        make: |r| SumChainLoop {
                            terms: row_terms(r),
                            first: moved(first, r),
                            second: second.map(|x| moved(x, r)),
                            dst: dst(r),
                        },
                    })
                }
                _ => vectorize(EachRow { rows, make: |r| SumLoop { terms: row_terms(r), dst: dst(r) } }),
            }
        }
        _ => return false,
    }
    true
}

/// Evaluate the lowered program on the chunk `at` into `out`.
fn eval_chunk(
    lowered: &Lowered,
    sources: &[AnySource<'_>],
    at: Span<'_>,
    scratch: &mut Scratch,
    mut out: OutChunk<'_>,
) -> Result<()> {
    let len = at.1;
    let parts = lowered.steps.len().max(1);
    for (k, step) in lowered.steps.iter().enumerate() {
        let (dst, is_bool) = step.dst();
        // The destination buffer is taken out of the scratch while the step
        // runs, so that the operands can be borrowed from the rest.
        let (mut own_f, mut own_b) = (Lines::default(), Vec::new());
        if let Dst::Buf(b) = dst {
            if is_bool {
                own_b = std::mem::take(&mut scratch.bools[b]);
            } else {
                own_f = std::mem::take(&mut scratch.f32s[b]);
            }
        }
        let result = {
            let (fd, bd): (&mut [f32], &mut [bool]) = match (dst, &mut out) {
                (Dst::Out, OutChunk::F32(o)) => (&mut o[..], &mut []),
                (Dst::Out, OutChunk::Bool(o)) => (&mut [], &mut o[..]),
                (Dst::Buf(_), _) if is_bool => (&mut [], &mut own_b[..len]),
                (Dst::Buf(_), _) => (&mut own_f[..len], &mut []),
            };
            exec(step, &scratch.f32s, &scratch.bools, sources, at, fd, bd)
        };
        if let Dst::Buf(b) = dst {
            if is_bool {
                scratch.bools[b] = own_b;
            } else {
                scratch.f32s[b] = own_f;
            }
        }
        result?;
        scratch.ahead.step(k, parts);
    }
    match (lowered.result, out) {
        (Reg::Output, _) => {}
        (Reg::F32(x), OutChunk::F32(o)) => match f32_chunk(x, &scratch.f32s, sources, at) {
            Chunk::Run(s) => o.copy_from_slice(s),
            Chunk::Splat(v) => o.fill(v),
        },
        (Reg::Bool(x), OutChunk::Bool(o)) => match bool_chunk(x, &scratch.bools, sources, at) {
            Chunk::Run(s) => o.copy_from_slice(s),
            Chunk::Splat(v) => o.fill(v),
        },
        _ => bail!(invalid, "internal: fused result of the wrong kind for its output"),
    }
    Ok(())
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
    /// Cache lines in all regions, how many have been requested, and the
    /// next one: `(region, line)`. Each step requests its share, so a chunk
    /// costs its lines plus its steps, however many inputs the program has.
    total_lines: usize,
    issued: usize,
    next: (usize, usize),
}

impl Lookahead {
    fn new() -> Lookahead {
        Lookahead { regions: Vec::new(), total_lines: 0, issued: 0, next: (0, 0) }
    }

    /// Point at the `ahead` elements after the chunk `at` in every input
    /// that asks for it, and at `out`.
    fn aim<T>(&mut self, sources: &[AnySource<'_>], at: Span<'_>, ahead: usize, out: &[T]) {
        fn region<T>(s: &[T]) -> (*const i8, usize) {
            (s.as_ptr().cast::<i8>(), std::mem::size_of_val(s))
        }
        self.regions.clear();
        for (k, src) in sources.iter().enumerate() {
            match src {
                AnySource::F32(Source::Slice(s)) if ahead > 0 => {
                    self.regions.push(region(s.chunk(at.0[k].wrapping_add(at.1), ahead)))
                }
                AnySource::Bool(Source::Slice(s)) if ahead > 0 => {
                    self.regions.push(region(s.chunk(at.0[k].wrapping_add(at.1), ahead)))
                }
                _ => {}
            }
        }
        self.regions.push(region(out));
        self.total_lines = self.regions.iter().map(|r| r.1.div_ceil(64)).sum();
        self.issued = 0;
        self.next = (0, 0);
    }

    /// Prefetch nothing for the next chunk.
    fn idle(&mut self) {
        self.total_lines = 0;
    }

    /// Prefetch part `k` of `parts` of the regions' lines (in order).
    fn step(&mut self, k: usize, parts: usize) {
        let target = self.total_lines * (k + 1) / parts;
        while self.issued < target {
            let (r, line) = self.next;
            let Some(&(base, bytes)) = self.regions.get(r) else { return };
            if line >= bytes.div_ceil(64) {
                self.next = (r + 1, 0);
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch is a hint that never faults; the address
            // is within the region anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(base.wrapping_add(line * 64))
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = base;
            self.next.1 += 1;
            self.issued += 1;
        }
    }
}

/// How [`eval_range`] writes each chunk.
#[derive(Clone, Copy, PartialEq)]
enum Write {
    /// The last step computes straight into the output.
    Direct,
    /// Through a staging buffer, with non-temporal stores: for an output too
    /// large to stay in cache, this skips reading every output line before
    /// overwriting it.
    Stream,
    /// Through a staging buffer: the output is one of the inputs (in place).
    Staged,
}

/// The output range of one task: `len` elements from `ptr`, written a chunk
/// at a time (a raw pointer, as it may also be an input, see [`Run`]).
struct OutRange {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks share an `OutRange` of the whole output only to take
// disjoint parts of it (`part`).
unsafe impl Sync for OutRange {}

impl OutRange {
    /// Elements `[start, start + len)` (clipped to the range).
    fn part(&self, start: usize, len: usize) -> OutRange {
        let start = start.min(self.len);
        // SAFETY: `start` is within the range.
        OutRange { ptr: unsafe { self.ptr.add(start) }, len: len.min(self.len - start) }
    }
}

/// Evaluate the program over `[start, start + out.len)` into `out`, chunk by chunk.
fn eval_range(p: &Prepared<'_>, start: usize, out: OutRange, scratch: &mut Scratch, write: Write) -> Result<()> {
    let sources = &p.sources;
    let staged = write != Write::Direct;
    let mut stage = if staged { vec![0.0; CHUNK] } else { Vec::new() };
    // Tiles only where each step computes straight into the output.
    let tiles: &[bool] = if write == Write::Direct { &p.tiled } else { &[] };
    let row_len = p.geometry.dims.last().copied().unwrap_or(1);
    p.geometry.walk(start, out.len, tiles, |piece| {
        let Piece { starts, offset: done, len, rows, lowering } = piece;
        let lowered = &p.lowerings[lowering];
        if rows > 1 {
            let tile = Tile { rows, steps: &p.geometry.row_steps, out_step: row_len };
            // SAFETY: the walk keeps a tile within the task's output range.
            let first = unsafe { out.ptr.add(done) };
            if !exec_tile(lowered, sources, (starts, len), &tile, first) {
                bail!(invalid, "internal: a fused tile whose operands do not cover it");
            }
            return Ok(());
        }
        // SAFETY (both slices below): within the task's output range, which
        // this task alone writes; no view of these elements is alive (an
        // input view of a chunk ends with the chunk's evaluation).
        let chunk = |at: usize, len: usize| unsafe { std::slice::from_raw_parts_mut(out.ptr.add(done + at), len) };
        // Prefetch the next chunk's inputs and output, except when streaming:
        // then the output lines are never read, and the inputs (long runs on
        // huge pages) are fetched in time by the hardware prefetcher; asking
        // for them too only stalled on outstanding misses (B2: 15.3 -> 14.7
        // ms on one thread). Nor in row mode: views of one buffer overlap
        // (B7's five are three rows, mostly in cache), a pad's edge makes
        // one-element chunks whose single step would wait on every request,
        // and B7 ran 0.75 ms per step without prefetching against 1.0 with.
        let ahead = if write == Write::Stream || p.geometry.row_mode { 0 } else { CHUNK.min(out.len - done - len) };
        let out_next = if write == Write::Direct { ahead } else { 0 };
        if ahead + out_next > 0 {
            scratch.ahead.aim(sources, (starts, len), ahead, &*chunk(len, out_next));
        } else {
            scratch.ahead.idle();
        }
        let at = (starts, len);
        if staged {
            eval_chunk(lowered, sources, at, scratch, OutChunk::F32(&mut stage[..len]))?;
            if write == Write::Stream {
                stream_copy(&stage[..len], chunk(0, len));
            } else {
                chunk(0, len).copy_from_slice(&stage[..len]);
            }
            Ok(())
        } else {
            eval_chunk(lowered, sources, at, scratch, OutChunk::F32(chunk(0, len)))
        }
    })?;
    if write == Write::Stream {
        stream_fence();
    }
    Ok(())
}

/// Run a plain elementwise program writing its result into input `pos`,
/// an f32 buffer of exactly the output's shape that the caller owns alone
/// (see `in_place::try_in_place`). `None` when the program cannot (a
/// reduction, a bool result) or fails: the caller then runs it normally and
/// reports any error.
pub(crate) fn fused_elementwise_in_place(program: &FusedProgram, inputs: &[&Value], pos: usize) -> Option<()> {
    if program.reduce.is_some() {
        return None;
    }
    // A padded program reads its inputs at shifted positions: a chunk
    // written early could be read again later.
    if program.has_pads() {
        return None;
    }
    let mut p = prepare(program, inputs).ok()?;
    let n = p.shape.numel_known();
    let x = inputs.get(pos)?;
    if p.regs.get(program.output)?.dtype != DType::F32 || x.shape() != &p.shape || x.numel() != n {
        return None;
    }
    // The donated input is read and written through the same pointer (a
    // contiguous input of the output's shape: the lowering is unchanged).
    let ptr = x.storage.host().raw_ptr() as *mut f32;
    p.sources[pos] = AnySource::F32(Source::Slice(Run { ptr, len: n, _input: std::marker::PhantomData }));
    let all = OutRange { ptr, len: n };
    let p = &p;
    (0..n.div_ceil(TASK))
        .into_par_iter()
        .try_for_each(|t| {
            let out = all.part(t * TASK, TASK);
            eval_range(p, t * TASK, out, &mut Scratch::new(&p.lowerings), Write::Staged)
        })
        .ok()
}

/// Outputs at least this large are written with non-temporal stores.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// `dst.copy_from_slice(src)` with non-temporal stores where aligned: whole
/// 64-byte lines at a time with AVX-512, else 16 bytes at a time.
fn stream_copy(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        if super::simd::has_avx512() && (dst.as_ptr() as usize).is_multiple_of(64) {
            // SAFETY: the CPU has AVX-512 (checked just above).
            i = unsafe { stream_lines_avx512(&src[..n], &mut dst[..n]) };
        } else if (dst.as_ptr() as usize).is_multiple_of(16) {
            while i + 4 <= n {
                // SAFETY: `i + 4 <= n` keeps both accesses in bounds, and
                // `dst + i` is 16-byte aligned (aligned base, i a multiple of
                // 4); SSE is part of x86_64.
                unsafe { _mm_stream_ps(dst.as_mut_ptr().add(i), _mm_loadu_ps(src.as_ptr().add(i))) };
                i += 4;
            }
        }
    }
    dst[i..n].copy_from_slice(&src[i..n]);
}

/// Stream whole 16-element lines of `src` into the 64-byte aligned `dst`;
/// returns how many elements were written.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_lines_avx512(src: &[f32], dst: &mut [f32]) -> usize {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_stream_ps};
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n` keeps both accesses in bounds; `dst + i` is
        // 64-byte aligned (aligned base, i a multiple of 16).
        unsafe { _mm512_stream_ps(dst.as_mut_ptr().add(i), _mm512_loadu_ps(src.as_ptr().add(i))) };
        i += 16;
    }
    i
}

/// Order non-temporal stores before whatever publishes the result.
fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a store fence has no operands; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Most pads one program may hold: it is lowered once per subset of them.
const MAX_PADS: usize = 4;

/// A call made ready: the elementwise shape, the registers, the inputs, how
/// the output is chunked, and the program lowered once per combination of
/// its pads being inside or outside their unpadded regions (just once for
/// a program without pads).
struct Prepared<'a> {
    shape: Shape,
    regs: Vec<Meta>,
    sources: Vec<AnySource<'a>>,
    geometry: Geometry,
    lowerings: Vec<Lowered>,
    /// Per lowering: whether [`exec_tile`] runs it.
    tiled: Vec<bool>,
}

fn prepare<'a>(program: &FusedProgram, inputs: &[&'a Value]) -> Result<Prepared<'a>> {
    let metas: Vec<Meta> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
    let shape = program.shape(&metas)?;
    let regs = program.registers(&metas)?;
    let pads: Vec<usize> =
        (0..program.instrs.len()).filter(|&i| matches!(program.instrs[i], Instr::Pad { .. })).collect();
    if pads.len() > MAX_PADS {
        bail!(invalid, "a fused program pads {} registers, at most {MAX_PADS}", pads.len());
    }
    let spaces = if pads.is_empty() { vec![None; program.instrs.len()] } else { program.spaces()? };
    // The index space each input is read in, and each pad's region.
    let mut input_space: Vec<Option<Option<usize>>> = vec![None; inputs.len()];
    for (i, ins) in program.instrs.iter().enumerate() {
        if let Instr::Input(k) = ins {
            match input_space.get_mut(*k) {
                Some(Some(sp)) if *sp != spaces[i] => {
                    bail!(invalid, "fused input {k} is read both inside and outside a padded region")
                }
                Some(slot) => *slot = Some(spaces[i]),
                None => {}
            }
        }
    }
    let rank = shape.rank();
    let mut boxes = Vec::with_capacity(pads.len());
    let mut cuts: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
    for &p in &pads {
        let Instr::Pad { operand, pads: widths, .. } = &program.instrs[p] else { continue };
        if regs[p].shape != shape {
            bail!(shape, "fused pad {p} gives {}, not the program's shape {shape}", regs[p].shape);
        }
        let lo: smallvec::SmallVec<[usize; 4]> = widths.iter().map(|w| w.0).collect();
        let end: smallvec::SmallVec<[usize; 4]> =
            lo.iter().zip(regs[*operand].shape.iter()).map(|(l, d)| l + d).collect();
        cuts.extend([lo[rank - 1], end[rank - 1]]);
        boxes.push(PadBox { lo, end });
    }
    let row_len = shape.last().copied().unwrap_or(1);
    cuts.retain(|c| *c > 0 && *c < row_len);
    cuts.sort_unstable();
    cuts.dedup();
    let zeros = vec![0; rank];
    let mut sources = Vec::with_capacity(inputs.len());
    let mut addrs = Vec::with_capacity(inputs.len());
    let mut row_mode = !pads.is_empty();
    for (k, v) in inputs.iter().enumerate() {
        let (space, lo) = match input_space[k].flatten().map(|p| &program.instrs[p]) {
            Some(Instr::Pad { operand, pads: widths, .. }) => {
                (&regs[*operand].shape, widths.iter().map(|w| w.0).collect::<Vec<_>>())
            }
            _ => (&shape, zeros.clone()),
        };
        let (source, addr, mapped) = match v.dtype {
            DType::F32 => {
                let (s, a, m) = source::<f32>(v, space, &lo)?;
                (AnySource::F32(s), a, m)
            }
            DType::Bool => {
                let (s, a, m) = source::<bool>(v, space, &lo)?;
                (AnySource::Bool(s), a, m)
            }
            d => bail!(dtype, "fused programs read f32 or bool inputs, got {d}"),
        };
        row_mode |= mapped;
        sources.push(source);
        addrs.push(addr);
    }
    let specialized: Vec<std::borrow::Cow<'_, FusedProgram>> = if pads.is_empty() {
        vec![std::borrow::Cow::Borrowed(program)]
    } else {
        (0..1usize << pads.len())
            .map(|mask| {
                let inside = |i: usize| pads.iter().position(|&q| q == i).is_some_and(|b| mask & (1 << b) != 0);
                std::borrow::Cow::Owned(program.specialize(&regs, inside))
            })
            .collect()
    };
    let lowerings = specialized.iter().map(|p| lower(p, &regs, &sources)).collect::<Result<Vec<_>>>()?;
    // A lowering may run on across rows when every input its program still
    // reads (specializing turned the rest into literals) is laid out as the
    // output, or is one element.
    let plain = Addr::row_major(&shape, &zeros);
    let flat_input = |k: usize| {
        matches!(sources.get(k), Some(AnySource::F32(Source::Scalar(_)) | AnySource::Bool(Source::Scalar(_))))
            || addrs.get(k).is_some_and(|a| a.base == plain.base && a.strides == plain.strides)
    };
    let flat = specialized
        .iter()
        .map(|p| p.instrs.iter().all(|ins| !matches!(ins, Instr::Input(k) if !flat_input(*k))))
        .collect();
    let row_steps = addrs.iter().map(|a| a.strides.get(rank.wrapping_sub(2)).copied().unwrap_or(0) as usize).collect();
    let geometry =
        Geometry { dims: shape.iter().copied().collect(), row_mode, cuts, pads: boxes, addrs, flat, row_steps };
    let tiled = lowerings.iter().map(tileable).collect();
    Ok(Prepared { shape, regs, sources, geometry, lowerings, tiled })
}

pub(crate) fn fused_elementwise(program: &FusedProgram, inputs: &[&Value], out: &Meta) -> Result<Value> {
    let p = prepare(program, inputs)?;
    let (shape, regs) = (&p.shape, &p.regs);
    let n = shape.numel_known();
    let p = &p;
    let Some(reduce) = &program.reduce else {
        // Plain elementwise: parallel tasks of whole chunks.
        return match regs[program.output].dtype {
            DType::Bool => {
                let mut buf = HostBuffer::for_elements::<bool>(n)?;
                let out_s = buf.as_mut_slice::<bool>();
                let task = |t: usize, d: &mut [bool]| -> Result<()> {
                    let mut scratch = Scratch::new(&p.lowerings);
                    p.geometry.walk(t * TASK, d.len(), &[], |piece| {
                        let Piece { starts, offset: done, len, lowering, .. } = piece;
                        let ahead = if p.geometry.row_mode { 0 } else { CHUNK.min(d.len() - done - len) };
                        scratch.ahead.aim(&p.sources, (starts, len), ahead, &d[done + len..done + len + ahead]);
                        eval_chunk(
                            &p.lowerings[lowering],
                            &p.sources,
                            (starts, len),
                            &mut scratch,
                            OutChunk::Bool(&mut d[done..done + len]),
                        )
                    })?;
                    Ok(())
                };
                out_s.par_chunks_mut(TASK).enumerate().try_for_each(|(t, d)| task(t, d))?;
                Ok(Value::from_buffer(DType::Bool, shape.clone(), buf))
            }
            _ => {
                let write =
                    if n * std::mem::size_of::<f32>() >= STREAM_MIN_BYTES { Write::Stream } else { Write::Direct };
                let mut buf = HostBuffer::for_elements::<f32>(n)?;
                buf.as_mut_slice::<f32>().par_chunks_mut(TASK).enumerate().try_for_each(|(t, d)| {
                    let out = OutRange { ptr: d.as_mut_ptr(), len: d.len() };
                    eval_range(p, t * TASK, out, &mut Scratch::new(&p.lowerings), write)
                })?;
                Ok(Value::from_buffer(DType::F32, shape.clone(), buf))
            }
        };
    };
    // A trailing reduction: rows of length r, each folded exactly as the
    // plain reduction kernel folds it. The unfused ops would hold the
    // elementwise result in memory: refuse what they would refuse, so that
    // fusion never turns an out-of-memory error into hours of arithmetic
    // over a broadcast of absurd size.
    crate::tensor::storage::check_request(n.saturating_mul(std::mem::size_of::<f32>()))?;
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
    // A row is computed and folded a block at a time, as `fold_row` folds
    // it (blocks of BLOCK, then their partial results), so that a row of a
    // broadcast input needs memory for one block, not for the row.
    let block = super::reduce::BLOCK;
    let fold_block = |start: usize, len: usize, scratch: &mut Scratch, tmp: &mut Vec<f32>| -> Result<f32> {
        tmp.resize(len, 0.0);
        let out = OutRange { ptr: tmp.as_mut_ptr(), len };
        eval_range(p, start, out, scratch, Write::Direct)?;
        Ok(fold(tmp))
    };
    let row_value = |row: usize, scratch: &mut Scratch, tmp: &mut Vec<f32>| -> Result<f32> {
        if r <= block {
            return Ok(finish(fold_block(row * r, r, scratch, tmp)?));
        }
        let mut partials = crate::tensor::storage::try_vec_with_capacity(r.div_ceil(block))?;
        for b in 0..r.div_ceil(block) {
            partials.push(fold_block(row * r + b * block, block.min(r - b * block), scratch, tmp)?);
        }
        Ok(finish(fold(&partials)))
    };
    if rows == 1 && r > 2 * block {
        // One long row: its blocks in parallel, folded in order (as fold_row_parallel).
        let mut partials = crate::tensor::storage::try_vec(0.0f32, r.div_ceil(block))?;
        partials.par_iter_mut().enumerate().try_for_each(|(b, slot)| -> Result<()> {
            *slot = fold_block(b * block, block.min(r - b * block), &mut Scratch::new(&p.lowerings), &mut Vec::new())?;
            Ok(())
        })?;
        outs[0] = finish(fold(&partials));
    } else {
        let per_task = (TASK / r.max(1)).max(1);
        outs.par_chunks_mut(per_task).enumerate().try_for_each(|(t, o)| -> Result<()> {
            let (mut scratch, mut tmp) = (Scratch::new(&p.lowerings), Vec::new());
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
    let bias_c = super::copy::materialize(bias)?;
    let bias_s = bias_c.contiguous_slice::<f32>().unwrap_or(&[]);
    if bias_s.len() != n && bias_s.len() != 1 {
        bail!(shape, "FusedMatMul bias of {} elements for rows of {n}", bias_s.len());
    }
    let storage = std::sync::Arc::try_unwrap(y.storage)
        .map_err(|_| crate::error::Error::invalid("FusedMatMul output is shared"))?;
    let mut buf = storage.into_host();
    let data = buf.as_mut_slice::<f32>();
    let rows_per_task = (TASK / n.max(1)).max(1);
    data.par_chunks_mut(rows_per_task * n.max(1)).try_for_each(|chunk| bias_activation(chunk, bias_s, act))?;
    Ok(Value::from_buffer(DType::F32, out.shape.clone(), buf))
}

/// `rows` (a whole number of rows as long as `bias`, or any length for a
/// one-element bias) become `activation(row + bias)`: the epilogue of the
/// fused matmul and convolution, bit for bit what the separate add and
/// activation compute.
pub(crate) fn bias_activation(rows: &mut [f32], bias: &[f32], act: Option<UnaryOp>) -> Result<()> {
    let (n, stride) = if bias.len() == 1 { (rows.len().max(1), 0) } else { (bias.len().max(1), 1) };
    for row in rows.chunks_mut(n) {
        float_binary_fn!(f32, crate::op::elementwise::BinaryOp::Add, g => vectorize(ZipInPlace { x: &mut *row, y: bias, stride, f: g }), ());
        if let Some(f) = act {
            f32_unary!(f, g => vectorize(Update { x: &mut *row, f: g }), bail!(dtype, "fused activation {}", f.name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Tensor;
    use crate::tensor::Scalar;

    /// `tanh(x * 1.5 + 0.5) * sigmoid(x) - x * x` (the B2 workload).
    fn b2_program() -> FusedProgram {
        let k = |v: f32| Instr::Scalar(v.into(), DType::F32);
        FusedProgram {
            instrs: vec![
                Instr::Input(0),
                k(1.5),
                Instr::Binary(BinaryOp::Mul, 0, 1),
                k(0.5),
                Instr::Binary(BinaryOp::Add, 2, 3),
                Instr::Unary(UnaryOp::Tanh, 4),
                Instr::Unary(UnaryOp::Sigmoid, 0),
                Instr::Binary(BinaryOp::Mul, 5, 6),
                Instr::Binary(BinaryOp::Mul, 0, 0),
                Instr::Binary(BinaryOp::Sub, 7, 8),
            ],
            output: 9,
            reduce: None,
        }
    }

    #[test]
    fn b2_lowers_to_three_passes_over_two_buffers() -> Result<()> {
        let program = b2_program();
        let x = Tensor::randn([64, 64], 1)?;
        let v = x.value()?;
        let metas = [Meta::new(DType::F32, v.shape().clone())];
        let regs = program.registers(&metas)?;
        let sources = [AnySource::F32(source::<f32>(v, v.shape(), &[])?.0)];
        let lowered = lower(&program, &regs, &sources)?;
        let kinds: Vec<&str> = lowered
            .steps
            .iter()
            .map(|s| match s {
                Step::AffineUnary { affine: Affine { scale: Some(_), shift: Some(_) }, .. } => "affine",
                Step::Unary { .. } => "unary",
                Step::Binary { .. } => "binary",
                Step::MulThen { op: MulThen::SubFrom, .. } => "c - a * b",
                Step::MulUnary { f: UnaryOp::Sigmoid, unary_first: false, .. } => "a * sigmoid(b)",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["affine", "a * sigmoid(b)", "c - a * b"]);
        assert_eq!(lowered.f32_bufs, 2);
        assert!(matches!(lowered.result, Reg::Output));
        Ok(())
    }

    /// Every kind of link, after sums of three and four runs, one and two
    /// links deep: each lowers to one pass that gives the unfused
    /// arithmetic's values in the program's order, with infinities, NaN
    /// and signed zeros among the inputs, across several chunks and a
    /// ragged tail.
    #[test]
    fn sums_with_links_run_in_one_pass_with_the_programs_values() -> Result<()> {
        let kinds = [MulThen::Add, MulThen::Sub, MulThen::AddTo, MulThen::SubFrom];
        let n = 2 * CHUNK + 37;
        let special = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 0.0, 1e30, -1e-30];
        let inputs: Vec<Tensor> = (0..6)
            .map(|k| {
                let r = Tensor::randn([n], 40 + k as u64)?.to_vec::<f32>()?;
                let v: Vec<f32> =
                    r.iter().enumerate().map(|(i, &x)| if i % 97 == k * 5 { special[i % 7] } else { x }).collect();
                Tensor::from_vec(v, [n])
            })
            .collect::<Result<_>>()?;
        let data: Vec<Vec<f32>> = inputs.iter().map(|t| t.to_vec::<f32>()).collect::<Result<_>>()?;
        let values: Vec<Value> = inputs.iter().map(|t| t.value().cloned()).collect::<Result<_>>()?;
        let refs: Vec<&Value> = values.iter().collect();
        // `acc` then one link (`x` the input `x_in`, constant `k`), as
        // instructions appended to `instrs`, and the scalar arithmetic.
        let link = |instrs: &mut Vec<Instr>, acc: usize, x_in: usize, op: MulThen, scaled: bool, k: f32| -> usize {
            instrs.push(Instr::Input(x_in));
            let x = instrs.len() - 1;
            instrs.push(Instr::Scalar(k.into(), DType::F32));
            let kr = instrs.len() - 1;
            // The product's factors in both orders, one per kind.
            let product = if scaled { (acc, kr) } else { (kr, x) };
            instrs.push(Instr::Binary(BinaryOp::Mul, product.0, product.1));
            let p = instrs.len() - 1;
            let c = if scaled { x } else { acc };
            instrs.push(match op {
                MulThen::Add => Instr::Binary(BinaryOp::Add, p, c),
                MulThen::Sub => Instr::Binary(BinaryOp::Sub, p, c),
                MulThen::AddTo => Instr::Binary(BinaryOp::Add, c, p),
                MulThen::SubFrom => Instr::Binary(BinaryOp::Sub, c, p),
            });
            instrs.len() - 1
        };
        let apply = |acc: f32, x: f32, op: MulThen, scaled: bool, k: f32| -> f32 {
            let (p, c) = if scaled { (acc * k, x) } else { (k * x, acc) };
            match op {
                MulThen::Add => p + c,
                MulThen::Sub => p - c,
                MulThen::AddTo => c + p,
                MulThen::SubFrom => c - p,
            }
        };
        let mut cases = 0;
        for terms in [3usize, 4] {
            for (i1, &op1) in kinds.iter().enumerate() {
                for scaled1 in [false, true] {
                    for second in [None, Some((kinds[(i1 + 1) % 4], !scaled1)), Some((kinds[3 - i1], scaled1))] {
                        let mut instrs: Vec<Instr> = (0..terms).map(Instr::Input).collect();
                        let mut acc = 0;
                        for t in 1..terms {
                            instrs.push(Instr::Binary(BinaryOp::Add, acc, t));
                            acc = instrs.len() - 1;
                        }
                        acc = link(&mut instrs, acc, terms, op1, scaled1, -2.5);
                        if let Some((op2, scaled2)) = second {
                            acc = link(&mut instrs, acc, terms + 1, op2, scaled2, 0.2);
                        }
                        let program = FusedProgram { instrs, output: acc, reduce: None };
                        let refs = &refs[..terms + 1 + usize::from(second.is_some())];
                        let p = prepare(&program, refs)?;
                        let steps = &p.lowerings[0].steps;
                        assert!(
                            matches!(&steps[..], [Step::SumChain { links, .. }] if links.len() == 1 + usize::from(second.is_some())),
                            "{terms} terms, {op1:?} {scaled1} then {second:?}: {steps:?}"
                        );
                        let metas: Vec<Meta> = refs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
                        let out = fused_elementwise(&program, refs, &program.infer(&metas)?[0])?;
                        let got = out.contiguous_slice::<f32>().unwrap_or(&[]);
                        assert_eq!(got.len(), n);
                        for i in 0..n {
                            let d = |k: usize| data[k][i];
                            let mut want = d(0) + d(1) + d(2);
                            if terms == 4 {
                                want += d(3);
                            }
                            want = apply(want, d(terms), op1, scaled1, -2.5);
                            if let Some((op2, scaled2)) = second {
                                want = apply(want, d(terms + 1), op2, scaled2, 0.2);
                            }
                            // NaN payloads may follow either operand of a
                            // commutative op; every other value bitwise.
                            assert!(
                                got[i].to_bits() == want.to_bits() || (got[i].is_nan() && want.is_nan()),
                                "{terms} terms, {op1:?} {scaled1} then {second:?}, element {i}: {} != {want}",
                                got[i]
                            );
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 48);
        Ok(())
    }

    /// A sum whose value is read again later keeps its own pass: merging
    /// it into its link would lose the value.
    #[test]
    fn a_sum_read_again_is_not_merged_into_its_link() -> Result<()> {
        let k = |v: f32| Instr::Scalar(v.into(), DType::F32);
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(0),
                Instr::Input(1),
                Instr::Binary(BinaryOp::Add, 0, 1),
                Instr::Input(2),
                Instr::Binary(BinaryOp::Add, 2, 3),
                k(3.0),
                Instr::Binary(BinaryOp::Mul, 4, 5),
                Instr::Binary(BinaryOp::Add, 6, 0),
                Instr::Binary(BinaryOp::Mul, 7, 4),
            ],
            output: 8,
            reduce: None,
        };
        let xs: Vec<Tensor> = (0..3).map(|s| Tensor::randn([300], 60 + s)).collect::<Result<_>>()?;
        let values: Vec<Value> = xs.iter().map(|t| t.value().cloned()).collect::<Result<_>>()?;
        let refs: Vec<&Value> = values.iter().collect();
        let p = prepare(&program, &refs)?;
        assert!(p.lowerings[0].steps.iter().all(|s| !matches!(s, Step::SumChain { .. })), "{:?}", p.lowerings[0].steps);
        let metas: Vec<Meta> = values.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
        let out = fused_elementwise(&program, &refs, &program.infer(&metas)?[0])?;
        let got = out.contiguous_slice::<f32>().unwrap_or(&[]);
        let d: Vec<Vec<f32>> = xs.iter().map(|t| t.to_vec::<f32>()).collect::<Result<_>>()?;
        for i in 0..300 {
            let s = d[0][i] + d[1][i] + d[2][i];
            assert_eq!(got[i].to_bits(), ((s * 3.0 + d[0][i]) * s).to_bits(), "element {i}");
        }
        Ok(())
    }

    /// The in-place kernel itself (the plan-level test cannot tell it from
    /// the fallback): the B2 program, which reads its input three times,
    /// written over that input across several tasks, gives the bits of the
    /// normal kernel.
    #[test]
    fn in_place_run_overwrites_its_input_with_the_normal_result() -> Result<()> {
        let program = b2_program();
        let shape = [600, 500]; // more than two tasks of TASK elements
        const _: () = assert!(600 * 500 > 2 * TASK);
        let x = Tensor::randn(shape, 3)?;
        let meta = Meta::new(DType::F32, x.shape().clone());
        let want = fused_elementwise(&program, &[x.value()?], &meta)?;
        let donated = Tensor::randn(shape, 3)?;
        let v = donated.value()?;
        assert_eq!(fused_elementwise_in_place(&program, &[v], 0), Some(()));
        let got: Vec<u32> = v.contiguous_slice::<f32>().unwrap_or(&[]).iter().map(|f| f.to_bits()).collect();
        let want: Vec<u32> = want.contiguous_slice::<f32>().unwrap_or(&[]).iter().map(|f| f.to_bits()).collect();
        assert_eq!(got.len(), 600 * 500);
        assert!(got == want, "the in-place result differs from the normal kernel's");
        Ok(())
    }

    /// A no-op cast names its operand's buffer: the buffer must live until
    /// the last read of either name, and go back to the pool once.
    #[test]
    fn a_no_op_cast_shares_its_operands_buffer_safely() -> Result<()> {
        // r1 = exp(x); r2 = cast(r1); r3 = r1 + r2; r4 = sin(r3); r5 = cos(r3); out = r4 - r5
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(0),
                Instr::Unary(UnaryOp::Exp, 0),
                Instr::Cast(DType::F32, 1),
                Instr::Binary(BinaryOp::Add, 1, 2),
                Instr::Unary(UnaryOp::Sin, 3),
                Instr::Unary(UnaryOp::Cos, 3),
                Instr::Binary(BinaryOp::Sub, 4, 5),
            ],
            output: 6,
            reduce: None,
        };
        let data: Vec<f32> = (0..3000).map(|i| (i as f32) * 0.001 - 1.5).collect();
        let x = Tensor::from_slice(&data, [data.len()])?;
        let xv = x.value()?;
        let meta = Meta::new(DType::F32, xv.shape().clone());
        let out = fused_elementwise(&program, &[xv], &meta)?;
        let got = out.contiguous_slice::<f32>().unwrap_or(&[]).to_vec();
        assert_eq!(got.len(), data.len());
        for (v, g) in data.iter().zip(&got) {
            let t = 2.0 * (*v as f64).exp();
            let want = t.sin() - t.cos();
            assert!((*g as f64 - want).abs() < 1e-5, "at {v}: {g} vs {want}");
        }
        // The same with the cast read last: its operand must stay alive.
        let mut late = program.clone();
        late.instrs[4] = Instr::Unary(UnaryOp::Sin, 1);
        late.instrs[5] = Instr::Unary(UnaryOp::Cos, 2);
        let out = fused_elementwise(&late, &[xv], &meta)?;
        let got = out.contiguous_slice::<f32>().unwrap_or(&[]).to_vec();
        for (v, g) in data.iter().zip(&got) {
            let e = (*v as f64).exp();
            assert!((*g as f64 - (e.sin() - e.cos())).abs() < 1e-5, "at {v}: {g}");
        }
        Ok(())
    }

    /// B7's step with its pad: a four-term sum and two products in the
    /// interior; the edges are the update alone, the laplacian gone.
    #[test]
    fn a_padded_stencil_lowers_to_three_passes_inside_and_one_outside() -> Result<()> {
        let k = |v: f32| Instr::Scalar(v.into(), DType::F32);
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(1),
                Instr::Input(2),
                Instr::Binary(BinaryOp::Add, 0, 1),
                Instr::Input(3),
                Instr::Binary(BinaryOp::Add, 2, 3),
                Instr::Input(4),
                Instr::Binary(BinaryOp::Add, 4, 5),
                Instr::Input(5),
                k(4.0),
                Instr::Binary(BinaryOp::Mul, 7, 8),
                Instr::Binary(BinaryOp::Sub, 6, 9),
                Instr::Pad { operand: 10, pads: vec![(1, 1), (1, 1)], value: Scalar::F64(0.0) },
                k(0.2),
                Instr::Binary(BinaryOp::Mul, 11, 12),
                Instr::Input(0),
                Instr::Binary(BinaryOp::Add, 14, 13),
            ],
            output: 15,
            reduce: None,
        };
        let u = Tensor::randn([70, 80], 5)?;
        let uv = u.value()?;
        let views: Vec<Tensor> = [(0, 1), (2, 1), (1, 0), (1, 2), (1, 1)]
            .iter()
            .map(|&(i, j)| crate::ops::slice(&u, &[i, j], &[68, 78]))
            .collect::<Result<_>>()?;
        let mut inputs = vec![uv];
        for v in &views {
            inputs.push(v.value()?);
        }
        let p = prepare(&program, &inputs)?;
        assert!(p.geometry.row_mode);
        assert_eq!(&p.geometry.cuts[..], &[1, 79]);
        // Outside, only `u` is read (laid out as the output): its chunks run
        // on across rows; inside, the views are read, row by row.
        assert_eq!(p.geometry.flat, [true, false]);
        // Both lowerings are one step into the output: whole rows are
        // computed a tile at a time.
        assert_eq!(p.tiled, [true, true]);
        assert_eq!(p.geometry.row_steps, [80, 80, 80, 80, 80, 80]);
        let kinds = |l: &Lowered| -> Vec<&str> {
            l.steps
                .iter()
                .map(|s| match s {
                    Step::Sum { terms, .. } if terms.len() == 4 => "sum of 4",
                    Step::SumChain { terms, links, .. }
                        if terms.len() == 4
                            && links[..]
                                == [
                                    Link { op: MulThen::SubFrom, scaled: false, x: links[0].x, k: 4.0 },
                                    Link { op: MulThen::AddTo, scaled: true, x: links[1].x, k: 0.2 },
                                ] =>
                    {
                        "sum of 4, c - a * 4, u + t * 0.2"
                    }
                    Step::MulThen { op: MulThen::SubFrom, .. } => "c - a * b",
                    Step::MulThen { op: MulThen::AddTo, .. } => "c + a * b",
                    Step::Binary { f: BinaryOp::Add, .. } => "add",
                    _ => "other",
                })
                .collect()
        };
        assert_eq!(kinds(&p.lowerings[0]), ["add"], "outside: u + 0 * 0.2, folded");
        assert_eq!(kinds(&p.lowerings[1]), ["sum of 4, c - a * 4, u + t * 0.2"], "inside: one pass");
        // The views are read in place: no gathers.
        assert!(p.lowerings.iter().all(|l| l.steps.iter().all(|s| !matches!(s, Step::GatherF32 { .. }))));
        let metas: Vec<Meta> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
        let out = fused_elementwise(&program, &inputs, &program.infer(&metas)?[0])?;
        let (x, o) = (uv.contiguous_slice::<f32>().unwrap_or(&[]), out.contiguous_slice::<f32>().unwrap_or(&[]));
        let at = |i: usize, j: usize| x[i * 80 + j];
        for (i, j) in [(0, 0), (0, 5), (1, 1), (5, 0), (5, 1), (5, 78), (5, 79), (68, 40), (69, 79)] {
            let want = if (1..69).contains(&i) && (1..79).contains(&j) {
                let lap = at(i - 1, j) + at(i + 1, j) + at(i, j - 1) + at(i, j + 1) - at(i, j) * 4.0;
                at(i, j) + lap * 0.2
            } else {
                at(i, j) + 0.0 * 0.2
            };
            assert_eq!(o[i * 80 + j].to_bits(), want.to_bits(), "at ({i}, {j})");
        }
        Ok(())
    }

    #[test]
    fn stream_copy_copies_every_element_at_any_alignment() {
        let src: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut buf = HostBuffer::for_elements::<f32>(400).expect("buffer");
        let dst = buf.as_mut_slice::<f32>();
        for offset in [0usize, 1, 3, 4, 16, 17] {
            for len in [0usize, 1, 15, 16, 17, 64, 255, 300] {
                dst.fill(f32::NAN);
                stream_copy(&src[..len], &mut dst[offset..offset + len]);
                stream_fence();
                assert_eq!(&dst[offset..offset + len], &src[..len], "offset {offset}, len {len}");
                assert!(dst[offset + len].is_nan(), "wrote past the end at offset {offset}, len {len}");
            }
        }
    }

    #[test]
    fn a_result_read_again_is_copied_and_constants_fold() -> Result<()> {
        // r2 = x * x is the output and also read by r4 (which is unused).
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(0),
                Instr::Input(1),
                Instr::Binary(BinaryOp::Mul, 0, 0),
                Instr::Unary(UnaryOp::Exp, 1),
                Instr::Binary(BinaryOp::Add, 2, 3),
            ],
            output: 2,
            reduce: None,
        };
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0], [3])?;
        let s = Tensor::scalar(0.5f32);
        let (xv, sv) = (x.value()?, s.value()?);
        let metas = [Meta::new(DType::F32, xv.shape().clone()), Meta::new(DType::F32, sv.shape().clone())];
        let regs = program.registers(&metas)?;
        let shape = program.shape(&metas)?;
        let sources =
            [AnySource::F32(source::<f32>(xv, &shape, &[])?.0), AnySource::F32(source::<f32>(sv, &shape, &[])?.0)];
        let lowered = lower(&program, &regs, &sources)?;
        // exp(0.5) is a constant; x * x goes to a buffer, copied out at the end.
        assert!(matches!(lowered.result, Reg::F32(F32In::Buf(_))));
        assert!(lowered.steps.iter().all(|s| !matches!(s, Step::Unary { .. })));
        let out = fused_elementwise(&program, &[xv, sv], &Meta::new(DType::F32, shape))?;
        assert_eq!(out.contiguous_slice::<f32>().map(<[f32]>::to_vec), Some(vec![1.0, 4.0, 9.0]));
        Ok(())
    }
}
