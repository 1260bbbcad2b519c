//! The transforms of [`Dataset`]: element-wise (`map`, `filter`,
//! `enumerate`), reordering (`shuffle`), regrouping (`batch`,
//! `padded_batch`, `unbatch`, `rebatch`, `window`), selection (`take`,
//! `skip`, `shard`), combination (`zip`, `concatenate`, `interleave`),
//! repetition (`repeat`, `cache`) and `prefetch`.

use super::dataset::{Cardinality, Dataset, Iter, Node, Rechunk, Stream};
use super::element::{push_rows, tensor_bytes, tensor_from_bytes, Chunk, Element, Field, Strings};
use crate::error::{bail, Error, ErrorKind, Result};
use crate::graph::Tensor;
use crate::tensor::{dtype, DType, Scalar, Shape};
use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A closure on elements, shared by the passes.
pub(crate) type MapFn = Arc<dyn Fn(Element) -> Result<Element> + Send + Sync>;
type Predicate = Arc<dyn Fn(&Element) -> Result<bool> + Send + Sync>;
type InterleaveFn = Arc<dyn Fn(Element) -> Result<Dataset> + Send + Sync>;

/// Reads a stream's rows in slices of at most a given length.
pub(crate) struct Rows {
    stream: Stream,
    chunk: Option<Chunk>,
    pos: usize,
}

