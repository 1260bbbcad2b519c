//! Saved models: a directory holding a graph, its variables and named
//! entry points (signatures), loadable and callable in another process
//! without the code that built it (TensorFlow's SavedModel).
//!
//! ```text
//! DIR/saved_model.json               manifest: format, version, signatures, variables, file checksums
//! DIR/graph.json                     the graph pruned to the signatures, with its function library
//! DIR/variables/variables.safetensors the variables' values (a checkpoint file)
//! DIR/assets/...                     files the model needs (vocabularies, ...)
//! ```
//!
//! [`save`] writes everything into a new directory beside `DIR` and renames
//! it into place, so a reader (a model server watching for new versions)
//! never sees half a model. Every file is covered by a CRC-32 (the manifest
//! and the variables inside themselves, the others in the manifest), and
//! the format is versioned: a damaged, foreign or newer directory is an
//! error at [`load`], never different numbers or a panic.
//!
//! [`load`] freezes the variables that nothing assigns into constants and
//! compiles with constant folding (and, unless [`LoadOptions::exact`],
//! batch-norm folding), so a served model computes only what depends on
//! its inputs.

mod format;

pub use format::{TensorInfo, VariableInfo, FORMAT, VERSION};

use crate::error::{bail, Error, Result};
use crate::function::ConcreteFunction;
use crate::graph::{Graph, NodeId, Operation, Tensor};
use crate::op::Op;
use crate::passes::PassOptions;
use crate::runtime::{Session, SessionOptions, Variable};
use format::{FileEntry, Manifest, SignatureDoc};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The method name of a prediction signature (TensorFlow Serving's `:predict`).
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";
/// The signature a server uses when a request names none.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// Named inputs and outputs of one entry point, as tensors of the graph
/// being exported (TensorFlow's `SignatureDef`).
#[derive(Clone, Debug, Default)]
pub struct Signature {
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
    targets: Vec<Operation>,
    method_name: Option<String>,
}

impl Signature {
    /// An empty signature (a prediction, unless [`Signature::method_name`] says otherwise).
    pub fn new() -> Signature {
        Signature::default()
    }
    /// Add input `name`, fed into `tensor` (a placeholder, usually).
    pub fn input(mut self, name: &str, tensor: &Tensor) -> Signature {
        self.inputs.push((name.to_string(), tensor.clone()));
        self
    }
    /// Add output `name`, fetched from `tensor`.
    pub fn output(mut self, name: &str, tensor: &Tensor) -> Signature {
        self.outputs.push((name.to_string(), tensor.clone()));
        self
    }
    /// Run `op` for its effect on every call (a variable assignment).
    pub fn target(mut self, op: &Operation) -> Signature {
        self.targets.push(op.clone());
        self
    }
    /// The method (`tensorflow/serving/predict`, `.../classify`, `.../regress`).
    pub fn method_name(mut self, method: &str) -> Signature {
        self.method_name = Some(method.to_string());
        self
    }
}

/// What [`save`] reads from a model: its graph, the current value of each
/// variable of that graph (by node name), and the signature it serves by
/// default.
pub struct ExportSource {
    pub graph: Graph,
    pub values: BTreeMap<String, Tensor>,
    pub default_signature: Option<Signature>,
}

/// Anything that can be saved: a [`Session`] (its graph and variable
/// values; give the signatures), a [`ConcreteFunction`] (a trace of a
/// `function`; inputs `input_0`, ..., outputs `output_0`, ...), and
/// `nn::Sequential` (input `inputs`, output `outputs`).
pub trait Exportable {
    /// The graph, the variables' values and the default signature.
    fn export_source(&self) -> Result<ExportSource>;
}

/// Every variable of `session`'s graph that has a value, by node name.
pub(crate) fn session_values(session: &Session) -> Result<BTreeMap<String, Tensor>> {
    let mut values = BTreeMap::new();
    for v in session.graph().variables() {
        if session.is_initialized(&v) {
            values.insert(v.name().to_string(), session.variable_value(&v)?);
        }
    }
    Ok(values)
}

impl Exportable for Session {
    fn export_source(&self) -> Result<ExportSource> {
        Ok(ExportSource { graph: self.graph().clone(), values: session_values(self)?, default_signature: None })
    }
}

impl Exportable for ConcreteFunction {
    fn export_source(&self) -> Result<ExportSource> {
        let mut sig = Signature::new();
        for (i, t) in self.inputs().iter().enumerate() {
            sig = sig.input(&format!("input_{i}"), t);
        }
        for (i, t) in self.outputs().iter().enumerate() {
            sig = sig.output(&format!("output_{i}"), t);
        }
        for op in self.effects() {
            sig = sig.target(op);
        }
        Ok(ExportSource {
            graph: self.graph().clone(),
            values: session_values(self.session())?,
            default_signature: Some(sig),
        })
    }
}

/// Options of [`save_with`].
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Files copied into `assets/` (by file name), listed in the manifest.
    pub assets: Vec<PathBuf>,
}

