//! Replicas as threads of one process: a rendezvous per collective.
//!
//! Each collective is a round: every rank deposits its buffer; the last to
//! arrive computes every rank's result (reductions in rank order, so every
//! rank gets the same bits) and wakes the others, who each take theirs.

use super::{combine, timeout_message, Buffer, Communicator, Reduction};
use crate::error::{bail, Error, Result};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Makes the [`LocalCommunicator`]s of one group of threads.
pub struct LocalGroup;

impl LocalGroup {
    /// `size` communicators (rank 0 first), one per thread, with the default timeout.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(size: usize) -> Result<Vec<Arc<LocalCommunicator>>> {
        LocalGroup::with_timeout(size, super::default_timeout())
    }

    /// `size` communicators whose collectives fail after `timeout` without their peers.
    pub fn with_timeout(size: usize, timeout: Duration) -> Result<Vec<Arc<LocalCommunicator>>> {
        if size == 0 {
            bail!(invalid, "a local group needs at least one rank");
        }
        let shared = Arc::new(Shared { size, timeout, state: Mutex::new(Round::new(size)), changed: Condvar::new() });
        Ok((0..size).map(|rank| Arc::new(LocalCommunicator { rank, shared: shared.clone() })).collect())
    }
}

/// One rank of a group of threads.
pub struct LocalCommunicator {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    timeout: Duration,
    state: Mutex<Round>,
    changed: Condvar,
}

/// What every rank of the current round result gets.
type Outcome = std::result::Result<Vec<Option<Buffer>>, Error>;

struct Round {
    /// Counts rounds, so that a rank waiting for one is not woken by the next.
    generation: u64,
    /// The collective of this round, as the first rank named it.
    what: Option<&'static str>,
    inputs: Vec<Option<Buffer>>,
    arrived: usize,
    /// Set by the last rank; each rank takes its part.
    outcome: Option<Outcome>,
    taken: usize,
    /// Why the group can no longer be used.
    broken: Option<String>,
}

impl Round {
    fn new(size: usize) -> Round {
        Round {
            generation: 0,
            what: None,
            inputs: (0..size).map(|_| None).collect(),
            arrived: 0,
            outcome: None,
            taken: 0,
            broken: None,
        }
    }
}

impl LocalCommunicator {
    fn lock(&self) -> MutexGuard<'_, Round> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one round: deposit `input`, and when every rank has, `compute`
    /// (on the last rank to arrive) maps the inputs in rank order to each
    /// rank's output.
    fn round(
        &self,
        what: &'static str,
        input: Buffer,
        compute: impl FnOnce(Vec<Buffer>) -> Result<Vec<Buffer>>,
    ) -> Result<Buffer> {
        let sh = &*self.shared;
        // No deadline past what an Instant can hold.
        let deadline = Instant::now().checked_add(sh.timeout);
        let describe = || format!("{what} (rank {} of {}, local group)", self.rank, sh.size);
        let mut st = self.lock();
        // Wait for the previous round's results to be taken.
        while st.outcome.is_some() && st.broken.is_none() {
            st = self.wait(st, deadline, &describe)?;
        }
        if let Some(why) = &st.broken {
            bail!(unavailable, "{}: the group is broken: {why}", describe());
        }
        if let Some(other) = st.what.filter(|o| *o != what) {
            let msg = format!("rank {} called {what} while another rank called {other}", self.rank);
            st.broken = Some(msg.clone());
            sh.changed.notify_all();
            bail!(invalid, "{msg}: every rank must call the same collectives in the same order");
        }
        if st.inputs[self.rank].is_some() {
            bail!(invalid, "{}: this rank is already in a collective (one call at a time per rank)", describe());
        }
        st.what = Some(what);
        st.inputs[self.rank] = Some(input);
        st.arrived += 1;
        let generation = st.generation;
        if st.arrived == sh.size {
            let inputs: Vec<Buffer> = st.inputs.iter_mut().filter_map(Option::take).collect();
            let outcome = if inputs.len() == sh.size {
                compute(inputs).and_then(|v| {
                    if v.len() == sh.size {
                        Ok(v.into_iter().map(Some).collect())
                    } else {
                        Err(Error::invalid(format!("{what}: {} results for {} ranks", v.len(), sh.size)))
                    }
                })
            } else {
                Err(Error::invalid(format!("{what}: {} inputs for {} ranks", inputs.len(), sh.size)))
            };
            st.outcome = Some(outcome);
            sh.changed.notify_all();
        }
        while st.outcome.is_none() || st.generation != generation {
            if st.broken.is_some() {
                break;
            }
            st = self.wait(st, deadline, &describe)?;
        }
        if let Some(why) = &st.broken {
            bail!(unavailable, "{}: the group is broken: {why}", describe());
        }
        let mine = match st.outcome.as_mut() {
            Some(Ok(parts)) => parts
                .get_mut(self.rank)
                .and_then(Option::take)
                .ok_or_else(|| Error::invalid(format!("{}: no result for this rank", describe()))),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::invalid(format!("{}: no result for this rank", describe()))),
        };
        self.finish(st, mine)
    }

    /// Count this rank's result as taken; the last one opens the next round.
    fn finish(&self, mut st: MutexGuard<'_, Round>, r: Result<Buffer>) -> Result<Buffer> {
        st.taken += 1;
        if st.taken == self.shared.size {
            st.outcome = None;
            st.what = None;
            st.arrived = 0;
            st.taken = 0;
            st.generation += 1;
            self.shared.changed.notify_all();
        }
        r
    }

    /// Wait for a change, or break the group at the deadline.
    fn wait<'a>(
        &self,
        st: MutexGuard<'a, Round>,
        deadline: Option<Instant>,
        describe: &dyn Fn() -> String,
    ) -> Result<MutexGuard<'a, Round>> {
        let now = Instant::now();
        let Some(deadline) = deadline else {
            return Ok(self.shared.changed.wait(st).unwrap_or_else(|p| p.into_inner()));
        };
        if now >= deadline {
            let mut st = st;
            let msg = timeout_message(&describe(), self.shared.timeout);
            st.broken = Some(msg.clone());
            self.shared.changed.notify_all();
            return Err(Error::unavailable(msg));
        }
        let (st, _) = self.shared.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner());
        Ok(st)
    }
}

