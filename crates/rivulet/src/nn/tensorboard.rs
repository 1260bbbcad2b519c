//! The `TensorBoard` callback (Keras's `tf.keras.callbacks.TensorBoard`):
//! `fit`'s losses and metrics, weight histograms and the model's graph as
//! TensorBoard logs.

use super::callbacks::Callback;
use super::model::Sequential;
use crate::error::{bail, Error, Result};
use crate::summary::SummaryWriter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How often the per-batch values are written (Keras's `update_freq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateFreq {
    /// Only per-epoch values (`'epoch'`, the default).
    #[default]
    Epoch,
    /// Also `batch_loss` and `batch_<metric>` after every batch (`'batch'`).
    Batch,
    /// Also the batch values after every `n`-th batch (an integer `n`).
    Every(u64),
}

/// Writes TensorBoard logs during [`Sequential::fit`], as Keras's callback:
///
/// - under `logdir/train`: `epoch_loss` and `epoch_<metric>` at step
///   `epoch` (counted from 0); `batch_loss` and `batch_<metric>` (the
///   epoch's running values, as Keras logs them) at the global batch step
///   when [`update_freq`](Self::update_freq) asks; a histogram of every
///   weight (tag: the variable's name, `:` as `_`) every
///   [`histogram_freq`](Self::histogram_freq) epochs; and the model's
///   graph at the end of the first epoch (graph mode only: eager models
///   have none);
/// - under `logdir/validation`: the `val_` values under the same tags
///   (`epoch_loss`, `epoch_<metric>`), so that TensorBoard draws train and
///   validation curves in one chart.
///
/// Each `fit` opens new event files and closes them at its end.
#[derive(Debug)]
pub struct TensorBoard {
    logdir: PathBuf,
    histogram_freq: usize,
    write_graph: bool,
    update_freq: UpdateFreq,
    train: Option<SummaryWriter>,
    validation: Option<SummaryWriter>,
    graph_pending: bool,
}

impl TensorBoard {
    /// Logs under `logdir`, with Keras's defaults: per-epoch values only,
    /// no histograms, the graph written.
    pub fn new(logdir: impl AsRef<Path>) -> TensorBoard {
        TensorBoard {
            logdir: logdir.as_ref().to_path_buf(),
            histogram_freq: 0,
            write_graph: true,
            update_freq: UpdateFreq::Epoch,
            train: None,
            validation: None,
            graph_pending: false,
        }
    }

    /// Weight histograms every `epochs` epochs (0: never).
    pub fn histogram_freq(mut self, epochs: usize) -> TensorBoard {
        self.histogram_freq = epochs;
        self
    }

    /// Whether to write the model's graph.
    pub fn write_graph(mut self, write: bool) -> TensorBoard {
        self.write_graph = write;
        self
    }

    /// How often to write per-batch values.
    pub fn update_freq(mut self, freq: UpdateFreq) -> TensorBoard {
        self.update_freq = freq;
        self
    }

    /// The log directory (`train/` and `validation/` are inside it).
    pub fn logdir(&self) -> &Path {
        &self.logdir
    }

    fn train_writer(&mut self) -> Result<&SummaryWriter> {
        if self.train.is_none() {
            self.train = Some(SummaryWriter::create(self.logdir.join("train"))?);
        }
        self.train.as_ref().ok_or_else(|| Error::precondition("the train summary writer is missing"))
    }

    fn validation_writer(&mut self) -> Result<&SummaryWriter> {
        if self.validation.is_none() {
            self.validation = Some(SummaryWriter::create(self.logdir.join("validation"))?);
        }
        self.validation.as_ref().ok_or_else(|| Error::precondition("the validation summary writer is missing"))
    }
}

fn step(n: u64) -> Result<i64> {
    match i64::try_from(n) {
        Ok(s) => Ok(s),
        Err(_) => bail!(invalid, "step {n} does not fit a summary's int64 step"),
    }
}

impl Callback for TensorBoard {
    fn on_train_begin(&mut self, _model: &Sequential) -> Result<()> {
        if let UpdateFreq::Every(0) = self.update_freq {
            bail!(invalid, "TensorBoard: update_freq Every(n) needs n > 0");
        }
        self.graph_pending = self.write_graph;
        self.train_writer()?;
        Ok(())
    }

    fn on_train_batch_end(&mut self, batch_step: u64, logs: &BTreeMap<String, f64>) -> Result<()> {
        let every = match self.update_freq {
            UpdateFreq::Epoch => return Ok(()),
            UpdateFreq::Batch => 1,
            UpdateFreq::Every(n) => n.max(1),
        };
        if !batch_step.is_multiple_of(every) {
            return Ok(());
        }
        let s = step(batch_step)?;
        let writer = self.train_writer()?;
        for (key, value) in logs {
            writer.scalar(&format!("batch_{key}"), *value, s)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &BTreeMap<String, f64>, model: &Sequential) -> Result<()> {
        let s = step(epoch as u64)?;
        let histograms = self.histogram_freq > 0 && epoch.is_multiple_of(self.histogram_freq);
        let write_graph = std::mem::take(&mut self.graph_pending);
        let writer = self.train_writer()?;
        for (key, value) in logs.iter().filter(|(k, _)| !k.starts_with("val_")) {
            writer.scalar(&format!("epoch_{key}"), *value, s)?;
        }
        if histograms {
            for (name, value) in model.get_weights()? {
                writer.histogram(&name.replace(':', "_"), &value, s)?;
            }
        }
        if write_graph {
            if let Some(graph) = model.graph() {
                writer.graph(&graph)?;
            }
        }
        writer.flush()?;
        let validation: Vec<(&String, &f64)> = logs.iter().filter(|(k, _)| k.starts_with("val_")).collect();
        if !validation.is_empty() {
            let writer = self.validation_writer()?;
            for (key, value) in validation {
                writer.scalar(&format!("epoch_{}", &key["val_".len()..]), *value, s)?;
            }
            writer.flush()?;
        }
        Ok(())
    }

    fn on_train_end(&mut self, _model: &Sequential) -> Result<()> {
        let train = self.train.take().map(SummaryWriter::close).unwrap_or(Ok(()));
        let validation = self.validation.take().map(SummaryWriter::close).unwrap_or(Ok(()));
        train.and(validation)
    }
}
