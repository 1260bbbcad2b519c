//! Collective communication between the replicas of a data-parallel job:
//! all-reduce, broadcast, all-gather, reduce-scatter and barrier over host
//! buffers, behind one [`Communicator`] trait.
//!
//! Two communicators implement it: [`LocalGroup`] (replicas as threads of
//! one process, for in-process strategies and for tests) and, with the
//! `mpi` cargo feature, [`MpiCommunicator`] (one process per worker,
//! launched by `mpirun`; every MPI call runs on one communication thread, so
//! an all-reduce can proceed while the caller computes).
//!
//! Graph ops name a communicator by the key of its [`Group`] (as
//! TensorFlow's collective ops carry a `group_key`), so graphs stay plain
//! data; the key is looked up when the op runs.
//!
//! Every participant must call the same collectives in the same order: the
//! k-th call of each rank is matched with the k-th call of the others.
//! A collective that does not complete within the communicator's timeout
//! (a peer died or hangs) fails with [`ErrorKind::Unavailable`](crate::ErrorKind)
//! on every rank that waits, and the communicator refuses further calls.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

pub use local::{LocalCommunicator, LocalGroup};
#[cfg(feature = "mpi")]
pub use mpi::MpiCommunicator;

use crate::error::{bail, Error, Result};
use crate::tensor::storage::{HostBuffer, Storage};
use crate::tensor::{DType, Element};
use half::{bf16, f16};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// How an all-reduce or reduce-scatter combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reduction {
    Sum,
    /// The sum divided by the group size (floating-point dtypes only).
    Mean,
    Max,
    Min,
}

impl Reduction {
    /// The name TensorFlow's `ReduceOp` / `merge_op` uses.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Sum => "Add",
            Reduction::Mean => "Mean",
            Reduction::Max => "Max",
            Reduction::Min => "Min",
        }
    }
}

/// A contiguous host buffer of `dtype` elements: what communicators move.
/// It owns its memory, or reads a tensor's (a send buffer needs no copy).
pub struct Buffer {
    dtype: DType,
    data: Data,
}

enum Data {
    Owned(HostBuffer),
    /// `len` bytes at byte `offset` of a host storage, read-only.
    Shared {
        storage: Arc<Storage>,
        offset: usize,
        len: usize,
    },
}

