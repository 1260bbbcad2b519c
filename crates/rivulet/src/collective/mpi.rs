//! One process per worker over MPI (the `mpi` cargo feature: rsmpi against
//! the system's Open MPI or MPICH).
//!
//! Every MPI call runs on one communication thread, in the order the
//! calls were made (MPI matches collectives by order), so an all-reduce
//! started by a graph op proceeds while the caller goes on computing, as
//! Horovod's background thread does. The thread initializes MPI (asking for
//! `MPI_THREAD_MULTIPLE`, so that a timed-out rank may abort the job from
//! another thread) and finalizes it when the last handle is dropped.

use super::{reducible, timeout_message, Buffer, Communicator, Pending, Reduction, Waiters};
use crate::error::{bail, Error, Result};
use crate::tensor::DType;
use mpi::ffi;
use parking_lot::Mutex;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// A job for the communication thread.
type Job = Box<dyn FnOnce() + Send>;

/// Set once MPI is finalized (an abort after that would be an error).
static FINALIZED: AtomicBool = AtomicBool::new(false);
/// Whether MPI granted `MPI_THREAD_MULTIPLE` (an abort from another thread is then allowed).
static MULTIPLE: AtomicBool = AtomicBool::new(false);

/// The MPI world: every process `mpirun` started, one rank each.
pub struct MpiCommunicator {
    rank: usize,
    size: usize,
    library: String,
    timeout: Duration,
    jobs: Mutex<Option<Sender<Job>>>,
    /// The communication thread, and word from it that MPI is finalized.
    thread: Mutex<Option<(JoinHandle<()>, mpsc::Receiver<()>)>>,
    broken: Arc<AtomicBool>,
    calls: AtomicU64,
    /// Threads blocked waiting for a result (the thread then polls flat out).
    waiters: Arc<Waiters>,
    /// How often an overlapped all-reduce is polled while nobody waits.
    poll: Duration,
}

/// How often the communication thread polls a collective that overlaps
/// computation while nobody waits for it, when the ranks' compute threads
/// leave a core free: it sleeps in between (the timer slack adds about
/// 50 µs), so polls cost the computation little.
const GENTLE_POLL: Duration = Duration::from_micros(20);

/// The same when the ranks on this node have a compute thread for every
/// core: each poll then takes a core from the computation it overlaps (B5
/// at `-np 2` on two cores: polling every 20-100 µs made the product it
/// overlapped 1.4-2x slower, more than the all-reduce it hid), so the
/// collective progresses mostly once someone waits for it.
const SATURATED_POLL: Duration = Duration::from_millis(2);

/// The poll interval for this process, whose node runs `local_ranks`
/// processes: this one's compute threads (the global pool that the ops run
/// on) and the cores it may run on are counted. With one compute thread per
/// core, the default, that is [`SATURATED_POLL`]; a lower
/// `RAYON_NUM_THREADS` leaves cores to the polls.
fn poll_interval(local_ranks: usize) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    poll_interval_for(local_ranks, rayon::current_num_threads(), cores)
}

/// [`GENTLE_POLL`] where `local_ranks` processes of `threads` compute
/// threads each leave one of `cores` free, else [`SATURATED_POLL`].
fn poll_interval_for(local_ranks: usize, threads: usize, cores: usize) -> Duration {
    if local_ranks.max(1).saturating_mul(threads.max(1)) < cores {
        GENTLE_POLL
    } else {
        SATURATED_POLL
    }
}

