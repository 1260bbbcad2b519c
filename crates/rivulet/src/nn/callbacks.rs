//! Callbacks: code that `fit` calls at the start and end of training, of
//! each epoch and of each batch, as Keras's `callbacks=[...]` (the
//! TensorBoard writer is one).

use super::model::Sequential;
use crate::error::Result;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Hooks into [`Sequential::fit`]. Every method has a default that does
/// nothing; an error from one stops training and is returned by `fit`.
pub trait Callback: Send {
    /// Before the first epoch.
    fn on_train_begin(&mut self, _model: &Sequential) -> Result<()> {
        Ok(())
    }
    /// At the start of epoch `epoch` (counted from 0).
    fn on_epoch_begin(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
    /// After each training batch. `step` counts batches over the whole of
    /// `fit` from 0 (Keras's `train_step` counter); `logs` hold the epoch's
    /// running `loss` and metrics so far, as Keras passes them.
    fn on_train_batch_end(&mut self, _step: u64, _logs: &BTreeMap<String, f64>) -> Result<()> {
        Ok(())
    }
    /// At the end of epoch `epoch`, with its logs (`loss`, metrics and their `val_` variants).
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &BTreeMap<String, f64>, _model: &Sequential) -> Result<()> {
        Ok(())
    }
    /// After the last epoch (also when training stops early with an error from a batch).
    fn on_train_end(&mut self, _model: &Sequential) -> Result<()> {
        Ok(())
    }
}

/// A callback shared between the caller and `fit`, so that its state can
/// be read after training.
#[derive(Clone)]
pub struct SharedCallback(pub Arc<Mutex<dyn Callback>>);

impl SharedCallback {
    /// Share `callback`.
    pub fn new(callback: impl Callback + 'static) -> SharedCallback {
        SharedCallback(Arc::new(Mutex::new(callback)))
    }

    /// Run `f` on the callback (a callback that panicked earlier is still usable).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut dyn Callback) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut *guard)
    }
}

impl fmt::Debug for SharedCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}