impl Buffer {
    /// A buffer of `len` elements (contents unspecified but initialised).
    pub fn new(dtype: DType, len: usize) -> Result<Buffer> {
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| Error::invalid(format!("{len} elements overflow")))?;
        let mut data = HostBuffer::new(bytes)?;
        if dtype == DType::Bool {
            // A reused buffer holds old bytes; bools must be 0 or 1.
            data.bytes_mut().fill(0);
        }
        Ok(Buffer { dtype, data: Data::Owned(data) })
    }

    /// A buffer over `data`, which must hold whole elements of `dtype`.
    pub fn from_host(dtype: DType, data: HostBuffer) -> Result<Buffer> {
        if !data.len_bytes().is_multiple_of(dtype.size().max(1)) {
            bail!(invalid, "{} bytes are not whole {dtype} elements", data.len_bytes());
        }
        if dtype == DType::Bool && data.bytes().iter().any(|&b| b > 1) {
            bail!(invalid, "bool data holds bytes other than 0 and 1");
        }
        Ok(Buffer { dtype, data: Data::Owned(data) })
    }

    /// A read-only buffer over `len` bytes at byte `offset` of host storage.
    pub(crate) fn shared(dtype: DType, storage: Arc<Storage>, offset: usize, len: usize) -> Buffer {
        Buffer { dtype, data: Data::Shared { storage, offset, len } }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice<T: Element>(data: &[T]) -> Result<Buffer> {
        Ok(Buffer { dtype: T::DTYPE, data: Data::Owned(HostBuffer::from_slice(data)?) })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.bytes().len() / self.dtype.size().max(1)
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Owned(b) => b.bytes(),
            Data::Shared { storage, offset, len } => &storage.host().bytes()[*offset..*offset + *len],
        }
    }

    /// The bytes, mutably (a shared buffer is copied first). Crate-private:
    /// bool buffers must keep holding only 0 and 1.
    pub(crate) fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        Ok(self.owned()?.bytes_mut())
    }

    /// The memory, owned (a shared buffer is copied).
    pub fn into_host(mut self) -> Result<HostBuffer> {
        self.owned()?;
        match self.data {
            Data::Owned(b) => Ok(b),
            Data::Shared { .. } => Err(Error::invalid("buffer still shared")),
        }
    }

    fn owned(&mut self) -> Result<&mut HostBuffer> {
        if let Data::Shared { .. } = self.data {
            let mut b = HostBuffer::new(self.bytes().len())?;
            b.bytes_mut().copy_from_slice(self.bytes());
            self.data = Data::Owned(b);
        }
        match &mut self.data {
            Data::Owned(b) => Ok(b),
            Data::Shared { .. } => Err(Error::invalid("buffer still shared")),
        }
    }

    /// The elements as `T` (which must be the buffer's dtype).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if T::DTYPE != self.dtype || self.dtype == DType::Bool {
            bail!(dtype, "buffer of {} read as {}", self.dtype, T::DTYPE);
        }
        let b = self.bytes();
        if !(b.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
            bail!(invalid, "buffer of {} is not aligned", self.dtype);
        }
        // SAFETY: aligned (checked), whole elements of T, and the library
        // writes only valid bit patterns for a tensor's dtype.
        Ok(unsafe { std::slice::from_raw_parts(b.as_ptr() as *const T, b.len() / std::mem::size_of::<T>()) })
    }

    /// The elements as `T`, mutably (a shared buffer is copied first).
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        if T::DTYPE != self.dtype || self.dtype == DType::Bool {
            bail!(dtype, "buffer of {} written as {}", self.dtype, T::DTYPE);
        }
        Ok(self.owned()?.as_mut_slice::<T>())
    }

    /// A copy.
    pub fn try_clone(&self) -> Result<Buffer> {
        let mut data = HostBuffer::new(self.bytes().len())?;
        data.bytes_mut().copy_from_slice(self.bytes());
        Ok(Buffer { dtype: self.dtype, data: Data::Owned(data) })
    }

    /// `dtype[len]`, for messages.
    pub fn describe(&self) -> String {
        format!("{}[{}]", self.dtype, self.len())
    }
}

/// A set of ranks that run collectives together.
///
/// Implementations: [`LocalCommunicator`] (threads) and, with the `mpi`
/// feature, [`MpiCommunicator`] (processes). Communicators only see
/// `Sum`, `Max` and `Min`; `Mean` is a sum divided by the size, done by the
/// ops. Each call takes its buffer and gives one back.
pub trait Communicator: Send + Sync {
    /// This participant's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of participants.
    fn size(&self) -> usize;
    /// What it is, for messages and `rivulet devices` (e.g. "MPI (Open MPI 4.1.4), 4 processes").
    fn describe(&self) -> String;
    /// Every rank's `buf` combined elementwise by `op`, on every rank.
    fn all_reduce(&self, buf: Buffer, op: Reduction) -> Result<Buffer>;
    /// Start an all-reduce and return at once where the communicator can
    /// (the caller computes meanwhile); [`Pending::wait`] gives the result.
    fn start_all_reduce(&self, buf: Buffer, op: Reduction) -> Result<Pending> {
        Ok(Pending::ready(self.all_reduce(buf, op)))
    }
    /// Rank `root`'s buffer, on every rank (the others' buffers give its length).
    fn broadcast(&self, buf: Buffer, root: usize) -> Result<Buffer>;
    /// Every rank's buffer (all of one length) concatenated in rank order.
    fn all_gather(&self, buf: Buffer) -> Result<Buffer>;
    /// The all-reduce of every rank's buffer (a length divisible by the
    /// size), of which rank r keeps the r-th of `size` equal parts.
    fn reduce_scatter(&self, buf: Buffer, op: Reduction) -> Result<Buffer>;
    /// Wait until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Give up on the group after a failure on this rank: the others stop
    /// waiting for it at once where the communicator can tell them (threads;
    /// MPI ends the job when the failing process exits).
    fn abort(&self, _reason: &str) {}
}

