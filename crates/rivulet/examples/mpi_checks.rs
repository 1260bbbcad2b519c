//! Multi-worker checks, run under `mpirun` by `tests/mpi.rs` (and by hand):
//!
//! ```sh
//! mpirun -np 4 target/debug/examples/mpi_checks collectives
//! mpirun -np 4 target/debug/examples/mpi_checks train STEPS OUT_PREFIX graph|eager
//! mpirun -np 4 target/debug/examples/mpi_checks shard
//! mpirun -np 4 target/debug/examples/mpi_checks resume CHECKPOINT_DIR EPOCHS
//! ```
//!
//! Without `mpirun` (or without the `mpi` feature) each runs as a world of
//! one. Every failed check prints what differed and exits with status 1.

use rivulet::collective::Reduction;
use rivulet::data::{load_digits, Dataset};
use rivulet::distribute::{MultiWorkerMirroredStrategy, Strategy};
use rivulet::io::CheckpointManager;
use rivulet::nn::{
    Activation, Dense, ExecutionMode, FitOptions, Layer, Loss, Metric, Optimizer, Sequential, Verbosity,
};
use rivulet::ops::collective::{self as coll, BucketOptions};
use rivulet::{ops, DType, Error, ErrorKind, Graph, Result, Session, Tensor};

