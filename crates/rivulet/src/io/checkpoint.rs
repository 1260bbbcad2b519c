//! Checkpoints: named tensors in a safetensors file, plus a small JSON
//! index of the checkpoints in a directory.
//!
//! Writes are atomic (temporary file, then rename, then a flush of the
//! directory), so a crash mid-save keeps every earlier checkpoint intact.
//! Both files carry a CRC-32 of all their bytes, so a damaged file is an
//! error on load rather than different numbers. `max_to_keep` bounds how
//! many stay on disk. Files are untrusted on load: a damaged or truncated
//! file gives an error, never a panic.

use super::{checksum, write_atomic, TEMP_MARKER};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::{DType, Shape, Value};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `format` entry of a checkpoint's metadata.
pub const FORMAT: &str = "rivulet.checkpoint";
/// The metadata entry (`crc32:<8 hex digits>`) that holds the CRC-32 of the
/// whole file, computed with the digits read as `0`.
pub const CHECKSUM_KEY: &str = "checksum";
const INDEX_FILE: &str = "checkpoint.json";
const INDEX_FORMAT: &str = "rivulet.checkpoint-index";
const INDEX_VERSION: u32 = 2;
/// Held while a manager saves (exclusive) or reads (shared), across threads and processes.
const LOCK_FILE: &str = "checkpoint.lock";
/// The checksum entry in a safetensors header (compact JSON) and in the index (pretty JSON).
const HEADER_ANCHOR: &[u8] = b"\"checksum\":\"";
const INDEX_ANCHOR: &[u8] = b"\"checksum\": \"";

/// The contents of one checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointData {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Free-form string metadata (step, epoch, random streams, ...). The
    /// keys `format` and `checksum` are the file's own.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct Index {
    format: String,
    version: u32,
    checksum: String,
    latest: Option<String>,
    checkpoints: Vec<String>,
}

/// `None` for complex128, which safetensors has no dtype for.
fn to_safetensors_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::U16 => Dtype::U16,
        DType::U32 => Dtype::U32,
        DType::U64 => Dtype::U64,
        DType::C64 => Dtype::C64,
        DType::C128 => return None,
    })
}

fn from_safetensors_dtype(d: Dtype) -> Result<DType> {
    Ok(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::U16 => DType::U16,
        Dtype::U32 => DType::U32,
        Dtype::U64 => DType::U64,
        Dtype::C64 => DType::C64,
        other => bail!(format, "checkpoint tensor of unsupported dtype {other:?}"),
    })
}

/// The header of safetensors bytes: where it lies (after the 8-byte length).
fn header_region(bytes: &[u8]) -> std::ops::Range<usize> {
    let n = bytes.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    8..8 + usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len().saturating_sub(8))
}

/// Serialize tensors and metadata to safetensors bytes, with the checksum.
pub fn to_bytes(data: &CheckpointData) -> Result<Vec<u8>> {
    if let Some(k) = data.metadata.keys().find(|k| *k == "format" || *k == CHECKSUM_KEY) {
        bail!(invalid, "checkpoint metadata '{k}' is reserved for the file format");
    }
    let mut owned: Vec<(String, DType, Vec<usize>, Vec<u8>)> = Vec::with_capacity(data.tensors.len());
    for (name, t) in &data.tensors {
        owned.push((name.clone(), t.dtype(), t.shape().to_vec(), t.value()?.to_le_bytes()?));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, dtype, shape, bytes) in &owned {
        let Some(dtype) = to_safetensors_dtype(*dtype) else {
            bail!(
                unimplemented,
                "checkpoint tensor '{name}' is {dtype}, which safetensors cannot hold: save its real and imaginary parts"
            );
        };
        let view = TensorView::new(dtype, shape.clone(), bytes)
            .map_err(|e| Error::invalid(format!("checkpoint tensor '{name}': {e}")))?;
        views.push((name.as_str(), view));
    }
    let mut meta: HashMap<String, String> = data.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("format".into(), FORMAT.into());
    meta.insert(CHECKSUM_KEY.into(), checksum::PLACEHOLDER.into());
    let mut bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::invalid(format!("cannot serialize checkpoint: {e}")))?;
    let header = header_region(&bytes);
    checksum::seal(&mut bytes, header, HEADER_ANCHOR)?;
    Ok(bytes)
}

