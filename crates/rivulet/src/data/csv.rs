//! CSV files as a dataset: one element per row, a dictionary of typed
//! columns (`tf.data.experimental.make_csv_dataset` / `CsvDataset`).
//!
//! Column types come from a schema or are inferred from the first rows
//! (the narrowest of i32, i64, f32, f64 and string that holds every
//! value, as TensorFlow infers them). Files stream: they are read in
//! blocks cut at line ends outside quotes, and the blocks of a round are
//! parsed in parallel, so a file larger than memory passes through a
//! bounded window. A row that cannot be read is an error item naming the
//! file, line and column, after the rows before it; the next rows follow.

use super::dataset::{Cardinality, Dataset, Node, Stream};
use super::element::{Chunk, Field, Strings};
use super::transform::scalar_bytes;
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::{DType, Scalar, Shape};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// Gzip when the name ends in `.gz` or the file starts with gzip's magic bytes.
    #[default]
    Auto,
    None,
    Gzip,
}

/// A column's type: a numeric (or bool) dtype, or text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Numeric(DType),
    Text,
}

impl ColumnType {
    fn name(self) -> &'static str {
        match self {
            ColumnType::Numeric(d) => d.name(),
            ColumnType::Text => "string",
        }
    }
}

/// A value that fills an empty field.
#[derive(Clone, Debug, PartialEq)]
pub enum DefaultValue {
    Number(Scalar),
    Text(String),
}

/// One column of a CSV schema.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvColumn {
    pub name: String,
    pub kind: ColumnType,
    /// What an empty field becomes; `None`: an empty field is an error (a required column).
    pub default: Option<DefaultValue>,
}

impl CsvColumn {
    /// A required numeric column.
    pub fn numeric(name: impl Into<String>, dtype: DType) -> CsvColumn {
        CsvColumn { name: name.into(), kind: ColumnType::Numeric(dtype), default: None }
    }
    /// A required text column.
    pub fn text(name: impl Into<String>) -> CsvColumn {
        CsvColumn { name: name.into(), kind: ColumnType::Text, default: None }
    }
    /// The column with a default for empty fields.
    pub fn with_default(mut self, default: DefaultValue) -> CsvColumn {
        self.default = Some(default);
        self
    }
}

/// Options of [`Dataset::csv`].
#[derive(Clone, Debug)]
pub struct CsvOptions {
    /// The first line of each file names the columns (and is skipped).
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    /// Every column of the file in order; `None`: names from the header, types inferred.
    pub schema: Option<Vec<CsvColumn>>,
    /// The columns to keep, in this order (`None`: all, in file order).
    pub select: Option<Vec<String>>,
    pub compression: Compression,
    /// Rows read to infer the types.
    pub infer_rows: usize,
    /// A field that means "missing" besides the empty one (TensorFlow's `na_value`).
    pub na_value: Option<String>,
    /// Bytes per parsing block (several blocks are parsed at once).
    pub block_bytes: usize,
}

impl Default for CsvOptions {
    fn default() -> CsvOptions {
        CsvOptions {
            header: true,
            delimiter: b',',
            quote: b'"',
            schema: None,
            select: None,
            compression: Compression::Auto,
            infer_rows: 100,
            na_value: None,
            block_bytes: 256 << 10,
        }
    }
}

impl CsvOptions {
    pub fn header(mut self, header: bool) -> CsvOptions {
        self.header = header;
        self
    }
    pub fn delimiter(mut self, delimiter: u8) -> CsvOptions {
        self.delimiter = delimiter;
        self
    }
    pub fn schema(mut self, columns: Vec<CsvColumn>) -> CsvOptions {
        self.schema = Some(columns);
        self
    }
    pub fn select<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> CsvOptions {
        self.select = Some(columns.into_iter().map(Into::into).collect());
        self
    }
    pub fn compression(mut self, compression: Compression) -> CsvOptions {
        self.compression = compression;
        self
    }
    pub fn na_value(mut self, na: impl Into<String>) -> CsvOptions {
        self.na_value = Some(na.into());
        self
    }
}