/// Save `model` to directory `dir` with `signatures` (name, signature);
/// with none, the model's default signature as `serving_default`. An
/// existing `dir` is replaced.
#[track_caller]
pub fn save(dir: impl AsRef<Path>, model: &dyn Exportable, signatures: &[(&str, Signature)]) -> Result<()> {
    save_with(dir, model, signatures, &SaveOptions::default())
}

/// [`save`] with options (assets).
#[track_caller]
pub fn save_with(
    dir: impl AsRef<Path>,
    model: &dyn Exportable,
    signatures: &[(&str, Signature)],
    options: &SaveOptions,
) -> Result<()> {
    let dir = dir.as_ref();
    let source = model.export_source()?;
    let mut named: Vec<(String, Signature)> = signatures.iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
    if named.is_empty() {
        match source.default_signature.clone() {
            Some(s) => named.push((DEFAULT_SIGNATURE.to_string(), s)),
            None => bail!(invalid, "saved_model::save: give at least one signature (this model has no default)"),
        }
    }
    format::write(dir, &source, &named, options).map_err(|e| e.with_path(dir))
}

/// Options of [`load_with`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Graph passes of the serving session ([`PassOptions::inference`] by default).
    pub passes: PassOptions,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { passes: PassOptions::inference() }
    }
}

impl LoadOptions {
    /// No pass that may change results by rounding (batch-norm folding off):
    /// outputs bitwise equal to the exported model's.
    pub fn exact() -> LoadOptions {
        LoadOptions { passes: PassOptions::all() }
    }
}

/// One loaded entry point.
#[derive(Clone, Debug)]
pub struct LoadedSignature {
    /// `tensorflow/serving/predict`, ...
    pub method_name: String,
    /// Inputs in name order: what each is and the tensor it feeds.
    pub inputs: Vec<(TensorInfo, Tensor)>,
    /// Outputs in name order.
    pub outputs: Vec<(TensorInfo, Tensor)>,
    /// Nodes run for their effect on every call.
    pub targets: Vec<Operation>,
}

/// A saved model loaded for serving: see the module documentation.
pub struct SavedModel {
    dir: PathBuf,
    manifest: Manifest,
    graph: Graph,
    session: Session,
    signatures: BTreeMap<String, LoadedSignature>,
    ops_used: BTreeMap<String, usize>,
}

/// Op types of `g` and its library, with counts.
fn count_ops(g: &Graph, out: &mut BTreeMap<String, usize>) {
    for n in g.nodes() {
        *out.entry(n.op.type_name().to_string()).or_default() += 1;
    }
    for f in g.functions() {
        count_ops(&f.graph, out);
    }
}

impl std::fmt::Debug for SavedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SavedModel({}, signatures {:?})", self.dir.display(), self.signatures.keys().collect::<Vec<_>>())
    }
}

/// Whether `dir` holds a saved model of this format (its manifest names the
/// format; the version and the files are checked only by [`load`]).
pub fn contains_saved_model(dir: impl AsRef<Path>) -> bool {
    format::names_the_format(dir.as_ref())
}

/// Load the saved model in `dir` with default options.
pub fn load(dir: impl AsRef<Path>) -> Result<SavedModel> {
    load_with(dir, &LoadOptions::default())
}

