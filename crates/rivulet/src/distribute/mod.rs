//! Distribution strategies, as `tf.distribute`: data-parallel training on
//! several replicas, each computing the gradients of its share of the
//! global batch, the gradients summed across replicas, and every replica
//! applying the same update to the same weights.
//!
//! - [`MirroredStrategy`]: replicas on the local devices of one process
//!   (in-graph replication: one graph holds each replica's step under its
//!   device, and the gradients are summed in it).
//! - [`MultiWorkerMirroredStrategy`]: one process per worker (launched by
//!   `mpirun`, or threads sharing a [`LocalGroup`](crate::collective::LocalGroup)),
//!   each with its local replicas; gradients are all-reduced across
//!   workers in buckets that start while the backward pass goes on.
//!
//! A model given a strategy ([`Sequential::distribute`](crate::nn::Sequential::distribute),
//! the Rust form of building it under `strategy.scope()`) broadcasts its
//! variables from worker 0 when they are created, splits each global batch
//! of `fit` over the replicas, reports the loss and metrics over the
//! global batch, and runs callbacks (logs, checkpoints) on worker 0 only.
//! Every worker must make the same calls in the same order: the model's
//! first `build`, `fit`, `evaluate` or `predict` (it broadcasts the
//! variables) and every `fit` or `train_on_batch`; after training, worker 0
//! alone may evaluate and write.
//!
//! Custom training loops use [`Strategy::reduce_gradients`],
//! [`Strategy::broadcast_variables`], [`Strategy::distribute_dataset`] and
//! [`compute_average_loss`].

use crate::collective::{Buffer, Group, Reduction};
use crate::data::Dataset;
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::collective::{all_reduce_bucketed, BucketOptions};
use crate::ops::{self, Variable};
use crate::tensor::Device;
use std::sync::Arc;

/// How a model's training is spread over replicas. Cheap to clone.
#[derive(Clone)]
pub struct Strategy {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    /// The local replicas' devices (one replica per device).
    devices: Vec<Device>,
    /// The workers, when there are several processes (or threads) of them.
    group: Option<Group>,
    buckets: BucketOptions,
}

impl std::fmt::Debug for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let devices: Vec<String> = self.inner.devices.iter().map(|d| d.to_string()).collect();
        write!(
            f,
            "{}(worker {} of {}, replicas on {})",
            self.inner.name,
            self.worker_index(),
            self.num_workers(),
            devices.join(", ")
        )
    }
}

/// Replicas on the local devices of one process (`tf.distribute.MirroredStrategy`).
pub struct MirroredStrategy;

impl MirroredStrategy {
    /// One replica per GPU, or one on the CPU when there is none (as TensorFlow).
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<Strategy> {
        let gpus: Vec<Device> =
            crate::context::devices().into_iter().filter(|d| d.kind == crate::tensor::DeviceKind::Gpu).collect();
        let devices = if gpus.is_empty() { vec![Device::CPU] } else { gpus };
        Ok(Strategy::make("MirroredStrategy", devices, None))
    }

    /// One replica on each of `devices` (TensorFlow's names: `/gpu:0`,
    /// `/cpu:0`, `/reference:0`; a device may appear more than once).
    pub fn with_devices(devices: &[&str]) -> Result<Strategy> {
        Ok(Strategy::make("MirroredStrategy", parse_devices(devices)?, None))
    }
}

/// One process per worker (`tf.distribute.MultiWorkerMirroredStrategy`).
pub struct MultiWorkerMirroredStrategy;

impl MultiWorkerMirroredStrategy {
    /// The workers `mpirun` started (the MPI world), one replica each on the
    /// CPU. Without the `mpi` feature this is an error that says how to build
    /// with it; a process not started by `mpirun` is a world of one.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<Strategy> {
        Ok(MultiWorkerMirroredStrategy::with_group(world_group()?))
    }

    /// The workers of `group` (any communicator: MPI, or threads of a
    /// [`LocalGroup`](crate::collective::LocalGroup)), one replica each on the CPU.
    pub fn with_group(group: Group) -> Strategy {
        Strategy::make("MultiWorkerMirroredStrategy", vec![Device::CPU], Some(group))
    }

    /// The workers of `group`, each with a replica on each of `devices`.
    pub fn with_group_and_devices(group: Group, devices: &[&str]) -> Result<Strategy> {
        Ok(Strategy::make("MultiWorkerMirroredStrategy", parse_devices(devices)?, Some(group)))
    }
}

