//! A Keras-like `Sequential` model: `compile`, `fit` (with a progress bar in
//! the Keras format), `evaluate`, `predict`, in eager or graph mode.
//!
//! Eager mode trains with a `GradientTape` per batch. Graph mode builds, on
//! the first call, one graph with placeholders for a batch, the training
//! step (forward, loss, gradients, updates) and an inference path sharing
//! the same variables, and runs it in a `Session`, feeding each batch.

use super::callbacks::SharedCallback;
use super::layers::Layer;
use super::losses::Loss;
use super::metrics::{Mean, Metric, MetricState};
use super::optimizers::Optimizer;
use crate::autodiff::{gradients, tape, GradientTape, Unconnected};
use crate::data::{Cardinality, Dataset};
use crate::distribute::Strategy;
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::graph::{Graph, Operation};
use crate::ops::{self, Variable};
use crate::runtime::Session;
use crate::tensor::{DType, Shape, UNKNOWN};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

/// How a compiled model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExecutionMode {
    /// One op at a time, gradients from a tape.
    Eager,
    /// A graph built once and run in a session.
    #[default]
    Graph,
}

/// What `fit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Nothing.
    Silent,
    /// A progress bar per epoch on a terminal, one line per epoch otherwise.
    #[default]
    Auto,
    /// One line per epoch.
    Lines,
}

/// Options of [`Sequential::fit`].
#[derive(Clone, Debug)]
pub struct FitOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// Fraction of the data (taken from the end, before shuffling, as Keras) held out for validation.
    pub validation_split: f64,
    /// Explicit validation data (wins over `validation_split`).
    pub validation_data: Option<(Tensor, Tensor)>,
    /// A dataset of `(x, y)` batches to validate on after each epoch (wins over both above).
    pub validation_dataset: Option<Dataset>,
    /// Shuffle the training examples each epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    pub seed: u64,
    /// Epoch to start from (when resuming from a checkpoint).
    pub initial_epoch: usize,
    pub verbose: Verbosity,
    /// Called at the start and end of training, epochs and batches (`TensorBoard`, ...).
    pub callbacks: Vec<SharedCallback>,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation_split: 0.0,
            validation_data: None,
            validation_dataset: None,
            shuffle: true,
            seed: 0,
            initial_epoch: 0,
            verbose: Verbosity::Auto,
            callbacks: Vec::new(),
        }
    }
}

impl FitOptions {
    /// These options with `callback` added to the list.
    pub fn callback(mut self, callback: SharedCallback) -> FitOptions {
        self.callbacks.push(callback);
        self
    }
}

/// Per-epoch results of `fit`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// One map per epoch: `loss`, metric names, and `val_` variants.
    pub epochs: Vec<BTreeMap<String, f64>>,
}

impl History {
    /// The series of one quantity over the epochs.
    pub fn get(&self, key: &str) -> Vec<f64> {
        self.epochs.iter().filter_map(|e| e.get(key).copied()).collect()
    }
    /// Its value after the last epoch.
    pub fn last(&self, key: &str) -> Option<f64> {
        self.epochs.last().and_then(|e| e.get(key).copied())
    }
}

/// The graph, session and tensors of a graph-mode model: the inference
/// path first, the training path (which needs the labels' type) added on
/// the first fit or evaluate. Shared (`Arc`) so that runs hold no lock on it.
#[derive(Clone)]
struct GraphRun {
    graph: Graph,
    session: Arc<Session>,
    x: Tensor,
    eval_pred: Tensor,
    train: Option<TrainPath>,
}

#[derive(Clone)]
struct TrainPath {
    /// Each local replica's feeds under a strategy: its rows of the batch,
    /// its labels, and its share of the global batch (a float32 scalar).
    replicas: Vec<(Tensor, Tensor, Tensor)>,
    y: Tensor,
    train_op: Operation,
    train_loss: Tensor,
    /// Each metric's per-batch state tensors.
    train_metrics: Vec<Vec<Tensor>>,
    eval_loss: Tensor,
    eval_metrics: Vec<Vec<Tensor>>,
}

struct Compiled {
    optimizer: Optimizer,
    loss: Loss,
    metrics: Vec<Metric>,
    mode: ExecutionMode,
    /// Taken only to build or look up the run, never while it runs: a run
    /// waiting for its steps may pick up, on the same thread, another call
    /// of this model (from a parallel loop) that needs the lock.
    graph: Mutex<Option<Arc<GraphRun>>>,
    /// Serializes graph-mode training steps and direct variable access, so
    /// that a step is never mixed with another or with a restore. Inference
    /// runs without it.
    training: Mutex<()>,
    /// Under a strategy in eager mode: whether the variables have been made
    /// and set to worker 0's values.
    synced: std::sync::atomic::AtomicBool,
}

/// A stack of layers applied in order.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    compiled: Option<Compiled>,
    /// Each layer's output shape at the latest call, for [`Sequential::summary`].
    output_shapes: Mutex<Vec<Shape>>,
    /// The input's dtype and shape (batch axis unknown) at the latest call, for export.
    input_spec: Mutex<Option<(DType, Shape)>>,
    /// How training is spread over replicas and workers.
    strategy: Option<Strategy>,
}

/// Rows `idx` of `t` (a batch).
fn rows(t: &Tensor, idx: &[i64]) -> Result<Tensor> {
    ops::gather(t, &Tensor::from(idx.to_vec()), 0, 0)
}

/// `[None, d1, d2, ...]` for a data tensor `[n, d1, d2, ...]`.
fn batch_shape(t: &Tensor) -> Shape {
    let mut dims = t.shape().to_vec();
    if let Some(d) = dims.first_mut() {
        *d = crate::tensor::UNKNOWN;
    }
    Shape::from(dims)
}

impl Sequential {
    /// A model of `layers`.
    pub fn new(layers: Vec<Box<dyn Layer>>) -> Sequential {
        Sequential {
            layers,
            compiled: None,
            output_shapes: Mutex::new(Vec::new()),
            input_spec: Mutex::new(None),
            strategy: None,
        }
    }

    /// Train under `strategy` (Keras: build and compile the model inside
    /// `strategy.scope()`): the variables are set to worker 0's values when
    /// they are made, `fit` splits each global batch over the replicas and
    /// sums their gradients across workers, the loss and metrics it reports
    /// are over the global batch, and only worker 0 prints progress and runs
    /// callbacks (logs, checkpoints). Evaluation and prediction run on each
    /// worker's whole input. Call it before the model first runs.
    pub fn distribute(&mut self, strategy: &Strategy) -> Result<()> {
        let built = self.compiled.as_ref().is_some_and(|c| c.graph.lock().is_some())
            || self.layers.iter().any(|l| !l.variables().is_empty());
        if built {
            bail!(precondition, "distribute: the model has already made its variables; give it the strategy first");
        }
        self.strategy = Some(strategy.clone());
        Ok(())
    }

