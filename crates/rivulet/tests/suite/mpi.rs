//! Multi-worker training under `mpirun -np 2` and `-np 4` on this machine
//! (the `examples/mpi_checks.rs` program): collectives, training equal to
//! one process, the broadcast of initial weights, sharding, and faults (a
//! worker killed or hung mid-training ends the job; training resumes from
//! the checkpoint on another number of workers).
//!
//! They need the `mpi` feature and Open MPI's `mpirun`; without them they
//! pass saying so, unless `RIVULET_REQUIRE_MPI=1` (CI) makes that a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `mpirun`, or `None` (and why) where these tests cannot run.
fn mpirun() -> Option<PathBuf> {
    let why = if !cfg!(feature = "mpi") {
        "this build has no `mpi` feature"
    } else {
        match std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("mpirun")).find(|p| p.is_file()))
        {
            Some(p) => return Some(p),
            None => "mpirun is not on PATH (install openmpi-bin)",
        }
    };
    if std::env::var("RIVULET_REQUIRE_MPI").is_ok_and(|v| v == "1") {
        panic!("RIVULET_REQUIRE_MPI=1 but {why}");
    }
    eprintln!("skipped: {why}; the MPI tests did not run");
    None
}

/// The example program, built by `cargo test` beside this test binary.
fn program() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    profile_dir.join("examples").join(format!("mpi_checks{}", std::env::consts::EXE_SUFFIX))
}

/// `mpirun -np N mpi_checks ARGS`, started (stdout and stderr piped).
fn launch(mpirun: &PathBuf, np: usize, args: &[&str], timeout_secs: f64) -> Child {
    let mut cmd = Command::new(mpirun);
    cmd.args(["-np", &np.to_string(), "--oversubscribe", "--bind-to", "none"])
        // Containers forbid the cross-memory-attach copy; shared memory still works.
        .args(["--mca", "btl_vader_single_copy_mechanism", "none"])
        .args(["-x", "RIVULET_COLLECTIVE_TIMEOUT", "-x", "RAYON_NUM_THREADS"])
        .env("RIVULET_COLLECTIVE_TIMEOUT", timeout_secs.to_string())
        .env("RAYON_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .arg(program())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", mpirun.display()))
}

/// Lines of a child's stdout and stderr as they come (`true`: stderr).
fn lines(child: &mut Child) -> mpsc::Receiver<(bool, String)> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let t2 = tx.clone();
    std::thread::spawn(move || {
        BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send((false, l))))
    });
    std::thread::spawn(move || {
        BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(t2.send((true, l))))
    });
    rx
}

/// Run to the end within `limit`: (success, stdout, stderr, seconds).
fn run(mpirun: &PathBuf, np: usize, args: &[&str], limit: Duration) -> (bool, String, String, f64) {
    let start = Instant::now();
    let mut child = launch(mpirun, np, args, 60.0);
    let rx = lines(&mut child);
    let status = wait(&mut child, limit);
    let (mut out, mut err) = (String::new(), String::new());
    while let Ok((is_err, l)) = rx.recv_timeout(Duration::from_millis(500)) {
        let s = if is_err { &mut err } else { &mut out };
        s.push_str(&l);
        s.push('\n');
    }
    (status, out, err, start.elapsed().as_secs_f64())
}

/// Wait for the child within `limit` (killing it and failing the test after).
fn wait(child: &mut Child, limit: Duration) -> bool {
    wait_for(child, limit).unwrap_or_else(|| panic!("mpirun still running after {limit:?}: a job that hangs"))
}

/// The child's success, or `None` (and the child killed) past `limit`.
fn wait_for(child: &mut Child, limit: Duration) -> Option<bool> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.success());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rivulet-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn collectives_under_mpirun_np2_and_np4() {
    let Some(mpirun) = mpirun() else { return };
    for np in [2, 4] {
        let (ok, out, err, _) = run(&mpirun, np, &["collectives"], Duration::from_secs(240));
        assert!(ok, "np {np}:\n{out}\n{err}");
        assert_eq!(out.matches("collectives OK").count(), np, "{out}\n{err}");
    }
}