/// The number of processes of the world on this node (`MPI_Comm_split_type`
/// with `MPI_COMM_TYPE_SHARED`); 1 if MPI cannot tell.
///
/// # Safety
/// MPI is initialized, not finalized, and every rank calls it (collective).
unsafe fn local_ranks() -> usize {
    // SAFETY: reading a constant handle rsmpi's C shim defines.
    let mut node = unsafe { ffi::RSMPI_COMM_NULL };
    let mut size: c_int = 1;
    // SAFETY: the caller's contract; the out-pointers are valid.
    unsafe {
        let ok = ffi::MPI_Comm_split_type(
            ffi::RSMPI_COMM_WORLD,
            ffi::RSMPI_COMM_TYPE_SHARED,
            0,
            ffi::RSMPI_INFO_NULL,
            &mut node,
        ) == ffi::MPI_SUCCESS as c_int;
        if !ok {
            return 1;
        }
        ffi::MPI_Comm_size(node, &mut size);
        ffi::MPI_Comm_free(&mut node);
    }
    size.max(1) as usize
}

/// Whether `library` (the first line of `MPI_Get_library_version`) is Open
/// MPI 4.1.3 or later: earlier 4.1 releases' ring all-reduce overflowed its
/// offsets on buffers over 2 GiB (fixed in 4.1.3).
fn open_mpi_with_a_sound_ring(library: &str) -> bool {
    let Some(version) = library.strip_prefix("Open MPI v") else { return false };
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor, patch) >= (4, 1, 3)
}

/// With two processes, on Open MPI, and unless the user chose otherwise:
/// make the nonblocking all-reduce use Open MPI's ring algorithm. There
/// Open MPI's own choice is a binomial tree (one rank sends, the other
/// reduces and sends back): two dependent transfers that each need polls on
/// both sides. The ring splits the work evenly (B5 at `-np 2`: overlap /
/// no overlap 1.06-1.15 with the tree, 0.91-1.02 with the ring). A sum of
/// two terms is the same whatever the order, so the bits are those of any
/// other algorithm, on every rank. With more processes Open MPI's choice
/// stands (for three the ring's order would differ from the blocking
/// all-reduce's, and it was not measured; from four Open MPI's choice,
/// Rabenseifner's, takes about 2·log p steps to the ring's 2(p-1)), as
/// does any value the user set (environment, `mpirun --mca`, parameter
/// files: the variable is changed only while it says "ignore").
/// Returns whether the ring was set.
///
/// # Safety
/// MPI is initialized with `MPI_THREAD_MULTIPLE` and not finalized, and
/// `library` names the MPI library in use.
unsafe fn prefer_ring_all_reduce(size: usize, library: &str) -> bool {
    if size != 2 || !open_mpi_with_a_sound_ring(library) {
        return false;
    }
    let name = c"coll_libnbc_iallreduce_algorithm";
    let (ignore, ring): (c_int, c_int) = (0, 1);
    let success = ffi::MPI_SUCCESS as c_int;
    let (mut provided, mut index, mut count, mut now) = (0 as c_int, 0 as c_int, 0 as c_int, -1 as c_int);
    // SAFETY: Open MPI allows MPI_T while MPI runs and counts its MPI_T
    // initializations (MPI_T_finalize then leaves MPI as it was); the level
    // asked for is the one MPI was initialized with, since Open MPI's
    // MPI_T_init_thread sets the process's level. A handle is used only
    // after a successful allocation, with the variable's count of one int.
    unsafe {
        if ffi::MPI_T_init_thread(ffi::RSMPI_THREAD_MULTIPLE, &mut provided) != success {
            return false;
        }
        let mut done = false;
        if ffi::MPI_T_cvar_get_index(name.as_ptr(), &mut index) == success {
            let mut handle: ffi::MPI_T_cvar_handle = std::ptr::null_mut();
            if ffi::MPI_T_cvar_handle_alloc(index, std::ptr::null_mut(), &mut handle, &mut count) == success {
                done = count == 1
                    && ffi::MPI_T_cvar_read(handle, (&raw mut now).cast()) == success
                    && now == ignore
                    && ffi::MPI_T_cvar_write(handle, (&raw const ring).cast()) == success;
                ffi::MPI_T_cvar_handle_free(&mut handle);
            }
        }
        ffi::MPI_T_finalize();
        done
    }
}

