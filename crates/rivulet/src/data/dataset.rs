//! [`Dataset`]: a lazy, re-iterable description of a stream of elements,
//! as `tf.data.Dataset`. Each `iter()` is one pass (an epoch): sources
//! reopen their files, `shuffle` draws a new order, `map` runs again.
//!
//! A dataset is a chain of nodes. Opening a node gives a stream of
//! [`Chunk`]s (rows in bulk); the public iterator hands them out one
//! element at a time. Errors travel in the stream: a bad CSV row is an
//! error item after the good rows before it, and the stream goes on after
//! it, so `ignore_errors` can skip it.

use super::element::{Chunk, Element, Field, Strings};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::Shape;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// A stream of chunks: one pass over a node.
pub(crate) type Stream = Box<dyn Iterator<Item = Result<Chunk>> + Send>;

/// One stage of a pipeline.
pub(crate) trait Node: Send + Sync {
    /// Start a pass.
    fn open(&self) -> Result<Stream>;
    /// How many elements a pass yields, when known.
    fn cardinality(&self) -> Cardinality;
    /// The stage as in `Debug`, with its input: `batch(32) <- csv(data.csv)`.
    fn describe(&self) -> String;
}

/// Number of elements of a dataset (`tf.data.experimental.cardinality`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cardinality {
    Finite(usize),
    Infinite,
    /// Known only after a pass (files, `filter`).
    Unknown,
}

impl Cardinality {
    pub(crate) fn map(self, f: impl FnOnce(usize) -> usize) -> Cardinality {
        match self {
            Cardinality::Finite(n) => Cardinality::Finite(f(n)),
            other => other,
        }
    }
}

/// A lazy pipeline of elements; cheap to clone (the stages are shared).
#[derive(Clone)]
pub struct Dataset {
    pub(crate) node: Arc<dyn Node>,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dataset({})", self.node.describe())
    }
}

impl Dataset {
    pub(crate) fn from_node(node: impl Node + 'static) -> Dataset {
        Dataset { node: Arc::new(node) }
    }

    /// One pass over the elements. An error opening the source is the first item.
    pub fn iter(&self) -> Iter {
        Iter { stream: Some(self.node.open()), chunk: None, row: 0 }
    }

    /// One pass as chunks (inside the crate: bulk consumers such as `fit`).
    pub(crate) fn chunks(&self) -> Result<Stream> {
        self.node.open()
    }

    /// The number of elements, when it is known without a pass.
    pub fn cardinality(&self) -> Cardinality {
        self.node.cardinality()
    }

    /// Every element of one pass (the first error stops it).
    pub fn collect(&self) -> Result<Vec<Element>> {
        self.iter().collect()
    }
}

impl IntoIterator for &Dataset {
    type Item = Result<Element>;
    type IntoIter = Iter;
    fn into_iter(self) -> Iter {
        self.iter()
    }
}

/// One pass over a dataset, element by element.
pub struct Iter {
    stream: Option<Result<Stream>>,
    chunk: Option<Chunk>,
    row: usize,
}

impl Iter {
    /// The elements of a stream of chunks.
    pub(crate) fn over(stream: Stream) -> Iter {
        Iter { stream: Some(Ok(stream)), chunk: None, row: 0 }
    }
}