#[test]
fn four_workers_train_like_one_process_and_agree_bit_for_bit() {
    let Some(mpirun) = mpirun() else { return };
    let dir = temp_dir("train");
    let weights = |prefix: &PathBuf, rank: usize| -> Vec<f32> {
        let bytes = std::fs::read(format!("{}.rank{rank}", prefix.display())).unwrap();
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    for mode in ["graph", "eager"] {
        let one = dir.join(format!("one-{mode}"));
        let (ok, out, err, _) =
            run(&mpirun, 1, &["train", "12", one.to_str().unwrap(), mode], Duration::from_secs(240));
        assert!(ok, "{out}\n{err}");
        let reference = weights(&one, 0);
        let nps: &[usize] = if mode == "graph" { &[2, 4] } else { &[2] };
        for &np in nps {
            let many = dir.join(format!("np{np}-{mode}"));
            let (ok, out, err, _) =
                run(&mpirun, np, &["train", "12", many.to_str().unwrap(), mode], Duration::from_secs(240));
            assert!(ok, "np {np} {mode}:\n{out}\n{err}");
            let w0 = weights(&many, 0);
            for r in 1..np {
                let wr = weights(&many, r);
                assert!(
                    w0.iter().zip(&wr).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "np {np} {mode}: rank {r}'s weights differ from rank 0's"
                );
            }
            let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = w0.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-6 * scale, "np {np} {mode}: off by {worst} (scale {scale}) from one process");
            assert_eq!(w0.len(), reference.len());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sharded_dataset_covers_every_element_once_over_four_workers() {
    let Some(mpirun) = mpirun() else { return };
    let (ok, out, err, _) = run(&mpirun, 4, &["shard"], Duration::from_secs(120));
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.matches("shard OK").count(), 4, "{out}");
}

/// Start a checkpointed run on `np` workers, wait for rank 0's epoch
/// `after`, then do `fault` to worker `victim`; the job must end, with an
/// error, within `limit`. Returns its output and the losses printed.
fn fault_run(
    mpirun: &PathBuf,
    dir: &str,
    np: usize,
    victim: usize,
    signal: &str,
    after: usize,
    limit: Duration,
) -> (String, Vec<f64>) {
    let mut child = launch(mpirun, np, &["resume", dir, "1000"], 3.0);
    let rx = lines(&mut child);
    let (mut log, mut pids, mut losses) = (String::new(), vec![0u32; np], Vec::new());
    let deadline = Instant::now() + Duration::from_secs(240);
    while losses.len() < after {
        let (_, l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no epoch {after} within 240 s:\n{log}")
        });
        if let Some(rest) = l.strip_prefix("rank ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(r), Some(p)) = (parts.first().and_then(|r| r.parse::<usize>().ok()), parts.last()) {
                pids[r] = p.parse().unwrap_or(0);
            }
        }
        if let Some(loss) = l.strip_prefix("epoch ").and_then(|r| r.split_whitespace().nth(2)) {
            losses.push(loss.parse::<f64>().unwrap());
        }
        log.push_str(&l);
        log.push('\n');
    }
    assert!(pids[victim] > 0, "no pid for rank {victim}:\n{log}");
    let killed = Instant::now();
    let st = Command::new("kill").args([signal, &pids[victim].to_string()]).status().unwrap();
    assert!(st.success());
    let outcome = wait_for(&mut child, limit);
    let elapsed = killed.elapsed();
    // A stopped worker that mpirun did not end is ended here.
    let _ = Command::new("kill").args(["-KILL", &pids[victim].to_string()]).status();
    let ok = outcome
        .unwrap_or_else(|| panic!("the job did not end within {limit:?} after {signal} to rank {victim}:\n{log}"));
    while let Ok((_, l)) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push_str(&l);
        log.push('\n');
    }
    eprintln!(
        "np {np}: the job ended {:.2} s after {signal} to rank {victim}; {} rank(s) reported a timeout",
        elapsed.as_secs_f64(),
        log.matches("did not complete within").count()
    );
    assert!(!ok, "the job succeeded although rank {victim} got {signal}:\n{log}");
    assert!(elapsed < limit, "the job took {elapsed:?} to end");
    (log, losses)
}

#[test]
fn a_killed_worker_ends_the_job_and_training_resumes_on_fewer_workers() {
    let Some(mpirun) = mpirun() else { return };
    let dir = temp_dir("kill");
    let d = dir.to_str().unwrap();
    let (log, losses) = fault_run(&mpirun, d, 4, 2, "-KILL", 3, Duration::from_secs(60));
    assert!(log.contains("rank 2") || log.contains("signal 9") || log.contains("Killed"), "{log}");
    // Restart on 2 workers from the latest checkpoint: the loss curve goes on.
    let (ok, out, err, _) = run(&mpirun, 2, &["resume", d, "9"], Duration::from_secs(240));
    assert!(ok, "{out}\n{err}");
    let resumed: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("resumed from epoch ").and_then(|r| r.split_whitespace().next()?.parse().ok()))
        .unwrap_or_else(|| panic!("no resume:\n{out}"));
    assert!(resumed >= 3, "resumed from epoch {resumed}, but epoch 3 had been saved:\n{out}");
    let after: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("epoch ").and_then(|r| r.split_whitespace().nth(2)?.parse().ok()))
        .collect();
    assert!(!after.is_empty(), "{out}");
    // Lower than the first epochs' loss, and no jump back up from where it stopped.
    assert!(after[0] < losses[0], "resumed loss {} vs first epoch {}", after[0], losses[0]);
    assert!(after[0] <= losses[losses.len() - 1] * 1.05, "resumed loss {} after {:?}", after[0], losses);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hung_worker_ends_the_job_with_a_timeout_error_on_the_others() {
    let Some(mpirun) = mpirun() else { return };
    let dir = temp_dir("hang");
    let (log, _) = fault_run(&mpirun, dir.to_str().unwrap(), 3, 1, "-STOP", 2, Duration::from_secs(60));
    assert!(log.contains("did not complete within 3.0 s"), "no timeout error:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