/// The MPI world's group, once made (MPI starts once per process).
#[cfg(feature = "mpi")]
static WORLD: std::sync::Mutex<Option<Group>> = std::sync::Mutex::new(None);

/// The MPI world as a group (registered once per process).
#[cfg(feature = "mpi")]
pub fn world_group() -> Result<Group> {
    let mut slot = WORLD.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = slot.as_ref() {
        return Ok(g.clone());
    }
    let group = Group::new(crate::collective::MpiCommunicator::world()?);
    *slot = Some(group.clone());
    Ok(group)
}

/// The MPI world as a group: this build has no MPI, so a process that
/// `mpirun` started is an error, and any other a world of one.
#[cfg(not(feature = "mpi"))]
pub fn world_group() -> Result<Group> {
    if crate::collective::launched_by_mpirun() {
        bail!(
            unimplemented,
            "this process was started by mpirun, but Rivulet was built without MPI: rebuild with \
             `--features mpi` (needs libopenmpi-dev, openmpi-bin and libclang-dev)"
        );
    }
    Ok(Group::single())
}

/// End MPI cleanly (`MPI_Finalize`) once the program's strategies and
/// models are dropped: call it last in a program that used
/// [`MultiWorkerMirroredStrategy::new`]. Without MPI it does nothing.
pub fn shutdown() {
    #[cfg(feature = "mpi")]
    {
        let world = WORLD.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(world);
    }
}

fn parse_devices(devices: &[&str]) -> Result<Vec<Device>> {
    if devices.is_empty() {
        bail!(invalid, "a strategy needs at least one device");
    }
    devices
        .iter()
        .map(|d| {
            let dev = Device::parse(d)?;
            if !crate::context::devices().contains(&dev) {
                let names: Vec<String> = crate::context::devices().iter().map(|d| d.to_string()).collect();
                bail!(not_found, "device {d} is not present here (devices: {})", names.join(", "));
            }
            Ok(dev)
        })
        .collect()
}

impl Strategy {
    fn make(name: &'static str, devices: Vec<Device>, group: Option<Group>) -> Strategy {
        Strategy { inner: Arc::new(Inner { name, devices, group, buckets: BucketOptions::default() }) }
    }

    /// This strategy with other bucketing of its gradient all-reduce
    /// (bucket size, fp16/bf16 compression, overlap with the backward pass).
    pub fn with_bucket_options(&self, buckets: BucketOptions) -> Strategy {
        let i = &self.inner;
        Strategy {
            inner: Arc::new(Inner { name: i.name, devices: i.devices.clone(), group: i.group.clone(), buckets }),
        }
    }

    /// How gradients are bucketed.
    pub fn bucket_options(&self) -> &BucketOptions {
        &self.inner.buckets
    }

    /// `MirroredStrategy` or `MultiWorkerMirroredStrategy`.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The devices of this worker's replicas.
    pub fn local_devices(&self) -> &[Device] {
        &self.inner.devices
    }

    /// The workers' group (`None` for a single process).
    pub fn group(&self) -> Option<&Group> {
        self.inner.group.as_ref()
    }

    /// The number of workers.
    pub fn num_workers(&self) -> usize {
        self.inner.group.as_ref().map_or(1, Group::size)
    }

    /// This worker's index (its rank), from 0.
    pub fn worker_index(&self) -> usize {
        self.inner.group.as_ref().map_or(0, Group::rank)
    }

    /// Whether this is worker 0, the one that writes checkpoints and logs.
    pub fn is_chief(&self) -> bool {
        self.worker_index() == 0
    }

