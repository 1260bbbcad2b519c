//! The files of a saved model and their checks: writing a directory
//! atomically, and reading one as untrusted input.

use super::{ExportSource, SaveOptions, Signature, PREDICT_METHOD};
use crate::error::{bail, Error, Result};
use crate::graph::{Graph, Tensor};
use crate::io::checkpoint::{self, CheckpointData};
use crate::io::{checksum, sync_dir, TEMP_MARKER};
use crate::op::Op;
use crate::tensor::{DType, Shape, UNKNOWN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `format` field of the manifest.
pub const FORMAT: &str = "rivulet.saved_model";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
const MANIFEST: &str = "saved_model.json";
const GRAPH: &str = "graph.json";
const VARIABLES: &str = "variables/variables.safetensors";
const ASSETS: &str = "assets";
/// The manifest's checksum entry (pretty JSON).
const ANCHOR: &[u8] = b"\"checksum\": \"";
/// Larger manifests are refused before parsing (they list names, not data).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// One input or output of a signature: the tensor it names, its dtype and
/// (partial) shape. Unknown dimensions are written as -1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// The input or output name (the key in the signature).
    #[serde(skip)]
    pub key: String,
    /// `node:index` in the saved graph.
    #[serde(rename = "name")]
    pub tensor_name: String,
    pub dtype: DType,
    #[serde(with = "dims")]
    pub shape: Shape,
}

impl TensorInfo {
    /// Does `value` fit (same dtype, a shape matching the known dimensions)?
    pub fn check(&self, value: &Tensor) -> Result<()> {
        if value.dtype() != self.dtype {
            bail!(dtype, "input '{}' must be {}, got {}", self.key, self.dtype, value.dtype());
        }
        if !self.shape.is_compatible_with(value.shape()) {
            bail!(shape, "input '{}' must have shape {}, got {}", self.key, self.shape, value.shape());
        }
        Ok(())
    }
}

/// A saved variable: its node name, dtype, shape and whether it trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariableInfo {
    pub name: String,
    pub dtype: DType,
    #[serde(with = "dims")]
    pub shape: Shape,
    pub trainable: bool,
}

impl VariableInfo {
    /// Bytes of its value.
    pub fn bytes(&self) -> usize {
        self.shape.numel().unwrap_or(0).saturating_mul(self.dtype.size())
    }
}

/// Shapes as lists of dimensions, unknown ones as -1 (as TensorFlow writes them).
mod dims {
    use super::{Shape, UNKNOWN};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(shape: &Shape, s: S) -> Result<S::Ok, S::Error> {
        let dims: Vec<i64> = shape.iter().map(|&d| if d == UNKNOWN { -1 } else { d as i64 }).collect();
        dims.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        let dims = Vec::<i64>::deserialize(d)?;
        if dims.len() > 32 {
            return Err(serde::de::Error::custom("a shape of more than 32 dimensions"));
        }
        let dims: Vec<usize> = dims
            .into_iter()
            .map(|d| match d {
                -1 => Ok(UNKNOWN),
                d if (0..1 << 48).contains(&d) => Ok(d as usize),
                d => Err(serde::de::Error::custom(format!("dimension {d} is out of range"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Shape::from(dims))
    }
}

/// One signature in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignatureDoc {
    pub method_name: String,
    pub inputs: BTreeMap<String, TensorInfo>,
    pub outputs: BTreeMap<String, TensorInfo>,
    /// Nodes run for their effect on every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// A file of the directory and the CRC-32 of its bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub file: String,
    pub bytes: u64,
    pub crc32: String,
}

/// `saved_model.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub checksum: String,
    pub producer: String,
    pub graph: FileEntry,
    pub signatures: BTreeMap<String, SignatureDoc>,
    pub variables: Vec<VariableInfo>,
    #[serde(default)]
    pub assets: Vec<FileEntry>,
}

/// What [`read`] found, checked.
pub struct Files {
    pub manifest: Manifest,
    pub graph: Graph,
    pub variables: CheckpointData,
}

fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

fn entry(file: &str, bytes: &[u8]) -> FileEntry {
    FileEntry { file: file.to_string(), bytes: bytes.len() as u64, crc32: crc_hex(bytes) }
}

/// A name is usable as a signature, input or output name.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control()) {
        bail!(invalid, "saved_model::save: invalid {what} name {name:?}");
    }
    Ok(())
}

