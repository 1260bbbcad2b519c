//! File sources besides CSV: text lines (`TextLineDataset`), NumPy `.npy`
//! arrays streamed row by row, and `.npz` archives.

use super::csv::{open_maybe_gzip, Compression};
use super::dataset::{Cardinality, Dataset, Node, Stream, CHUNK_ROWS};
use super::element::{tensor_from_bytes, Chunk, Field, Strings};
use crate::error::{bail, Error, Result};
use crate::io::npy::{read_npy, read_npy_header, swap_to_little_endian};
use crate::tensor::{DType, Shape};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A text file being read: its path, reader and lines read so far.
type OpenTextFile = (PathBuf, BufReader<Box<dyn Read + Send>>, u64);

struct TextLines {
    files: Vec<PathBuf>,
    compression: Compression,
}

impl Node for TextLines {
    fn open(&self) -> Result<Stream> {
        let files = self.files.clone();
        let compression = self.compression;
        let mut next = 0usize;
        let mut current: Option<OpenTextFile> = None;
        let mut pending: Option<Error> = None;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if let Some(e) = pending.take() {
                return Some(Err(e));
            }
            if current.is_none() {
                let path = files.get(next)?.clone();
                next += 1;
                match open_maybe_gzip(&path, compression) {
                    Ok(r) => current = Some((path, BufReader::new(r), 0)),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (path, reader, line) = current.as_mut()?;
            let mut lines = Vec::new();
            let mut buf = Vec::new();
            while lines.len() < CHUNK_ROWS {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        *line += 1;
                        if buf.ends_with(b"\n") {
                            buf.pop();
                            if buf.ends_with(b"\r") {
                                buf.pop();
                            }
                        }
                        match String::from_utf8(std::mem::take(&mut buf)) {
                            Ok(s) => lines.push(s),
                            Err(_) => {
                                // After the lines before it.
                                pending =
                                    Some(Error::format(format!("{}: line {line}: not UTF-8 text", path.display())));
                                break;
                            }
                        }
                    }
                    Err(e) => return Some(Err(Error::format(format!("{}: line {}: {e}", path.display(), *line + 1)))),
                }
            }
            if lines.is_empty() {
                if pending.is_none() {
                    current = None;
                }
                continue;
            }
            let rows = lines.len();
            return Some(
                Strings::new(lines, Shape::new(&[rows])).and_then(|s| Chunk::new(vec![Field::Strings(s)], None)),
            );
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        format!("text_lines({})", names.join(", "))
    }
}

/// Bytes of rows per chunk read from an `.npy` file.
const NPY_CHUNK_BYTES: usize = 1 << 20;

struct Npy {
    path: PathBuf,
}

impl Node for Npy {
    fn open(&self) -> Result<Stream> {
        let path = self.path.clone();
        let at = |e: Error| Error::new(e.kind(), format!("{}: {}", path.display(), e.message()));
        let file = std::fs::File::open(&path).map_err(|e| Error::from(e).with_path(&path))?;
        let mut reader = BufReader::new(file);
        let header = read_npy_header(&mut reader).map_err(at)?;
        let dims = header.shape.dims().to_vec();
        let Some(&rows) = dims.first() else {
            bail!(shape, "{}: a scalar array has no rows", path.display());
        };
        if header.fortran && dims.len() > 1 {
            // Column-major data has no contiguous rows: read it whole.
            let t = read_npy(std::fs::File::open(&path)?).map_err(at)?;
            let chunk = Chunk::new(vec![Field::Tensor(t)], None)?;
            return Ok(Box::new(
                (0..rows).step_by(CHUNK_ROWS).map(move |s| chunk.slice(s, (s + CHUNK_ROWS).min(rows))),
            ));
        }
        let row_elems: usize = dims[1..].iter().product();
        let row_bytes = row_elems * header.dtype.size();
        let per_chunk = NPY_CHUNK_BYTES.checked_div(row_bytes).map_or(rows.max(1), |n| n.max(1));
        let mut done = 0usize;
        let mut pending: Option<Error> = None;
        let (dtype, big) = (header.dtype, header.big_endian);
        Ok(Box::new(std::iter::from_fn(move || {
            if let Some(e) = pending.take() {
                return Some(Err(e));
            }
            if done >= rows {
                return None;
            }
            let want = per_chunk.min(rows - done);
            let mut bytes = vec![0u8; want * row_bytes];
            let got = match read_full(&mut reader, &mut bytes) {
                Ok(n) => n,
                Err(e) => {
                    let e = Error::format(format!("{}: rows from {done}: {e}", path.display()));
                    done = rows;
                    return Some(Err(e));
                }
            };
            // A cut file: the whole rows that are there, then the error.
            let k = got.checked_div(row_bytes).unwrap_or(want);
            if k < want {
                pending = Some(Error::format(format!(
                    "{}: truncated: rows {}..{rows} of {rows} are missing",
                    path.display(),
                    done + k
                )));
                if k == 0 {
                    done = rows;
                    return pending.take().map(Err);
                }
            }
            bytes.truncate(k * row_bytes);
            if big {
                swap_to_little_endian(dtype, &mut bytes);
            }
            if dtype == DType::Bool && bytes.iter().any(|&b| b > 1) {
                done = rows;
                pending = None;
                return Some(Err(Error::format(format!("{}: bool data that is not 0 or 1", path.display()))));
            }
            let mut shape = dims.clone();
            shape[0] = k;
            done = if k < want { rows } else { done + k };
            Some(
                tensor_from_bytes(dtype, Shape::from(shape), &bytes)
                    .and_then(|t| Chunk::new(vec![Field::Tensor(t)], None)),
            )
        })))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        format!("npy({})", self.path.display())
    }
}