fn fail(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(fail(what()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = (|| -> Result<()> {
        let strategy = MultiWorkerMirroredStrategy::new()?;
        println!("rank {} of {} pid {}", strategy.worker_index(), strategy.num_workers(), std::process::id());
        match args.first().map(String::as_str) {
            Some("collectives") => collectives(&strategy),
            Some("train") => train(&strategy, &args[1..]),
            Some("shard") => shard(&strategy),
            Some("resume") => resume(&strategy, &args[1..]),
            _ => Err(fail(
                "usage: mpi_checks collectives | train STEPS OUT graph|eager | shard | resume DIR EPOCHS".into(),
            )),
        }
    })();
    match result {
        Ok(()) => rivulet::distribute::shutdown(),
        Err(e) => {
            eprintln!("mpi_checks: error: {e}");
            std::process::exit(1);
        }
    }
}

/// Every collective, eagerly and in a graph, against values computed here.
fn collectives(strategy: &Strategy) -> Result<()> {
    let Some(group) = strategy.group() else { return Err(fail("no group".into())) };
    let (r, w) = (group.rank() as i64, group.size() as i64);
    // Integers: exact, also beyond f64's 2^53.
    let big: Vec<i64> = (0..1000).map(|i| (1i64 << 58) + r * 1_000_003 + i).collect();
    let got = coll::all_reduce(&Tensor::from(big), group, Reduction::Sum)?.to_vec::<i64>()?;
    for (i, g) in got.iter().enumerate() {
        let want: i64 = (0..w).map(|q| (1i64 << 58) + q * 1_000_003 + i as i64).sum();
        check(*g == want, || format!("i64 sum [{i}]: {g} != {want}"))?;
    }
    let ints: Vec<i32> = (0..257).map(|i| (i * 7 + r as i32 * 13) % 101 - 50).collect();
    let t = Tensor::from(ints);
    for (red, f) in [(Reduction::Sum, 0), (Reduction::Max, 1), (Reduction::Min, 2)] {
        let got = coll::all_reduce(&t, group, red)?.to_vec::<i32>()?;
        for (i, g) in got.iter().enumerate() {
            let vals = (0..w as i32).map(|q| (i as i32 * 7 + q * 13) % 101 - 50);
            let want = match f {
                0 => vals.sum(),
                1 => vals.max().unwrap_or(0),
                _ => vals.min().unwrap_or(0),
            };
            check(*g == want, || format!("i32 {red:?} [{i}]: {g} != {want}"))?;
        }
    }
    // Floats: the mean against a float64 reference.
    let xs: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37 + r as f32).sin()).collect();
    let mean = coll::all_reduce(&Tensor::from(xs), group, Reduction::Mean)?.to_vec::<f32>()?;
    for (i, m) in mean.iter().enumerate() {
        let want = (0..w).map(|q| ((i as f32) * 0.37 + q as f32).sin() as f64).sum::<f64>() / w as f64;
        check((*m as f64 - want).abs() < 1e-6, || format!("f32 mean [{i}]: {m} vs {want}"))?;
    }
    // Broadcast from the last rank, all-gather, reduce-scatter, barrier.
    let mine = Tensor::from_vec(vec![r as f32; 6], [2, 3])?;
    let b = coll::broadcast(&mine, group, (w - 1) as usize)?.to_vec::<f32>()?;
    check(b.iter().all(|&v| v == (w - 1) as f32), || format!("broadcast gave {b:?}"))?;
    let gathered = coll::all_gather(&mine, group)?;
    check(gathered.shape().dims() == [2 * w as usize, 3], || format!("all_gather shape {}", gathered.shape()))?;
    let gv = gathered.to_vec::<f32>()?;
    check((0..gv.len()).all(|i| gv[i] == (i / 6) as f32), || format!("all_gather gave {gv:?}"))?;
    let parts: Vec<f32> = (0..2 * w * 3).map(|i| (i + r) as f32).collect();
    let rs = coll::reduce_scatter(&Tensor::from_vec(parts, [2 * w as usize, 3])?, group, Reduction::Sum)?;
    check(rs.shape().dims() == [2, 3], || format!("reduce_scatter shape {}", rs.shape()))?;
    for (j, v) in rs.to_vec::<f32>()?.iter().enumerate() {
        let i = r * 6 + j as i64;
        let want: i64 = (0..w).map(|q| i + q).sum();
        check(*v == want as f32, || format!("reduce_scatter [{j}]: {v} != {want}"))?;
    }
    coll::barrier(&Tensor::scalar(0f32), group)?;
    // In a graph run by a session: the same collective, the same result.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [Some(3)])?;
    let y = coll::all_reduce(&ops::mul(&x, 2.0)?, group, Reduction::Sum)?;
    let out = Session::new(&g).run(&[&y], &[(&x, &Tensor::from(vec![r as f64, 1.0, -1.0]))])?;
    let want = [(0..w).map(|q| 2.0 * q as f64).sum::<f64>(), 2.0 * w as f64, -2.0 * w as f64];
    check(out[0].to_vec::<f64>()? == want, || format!("graph all_reduce gave {:?}", out[0].to_vec::<f64>()))?;
    // A gradient through the all-reduce: d/dx sum(all_reduce(c x)) = c * size.
    let c = (r + 1) as f64;
    let xv = rivulet::Variable::new("x", &Tensor::from(vec![1.0f64, 2.0]), true)?;
    let tape = rivulet::GradientTape::new();
    let loss = ops::sum(&coll::all_reduce(&ops::mul(&xv.read(), c)?, group, Reduction::Sum)?, ops::Axes::All, false)?;
    let grad = tape.gradient_vars(&loss, &[&xv])?.remove(0).ok_or_else(|| fail("no gradient".into()))?;
    check(grad.to_vec::<f64>()? == vec![c * w as f64; 2], || format!("gradient {:?}", grad.to_vec::<f64>()))?;
    drop(tape);
    // Bucketed (overlapped, blocking, compressed) against one all-reduce per tensor.
    let tensors: Vec<Tensor> = (0..7)
        .map(|k| {
            Tensor::from_vec(
                (0..(k * 97 + 5)).map(|i| ((i + k) as f32 * 0.01 + r as f32).cos()).collect(),
                [k * 97 + 5],
            )
        })
        .collect::<Result<_>>()?;
    let plain: Vec<Vec<f32>> =
        tensors.iter().map(|t| coll::all_reduce(t, group, Reduction::Sum)?.to_vec::<f32>()).collect::<Result<_>>()?;
    for (overlap, compression, tol) in [(true, None, 0.0), (false, None, 0.0), (true, Some(DType::BF16), 0.05)] {
        let opts = BucketOptions { bucket_bytes: 1024, first_bucket_bytes: 100, compression, overlap };
        let got = coll::all_reduce_bucketed(&tensors, group, Reduction::Sum, &opts)?;
        for (k, (gt, pl)) in got.iter().zip(&plain).enumerate() {
            let gv = gt.to_vec::<f32>()?;
            let worst = gv.iter().zip(pl).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            check(worst <= tol * w as f32, || {
                format!("bucketed {overlap} {compression:?} tensor {k}: off by {worst}")
            })?;
        }
    }
    println!("collectives OK on rank {r} of {w}");
    Ok(())
}