impl Iterator for Iter {
    type Item = Result<Element>;
    fn next(&mut self) -> Option<Result<Element>> {
        loop {
            if let Some(c) = &self.chunk {
                if self.row < c.len {
                    self.row += 1;
                    return Some(c.row(self.row - 1));
                }
                self.chunk = None;
            }
            match self.stream.as_mut()? {
                Err(_) => {
                    let Some(Err(e)) = self.stream.take() else { return None };
                    return Some(Err(e));
                }
                Ok(s) => match s.next()? {
                    Ok(c) => {
                        self.chunk = Some(c);
                        self.row = 0;
                    }
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }
}

// ---------------------------------------------------------------- sources

/// Rows per chunk that in-memory sources hand out.
pub(crate) const CHUNK_ROWS: usize = 1024;

struct Slices {
    chunk: Chunk,
}

impl Node for Slices {
    fn open(&self) -> Result<Stream> {
        let chunk = self.chunk.clone();
        let n = chunk.len;
        Ok(Box::new((0..n).step_by(CHUNK_ROWS).map(move |s| chunk.slice(s, (s + CHUNK_ROWS).min(n)))))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Finite(self.chunk.len)
    }
    fn describe(&self) -> String {
        format!("from_tensor_slices({})", self.chunk.row_signature())
    }
}

type Generator = dyn Fn() -> Box<dyn Iterator<Item = Result<Element>> + Send> + Send + Sync;

struct FromGenerator {
    make: Arc<Generator>,
}

impl Node for FromGenerator {
    fn open(&self) -> Result<Stream> {
        Ok(Box::new(Rechunk::new((self.make)())))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        "from_generator".into()
    }
}

/// Elements (or errors) regrouped into chunks of up to [`CHUNK_ROWS`]
/// rows: one chunk per run of elements of one structure, an error after
/// the elements before it.
pub(crate) struct Rechunk<I> {
    inner: I,
    queue: VecDeque<Result<Chunk>>,
    done: bool,
}

impl<I: Iterator<Item = Result<Element>>> Rechunk<I> {
    pub fn new(inner: I) -> Rechunk<I> {
        Rechunk { inner, queue: VecDeque::new(), done: false }
    }
}

impl<I: Iterator<Item = Result<Element>>> Iterator for Rechunk<I> {
    type Item = Result<Chunk>;
    fn next(&mut self) -> Option<Result<Chunk>> {
        if let Some(item) = self.queue.pop_front() {
            return Some(item);
        }
        if self.done {
            return None;
        }
        let mut run = Vec::new();
        let mut error = None;
        while run.len() < CHUNK_ROWS {
            match self.inner.next() {
                Some(Ok(e)) => run.push(e),
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if !run.is_empty() {
            match Chunk::stack(run) {
                Ok(cs) => self.queue.extend(cs.into_iter().map(Ok)),
                Err(e) => self.queue.push_back(Err(e)),
            }
        }
        if let Some(e) = error {
            self.queue.push_back(Err(e));
        }
        self.queue.pop_front()
    }
}

/// `range(start, stop, step)` as i64 scalars.
struct Range {
    start: i64,
    stop: i64,
    step: i64,
}

impl Range {
    fn len(&self) -> usize {
        let span =
            if self.step > 0 { self.stop.saturating_sub(self.start) } else { self.start.saturating_sub(self.stop) };
        if span <= 0 {
            0
        } else {
            (span as u64).div_ceil(self.step.unsigned_abs()) as usize
        }
    }
}

impl Node for Range {
    fn open(&self) -> Result<Stream> {
        let (start, step, n) = (self.start, self.step, self.len());
        Ok(Box::new((0..n).step_by(CHUNK_ROWS).map(move |s| {
            let e = (s + CHUNK_ROWS).min(n);
            let v: Vec<i64> = (s..e).map(|i| start + step * i as i64).collect();
            Chunk::new(vec![Field::Tensor(Tensor::from_slice(&v, Shape::new(&[e - s]))?)], None)
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Finite(self.len())
    }
    fn describe(&self) -> String {
        format!("range({}, {}, {})", self.start, self.stop, self.step)
    }
}

impl Dataset {
    /// The slices of `fields` along their first axis, one element per row,
    /// as `tf.data.Dataset.from_tensor_slices((x, y))`. All fields need the
    /// same number of rows.
    pub fn from_tensor_slices(fields: impl Into<Element>) -> Result<Dataset> {
        let e: Element = fields.into();
        for f in e.fields() {
            if f.shape().rank() == 0 {
                bail!(shape, "from_tensor_slices: a {} scalar has no rows to slice", f.type_name());
            }
        }
        let names = e.shared_names();
        let chunk = Chunk::new(e.into_fields(), names)
            .map_err(|err| Error::shape(format!("from_tensor_slices: {}", err.message())))?;
        for f in &chunk.fields {
            if let Field::Tensor(t) = f {
                t.value()?; // symbolic tensors have no rows yet
            }
        }
        Ok(Dataset::from_node(Slices { chunk }))
    }

    /// One element: `fields` whole (`tf.data.Dataset.from_tensors`).
    pub fn from_tensors(fields: impl Into<Element>) -> Result<Dataset> {
        let chunk = Chunk::from_element(fields.into())?;
        Ok(Dataset::from_node(Slices { chunk }))
    }

    /// The items of a Rust iterator that can be cloned (each pass clones it).
    /// (Not `FromIterator`: the iterator is kept and replayed lazily.)
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(items: I) -> Dataset
    where
        I: IntoIterator + Clone + Send + Sync + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Into<Element>,
    {
        Dataset::from_generator(move || items.clone().into_iter().map(|x| Ok(x.into())))
    }

    /// The elements of the iterator that `make` returns, called once per
    /// pass (`tf.data.Dataset.from_generator`); an `Err` item is an error
    /// element, after the elements before it.
    pub fn from_generator<F, I>(make: F) -> Dataset
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: Iterator<Item = Result<Element>> + Send + 'static,
    {
        let make: Arc<Generator> = Arc::new(move || Box::new(make()));
        Dataset::from_node(FromGenerator { make })
    }

    /// `start, start + step, ...` up to `stop` (excluded) as i64 scalars.
    pub fn range(start: i64, stop: i64, step: i64) -> Result<Dataset> {
        if step == 0 {
            bail!(invalid, "range: step must not be 0");
        }
        Ok(Dataset::from_node(Range { start, stop, step }))
    }

    /// Strings as scalar elements (file names for `interleave`, say).
    pub fn from_strings<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Result<Dataset> {
        Dataset::from_tensor_slices(Strings::vector(values))
    }
}
