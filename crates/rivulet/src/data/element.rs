//! What a dataset yields: an [`Element`], a tuple of [`Field`]s, each a
//! tensor or a string tensor, optionally with names (a dictionary of
//! columns, as a CSV row). Inside a pipeline, elements travel in
//! [`Chunk`]s: the fields of several consecutive elements stacked along a
//! new leading axis, so that sources and transforms move rows in bulk.

use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Layout, Shape, Value};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A host tensor of UTF-8 strings (TensorFlow's `tf.string`), for the
/// input pipeline and the preprocessing layers that turn text into
/// numbers. Graph ops take only the numeric tensors those layers produce.
#[derive(Clone, PartialEq)]
pub struct Strings {
    shape: Shape,
    values: Arc<[String]>,
}

impl Strings {
    /// `values` in row-major order, shaped `shape`.
    pub fn new(values: Vec<String>, shape: impl Into<Shape>) -> Result<Strings> {
        let shape = shape.into();
        let n = shape.checked_numel()?;
        if n != values.len() {
            bail!(shape, "{} strings cannot fill shape {shape} ({n} elements)", values.len());
        }
        Ok(Strings { shape, values: values.into() })
    }
    /// A rank-1 tensor of `values`.
    pub fn vector<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Strings {
        let values: Arc<[String]> = values.into_iter().map(Into::into).collect();
        Strings { shape: Shape::new(&[values.len()]), values }
    }
    /// A rank-0 string.
    pub fn scalar(value: impl Into<String>) -> Strings {
        Strings { shape: Shape::scalar(), values: Arc::from(vec![value.into()]) }
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The strings in row-major order.
    pub fn values(&self) -> &[String] {
        &self.values
    }
    fn with_shape(&self, shape: Shape) -> Strings {
        Strings { shape, values: self.values.clone() }
    }
}

impl fmt::Debug for Strings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Strings{} {:?}", self.shape, &self.values[..self.values.len().min(8)])
    }
}

/// One component of an element: a (numeric or bool) tensor or a string tensor.
#[derive(Clone, Debug)]
pub enum Field {
    Tensor(Tensor),
    Strings(Strings),
}

impl Field {
    pub fn shape(&self) -> &Shape {
        match self {
            Field::Tensor(t) => t.shape(),
            Field::Strings(s) => s.shape(),
        }
    }
    /// The dtype's name, or `string`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Field::Tensor(t) => t.dtype().name(),
            Field::Strings(_) => "string",
        }
    }
    /// The tensor, or `None` for strings.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Field::Tensor(t) => Some(t),
            Field::Strings(_) => None,
        }
    }
    /// The strings, or `None` for a tensor.
    pub fn as_strings(&self) -> Option<&Strings> {
        match self {
            Field::Strings(s) => Some(s),
            Field::Tensor(_) => None,
        }
    }
    /// The same elements under another shape of as many elements (no copy).
    pub(crate) fn reshaped(&self, shape: Shape) -> Result<Field> {
        if shape.checked_numel()? != self.shape().checked_numel()? {
            bail!(shape, "cannot view {} {} as {shape}", self.type_name(), self.shape());
        }
        Ok(match self {
            Field::Tensor(t) => Field::Tensor(view(t, shape, 0)?),
            Field::Strings(s) => Field::Strings(s.with_shape(shape)),
        })
    }
}

impl From<Tensor> for Field {
    fn from(t: Tensor) -> Field {
        Field::Tensor(t)
    }
}
impl From<Strings> for Field {
    fn from(s: Strings) -> Field {
        Field::Strings(s)
    }
}

/// One element of a dataset: a tuple of fields, with names when the
/// element is a dictionary of columns (a CSV row, a Parquet row).
#[derive(Clone, Debug)]
pub struct Element {
    fields: Vec<Field>,
    names: Option<Arc<[String]>>,
}