/// Parse safetensors bytes (untrusted): the format tag and the checksum
/// must be there and match.
pub fn from_bytes(bytes: &[u8]) -> Result<CheckpointData> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| Error::format(format!("damaged checkpoint: {e}")))?;
    if header.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str) != Some(FORMAT) {
        bail!(format, "not a rivulet checkpoint (metadata 'format' is not '{FORMAT}')");
    }
    checksum::verify(bytes, header_region(bytes), HEADER_ANCHOR)
        .map_err(|e| Error::format(format!("checkpoint: {}", e.message())))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::format(format!("damaged checkpoint: {e}")))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != "format" && k != CHECKSUM_KEY)
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = from_safetensors_dtype(view.dtype())?;
        let shape = Shape::new(view.shape());
        let t = Value::from_le_bytes(dtype, shape, view.data())
            .map(Value::into_tensor)
            .map_err(|e| Error::format(format!("checkpoint tensor '{name}': {}", e.message())))?;
        tensors.insert(name, t);
    }
    Ok(CheckpointData { tensors, metadata })
}

/// Save one checkpoint file (atomically).
pub fn save_file(path: impl AsRef<Path>, data: &CheckpointData) -> Result<()> {
    let bytes = to_bytes(data)?;
    write_atomic(path.as_ref(), |w| Ok(w.write_all(&bytes)?))
}

/// Load one checkpoint file.
pub fn load_file(path: impl AsRef<Path>) -> Result<CheckpointData> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::from(e).with_path(path))?;
    from_bytes(&bytes).map_err(|e| e.with_path(path))
}

/// A directory of numbered checkpoints with an index, keeping the newest
/// `max_to_keep` (TensorFlow's `CheckpointManager`).
///
/// Safe against crashes and concurrent use: a save writes the new
/// checkpoint, then the index that names it, and only then deletes the
/// checkpoints the index no longer keeps, so a crash at any point leaves an
/// index whose latest checkpoint is complete. Saves to one directory, from
/// threads or processes, take turns through a lock file
/// (`checkpoint.lock`), and each save removes the temporary files that
/// crashed saves left behind.
#[derive(Clone, Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    prefix: String,
    max_to_keep: usize,
}

/// A held lock on a checkpoint directory (released when the file closes).
struct DirLock {
    _file: Option<std::fs::File>,
}

