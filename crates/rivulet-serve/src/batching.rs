//! Server-side batching: requests to one signature of one model version
//! wait in a queue; a batch thread takes the first, waits up to the batch
//! timeout for more (up to `max_batch_size` rows), concatenates their
//! inputs along the first axis, runs the model once, and hands each request
//! its rows of the outputs.
//!
//! The wait is adaptive: a batch waits for more requests only while the
//! version has requests in flight that are not queued or running yet (still
//! being read and parsed), and never past the timeout. A lone client is
//! served at once, where a fixed timeout would charge it the whole wait.
//!
//! The queue is bounded (`max_enqueued_batches × max_batch_size` rows): past
//! that a request is refused at once (503, as TF Serving's full queue) instead of waiting without end.
//! Dropping the batcher lets the threads finish what is queued, then joins
//! them, so a version being unloaded answers every request it accepted.

use crate::config::BatchingOptions;
use crate::error::{Code, ServeError};
use crate::metrics::Metrics;
use parking_lot::{Condvar, Mutex};
use rivulet::saved_model::SavedModel;
use rivulet::{ops, Tensor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<Vec<Tensor>, ServeError>>;

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    rows: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    options: BatchingOptions,
    model: Arc<SavedModel>,
    signature: String,
    metrics: Arc<Metrics>,
    model_name: String,
    /// Requests to this version between their arrival and their answer.
    in_flight: Arc<AtomicUsize>,
    /// Requests taken into batches that are running.
    running: AtomicUsize,
}

/// The batching queue of one signature: see the module documentation.
pub struct Batcher {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Batcher {
    /// Start the batch threads for `signature` of `model`.
    pub fn new(
        model: Arc<SavedModel>,
        signature: &str,
        options: &BatchingOptions,
        metrics: Arc<Metrics>,
        model_name: &str,
        in_flight: Arc<AtomicUsize>,
    ) -> Batcher {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            options: options.clone(),
            model,
            signature: signature.to_string(),
            metrics,
            model_name: model_name.to_string(),
            in_flight,
            running: AtomicUsize::new(0),
        });
        let threads = (0..options.num_batch_threads)
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("batch-{signature}-{i}")).spawn(move || worker(&s)).ok()
            })
            .collect();
        Batcher { shared, threads }
    }

    /// Queue a request of `rows` rows (each input's first axis); the answer
    /// comes on the returned channel.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
    ) -> Result<oneshot::Receiver<Result<Vec<Tensor>, ServeError>>, ServeError> {
        if self.threads.is_empty() {
            return Err(ServeError::new(Code::Unavailable, "the batch threads could not be started"));
        }
        let (tx, rx) = oneshot::channel();
        let o = &self.shared.options;
        {
            let mut q = self.shared.queue.lock();
            if q.rows + rows > o.max_enqueued_batches.saturating_mul(o.max_batch_size) && !q.jobs.is_empty() {
                return Err(ServeError::new(
                    Code::Unavailable,
                    format!("The batch scheduling queue is full ({} rows waiting)", q.rows),
                ));
            }
            q.rows += rows;
            q.jobs.push_back(Job { inputs, rows, reply: tx });
        }
        self.shared.ready.notify_one();
        Ok(rx)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(s: &Shared) {
    let o = &s.options;
    loop {
        let mut batch: Vec<Job> = Vec::new();
        {
            let mut q = s.queue.lock();
            while q.jobs.is_empty() {
                if q.closed {
                    return;
                }
                s.ready.wait(&mut q);
            }
            let deadline = Instant::now() + o.batch_timeout;
            // Wait for the batch to fill while more requests are on their way, up to the timeout.
            while q.rows < o.max_batch_size
                && !q.closed
                && s.in_flight.load(Ordering::Acquire) > q.jobs.len() + s.running.load(Ordering::Acquire)
            {
                if s.ready.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
            // Another thread took them while this one waited.
            if q.jobs.is_empty() {
                continue;
            }
            let mut rows = 0;
            while let Some(front) = q.jobs.front() {
                if !batch.is_empty() && (rows + front.rows > o.max_batch_size || !same_inner_shapes(&batch[0], front)) {
                    break;
                }
                rows += front.rows;
                q.rows -= front.rows;
                batch.extend(q.jobs.pop_front());
            }
            s.running.fetch_add(batch.len(), Ordering::AcqRel);
            // Others may be waiting for the rest of the queue.
            if !q.jobs.is_empty() {
                s.ready.notify_one();
            }
        }
        let n = batch.len();
        // A panic answers the batch's requests (their senders drop) and keeps the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_batch(s, batch)));
        s.running.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Can `b` join a batch that `a` is in (the same shape after the first axis)?
fn same_inner_shapes(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs
            .iter()
            .zip(&b.inputs)
            .all(|(x, y)| x.dtype() == y.dtype() && x.shape().get(1..) == y.shape().get(1..))
}

/// Concatenate, run once, split the outputs back into each request's rows.
/// When a merged run fails, each request runs alone, so that one bad
/// request fails only itself.
fn run_batch(s: &Shared, batch: Vec<Job>) {
    if batch.len() > 1 {
        let result = run_merged(s, &batch);
        match result {
            Ok(parts) => {
                for (job, out) in batch.into_iter().zip(parts) {
                    let _ = job.reply.send(Ok(out));
                }
            }
            Err(_) => {
                for job in batch {
                    run_batch(s, vec![job]);
                }
            }
        }
        return;
    }
    let Some(job) = batch.into_iter().next() else { return };
    s.metrics.batch_size(&s.model_name, job.rows);
    let _ = job.reply.send(s.model.run(&s.signature, &job.inputs).map_err(ServeError::from));
}

/// One run of several requests, each request's rows of the outputs.
fn run_merged(s: &Shared, batch: &[Job]) -> Result<Vec<Vec<Tensor>>, ServeError> {
    let rows: Vec<usize> = batch.iter().map(|j| j.rows).collect();
    let total: usize = rows.iter().sum();
    let sig = s.model.signature(&s.signature)?;
    let inputs: Vec<Tensor> = (0..sig.inputs.len())
        .map(|i| {
            let parts: Vec<&Tensor> = batch.iter().map(|j| &j.inputs[i]).collect();
            ops::concat(&parts, 0)
        })
        .collect::<rivulet::Result<_>>()?;
    let outputs = s.model.run(&s.signature, &inputs)?;
    let sizes: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let mut per_job: Vec<Vec<Tensor>> = vec![Vec::with_capacity(outputs.len()); batch.len()];
    for ((info, _), t) in sig.outputs.iter().zip(outputs) {
        if t.shape().first() != Some(&total) {
            return Err(ServeError::new(
                Code::FailedPrecondition,
                format!(
                    "output '{}' has shape {}, not the batch's {total} rows: this signature cannot be batched",
                    info.key,
                    t.shape()
                ),
            ));
        }
        for (j, part) in ops::split_sizes(&t, &sizes, 0)?.into_iter().enumerate() {
            per_job[j].push(part);
        }
    }
    s.metrics.batch_size(&s.model_name, total);
    Ok(per_job)
}