impl Element {
    /// A tuple of fields.
    pub fn tuple(fields: Vec<Field>) -> Element {
        Element { fields, names: None }
    }
    /// Named fields (names must be distinct).
    pub fn dict(entries: Vec<(String, Field)>) -> Result<Element> {
        let (names, fields): (Vec<String>, Vec<Field>) = entries.into_iter().unzip();
        check_names(&names)?;
        Ok(Element { fields, names: Some(names.into()) })
    }
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
    pub fn into_fields(self) -> Vec<Field> {
        self.fields
    }
    /// The field names of a dictionary element.
    pub fn names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }
    pub(crate) fn shared_names(&self) -> Option<Arc<[String]>> {
        self.names.clone()
    }
    /// Field `i`.
    pub fn field(&self, i: usize) -> Result<&Field> {
        self.fields.get(i).ok_or_else(|| Error::invalid(format!("element has {} fields, no field {i}", self.len())))
    }
    /// The field named `name`.
    pub fn get(&self, name: &str) -> Result<&Field> {
        let names = self.names.as_deref().unwrap_or(&[]);
        match names.iter().position(|n| n == name) {
            Some(i) => Ok(&self.fields[i]),
            None => Err(Error::not_found(format!("element has no field '{name}' (fields: {})", names.join(", ")))),
        }
    }
    /// Field `i` as a tensor (an error for strings).
    pub fn tensor(&self, i: usize) -> Result<&Tensor> {
        let f = self.field(i)?;
        f.as_tensor().ok_or_else(|| Error::dtype(format!("field {} is a string tensor, not a numeric one", i)))
    }
    /// The field named `name` as a tensor.
    pub fn tensor_named(&self, name: &str) -> Result<&Tensor> {
        self.get(name)?.as_tensor().ok_or_else(|| Error::dtype(format!("field '{name}' is a string tensor")))
    }
    /// Every field as a tensor (an error if one holds strings).
    pub fn tensors(&self) -> Result<Vec<Tensor>> {
        (0..self.len()).map(|i| self.tensor(i).cloned()).collect()
    }
    /// A two-field element as `(x, y)`, as `fit` takes it.
    pub fn into_pair(self) -> Result<(Tensor, Tensor)> {
        if self.len() != 2 {
            bail!(invalid, "expected an (x, y) element of two fields, got {} fields", self.len());
        }
        Ok((self.tensor(0)?.clone(), self.tensor(1)?.clone()))
    }
    /// A short description: `(f32[256,16], i32[256])` or `{a: f32[], b: string[]}`.
    pub fn signature(&self) -> String {
        describe(&self.fields, self.names.as_deref(), |f| f.shape().clone())
    }
}

fn describe(fields: &[Field], names: Option<&[String]>, shape: impl Fn(&Field) -> Shape) -> String {
    let parts: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| match names {
            Some(n) => format!("{}: {}{}", n[i], f.type_name(), shape(f)),
            None => format!("{}{}", f.type_name(), shape(f)),
        })
        .collect();
    match names {
        Some(_) => format!("{{{}}}", parts.join(", ")),
        None => format!("({})", parts.join(", ")),
    }
}

pub(crate) fn check_names(names: &[String]) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            bail!(invalid, "field name '{n}' appears twice");
        }
    }
    Ok(())
}

impl From<Tensor> for Element {
    fn from(t: Tensor) -> Element {
        Element::tuple(vec![Field::Tensor(t)])
    }
}
impl From<Field> for Element {
    fn from(f: Field) -> Element {
        Element::tuple(vec![f])
    }
}
impl From<Strings> for Element {
    fn from(s: Strings) -> Element {
        Element::tuple(vec![Field::Strings(s)])
    }
}
impl From<(Tensor, Tensor)> for Element {
    fn from((x, y): (Tensor, Tensor)) -> Element {
        Element::tuple(vec![Field::Tensor(x), Field::Tensor(y)])
    }
}
impl From<Vec<Tensor>> for Element {
    fn from(ts: Vec<Tensor>) -> Element {
        Element::tuple(ts.into_iter().map(Field::Tensor).collect())
    }
}
impl From<Vec<Field>> for Element {
    fn from(fs: Vec<Field>) -> Element {
        Element::tuple(fs)
    }
}

// ---------------------------------------------------------------- raw rows

/// The bytes of a host tensor's elements in row-major order (borrowed when
/// contiguous).
pub(crate) fn tensor_bytes(t: &Tensor) -> Result<Cow<'_, [u8]>> {
    let v = t.value()?;
    v.storage.sync_host()?;
    let n = v.numel();
    if n == 0 {
        return Ok(Cow::Borrowed(&[]));
    }
    if v.layout.is_contiguous() {
        let size = v.dtype.size();
        let start = v.layout.offset * size;
        return Ok(Cow::Borrowed(&v.storage.host().bytes()[start..start + n * size]));
    }
    Ok(Cow::Owned(v.to_le_bytes()?))
}

/// A tensor of `dtype` and `shape` over a copy of `bytes` (already checked
/// to be whole elements of valid values).
pub(crate) fn tensor_from_bytes(dtype: DType, shape: Shape, bytes: &[u8]) -> Result<Tensor> {
    let n = shape.checked_numel()?;
    if n.checked_mul(dtype.size()) != Some(bytes.len()) {
        bail!(shape, "{} bytes cannot hold {dtype}{shape}", bytes.len());
    }
    let mut buf = HostBuffer::new(bytes.len())?;
    buf.bytes_mut().copy_from_slice(bytes);
    Ok(Value::from_buffer(dtype, shape, buf).into_tensor())
}