/// `inputs` reduced in rank order.
fn reduce(mut inputs: Vec<Buffer>, op: Reduction) -> Result<Buffer> {
    let mut acc = inputs.remove(0);
    for other in &inputs {
        combine(&mut acc, other, op)?;
    }
    Ok(acc)
}

/// `n` copies of `b` (the last is `b` itself).
fn copies(b: Buffer, n: usize) -> Result<Vec<Buffer>> {
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        out.push(b.try_clone()?);
    }
    out.push(b);
    Ok(out)
}

fn same_lengths(what: &str, inputs: &[Buffer]) -> Result<()> {
    let first = &inputs[0];
    if let Some(b) = inputs.iter().find(|b| b.dtype() != first.dtype() || b.len() != first.len()) {
        bail!(invalid, "{what}: ranks disagree on the buffer ({} and {})", first.describe(), b.describe());
    }
    Ok(())
}

impl Communicator for LocalCommunicator {
    /// Break the group: every rank waiting, or calling later, gets an error
    /// at once instead of waiting for the timeout.
    fn abort(&self, reason: &str) {
        let mut st = self.lock();
        if st.broken.is_none() {
            st.broken = Some(format!("rank {} gave up: {reason}", self.rank));
        }
        self.shared.changed.notify_all();
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn describe(&self) -> String {
        format!("local group of {} threads", self.shared.size)
    }
    fn all_reduce(&self, buf: Buffer, op: Reduction) -> Result<Buffer> {
        let n = self.shared.size;
        self.round("all_reduce", buf, |inputs| copies(reduce(inputs, op)?, n))
    }
    fn broadcast(&self, buf: Buffer, root: usize) -> Result<Buffer> {
        let n = self.shared.size;
        if root >= n {
            bail!(invalid, "broadcast from rank {root} in a group of {n}");
        }
        self.round("broadcast", buf, |mut inputs| {
            same_lengths("broadcast", &inputs)?;
            if root >= inputs.len() {
                bail!(invalid, "broadcast from rank {root} of {} inputs", inputs.len());
            }
            copies(inputs.swap_remove(root), n)
        })
    }
    fn all_gather(&self, buf: Buffer) -> Result<Buffer> {
        let n = self.shared.size;
        self.round("all_gather", buf, |inputs| {
            same_lengths("all_gather", &inputs)?;
            let part = inputs[0].bytes().len();
            let mut out = Buffer::new(inputs[0].dtype(), inputs[0].len() * n)?;
            let bytes = out.bytes_mut()?;
            for (r, b) in inputs.iter().enumerate() {
                bytes[r * part..(r + 1) * part].copy_from_slice(b.bytes());
            }
            copies(out, n)
        })
    }
    fn reduce_scatter(&self, buf: Buffer, op: Reduction) -> Result<Buffer> {
        let n = self.shared.size;
        if !buf.len().is_multiple_of(n) {
            bail!(invalid, "reduce_scatter of {} elements over {n} ranks (must divide evenly)", buf.len());
        }
        self.round("reduce_scatter", buf, |inputs| {
            let total = reduce(inputs, op)?;
            let part = total.bytes().len() / n;
            (0..n)
                .map(|r| {
                    let mut b = Buffer::new(total.dtype(), total.len() / n)?;
                    b.bytes_mut()?.copy_from_slice(&total.bytes()[r * part..(r + 1) * part]);
                    Ok(b)
                })
                .collect()
        })
    }
    fn barrier(&self) -> Result<()> {
        let n = self.shared.size;
        let empty = Buffer::new(crate::tensor::DType::U8, 0)?;
        self.round("barrier", empty, |_| (0..n).map(|_| Buffer::new(crate::tensor::DType::U8, 0)).collect()).map(drop)
    }
}