    /// The strategy given to [`Sequential::distribute`].
    pub fn strategy(&self) -> Option<&Strategy> {
        self.strategy.as_ref()
    }

    /// Whether this process writes logs and checkpoints: worker 0 of the
    /// strategy, or any process without one.
    pub fn is_chief(&self) -> bool {
        self.strategy.as_ref().is_none_or(Strategy::is_chief)
    }

    /// Add a layer at the end.
    pub fn add(&mut self, layer: impl Layer + 'static) {
        self.layers.push(Box::new(layer));
    }

    /// Apply every layer to `x`.
    #[track_caller]
    pub fn call(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        at_caller("Sequential.call", self.call_impl(x, training))
    }

    fn call_impl(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let mut shapes = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            h = l.call(&h, training).map_err(|e| e.with_context(|| op_context(l.name())))?;
            shapes.push(h.shape().clone());
        }
        *self.output_shapes.lock() = shapes;
        *self.input_spec.lock() = Some((x.dtype(), batch_shape(x)));
        Ok(h)
    }

    /// A table of the layers, each with its type, output shape (the batch
    /// axis as `None`) and parameter count, then the totals, as Keras's
    /// `model.summary()` prints. Shapes are those of the latest call (or
    /// build); before the first, they show as `?`.
    pub fn summary(&self) -> String {
        let shapes = self.output_shapes.lock().clone();
        let count = |vars: &[Variable]| vars.iter().map(|v| v.current().shape().numel().unwrap_or(0)).sum::<usize>();
        let group = |n: usize| {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        };
        let bytes = |vars: &[Variable]| {
            let b: usize =
                vars.iter().map(|v| v.current().shape().numel().unwrap_or(0) * v.current().dtype().size()).sum();
            // Keras's units: powers of 1024, two decimals.
            let (mut size, mut unit) = (b as f64, 0);
            while size >= 1024.0 && unit < 4 {
                size /= 1024.0;
                unit += 1;
            }
            format!("{size:.2} {}", ["B", "KB", "MB", "GB", "TB"][unit])
        };
        let rule = |c: char| c.to_string().repeat(72);
        let mut out = format!("Model: \"sequential\"\n{}\n", rule('_'));
        out += &format!(" {:<34}{:<26}{:>10}\n{}\n", "Layer (type)", "Output Shape", "Param #", rule('='));
        for (i, l) in self.layers.iter().enumerate() {
            let shape = match shapes.get(i) {
                Some(s) => {
                    let dims: Vec<String> = s
                        .dims()
                        .iter()
                        .enumerate()
                        .map(|(a, &d)| if a == 0 || d == UNKNOWN { "None".to_string() } else { d.to_string() })
                        .collect();
                    if dims.len() == 1 {
                        format!("({},)", dims[0])
                    } else {
                        format!("({})", dims.join(", "))
                    }
                }
                None => "?".to_string(),
            };
            let label = format!("{} ({})", l.name(), l.kind());
            out += &format!(" {label:<34}{shape:<26}{:>10}\n", group(count(&l.variables())));
        }
        let all = self.variables();
        let (trainable, frozen): (Vec<Variable>, Vec<Variable>) = all.iter().cloned().partition(|v| v.trainable());
        out += &format!("{}\n", rule('='));
        for (what, vars) in [("Total", &all), ("Trainable", &trainable), ("Non-trainable", &frozen)] {
            out += &format!("{what} params: {} ({})\n", group(count(vars)), bytes(vars));
        }
        out += &format!("{}\n", rule('_'));
        out
    }

    /// All variables, layer by layer (empty until the model has been called).
    pub fn variables(&self) -> Vec<Variable> {
        self.layers.iter().flat_map(|l| l.variables()).collect()
    }

    /// The variables the optimizer trains.
    pub fn trainable_variables(&self) -> Vec<Variable> {
        self.layers.iter().flat_map(|l| l.trainable_variables()).collect()
    }

    /// Choose the optimizer, the loss, the metrics and the execution mode.
    pub fn compile(&mut self, optimizer: Optimizer, loss: Loss, metrics: &[Metric], mode: ExecutionMode) {
        self.compiled = Some(Compiled {
            optimizer,
            loss,
            metrics: metrics.to_vec(),
            mode,
            graph: Mutex::new(None),
            training: Mutex::new(()),
            synced: std::sync::atomic::AtomicBool::new(false),
        });
    }

    fn compiled(&self) -> Result<&Compiled> {
        self.compiled.as_ref().ok_or_else(|| Error::precondition("the model must be compiled before fit/evaluate"))
    }

    /// The optimizer given to `compile`.
    pub fn optimizer(&self) -> Option<&Optimizer> {
        self.compiled.as_ref().map(|c| &c.optimizer)
    }

    /// The session of a graph-mode model (after the first fit/evaluate/predict);
    /// training steps wait while `f` runs.
    pub fn with_session<R>(&self, f: impl FnOnce(&Session) -> R) -> Option<R> {
        let c = self.compiled.as_ref()?;
        let run = c.graph.lock().clone()?;
        let _step = c.training.lock();
        Some(f(&run.session))
    }

    /// The graph of a graph-mode model, once built (by the first fit,
    /// evaluate, predict or build): inference under `inference/`, the
    /// training step under `train/`. `None` in eager mode.
    pub fn graph(&self) -> Option<Graph> {
        let c = self.compiled.as_ref()?;
        let run = c.graph.lock().clone()?;
        Some(run.graph.clone())
    }

    /// Build the graph-mode inference path (once).
    fn graph_base(&self, c: &Compiled, x: &Tensor) -> Result<Arc<GraphRun>> {
        let mut guard = c.graph.lock();
        if let Some(run) = guard.as_ref() {
            return Ok(run.clone());
        }
        let g = Graph::new();
        let px = g.placeholder("x", x.dtype(), batch_shape(x))?;
        let eval_pred = {
            let _s = g.name_scope("inference");
            self.call(&px, false)?
        };
        let session = Arc::new(Session::new(&g));
        session.run_targets(&[&g.global_variables_initializer()?])?;
        self.sync_session_variables(&g, &session)?;
        let run = Arc::new(GraphRun { graph: g, session, x: px, eval_pred, train: None });
        *guard = Some(run.clone());
        Ok(run)
    }

    /// Build the graph-mode training path too (once), initializing only the
    /// variables it adds.
    fn graph_run(&self, c: &Compiled, x: &Tensor, y: &Tensor) -> Result<Arc<GraphRun>> {
        let base = self.graph_base(c, x)?;
        if base.train.is_some() {
            return Ok(base);
        }
        let mut guard = c.graph.lock();
        let mut run = match guard.as_ref() {
            Some(current) if current.train.is_some() => return Ok(current.clone()),
            Some(current) => GraphRun::clone(current),
            None => return Err(Error::graph("graph not built")),
        };
        let g = run.graph.clone();
        let py = g.placeholder("y", y.dtype(), batch_shape(y))?;
        let vars = self.trainable_variables();
        let refs: Vec<&Variable> = vars.iter().collect();
        let mut targets = Vec::new();
        let (train_loss, train_metrics, replicas) = match &self.strategy {
            None => {
                let pred = {
                    let _s = g.name_scope("train");
                    self.call(&run.x, true)?
                };
                let train_loss = c.loss.compute(&py, &pred)?;
                let train_metrics =
                    c.metrics.iter().map(|m| m.batch_state(&py, &pred, None)).collect::<Result<Vec<_>>>()?;
                targets.push(c.optimizer.minimize(&train_loss, &refs)?);
                (train_loss, train_metrics, Vec::new())
            }
            Some(strategy) => {
                let (loss, metrics, replicas) = self.replicated_step(c, strategy, &g, x, y)?;
                let reads: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
                let read_refs: Vec<&Tensor> = reads.iter().collect();
                let grads = gradients(&[&c.optimizer.scale_loss(&loss)?], &read_refs, None, Unconnected::Zero)?;
                let grads: Vec<Tensor> = grads
                    .into_iter()
                    .zip(&vars)
                    .map(|(g, v)| g.map_or_else(|| ops::zeros_like(&v.read()), Ok))
                    .collect::<Result<_>>()?;
                let grads = strategy.reduce_gradients(&grads)?;
                // Last layer first: the order the buckets come back in, so
                // that each bucket's updates run while later ones travel.
                let pairs: Vec<(Tensor, &Variable)> = grads.into_iter().zip(refs.iter().copied()).rev().collect();
                if let Some(step) = c.optimizer.apply_gradients(&pairs)? {
                    targets.push(step);
                }
                (loss, metrics, replicas)
            }
        };
        for l in &self.layers {
            targets.extend(l.take_updates());
        }
        let target_refs: Vec<&Operation> = targets.iter().collect();
        let train_op = g.group(&target_refs)?;
        let eval_loss = c.loss.compute(&py, &run.eval_pred)?;
        let eval_metrics =
            c.metrics.iter().map(|m| m.batch_state(&py, &run.eval_pred, None)).collect::<Result<Vec<_>>>()?;
        for v in g.variables() {
            if !run.session.is_initialized(&v) {
                if let Some(init) = v.initializer() {
                    run.session.run_targets(&[&init])?;
                }
            }
        }
        self.sync_session_variables(&g, &run.session)?;
        run.train = Some(TrainPath { replicas, y: py, train_op, train_loss, train_metrics, eval_loss, eval_metrics });
        let run = Arc::new(run);
        *guard = Some(run.clone());
        Ok(run)
    }

    /// Each local replica's forward pass under its device, on placeholders
    /// of its own: the sum of their losses weighted by their shares of the
    /// global batch (whose gradients, summed over the workers, are those of
    /// the mean loss over the global batch), the metrics' states summed over
    /// the replicas, and each replica's feeds.
    #[allow(clippy::type_complexity)]
    fn replicated_step(
        &self,
        c: &Compiled,
        strategy: &Strategy,
        g: &Graph,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<(Tensor, Vec<Vec<Tensor>>, Vec<(Tensor, Tensor, Tensor)>)> {
        let mut total: Option<Tensor> = None;
        let mut states: Option<Vec<Vec<Tensor>>> = None;
        let mut replicas = Vec::new();
        for (r, device) in strategy.local_devices().iter().enumerate() {
            let xr = g.placeholder(&format!("x_replica_{r}"), x.dtype(), batch_shape(x))?;
            let yr = g.placeholder(&format!("y_replica_{r}"), y.dtype(), batch_shape(y))?;
            let wr = g.placeholder(&format!("share_replica_{r}"), DType::F32, Shape::scalar())?;
            let _scope = g.name_scope(&format!("train/replica_{r}"));
            let _device = crate::context::device_scope(&device.to_string())?;
            let pred = self.call(&xr, true)?;
            let loss = c.loss.compute(&yr, &pred)?;
            let weighted = ops::mul(&loss, &ops::cast(&wr, loss.dtype())?)?;
            total = Some(match total {
                None => weighted,
                Some(t) => ops::add(&t, &weighted)?,
            });
            let mine = c.metrics.iter().map(|m| m.batch_state(&yr, &pred, None)).collect::<Result<Vec<_>>>()?;
            states = Some(match states {
                None => mine,
                Some(acc) => acc
                    .iter()
                    .zip(&mine)
                    .map(|(a, b)| a.iter().zip(b).map(|(a, b)| ops::add(a, b)).collect::<Result<Vec<_>>>())
                    .collect::<Result<Vec<_>>>()?,
            });
            replicas.push((xr, yr, wr));
        }
        let total = total.ok_or_else(|| Error::invalid("a strategy needs at least one replica"))?;
        Ok((total, states.unwrap_or_default(), replicas))
    }

    /// Under a strategy, set every variable of the session to worker 0's value.
    fn sync_session_variables(&self, g: &Graph, session: &Session) -> Result<()> {
        let Some(strategy) = self.strategy.as_ref().filter(|s| s.num_workers() > 1) else {
            return Ok(());
        };
        for v in g.variables() {
            if session.is_initialized(&v) {
                let value = strategy.broadcast_value(&session.variable_value(&v)?)?;
                session.set_variable_value(&v, &value)?;
            }
        }
        Ok(())
    }

    /// Under a strategy in eager mode: make the variables (on `x`) and set
    /// them to worker 0's values, once.
    fn sync_eager_variables(&self, c: &Compiled, strategy: &Strategy, x: &Tensor) -> Result<()> {
        use std::sync::atomic::Ordering;
        if c.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        tape::untracked(|| -> Result<()> {
            let mut h = x.clone();
            for l in &self.layers {
                l.build(&h)?;
                h = l.call(&h, false)?;
            }
            Ok(())
        })?;
        strategy.broadcast_variables(&self.variables())?;
        c.synced.store(true, Ordering::Release);
        Ok(())
    }

    /// One distributed training step on a global batch: this worker's
    /// replicas each take their rows, and the loss and metric states are
    /// summed over the workers.
    fn train_step_distributed(
        &self,
        c: &Compiled,
        strategy: &Strategy,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<BatchOutcome> {
        let n = check_data(x, y)?;
        if n < strategy.num_replicas_in_sync() {
            // Every worker sees the same global batch, so all fail alike.
            bail!(
                invalid,
                "a batch of {n} rows cannot give each of {} replicas one (fit skips such a batch)",
                strategy.num_replicas_in_sync()
            );
        }
        let parts: Vec<(Tensor, Tensor, Tensor)> = strategy
            .replica_rows(n)
            .into_iter()
            .map(|(lo, hi)| {
                let idx = indices(lo..hi)?;
                Ok((rows(x, &idx)?, rows(y, &idx)?, Tensor::scalar((hi - lo) as f32 / n as f32)))
            })
            .collect::<Result<_>>()?;
        let (loss, states) = match c.mode {
            ExecutionMode::Eager => {
                self.sync_eager_variables(c, strategy, &parts[0].0)?;
                let vars = self.trainable_variables();
                let refs: Vec<&Variable> = vars.iter().collect();
                let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
                let mut loss = 0.0;
                let mut states: Option<Vec<Vec<Tensor>>> = None;
                for ((xr, yr, share), device) in parts.iter().zip(strategy.local_devices()) {
                    let _device = crate::context::device_scope(&device.to_string())?;
                    let tape = GradientTape::new();
                    let pred = self.call(xr, true)?;
                    let l = ops::mul(&c.loss.compute(yr, &pred)?, &ops::cast(share, pred.dtype())?)?;
                    let g = tape.gradient_vars(&c.optimizer.scale_loss(&l)?, &refs)?;
                    drop(tape);
                    loss += scalar(&l)?;
                    for (acc, g) in grads.iter_mut().zip(g) {
                        *acc = match (acc.take(), g) {
                            (Some(a), Some(g)) => Some(ops::add(&a, &g)?),
                            (a, g) => a.or(g),
                        };
                    }
                    let mine = tape::untracked(|| {
                        c.metrics.iter().map(|m| m.batch_state(yr, &pred, None)).collect::<Result<Vec<_>>>()
                    })?;
                    states = Some(match states {
                        None => mine,
                        Some(acc) => tape::untracked(|| {
                            acc.iter()
                                .zip(&mine)
                                .map(|(a, b)| a.iter().zip(b).map(|(a, b)| ops::add(a, b)).collect())
                                .collect::<Result<Vec<Vec<Tensor>>>>()
                        })?,
                    });
                }
                let grads: Vec<Tensor> = grads
                    .into_iter()
                    .zip(&vars)
                    .map(|(g, v)| g.map_or_else(|| ops::zeros_like(&v.current()), Ok))
                    .collect::<Result<_>>()?;
                let grads = tape::untracked(|| strategy.reduce_gradients(&grads))?;
                let pairs: Vec<(Tensor, &Variable)> = grads.into_iter().zip(refs).collect();
                c.optimizer.apply_gradients(&pairs)?;
                (loss, states.unwrap_or_default())
            }
            ExecutionMode::Graph => {
                let run = self.graph_run(c, &parts[0].0, &parts[0].1)?;
                let t = run.train.as_ref().ok_or_else(|| Error::graph("training path not built"))?;
                let mut fetches = vec![&t.train_loss];
                fetches.extend(t.train_metrics.iter().flatten());
                let mut feeds: Vec<(&Tensor, &Tensor)> = Vec::new();
                for ((px, py, pw), (bx, by, share)) in t.replicas.iter().zip(&parts) {
                    feeds.extend([(px, bx), (py, by), (pw, share)]);
                }
                let _step = c.training.lock();
                let out = run.session.run_with_targets(&fetches, &feeds, &[&t.train_op])?;
                split_outcome(out, &t.train_metrics)?
            }
        };
        // Over the workers: the loss over the global batch, the metrics' states summed.
        let mut flat = vec![loss];
        let mut sizes = Vec::new();
        for m in &states {
            for s in m {
                let v = ops::cast(s, DType::F64)?.to_vec::<f64>()?;
                sizes.push(v.len());
                flat.extend(v);
            }
        }
        let flat = strategy.sum_over_workers(&flat)?;
        let (mut at, mut sizes) = (1, sizes.into_iter());
        let mut summed = Vec::with_capacity(states.len());
        for m in &states {
            let mut parts = Vec::with_capacity(m.len());
            for _ in m {
                let k = sizes.next().unwrap_or(0);
                parts.push(Tensor::from(flat[at..at + k].to_vec()));
                at += k;
            }
            summed.push(parts);
        }
        Ok((flat[0], summed))
    }

    /// One training step on a batch: the loss and the metrics' values on
    /// this batch alone, computed before the update (a metric with several
    /// values, per threshold or class, gives each in turn).
    #[track_caller]
    pub fn train_on_batch(&self, x: &Tensor, y: &Tensor) -> Result<(f64, Vec<f64>)> {
        at_caller("Sequential.train_on_batch", self.train_step(x, y).and_then(|o| self.batch_values(o)))
    }

    /// One training step: the loss and each metric's state for the batch.
    fn train_step(&self, x: &Tensor, y: &Tensor) -> Result<BatchOutcome> {
        let c = self.compiled()?;
        if let Some(strategy) = &self.strategy {
            let step = self.train_step_distributed(c, strategy, x, y);
            if let Err(e) = &step {
                // The other workers would otherwise wait for this one until the timeout.
                strategy.abort(&e.to_string());
            }
            return step;
        }
        match c.mode {
            ExecutionMode::Eager => {
                let tape = GradientTape::new();
                let pred = self.call(x, true)?;
                let loss = c.loss.compute(y, &pred)?;
                let vars = self.trainable_variables();
                let refs: Vec<&Variable> = vars.iter().collect();
                let grads = tape.gradient_vars(&c.optimizer.scale_loss(&loss)?, &refs)?;
                drop(tape);
                let pairs: Vec<(Tensor, &Variable)> =
                    grads.into_iter().zip(refs).filter_map(|(g, v)| g.map(|g| (g, v))).collect();
                c.optimizer.apply_gradients(&pairs)?;
                let states = tape::untracked(|| {
                    c.metrics.iter().map(|m| m.batch_state(y, &pred, None)).collect::<Result<Vec<_>>>()
                })?;
                Ok((scalar(&loss)?, states))
            }
            ExecutionMode::Graph => {
                let run = self.graph_run(c, x, y)?;
                let t = run.train.as_ref().ok_or_else(|| Error::graph("training path not built"))?;
                let mut fetches = vec![&t.train_loss];
                fetches.extend(t.train_metrics.iter().flatten());
                let _step = c.training.lock();
                let out = run.session.run_with_targets(&fetches, &[(&run.x, x), (&t.y, y)], &[&t.train_op])?;
                split_outcome(out, &t.train_metrics)
            }
        }
    }

    /// Loss and metrics on one batch, without training.
    #[track_caller]
    pub fn test_on_batch(&self, x: &Tensor, y: &Tensor) -> Result<(f64, Vec<f64>)> {
        at_caller("Sequential.test_on_batch", self.test_step(x, y).and_then(|o| self.batch_values(o)))
    }

    /// The loss and each metric's state for a batch, without training.
    fn test_step(&self, x: &Tensor, y: &Tensor) -> Result<BatchOutcome> {
        let c = self.compiled()?;
        match c.mode {
            ExecutionMode::Eager => tape::untracked(|| {
                let pred = self.call(x, false)?;
                let loss = scalar(&c.loss.compute(y, &pred)?)?;
                let states = c.metrics.iter().map(|m| m.batch_state(y, &pred, None)).collect::<Result<Vec<_>>>()?;
                Ok((loss, states))
            }),
            ExecutionMode::Graph => {
                let run = self.graph_run(c, x, y)?;
                let t = run.train.as_ref().ok_or_else(|| Error::graph("training path not built"))?;
                let mut fetches = vec![&t.eval_loss];
                fetches.extend(t.eval_metrics.iter().flatten());
                let out = run.session.run(&fetches, &[(&run.x, x), (&t.y, y)])?;
                split_outcome(out, &t.eval_metrics)
            }
        }
    }

    /// A batch's loss and its metrics' values on that batch alone.
    fn batch_values(&self, (loss, states): BatchOutcome) -> Result<(f64, Vec<f64>)> {
        let mut metrics = self.fresh_metric_states()?;
        for (m, batch) in metrics.iter_mut().zip(&states) {
            m.accumulate(batch)?;
        }
        let values = metrics.iter().map(MetricState::result_values).collect::<Result<Vec<_>>>()?;
        Ok((loss, values.into_iter().flatten().collect()))
    }

    /// Empty states for the compiled metrics.
    fn fresh_metric_states(&self) -> Result<Vec<MetricState>> {
        self.compiled()?.metrics.iter().cloned().map(MetricState::new).collect()
    }

    /// Train for `options.epochs` epochs on `(x, y)` (examples along axis 0).
    #[track_caller]
    pub fn fit(&self, x: &Tensor, y: &Tensor, options: &FitOptions) -> Result<History> {
        at_caller("Sequential.fit", self.fit_impl(x, y, options))
    }

    fn fit_impl(&self, x: &Tensor, y: &Tensor, options: &FitOptions) -> Result<History> {
        self.compiled()?;
        let n = check_data(x, y)?;
        if options.batch_size == 0 {
            bail!(invalid, "batch_size must be positive");
        }
        let (train_idx, val): (Vec<i64>, Option<(Tensor, Tensor)>) = match &options.validation_data {
            Some((vx, vy)) => {
                check_data(vx, vy)?;
                (indices(0..n)?, Some((vx.clone(), vy.clone())))
            }
            None if options.validation_split > 0.0 => {
                if options.validation_split >= 1.0 {
                    bail!(invalid, "validation_split must be in [0, 1), got {}", options.validation_split);
                }
                let cut = n - ((n as f64) * options.validation_split).round() as usize;
                let held = indices(cut..n)?;
                (indices(0..cut)?, Some((rows(x, &held)?, rows(y, &held)?)))
            }
            None => (indices(0..n)?, None),
        };
        if train_idx.is_empty() {
            bail!(invalid, "fit: no training examples ({n} examples, validation_split {})", options.validation_split);
        }
        let steps = train_idx.len().div_ceil(options.batch_size);
        let batches = |epoch: usize| -> Result<Batches<'_>> {
            let order =
                if options.shuffle { shuffled(&train_idx, options.seed, epoch as u64)? } else { train_idx.clone() };
            let chunks: Vec<Vec<i64>> = order.chunks(options.batch_size).map(<[i64]>::to_vec).collect();
            Ok(Box::new(chunks.into_iter().map(move |c| Ok((rows(x, &c)?, rows(y, &c)?)))))
        };
        let validate = || -> Result<Option<Validation>> {
            match &val {
                Some((vx, vy)) => self.evaluate_batched(vx, vy, options.batch_size).map(Some),
                None => Ok(None),
            }
        };
        self.fit_loop(options, Some(steps), batches, validate)
    }

    /// The epochs of `fit`: `batches(epoch)` gives an epoch's `(x, y)`
    /// batches (`steps` of them, when known: the progress bar's length),
    /// `validate` the validation loss and metrics after each epoch.
    /// Callbacks see the start and end of training, of each epoch and batch.
    fn fit_loop<'a>(
        &self,
        options: &FitOptions,
        steps: Option<usize>,
        mut batches: impl FnMut(usize) -> Result<Batches<'a>>,
        validate: impl Fn() -> Result<Option<Validation>>,
    ) -> Result<History> {
        // Under a strategy, only worker 0 prints and runs callbacks (logs, checkpoints).
        let quiet;
        let options = if self.is_chief() {
            options
        } else {
            quiet = FitOptions { verbose: Verbosity::Silent, callbacks: Vec::new(), ..options.clone() };
            &quiet
        };
        for cb in &options.callbacks {
            cb.with(|c| c.on_train_begin(self))?;
        }
        let trained = self.run_epochs(options, steps, &mut batches, &validate);
        for cb in &options.callbacks {
            let ended = cb.with(|c| c.on_train_end(self));
            if trained.is_ok() {
                ended?;
            }
        }
        trained
    }

    fn run_epochs<'a>(
        &self,
        options: &FitOptions,
        mut steps: Option<usize>,
        batches: &mut dyn FnMut(usize) -> Result<Batches<'a>>,
        validate: &dyn Fn() -> Result<Option<Validation>>,
    ) -> Result<History> {
        let mut history = History::default();
        let tty = std::io::stderr().is_terminal();
        let mut global_step = 0u64;
        for epoch in options.initial_epoch..options.epochs {
            for cb in &options.callbacks {
                cb.with(|c| c.on_epoch_begin(epoch))?;
            }
            let show_bar = options.verbose == Verbosity::Auto && tty;
            if options.verbose != Verbosity::Silent {
                eprintln!("Epoch {}/{}", epoch + 1, options.epochs);
            }
            let bar = progress_bar(steps, show_bar);
            // Keras resets the metrics at each epoch's start.
            let (mut loss, mut metrics) = (Mean::default(), self.fresh_metric_states()?);
            let start = Instant::now();
            let mut done = 0usize;
            let replicas = self.strategy.as_ref().map_or(1, Strategy::num_replicas_in_sync);
            for batch in batches(epoch)? {
                let (bx, by) = batch?;
                let n = bx.shape().first().copied().unwrap_or(0);
                if n < replicas {
                    // Too few rows to give every replica one: dropped, on every worker alike.
                    continue;
                }
                let (l, states) = self.train_step(&bx, &by)?;
                loss.update(l, n as f64);
                for (m, batch) in metrics.iter_mut().zip(&states) {
                    m.accumulate(batch)?;
                }
                done += 1;
                if show_bar || !options.callbacks.is_empty() {
                    let logs = metric_logs(&metrics)?;
                    if show_bar {
                        bar.set_position(done as u64);
                        bar.set_message(progress_message(start, done, steps, &logs, loss.result(), &[]));
                    }
                    if !options.callbacks.is_empty() {
                        let mut batch_logs: BTreeMap<String, f64> = logs.into_iter().collect();
                        batch_logs.insert("loss".into(), loss.result());
                        for cb in &options.callbacks {
                            cb.with(|c| c.on_train_batch_end(global_step, &batch_logs))?;
                        }
                    }
                }
                global_step += 1;
            }
            if done == 0 {
                bail!(invalid, "fit: epoch {} had no training batches", epoch + 1);
            }
            // A dataset of unknown length: later epochs know it (Keras's "Unknown" first epoch).
            steps = Some(done);
            let metric_logs = metric_logs(&metrics)?;
            let mut logs: BTreeMap<String, f64> = BTreeMap::new();
            logs.insert("loss".into(), loss.result());
            logs.extend(metric_logs.iter().cloned());
            let mut val_logs: Vec<(String, f64)> = Vec::new();
            if let Some((vl, vm)) = validate()? {
                val_logs.push(("val_loss".into(), vl));
                val_logs.extend(vm.into_iter().map(|(name, v)| (format!("val_{name}"), v)));
                logs.extend(val_logs.iter().cloned());
            }
            let line = progress_message(start, done, Some(done), &metric_logs, loss.result(), &val_logs);
            if show_bar {
                bar.finish_with_message(line);
            } else if options.verbose != Verbosity::Silent {
                eprintln!("{done}/{done} {} {line}", "━".repeat(20));
            }
            for cb in &options.callbacks {
                cb.with(|c| c.on_epoch_end(epoch, &logs, self))?;
            }
            history.epochs.push(logs);
        }
        Ok(history)
    }

    /// Train on a dataset whose elements are `(x, y)` batches, as Keras's
    /// `fit(dataset)`: the dataset batches and shuffles, so `batch_size`,
    /// `shuffle` and `validation_split` do not apply; each epoch is one pass.
    #[track_caller]
    pub fn fit_dataset(&self, train: &Dataset, options: &FitOptions) -> Result<History> {
        at_caller("Sequential.fit", self.fit_dataset_impl(train, options))
    }

    fn fit_dataset_impl(&self, train: &Dataset, options: &FitOptions) -> Result<History> {
        self.compiled()?;
        let steps = match train.cardinality() {
            Cardinality::Finite(n) => Some(n),
            Cardinality::Infinite => {
                bail!(invalid, "fit: the training dataset is infinite (take or repeat a finite count)")
            }
            Cardinality::Unknown => None,
        };
        let batches = |_epoch: usize| -> Result<Batches<'_>> {
            Ok(Box::new(train.iter().map(|e| e.and_then(|e| e.into_pair()))))
        };
        let validate = || -> Result<Option<Validation>> {
            match (&options.validation_dataset, &options.validation_data) {
                (Some(ds), _) => self.evaluate_batches(ds.iter().map(|e| e.and_then(|e| e.into_pair()))).map(Some),
                (None, Some((vx, vy))) => self.evaluate_batched(vx, vy, options.batch_size).map(Some),
                (None, None) => Ok(None),
            }
        };
        self.fit_loop(options, steps, batches, validate)
    }

    /// Loss and metrics over a dataset of `(x, y)` batches.
    #[track_caller]
    pub fn evaluate_dataset(&self, ds: &Dataset) -> Result<Vec<(String, f64)>> {
        let r = self.evaluate_batches(ds.iter().map(|e| e.and_then(|e| e.into_pair()))).map(|(l, m)| {
            let mut out = vec![("loss".to_string(), l)];
            out.extend(m);
            out
        });
        at_caller("Sequential.evaluate", r)
    }

    /// The model's outputs for each batch of a dataset (its elements' first
    /// field; a label field after it is ignored), concatenated.
    #[track_caller]
    pub fn predict_dataset(&self, ds: &Dataset) -> Result<Tensor> {
        let r = (|| {
            let mut parts = Vec::new();
            for e in ds {
                parts.push(self.predict_batch(e?.tensor(0)?)?);
            }
            let refs: Vec<&Tensor> = parts.iter().collect();
            if refs.is_empty() {
                bail!(shape, "predict on an empty dataset");
            }
            ops::concat(&refs, 0)
        })();
        at_caller("Sequential.predict", r)
    }

    /// The mean loss (weighted by batch size) and the metrics over batches.
    fn evaluate_batches(&self, batches: impl Iterator<Item = Result<(Tensor, Tensor)>>) -> Result<Validation> {
        let (mut loss, mut metrics) = (Mean::default(), self.fresh_metric_states()?);
        let mut any = false;
        for b in batches {
            let (x, y) = b?;
            let n = check_data(&x, &y)?;
            let (l, states) = self.test_step(&x, &y)?;
            loss.update(l, n as f64);
            for (m, batch) in metrics.iter_mut().zip(&states) {
                m.accumulate(batch)?;
            }
            any = true;
        }
        if !any {
            bail!(invalid, "evaluate on an empty dataset");
        }
        Ok((loss.result(), metric_logs(&metrics)?))
    }

    /// The mean loss over batches and the metrics' logs over all of them.
    fn evaluate_batched(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Validation> {
        let n = check_data(x, y)?;
        let idx = indices(0..n)?;
        self.evaluate_batches(idx.chunks(batch_size.max(1)).map(|c| Ok((rows(x, c)?, rows(y, c)?))))
    }

    /// Loss and metrics over `(x, y)`: `[("loss", ..), ("accuracy", ..), ...]`.
    #[track_caller]
    pub fn evaluate(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Vec<(String, f64)>> {
        at_caller("Sequential.evaluate", self.evaluate_impl(x, y, batch_size))
    }

    fn evaluate_impl(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Vec<(String, f64)>> {
        let (l, m) = self.evaluate_batched(x, y, batch_size)?;
        let mut out = vec![("loss".to_string(), l)];
        out.extend(m);
        Ok(out)
    }

    /// The model's outputs for `x` (inference mode), in batches.
    #[track_caller]
    pub fn predict(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        at_caller("Sequential.predict", self.predict_impl(x, batch_size))
    }

    fn predict_impl(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        let n = *x.shape().first().ok_or_else(|| Error::shape("predict needs a batch axis"))?;
        let idx = indices(0..n)?;
        let mut parts = Vec::new();
        for chunk in idx.chunks(batch_size.max(1)) {
            parts.push(self.predict_batch(&rows(x, chunk)?)?);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        if refs.is_empty() {
            bail!(shape, "predict on an empty input");
        }
        ops::concat(&refs, 0)
    }

    /// The model's outputs for one batch (inference mode).
    fn predict_batch(&self, bx: &Tensor) -> Result<Tensor> {
        match self.compiled.as_ref().map(|c| c.mode) {
            Some(ExecutionMode::Graph) => {
                let c = self.compiled()?;
                let run = self.graph_base(c, bx)?;
                Ok(run.session.run(&[&run.eval_pred], &[(&run.x, bx)])?.swap_remove(0))
            }
            _ => tape::untracked(|| self.call(bx, false)),
        }
    }

    /// Create every variable (layers, optimizer slots; in graph mode the
    /// graph and session) from example inputs, without training: what a
    /// fresh model needs before a checkpoint is restored into it.
    #[track_caller]
    pub fn build(&self, x: &Tensor, y: &Tensor) -> Result<()> {
        at_caller("Sequential.build", self.build_impl(x, y))
    }

    fn build_impl(&self, x: &Tensor, y: &Tensor) -> Result<()> {
        let c = self.compiled()?;
        match c.mode {
            ExecutionMode::Graph => self.graph_run(c, x, y).map(drop),
            ExecutionMode::Eager => tape::untracked(|| {
                let mut h = x.clone();
                for l in &self.layers {
                    l.build(&h)?;
                    h = l.call(&h, false)?;
                }
                let vars = self.trainable_variables();
                let refs: Vec<&Variable> = vars.iter().collect();
                c.optimizer.build(&refs)
            })
            .and_then(|()| match &self.strategy {
                Some(strategy) => self.sync_eager_variables(c, strategy, x),
                None => Ok(()),
            }),
        }
    }

    /// Every variable of the model and its optimizer under a name that
    /// depends only on the model's structure (`layer_0/kernel`,
    /// `optimizer/layer_0/kernel/m`, `optimizer/iterations`), so that another
    /// instance of the same model can restore it.
    pub fn structural_variables(&self) -> Vec<(String, Variable)> {
        let leaf = |v: &Variable| v.name().rsplit('/').next().unwrap_or(v.name()).to_string();
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for v in l.variables() {
                let key = format!("layer_{i}/{}", leaf(&v));
                if let Some(slots) = self.optimizer().and_then(|o| o.slots(&v)) {
                    for s in slots {
                        out.push((format!("optimizer/{key}/{}", leaf(&s)), s));
                    }
                }
                out.push((key, v));
            }
        }
        if let Some(it) = self.optimizer().and_then(|o| o.iterations()) {
            out.push(("optimizer/iterations".into(), it));
        }
        if let Some(opt) = self.optimizer() {
            // Loss scaling's counter and scale (named under optimizer/loss_scale/).
            out.extend(opt.state_variables().into_iter().filter(|(name, _)| name.contains("/loss_scale/")));
        }
        out
    }

    /// A checkpoint of the model, its optimizer and the epoch. (Layers keep
    /// their random state in variables, so nothing else is needed to resume
    /// bit for bit.)
    #[track_caller]
    pub fn checkpoint(&self, epoch: u64) -> Result<crate::io::CheckpointData> {
        at_caller("Sequential.checkpoint", self.checkpoint_impl(epoch))
    }

    fn checkpoint_impl(&self, epoch: u64) -> Result<crate::io::CheckpointData> {
        let mut data = crate::io::CheckpointData::default();
        for (name, v) in self.structural_variables() {
            data.tensors.insert(name, self.variable_value(&v)?);
        }
        data.metadata.insert("epoch".into(), epoch.to_string());
        Ok(data)
    }

    /// Restore a checkpoint made by [`Sequential::checkpoint`] into this
    /// (built) model; returns the saved epoch. Every variable must be in the
    /// checkpoint with the same dtype and shape. All or nothing: everything
    /// is checked before any variable changes, and a failure while writing
    /// puts back the values already overwritten.
    #[track_caller]
    pub fn restore(&self, data: &crate::io::CheckpointData) -> Result<u64> {
        at_caller("Sequential.restore", self.restore_impl(data))
    }

    fn restore_impl(&self, data: &crate::io::CheckpointData) -> Result<u64> {
        let vars = self.structural_variables();
        if vars.is_empty() {
            bail!(precondition, "build the model (Sequential::build) before restoring a checkpoint");
        }
        let mut plan: Vec<(&Variable, &Tensor)> = Vec::with_capacity(vars.len());
        for (name, v) in &vars {
            let t = data.tensors.get(name).ok_or_else(|| {
                Error::not_found(format!("checkpoint has no tensor '{name}' (for variable '{}')", v.name()))
            })?;
            if t.dtype() != v.dtype() || t.shape() != v.shape() {
                bail!(
                    shape,
                    "checkpoint tensor '{name}' is {}{}, the variable is {}{}",
                    t.dtype(),
                    t.shape(),
                    v.dtype(),
                    v.shape()
                );
            }
            plan.push((v, t));
        }
        let epoch = match data.metadata.get("epoch") {
            Some(e) => e.parse::<u64>().map_err(|_| Error::format("checkpoint metadata 'epoch' is not a number"))?,
            None => 0,
        };
        let old: Vec<Tensor> = plan.iter().map(|(v, _)| self.variable_value(v)).collect::<Result<_>>()?;
        for (k, (v, t)) in plan.iter().enumerate() {
            if let Err(e) = self.set_variable_value(v, t) {
                for ((v, _), before) in plan[..k].iter().zip(&old) {
                    // Best effort: the values were readable and of the right type a moment ago.
                    let _ = self.set_variable_value(v, before);
                }
                return Err(e);
            }
        }
        Ok(epoch)
    }

    /// Every variable's value by name (from the session in graph mode).
    #[track_caller]
    pub fn get_weights(&self) -> Result<Vec<(String, Tensor)>> {
        at_caller("Sequential.get_weights", self.get_weights_impl())
    }

    fn get_weights_impl(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for v in self.variables() {
            out.push((v.name().to_string(), self.variable_value(&v)?));
        }
        Ok(out)
    }

    /// A variable's current value (from the session in graph mode).
    pub fn variable_value(&self, v: &Variable) -> Result<Tensor> {
        if v.is_graph() {
            self.with_session(|s| s.variable_value(v))
                .ok_or_else(|| Error::precondition(format!("variable '{}' has no session yet", v.name())))?
        } else {
            Ok(v.current())
        }
    }

    /// Set a variable's value (in the session in graph mode).
    pub fn set_variable_value(&self, v: &Variable, value: &Tensor) -> Result<()> {
        if v.is_graph() {
            self.with_session(|s| s.set_variable_value(v, value))
                .ok_or_else(|| Error::precondition(format!("variable '{}' has no session yet", v.name())))?
        } else {
            v.assign(value).map(drop)
        }
    }
}

/// A model exports its inference path: input `inputs` (any batch size),
/// output `outputs`. In graph mode that is the model's own graph (pruned
/// by the export); in eager mode a trace of `call(x, training = false)`.
/// The model must have been called (fit, predict, build) first.
impl crate::saved_model::Exportable for Sequential {
    fn export_source(&self) -> Result<crate::saved_model::ExportSource> {
        use crate::saved_model::{ExportSource, Signature};
        let run =
            self.compiled.as_ref().filter(|c| c.mode == ExecutionMode::Graph).and_then(|c| c.graph.lock().clone());
        if let Some(run) = run {
            let values = crate::saved_model::session_values(&run.session)?;
            let sig = Signature::new().input("inputs", &run.x).output("outputs", &run.eval_pred);
            return Ok(ExportSource { graph: run.graph.clone(), values, default_signature: Some(sig) });
        }
        let spec = self.input_spec.lock().clone().ok_or_else(|| {
            Error::precondition(
                "export: call the model (fit, predict or build) first, so that its input shape is known",
            )
        })?;
        let traced = crate::function::function(|args: &[Tensor]| Ok(vec![self.call(&args[0], false)?]));
        let concrete = traced.concrete(&[spec])?;
        let mut source = concrete.export_source()?;
        source.default_signature =
            Some(Signature::new().input("inputs", &concrete.inputs()[0]).output("outputs", &concrete.outputs()[0]));
        Ok(source)
    }
}

/// `r` as returned by the public method `op`: errors from ops the model
/// made on the caller's behalf point at the caller's line.
#[track_caller]
fn at_caller<T>(op: &str, r: Result<T>) -> Result<T> {
    let at = std::panic::Location::caller();
    r.map_err(|e| e.relocated(op, at))
}

fn op_context(layer: &str) -> crate::error::OpContext {
    crate::error::OpContext {
        op: "Layer".into(),
        node: Some(layer.to_string()),
        inputs: Vec::new(),
        location: String::new(),
    }
}

fn check_data(x: &Tensor, y: &Tensor) -> Result<usize> {
    let (nx, ny) = (x.shape().first().copied(), y.shape().first().copied());
    match (nx, ny) {
        (Some(a), Some(b)) if a == b && a > 0 => Ok(a),
        _ => Err(Error::shape(format!(
            "x {} and y {} need the same non-zero number of examples along axis 0",
            x.shape(),
            y.shape()
        ))),
    }
}

/// An epoch's `(x, y)` batches for `fit`.
type Batches<'a> = Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a>;

/// An epoch's validation loss and metrics.
type Validation = (f64, Vec<(String, f64)>);

/// One batch's loss and each metric's state tensors for it.
type BatchOutcome = (f64, Vec<Vec<Tensor>>);

/// A session's outputs (the loss, then every metric's state tensors in
/// turn) split back per metric.
fn split_outcome(out: Vec<Tensor>, metrics: &[Vec<Tensor>]) -> Result<BatchOutcome> {
    let mut it = out.into_iter();
    let loss = scalar(&it.next().ok_or_else(|| Error::graph("no loss fetched"))?)?;
    let states = metrics.iter().map(|m| it.by_ref().take(m.len()).collect()).collect();
    Ok((loss, states))
}

/// The metrics' values as log entries: a metric's name, or `name[i]` for
/// each value of a metric with several.
fn metric_logs(metrics: &[MetricState]) -> Result<Vec<(String, f64)>> {
    let mut logs = Vec::new();
    for m in metrics {
        let name = m.metric().name();
        match m.result_values()?.as_slice() {
            [v] => logs.push((name, *v)),
            values => logs.extend(values.iter().enumerate().map(|(i, v)| (format!("{name}[{i}]"), *v))),
        }
    }
    Ok(logs)
}

fn scalar(t: &Tensor) -> Result<f64> {
    let v = ops::cast(t, DType::F64)?;
    v.to_scalar::<f64>()
}

/// The example indices `range` (their count comes from the caller's data:
/// out of memory is an error).
fn indices(range: std::ops::Range<usize>) -> Result<Vec<i64>> {
    let mut v = crate::tensor::storage::try_vec_with_capacity(range.len())?;
    v.extend(range.map(|i| i as i64));
    Ok(v)
}

/// A permutation of `idx` from `seed` and `epoch` (Fisher-Yates with SplitMix64).
fn shuffled(idx: &[i64], seed: u64, epoch: u64) -> Result<Vec<i64>> {
    let mut v = crate::tensor::storage::try_vec_with_capacity(idx.len())?;
    v.extend_from_slice(idx);
    let mut state = crate::op::creation::splitmix64(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
    for i in (1..v.len()).rev() {
        state = crate::op::creation::splitmix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    Ok(v)
}

fn progress_bar(steps: Option<usize>, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        steps.map(|s| s as u64),
        if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    if let Ok(style) = ProgressStyle::with_template("{pos}/{len} {bar:20} {msg}") {
        bar.set_style(style.progress_chars("━━─"));
    }
    bar
}

/// Keras's epoch line: `3s 12ms/step - accuracy: 0.9712 - loss: 0.1021 - val_...`.
fn progress_message(
    start: Instant,
    done: usize,
    total: Option<usize>,
    metrics: &[(String, f64)],
    loss: f64,
    val: &[(String, f64)],
) -> String {
    let elapsed = start.elapsed().as_secs_f64();
    let per_step = elapsed / done.max(1) as f64;
    let shown = match total {
        Some(total) if done < total => per_step * (total - done) as f64,
        _ => elapsed,
    };
    let step_time = if per_step >= 1e-3 {
        format!("{}ms/step", (per_step * 1e3).round() as u64)
    } else {
        format!("{}us/step", (per_step * 1e6).round() as u64)
    };
    let mut s = format!("{}s {step_time}", shown.round() as u64);
    let mut items = metrics.to_vec();
    items.push(("loss".into(), loss));
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut val = val.to_vec();
    val.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in items.iter().chain(&val) {
        s.push_str(&format!(" - {k}: {v:.4}"));
    }
    s
}