/// A file opened for reading, decompressed as asked.
pub(crate) fn open_maybe_gzip(path: &Path, compression: Compression) -> Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path).map_err(|e| Error::from(e).with_path(path))?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let gzip = match compression {
        Compression::Gzip => true,
        Compression::None => false,
        Compression::Auto => {
            path.extension().is_some_and(|e| e == "gz")
                || r.fill_buf().map_err(|e| Error::from(e).with_path(path))?.starts_with(&[0x1f, 0x8b])
        }
    };
    Ok(if gzip { Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(r))) } else { Box::new(r) })
}

/// What the parser does with each column of the file.
struct Plan {
    /// For each file column: its output slot, or `None` to skip it.
    slots: Vec<Option<usize>>,
    /// The output columns in order.
    columns: Vec<CsvColumn>,
    names: Arc<[String]>,
    delimiter: u8,
    quote: u8,
    header: bool,
    na_value: Option<String>,
    compression: Compression,
    block_bytes: usize,
}

struct Csv {
    files: Vec<PathBuf>,
    plan: Arc<Plan>,
}

impl Node for Csv {
    fn open(&self) -> Result<Stream> {
        Ok(Box::new(CsvStream {
            files: self.files.clone(),
            next_file: 0,
            reader: None,
            carry: Vec::new(),
            line: 0,
            plan: self.plan.clone(),
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
        }))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        format!("csv({})", names.join(", "))
    }
}

struct CsvStream {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<(Arc<Path>, Box<dyn Read + Send>)>,
    /// Bytes read past the last block's end.
    carry: Vec<u8>,
    /// Lines of the current file before `carry`.
    line: u64,
    plan: Arc<Plan>,
    queue: VecDeque<Result<Chunk>>,
    /// Blocks being parsed, in file order.
    in_flight: VecDeque<Parse>,
}

/// Bytes of one file that end at a line end outside quotes (or the file's end).
struct Block {
    path: Arc<Path>,
    bytes: Vec<u8>,
    first_line: u64,
}

impl CsvStream {
    /// Open the next file, skipping its header line.
    fn open_next(&mut self) -> Result<bool> {
        let Some(path) = self.files.get(self.next_file).cloned() else { return Ok(false) };
        self.next_file += 1;
        let mut r = open_maybe_gzip(&path, self.plan.compression)?;
        self.carry.clear();
        self.line = 1;
        if self.plan.header {
            let mut header = Vec::new();
            loop {
                let mut byte = [0u8; 1];
                match r.read(&mut byte) {
                    Ok(0) => break,
                    Ok(_) if byte[0] == b'\n' => break,
                    Ok(_) => header.push(byte[0]),
                    Err(e) => return Err(Error::from(e).with_path(&path)),
                }
            }
            self.line = 2;
        }
        self.reader = Some((Arc::from(path.as_path()), r));
        Ok(true)
    }

    /// The next block of the current file, or `None` at its end.
    fn next_block(&mut self) -> Result<Option<Block>> {
        let Some((path, r)) = self.reader.as_mut() else { return Ok(None) };
        let path = path.clone();
        let want = self.plan.block_bytes.max(1);
        let mut eof = false;
        loop {
            let start = self.carry.len();
            self.carry.resize(start + want, 0);
            let mut got = 0;
            while got < want {
                match r.read(&mut self.carry[start + got..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.carry.truncate(start + got);
                        return Err(Error::format(format!("{}: line {}: {e}", path.display(), self.line)));
                    }
                }
            }
            self.carry.truncate(start + got);
            let cut = if eof { Some(self.carry.len()) } else { safe_cut(&self.carry, self.plan.quote) };
            if let Some(cut) = cut {
                let rest = self.carry.split_off(cut);
                let bytes = std::mem::replace(&mut self.carry, rest);
                let first_line = self.line;
                self.line += memchr::memchr_iter(b'\n', &bytes).count() as u64;
                if eof {
                    self.reader = None;
                }
                if bytes.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Block { path, bytes, first_line }));
            }
            // A row longer than a block: read more.
        }
    }
}

/// The position after the last line end outside quotes (quotes are
/// balanced in RFC 4180 text: an escaped quote is doubled).
fn safe_cut(bytes: &[u8], quote: u8) -> Option<usize> {
    if memchr::memchr(quote, bytes).is_none() {
        return memchr::memrchr(b'\n', bytes).map(|i| i + 1);
    }
    let mut inside = false;
    let mut cut = None;
    for i in memchr::memchr2_iter(quote, b'\n', bytes) {
        if bytes[i] == quote {
            inside = !inside;
        } else if !inside {
            cut = Some(i + 1);
        }
    }
    cut
}