fn tensor_info(graph: &Graph, key: &str, t: &Tensor, what: &str) -> Result<TensorInfo> {
    check_name(what, key)?;
    let name = match t.graph() {
        Some(g) if g.same_as(graph) => t.name().unwrap_or_default(),
        _ => bail!(
            invalid,
            "saved_model::save: {what} '{key}' is not a symbolic tensor of the model's graph ({})",
            t.name().unwrap_or_else(|| "a value".into())
        ),
    };
    Ok(TensorInfo { key: key.to_string(), tensor_name: name, dtype: t.dtype(), shape: t.shape().clone() })
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A directory name beside `dir` that no other save uses.
fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{tag}{}-{}", std::process::id(), NEXT_DIR.fetch_add(1, Ordering::Relaxed)));
    dir.with_file_name(name)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::from(e).with_path(path))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Write the saved model of `source` and `signatures` to `dir`.
pub(super) fn write(
    dir: &Path,
    source: &ExportSource,
    signatures: &[(String, Signature)],
    options: &SaveOptions,
) -> Result<()> {
    if dir.file_name().is_none() {
        bail!(invalid, "saved_model::save: '{}' is not a directory name", dir.display());
    }
    // Replace a saved model, or fill an empty directory; never delete anything else.
    if dir.exists() && !dir.join(MANIFEST).is_file() {
        let empty = std::fs::read_dir(dir).map_err(|e| Error::from(e).with_path(dir))?.next().is_none();
        if !empty {
            bail!(invalid, "saved_model::save: '{}' exists and is not a saved model", dir.display());
        }
    }
    // The signatures, as names of the source graph's tensors.
    let mut docs = BTreeMap::new();
    let mut keep: Vec<&Tensor> = Vec::new();
    let mut keep_ops = Vec::new();
    for (name, sig) in signatures {
        check_name("signature", name)?;
        if sig.outputs.is_empty() {
            bail!(invalid, "saved_model::save: signature '{name}' has no outputs");
        }
        let mut inputs = BTreeMap::new();
        for (key, t) in &sig.inputs {
            if inputs.insert(key.clone(), tensor_info(&source.graph, key, t, "input")?).is_some() {
                bail!(invalid, "saved_model::save: signature '{name}' has two inputs named '{key}'");
            }
            keep.push(t);
        }
        let mut outputs = BTreeMap::new();
        for (key, t) in &sig.outputs {
            if outputs.insert(key.clone(), tensor_info(&source.graph, key, t, "output")?).is_some() {
                bail!(invalid, "saved_model::save: signature '{name}' has two outputs named '{key}'");
            }
            keep.push(t);
        }
        let method_name = sig.method_name.clone().unwrap_or_else(|| PREDICT_METHOD.to_string());
        keep_ops.extend(sig.targets.iter());
        let targets = sig.targets.iter().map(|t| t.name()).collect();
        if docs.insert(name.clone(), SignatureDoc { method_name, inputs, outputs, targets }).is_some() {
            bail!(invalid, "saved_model::save: two signatures named '{name}'");
        }
    }
    let graph = source.graph.pruned_with_targets(&keep, &keep_ops)?;
    // The variables the pruned graph reads, with their values.
    let trainable: BTreeMap<String, bool> =
        source.graph.variables().iter().map(|v| (v.name().to_string(), v.trainable())).collect();
    let mut data = CheckpointData::default();
    let mut variables = Vec::new();
    for (id, n) in graph.nodes().into_iter().enumerate() {
        let Op::Variable { dtype, shape } = &n.op else { continue };
        if graph.resolve_variable(id) != id {
            continue; // a stand-in for another variable node
        }
        let value = source.values.get(&n.name).ok_or_else(|| {
            Error::precondition(format!("saved_model::save: variable '{}' has no value (initialize it first)", n.name))
        })?;
        data.tensors.insert(n.name.clone(), value.clone());
        variables.push(VariableInfo {
            name: n.name.clone(),
            dtype: *dtype,
            shape: shape.clone(),
            trainable: trainable.get(&n.name).copied().unwrap_or(false),
        });
    }
    let graph_json = graph.to_json()?.into_bytes();
    let variables_bytes = checkpoint::to_bytes(&data)?;

    let tmp = sibling(dir, TEMP_MARKER);
    let written = (|| -> Result<()> {
        std::fs::create_dir_all(tmp.join("variables")).map_err(|e| Error::from(e).with_path(&tmp))?;
        write_file(&tmp.join(GRAPH), &graph_json)?;
        write_file(&tmp.join(VARIABLES), &variables_bytes)?;
        let mut assets = Vec::new();
        if !options.assets.is_empty() {
            std::fs::create_dir_all(tmp.join(ASSETS))?;
        }
        for a in &options.assets {
            let name = a
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::invalid(format!("asset '{}' has no usable file name", a.display())))?;
            let bytes = std::fs::read(a).map_err(|e| Error::from(e).with_path(a))?;
            let rel = format!("{ASSETS}/{name}");
            if assets.iter().any(|e: &FileEntry| e.file == rel) {
                bail!(invalid, "saved_model::save: two assets named '{name}'");
            }
            write_file(&tmp.join(&rel), &bytes)?;
            assets.push(entry(&rel, &bytes));
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            checksum: checksum::PLACEHOLDER.into(),
            producer: format!("rivulet {}", env!("CARGO_PKG_VERSION")),
            graph: entry(GRAPH, &graph_json),
            signatures: docs,
            variables,
            assets,
        };
        let mut text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::format(format!("cannot write the manifest: {e}")))?;
        let all = 0..text.len();
        checksum::seal(&mut text, all, ANCHOR)?;
        write_file(&tmp.join(MANIFEST), &text)?;
        for d in [tmp.join("variables"), tmp.clone()] {
            sync_dir(&d)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Into place: a new name appears whole; an existing directory is moved
    // aside first and removed after.
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let old = if dir.exists() {
        let old = sibling(dir, ".old-");
        std::fs::rename(dir, &old).map_err(|e| Error::from(e).with_path(dir))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&tmp, dir) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::from(e).with_path(dir));
    }
    sync_dir(parent)?;
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Read a whole file of at most `limit` bytes.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::from(e).with_path(path))?;
    if meta.len() > limit {
        bail!(
            format,
            "'{}' is {} bytes, more than the {limit} a saved model file may have",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).map_err(|e| Error::from(e).with_path(path))
}

