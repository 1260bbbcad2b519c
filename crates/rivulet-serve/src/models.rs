//! The served models and their versions. A poll (at start, then every
//! poll interval) lists each base path's numbered directories, loads the
//! versions the policy wants that are not loaded yet, and only then
//! unloads the ones it no longer wants. Requests hold an `Arc` of the
//! version they run on, so a version that goes away finishes every request
//! it accepted: a new version on disk replaces the old one without a
//! restart and without a failed request.

use crate::batching::Batcher;
use crate::config::{BatchingOptions, ModelConfig};
use crate::error::{Code, ServeError};
use crate::metrics::Metrics;
use parking_lot::{Mutex, RwLock};
use rivulet::saved_model::{self, LoadOptions, SavedModel};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// One loaded version: the model and, with batching, a queue per batchable signature.
pub struct Servable {
    pub version: u64,
    pub model: Arc<SavedModel>,
    pub batchers: BTreeMap<String, Batcher>,
    /// Requests to this version being answered (for the batchers' adaptive wait).
    pub in_flight: Arc<AtomicUsize>,
}

/// Counts a request in [`Servable::in_flight`] until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn new(s: &Servable) -> InFlight {
        s.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(s.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A version's state, as TensorFlow Serving reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionStatus {
    /// `LOADING`, `AVAILABLE`, `UNLOADING` or `END`.
    pub state: &'static str,
    /// Why loading failed (empty when it did not).
    pub error: String,
}

/// Which version a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Version(u64),
    Label(String),
}

struct Model {
    config: ModelConfig,
    versions: RwLock<BTreeMap<u64, Arc<Servable>>>,
    status: Mutex<BTreeMap<u64, VersionStatus>>,
    /// Versions that failed to load, with their files' stamp then: retried
    /// only when a file changes.
    failed: Mutex<BTreeMap<u64, Stamp>>,
}

/// Every served model.
pub struct Registry {
    models: BTreeMap<String, Model>,
    batching: Option<BatchingOptions>,
    load: LoadOptions,
    metrics: Arc<Metrics>,
}

/// The numbered version directories under `base`.
fn versions_on_disk(base: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name();
            let s = name.to_str()?;
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u64>().ok()
        })
        .collect()
}

/// Size and modification time of a version's files (a copy in progress changes it).
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(dir: &Path) -> Stamp {
    ["saved_model.json", "graph.json", "variables/variables.safetensors"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).and_then(|m| Ok((m.len(), m.modified()?))).ok())
        .collect()
}

impl Registry {
    /// A registry of `models`, nothing loaded yet (see [`Registry::poll`]).
    pub fn new(
        models: Vec<ModelConfig>,
        batching: Option<BatchingOptions>,
        load: LoadOptions,
        metrics: Arc<Metrics>,
    ) -> Registry {
        let models = models
            .into_iter()
            .map(|config| {
                let m = Model {
                    config,
                    versions: RwLock::new(BTreeMap::new()),
                    status: Mutex::new(BTreeMap::new()),
                    failed: Mutex::new(BTreeMap::new()),
                };
                (m.config.name.clone(), m)
            })
            .collect();
        Registry { models, batching, load, metrics }
    }

    /// Load and unload versions to match what is on disk.
    pub fn poll(&self) {
        for m in self.models.values() {
            self.poll_model(m);
        }
    }