impl Rows {
    pub fn new(stream: Stream) -> Rows {
        Rows { stream, chunk: None, pos: 0 }
    }
    /// Up to `max` next rows (fewer at a chunk's end), an error item, or `None` at the end.
    pub fn next_slice(&mut self, max: usize) -> Option<Result<Chunk>> {
        loop {
            if let Some(c) = &self.chunk {
                if self.pos < c.len {
                    let end = self.pos.saturating_add(max).min(c.len);
                    let s = c.slice(self.pos, end);
                    self.pos = end;
                    return Some(s);
                }
                self.chunk = None;
            }
            match self.stream.next()? {
                Ok(c) => {
                    self.chunk = Some(c);
                    self.pos = 0;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn elements(stream: Stream) -> Iter {
    Iter::over(stream)
}

// ---------------------------------------------------------------- map, filter

struct Map {
    input: Dataset,
    f: MapFn,
    parallel: usize,
}

impl Node for Map {
    fn open(&self) -> Result<Stream> {
        let items = elements(self.input.chunks()?);
        let f = self.f.clone();
        if self.parallel <= 1 {
            return Ok(Box::new(Rechunk::new(items.map(move |r| r.and_then(|e| f(e))))));
        }
        Ok(Box::new(Rechunk::new(ParallelMap { items, f, group: self.parallel * 16, out: VecDeque::new() })))
    }
    fn cardinality(&self) -> Cardinality {
        self.input.cardinality()
    }
    fn describe(&self) -> String {
        format!("map(parallel {}) <- {}", self.parallel, self.input.node.describe())
    }
}

/// `f` over groups of elements on the thread pool, the results in input order.
struct ParallelMap {
    items: Iter,
    f: MapFn,
    group: usize,
    out: VecDeque<Result<Element>>,
}

impl Iterator for ParallelMap {
    type Item = Result<Element>;
    fn next(&mut self) -> Option<Result<Element>> {
        if self.out.is_empty() {
            let group: Vec<Result<Element>> = self.items.by_ref().take(self.group).collect();
            let f = &self.f;
            let mapped: Vec<Result<Element>> = group.into_par_iter().map(|r| r.and_then(|e| f(e))).collect();
            self.out.extend(mapped);
        }
        self.out.pop_front()
    }
}

struct Filter {
    input: Dataset,
    predicate: Predicate,
}

impl Node for Filter {
    fn open(&self) -> Result<Stream> {
        let p = self.predicate.clone();
        Ok(Box::new(self.input.chunks()?.map(move |c| {
            let c = c?;
            let mut keep = Vec::with_capacity(c.len);
            for i in 0..c.len {
                if p(&c.row(i)?)? {
                    keep.push(i);
                }
            }
            if keep.len() == c.len {
                Ok(c)
            } else {
                c.gather(&keep)
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        match self.input.cardinality() {
            Cardinality::Infinite => Cardinality::Infinite,
            _ => Cardinality::Unknown,
        }
    }
    fn describe(&self) -> String {
        format!("filter <- {}", self.input.node.describe())
    }
}

struct Enumerate {
    input: Dataset,
    start: i64,
}

impl Node for Enumerate {
    fn open(&self) -> Result<Stream> {
        let mut next = self.start;
        Ok(Box::new(self.input.chunks()?.map(move |c| {
            let c = c?;
            let idx: Vec<i64> = (0..c.len as i64).map(|i| next + i).collect();
            next += c.len as i64;
            let mut fields = vec![Field::Tensor(Tensor::from_slice(&idx, Shape::new(&[c.len]))?)];
            fields.extend(c.fields);
            let names = c.names.map(|n| {
                let mut v = vec!["index".to_string()];
                v.extend(n.iter().cloned());
                Arc::from(v)
            });
            Chunk::new(fields, names)
        })))
    }
    fn cardinality(&self) -> Cardinality {
        self.input.cardinality()
    }
    fn describe(&self) -> String {
        format!("enumerate <- {}", self.input.node.describe())
    }
}

// ---------------------------------------------------------------- shuffle

/// A chunk's rows as bytes per field, for copying rows one by one.
struct Stored {
    fields: Vec<RawField>,
    names: Option<Arc<[String]>>,
    template: Chunk,
    /// Stored chunks with equal `kind` hold rows of one structure.
    kind: usize,
    remaining: usize,
}

enum RawField {
    Bytes { data: Vec<u8> },
    Strings { values: Vec<String>, per_row: usize },
}

impl Stored {
    fn new(c: Chunk, kinds: &mut Vec<Chunk>) -> Result<Stored> {
        let fields = c
            .fields
            .iter()
            .map(|f| {
                let per_row: usize = f.shape().dims()[1..].iter().product();
                Ok(match f {
                    Field::Tensor(t) => RawField::Bytes { data: tensor_bytes(t)?.into_owned() },
                    Field::Strings(s) => RawField::Strings { values: s.values().to_vec(), per_row },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let template = c.slice(0, 0)?;
        let kind = match kinds.iter().position(|k| k.same_rows(&template)) {
            Some(k) => k,
            None => {
                kinds.push(template.clone());
                kinds.len() - 1
            }
        };
        Ok(Stored { fields, names: c.names.clone(), template, kind, remaining: c.len })
    }
}

/// SplitMix64: the seeded stream of shuffle (and of `fit`'s shuffling).
fn next_random(state: &mut u64) -> u64 {
    *state = crate::op::creation::splitmix64(*state);
    *state
}

struct Shuffle {
    input: Dataset,
    buffer: usize,
    seed: u64,
    reshuffle: bool,
    passes: AtomicU64,
}

/// Rows shuffle hands out at a time.
const SHUFFLE_OUT: usize = 256;

impl Node for Shuffle {
    fn open(&self) -> Result<Stream> {
        let pass = if self.reshuffle { self.passes.fetch_add(1, Ordering::Relaxed) } else { 0 };
        let state = crate::op::creation::splitmix64(self.seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Ok(Box::new(ShuffleStream {
            rows: Rows::new(self.input.chunks()?),
            capacity: self.buffer,
            store: Vec::new(),
            free: Vec::new(),
            slots: Vec::with_capacity(self.buffer.min(1 << 20)),
            pending: VecDeque::new(),
            input_done: false,
            state,
            queue: VecDeque::new(),
            kinds: Vec::new(),
        }))
    }
    fn cardinality(&self) -> Cardinality {
        self.input.cardinality()
    }
    fn describe(&self) -> String {
        format!("shuffle({}, seed {}) <- {}", self.buffer, self.seed, self.input.node.describe())
    }
}

struct ShuffleStream {
    rows: Rows,
    capacity: usize,
    store: Vec<Option<Stored>>,
    free: Vec<usize>,
    /// The buffer: (stored chunk, row).
    slots: Vec<(u32, u32)>,
    /// Rows of the last input chunk not yet in the buffer.
    pending: VecDeque<(u32, u32)>,
    input_done: bool,
    state: u64,
    queue: VecDeque<Result<Chunk>>,
    /// One template per row structure seen.
    kinds: Vec<Chunk>,
}

impl ShuffleStream {
    /// The next input row's slot, reading a chunk when needed; errors go to the queue.
    fn next_input(&mut self) -> Result<Option<(u32, u32)>> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            if self.input_done {
                return Ok(None);
            }
            match self.rows.next_slice(usize::MAX) {
                None => {
                    self.input_done = true;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) if c.len == 0 => continue,
                Some(Ok(c)) => {
                    let n = c.len;
                    let stored = Stored::new(c, &mut self.kinds)?;
                    let id = match self.free.pop() {
                        Some(id) => {
                            self.store[id] = Some(stored);
                            id
                        }
                        None => {
                            self.store.push(Some(stored));
                            self.store.len() - 1
                        }
                    };
                    self.pending.extend((0..n as u32).map(|r| (id as u32, r)));
                }
            }
        }
    }

    /// Copy the rows `picked` into chunks (one per run of one structure),
    /// releasing stored chunks whose rows are all out.
    fn emit(&mut self, picked: &[(u32, u32)]) -> Result<()> {
        let mut start = 0;
        while start < picked.len() {
            let first =
                self.store[picked[start].0 as usize].as_ref().ok_or_else(|| Error::graph("shuffle lost a row"))?;
            let mut end = start + 1;
            while end < picked.len() {
                let other =
                    self.store[picked[end].0 as usize].as_ref().ok_or_else(|| Error::graph("shuffle lost a row"))?;
                if first.kind != other.kind {
                    break;
                }
                end += 1;
            }
            let run = &picked[start..end];
            let template = &first.template;
            let mut fields = Vec::with_capacity(template.fields.len());
            for (f, tf) in template.fields.iter().enumerate() {
                let mut dims = tf.shape().dims().to_vec();
                dims[0] = run.len();
                fields.push(match tf {
                    Field::Tensor(t) => {
                        let width = dims[1..].iter().product::<usize>() * t.dtype().size();
                        let mut out = Vec::with_capacity(run.len() * width);
                        // This field's bytes per stored chunk, looked up once, not per row.
                        let sources: Vec<&[u8]> = self
                            .store
                            .iter()
                            .map(|s| match s.as_ref().and_then(|s| s.fields.get(f)) {
                                Some(RawField::Bytes { data, .. }) => data.as_slice(),
                                _ => &[],
                            })
                            .collect();
                        let rows = run.iter().filter_map(|&(c, r)| {
                            let at = r as usize * width;
                            sources.get(c as usize)?.get(at..at + width)
                        });
                        push_rows(&mut out, width, rows);
                        Field::Tensor(tensor_from_bytes(t.dtype(), Shape::from(dims), &out)?)
                    }
                    Field::Strings(_) => {
                        let mut out = Vec::new();
                        for &(c, r) in run {
                            if let Some(Stored { fields, .. }) = &self.store[c as usize] {
                                if let RawField::Strings { values, per_row } = &fields[f] {
                                    out.extend_from_slice(&values[r as usize * per_row..(r as usize + 1) * per_row]);
                                }
                            }
                        }
                        Field::Strings(Strings::new(out, Shape::from(dims))?)
                    }
                });
            }
            let names = first.names.clone();
            self.queue.push_back(Ok(Chunk { fields, names, len: run.len() }));
            start = end;
        }
        for &(c, _) in picked {
            let slot = &mut self.store[c as usize];
            if let Some(s) = slot {
                s.remaining -= 1;
                if s.remaining == 0 {
                    *slot = None;
                    self.free.push(c as usize);
                }
            }
        }
        Ok(())
    }
}

impl Iterator for ShuffleStream {
    type Item = Result<Chunk>;
    fn next(&mut self) -> Option<Result<Chunk>> {
        if let Some(item) = self.queue.pop_front() {
            return Some(item);
        }
        let mut picked = Vec::with_capacity(SHUFFLE_OUT);
        let mut error = None;
        // Fill the buffer.
        while self.slots.len() < self.capacity {
            match self.next_input() {
                Ok(Some(r)) => self.slots.push(r),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        while error.is_none() && picked.len() < SHUFFLE_OUT && !self.slots.is_empty() {
            let i = (next_random(&mut self.state) % self.slots.len() as u64) as usize;
            picked.push(self.slots[i]);
            match self.next_input() {
                Ok(Some(r)) => self.slots[i] = r,
                Ok(None) => {
                    self.slots.swap_remove(i);
                }
                Err(e) => {
                    self.slots.swap_remove(i);
                    error = Some(e);
                }
            }
        }
        if let Err(e) = self.emit(&picked) {
            self.queue.push_back(Err(e));
        }
        if let Some(e) = error {
            self.queue.push_back(Err(e));
        }
        self.queue.pop_front()
    }
}

// ---------------------------------------------------------------- batching

struct Batch {
    input: Dataset,
    size: usize,
    drop_remainder: bool,
}

/// A chunk of `rows` rows as one element whose fields are the stacked rows.
fn as_one_element(c: Chunk) -> Result<Chunk> {
    Chunk::one_row(&c.fields, c.names)
}

impl Node for Batch {
    fn open(&self) -> Result<Stream> {
        let mut rows = Rows::new(self.input.chunks()?);
        let (size, drop) = (self.size, self.drop_remainder);
        let mut parts: Vec<Chunk> = Vec::new();
        let mut have = 0;
        let mut done = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if done {
                return None;
            }
            match rows.next_slice(size - have) {
                Some(Ok(c)) => {
                    have += c.len;
                    parts.push(c);
                    if have == size {
                        have = 0;
                        let batch = Chunk::concat(&std::mem::take(&mut parts), "batch");
                        return Some(batch.and_then(as_one_element));
                    }
                }
                // The rows gathered so far stay for the next batch.
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    done = true;
                    if have == 0 || drop {
                        return None;
                    }
                    let batch = Chunk::concat(&std::mem::take(&mut parts), "batch");
                    return Some(batch.and_then(as_one_element));
                }
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        let (size, drop) = (self.size, self.drop_remainder);
        self.input.cardinality().map(|n| if drop { n / size } else { n.div_ceil(size) })
    }
    fn describe(&self) -> String {
        format!("batch({}) <- {}", self.size, self.input.node.describe())
    }
}

struct PaddedBatch {
    input: Dataset,
    size: usize,
    drop_remainder: bool,
    shapes: Option<Vec<Vec<Option<usize>>>>,
    values: Option<Vec<Scalar>>,
}

impl Node for PaddedBatch {
    fn open(&self) -> Result<Stream> {
        let mut items = elements(self.input.chunks()?);
        let (size, drop) = (self.size, self.drop_remainder);
        let (shapes, values) = (self.shapes.clone(), self.values.clone());
        let mut held: Vec<Element> = Vec::new();
        let mut done = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if done {
                return None;
            }
            match items.next() {
                Some(Ok(e)) => {
                    held.push(e);
                    if held.len() == size {
                        return Some(pad_batch(&std::mem::take(&mut held), shapes.as_deref(), values.as_deref()));
                    }
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    done = true;
                    if held.is_empty() || drop {
                        return None;
                    }
                    return Some(pad_batch(&std::mem::take(&mut held), shapes.as_deref(), values.as_deref()));
                }
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        let (size, drop) = (self.size, self.drop_remainder);
        self.input.cardinality().map(|n| if drop { n / size } else { n.div_ceil(size) })
    }
    fn describe(&self) -> String {
        format!("padded_batch({}) <- {}", self.size, self.input.node.describe())
    }
}

/// Elements padded to a common shape per field (the largest along each
/// axis, or the fixed one asked for) and stacked: one element.
fn pad_batch(batch: &[Element], shapes: Option<&[Vec<Option<usize>>]>, values: Option<&[Scalar]>) -> Result<Chunk> {
    let first = &batch[0];
    let mut fields = Vec::with_capacity(first.len());
    for f in 0..first.len() {
        let rank = first.field(f)?.shape().rank();
        let mut target = vec![0usize; rank];
        for (k, e) in batch.iter().enumerate() {
            let field = e.field(f)?;
            if field.shape().rank() != rank || field.type_name() != first.field(f)?.type_name() {
                bail!(
                    shape,
                    "padded_batch: field {f} of element {k} is {}{}, element 0's is {}{}",
                    field.type_name(),
                    field.shape(),
                    first.field(f)?.type_name(),
                    first.field(f)?.shape()
                );
            }
            for (t, &d) in target.iter_mut().zip(field.shape().dims()) {
                *t = (*t).max(d);
            }
        }
        if let Some(fixed) = shapes.and_then(|s| s.get(f)) {
            if fixed.len() != rank {
                bail!(shape, "padded_batch: padded shape {fixed:?} for field {f} of rank {rank}");
            }
            for (axis, (t, want)) in target.iter_mut().zip(fixed).enumerate() {
                if let Some(w) = *want {
                    if *t > w {
                        bail!(shape, "padded_batch: field {f} has {} along axis {axis}, more than the padded {w}", *t);
                    }
                    *t = w;
                }
            }
        }
        let mut dims = vec![1, batch.len()];
        dims.extend_from_slice(&target);
        let out_shape = Shape::from(dims);
        let per: usize = target.iter().product();
        fields.push(match first.field(f)? {
            Field::Tensor(t0) => {
                let dt = t0.dtype();
                let pad = values.and_then(|v| v.get(f)).copied().unwrap_or(Scalar::F64(0.0));
                let pad_bytes = scalar_bytes(pad, dt);
                let mut out = Vec::with_capacity(batch.len() * per * dt.size());
                for _ in 0..batch.len() * per {
                    out.extend_from_slice(&pad_bytes);
                }
                for (k, e) in batch.iter().enumerate() {
                    let t = e.tensor(f)?;
                    let src = tensor_bytes(t)?;
                    copy_into_corner(&src, t.shape().dims(), &mut out[k * per * dt.size()..], &target, dt.size());
                }
                Field::Tensor(tensor_from_bytes(dt, out_shape, &out)?)
            }
            Field::Strings(_) => {
                let mut out = vec![String::new(); batch.len() * per];
                for (k, e) in batch.iter().enumerate() {
                    let s = e.field(f)?.as_strings().ok_or_else(|| Error::dtype("padded_batch: mixed field types"))?;
                    let dims = s.shape().dims();
                    let inner: usize = dims.iter().product();
                    for i in 0..inner {
                        let mut rem = i;
                        let mut off = 0;
                        let mut stride = 1;
                        for a in (0..dims.len()).rev() {
                            off += (rem % dims[a]) * stride;
                            rem /= dims[a];
                            stride *= target[a];
                        }
                        out[k * per + off] = s.values()[i].clone();
                    }
                }
                Field::Strings(Strings::new(out, out_shape)?)
            }
        });
    }
    Ok(Chunk { fields, names: first.shared_names(), len: 1 })
}

/// `v` as one element of `dtype`, little-endian.
pub(crate) fn scalar_bytes(v: Scalar, dt: DType) -> Vec<u8> {
    dtype::with_dtype!(dt, T => bytemuck_one::<T>(v.to_element::<T>()))
}

fn bytemuck_one<T: crate::tensor::Element>(x: T) -> Vec<u8> {
    let t = Tensor::scalar(x);
    tensor_bytes(&t).map(|b| b.into_owned()).unwrap_or_default()
}

/// Copy a row-major array of `src_dims` into the leading corner of one of `dst_dims`.
fn copy_into_corner(src: &[u8], src_dims: &[usize], dst: &mut [u8], dst_dims: &[usize], size: usize) {
    if src_dims.is_empty() {
        dst[..size].copy_from_slice(&src[..size]);
        return;
    }
    if src_dims.contains(&0) {
        return;
    }
    let inner_src: usize = src_dims[1..].iter().product::<usize>() * size;
    let inner_dst: usize = dst_dims[1..].iter().product::<usize>() * size;
    for i in 0..src_dims[0] {
        copy_into_corner(
            &src[i * inner_src..(i + 1) * inner_src],
            &src_dims[1..],
            &mut dst[i * inner_dst..(i + 1) * inner_dst],
            &dst_dims[1..],
            size,
        );
    }
}

struct Unbatch {
    input: Dataset,
}

impl Node for Unbatch {
    fn open(&self) -> Result<Stream> {
        Ok(Box::new(self.input.chunks()?.map(|c| {
            let c = c?;
            let mut inner = None;
            let mut fields = Vec::with_capacity(c.fields.len());
            for f in &c.fields {
                let dims = f.shape().dims();
                let Some(&b) = dims.get(1) else {
                    bail!(shape, "unbatch: a {} scalar field has no batch axis", f.type_name());
                };
                if *inner.get_or_insert(b) != b {
                    bail!(shape, "unbatch: fields have different batch sizes ({} and {b})", inner.unwrap_or(0));
                }
                let mut nd = vec![c.len * b];
                nd.extend_from_slice(&dims[2..]);
                fields.push(f.reshaped(Shape::from(nd))?);
            }
            Ok(Chunk { fields, names: c.names, len: c.len * inner.unwrap_or(0) })
        })))
    }
    fn cardinality(&self) -> Cardinality {
        match self.input.cardinality() {
            Cardinality::Infinite => Cardinality::Infinite,
            _ => Cardinality::Unknown,
        }
    }
    fn describe(&self) -> String {
        format!("unbatch <- {}", self.input.node.describe())
    }
}

struct Window {
    input: Dataset,
    size: usize,
    shift: usize,
    stride: usize,
    drop_remainder: bool,
}

impl Node for Window {
    fn open(&self) -> Result<Stream> {
        let mut items = elements(self.input.chunks()?);
        let (size, shift, stride, drop) = (self.size, self.shift, self.stride, self.drop_remainder);
        let span = (size - 1) * stride + 1;
        let mut held: VecDeque<Element> = VecDeque::new();
        let mut to_skip = 0usize;
        let mut done = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if !done && held.len() < span {
                match items.next() {
                    Some(Ok(_)) if to_skip > 0 => to_skip -= 1,
                    Some(Ok(e)) => held.push_back(e),
                    Some(Err(e)) => return Some(Err(e)),
                    None => done = true,
                }
                continue;
            }
            if held.is_empty() || (held.len() < span && drop) {
                return None;
            }
            let picked: Vec<Element> = held.iter().step_by(stride).take(size).cloned().collect();
            let popped = shift.min(held.len());
            held.drain(..popped);
            to_skip += shift - popped;
            let stacked = Chunk::stack(picked).and_then(|cs| match <[Chunk; 1]>::try_from(cs) {
                Ok([c]) => as_one_element(c),
                Err(_) => Err(Error::shape("window: the elements of a window differ in shape")),
            });
            return Some(stacked);
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        format!("window({}, shift {}, stride {}) <- {}", self.size, self.shift, self.stride, self.input.node.describe())
    }
}

// ---------------------------------------------------------------- selection

struct TakeSkip {
    input: Dataset,
    skip: usize,
    take: Option<usize>,
}

impl Node for TakeSkip {
    fn open(&self) -> Result<Stream> {
        let mut rows = Rows::new(self.input.chunks()?);
        let mut to_skip = self.skip;
        let mut left = self.take;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if left == Some(0) {
                return None;
            }
            if to_skip > 0 {
                match rows.next_slice(to_skip)? {
                    Ok(c) => to_skip -= c.len,
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let slice = rows.next_slice(left.unwrap_or(usize::MAX))?;
            if let (Ok(c), Some(l)) = (&slice, left.as_mut()) {
                *l -= c.len;
            }
            return Some(slice);
        })))
    }
    fn cardinality(&self) -> Cardinality {
        match (self.input.cardinality(), self.take) {
            (Cardinality::Finite(n), t) => {
                Cardinality::Finite(n.saturating_sub(self.skip).min(t.unwrap_or(usize::MAX)))
            }
            (Cardinality::Infinite, Some(t)) => Cardinality::Finite(t),
            (c, None) => c,
            (Cardinality::Unknown, Some(_)) => Cardinality::Unknown,
        }
    }
    fn describe(&self) -> String {
        format!("skip({}) take({:?}) <- {}", self.skip, self.take, self.input.node.describe())
    }
}

struct Shard {
    input: Dataset,
    count: usize,
    index: usize,
}

impl Node for Shard {
    fn open(&self) -> Result<Stream> {
        let (count, index) = (self.count, self.index);
        let mut seen = 0usize;
        Ok(Box::new(self.input.chunks()?.filter_map(move |c| {
            let c = match c {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            let keep: Vec<usize> = (0..c.len).filter(|i| (seen + i) % count == index).collect();
            seen += c.len;
            if keep.is_empty() {
                None
            } else {
                Some(c.gather(&keep))
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        let (count, index) = (self.count, self.index);
        self.input.cardinality().map(|n| n / count + usize::from(index < n % count))
    }
    fn describe(&self) -> String {
        format!("shard({}, {}) <- {}", self.count, self.index, self.input.node.describe())
    }
}

struct IgnoreErrors {
    input: Dataset,
}

impl Node for IgnoreErrors {
    fn open(&self) -> Result<Stream> {
        Ok(Box::new(self.input.chunks()?.filter(|c| c.is_ok())))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        format!("ignore_errors <- {}", self.input.node.describe())
    }
}

// ---------------------------------------------------------------- combination

struct Zip {
    inputs: Vec<Dataset>,
}

impl Node for Zip {
    fn open(&self) -> Result<Stream> {
        let mut readers: Vec<Rows> = self.inputs.iter().map(|d| d.chunks().map(Rows::new)).collect::<Result<_>>()?;
        let mut pending: Vec<Option<Chunk>> = vec![None; readers.len()];
        Ok(Box::new(std::iter::from_fn(move || {
            // Fill each input's pending slice, then cut all to the shortest.
            for (r, p) in readers.iter_mut().zip(pending.iter_mut()) {
                if p.as_ref().is_none_or(|c| c.len == 0) {
                    match r.next_slice(usize::MAX)? {
                        Ok(c) => *p = Some(c),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
            let n = pending.iter().map(|p| p.as_ref().map_or(0, |c| c.len)).min().unwrap_or(0);
            let mut fields = Vec::new();
            let mut names: Vec<String> = Vec::new();
            let mut all_named = true;
            for p in pending.iter_mut() {
                let c = p.take()?;
                let (head, rest) = match (c.slice(0, n), c.slice(n, c.len)) {
                    (Ok(h), Ok(r)) => (h, r),
                    (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
                };
                *p = Some(rest);
                match &head.names {
                    Some(ns) => names.extend(ns.iter().cloned()),
                    None => all_named = false,
                }
                fields.extend(head.fields);
            }
            let names = if all_named {
                if let Err(e) = super::element::check_names(&names) {
                    return Some(Err(e));
                }
                Some(Arc::from(names))
            } else {
                None
            };
            Some(Ok(Chunk { fields, names, len: n }))
        })))
    }
    fn cardinality(&self) -> Cardinality {
        let mut out = Cardinality::Infinite;
        for d in &self.inputs {
            out = match (out, d.cardinality()) {
                (Cardinality::Infinite, c) | (c, Cardinality::Infinite) => c,
                (Cardinality::Finite(a), Cardinality::Finite(b)) => Cardinality::Finite(a.min(b)),
                _ => Cardinality::Unknown,
            };
        }
        out
    }
    fn describe(&self) -> String {
        let parts: Vec<String> = self.inputs.iter().map(|d| d.node.describe()).collect();
        format!("zip({})", parts.join(", "))
    }
}

struct Concatenate {
    first: Dataset,
    second: Dataset,
}

impl Node for Concatenate {
    fn open(&self) -> Result<Stream> {
        let second = self.second.clone();
        let mut tail = Some(second);
        let mut current = self.first.chunks()?;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if let Some(item) = current.next() {
                return Some(item);
            }
            let next = tail.take()?;
            match next.chunks() {
                Ok(s) => current = s,
                Err(e) => return Some(Err(e)),
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        match (self.first.cardinality(), self.second.cardinality()) {
            (Cardinality::Finite(a), Cardinality::Finite(b)) => Cardinality::Finite(a + b),
            (Cardinality::Infinite, _) | (_, Cardinality::Infinite) => Cardinality::Infinite,
            _ => Cardinality::Unknown,
        }
    }
    fn describe(&self) -> String {
        format!("concatenate({}, {})", self.first.node.describe(), self.second.node.describe())
    }
}

struct Interleave {
    input: Dataset,
    f: InterleaveFn,
    cycle: usize,
    block: usize,
}

impl Node for Interleave {
    fn open(&self) -> Result<Stream> {
        let mut sources = elements(self.input.chunks()?);
        let (f, cycle, block) = (self.f.clone(), self.cycle, self.block);
        let mut open: Vec<Rows> = Vec::new();
        let mut turn = 0usize;
        let mut taken = 0usize;
        let mut sources_done = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            while !sources_done && open.len() < cycle {
                match sources.next() {
                    Some(Ok(e)) => match f(e).and_then(|d| d.chunks()) {
                        Ok(s) => open.push(Rows::new(s)),
                        Err(e) => return Some(Err(e)),
                    },
                    Some(Err(e)) => return Some(Err(e)),
                    None => sources_done = true,
                }
            }
            if open.is_empty() {
                return None;
            }
            turn %= open.len();
            match open[turn].next_slice(block - taken) {
                Some(Ok(c)) => {
                    taken += c.len;
                    if taken == block {
                        taken = 0;
                        turn += 1;
                    }
                    return Some(Ok(c));
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    // This source is spent: the next one takes its place in the cycle.
                    open.remove(turn);
                    taken = 0;
                }
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        format!("interleave(cycle {}, block {}) <- {}", self.cycle, self.block, self.input.node.describe())
    }
}

// ---------------------------------------------------------------- repetition

struct Repeat {
    input: Dataset,
    count: Option<usize>,
}

impl Node for Repeat {
    fn open(&self) -> Result<Stream> {
        let input = self.input.clone();
        let count = self.count;
        let mut pass = 0usize;
        let mut current: Option<Stream> = None;
        let mut yielded_this_pass = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if let Some(s) = current.as_mut() {
                if let Some(item) = s.next() {
                    yielded_this_pass = true;
                    return Some(item);
                }
                current = None;
                pass += 1;
                // An empty input repeated forever is empty, not a hang.
                if !yielded_this_pass {
                    return None;
                }
            }
            if count.is_some_and(|c| pass >= c) {
                return None;
            }
            yielded_this_pass = false;
            match input.chunks() {
                Ok(s) => current = Some(s),
                Err(e) => {
                    pass += 1;
                    return Some(Err(e));
                }
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        match (self.input.cardinality(), self.count) {
            (Cardinality::Finite(0), _) => Cardinality::Finite(0),
            (_, None) => Cardinality::Infinite,
            (c, Some(k)) => c.map(|n| n * k),
        }
    }
    fn describe(&self) -> String {
        format!("repeat({:?}) <- {}", self.count, self.input.node.describe())
    }
}

struct Prefetch {
    input: Dataset,
    depth: usize,
}

impl Node for Prefetch {
    fn open(&self) -> Result<Stream> {
        let mut stream = self.input.chunks()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk>>(self.depth);
        std::thread::Builder::new()
            .name("rivulet-prefetch".into())
            .spawn(move || {
                for item in stream.by_ref() {
                    // The consumer went away: stop reading.
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::new(ErrorKind::Io, format!("prefetch: cannot start its thread: {e}")))?;
        Ok(Box::new(rx.into_iter()))
    }
    fn cardinality(&self) -> Cardinality {
        self.input.cardinality()
    }
    fn describe(&self) -> String {
        format!("prefetch({}) <- {}", self.depth, self.input.node.describe())
    }
}

// ---------------------------------------------------------------- the methods

impl Dataset {
    /// `f` applied to each element (`Dataset.map`), one at a time.
    pub fn map<F>(&self, f: F) -> Dataset
    where
        F: Fn(Element) -> Result<Element> + Send + Sync + 'static,
    {
        Dataset::from_node(Map { input: self.clone(), f: Arc::new(f), parallel: 1 })
    }

    /// `f` applied to up to `16 * parallel` elements at once on the thread
    /// pool (`num_parallel_calls`); the output keeps the input's order
    /// (TensorFlow's `deterministic=True`).
    pub fn map_parallel<F>(&self, f: F, parallel: usize) -> Dataset
    where
        F: Fn(Element) -> Result<Element> + Send + Sync + 'static,
    {
        let parallel = if parallel == 0 { rayon::current_num_threads() } else { parallel };
        Dataset::from_node(Map { input: self.clone(), f: Arc::new(f), parallel })
    }

    /// The elements for which `predicate` is true.
    pub fn filter<F>(&self, predicate: F) -> Dataset
    where
        F: Fn(&Element) -> Result<bool> + Send + Sync + 'static,
    {
        Dataset::from_node(Filter { input: self.clone(), predicate: Arc::new(predicate) })
    }

    /// Each element with its index (an i64 scalar, from `start`) as a first
    /// field (named `index` when the element has names).
    pub fn enumerate(&self, start: i64) -> Dataset {
        Dataset::from_node(Enumerate { input: self.clone(), start })
    }

    /// Elements drawn at random from a buffer of `buffer_size` (TensorFlow's
    /// algorithm: fill the buffer, then each draw is replaced by the next
    /// input element). Seeded: the same seed gives the same order; each pass
    /// draws a new order (`reshuffle_each_iteration=True`).
    pub fn shuffle(&self, buffer_size: usize, seed: u64) -> Result<Dataset> {
        self.shuffle_with(buffer_size, seed, true)
    }

    /// `shuffle`, choosing whether each pass draws a new order.
    pub fn shuffle_with(&self, buffer_size: usize, seed: u64, reshuffle_each_iteration: bool) -> Result<Dataset> {
        if buffer_size == 0 {
            bail!(invalid, "shuffle: buffer_size must be positive");
        }
        Ok(Dataset::from_node(Shuffle {
            input: self.clone(),
            buffer: buffer_size,
            seed,
            reshuffle: reshuffle_each_iteration,
            passes: AtomicU64::new(0),
        }))
    }

    /// Consecutive elements stacked into batches of `batch_size` (the last
    /// one smaller unless `drop_remainder`). Fields must agree in shape.
    pub fn batch(&self, batch_size: usize, drop_remainder: bool) -> Result<Dataset> {
        if batch_size == 0 {
            bail!(invalid, "batch: batch_size must be positive");
        }
        Ok(Dataset::from_node(Batch { input: self.clone(), size: batch_size, drop_remainder }))
    }

    /// Batches of elements padded to a common shape: per field, the largest
    /// size along each axis within the batch, or the fixed size given in
    /// `padded_shapes` (`None` for "largest"); padding with
    /// `padding_values` (0 and "" by default).
    pub fn padded_batch(
        &self,
        batch_size: usize,
        padded_shapes: Option<Vec<Vec<Option<usize>>>>,
        padding_values: Option<Vec<Scalar>>,
        drop_remainder: bool,
    ) -> Result<Dataset> {
        if batch_size == 0 {
            bail!(invalid, "padded_batch: batch_size must be positive");
        }
        Ok(Dataset::from_node(PaddedBatch {
            input: self.clone(),
            size: batch_size,
            drop_remainder,
            shapes: padded_shapes,
            values: padding_values,
        }))
    }

    /// Each element's rows as elements (the inverse of `batch`).
    pub fn unbatch(&self) -> Dataset {
        Dataset::from_node(Unbatch { input: self.clone() })
    }

    /// Batches re-cut to `batch_size` rows.
    pub fn rebatch(&self, batch_size: usize, drop_remainder: bool) -> Result<Dataset> {
        self.unbatch().batch(batch_size, drop_remainder)
    }

    /// Sliding windows: each element stacks `size` elements, `stride`
    /// apart, and windows start `shift` elements apart. (TensorFlow's
    /// `window` yields datasets that are then batched; this yields the
    /// batched windows directly.)
    pub fn window(&self, size: usize, shift: usize, stride: usize, drop_remainder: bool) -> Result<Dataset> {
        if size == 0 || shift == 0 || stride == 0 {
            bail!(invalid, "window: size ({size}), shift ({shift}) and stride ({stride}) must be positive");
        }
        Ok(Dataset::from_node(Window { input: self.clone(), size, shift, stride, drop_remainder }))
    }

    /// The first `count` elements.
    pub fn take(&self, count: usize) -> Dataset {
        Dataset::from_node(TakeSkip { input: self.clone(), skip: 0, take: Some(count) })
    }

    /// All but the first `count` elements.
    pub fn skip(&self, count: usize) -> Dataset {
        Dataset::from_node(TakeSkip { input: self.clone(), skip: count, take: None })
    }

    /// Every `num_shards`-th element from `index` (one worker's share).
    pub fn shard(&self, num_shards: usize, index: usize) -> Result<Dataset> {
        if num_shards == 0 || index >= num_shards {
            bail!(invalid, "shard: index {index} of {num_shards} shards");
        }
        Ok(Dataset::from_node(Shard { input: self.clone(), count: num_shards, index }))
    }

    /// The elements without the errors (bad rows, files that fail to open).
    pub fn ignore_errors(&self) -> Dataset {
        Dataset::from_node(IgnoreErrors { input: self.clone() })
    }

    /// Elements of several datasets side by side: the fields of each in
    /// turn (names kept when all are named); as long as the shortest.
    pub fn zip(datasets: &[Dataset]) -> Result<Dataset> {
        if datasets.is_empty() {
            bail!(invalid, "zip: no datasets");
        }
        Ok(Dataset::from_node(Zip { inputs: datasets.to_vec() }))
    }

    /// This dataset's elements, then `other`'s.
    pub fn concatenate(&self, other: &Dataset) -> Dataset {
        Dataset::from_node(Concatenate { first: self.clone(), second: other.clone() })
    }

    /// `f` makes a dataset of each element (a file name, say); blocks of
    /// `block_length` elements are taken from `cycle_length` of them in
    /// turn (`Dataset.interleave`). With a cycle of 1 this is `flat_map`.
    pub fn interleave<F>(&self, f: F, cycle_length: usize, block_length: usize) -> Result<Dataset>
    where
        F: Fn(Element) -> Result<Dataset> + Send + Sync + 'static,
    {
        if cycle_length == 0 || block_length == 0 {
            bail!(invalid, "interleave: cycle_length and block_length must be positive");
        }
        Ok(Dataset::from_node(Interleave {
            input: self.clone(),
            f: Arc::new(f),
            cycle: cycle_length,
            block: block_length,
        }))
    }

    /// The elements `count` times over (`None`: forever). Each repetition is a new pass.
    pub fn repeat(&self, count: Option<usize>) -> Dataset {
        Dataset::from_node(Repeat { input: self.clone(), count })
    }

    /// A background thread runs the pipeline up to `buffer_size` chunks
    /// ahead of the consumer (a bounded queue).
    pub fn prefetch(&self, buffer_size: usize) -> Dataset {
        Dataset::from_node(Prefetch { input: self.clone(), depth: buffer_size.max(1) })
    }
}