/// Load the saved model in `dir`: checks every file, freezes, compiles lazily.
pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<SavedModel> {
    let dir = dir.as_ref();
    let files = format::read(dir).map_err(|e| e.with_path(dir))?;
    let format::Files { manifest, graph, variables } = files;
    // The saved values by variable node.
    let mut values: FxHashMap<NodeId, crate::tensor::Value> = FxHashMap::default();
    let mut trainable: FxHashMap<NodeId, bool> = FxHashMap::default();
    for info in &manifest.variables {
        let op = graph.operation(&info.name).map_err(|_| {
            Error::format(format!("saved model: variable '{}' is not in the graph", info.name)).with_path(dir)
        })?;
        let node = graph.node(op.id()).ok_or_else(|| Error::format("saved model: missing node"))?;
        let Op::Variable { dtype, shape } = &node.op else {
            bail!(format, "saved model: '{}' is not a variable of the graph", info.name);
        };
        if info.dtype != *dtype || info.shape != *shape {
            bail!(
                format,
                "saved model: the manifest says variable '{}' is {}{}, the graph {dtype}{shape}",
                info.name,
                info.dtype,
                info.shape
            );
        }
        if values.contains_key(&op.id()) {
            bail!(format, "saved model: variable '{}' is listed twice", info.name);
        }
        let t = variables.tensors.get(&info.name).ok_or_else(|| {
            Error::format(format!("saved model: the variables file has no value for '{}'", info.name)).with_path(dir)
        })?;
        if t.dtype() != *dtype || t.shape() != shape {
            bail!(
                format,
                "saved model: variable '{}' is {dtype}{shape} in the graph but {}{} in the variables file",
                info.name,
                t.dtype(),
                t.shape()
            );
        }
        values.insert(op.id(), t.value()?.clone());
        trainable.insert(op.id(), info.trainable);
    }
    let unsaved = graph.nodes().iter().enumerate().find_map(|(id, n)| {
        let root = graph.resolve_variable(id);
        (matches!(n.op, Op::Variable { .. }) && !values.contains_key(&root)).then(|| n.name.clone())
    });
    if let Some(n) = unsaved {
        bail!(format, "saved model: variable '{n}' of the graph has no saved value");
    }
    let mut ops_used = BTreeMap::new();
    count_ops(&graph, &mut ops_used);
    let (graph, assigned) = graph.frozen(&values)?;
    let session =
        Session::with_options(&graph, SessionOptions { passes: options.passes.clone(), ..Default::default() });
    // Variables the graph assigns stay variables, set to their saved values.
    for node in assigned {
        let v = Variable::from_graph_node(&graph, node, node, trainable.get(&node).copied().unwrap_or(false))?;
        let value = values.get(&node).ok_or_else(|| Error::format("saved model: missing value"))?;
        session.set_variable_value(&v, &value.clone().into_tensor())?;
    }
    let mut signatures = BTreeMap::new();
    for (name, doc) in &manifest.signatures {
        signatures.insert(name.clone(), resolve_signature(&graph, name, doc)?);
    }
    Ok(SavedModel { dir: dir.to_path_buf(), manifest, graph, session, signatures, ops_used })
}

/// A signature, input or output name read from a manifest: no path separators or dot names
/// (`saved-model run` writes files named after outputs), no control characters.
fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > 256
        || key == "."
        || key == ".."
        || key.contains(['/', '\\'])
        || key.chars().any(char::is_control)
    {
        bail!(format, "saved model: invalid {what} name {key:?}");
    }
    Ok(())
}