/// An all-reduce in flight.
pub struct Pending {
    state: PendingState,
}

enum PendingState {
    Ready(Result<Buffer>),
    Waiting {
        rx: Receiver<Result<Buffer>>,
        timeout: Duration,
        what: String,
        on_timeout: Box<dyn Fn(&str) + Send>,
        waiters: Option<Arc<Waiters>>,
    },
}

impl Pending {
    /// An already finished collective.
    pub fn ready(result: Result<Buffer>) -> Pending {
        Pending { state: PendingState::Ready(result) }
    }

    /// A collective whose result arrives on `rx`; `on_timeout` runs (with
    /// the message) if none comes within `timeout`.
    pub fn waiting(
        rx: Receiver<Result<Buffer>>,
        timeout: Duration,
        what: String,
        on_timeout: Box<dyn Fn(&str) + Send>,
    ) -> Pending {
        Pending { state: PendingState::Waiting { rx, timeout, what, on_timeout, waiters: None } }
    }

    /// This pending with its communicator's [`Waiters`], which
    /// [`Pending::wait`] joins while it blocks: a communicator that polls
    /// gently while the caller computes is woken to poll flat out.
    pub fn with_waiters(mut self, shared: Arc<Waiters>) -> Pending {
        if let PendingState::Waiting { waiters, .. } = &mut self.state {
            *waiters = Some(shared);
        }
        self
    }

    /// The result, once every rank has contributed.
    pub fn wait(self) -> Result<Buffer> {
        match self.state {
            PendingState::Ready(r) => r,
            PendingState::Waiting { rx, timeout, what, on_timeout, waiters } => {
                let waiting = waiters.as_deref().map(Waiting::new);
                let received = rx.recv_timeout(timeout);
                drop(waiting);
                match received {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        let msg = timeout_message(&what, timeout);
                        on_timeout(&msg);
                        Err(Error::unavailable(msg))
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        Err(Error::unavailable(format!("{what}: the communication thread has stopped")))
                    }
                }
            }
        }
    }
}

/// The threads blocked in [`Pending::wait`] on one communicator, and the
/// thread that polls its collectives: it naps between polls while nobody
/// waits (leaving the cores to the computation the collective overlaps) and
/// is woken to poll flat out when someone starts waiting.
pub struct Waiters {
    count: AtomicUsize,
    poller: std::sync::OnceLock<std::thread::Thread>,
}

impl Waiters {
    /// Nobody waiting, and no poller yet.
    pub fn new() -> Waiters {
        Waiters { count: AtomicUsize::new(0), poller: std::sync::OnceLock::new() }
    }

    /// The calling thread polls this communicator's collectives.
    pub fn set_poller(&self) {
        let _ = self.poller.set(std::thread::current());
    }

    /// Whether someone is blocked waiting for a result.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// On the poller: sleep until the next poll is due, or until someone
    /// starts waiting.
    pub fn nap(&self, poll: Duration) {
        if !self.any() {
            std::thread::park_timeout(poll);
        }
    }
}

impl Default for Waiters {
    fn default() -> Waiters {
        Waiters::new()
    }
}

/// Counts a thread blocked in [`Pending::wait`] while it lives, and wakes
/// the poller when it starts.
struct Waiting<'a>(&'a Waiters);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a Waiters) -> Waiting<'a> {
        waiters.count.fetch_add(1, Ordering::AcqRel);
        if let Some(poller) = waiters.poller.get() {
            poller.unpark();
        }
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The message of a collective that timed out.
pub(crate) fn timeout_message(what: &str, timeout: Duration) -> String {
    format!(
        "{what} did not complete within {:.1} s: a peer worker has died or hangs \
         (RIVULET_COLLECTIVE_TIMEOUT sets the limit in seconds)",
        timeout.as_secs_f64()
    )
}