/// The digits MLP trained on `steps` global batches of 32 with SGD; each
/// rank writes its weights (f32 little-endian) to `OUT.rank<r>`. Each rank
/// initializes from its own seed, so the equal results also check the
/// broadcast of the initial weights.
fn train(strategy: &Strategy, args: &[String]) -> Result<()> {
    let steps: usize = args.first().and_then(|s| s.parse().ok()).ok_or_else(|| fail("train STEPS OUT MODE".into()))?;
    let out = args.get(1).ok_or_else(|| fail("train STEPS OUT MODE".into()))?;
    let mode =
        if args.get(2).map(String::as_str) == Some("eager") { ExecutionMode::Eager } else { ExecutionMode::Graph };
    let rank = strategy.worker_index();
    let d = load_digits()?;
    let n = (steps * 32) as i64;
    let idx = Tensor::from((0..n).collect::<Vec<i64>>());
    let (x, y) = (ops::gather(&d.train_x, &idx, 0, 0)?, ops::gather(&d.train_y, &idx, 0, 0)?);
    let model = |seed: u64, distributed: bool| -> Result<Sequential> {
        rivulet::set_random_seed(seed);
        let mut m = Sequential::new(vec![
            Box::new(Dense::new(32, Activation::Relu)) as Box<dyn Layer>,
            Box::new(Dense::new(10, Activation::Linear)),
        ]);
        m.compile(Optimizer::sgd(0.1), Loss::SparseCategoricalCrossentropy { from_logits: true }, &[], mode);
        if distributed {
            m.distribute(strategy)?;
        }
        m.build(&x, &y)?;
        Ok(m)
    };
    let weights = |m: &Sequential| -> Result<Vec<f32>> {
        let mut all = Vec::new();
        for (_, t) in m.get_weights()? {
            all.extend(t.to_vec::<f32>()?);
        }
        Ok(all)
    };
    let m = model(100 + rank as u64, true)?;
    // The broadcast: rank 0's initial weights everywhere, not this rank's own.
    let start = weights(&m)?;
    let own = weights(&model(100 + rank as u64, false)?)?;
    let group = strategy.group().ok_or_else(|| fail("no group".into()))?;
    let chief = coll::broadcast(&Tensor::from(start.clone()), group, 0)?.to_vec::<f32>()?;
    check(start == chief, || format!("rank {rank}: initial weights differ from rank 0's"))?;
    check(rank == 0 || start != own, || {
        format!("rank {rank}: its own seed gave rank 0's weights; the check proves nothing")
    })?;
    let opts =
        FitOptions { epochs: 1, batch_size: 32, shuffle: false, verbose: Verbosity::Silent, ..FitOptions::default() };
    let history = m.fit(&x, &y, &opts)?;
    let bytes: Vec<u8> = weights(&m)?.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(format!("{out}.rank{rank}"), bytes).map_err(Error::from)?;
    println!("rank {rank}: trained {steps} steps, loss {:.6}", history.last("loss").unwrap_or(f64::NAN));
    Ok(())
}

/// A dataset of 103 elements sharded over the workers: together they see
/// each element exactly once.
fn shard(strategy: &Strategy) -> Result<()> {
    let Some(group) = strategy.group() else { return Err(fail("no group".into())) };
    let w = group.size();
    let mine: Vec<i64> = strategy
        .distribute_dataset(&Dataset::range(0, 103, 1)?)?
        .collect()?
        .iter()
        .map(|e| e.tensor(0)?.to_scalar::<i64>())
        .collect::<Result<_>>()?;
    let mut padded = mine.clone();
    padded.resize(103usize.div_ceil(w), -1);
    let all = coll::all_gather(&Tensor::from(padded), group)?.to_vec::<i64>()?;
    let mut seen = vec![0usize; 103];
    for v in all.into_iter().filter(|&v| v >= 0) {
        seen[v as usize] += 1;
    }
    check(seen.iter().all(|&c| c == 1), || format!("elements seen {seen:?}"))?;
    println!("shard OK on rank {}: {} elements here, 103 over {w} workers, each once", group.rank(), mine.len());
    Ok(())
}

/// Train the digits MLP for `EPOCHS` epochs with a checkpoint after each
/// (rank 0 writes it), starting from the latest checkpoint in `DIR` if
/// there is one. Rank 0 prints `epoch E loss L` after each epoch.
fn resume(strategy: &Strategy, args: &[String]) -> Result<()> {
    let dir = args.first().ok_or_else(|| fail("resume DIR EPOCHS".into()))?;
    let epochs: usize = args.get(1).and_then(|s| s.parse().ok()).ok_or_else(|| fail("resume DIR EPOCHS".into()))?;
    let d = load_digits()?;
    rivulet::set_random_seed(7 + strategy.worker_index() as u64);
    let mut m = Sequential::new(vec![
        Box::new(Dense::new(64, Activation::Relu)) as Box<dyn Layer>,
        Box::new(Dense::new(10, Activation::Linear)),
    ]);
    m.compile(
        Optimizer::adam(1e-3),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        ExecutionMode::Graph,
    );
    m.distribute(strategy)?;
    m.build(&d.train_x, &d.train_y)?;
    let manager = CheckpointManager::new(dir, 3);
    let mut first = 0;
    if let Some(data) = manager.restore_latest()? {
        first = m.restore(&data)? as usize;
        if strategy.is_chief() {
            println!("resumed from epoch {first} on {} workers", strategy.num_workers());
        }
    }
    for epoch in first..epochs {
        let opts = FitOptions {
            epochs: epoch + 1,
            initial_epoch: epoch,
            batch_size: 32,
            seed: 3,
            verbose: Verbosity::Silent,
            ..FitOptions::default()
        };
        let h = m.fit(&d.train_x, &d.train_y, &opts)?;
        if strategy.is_chief() {
            manager.save(epoch as u64 + 1, &m.checkpoint(epoch as u64 + 1)?)?;
            println!("epoch {} loss {:.6}", epoch + 1, h.last("loss").unwrap_or(f64::NAN));
        }
    }
    Ok(())
}