fn resolve_signature(graph: &Graph, name: &str, doc: &SignatureDoc) -> Result<LoadedSignature> {
    check_key("signature", name)?;
    if doc.outputs.is_empty() {
        bail!(format, "saved model: signature '{name}' has no outputs");
    }
    for key in doc.inputs.keys().chain(doc.outputs.keys()) {
        check_key("input or output", key)?;
    }
    let targets = doc
        .targets
        .iter()
        .map(|t| {
            graph.operation(t).map_err(|_| {
                Error::format(format!("saved model: signature '{name}' runs '{t}', which is not in the graph"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let resolve = |infos: &BTreeMap<String, TensorInfo>, what: &str| -> Result<Vec<(TensorInfo, Tensor)>> {
        infos
            .iter()
            .map(|(key, info)| {
                let t = graph.tensor(&info.tensor_name).map_err(|_| {
                    Error::format(format!(
                        "saved model: signature '{name}' {what} '{key}' names '{}', which is not in the graph",
                        info.tensor_name
                    ))
                })?;
                if t.dtype() != info.dtype || !info.shape.is_compatible_with(t.shape()) {
                    bail!(
                        format,
                        "saved model: signature '{name}' {what} '{key}' is {}{} but '{}' is {}{}",
                        info.dtype,
                        info.shape,
                        info.tensor_name,
                        t.dtype(),
                        t.shape()
                    );
                }
                let mut info = info.clone();
                info.key = key.clone();
                Ok((info, t))
            })
            .collect()
    };
    Ok(LoadedSignature {
        method_name: doc.method_name.clone(),
        inputs: resolve(&doc.inputs, "input")?,
        outputs: resolve(&doc.outputs, "output")?,
        targets,
    })
}

impl SavedModel {
    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The graph as loaded (variables frozen into constants).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// The session that runs the signatures.
    pub fn session(&self) -> &Session {
        &self.session
    }
    /// Signature names, sorted.
    pub fn signature_names(&self) -> Vec<&str> {
        self.signatures.keys().map(String::as_str).collect()
    }
    /// Signature `name`.
    pub fn signature(&self, name: &str) -> Result<&LoadedSignature> {
        self.signatures.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "the model has no signature '{name}' (it has: {})",
                self.signatures.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
    /// The variables as saved: name, dtype, shape, trainable.
    pub fn variables(&self) -> &[VariableInfo] {
        &self.manifest.variables
    }
    /// Total bytes of the variables' values.
    pub fn variable_bytes(&self) -> usize {
        self.manifest.variables.iter().fold(0usize, |acc, v| acc.saturating_add(v.bytes()))
    }
    /// The current value of variable `name` (as saved, unless a signature assigns it).
    pub fn variable_value(&self, name: &str) -> Result<Tensor> {
        if !self.manifest.variables.iter().any(|v| v.name == name) {
            bail!(not_found, "the model has no variable '{name}'");
        }
        let t = self.graph.tensor(&format!("{name}:0"))?;
        Ok(self.session.run(&[&t], &[])?.remove(0))
    }
    /// Op types of the saved graph (its function library included) and how
    /// often each occurs, as saved (before freezing).
    pub fn ops_used(&self) -> &BTreeMap<String, usize> {
        &self.ops_used
    }
    /// The path of asset `name` (a file saved with [`SaveOptions::assets`]).
    pub fn asset(&self, name: &str) -> Result<PathBuf> {
        match self.manifest.assets.iter().find(|a| a.file.strip_prefix("assets/") == Some(name)) {
            Some(FileEntry { file, .. }) => Ok(self.dir.join(file)),
            None => Err(Error::not_found(format!("the model has no asset '{name}'"))),
        }
    }
    /// The version that wrote the directory and the tool that did.
    pub fn producer(&self) -> &str {
        &self.manifest.producer
    }

    /// Run signature `name` on `inputs` (by input name; every input, no
    /// other): the outputs in the signature's (name) order.
    pub fn call(&self, name: &str, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let sig = self.signature(name)?;
        if let Some((extra, _)) = inputs.iter().find(|(k, _)| !sig.inputs.iter().any(|(i, _)| i.key == *k)) {
            bail!(invalid, "signature '{name}' has no input '{extra}'");
        }
        let mut ordered = Vec::with_capacity(sig.inputs.len());
        for (info, _) in &sig.inputs {
            let Some((_, value)) = inputs.iter().find(|(k, _)| *k == info.key) else {
                bail!(invalid, "signature '{name}' needs input '{}' ({}{})", info.key, info.dtype, info.shape);
            };
            ordered.push((*value).clone());
        }
        let out = self.run(name, &ordered)?;
        Ok(sig.outputs.iter().map(|(i, _)| i.key.clone()).zip(out).collect())
    }

    /// Run signature `name` on `inputs` given in the signature's input
    /// order (by name): the outputs in its output order. What a server
    /// calls once it has matched a request's inputs to the signature.
    pub fn run(&self, name: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let sig = self.signature(name)?;
        if inputs.len() != sig.inputs.len() {
            bail!(invalid, "signature '{name}' takes {} inputs, got {}", sig.inputs.len(), inputs.len());
        }
        let mut feeds = Vec::with_capacity(sig.inputs.len());
        for ((info, placeholder), value) in sig.inputs.iter().zip(inputs) {
            info.check(value).map_err(|e| Error::new(e.kind(), format!("signature '{name}': {}", e.message())))?;
            feeds.push((placeholder, value));
        }
        let fetches: Vec<&Tensor> = sig.outputs.iter().map(|(_, t)| t).collect();
        let targets: Vec<&Operation> = sig.targets.iter().collect();
        self.session.run_with_targets(&fetches, &feeds, &targets)
    }
}
