//! What the server serves and how: models with their version policies and
//! labels, server-side batching, limits. Read from flags or from
//! TensorFlow Serving's config files (protobuf text format).

use crate::textproto::{self, Field, Message};
use rivulet::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Which numbered versions under a model's base path are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The newest `n` (TensorFlow Serving's default: the newest one).
    Latest(usize),
    /// Every version found.
    All,
    /// Exactly these.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> VersionPolicy {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those on disk.
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = on_disk.to_vec();
        v.sort_unstable();
        match self {
            VersionPolicy::Latest(n) => v.split_off(v.len().saturating_sub(*n)),
            VersionPolicy::All => v,
            VersionPolicy::Specific(want) => v.into_iter().filter(|x| want.contains(x)).collect(),
        }
    }
}

/// One served model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// The name in request paths (`/v1/models/NAME`).
    pub name: String,
    /// A directory of numbered version directories, each a saved model.
    pub base_path: PathBuf,
    pub policy: VersionPolicy,
    /// Version labels (`/v1/models/NAME/labels/LABEL`).
    pub labels: BTreeMap<String, u64>,
}

impl ModelConfig {
    /// A model served with the default policy (the newest version).
    pub fn new(name: &str, base_path: impl Into<PathBuf>) -> ModelConfig {
        ModelConfig {
            name: name.to_string(),
            base_path: base_path.into(),
            policy: VersionPolicy::default(),
            labels: BTreeMap::new(),
        }
    }
}

/// Server-side batching: concurrent requests to one signature are merged
/// along their first axis into one run.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchingOptions {
    /// Rows in one merged run.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others.
    pub batch_timeout: Duration,
    /// Batches that may wait (beyond them a request is refused with 503).
    pub max_enqueued_batches: usize,
    /// Threads running merged batches.
    pub num_batch_threads: usize,
}