/// Read and check a file listed in the manifest.
fn read_entry(dir: &Path, e: &FileEntry) -> Result<Vec<u8>> {
    // Only plain relative names inside the directory.
    let rel = Path::new(&e.file);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        bail!(format, "saved model: file name '{}' leaves the directory", e.file);
    }
    let path = dir.join(rel);
    let bytes = read_limited(&path, e.bytes)?;
    if bytes.len() as u64 != e.bytes || crc_hex(&bytes) != e.crc32 {
        bail!(format, "saved model: '{}' is damaged (its size or CRC-32 differs from the manifest's)", e.file);
    }
    Ok(bytes)
}

/// Whether `dir/saved_model.json` is a manifest of this format (any version).
pub(super) fn names_the_format(dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct Head {
        format: String,
    }
    read_limited(&dir.join(MANIFEST), MAX_MANIFEST_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<Head>(&b).ok())
        .is_some_and(|h| h.format == FORMAT)
}

/// Read the saved model in `dir`, checking the format, the version and
/// every file's checksum.
pub(super) fn read(dir: &Path) -> Result<Files> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        bail!(not_found, "'{}' is not a saved model (it has no {MANIFEST})", dir.display());
    }
    let bytes = read_limited(&path, MAX_MANIFEST_BYTES)?;
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    let head: Head = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("saved model: {MANIFEST} is not a manifest: {e}")))?;
    if head.format != FORMAT {
        bail!(format, "saved model: format is '{}', expected '{FORMAT}'", head.format);
    }
    if head.version != VERSION {
        bail!(
            format,
            "saved model version {} is not supported (this build reads version {VERSION}){}",
            head.version,
            if head.version > VERSION { ": it was written by a newer rivulet" } else { "" }
        );
    }
    checksum::verify(&bytes, 0..bytes.len(), ANCHOR)
        .map_err(|e| Error::format(format!("saved model: {MANIFEST}: {}", e.message())))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("saved model: {MANIFEST} is not a manifest: {e}")))?;
    let graph_bytes = read_entry(dir, &manifest.graph)?;
    let text = std::str::from_utf8(&graph_bytes).map_err(|_| Error::format("saved model: graph.json is not UTF-8"))?;
    let graph =
        Graph::from_json(text).map_err(|e| Error::format(format!("saved model: graph.json: {}", e.message())))?;
    let variables = checkpoint::load_file(dir.join(VARIABLES))?;
    for a in &manifest.assets {
        read_entry(dir, a)?;
    }
    Ok(Files { manifest, graph, variables })
}
