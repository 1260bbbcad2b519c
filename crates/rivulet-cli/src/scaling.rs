//! `rivulet scaling`, run under `mpirun -np N`: what docs/SCALING.md's
//! cost model is fitted to and checked against.
//!
//! 1. All-reduce latency and bandwidth over message sizes: Rivulet's
//!    all-reduce op (a tensor in, a tensor out, through the communication
//!    thread) beside a plain `MPI_Allreduce` of the same buffer.
//! 2. The gradient all-reduce of a 100 MB f32 buffer: the bucketed
//!    all-reduce a training step uses, run in a session.
//! 3. The B5 training step (784-512-512-10, Adam, global batch 128 split
//!    over the workers) with the bucket all-reduce overlapped with the
//!    backward pass, without overlap, and with bf16 compression, in
//!    alternating blocks of steps.
//!
//! Rank 0 prints the figures (medians); `--json` prints one JSON object per
//! measurement.

use rivulet::collective::{plain_mpi_all_reduce_f32, Group, Reduction};
use rivulet::distribute::{MultiWorkerMirroredStrategy, Strategy};
use rivulet::nn::{losses::sparse_softmax_cross_entropy, Initializer, Optimizer};
use rivulet::ops::collective::{all_reduce, all_reduce_bucketed, BucketOptions};
use rivulet::{gradients, ops, Ctx, DType, Graph, Result, Session, Tensor, Unconnected, Variable};
use serde_json::json;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len();
    if m == 0 {
        f64::NAN
    } else if m % 2 == 1 {
        v[m / 2]
    } else {
        0.5 * (v[m / 2 - 1] + v[m / 2])
    }
}

struct Report {
    chief: bool,
    json: bool,
    workers: usize,
}

impl Report {
    fn row(&self, id: &str, param: &str, ours_ms: f64, extra: serde_json::Value, line: String) {
        if !self.chief {
            return;
        }
        if self.json {
            let mut o = json!({"peer": "rivulet", "mode": "mpi", "id": id, "param": param, "np": self.workers,
                               "median_ms": ours_ms});
            if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            println!("{o}");
        } else {
            println!("{line}");
        }
    }
}

pub fn run(json: bool, max_mb: usize, steps: usize) -> Result<()> {
    if !(1..=4096).contains(&max_mb) {
        return Err(rivulet::Error::new(
            rivulet::ErrorKind::InvalidArgument,
            format!("--max-mb must be 1 to 4096, got {max_mb}"),
        ));
    }
    let strategy = MultiWorkerMirroredStrategy::new()?;
    let group = strategy.group().cloned().unwrap_or_else(Group::single);
    let r = Report { chief: strategy.is_chief(), json, workers: strategy.num_workers() };
    if r.chief && !json {
        println!("{} worker(s); {}", r.workers, group.communicator().describe());
        println!("all-reduce (sum, f32): Rivulet's op beside a plain MPI_Allreduce of the same buffer");
        println!("{:>12} {:>12} {:>12} {:>7} {:>12}", "bytes", "rivulet ms", "MPI ms", "ratio", "busbw GB/s");
    }
    let mut sizes: Vec<usize> = vec![4, 64, 1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
    sizes.push(max_mb << 20);
    sizes.retain(|&b| b <= max_mb << 20);
    sizes.dedup();
    for bytes in sizes {
        let n = bytes / 4;
        let reps = if bytes >= 16 << 20 {
            8
        } else if bytes >= 1 << 20 {
            30
        } else {
            300
        };
        let t = Tensor::from_vec(vec![1.0f32 + group.rank() as f32; n], [n])?;
        let mut ours = Vec::new();
        for i in 0..reps + 2 {
            group.barrier()?;
            let start = Instant::now();
            let out = all_reduce(&t, &group, Reduction::Sum)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            drop(out);
            if i >= 2 {
                ours.push(ms);
            }
        }
        let plain = if r.workers > 1 {
            let times = plain_mpi_all_reduce_f32(n, reps + 2)?;
            median(times[2..].iter().map(|s| s * 1e3).collect())
        } else {
            f64::NAN
        };
        let ours = median(ours);
        let w = r.workers as f64;
        let busbw = bytes as f64 * 2.0 * (w - 1.0) / w / (ours * 1e-3) / 1e9;
        r.row(
            "allreduce",
            &format!("{bytes} bytes f32 sum"),
            ours,
            json!({"mpi_ms": plain, "ratio": ours / plain, "busbw_gbs": busbw}),
            format!("{bytes:>12} {ours:>12.4} {plain:>12.4} {:>7.3} {busbw:>12.3}", ours / plain),
        );
    }
    gradient_all_reduce(&r, &group, max_mb)?;
    b5(&r, &strategy, steps)?;
    drop(strategy);
    drop(group);
    rivulet::distribute::shutdown();
    Ok(())
}

/// The gradient all-reduce of a `mb` MB f32 buffer as a training step runs
/// it: a bucketed all-reduce (start, then wait) in a session, the gradient
/// fed, the result fetched.
fn gradient_all_reduce(r: &Report, group: &Group, mb: usize) -> Result<()> {
    if r.workers < 2 {
        return Ok(());
    }
    let n = (mb << 20) / 4;
    let g = Graph::new();
    let px = g.placeholder("gradient", DType::F32, [Some(n)])?;
    let reduced = all_reduce_bucketed(std::slice::from_ref(&px), group, Reduction::Sum, &BucketOptions::default())?;
    let s = Session::new(&g);
    let grad = Tensor::from_vec(vec![0.5f32 + group.rank() as f32; n], [n])?;
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    // Alternating, so that both see the same machine.
    for i in 0..12 {
        group.barrier()?;
        let start = Instant::now();
        let out = s.run(&[&reduced[0]], &[(&px, &grad)])?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(out);
        let secs = plain_mpi_all_reduce_f32(n, 1)?;
        if i >= 2 {
            ours.push(ms);
            plain.extend(secs.iter().map(|s| s * 1e3));
        }
    }
    let (ours, plain) = (median(ours), median(plain));
    r.row(
        "gradient_allreduce",
        &format!("{mb} MB f32, bucketed, in a session"),
        ours,
        json!({"mpi_ms": plain, "ratio": ours / plain}),
        format!(
            "gradient all-reduce of {mb} MB f32 (bucketed, in a session): {ours:.2} ms; plain MPI_Allreduce {plain:.2} ms; ratio {:.3}",
            ours / plain
        ),
    );
    Ok(())
}

/// A B5 training step on this worker's share of a global batch of 128,
/// its gradients reduced over the workers with `buckets`.
struct B5Step {
    session: Session,
    x: Tensor,
    y: Tensor,
    loss: Tensor,
    train: rivulet::Operation,
}

fn b5_step(strategy: &Strategy, buckets: BucketOptions) -> Result<B5Step> {
    let st = strategy.with_bucket_options(buckets);
    let local = 128 / st.num_workers().max(1);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [local, 784])?;
    let y = g.placeholder("y", DType::I32, [local])?;
    let sizes = [(784usize, 512usize), (512, 512), (512, 10)];
    let mut vars = Vec::new();
    for (i, &(a, b)) in sizes.iter().enumerate() {
        // The same seeds on every worker: the same initial weights.
        let k = Initializer::GlorotUniform.init(Ctx::Eager, [a, b], DType::F32, Some(50 + i as u64))?;
        vars.push(Variable::in_graph(&g, &format!("k{i}"), &k, true)?);
        vars.push(Variable::in_graph(&g, &format!("b{i}"), &Tensor::zeros([b], DType::F32)?, true)?);
    }
    let p: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
    let refs: Vec<&Tensor> = p.iter().collect();
    // This worker's mean loss times its share of the global batch.
    let share = local as f64 / 128.0;
    let loss = ops::mul(&sparse_softmax_cross_entropy(&y, &crate::bench::b5_forward(&x, &p)?)?, share)?;
    let grads: Vec<Tensor> = gradients(&[&loss], &refs, None, Unconnected::Zero)?
        .into_iter()
        .map(|g| g.ok_or_else(|| rivulet::Error::new(rivulet::ErrorKind::Graph, "B5: a parameter without a gradient")))
        .collect::<Result<_>>()?;
    let grads = st.reduce_gradients(&grads)?;
    let opt = Optimizer::adam_with(1e-3, 0.9, 0.999, 1e-8);
    // Last layer first, the order the buckets come back in.
    let pairs: Vec<(Tensor, &Variable)> = grads.into_iter().zip(&vars).rev().collect();
    let train =
        opt.apply_gradients(&pairs)?.ok_or_else(|| rivulet::Error::new(rivulet::ErrorKind::Graph, "no train op"))?;
    let session = Session::new(&g);
    session.run_targets(&[&g.global_variables_initializer()?])?;
    Ok(B5Step { session, x, y, loss, train })
}