/// The world, while some handle holds it (MPI starts once per process).
fn world_slot() -> &'static Mutex<(Weak<MpiCommunicator>, bool)> {
    static WORLD: OnceLock<Mutex<(Weak<MpiCommunicator>, bool)>> = OnceLock::new();
    WORLD.get_or_init(|| Mutex::new((Weak::new(), false)))
}

impl MpiCommunicator {
    /// The world communicator, starting MPI on first use (later calls share
    /// it). Collectives time out after [`super::default_timeout`].
    pub fn world() -> Result<Arc<MpiCommunicator>> {
        let mut slot = world_slot().lock();
        if let Some(w) = slot.0.upgrade() {
            return Ok(w);
        }
        if slot.1 {
            bail!(
                precondition,
                "MPI was finalized when the last handle to the world was dropped; it cannot start again in this process"
            );
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(usize, usize, String, Duration)>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let waiters = Arc::new(Waiters::new());
        let poller = waiters.clone();
        let thread = std::thread::Builder::new()
            .name("rivulet-mpi".into())
            .spawn(move || {
                poller.set_poller();
                let Some((universe, threading)) = mpi::initialize_with_threading(mpi::Threading::Multiple) else {
                    let _ = ready_tx.send(Err(Error::precondition("MPI was already initialized in this process")));
                    return;
                };
                let (mut rank, mut size) = (0 as c_int, 0 as c_int);
                // SAFETY: MPI is initialized; the out-pointers are valid.
                unsafe {
                    ffi::MPI_Comm_rank(ffi::RSMPI_COMM_WORLD, &mut rank);
                    ffi::MPI_Comm_size(ffi::RSMPI_COMM_WORLD, &mut size);
                }
                let library = mpi::environment::library_version().unwrap_or_else(|_| "MPI".into());
                let library = library.lines().next().unwrap_or("MPI").trim().to_string();
                let multiple = threading == mpi::Threading::Multiple;
                MULTIPLE.store(multiple, Ordering::Release);
                // SAFETY: MPI is initialized (MPI_T only at the level it
                // asks for); every rank makes these calls once, in this
                // order, as it starts.
                let (ring, poll) = unsafe {
                    (multiple && prefer_ring_all_reduce(size as usize, &library), poll_interval(local_ranks()))
                };
                let library = if ring { format!("{library}; ring all-reduce") } else { library };
                let _ = ready_tx.send(Ok((rank as usize, size as usize, library, poll)));
                while let Ok(job) = rx.recv() {
                    job();
                }
                free_half_ops();
                FINALIZED.store(true, Ordering::Release);
                drop(universe);
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::precondition(format!("cannot start the MPI thread: {e}")))?;
        let (rank, size, library, poll) =
            ready_rx.recv().map_err(|_| Error::precondition("the MPI thread stopped while starting MPI"))??;
        let comm = Arc::new(MpiCommunicator {
            rank,
            size,
            library,
            timeout: super::default_timeout(),
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some((thread, done_rx))),
            broken: Arc::new(AtomicBool::new(false)),
            calls: AtomicU64::new(0),
            waiters,
            poll,
        });
        *slot = (Arc::downgrade(&comm), true);
        Ok(comm)
    }

    /// Run `f` on the communication thread; its result arrives on the returned pending.
    fn submit(&self, what: &str, f: impl FnOnce() -> Result<Buffer> + Send + 'static) -> Result<Pending> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let what = format!("{what} #{call} (rank {} of {}, MPI)", self.rank, self.size);
        if self.broken.load(Ordering::Acquire) {
            bail!(unavailable, "{what}: an earlier collective timed out, so this communicator can no longer be used");
        }
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = self.jobs.lock().as_ref().map(|s| s.send(job).is_ok()).unwrap_or(false);
        if !sent {
            bail!(unavailable, "{what}: the MPI thread has stopped");
        }
        let broken = self.broken.clone();
        let rank = self.rank;
        let on_timeout = Box::new(move |msg: &str| {
            if !broken.swap(true, Ordering::AcqRel) {
                eprintln!("rivulet: rank {rank}: {msg}; ending the job");
                // Give the caller time to report the error and exit (mpirun
                // then ends the others); abort if it carries on instead.
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_secs(5));
                    if FINALIZED.load(Ordering::Acquire) {
                        return;
                    }
                    if MULTIPLE.load(Ordering::Acquire) {
                        // SAFETY: MPI is initialized, not finalized, and allows
                        // calls from any thread; aborting ends every process of the job.
                        unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, 1) };
                    }
                    // Without MPI_THREAD_MULTIPLE: end this process; mpirun ends the others.
                    std::process::exit(1);
                });
            }
        });
        Ok(Pending::waiting(rx, self.timeout, what, on_timeout).with_waiters(self.waiters.clone()))
    }

    /// A plain `MPI_Allreduce` (sum) of `buf` into `out`, timed on the
    /// communication thread in seconds: the baseline our all-reduce is
    /// measured against.
    pub fn raw_all_reduce_f32(&self, n: usize, reps: usize) -> Result<Vec<f64>> {
        if n > c_int::MAX as usize {
            bail!(invalid, "a plain all-reduce of {n} elements (at most {})", c_int::MAX);
        }
        let mut send = Buffer::new(DType::F32, n)?;
        send.bytes_mut()?.fill(0);
        let mut out = Buffer::new(DType::F32, n)?;
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let src = send.bytes().as_ptr();
            let Ok(dst) = out.bytes_mut().map(|b| b.as_mut_ptr()) else { return };
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                // SAFETY: MPI is initialized; both buffers hold `n` f32s.
                unsafe {
                    ffi::MPI_Barrier(ffi::RSMPI_COMM_WORLD);
                    let start = ffi::RSMPI_Wtime();
                    ffi::MPI_Allreduce(
                        src.cast(),
                        dst.cast(),
                        n as c_int,
                        ffi::RSMPI_FLOAT,
                        ffi::RSMPI_SUM,
                        ffi::RSMPI_COMM_WORLD,
                    );
                    times.push(ffi::RSMPI_Wtime() - start);
                }
            }
            let _ = tx.send(times);
        });
        let sent = self.jobs.lock().as_ref().map(|s| s.send(job).is_ok()).unwrap_or(false);
        if !sent {
            bail!(unavailable, "raw all-reduce: the MPI thread has stopped");
        }
        rx.recv_timeout(self.timeout.saturating_mul(reps.max(1) as u32))
            .map_err(|_| Error::unavailable(timeout_message("raw all-reduce", self.timeout)))
    }
}

