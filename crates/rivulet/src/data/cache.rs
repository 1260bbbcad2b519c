//! `Dataset::cache`: the first complete pass is kept (in memory or in a
//! file) and later passes replay it without running the stages before it.
//!
//! The file format is ours: a magic line, then one record per chunk (a
//! JSON header with each field's type and shape, the field bytes, and a
//! CRC-32 of both), then an end mark. It is written to a temporary file
//! and renamed into place only when a pass finishes without error, so a
//! partial pass never leaves a cache that looks whole.

use super::dataset::{Cardinality, Dataset, Node, Stream};
use super::element::{tensor_bytes, tensor_from_bytes, Chunk, Field, Strings};
use crate::error::{bail, Error, Result};
use crate::tensor::{DType, Shape};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const MAGIC: &[u8; 16] = b"RIVULET-CACHE-1\n";
const MAX_HEADER: u64 = 64 << 20;

struct MemoryCache {
    input: Dataset,
    kept: Arc<Mutex<Option<Arc<Vec<Chunk>>>>>,
}

impl Node for MemoryCache {
    fn open(&self) -> Result<Stream> {
        if let Some(chunks) = self.kept.lock().clone() {
            let mut i = 0;
            return Ok(Box::new(std::iter::from_fn(move || {
                i += 1;
                chunks.get(i - 1).cloned().map(Ok)
            })));
        }
        let mut input = self.input.chunks()?;
        let kept = self.kept.clone();
        let mut seen: Option<Vec<Chunk>> = Some(Vec::new());
        Ok(Box::new(std::iter::from_fn(move || match input.next() {
            Some(Ok(c)) => {
                if let Some(s) = seen.as_mut() {
                    s.push(c.clone());
                }
                Some(Ok(c))
            }
            Some(Err(e)) => {
                seen = None;
                Some(Err(e))
            }
            None => {
                if let Some(s) = seen.take() {
                    kept.lock().get_or_insert_with(|| Arc::new(s));
                }
                None
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        self.input.cardinality()
    }
    fn describe(&self) -> String {
        format!("cache(memory) <- {}", self.input.node.describe())
    }
}

#[derive(Serialize, Deserialize)]
struct RecordHeader {
    len: usize,
    names: Option<Vec<String>>,
    fields: Vec<FieldHeader>,
}

#[derive(Serialize, Deserialize)]
struct FieldHeader {
    /// A dtype name, or `string`.
    kind: String,
    shape: Vec<usize>,
    /// Bytes of tensor data (0 for strings, which are in `strings`).
    bytes: u64,
    strings: Option<Vec<String>>,
}

struct FileCache {
    input: Dataset,
    path: PathBuf,
    writes: AtomicU64,
}

impl Node for FileCache {
    fn open(&self) -> Result<Stream> {
        if self.path.exists() {
            return read_cache(&self.path);
        }
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let tmp = self.path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let file = std::fs::File::create(&tmp).map_err(|e| Error::from(e).with_path(&tmp))?;
        let mut out = Some(BufWriter::new(file));
        if let Some(w) = out.as_mut() {
            w.write_all(MAGIC).map_err(|e| Error::from(e).with_path(&tmp))?;
        }
        let mut input = self.input.chunks()?;
        let path = self.path.clone();
        Ok(Box::new(std::iter::from_fn(move || match input.next() {
            Some(Ok(c)) => {
                if let Some(w) = out.as_mut() {
                    if let Err(e) = write_record(w, &c) {
                        out = None;
                        let _ = std::fs::remove_file(&tmp);
                        return Some(Err(e.with_path(&tmp)));
                    }
                }
                Some(Ok(c))
            }
            Some(Err(e)) => {
                // A pass with an error is not cached.
                if out.take().is_some() {
                    let _ = std::fs::remove_file(&tmp);
                }
                Some(Err(e))
            }
            None => {
                let w = out.take()?;
                match finish(w, &tmp, &path) {
                    Ok(()) => None,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        Some(Err(e))
                    }
                }
            }
        })))
    }
    fn cardinality(&self) -> Cardinality {
        self.input.cardinality()
    }
    fn describe(&self) -> String {
        format!("cache({}) <- {}", self.path.display(), self.input.node.describe())
    }
}

fn finish(mut w: BufWriter<std::fs::File>, tmp: &Path, path: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::from(e).with_path(tmp);
    w.write_all(&0u64.to_le_bytes()).map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(tmp, path).map_err(|e| Error::from(e).with_path(path))
}

fn write_record(w: &mut impl Write, c: &Chunk) -> Result<()> {
    let mut payload = Vec::new();
    let mut fields = Vec::new();
    for f in &c.fields {
        match f {
            Field::Tensor(t) => {
                let b = tensor_bytes(t)?;
                fields.push(FieldHeader {
                    kind: t.dtype().name().into(),
                    shape: t.shape().dims().to_vec(),
                    bytes: b.len() as u64,
                    strings: None,
                });
                payload.extend_from_slice(&b);
            }
            Field::Strings(s) => fields.push(FieldHeader {
                kind: "string".into(),
                shape: s.shape().dims().to_vec(),
                bytes: 0,
                strings: Some(s.values().to_vec()),
            }),
        }
    }
    let header = RecordHeader { len: c.len, names: c.names.as_ref().map(|n| n.to_vec()), fields };
    let header = serde_json::to_vec(&header).map_err(|e| Error::format(format!("cache record: {e}")))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&payload);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    w.write_all(&payload)?;
    w.write_all(&crc.finalize().to_le_bytes())?;
    Ok(())
}

/// Replay a cache file chunk by chunk; a damaged file is an error naming it and the record.
fn read_cache(path: &Path) -> Result<Stream> {
    let file = std::fs::File::open(path).map_err(|e| Error::from(e).with_path(path))?;
    let size = file.metadata().map_err(|e| Error::from(e).with_path(path))?.len();
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 16];
    if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        bail!(format, "{}: not a Rivulet dataset cache", path.display());
    }
    let path = path.to_path_buf();
    let mut record = 0usize;
    let mut done = false;
    Ok(Box::new(std::iter::from_fn(move || {
        if done {
            return None;
        }
        record += 1;
        match read_record(&mut r, size) {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => {
                done = true;
                None
            }
            Err(e) => {
                done = true;
                Some(Err(Error::format(format!("{}: cache record {record}: {}", path.display(), e.message()))))
            }
        }
    })))
}

fn read_record(r: &mut impl Read, file_size: u64) -> Result<Option<Chunk>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(|_| Error::format("truncated (no end mark)"))?;
    let hlen = u64::from_le_bytes(len);
    if hlen == 0 {
        return Ok(None);
    }
    if hlen > MAX_HEADER.min(file_size) {
        bail!(format, "header of {hlen} bytes");
    }
    let mut header = vec![0u8; hlen as usize];
    r.read_exact(&mut header).map_err(|_| Error::format("truncated header"))?;
    let h: RecordHeader = serde_json::from_slice(&header).map_err(|e| Error::format(format!("bad header: {e}")))?;
    let total: u64 = h.fields.iter().map(|f| f.bytes).fold(0u64, u64::saturating_add);
    if total > file_size {
        bail!(format, "record promises {total} bytes, more than the file holds");
    }
    let mut payload = vec![0u8; total as usize];
    r.read_exact(&mut payload).map_err(|_| Error::format("truncated data"))?;
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc).map_err(|_| Error::format("truncated checksum"))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&payload);
    if hasher.finalize() != u32::from_le_bytes(crc) {
        bail!(format, "checksum mismatch (the file is damaged)");
    }
    let mut fields = Vec::with_capacity(h.fields.len());
    let mut at = 0usize;
    for f in h.fields {
        let shape = Shape::from(f.shape);
        if f.kind == "string" {
            fields.push(Field::Strings(Strings::new(f.strings.unwrap_or_default(), shape)?));
        } else {
            let dtype =
                DType::from_name(&f.kind).ok_or_else(|| Error::format(format!("unknown dtype '{}'", f.kind)))?;
            let n = f.bytes as usize;
            let t = tensor_from_bytes(dtype, shape, &payload[at..at + n])?;
            if dtype == DType::Bool && payload[at..at + n].iter().any(|&b| b > 1) {
                bail!(format, "bool data that is not 0 or 1");
            }
            at += n;
            fields.push(Field::Tensor(t));
        }
    }
    let c = Chunk::new(fields, h.names.map(Arc::from))?;
    if c.len != h.len {
        bail!(format, "record of {} rows says {}", c.len, h.len);
    }
    Ok(Some(c))
}

impl Dataset {
    /// Keep the first complete pass in memory; later passes replay it.
    pub fn cache(&self) -> Dataset {
        Dataset::from_node(MemoryCache { input: self.clone(), kept: Arc::new(Mutex::new(None)) })
    }

    /// Keep the first complete pass in the file `path` (written whole or
    /// not at all); later passes, in this process or another, read it.
    pub fn cache_to_file(&self, path: impl AsRef<Path>) -> Dataset {
        Dataset::from_node(FileCache {
            input: self.clone(),
            path: path.as_ref().to_path_buf(),
            writes: AtomicU64::new(0),
        })
    }
}
