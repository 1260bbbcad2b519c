//! Parquet and Arrow IPC files as datasets, with the `parquet` and
//! `arrow` crates: one element per row, a dictionary of the chosen
//! columns. Parquet is read one row group at a time (bounded memory),
//! Arrow IPC one record batch at a time. Nulls have no tensor value: a
//! null is an error naming the file, the row group or batch and the column.

use super::dataset::{Cardinality, Dataset, Node, Stream};
use super::element::{Chunk, Field, Strings};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::{Element as Scalar, Shape};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per record batch the readers produce.
const BATCH_ROWS: usize = 4096;

fn primitive<T: ArrowPrimitiveType>(a: &dyn Array) -> Result<Tensor>
where
    T::Native: Scalar,
{
    let v = a.as_primitive::<T>().values();
    Tensor::from_slice(v, Shape::new(&[v.len()]))
}

/// An Arrow column as a field; `at` names the file and row group or batch.
fn column(a: &dyn Array, name: &str, at: &str) -> Result<Field> {
    if a.null_count() > 0 {
        bail!(format, "{at}, column '{name}': {} null values (nulls have no tensor value)", a.null_count());
    }
    Ok(Field::Tensor(match a.data_type() {
        DataType::Float32 => primitive::<Float32Type>(a)?,
        DataType::Float64 => primitive::<Float64Type>(a)?,
        DataType::Float16 => primitive::<Float16Type>(a)?,
        DataType::Int8 => primitive::<Int8Type>(a)?,
        DataType::Int16 => primitive::<Int16Type>(a)?,
        DataType::Int32 => primitive::<Int32Type>(a)?,
        DataType::Int64 => primitive::<Int64Type>(a)?,
        DataType::UInt8 => primitive::<UInt8Type>(a)?,
        DataType::UInt16 => primitive::<UInt16Type>(a)?,
        DataType::UInt32 => primitive::<UInt32Type>(a)?,
        DataType::UInt64 => primitive::<UInt64Type>(a)?,
        DataType::Boolean => {
            let b: Vec<bool> = a.as_boolean().values().iter().collect();
            Tensor::from_slice(&b, Shape::new(&[b.len()]))?
        }
        DataType::Utf8 => {
            let s: Vec<String> = a.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()).collect();
            return Ok(Field::Strings(Strings::vector(s)));
        }
        DataType::LargeUtf8 => {
            let s: Vec<String> = a.as_string::<i64>().iter().map(|v| v.unwrap_or_default().to_string()).collect();
            return Ok(Field::Strings(Strings::vector(s)));
        }
        other => bail!(unimplemented, "{at}, column '{name}': Arrow type {other} is not supported"),
    }))
}

/// A record batch (already projected) as a chunk of named columns.
fn batch_chunk(b: &RecordBatch, at: &str) -> Result<Chunk> {
    let schema = b.schema();
    let names: Arc<[String]> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let fields = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| column(c.as_ref(), f.name(), at))
        .collect::<Result<_>>()?;
    Chunk::new(fields, Some(names))
}

/// The column indices of `wanted` in `schema` (all when `None`), erroring on an unknown one.
fn projection(schema: &SchemaRef, wanted: &Option<Vec<String>>, path: &Path) -> Result<Vec<usize>> {
    match wanted {
        None => Ok((0..schema.fields().len()).collect()),
        Some(w) => w
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    let all: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    Error::not_found(format!("{}: no column '{name}' (columns: {})", path.display(), all.join(", ")))
                })
            })
            .collect(),
    }
}

fn parquet_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::format(format!("{}: {what}: {e}", path.display()))
}

/// The first of the `picked` columns of row group `group` that cannot be
/// decoded on its own: the reader's error does not say which one failed.
fn damaged_column(path: &Path, group: usize, picked: &[usize]) -> Option<String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    picked.iter().find_map(|&c| {
        let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).ok()?).ok()?;
        let name = b.schema().field(c).name().clone();
        let mask = ProjectionMask::roots(b.parquet_schema(), [c]);
        let mut r = b.with_projection(mask).with_row_groups(vec![group]).build().ok()?;
        r.any(|batch| batch.is_err()).then_some(name)
    })
}

struct Parquet {
    files: Vec<PathBuf>,
    columns: Option<Vec<String>>,
}