impl CsvStream {
    /// Read blocks and start parsing them until `in_flight` holds a round's worth.
    fn fill(&mut self) {
        let round = 2 * rayon::current_num_threads() + 1;
        while self.in_flight.len() < round {
            if self.reader.is_none() {
                match self.open_next() {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        self.in_flight.push_back(Parse::Done(vec![Err(e)]));
                        continue;
                    }
                }
            }
            match self.next_block() {
                Ok(Some(b)) => {
                    let plan = self.plan.clone();
                    // On a pool thread, waiting for a job queued behind us could
                    // deadlock: parse here instead.
                    if rayon::current_thread_index().is_some() {
                        self.in_flight.push_back(Parse::Done(parse_block(&b, &plan)));
                    } else {
                        let (tx, rx) = std::sync::mpsc::sync_channel(1);
                        rayon::spawn(move || {
                            let _ = tx.send(parse_block(&b, &plan));
                        });
                        self.in_flight.push_back(Parse::Pending(rx));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.reader = None;
                    self.in_flight.push_back(Parse::Done(vec![Err(e)]));
                }
            }
        }
    }
}

/// A block's parse: started on the thread pool, or done.
enum Parse {
    Pending(std::sync::mpsc::Receiver<Vec<Result<Chunk>>>),
    Done(Vec<Result<Chunk>>),
}

impl Iterator for CsvStream {
    type Item = Result<Chunk>;
    fn next(&mut self) -> Option<Result<Chunk>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            // Blocks are parsed ahead on the pool while the consumer works.
            self.fill();
            let parsed = match self.in_flight.pop_front()? {
                Parse::Done(items) => items,
                Parse::Pending(rx) => rx
                    .recv()
                    .unwrap_or_else(|_| vec![Err(Error::graph("csv: a parsing task ended without its result"))]),
            };
            self.queue.extend(parsed);
            self.fill();
        }
    }
}

/// The values of one output column for a run of rows.
enum Builder {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Other(DType, Vec<u8>),
    Text(Vec<String>),
}

impl Builder {
    fn new(kind: ColumnType) -> Builder {
        match kind {
            ColumnType::Numeric(DType::F32) => Builder::F32(Vec::new()),
            ColumnType::Numeric(DType::F64) => Builder::F64(Vec::new()),
            ColumnType::Numeric(DType::I32) => Builder::I32(Vec::new()),
            ColumnType::Numeric(DType::I64) => Builder::I64(Vec::new()),
            ColumnType::Numeric(d) => Builder::Other(d, Vec::new()),
            ColumnType::Text => Builder::Text(Vec::new()),
        }
    }
    fn truncate(&mut self, rows: usize) {
        match self {
            Builder::F32(v) => v.truncate(rows),
            Builder::F64(v) => v.truncate(rows),
            Builder::I32(v) => v.truncate(rows),
            Builder::I64(v) => v.truncate(rows),
            Builder::Other(d, v) => v.truncate(rows * d.size()),
            Builder::Text(v) => v.truncate(rows),
        }
    }
    /// Append a field's text; `Err` when it is not a value of the column's type.
    fn push(&mut self, text: &[u8]) -> std::result::Result<(), ()> {
        match self {
            Builder::Text(v) => v.push(std::str::from_utf8(text).map_err(drop)?.to_string()),
            Builder::F32(v) => v.push(number(text)?),
            Builder::F64(v) => v.push(number(text)?),
            Builder::I32(v) => v.push(number(text)?),
            Builder::I64(v) => v.push(number(text)?),
            Builder::Other(d, v) => {
                let s = std::str::from_utf8(text).map_err(drop)?;
                v.extend_from_slice(&scalar_bytes(parse_scalar(s.trim(), *d)?, *d))
            }
        }
        Ok(())
    }
    fn push_default(&mut self, d: &DefaultValue) -> std::result::Result<(), ()> {
        match (self, d) {
            (Builder::Text(v), DefaultValue::Text(s)) => v.push(s.clone()),
            (Builder::Text(v), DefaultValue::Number(x)) => v.push(format!("{}", x.as_f64())),
            (b, DefaultValue::Number(x)) => match b {
                Builder::F32(v) => v.push(x.as_f64() as f32),
                Builder::F64(v) => v.push(x.as_f64()),
                Builder::I32(v) => v.push(x.as_i64() as i32),
                Builder::I64(v) => v.push(x.as_i64()),
                Builder::Other(dt, v) => v.extend_from_slice(&scalar_bytes(*x, *dt)),
                Builder::Text(_) => return Err(()),
            },
            (b, DefaultValue::Text(s)) => return b.push(s.as_bytes()),
        }
        Ok(())
    }
    fn finish(self, rows: usize) -> Result<Field> {
        let shape = Shape::new(&[rows]);
        Ok(match self {
            Builder::F32(v) => Field::Tensor(Tensor::from_slice(&v, shape)?),
            Builder::F64(v) => Field::Tensor(Tensor::from_slice(&v, shape)?),
            Builder::I32(v) => Field::Tensor(Tensor::from_slice(&v, shape)?),
            Builder::I64(v) => Field::Tensor(Tensor::from_slice(&v, shape)?),
            Builder::Other(d, v) => Field::Tensor(super::element::tensor_from_bytes(d, shape, &v)?),
            Builder::Text(v) => Field::Strings(Strings::new(v, shape)?),
        })
    }
}