/// Fill `buf` as far as the reader goes: the bytes read (fewer at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct Npz {
    path: PathBuf,
    keys: Arc<[String]>,
}

impl Node for Npz {
    fn open(&self) -> Result<Stream> {
        let path = &self.path;
        let file = std::fs::File::open(path).map_err(|e| Error::from(e).with_path(path))?;
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| Error::format(format!("{}: not an npz (zip) archive: {e}", path.display())))?;
        let mut fields = Vec::with_capacity(self.keys.len());
        for key in self.keys.iter() {
            let entry = archive
                .by_name(&format!("{key}.npy"))
                .map_err(|_| Error::not_found(format!("{}: no array '{key}'", path.display())))?;
            let t = read_npy(entry)
                .map_err(|e| Error::format(format!("{}: array '{key}': {}", path.display(), e.message())))?;
            if t.rank() == 0 {
                bail!(shape, "{}: array '{key}' is a scalar, with no rows", path.display());
            }
            fields.push(Field::Tensor(t));
        }
        let chunk = Chunk::new(fields, Some(self.keys.clone()))
            .map_err(|e| Error::shape(format!("{}: {}", path.display(), e.message())))?;
        let rows = chunk.len;
        Ok(Box::new((0..rows).step_by(CHUNK_ROWS).map(move |s| chunk.slice(s, (s + CHUNK_ROWS).min(rows)))))
    }
    fn cardinality(&self) -> Cardinality {
        Cardinality::Unknown
    }
    fn describe(&self) -> String {
        format!("npz({})", self.path.display())
    }
}

impl Dataset {
    /// The lines of text files, read in turn, as string scalars (without
    /// their `\n` or `\r\n`); gzip read as [`Compression`] says.
    pub fn text_lines<P: AsRef<Path>>(paths: &[P], compression: Compression) -> Result<Dataset> {
        let files: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        if files.is_empty() {
            bail!(invalid, "text_lines: no files");
        }
        Ok(Dataset::from_node(TextLines { files, compression }))
    }

    /// The rows (slices along the first axis) of an `.npy` array, read a
    /// block at a time: memory stays bounded whatever the file's size.
    pub fn npy(path: impl AsRef<Path>) -> Result<Dataset> {
        let path = path.as_ref().to_path_buf();
        // Fail early on a missing or malformed file.
        let mut r = std::fs::File::open(&path).map_err(|e| Error::from(e).with_path(&path))?;
        read_npy_header(&mut r).map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))?;
        Ok(Dataset::from_node(Npy { path }))
    }

    /// The rows of the arrays `keys` of an `.npz` archive (`np.savez`), as
    /// named fields; all arrays need the same number of rows. (Compressed
    /// entries cannot seek, so each pass reads the arrays whole.)
    pub fn npz<S: AsRef<str>>(path: impl AsRef<Path>, keys: &[S]) -> Result<Dataset> {
        let path = path.as_ref().to_path_buf();
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_string()).collect();
        super::element::check_names(&keys)?;
        if keys.is_empty() {
            bail!(invalid, "npz: no arrays named");
        }
        let ds = Dataset::from_node(Npz { path, keys: keys.into() });
        ds.chunks().map(drop)?;
        Ok(ds)
    }

    /// The names of the arrays in an `.npz` archive.
    pub fn npz_keys(path: impl AsRef<Path>) -> Result<Vec<String>> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::from(e).with_path(path))?;
        let archive = zip::ZipArchive::new(file)
            .map_err(|e| Error::format(format!("{}: not an npz (zip) archive: {e}", path.display())))?;
        Ok(archive.file_names().filter_map(|n| n.ok()?.strip_suffix(".npy").map(str::to_string)).collect())
    }
}