    fn poll_model(&self, m: &Model) {
        let wanted = m.config.policy.select(&versions_on_disk(&m.config.base_path));
        for &v in &wanted {
            if m.versions.read().contains_key(&v) {
                continue;
            }
            let dir = m.config.base_path.join(v.to_string());
            let stamp = stamp(&dir);
            if m.failed.lock().get(&v).is_some_and(|s| *s == stamp) {
                continue;
            }
            m.status.lock().insert(v, VersionStatus { state: "LOADING", error: String::new() });
            match self.load_version(&m.config.name, &dir, v) {
                Ok(s) => {
                    m.failed.lock().remove(&v);
                    m.versions.write().insert(v, Arc::new(s));
                    m.status.lock().insert(v, VersionStatus { state: "AVAILABLE", error: String::new() });
                    log::info!("serving {} version {v}", m.config.name);
                }
                Err(e) => {
                    log::error!("cannot load {} version {v}: {e}", m.config.name);
                    m.failed.lock().insert(v, stamp);
                    m.status.lock().insert(v, VersionStatus { state: "END", error: e.to_string() });
                }
            }
        }
        // Unload what is no longer wanted once a wanted version serves (a
        // new version that fails to load leaves the old one serving).
        let versions = m.versions.read();
        let replaced = wanted.iter().any(|v| versions.contains_key(v));
        let gone: Vec<u64> =
            if replaced { versions.keys().filter(|v| !wanted.contains(v)).copied().collect() } else { Vec::new() };
        drop(versions);
        if !gone.is_empty() {
            let mut versions = m.versions.write();
            for v in gone {
                versions.remove(&v);
                m.status.lock().insert(v, VersionStatus { state: "END", error: String::new() });
                log::info!("unloaded {} version {v}", m.config.name);
            }
        }
        self.metrics.versions(&m.config.name, m.versions.read().len());
    }

    fn load_version(&self, name: &str, dir: &Path, version: u64) -> rivulet::Result<Servable> {
        let model = Arc::new(saved_model::load_with(dir, &self.load)?);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut batchers = BTreeMap::new();
        if let Some(b) = &self.batching {
            for sig in model.signature_names() {
                // Batchable: every input's first axis is the batch (unknown size).
                let s = model.signature(sig)?;
                let batchable = !s.inputs.is_empty()
                    && s.inputs.iter().all(|(i, _)| i.shape.rank() > 0 && i.shape.dims()[0] == rivulet::UNKNOWN);
                if batchable {
                    let batcher = Batcher::new(model.clone(), sig, b, self.metrics.clone(), name, in_flight.clone());
                    batchers.insert(sig.to_string(), batcher);
                }
            }
        }
        Ok(Servable { version, model, batchers, in_flight })
    }

    /// Whether `name` is a configured model.
    pub fn knows(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    fn model(&self, name: &str) -> Result<&Model, ServeError> {
        self.models
            .get(name)
            .ok_or_else(|| ServeError::not_found(format!("Servable not found for request: Latest({name})")))
    }

    /// The version a request runs on.
    pub fn resolve(&self, name: &str, selector: &Selector) -> Result<Arc<Servable>, ServeError> {
        let m = self.model(name)?;
        let versions = m.versions.read();
        let found = match selector {
            Selector::Latest => versions.values().next_back().cloned(),
            Selector::Version(v) => versions.get(v).cloned(),
            Selector::Label(l) => {
                let v = m
                    .config
                    .labels
                    .get(l)
                    .ok_or_else(|| ServeError::invalid(format!("Unrecognized servable version label: {l}")))?;
                versions.get(v).cloned()
            }
        };
        found.ok_or_else(|| match selector {
            Selector::Latest => {
                ServeError::new(Code::NotFound, format!("Servable not found for request: Latest({name})"))
            }
            Selector::Version(v) => {
                ServeError::not_found(format!("Servable not found for request: Specific({name}, {v})"))
            }
            Selector::Label(l) => ServeError::not_found(format!("Servable not found for request: Label({name}, {l})")),
        })
    }

    /// Every known version's status, newest first (or only `selector`'s).
    pub fn status(&self, name: &str, selector: &Selector) -> Result<Vec<(u64, VersionStatus)>, ServeError> {
        let m = self.model(name)?;
        let status = m.status.lock().clone();
        let pick = match selector {
            Selector::Latest => None,
            Selector::Version(v) => Some(*v),
            Selector::Label(l) => Some(
                *m.config
                    .labels
                    .get(l)
                    .ok_or_else(|| ServeError::invalid(format!("Unrecognized servable version label: {l}")))?,
            ),
        };
        let out: Vec<(u64, VersionStatus)> = match pick {
            Some(v) => status.get(&v).map(|s| vec![(v, s.clone())]).unwrap_or_default(),
            None => status.into_iter().rev().collect(),
        };
        if out.is_empty() {
            return Err(ServeError::not_found(match pick {
                Some(v) => format!("Could not find version {v} of model {name}"),
                None => format!("Could not find any versions of model {name}"),
            }));
        }
        Ok(out)
    }
}
