//! Checkpoints: named tensors in a safetensors file, plus a small JSON
//! index of the checkpoints in a directory.
//!
//! Writes are atomic (temporary file, then rename), so a crash mid-save
//! keeps every earlier checkpoint intact. `max_to_keep` bounds how many
//! stay on disk. Files are untrusted on load: a damaged or truncated file
//! gives an error, never a panic.

use super::write_atomic;
use crate::error::{bail, Error, Result};
use crate::tensor::npy::{le_bytes, tensor_from_le_bytes};
use crate::tensor::{DType, Shape, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `format` entry of a checkpoint's metadata.
pub const FORMAT: &str = "rivulet.checkpoint";
const INDEX_FILE: &str = "checkpoint.json";
const INDEX_FORMAT: &str = "rivulet.checkpoint-index";

/// The contents of one checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointData {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Free-form string metadata (step, epoch, random streams, ...).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct Index {
    format: String,
    version: u32,
    latest: Option<String>,
    checkpoints: Vec<String>,
}

fn to_safetensors_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    }
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
        other => bail!(format, "checkpoint tensor of unsupported dtype {other:?}"),
    })
}

/// Serialize tensors and metadata to safetensors bytes.
pub fn to_bytes(data: &CheckpointData) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, DType, Vec<usize>, Vec<u8>)> = Vec::with_capacity(data.tensors.len());
    for (name, t) in &data.tensors {
        owned.push((name.clone(), t.dtype(), t.shape().to_vec(), le_bytes(t)?));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, dtype, shape, bytes) in &owned {
        let view = TensorView::new(to_safetensors_dtype(*dtype), shape.clone(), bytes)
            .map_err(|e| Error::invalid(format!("checkpoint tensor '{name}': {e}")))?;
        views.push((name.as_str(), view));
    }
    let mut meta: HashMap<String, String> = data.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("format".into(), FORMAT.into());
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid(format!("cannot serialize checkpoint: {e}")))
}

/// Parse safetensors bytes (untrusted).
pub fn from_bytes(bytes: &[u8]) -> Result<CheckpointData> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::format(format!("damaged checkpoint: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| Error::format(format!("damaged checkpoint: {e}")))?;
    let metadata: BTreeMap<String, String> =
        header.metadata().clone().unwrap_or_default().into_iter().filter(|(k, _)| k != "format").collect();
    if header.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str) != Some(FORMAT) {
        bail!(format, "not a rivulet checkpoint (metadata 'format' is not '{FORMAT}')");
    }
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = from_safetensors_dtype(view.dtype())?;
        let shape = Shape::new(view.shape());
        let t = tensor_from_le_bytes(dtype, shape, view.data())
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
#[derive(Clone, Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    prefix: String,
    max_to_keep: usize,
}

impl CheckpointManager {
    /// Checkpoints `dir/ckpt-<step>.safetensors`, keeping at most `max_to_keep` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, max_to_keep: usize) -> CheckpointManager {
        CheckpointManager { dir: dir.into(), prefix: "ckpt".into(), max_to_keep: max_to_keep.max(1) }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let idx: Index = serde_json::from_str(&text)
                    .map_err(|e| Error::format(format!("{}: damaged checkpoint index: {e}", path.display())))?;
                if idx.format != INDEX_FORMAT || idx.version != 1 {
                    bail!(format, "{}: not a rivulet checkpoint index", path.display());
                }
                if idx
                    .checkpoints
                    .iter()
                    .chain(&idx.latest)
                    .any(|n| n.is_empty() || n.contains(['/', '\\']) || n.starts_with('.'))
                {
                    bail!(format, "{}: checkpoint names must be plain file names", path.display());
                }
                Ok(idx)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Index { format: INDEX_FORMAT.into(), version: 1, ..Index::default() })
            }
            Err(e) => Err(Error::from(e).with_path(&path)),
        }
    }

    /// Save `data` as the checkpoint of `step`; returns its path.
    pub fn save(&self, step: u64, data: &CheckpointData) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::from(e).with_path(&self.dir))?;
        let name = format!("{}-{step}.safetensors", self.prefix);
        let path = self.dir.join(&name);
        save_file(&path, data)?;
        let mut idx = self.read_index()?;
        idx.checkpoints.retain(|n| n != &name);
        idx.checkpoints.push(name.clone());
        idx.latest = Some(name);
        while idx.checkpoints.len() > self.max_to_keep {
            let old = idx.checkpoints.remove(0);
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        let text = serde_json::to_string_pretty(&idx).map_err(|e| Error::invalid(e.to_string()))?;
        write_atomic(&self.index_path(), |w| Ok(w.write_all(text.as_bytes())?))?;
        Ok(path)
    }

    /// Paths of the kept checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<PathBuf>> {
        Ok(self.read_index()?.checkpoints.iter().map(|n| self.dir.join(n)).collect())
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.read_index()?.latest.map(|n| self.dir.join(n)))
    }

    /// Load the newest checkpoint, if any.
    pub fn restore_latest(&self) -> Result<Option<CheckpointData>> {
        match self.latest()? {
            Some(p) => load_file(p).map(Some),
            None => Ok(None),
        }
    }
}