/// A number from a field's bytes (surrounding spaces allowed), correctly
/// rounded; spellings `lexical` does not take (`+inf`, `NaN` in any case)
/// go through the standard library's parser.
fn number<T: lexical_core::FromLexical + std::str::FromStr>(text: &[u8]) -> std::result::Result<T, ()> {
    let t = text.trim_ascii();
    match lexical_core::parse::<T>(t) {
        Ok(v) => Ok(v),
        Err(_) => std::str::from_utf8(t).map_err(drop)?.parse().map_err(drop),
    }
}

/// A number or bool of `dtype` written as `s` (integers range-checked).
fn parse_scalar(s: &str, dtype: DType) -> std::result::Result<Scalar, ()> {
    if dtype == DType::Bool {
        return match s {
            "1" | "true" | "True" | "TRUE" => Ok(Scalar::Bool(true)),
            "0" | "false" | "False" | "FALSE" => Ok(Scalar::Bool(false)),
            _ => Err(()),
        };
    }
    if dtype.is_float() {
        return s.parse::<f64>().map(Scalar::F64).map_err(drop);
    }
    if dtype.is_int() {
        let (lo, hi): (i128, i128) = match dtype {
            DType::I8 => (i8::MIN as i128, i8::MAX as i128),
            DType::I16 => (i16::MIN as i128, i16::MAX as i128),
            DType::U8 => (0, u8::MAX as i128),
            DType::U16 => (0, u16::MAX as i128),
            DType::U32 => (0, u32::MAX as i128),
            DType::U64 => (0, u64::MAX as i128),
            _ => (i64::MIN as i128, i64::MAX as i128),
        };
        let v: i128 = s.parse().map_err(drop)?;
        if v < lo || v > hi {
            return Err(());
        }
        // u64 values above i64::MAX wrap here and back in the conversion to u64.
        return Ok(Scalar::I64(v as i64));
    }
    Err(())
}

/// Rows of one block into column builders; chunks and errors in order.
struct BlockParser<'p> {
    plan: &'p Plan,
    path: &'p Path,
    builders: Vec<Builder>,
    rows: usize,
    out: Vec<Result<Chunk>>,
}