/// B5 at this world size: overlap, no overlap and bf16 compression, in
/// alternating blocks of `steps` steps after 20 warm-up steps each.
fn b5(r: &Report, strategy: &Strategy, steps: usize) -> Result<()> {
    let local = 128 / strategy.num_workers().max(1);
    let rank = strategy.worker_index() as u64;
    let batches: Vec<(Tensor, Tensor)> = (0..8u64)
        .map(|i| {
            let x = ops::random_normal(Ctx::Eager, [local, 784], 0.0, 1.0, DType::F32, Some(51 + i + 100 * rank))?;
            let y = ops::random_uniform_int(Ctx::Eager, [local], 0, 10, DType::I32, Some(151 + i + 100 * rank))?;
            Ok((x, y))
        })
        .collect::<Result<_>>()?;
    let variants = [
        ("overlap", BucketOptions::default()),
        ("no overlap", BucketOptions { overlap: false, ..BucketOptions::default() }),
        ("overlap, bf16", BucketOptions { compression: Some(DType::BF16), ..BucketOptions::default() }),
    ];
    let steps_of: Vec<B5Step> = variants.iter().map(|(_, b)| b5_step(strategy, b.clone())).collect::<Result<_>>()?;
    let run = |s: &B5Step, i: usize| -> Result<f64> {
        let (x, y) = &batches[i % batches.len()];
        let start = Instant::now();
        s.session.run_with_targets(&[&s.loss], &[(&s.x, x), (&s.y, y)], &[&s.train])?[0].to_scalar::<f32>()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    for s in &steps_of {
        for i in 0..20 {
            run(s, i)?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _round in 0..5 {
        for (k, s) in steps_of.iter().enumerate() {
            strategy.barrier()?;
            for i in 0..steps {
                times[k].push(run(s, i)?);
            }
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    for ((name, _), m) in variants.iter().zip(&medians) {
        let param = format!("784-512-512-10, global batch 128, Adam, np {}, {name}", r.workers);
        r.row("B5", &param, *m, json!({}), format!("B5 step, np {}, {name}: {m:.3} ms", r.workers));
    }
    if r.chief && !r.json && r.workers > 1 {
        println!("B5 overlap / no overlap: {:.3}", medians[0] / medians[1]);
    }
    Ok(())
}