impl CheckpointManager {
    /// Checkpoints `dir/ckpt-<step>.safetensors`, keeping at most `max_to_keep` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, max_to_keep: usize) -> CheckpointManager {
        CheckpointManager { dir: dir.into(), prefix: "ckpt".into(), max_to_keep: max_to_keep.max(1) }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    /// Take the directory's lock: exclusive to save, shared to read. A
    /// directory that cannot hold a lock file (read-only, or missing) is
    /// read without one.
    fn lock(&self, exclusive: bool) -> Result<DirLock> {
        let path = self.dir.join(LOCK_FILE);
        let file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path) {
            Ok(f) => f,
            Err(e) if !exclusive => {
                log::debug!("reading checkpoints without a lock ({}: {e})", path.display());
                return Ok(DirLock { _file: None });
            }
            Err(e) => return Err(Error::from(e).with_path(&path)),
        };
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(|e| Error::from(e).with_path(&path))?;
        Ok(DirLock { _file: Some(file) })
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Index { format: INDEX_FORMAT.into(), version: INDEX_VERSION, ..Index::default() })
            }
            Err(e) => return Err(Error::from(e).with_path(&path)),
        };
        let damaged = |what: String| Error::format(format!("{}: damaged checkpoint index: {what}", path.display()));
        let idx: Index = serde_json::from_slice(&text).map_err(|e| damaged(e.to_string()))?;
        if idx.format != INDEX_FORMAT || idx.version != INDEX_VERSION {
            bail!(format, "{}: not a rivulet checkpoint index of version {INDEX_VERSION}", path.display());
        }
        checksum::verify(&text, 0..text.len(), INDEX_ANCHOR).map_err(|e| damaged(e.message().to_string()))?;
        if idx.checkpoints.iter().chain(&idx.latest).any(|n| !self.is_checkpoint_name(n)) {
            bail!(format, "{}: checkpoint names must be plain file names", path.display());
        }
        Ok(idx)
    }

    fn write_index(&self, idx: &mut Index) -> Result<()> {
        idx.checksum = checksum::PLACEHOLDER.into();
        let mut text = serde_json::to_vec_pretty(idx).map_err(|e| Error::invalid(e.to_string()))?;
        let all = 0..text.len();
        checksum::seal(&mut text, all, INDEX_ANCHOR)?;
        write_atomic(&self.index_path(), |w| Ok(w.write_all(&text)?))
    }

    /// A plain file name in the directory (never a path out of it).
    fn is_checkpoint_name(&self, n: &str) -> bool {
        !(n.is_empty() || n.contains(['/', '\\']) || n.starts_with('.'))
    }

    /// A name this manager writes: `<prefix>-<digits>.safetensors`.
    fn is_own_checkpoint(&self, n: &str) -> bool {
        n.strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".safetensors"))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Save `data` as the checkpoint of `step`; returns its path.
    pub fn save(&self, step: u64, data: &CheckpointData) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::from(e).with_path(&self.dir))?;
        let bytes = to_bytes(data)?;
        let _lock = self.lock(true)?;
        let indexed = self.index_path().exists();
        let mut idx = self.read_index()?;
        self.remove_leftovers(&idx, indexed);
        let name = format!("{}-{step}.safetensors", self.prefix);
        let path = self.dir.join(&name);
        write_atomic(&path, |w| Ok(w.write_all(&bytes)?))?;
        // The new index first: until it is on disk, the old one names complete files.
        idx.checkpoints.retain(|n| n != &name);
        idx.checkpoints.push(name.clone());
        idx.latest = Some(name);
        let dropped: Vec<String> =
            idx.checkpoints.drain(..idx.checkpoints.len().saturating_sub(self.max_to_keep)).collect();
        self.write_index(&mut idx)?;
        for old in dropped {
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        Ok(path)
    }

    /// Remove what crashed saves left: temporary files of this manager's
    /// checkpoints and index, and, in a directory that has an index,
    /// checkpoints it does not list (written, but never indexed, or
    /// dropped from it but not yet deleted). Called under the exclusive
    /// lock, so no other save is writing them.
    fn remove_leftovers(&self, idx: &Index, indexed: bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split(TEMP_MARKER).next().unwrap_or_default();
            let temporary = name.contains(TEMP_MARKER) && (stem == INDEX_FILE || self.is_own_checkpoint(stem));
            let orphan = indexed && self.is_own_checkpoint(&name) && !idx.checkpoints.contains(&name);
            if temporary || orphan {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Paths of the kept checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<PathBuf>> {
        let _lock = self.lock(false)?;
        Ok(self.read_index()?.checkpoints.iter().map(|n| self.dir.join(n)).collect())
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let _lock = self.lock(false)?;
        Ok(self.read_index()?.latest.map(|n| self.dir.join(n)))
    }

    /// Load the newest checkpoint, if any.
    pub fn restore_latest(&self) -> Result<Option<CheckpointData>> {
        // Shared: a save cannot delete the file between reading the index and loading it.
        let _lock = self.lock(false)?;
        match self.read_index()?.latest {
            Some(n) => load_file(self.dir.join(n)).map(Some),
            None => Ok(None),
        }
    }
}