impl<'p> BlockParser<'p> {
    fn new(plan: &'p Plan, path: &'p Path) -> BlockParser<'p> {
        let builders = plan.columns.iter().map(|c| Builder::new(c.kind)).collect();
        BlockParser { plan, path, builders, rows: 0, out: Vec::new() }
    }

    /// The rows so far as a chunk.
    fn flush(&mut self) {
        if self.rows > 0 {
            let fresh = self.plan.columns.iter().map(|c| Builder::new(c.kind)).collect();
            let rows = self.rows;
            let fields: Result<Vec<Field>> =
                std::mem::replace(&mut self.builders, fresh).into_iter().map(|b| b.finish(rows)).collect();
            self.out.push(fields.and_then(|f| Chunk::new(f, Some(self.plan.names.clone()))));
            self.rows = 0;
        }
    }

    /// An error item after the rows before it.
    fn fail(&mut self, line: u64, message: String) {
        for b in self.builders.iter_mut() {
            b.truncate(self.rows);
        }
        self.flush();
        self.out.push(Err(Error::format(format!("{}: line {line}: {message}", self.path.display()))));
    }

    /// One record's fields, in file column order.
    fn record<'a>(&mut self, line: u64, fields: impl Iterator<Item = &'a [u8]>) {
        let plan = self.plan;
        let mut count = 0usize;
        for (i, text) in fields.enumerate() {
            count = i + 1;
            let Some(&Some(slot)) = plan.slots.get(i) else { continue };
            let column = &plan.columns[slot];
            let missing = text.is_empty() || plan.na_value.as_deref().is_some_and(|na| na.as_bytes() == text);
            let pushed = if missing {
                match &column.default {
                    Some(d) => self.builders[slot].push_default(d),
                    None if column.kind == ColumnType::Text && text.is_empty() => self.builders[slot].push(text),
                    None => return self.fail(line, format!("column '{}': empty field and no default", column.name)),
                }
            } else {
                self.builders[slot].push(text)
            };
            if pushed.is_err() {
                let shown = String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned();
                return self
                    .fail(line, format!("column '{}': cannot parse '{shown}' as {}", column.name, column.kind.name()));
            }
        }
        if count != plan.slots.len() {
            return self.fail(line, format!("{count} fields, expected {}", plan.slots.len()));
        }
        self.rows += 1;
    }
}

/// The pieces of `bytes` between occurrences of `sep` (as `slice::split`,
/// found with `memchr`'s vectorized search).
fn split_at_byte(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(sep, bytes).chain(std::iter::once(bytes.len())).map(move |end| {
        let piece = &bytes[start..end];
        start = end + 1;
        piece
    })
}

/// One block's rows as chunks, with an error item for each bad row after
/// the rows before it. A block without quote characters is split at line
/// ends and delimiters directly; one with quotes goes through `csv`.
fn parse_block(block: &Block, plan: &Plan) -> Vec<Result<Chunk>> {
    let mut p = BlockParser::new(plan, &block.path);
    let bytes = block.bytes.as_slice();
    if memchr::memchr(plan.quote, bytes).is_none() {
        for (line, text) in (block.first_line..).zip(split_at_byte(bytes, b'\n')) {
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            // Blank lines hold no record (as the csv reader skips them).
            if !text.is_empty() {
                p.record(line, split_at_byte(text, plan.delimiter));
            }
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(plan.delimiter)
            .quote(plan.quote)
            .flexible(true)
            .from_reader(bytes);
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let line = block.first_line + record.position().map_or(1, |pos| pos.line()) - 1;
                    p.record(line, record.iter());
                }
                Err(e) => {
                    p.flush();
                    p.out.push(Err(Error::format(format!("{}: {e}", block.path.display()))));
                }
            }
        }
    }
    p.flush();
    p.out
}

/// The narrowest type of i32, i64, f32, f64 and string holding `s`.
fn widen(current: ColumnType, s: &str) -> ColumnType {
    let order = [
        ColumnType::Numeric(DType::I32),
        ColumnType::Numeric(DType::I64),
        ColumnType::Numeric(DType::F32),
        ColumnType::Numeric(DType::F64),
        ColumnType::Text,
    ];
    let fits = |t: ColumnType| match t {
        ColumnType::Numeric(DType::I32) => s.parse::<i32>().is_ok(),
        ColumnType::Numeric(DType::I64) => s.parse::<i64>().is_ok(),
        ColumnType::Numeric(DType::F32) => s.parse::<f64>().is_ok_and(|v| !v.is_finite() || v.abs() <= f32::MAX as f64),
        ColumnType::Numeric(_) => s.parse::<f64>().is_ok(),
        ColumnType::Text => true,
    };
    let start = order.iter().position(|&t| t == current).unwrap_or(0);
    order[start..].iter().copied().find(|&t| fits(t)).unwrap_or(ColumnType::Text)
}