impl Default for BatchingOptions {
    fn default() -> BatchingOptions {
        BatchingOptions {
            max_batch_size: 64,
            batch_timeout: Duration::from_micros(500),
            max_enqueued_batches: 64,
            num_batch_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl BatchingOptions {
    /// Read TensorFlow Serving's `--batching_parameters_file`
    /// (`max_batch_size { value: 128 }`, `batch_timeout_micros { value: 0 }`, ...).
    pub fn from_text(text: &str) -> Result<BatchingOptions> {
        let m = textproto::parse(text).map_err(|e| invalid(format!("batching parameters: {e}")))?;
        let known = [
            "max_batch_size",
            "batch_timeout_micros",
            "max_enqueued_batches",
            "num_batch_threads",
            "pad_variable_length_inputs",
            "allowed_batch_sizes",
            "thread_pool_name",
        ];
        if let Some(f) = m.unknown(&known) {
            return Err(invalid(format!("batching parameters: unknown field '{f}'")));
        }
        let value = |name: &str| -> Result<Option<u64>> {
            match m.message(name).and_then(|w| w.scalar("value")) {
                Some(v) => {
                    v.parse().map(Some).map_err(|_| invalid(format!("batching parameters: {name} is not a number")))
                }
                None => Ok(None),
            }
        };
        let mut o = BatchingOptions::default();
        if let Some(v) = value("max_batch_size")? {
            o.max_batch_size = v as usize;
        }
        if let Some(v) = value("batch_timeout_micros")? {
            o.batch_timeout = Duration::from_micros(v);
        }
        if let Some(v) = value("max_enqueued_batches")? {
            o.max_enqueued_batches = v as usize;
        }
        if let Some(v) = value("num_batch_threads")? {
            o.num_batch_threads = v as usize;
        }
        o.check()?;
        Ok(o)
    }

    /// Refuse settings that cannot work.
    pub fn check(&self) -> Result<()> {
        if self.max_batch_size == 0 || self.num_batch_threads == 0 || self.max_enqueued_batches == 0 {
            return Err(invalid(
                "batching: max_batch_size, num_batch_threads and max_enqueued_batches must be positive",
            ));
        }
        if self.num_batch_threads > 256 {
            return Err(invalid("batching: at most 256 batch threads"));
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// Read TensorFlow Serving's `--model_config_file`: a `model_config_list`
/// of `config { name base_path model_platform model_version_policy version_labels }`.
pub fn models_from_text(text: &str) -> Result<Vec<ModelConfig>> {
    let m = textproto::parse(text).map_err(|e| invalid(format!("model config: {e}")))?;
    let list = m.message("model_config_list").ok_or_else(|| invalid("model config: no model_config_list"))?;
    let mut out: Vec<ModelConfig> = Vec::new();
    for f in list.all("config") {
        let Field::Message(c) = f else { return Err(invalid("model config: 'config' must be a message")) };
        out.push(model_from_message(c)?);
    }
    if out.is_empty() {
        return Err(invalid("model config: model_config_list has no config"));
    }
    for (i, c) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.name == c.name) {
            return Err(invalid(format!("model config: two models named '{}'", c.name)));
        }
    }
    Ok(out)
}

fn model_from_message(c: &Message) -> Result<ModelConfig> {
    let known = ["name", "base_path", "model_platform", "model_version_policy", "version_labels", "logging_config"];
    if let Some(f) = c.unknown(&known) {
        return Err(invalid(format!("model config: unknown field '{f}'")));
    }
    let name =
        c.scalar("name").filter(|n| !n.is_empty()).ok_or_else(|| invalid("model config: a config has no name"))?;
    let base =
        c.scalar("base_path").ok_or_else(|| invalid(format!("model config: model '{name}' has no base_path")))?;
    if let Some(p) = c.scalar("model_platform") {
        if p != "tensorflow" && p != "rivulet" {
            return Err(invalid(format!(
                "model config: model '{name}' has platform '{p}' (rivulet serves its own saved models)"
            )));
        }
    }
    let mut config = ModelConfig::new(name, base);
    if let Some(p) = c.message("model_version_policy") {
        let number =
            |s: &str| s.parse::<u64>().map_err(|_| invalid(format!("model config: '{s}' is not a version number")));
        config.policy = if let Some(l) = p.message("latest") {
            VersionPolicy::Latest(l.scalar("num_versions").map(number).transpose()?.unwrap_or(1).max(1) as usize)
        } else if p.message("all").is_some() {
            VersionPolicy::All
        } else if let Some(s) = p.message("specific") {
            let v = s
                .all("versions")
                .map(|f| match f {
                    Field::Scalar(x) => number(x),
                    Field::Message(_) => Err(invalid("model config: versions must be numbers")),
                })
                .collect::<Result<Vec<u64>>>()?;
            if v.is_empty() {
                return Err(invalid(format!("model config: model '{name}' has a specific policy with no versions")));
            }
            VersionPolicy::Specific(v)
        } else {
            return Err(invalid(format!("model config: model '{name}': policy must be latest, all or specific")));
        };
    }
    for f in c.all("version_labels") {
        let Field::Message(l) = f else { return Err(invalid("model config: version_labels must be a message")) };
        let (Some(k), Some(v)) = (l.scalar("key"), l.scalar("value")) else {
            return Err(invalid("model config: version_labels needs a key and a value"));
        };
        let v = v.parse::<u64>().map_err(|_| invalid(format!("model config: label '{k}' is not a version number")))?;
        config.labels.insert(k.to_string(), v);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_select_versions() {
        assert_eq!(VersionPolicy::Latest(1).select(&[3, 1, 2]), vec![3]);
        assert_eq!(VersionPolicy::Latest(2).select(&[3, 1, 2]), vec![2, 3]);
        assert_eq!(VersionPolicy::Latest(5).select(&[1]), vec![1]);
        assert_eq!(VersionPolicy::All.select(&[2, 1]), vec![1, 2]);
        assert_eq!(VersionPolicy::Specific(vec![1, 7]).select(&[1, 2, 3]), vec![1]);
        assert!(VersionPolicy::Latest(1).select(&[]).is_empty());
    }

    #[test]
    fn model_config_file() {
        let text = "model_config_list {
          config { name: 'digits' base_path: '/m/digits' model_platform: 'tensorflow'
                   model_version_policy { specific { versions: 1 versions: 2 } }
                   version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } }
          config { name: 'other' base_path: '/m/other' model_version_policy { all {} } }
        }";
        let models = models_from_text(text).unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].policy, VersionPolicy::Specific(vec![1, 2]));
        assert_eq!(models[0].labels.get("canary"), Some(&2));
        assert_eq!(models[1].policy, VersionPolicy::All);
        for bad in [
            "",
            "model_config_list { }",
            "model_config_list { config { base_path: '/x' } }",
            "model_config_list { config { name: 'a' } }",
            "model_config_list { config { name: 'a' base_path: '/a' bogus: 1 } }",
            "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
            "model_config_list { config { name: 'a' base_path: '/a' model_version_policy { specific { } } } }",
            "model_config_list { config { name: 'a' base_path: '/a' version_labels { key: 'x' value: 'y' } } }",
        ] {
            assert!(models_from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batching_parameters_file() {
        let o = BatchingOptions::from_text(
            "max_batch_size { value: 128 } batch_timeout_micros { value: 250 } num_batch_threads { value: 2 }",
        )
        .unwrap();
        assert_eq!(o.max_batch_size, 128);
        assert_eq!(o.batch_timeout, Duration::from_micros(250));
        assert_eq!(o.num_batch_threads, 2);
        assert!(BatchingOptions::from_text("max_batch_size { value: 0 }").is_err());
        assert!(BatchingOptions::from_text("max_batch_size { value: x }").is_err());
        assert!(BatchingOptions::from_text("nope { value: 1 }").is_err());
    }
}