impl Drop for MpiCommunicator {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which finalizes MPI; a thread
        // stuck in a collective whose peer died is left behind.
        self.jobs.lock().take();
        if let Some((thread, done)) = self.thread.lock().take() {
            // A collective that never completes (a peer died and nobody
            // waited for the result) must not hang the exit: wait at most
            // the timeout for the thread to finish.
            if !self.broken.load(Ordering::Acquire) && done.recv_timeout(self.timeout).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

/// The MPI datatype of `dtype` and how many of them hold `len` elements,
/// for moving bytes (any dtype) or reducing (`reduce`: real numbers; half
/// precision travels as u16 and reduces with our own operations).
fn datatype(dtype: DType, len: usize, reduce: bool) -> Result<(ffi::MPI_Datatype, usize)> {
    if reduce && !reducible(dtype) {
        bail!(dtype, "collective reduction of {dtype} is not supported (real numbers only)");
    }
    // SAFETY: reading the predefined handles of an initialized MPI.
    Ok(unsafe {
        match dtype {
            DType::F32 => (ffi::RSMPI_FLOAT, len),
            DType::F64 => (ffi::RSMPI_DOUBLE, len),
            DType::I8 => (ffi::RSMPI_INT8_T, len),
            DType::I16 => (ffi::RSMPI_INT16_T, len),
            DType::I32 => (ffi::RSMPI_INT32_T, len),
            DType::I64 => (ffi::RSMPI_INT64_T, len),
            DType::U16 | DType::F16 | DType::BF16 => (ffi::RSMPI_UINT16_T, len),
            DType::U32 => (ffi::RSMPI_UINT32_T, len),
            DType::U64 => (ffi::RSMPI_UINT64_T, len),
            d => (ffi::RSMPI_UINT8_T, len * d.size()),
        }
    })
}

/// Half-precision reductions, created on the communication thread.
struct HalfOps {
    ops: [[ffi::MPI_Op; 3]; 2],
}
// SAFETY: MPI_Op handles are only used on the communication thread.
unsafe impl Send for HalfOps {}

static HALF_OPS: Mutex<Option<HalfOps>> = Mutex::new(None);

macro_rules! half_op {
    ($name:ident, $t:ty, $op:expr) => {
        unsafe extern "C" fn $name(
            invec: *mut c_void,
            inoutvec: *mut c_void,
            len: *mut c_int,
            _dt: *mut ffi::MPI_Datatype,
        ) {
            if invec.is_null() || inoutvec.is_null() || len.is_null() {
                return;
            }
            // SAFETY: MPI passes `*len` elements in each vector.
            let n = unsafe { *len }.max(0) as usize;
            let a = unsafe { std::slice::from_raw_parts(invec as *const $t, n) };
            let b = unsafe { std::slice::from_raw_parts_mut(inoutvec as *mut $t, n) };
            let f: fn($t, $t) -> $t = $op;
            for (y, &x) in b.iter_mut().zip(a) {
                *y = f(x, *y);
            }
        }
    };
}
half_op!(f16_sum, half::f16, |x, y| half::f16::from_f32(x.to_f32() + y.to_f32()));
half_op!(f16_max, half::f16, |x, y| if x > y || x.is_nan() { x } else { y });
half_op!(f16_min, half::f16, |x, y| if x < y || x.is_nan() { x } else { y });
half_op!(bf16_sum, half::bf16, |x, y| half::bf16::from_f32(x.to_f32() + y.to_f32()));
half_op!(bf16_max, half::bf16, |x, y| if x > y || x.is_nan() { x } else { y });
half_op!(bf16_min, half::bf16, |x, y| if x < y || x.is_nan() { x } else { y });

type UserFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_int, *mut ffi::MPI_Datatype);

/// The MPI operation of `op` on `dtype`.
fn mpi_op(dtype: DType, op: Reduction) -> ffi::MPI_Op {
    let k = match op {
        Reduction::Sum | Reduction::Mean => 0,
        Reduction::Max => 1,
        Reduction::Min => 2,
    };
    let h = match dtype {
        DType::F16 => 0,
        DType::BF16 => 1,
        // SAFETY: predefined handles of an initialized MPI.
        _ => {
            return unsafe { [ffi::RSMPI_SUM, ffi::RSMPI_MAX, ffi::RSMPI_MIN][k] };
        }
    };
    let mut ops = HALF_OPS.lock();
    let ops = ops.get_or_insert_with(|| {
        let fns: [[UserFn; 3]; 2] = [[f16_sum, f16_max, f16_min], [bf16_sum, bf16_max, bf16_min]];
        // SAFETY: a predefined handle, overwritten below.
        let mut made = HalfOps { ops: [[unsafe { ffi::RSMPI_SUM }; 3]; 2] };
        for (i, row) in fns.iter().enumerate() {
            for (j, f) in row.iter().enumerate() {
                // SAFETY: registering a commutative user operation.
                unsafe { ffi::MPI_Op_create(Some(*f), 1, &mut made.ops[i][j]) };
            }
        }
        made
    });
    ops.ops[h][k]
}

fn free_half_ops() {
    if let Some(mut made) = HALF_OPS.lock().take() {
        for op in made.ops.iter_mut().flatten() {
            // SAFETY: created by MPI_Op_create on this thread.
            unsafe { ffi::MPI_Op_free(op) };
        }
    }
}

/// Calls of at most `c_int::MAX` elements covering `count`: `(offset, n)`.
fn pieces(count: usize) -> impl Iterator<Item = (usize, c_int)> {
    const MAX: usize = 1 << 30;
    (0..count.div_ceil(MAX).max(1)).map(move |i| (i * MAX, (count - i * MAX).min(MAX) as c_int))
}

impl MpiCommunicator {
    /// An all-reduce on the communication thread. `gentle` (a start whose
    /// caller computes meanwhile): a nonblocking `MPI_Iallreduce` polled
    /// with `MPI_Test` every [`poll_interval`], the thread asleep in
    /// between, until someone waits for it, then flat out; else a blocking
    /// `MPI_Allreduce`.
    fn reduce(&self, buf: Buffer, op: Reduction, gentle: bool) -> Result<Pending> {
        datatype(buf.dtype(), buf.len(), true)?;
        let what = format!("all_reduce {} of {}", op.name(), buf.describe());
        let waiters = self.waiters.clone();
        let poll = self.poll;
        self.submit(&what, move || {
            let (dt, count) = datatype(buf.dtype(), buf.len(), true)?;
            let mut out = Buffer::new(buf.dtype(), buf.len())?;
            let mop = mpi_op(buf.dtype(), op);
            let size = buf.bytes().len() / count.max(1);
            let dst = out.bytes_mut()?.as_mut_ptr();
            for (at, n) in pieces(count) {
                // SAFETY: both buffers hold `count` elements of `dt` and
                // outlive the call (and the request, completed below); the
                // calls of every rank match in order.
                unsafe {
                    let src = buf.bytes().as_ptr().add(at * size).cast();
                    let dst = dst.add(at * size).cast();
                    if !gentle {
                        ffi::MPI_Allreduce(src, dst, n, dt, mop, ffi::RSMPI_COMM_WORLD);
                        continue;
                    }
                    let mut request = ffi::RSMPI_REQUEST_NULL;
                    ffi::MPI_Iallreduce(src, dst, n, dt, mop, ffi::RSMPI_COMM_WORLD, &mut request);
                    let mut done: c_int = 0;
                    loop {
                        ffi::MPI_Test(&mut request, &mut done, ffi::RSMPI_STATUS_IGNORE);
                        if done != 0 {
                            break;
                        }
                        waiters.nap(poll);
                    }
                }
            }
            Ok(out)
        })
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn describe(&self) -> String {
        format!("MPI ({}), {} processes", self.library, self.size)
    }
    fn all_reduce(&self, buf: Buffer, op: Reduction) -> Result<Buffer> {
        self.reduce(buf, op, false)?.wait()
    }
    fn start_all_reduce(&self, buf: Buffer, op: Reduction) -> Result<Pending> {
        self.reduce(buf, op, true)
    }
    fn broadcast(&self, buf: Buffer, root: usize) -> Result<Buffer> {
        if root >= self.size {
            bail!(invalid, "broadcast from rank {root} in a world of {}", self.size);
        }
        self.submit(&format!("broadcast of {} from rank {root}", buf.describe()), move || {
            let (dt, count) = datatype(buf.dtype(), buf.len(), false)?;
            let unit = buf.bytes().len() / count.max(1);
            let mut buf = buf;
            let base = buf.bytes_mut()?.as_mut_ptr();
            for (at, n) in pieces(count) {
                // SAFETY: the buffer holds `count` units of `dt`.
                unsafe { ffi::MPI_Bcast(base.add(at * unit).cast(), n, dt, root as c_int, ffi::RSMPI_COMM_WORLD) };
            }
            Ok(buf)
        })?
        .wait()
    }
    fn all_gather(&self, buf: Buffer) -> Result<Buffer> {
        let (_, count) = datatype(buf.dtype(), buf.len(), false)?;
        if count > c_int::MAX as usize {
            bail!(invalid, "all_gather of {} elements per rank (at most {})", buf.len(), c_int::MAX);
        }
        let size = self.size;
        self.submit(&format!("all_gather of {}", buf.describe()), move || {
            let (dt, count) = datatype(buf.dtype(), buf.len(), false)?;
            let mut out = Buffer::new(buf.dtype(), buf.len() * size)?;
            let dst = out.bytes_mut()?.as_mut_ptr();
            // SAFETY: `out` holds `size` times the input.
            unsafe {
                ffi::MPI_Allgather(
                    buf.bytes().as_ptr().cast(),
                    count as c_int,
                    dt,
                    dst.cast(),
                    count as c_int,
                    dt,
                    ffi::RSMPI_COMM_WORLD,
                )
            };
            Ok(out)
        })?
        .wait()
    }
    fn reduce_scatter(&self, buf: Buffer, op: Reduction) -> Result<Buffer> {
        let (_, count) = datatype(buf.dtype(), buf.len(), true)?;
        if !count.is_multiple_of(self.size) {
            bail!(invalid, "reduce_scatter of {} elements over {} ranks (must divide evenly)", buf.len(), self.size);
        }
        let part = count / self.size;
        if part > c_int::MAX as usize {
            bail!(invalid, "reduce_scatter of {part} elements per rank (at most {})", c_int::MAX);
        }
        self.submit(&format!("reduce_scatter {} of {}", op.name(), buf.describe()), move || {
            let (dt, _) = datatype(buf.dtype(), buf.len(), true)?;
            let mut out = Buffer::new(buf.dtype(), part)?;
            let mop = mpi_op(buf.dtype(), op);
            let dst = out.bytes_mut()?.as_mut_ptr();
            // SAFETY: the input holds `size * part` elements, the output `part`.
            unsafe {
                ffi::MPI_Reduce_scatter_block(
                    buf.bytes().as_ptr().cast(),
                    dst.cast(),
                    part as c_int,
                    dt,
                    mop,
                    ffi::RSMPI_COMM_WORLD,
                )
            };
            Ok(out)
        })?
        .wait()
    }
    fn barrier(&self) -> Result<()> {
        self.submit("barrier", || {
            // SAFETY: MPI is initialized.
            unsafe { ffi::MPI_Barrier(ffi::RSMPI_COMM_WORLD) };
            Buffer::new(DType::U8, 0)
        })?
        .wait()
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapped_collectives_poll_gently_only_where_a_core_is_free() {
        // B5 at -np 2 on two cores, two compute threads each: saturated.
        assert_eq!(poll_interval_for(2, 2, 2), SATURATED_POLL);
        assert_eq!(poll_interval_for(1, 2, 2), SATURATED_POLL);
        assert_eq!(poll_interval_for(4, 1, 2), SATURATED_POLL);
        assert_eq!(poll_interval_for(2, 1, 2), SATURATED_POLL);
        // One rank of one thread on two cores, or two of four on sixteen.
        assert_eq!(poll_interval_for(1, 1, 2), GENTLE_POLL);
        assert_eq!(poll_interval_for(2, 4, 16), GENTLE_POLL);
        // Nonsense counts (no rank, no thread) count as one.
        assert_eq!(poll_interval_for(0, 0, 2), GENTLE_POLL);
        assert_eq!(poll_interval_for(usize::MAX, usize::MAX, 2), SATURATED_POLL);
    }

    #[test]
    fn the_ring_is_chosen_only_on_open_mpi_from_4_1_3() {
        let line = |v: &str| format!("Open MPI {v}, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4");
        assert!(open_mpi_with_a_sound_ring(&line("v4.1.4")));
        assert!(open_mpi_with_a_sound_ring(&line("v4.1.3")));
        assert!(open_mpi_with_a_sound_ring(&line("v5.0.7")));
        assert!(!open_mpi_with_a_sound_ring(&line("v4.1.2")));
        assert!(!open_mpi_with_a_sound_ring(&line("v4.0.7")));
        assert!(!open_mpi_with_a_sound_ring(&line("vx")));
        assert!(!open_mpi_with_a_sound_ring("MPICH Version:      4.2.0"));
        assert!(!open_mpi_with_a_sound_ring(""));
    }
}