/// `shape` over `t`'s elements from element `first` on (a view: no copy
/// when `t` is contiguous).
pub(crate) fn view(t: &Tensor, shape: Shape, first: usize) -> Result<Tensor> {
    let v = t.value()?;
    let n = shape.checked_numel()?;
    if first + n > v.numel() {
        bail!(shape, "a view of {n} elements from {first} does not fit in {}", v.shape());
    }
    if v.layout.is_contiguous() {
        let mut layout = Layout::contiguous(shape);
        layout.offset = v.layout.offset + first;
        return Ok(v.view(layout).into_tensor());
    }
    let bytes = tensor_bytes(t)?;
    let size = v.dtype.size();
    tensor_from_bytes(v.dtype, shape, &bytes[first * size..(first + n) * size])
}

// ---------------------------------------------------------------- chunks

/// `len` consecutive elements of one structure: each field stacked along a
/// new leading axis of length `len`.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub fields: Vec<Field>,
    pub names: Option<Arc<[String]>>,
    pub len: usize,
}

impl Chunk {
    /// One element as a chunk of one row (no copy).
    pub fn from_element(e: Element) -> Result<Chunk> {
        Chunk::one_row(&e.fields, e.names)
    }

    /// Fields as the single row of a chunk: a leading axis of 1 (no copy).
    pub fn one_row(fields: &[Field], names: Option<Arc<[String]>>) -> Result<Chunk> {
        let fields = fields
            .iter()
            .map(|f| {
                let mut dims = vec![1];
                dims.extend_from_slice(f.shape().dims());
                f.reshaped(Shape::from(dims))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Chunk { fields, names, len: 1 })
    }

    /// Fields whose leading axes (all of length `len`) index the rows.
    pub fn new(fields: Vec<Field>, names: Option<Arc<[String]>>) -> Result<Chunk> {
        let len = match fields.first() {
            Some(f) => {
                f.shape().dims().first().copied().ok_or_else(|| Error::shape("a chunk field has no row axis"))?
            }
            None => bail!(invalid, "an element needs at least one field"),
        };
        for f in &fields {
            if f.shape().dims().first() != Some(&len) {
                bail!(shape, "fields have different numbers of rows: {} and {}", len, f.shape());
            }
        }
        if let Some(n) = &names {
            if n.len() != fields.len() {
                bail!(invalid, "{} names for {} fields", n.len(), fields.len());
            }
        }
        Ok(Chunk { fields, names, len })
    }

    /// The shape of field `f` for one row.
    pub fn row_shape(&self, f: usize) -> Shape {
        Shape::new(&self.fields[f].shape().dims()[1..])
    }

    /// Row `i` as an element (views: no copy).
    pub fn row(&self, i: usize) -> Result<Element> {
        let c = self.slice(i, i + 1)?;
        let fields =
            c.fields.iter().enumerate().map(|(f, field)| field.reshaped(c.row_shape(f))).collect::<Result<Vec<_>>>()?;
        Ok(Element { fields, names: self.names.clone() })
    }

    /// Rows `start..end` (views for tensors).
    pub fn slice(&self, start: usize, end: usize) -> Result<Chunk> {
        if start > end || end > self.len {
            bail!(invalid, "rows {start}..{end} of a chunk of {}", self.len);
        }
        if start == 0 && end == self.len {
            return Ok(self.clone());
        }
        let fields = self
            .fields
            .iter()
            .map(|f| {
                let mut dims: Vec<usize> = f.shape().dims().to_vec();
                let per_row: usize = dims[1..].iter().product();
                dims[0] = end - start;
                Ok(match f {
                    Field::Tensor(t) => Field::Tensor(view(t, Shape::from(dims), start * per_row)?),
                    Field::Strings(s) => Field::Strings(Strings::new(
                        s.values()[start * per_row..end * per_row].to_vec(),
                        Shape::from(dims),
                    )?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Chunk { fields, names: self.names.clone(), len: end - start })
    }

    /// Whether rows of `other` have the structure of rows of this chunk
    /// (field count, names, types and per-row shapes).
    pub fn same_rows(&self, other: &Chunk) -> bool {
        self.fields.len() == other.fields.len()
            && self.names == other.names
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|(a, b)| a.type_name() == b.type_name() && a.shape().dims()[1..] == b.shape().dims()[1..])
    }

    /// The rows of each chunk in turn, as one chunk (a copy). The chunks
    /// must hold rows of one structure; `what` names the transform in the error.
    pub fn concat(parts: &[Chunk], what: &str) -> Result<Chunk> {
        let first = parts.first().ok_or_else(|| Error::invalid(format!("{what}: nothing to concatenate")))?;
        if parts.len() == 1 {
            return Ok(first.clone());
        }
        for (k, p) in parts.iter().enumerate() {
            if !first.same_rows(p) {
                bail!(
                    shape,
                    "{what}: elements differ in structure or shape: element {} is {} but a later one (part {k}) is {}",
                    0,
                    first.row_signature(),
                    p.row_signature()
                );
            }
        }
        let len: usize = parts.iter().map(|p| p.len).sum();
        let mut fields = Vec::with_capacity(first.fields.len());
        for f in 0..first.fields.len() {
            let mut dims = first.fields[f].shape().dims().to_vec();
            dims[0] = len;
            let shape = Shape::from(dims);
            fields.push(match &first.fields[f] {
                Field::Tensor(t0) => {
                    let mut bytes = Vec::new();
                    for p in parts {
                        if let Field::Tensor(t) = &p.fields[f] {
                            bytes.extend_from_slice(&tensor_bytes(t)?);
                        }
                    }
                    Field::Tensor(tensor_from_bytes(t0.dtype(), shape, &bytes)?)
                }
                Field::Strings(_) => {
                    let mut values = Vec::new();
                    for p in parts {
                        if let Field::Strings(s) = &p.fields[f] {
                            values.extend_from_slice(s.values());
                        }
                    }
                    Field::Strings(Strings::new(values, shape)?)
                }
            });
        }
        Ok(Chunk { fields, names: first.names.clone(), len })
    }

    /// The rows at `rows` (a copy).
    pub fn gather(&self, rows: &[usize]) -> Result<Chunk> {
        let fields = self
            .fields
            .iter()
            .map(|f| {
                let mut dims = f.shape().dims().to_vec();
                let per_row: usize = dims[1..].iter().product();
                dims[0] = rows.len();
                Ok(match f {
                    Field::Tensor(t) => {
                        let src = tensor_bytes(t)?;
                        let w = per_row * t.dtype().size();
                        let mut out = Vec::with_capacity(rows.len() * w);
                        push_rows(&mut out, w, rows.iter().map(|&r| &src[r * w..(r + 1) * w]));
                        Field::Tensor(tensor_from_bytes(t.dtype(), Shape::from(dims), &out)?)
                    }
                    Field::Strings(s) => {
                        let mut out = Vec::with_capacity(rows.len() * per_row);
                        for &r in rows {
                            out.extend_from_slice(&s.values()[r * per_row..(r + 1) * per_row]);
                        }
                        Field::Strings(Strings::new(out, Shape::from(dims))?)
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Chunk { fields, names: self.names.clone(), len: rows.len() })
    }

    /// Elements stacked into chunks: one chunk per run of elements of one
    /// structure.
    pub fn stack(elements: Vec<Element>) -> Result<Vec<Chunk>> {
        let rows = elements.into_iter().map(Chunk::from_element).collect::<Result<Vec<_>>>()?;
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=rows.len() {
            if i == rows.len() || !rows[start].same_rows(&rows[i]) {
                out.push(Chunk::concat(&rows[start..i], "stack")?);
                start = i;
            }
        }
        Ok(out)
    }

    /// `(f32[16], i32[])` for one row.
    pub fn row_signature(&self) -> String {
        describe(&self.fields, self.names.as_deref(), |f| Shape::new(&f.shape().dims()[1..]))
    }
}

/// Append rows of `width` bytes to `out`. The common widths copy with a
/// size known at compile time: a `memmove` call per 4-byte value costs
/// more than the copy itself.
pub(crate) fn push_rows<'a>(out: &mut Vec<u8>, width: usize, rows: impl Iterator<Item = &'a [u8]>) {
    fn fixed<'a, const W: usize>(out: &mut Vec<u8>, rows: impl Iterator<Item = &'a [u8]>) {
        for row in rows {
            if let Ok(bytes) = <&[u8; W]>::try_from(row) {
                out.extend_from_slice(bytes);
            }
        }
    }
    match width {
        1 => fixed::<1>(out, rows),
        2 => fixed::<2>(out, rows),
        4 => fixed::<4>(out, rows),
        8 => fixed::<8>(out, rows),
        16 => fixed::<16>(out, rows),
        _ => rows.for_each(|row| out.extend_from_slice(row)),
    }
}