/// How long a collective may wait for its peers: `RIVULET_COLLECTIVE_TIMEOUT`
/// (seconds, fractions allowed), else 300 s.
pub fn default_timeout() -> Duration {
    std::env::var("RIVULET_COLLECTIVE_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        // At most a year (what a Duration and a deadline can hold, and more than any job needs).
        .map(|s| Duration::from_secs_f64(s.min(365.0 * 86400.0)))
        .unwrap_or(Duration::from_secs(300))
}

/// A communicator registered for graph ops, which name it by `key`.
#[derive(Clone)]
pub struct Group {
    key: u64,
    comm: Arc<dyn Communicator>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group({}, rank {} of {}, {})", self.key, self.rank(), self.size(), self.comm.describe())
    }
}

fn registry() -> &'static Mutex<FxHashMap<u64, Weak<dyn Communicator>>> {
    static GROUPS: OnceLock<Mutex<FxHashMap<u64, Weak<dyn Communicator>>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(FxHashMap::default()))
}

impl Group {
    /// Register `comm` under a fresh key (held weakly: the group lives as
    /// long as some `Group` or other handle to the communicator does).
    pub fn new(comm: Arc<dyn Communicator>) -> Group {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut groups = registry().lock();
        groups.retain(|_, w| w.strong_count() > 0);
        groups.insert(key, Arc::downgrade(&comm));
        Group { key, comm }
    }

    /// A group of one: every collective returns its input. What a program
    /// written for several workers runs on when there is one.
    pub fn single() -> Group {
        let comm = LocalGroup::new(1).map(|mut v| v.remove(0)).expect("a group of one needs no allocation");
        Group::new(comm)
    }

    /// The group registered under `key` (what a graph op names).
    pub fn from_key(key: u64) -> Result<Group> {
        Ok(Group { key, comm: lookup(key)? })
    }

    /// Wait until every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        self.comm.barrier()
    }

    /// The key graph ops carry.
    pub fn key(&self) -> u64 {
        self.key
    }
    /// This participant's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    /// The number of participants.
    pub fn size(&self) -> usize {
        self.comm.size()
    }
    /// The communicator.
    pub fn communicator(&self) -> &Arc<dyn Communicator> {
        &self.comm
    }
}

/// The communicator registered under `key`.
pub(crate) fn lookup(key: u64) -> Result<Arc<dyn Communicator>> {
    registry().lock().get(&key).and_then(Weak::upgrade).ok_or_else(|| {
        Error::not_found(format!(
            "collective group {key} is not registered in this process (its communicator was dropped, \
             or the graph came from another process)"
        ))
    })
}

/// An all-reduce started by a graph op: what its wait needs.
pub(crate) struct Parked {
    pub pending: Pending,
    /// The dtype of the tensors (the wire's may differ).
    pub dtype: DType,
    /// The divisor of a mean.
    pub scale: Option<f64>,
}

/// All-reduces started by graph ops and not yet waited for, by token.
fn parked() -> &'static Mutex<FxHashMap<u64, Parked>> {
    static PARKED: OnceLock<Mutex<FxHashMap<u64, Parked>>> = OnceLock::new();
    PARKED.get_or_init(|| Mutex::new(FxHashMap::default()))
}

/// Keep `p` until [`unpark`] asks for its token.
pub(crate) fn park(p: Parked) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let token = NEXT.fetch_add(1, Ordering::Relaxed);
    parked().lock().insert(token, p);
    token
}

/// The collective started under `token`.
pub(crate) fn unpark(token: u64) -> Result<Parked> {
    parked()
        .lock()
        .remove(&token)
        .ok_or_else(|| Error::not_found(format!("no all-reduce in flight under token {token} (waited for twice?)")))
}

/// Whether this build has MPI (the `mpi` cargo feature).
pub const MPI_BUILT: bool = cfg!(feature = "mpi");

/// Whether this process was started by `mpirun`/`mpiexec` (Open MPI, MPICH
/// or a PMI launcher set these).
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"].iter().any(|v| std::env::var_os(v).is_some())
}