/// One Parquet file's row groups, one reader at a time.
fn parquet_file(path: PathBuf, columns: Option<Vec<String>>) -> Result<Stream> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let open = |path: &Path| -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
        let f = std::fs::File::open(path).map_err(|e| Error::from(e).with_path(path))?;
        ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| parquet_error(path, "not a readable Parquet file", e))
    };
    let first = open(&path)?;
    let groups = first.metadata().num_row_groups();
    let picked = projection(first.schema(), &columns, &path)?;
    drop(first);
    let mut group = 0usize;
    let mut reader: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader> = None;
    // The projected columns come back in file order: reorder them as asked.
    let order: Vec<String> = match &columns {
        Some(c) => c.clone(),
        None => Vec::new(),
    };
    Ok(Box::new(std::iter::from_fn(move || loop {
        if let Some(r) = reader.as_mut() {
            let at = format!("{}: row group {}", path.display(), group - 1);
            match r.next() {
                Some(Ok(b)) => {
                    let b = if order.is_empty() {
                        Ok(b)
                    } else {
                        let idx: Vec<usize> = order.iter().filter_map(|n| b.schema().index_of(n).ok()).collect();
                        b.project(&idx).map_err(|e| parquet_error(&path, "projection", e))
                    };
                    return Some(b.and_then(|b| batch_chunk(&b, &at)));
                }
                Some(Err(e)) => {
                    reader = None;
                    let column = damaged_column(&path, group - 1, &picked)
                        .map_or_else(String::new, |c| format!(", column '{c}'"));
                    return Some(Err(Error::format(format!("{at}{column}: {e}"))));
                }
                None => reader = None,
            }
        }
        if group >= groups {
            return None;
        }
        group += 1;
        let built = open(&path).and_then(|b| {
            let mask = ProjectionMask::roots(b.parquet_schema(), picked.iter().copied());
            b.with_projection(mask)
                .with_row_groups(vec![group - 1])
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| Error::format(format!("{}: row group {}: {e}", path.display(), group - 1)))
        });
        match built {
            Ok(r) => reader = Some(r),
            Err(e) => return Some(Err(e)),
        }
    })))
}

impl Node for Parquet {
    fn open(&self) -> Result<Stream> {
        let files = self.files.clone();
        let columns = self.columns.clone();
        let mut next = 0usize;
        let mut current: Option<Stream> = None;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if let Some(s) = current.as_mut() {
                if let Some(item) = s.next() {
                    return Some(item);
                }
                current = None;
            }
            let path = files.get(next)?.clone();
            next += 1;
            match parquet_file(path, columns.clone()) {
                Ok(s) => current = Some(s),
                Err(e) => return Some(Err(e)),
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        format!("parquet({})", names.join(", "))
    }
}

struct ArrowIpc {
    path: PathBuf,
    columns: Option<Vec<String>>,
}

impl Node for ArrowIpc {
    fn open(&self) -> Result<Stream> {
        let path = self.path.clone();
        let f = std::fs::File::open(&path).map_err(|e| Error::from(e).with_path(&path))?;
        let reader = arrow_ipc::reader::FileReader::try_new(f, None)
            .map_err(|e| parquet_error(&path, "not a readable Arrow IPC file", e))?;
        let picked = projection(&reader.schema(), &self.columns, &path)?;
        let mut batch = 0usize;
        let mut reader = reader;
        Ok(Box::new(std::iter::from_fn(move || {
            let item = reader.next()?;
            batch += 1;
            let at = format!("{}: record batch {}", path.display(), batch - 1);
            Some(
                item.map_err(|e| Error::format(format!("{at}: {e}")))
                    .and_then(|b| b.project(&picked).map_err(|e| Error::format(format!("{at}: {e}"))))
                    .and_then(|b| batch_chunk(&b, &at)),
            )
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        format!("arrow_ipc({})", self.path.display())
    }
}

impl Dataset {
    /// The rows of Parquet files, read in turn, one row group at a time:
    /// the columns named (all when `None`), in that order, as a dictionary.
    pub fn parquet<P: AsRef<Path>>(paths: &[P], columns: Option<&[&str]>) -> Result<Dataset> {
        let files: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let first = files.first().ok_or_else(|| Error::invalid("parquet: no files"))?.clone();
        let columns: Option<Vec<String>> = columns.map(|c| c.iter().map(|s| s.to_string()).collect());
        // Fail early on a missing or unreadable first file or an unknown column.
        parquet_file(first, columns.clone()).map(drop)?;
        Ok(Dataset::from_node(Parquet { files, columns }))
    }

    /// The rows of an Arrow IPC file (Feather v2), one record batch at a time.
    pub fn arrow_ipc(path: impl AsRef<Path>, columns: Option<&[&str]>) -> Result<Dataset> {
        let node = ArrowIpc {
            path: path.as_ref().to_path_buf(),
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
        };
        node.open().map(drop)?;
        Ok(Dataset::from_node(node))
    }
}