/// The file's column names and, without a schema, the inferred types.
fn read_schema(path: &Path, options: &CsvOptions) -> Result<Vec<CsvColumn>> {
    let r = open_maybe_gzip(path, options.compression)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(options.header)
        .delimiter(options.delimiter)
        .quote(options.quote)
        .flexible(true)
        .from_reader(r);
    let header: Vec<String> = if options.header {
        let h = reader.byte_headers().map_err(|e| Error::format(format!("{}: header: {e}", path.display())))?;
        let names = h.iter().map(|f| std::str::from_utf8(f).map(|n| n.trim().to_string()));
        names.collect::<std::result::Result<_, _>>().map_err(|_| {
            Error::format(format!(
                "{}: line 1: the header is not UTF-8 text (compressed, or not a CSV file?)",
                path.display()
            ))
        })?
    } else {
        Vec::new()
    };
    if let Some(schema) = &options.schema {
        if options.header && header.len() != schema.len() {
            bail!(format, "{}: the header has {} columns, the schema {}", path.display(), header.len(), schema.len());
        }
        return Ok(schema.clone());
    }
    let mut kinds: Vec<Option<ColumnType>> = vec![None; header.len()];
    let mut record = csv::ByteRecord::new();
    for _ in 0..options.infer_rows {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => bail!(format, "{}: {e}", path.display()),
        }
        if kinds.is_empty() {
            kinds = vec![None; record.len()];
        }
        for (k, field) in kinds.iter_mut().zip(record.iter()) {
            let s = String::from_utf8_lossy(field);
            let s = s.trim();
            if s.is_empty() || options.na_value.as_deref() == Some(s) {
                continue;
            }
            *k = Some(widen(k.unwrap_or(ColumnType::Numeric(DType::I32)), s));
        }
    }
    if kinds.is_empty() {
        bail!(format, "{}: no columns", path.display());
    }
    Ok(kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| CsvColumn {
            name: header.get(i).cloned().unwrap_or_else(|| format!("column_{i}")),
            kind: k.unwrap_or(ColumnType::Numeric(DType::F32)),
            default: None,
        })
        .collect())
}

impl Dataset {
    /// The rows of CSV files, read in turn, as dictionaries of typed
    /// columns (see [`CsvOptions`]). The first file gives the column names
    /// and, without a schema, the types.
    pub fn csv<P: AsRef<Path>>(paths: &[P], options: CsvOptions) -> Result<Dataset> {
        let files: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let first = files.first().ok_or_else(|| Error::invalid("csv: no files"))?;
        let all = read_schema(first, &options)?;
        let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
        super::element::check_names(&names)
            .map_err(|e| Error::format(format!("{}: {}", first.display(), e.message())))?;
        let selected: Vec<usize> = match &options.select {
            None => (0..all.len()).collect(),
            Some(sel) => sel
                .iter()
                .map(|s| {
                    names.iter().position(|n| n == s).ok_or_else(|| {
                        Error::not_found(format!(
                            "{}: no column '{s}' (columns: {})",
                            first.display(),
                            names.join(", ")
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        let mut slots = vec![None; all.len()];
        for (out, &col) in selected.iter().enumerate() {
            if slots[col].is_some() {
                bail!(invalid, "csv: column '{}' selected twice", names[col]);
            }
            slots[col] = Some(out);
        }
        let columns: Vec<CsvColumn> = selected.iter().map(|&c| all[c].clone()).collect();
        let out_names: Arc<[String]> = columns.iter().map(|c| c.name.clone()).collect();
        let plan = Plan {
            slots,
            columns,
            names: out_names,
            delimiter: options.delimiter,
            quote: options.quote,
            header: options.header,
            na_value: options.na_value.clone(),
            compression: options.compression,
            block_bytes: options.block_bytes,
        };
        Ok(Dataset::from_node(Csv { files, plan: Arc::new(plan) }))
    }

    /// The column names and types a CSV dataset yields, in order.
    pub fn csv_columns<P: AsRef<Path>>(path: P, options: &CsvOptions) -> Result<Vec<CsvColumn>> {
        read_schema(path.as_ref(), options)
    }
}