/// `acc = acc op other`, elementwise (`Mean` combines as `Sum`; `Max` and
/// `Min` propagate NaN, as `tf.maximum` does). Half
/// precision adds in f32 and rounds once per pair, as an f16 all-reduce
/// of Horovod's or NCCL's does.
pub fn combine(acc: &mut Buffer, other: &Buffer, op: Reduction) -> Result<()> {
    if acc.dtype != other.dtype || acc.len() != other.len() {
        bail!(
            invalid,
            "collective: ranks disagree on the buffer ({} here, {} there)",
            acc.describe(),
            other.describe()
        );
    }
    fn go<T: Element>(a: &mut [T], b: &[T], f: impl Fn(T, T) -> T) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = f(*x, y);
        }
    }
    macro_rules! arith {
        ($t:ty) => {{
            let (a, b) = (acc.as_mut_slice::<$t>()?, other.as_slice::<$t>()?);
            match op {
                Reduction::Sum | Reduction::Mean => go(a, b, |x, y| x + y),
                Reduction::Max => go(a, b, |x, y| if y > x || y != y { y } else { x }),
                Reduction::Min => go(a, b, |x, y| if y < x || y != y { y } else { x }),
            }
        }};
    }
    macro_rules! int {
        ($t:ty) => {{
            let (a, b) = (acc.as_mut_slice::<$t>()?, other.as_slice::<$t>()?);
            match op {
                Reduction::Sum | Reduction::Mean => go(a, b, |x: $t, y: $t| x.wrapping_add(y)),
                Reduction::Max => go(a, b, |x: $t, y: $t| x.max(y)),
                Reduction::Min => go(a, b, |x: $t, y: $t| x.min(y)),
            }
        }};
    }
    macro_rules! half {
        ($t:ty) => {{
            let (a, b) = (acc.as_mut_slice::<$t>()?, other.as_slice::<$t>()?);
            match op {
                Reduction::Sum | Reduction::Mean => go(a, b, |x, y| <$t>::from_f32(x.to_f32() + y.to_f32())),
                Reduction::Max => go(a, b, |x, y| if y > x || y.is_nan() { y } else { x }),
                Reduction::Min => go(a, b, |x, y| if y < x || y.is_nan() { y } else { x }),
            }
        }};
    }
    match acc.dtype {
        DType::F32 => arith!(f32),
        DType::F64 => arith!(f64),
        DType::F16 => half!(f16),
        DType::BF16 => half!(bf16),
        DType::I8 => int!(i8),
        DType::I16 => int!(i16),
        DType::I32 => int!(i32),
        DType::I64 => int!(i64),
        DType::U8 => int!(u8),
        DType::U16 => int!(u16),
        DType::U32 => int!(u32),
        DType::U64 => int!(u64),
        d => bail!(dtype, "collective reduction of {d} is not supported (real numbers only)"),
    }
    Ok(())
}

/// Whether `dtype` can be reduced (broadcast and all-gather take any dtype).
pub fn reducible(dtype: DType) -> bool {
    !matches!(dtype, DType::Bool | DType::C64 | DType::C128)
}

/// `reps` plain `MPI_Allreduce` calls (sum of `n` f32, separate send and
/// receive buffers from the allocator tensors use), each after an
/// `MPI_Barrier`, made and timed on the communication thread: the seconds
/// of each. The baseline Rivulet's own all-reduce is measured against
/// (`rivulet scaling`). An error without the `mpi` feature.
pub fn plain_mpi_all_reduce_f32(n: usize, reps: usize) -> Result<Vec<f64>> {
    #[cfg(feature = "mpi")]
    {
        MpiCommunicator::world()?.raw_all_reduce_f32(n, reps)
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = (n, reps);
        Err(Error::unimplemented("this build has no MPI (rebuild with `--features mpi`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that starts waiting wakes the poller from a long nap; while
    /// someone waits, the poller does not nap at all.
    #[test]
    fn a_waiter_wakes_the_napping_poller() {
        let waiters = Arc::new(Waiters::new());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let poller = {
            let waiters = waiters.clone();
            std::thread::spawn(move || {
                waiters.set_poller();
                ready_tx.send(()).unwrap();
                let start = std::time::Instant::now();
                waiters.nap(Duration::from_secs(30));
                start.elapsed()
            })
        };
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let waiting = Waiting::new(&waiters);
        assert!(waiters.any());
        // Woken, not timed out (the nap was 30 s).
        assert!(poller.join().unwrap() < Duration::from_secs(10));
        let start = std::time::Instant::now();
        waiters.nap(Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(10));
        drop(waiting);
        assert!(!waiters.any());
    }
}