    /// Replicas over all workers (`num_replicas_in_sync`).
    pub fn num_replicas_in_sync(&self) -> usize {
        self.num_workers() * self.inner.devices.len()
    }

    /// The rows of a global batch of `n` rows that each local replica of
    /// this worker takes, as `(start, end)`: the batch is cut into
    /// `num_replicas_in_sync` nearly equal consecutive parts, in worker
    /// then device order.
    pub fn replica_rows(&self, n: usize) -> Vec<(usize, usize)> {
        let total = self.num_replicas_in_sync();
        let first = self.worker_index() * self.inner.devices.len();
        (first..first + self.inner.devices.len()).map(|r| (n * r / total, n * (r + 1) / total)).collect()
    }

    /// Every worker's gradients summed, in buckets (see [`BucketOptions`]):
    /// each worker passes the gradients of its replicas' losses scaled by
    /// their share of the global batch ([`compute_average_loss`]), and gets
    /// the gradient of the loss over the global batch. Without several
    /// workers, the gradients themselves.
    #[track_caller]
    pub fn reduce_gradients(&self, grads: &[Tensor]) -> Result<Vec<Tensor>> {
        match &self.inner.group {
            Some(g) if g.size() > 1 => all_reduce_bucketed(grads, g, Reduction::Sum, &self.inner.buckets),
            _ => Ok(grads.to_vec()),
        }
    }

    /// Set every variable to worker 0's value (eager variables; a model
    /// does this for its own, in either mode).
    pub fn broadcast_variables(&self, vars: &[Variable]) -> Result<()> {
        for v in vars {
            let value = self.broadcast_value(&v.current())?;
            v.assign(&value)?;
        }
        Ok(())
    }

    /// Worker 0's value of `t` (a value, not a symbolic tensor) on every worker.
    pub fn broadcast_value(&self, t: &Tensor) -> Result<Tensor> {
        match &self.inner.group {
            Some(g) if g.size() > 1 => crate::autodiff::tape::untracked(|| ops::collective::broadcast(t, g, 0)),
            _ => Ok(t.clone()),
        }
    }

    /// The elementwise sum over workers of host numbers (losses, metric
    /// states): one all-reduce in f64.
    pub fn sum_over_workers(&self, values: &[f64]) -> Result<Vec<f64>> {
        match &self.inner.group {
            Some(g) if g.size() > 1 => {
                let out = g.communicator().all_reduce(Buffer::from_slice(values)?, Reduction::Sum)?;
                Ok(out.as_slice::<f64>()?.to_vec())
            }
            _ => Ok(values.to_vec()),
        }
    }

    /// This worker's shard of a dataset: every `num_workers`-th element
    /// from its index (TensorFlow's auto-shard policy `DATA`), so that the
    /// workers together see each element once per epoch.
    pub fn distribute_dataset(&self, ds: &Dataset) -> Result<Dataset> {
        if self.num_workers() == 1 {
            return Ok(ds.clone());
        }
        ds.shard(self.num_workers(), self.worker_index())
    }

    /// Tell the other workers that this one failed (see [`Communicator::abort`](crate::collective::Communicator::abort)).
    pub fn abort(&self, reason: &str) {
        if let Some(g) = &self.inner.group {
            g.communicator().abort(reason);
        }
    }

    /// Wait until every worker gets here.
    pub fn barrier(&self) -> Result<()> {
        match &self.inner.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }
}

/// The sum of `per_example_loss` divided by the global batch size: the
/// per-replica loss whose gradients, summed over replicas, are those of the
/// mean loss over the global batch (`tf.nn.compute_average_loss`).
#[track_caller]
pub fn compute_average_loss(per_example_loss: &Tensor, global_batch_size: usize) -> Result<Tensor> {
    if global_batch_size == 0 {
        bail!(invalid, "compute_average_loss: the global batch size must be positive");
    }
    let total = ops::sum(per_example_loss, ops::Axes::All, false)?;
    ops::div(&total, global_batch_size as f64)
}
