//! Collectives and distribution strategies with workers as threads of this
//! process (a `LocalGroup`): the logic every communicator shares, checked
//! without MPI. `tests/suite/mpi.rs` runs the same under `mpirun`.

use rivulet::collective::{Buffer, Communicator, Group, LocalGroup, Reduction};
use rivulet::data::{load_digits, Dataset};
use rivulet::distribute::{compute_average_loss, MirroredStrategy, MultiWorkerMirroredStrategy, Strategy};
use rivulet::nn::{
    Activation, Dense, ExecutionMode, FitOptions, Layer, Loss, Metric, Optimizer, Sequential, Verbosity,
};
use rivulet::ops::collective::{self as coll, BucketOptions};
use rivulet::{ops, DType, ErrorKind, GradientTape, Graph, Result, Session, Tensor, Variable};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run `f(rank, group)` on `n` threads, one per rank; results in rank order.
fn on_ranks<T: Send>(n: usize, f: impl Fn(usize, Group) -> T + Sync) -> Vec<T> {
    on_ranks_with(LocalGroup::new(n).unwrap(), f)
}

fn on_ranks_with<T: Send>(
    comms: Vec<Arc<rivulet::collective::LocalCommunicator>>,
    f: impl Fn(usize, Group) -> T + Sync,
) -> Vec<T> {
    let groups: Vec<Group> = comms.into_iter().map(|c| Group::new(c)).collect();
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = groups.into_iter().enumerate().map(|(r, g)| s.spawn(move || f(r, g))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn all_reduce_is_exact_for_integers_and_matches_float64_for_floats() {
    let out = on_ranks(4, |r, g| {
        let big: Vec<i64> = (0..300).map(|i| (1i64 << 60) / 5 + (r as i64) * 7919 + i).collect();
        let sum = coll::all_reduce(&Tensor::from(big), &g, Reduction::Sum).unwrap().to_vec::<i64>().unwrap();
        let ints: Vec<i32> = (0..50).map(|i| (i * 31 + r as i32 * 17) % 23 - 11).collect();
        let t = Tensor::from(ints);
        let max = coll::all_reduce(&t, &g, Reduction::Max).unwrap().to_vec::<i32>().unwrap();
        let min = coll::all_reduce(&t, &g, Reduction::Min).unwrap().to_vec::<i32>().unwrap();
        let xs: Vec<f32> = (0..100).map(|i| (i as f32 * 0.1 + r as f32).sin()).collect();
        let mean = coll::all_reduce(&Tensor::from(xs), &g, Reduction::Mean).unwrap().to_vec::<f32>().unwrap();
        (sum, max, min, mean)
    });
    for (sum, max, min, mean) in &out {
        for (i, s) in sum.iter().enumerate() {
            let want: i64 = (0..4).map(|q| (1i64 << 60) / 5 + q * 7919 + i as i64).sum();
            assert_eq!(*s, want, "i64 sum at {i}");
        }
        for i in 0..50 {
            let vals: Vec<i32> = (0..4).map(|q| (i * 31 + q * 17) % 23 - 11).collect();
            assert_eq!(max[i as usize], *vals.iter().max().unwrap());
            assert_eq!(min[i as usize], *vals.iter().min().unwrap());
        }
        for (i, m) in mean.iter().enumerate() {
            let want = (0..4).map(|q| ((i as f32) * 0.1 + q as f32).sin() as f64).sum::<f64>() / 4.0;
            assert!((*m as f64 - want).abs() < 1e-6, "mean at {i}: {m} vs {want}");
        }
    }
    // Every rank holds the same bits.
    assert!(out.windows(2).all(|w| w[0].3.iter().map(|v| v.to_bits()).eq(w[1].3.iter().map(|v| v.to_bits()))));
}

#[test]
fn broadcast_gather_scatter_and_barrier() {
    on_ranks(3, |r, g| {
        let mine = Tensor::from_vec(vec![r as f64 + 0.5; 4], [2, 2]).unwrap();
        let b = coll::broadcast(&mine, &g, 1).unwrap();
        assert_eq!(b.to_vec::<f64>().unwrap(), vec![1.5; 4]);
        let all = coll::all_gather(&mine, &g).unwrap();
        assert_eq!(all.shape().dims(), [6, 2]);
        assert_eq!(all.to_vec::<f64>().unwrap(), [0.5, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5]);
        let x = Tensor::from_vec((0..6).map(|i| (i * 10 + r) as f32).collect(), [3, 2]).unwrap();
        let part = coll::reduce_scatter(&x, &g, Reduction::Sum).unwrap();
        assert_eq!(part.shape().dims(), [1, 2]);
        let want: Vec<f32> = (0..2).map(|j| (0..3).map(|q| ((r * 2 + j) * 10 + q) as f32).sum()).collect();
        assert_eq!(part.to_vec::<f32>().unwrap(), want);
        let passed = coll::barrier(&Tensor::scalar(7i32), &g).unwrap();
        assert_eq!(passed.to_scalar::<i32>().unwrap(), 7);
        g.barrier().unwrap();
    });
}

#[test]
fn collectives_run_in_graphs_and_their_gradients_follow_the_sum_of_the_ranks_losses() {
    let out = on_ranks(2, |r, g| {
        // Graph mode, in a session.
        let graph = Graph::new();
        let x = graph.placeholder("x", DType::F32, [Some(2)]).unwrap();
        let y = coll::all_reduce(&x, &g, Reduction::Max).unwrap();
        let s = Session::new(&graph);
        let got = s.run(&[&y], &[(&x, &Tensor::from(vec![r as f32, 1.0 - r as f32]))]).unwrap();
        assert_eq!(got[0].to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
        // Gradients, eagerly: each rank's loss is sum(c_r * op(x_r)).
        let c = (r + 1) as f64;
        let grad = |f: &dyn Fn(&Tensor) -> Result<Tensor>, x0: Vec<f64>| -> Vec<f64> {
            let v = Variable::new("x", &Tensor::from(x0), true).unwrap();
            let tape = GradientTape::new();
            let loss = ops::sum(&ops::mul(&f(&v.read()).unwrap(), c).unwrap(), ops::Axes::All, false).unwrap();
            let gr = tape.gradient_vars(&loss, &[&v]).unwrap().remove(0).unwrap();
            gr.to_vec::<f64>().unwrap()
        };
        let sum = grad(&|x| coll::all_reduce(x, &g, Reduction::Sum), vec![1.0, 2.0]);
        let mean = grad(&|x| coll::all_reduce(x, &g, Reduction::Mean), vec![1.0, 2.0]);
        // Max: rank 0 holds the larger first element, rank 1 the larger second.
        let xs = if r == 0 { vec![5.0, 0.0] } else { vec![1.0, 3.0] };
        let max = grad(&|x| coll::all_reduce(x, &g, Reduction::Max), xs);
        let bcast = grad(&|x| coll::broadcast(x, &g, 0), vec![1.0, 2.0]);
        let gather = grad(&|x| coll::all_gather(&ops::reshape(x, &[1, 2])?, &g), vec![1.0, 2.0]);
        (sum, mean, max, bcast, gather)
    });
    // Total objective: sum over ranks of c_r * sum(op(x)), c = 1, 2.
    for (r, (sum, mean, max, bcast, gather)) in out.iter().enumerate() {
        assert_eq!(sum, &vec![3.0, 3.0], "sum, rank {r}");
        assert_eq!(mean, &vec![1.5, 1.5], "mean, rank {r}");
        assert_eq!(max, &if r == 0 { vec![3.0, 0.0] } else { vec![0.0, 3.0] }, "max, rank {r}");
        assert_eq!(bcast, &if r == 0 { vec![3.0, 3.0] } else { vec![0.0, 0.0] }, "broadcast, rank {r}");
        // all_gather: rank r's row appears in every rank's output, weighted c_q.
        assert_eq!(gather, &vec![3.0, 3.0], "all_gather, rank {r}");
    }
}

#[test]
fn bucketed_all_reduce_matches_one_all_reduce_per_tensor_in_every_mode() {
    on_ranks(3, |r, g| {
        let tensors: Vec<Tensor> = (0..6)
            .map(|k| {
                let n = k * 41 + 3;
                Tensor::from_vec((0..n).map(|i| ((i * 3 + k + r) as f32 * 0.05).cos()).collect(), [n]).unwrap()
            })
            .chain([Tensor::from(vec![r as f64, 2.0])])
            .collect();
        let plain: Vec<Tensor> = tensors.iter().map(|t| coll::all_reduce(t, &g, Reduction::Sum).unwrap()).collect();
        for (overlap, compression) in
            [(true, None), (false, None), (true, Some(DType::F16)), (false, Some(DType::BF16))]
        {
            let opts = BucketOptions { bucket_bytes: 256, first_bucket_bytes: 64, compression, overlap };
            // Eagerly, and in a graph.
            let eager = coll::all_reduce_bucketed(&tensors, &g, Reduction::Sum, &opts).unwrap();
            let graph = Graph::new();
            let phs: Vec<Tensor> = tensors
                .iter()
                .enumerate()
                .map(|(i, t)| graph.placeholder(&format!("t{i}"), t.dtype(), t.shape().clone()).unwrap())
                .collect();
            let reduced = coll::all_reduce_bucketed(&phs, &g, Reduction::Sum, &opts).unwrap();
            let fetches: Vec<&Tensor> = reduced.iter().collect();
            let feeds: Vec<(&Tensor, &Tensor)> = phs.iter().zip(&tensors).collect();
            let in_graph = Session::new(&graph).run(&fetches, &feeds).unwrap();
            let tol = if compression.is_some() { 0.02 } else { 0.0 };
            for ((e, gr), p) in eager.iter().zip(&in_graph).zip(&plain) {
                assert_eq!(e.dtype(), p.dtype());
                assert_eq!(e.shape(), p.shape());
                let (e, gr, p) = (
                    ops::cast(e, DType::F64).unwrap().to_vec::<f64>().unwrap(),
                    ops::cast(gr, DType::F64).unwrap().to_vec::<f64>().unwrap(),
                    ops::cast(p, DType::F64).unwrap().to_vec::<f64>().unwrap(),
                );
                for i in 0..p.len() {
                    assert!((e[i] - p[i]).abs() <= tol, "eager {overlap} {compression:?}: {} vs {}", e[i], p[i]);
                    assert!((gr[i] - p[i]).abs() <= tol, "graph {overlap} {compression:?}: {} vs {}", gr[i], p[i]);
                }
            }
        }
    });
}

#[test]
fn collective_errors_name_the_problem_and_never_hang() {
    // Wrong dtypes and shapes: errors before any communication.
    let g = Group::single();
    let e = coll::all_reduce(&Tensor::from(vec![true, false]), &g, Reduction::Sum).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType, "{e}");
    let e = coll::all_reduce(&Tensor::from(vec![1i32, 2]), &g, Reduction::Mean).unwrap_err();
    assert!(e.to_string().contains("Mean needs a floating-point dtype"), "{e}");
    let e = coll::all_gather(&Tensor::scalar(1f32), &g).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
    let pair = LocalGroup::new(2).unwrap();
    let e = coll::reduce_scatter(&Tensor::from(vec![1f32, 2.0, 3.0]), &Group::new(pair[0].clone()), Reduction::Sum)
        .unwrap_err();
    assert!(e.to_string().contains("does not split over 2 ranks"), "{e}");
    assert!(LocalGroup::new(0).is_err());
    // A peer that never comes: an Unavailable error at the timeout, then the group is broken.
    let comms = LocalGroup::with_timeout(2, Duration::from_millis(200)).unwrap();
    let lone = Group::new(comms[0].clone());
    let start = Instant::now();
    let e = coll::all_reduce(&Tensor::from(vec![1f32]), &lone, Reduction::Sum).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("did not complete within 0.2 s"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let e = comms[1].all_reduce(Buffer::from_slice(&[1f32]).unwrap(), Reduction::Sum).err().unwrap();
    assert!(e.to_string().contains("broken"), "{e}");
    // Ranks that call different collectives: an error on both, not a hang.
    let out = on_ranks_with(LocalGroup::with_timeout(2, Duration::from_secs(5)).unwrap(), |r, g| {
        let x = Tensor::from(vec![1f32, 2.0]);
        if r == 0 {
            coll::all_reduce(&x, &g, Reduction::Sum).map(drop)
        } else {
            coll::all_gather(&x, &g).map(drop)
        }
    });
    assert!(out.iter().all(|r| r.is_err()), "{out:?}");
    // A graph op whose group is gone.
    {
        let g = Group::single();
        let graph = Graph::new();
        let x = graph.placeholder("x", DType::F32, [Some(1)]).unwrap();
        let y = coll::all_reduce(&x, &g, Reduction::Sum).unwrap();
        drop(g);
        let e = Session::new(&graph).run(&[&y], &[(&x, &Tensor::from(vec![1f32]))]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("is not registered"), "{e}");
    }
}

#[test]
fn a_sharded_dataset_gives_each_element_to_exactly_one_worker() {
    let out = on_ranks(3, |_, g| {
        let st = MultiWorkerMirroredStrategy::with_group(g.clone());
        let mine: Vec<i64> = st
            .distribute_dataset(&Dataset::range(0, 50, 1).unwrap())
            .unwrap()
            .collect()
            .unwrap()
            .iter()
            .map(|e| e.tensor(0).unwrap().to_scalar::<i64>().unwrap())
            .collect();
        mine
    });
    let mut all: Vec<i64> = out.concat();
    all.sort();
    assert_eq!(all, (0..50).collect::<Vec<i64>>());
}

fn mlp(mode: ExecutionMode, optimizer: Optimizer) -> Sequential {
    let mut m = Sequential::new(vec![
        Box::new(Dense::new(16, Activation::Relu)) as Box<dyn Layer>,
        Box::new(Dense::new(10, Activation::Linear)),
    ]);
    m.compile(
        optimizer,
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        mode,
    );
    m
}

fn flat_weights(m: &Sequential) -> Vec<f32> {
    m.get_weights().unwrap().iter().flat_map(|(_, t)| t.to_vec::<f32>().unwrap()).collect()
}

fn set_weights(m: &Sequential, w: &[(String, Tensor)]) {
    for (v, (_, t)) in m.variables().iter().zip(w) {
        m.set_variable_value(v, t).unwrap();
    }
}

fn close(a: &[f32], b: &[f32], rel: f32) -> Result<(), String> {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    match a.iter().zip(b).enumerate().find(|(_, (x, y))| (*x - *y).abs() > rel * scale) {
        Some((i, (x, y))) => Err(format!("weight {i}: {x} vs {y} (scale {scale})")),
        None => Ok(()),
    }
}

/// Workers as threads train as one process would on the same global batches.
fn workers_match_one_process(mode: ExecutionMode, workers: usize) {
    let d = load_digits().unwrap();
    let idx = Tensor::from((0..256i64).collect::<Vec<_>>());
    let (x, y) = (ops::gather(&d.train_x, &idx, 0, 0).unwrap(), ops::gather(&d.train_y, &idx, 0, 0).unwrap());
    let opts = FitOptions {
        epochs: 2,
        batch_size: 64,
        shuffle: true,
        seed: 5,
        verbose: Verbosity::Silent,
        ..Default::default()
    };
    let results = on_ranks(workers, |_, g| {
        let strategy = MultiWorkerMirroredStrategy::with_group(g);
        let mut m = mlp(mode, Optimizer::sgd(0.2));
        m.distribute(&strategy).unwrap();
        m.build(&x, &y).unwrap();
        let initial = m.get_weights().unwrap();
        let h = m.fit(&x, &y, &opts).unwrap();
        (initial, flat_weights(&m), h.last("loss").unwrap(), h.last("accuracy").unwrap())
    });
    // Every worker started from worker 0's weights and ends with the same bits.
    for (r, res) in results.iter().enumerate() {
        assert_eq!(
            res.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            results[0].1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "worker {r}"
        );
        assert_eq!(res.2, results[0].2);
        let w0: Vec<f32> = res.0.iter().flat_map(|(_, t)| t.to_vec::<f32>().unwrap()).collect();
        let c0: Vec<f32> = results[0].0.iter().flat_map(|(_, t)| t.to_vec::<f32>().unwrap()).collect();
        assert_eq!(w0, c0, "worker {r}'s initial weights");
    }
    // One process, the same initial weights and global batches.
    let single = mlp(mode, Optimizer::sgd(0.2));
    single.build(&x, &y).unwrap();
    set_weights(&single, &results[0].0);
    let h = single.fit(&x, &y, &opts).unwrap();
    close(&results[0].1, &flat_weights(&single), 1e-6).unwrap();
    assert!((results[0].2 - h.last("loss").unwrap()).abs() < 1e-5, "{} vs {:?}", results[0].2, h.last("loss"));
    assert_eq!(results[0].3, h.last("accuracy").unwrap());
}

#[test]
fn graph_mode_workers_train_like_one_process() {
    workers_match_one_process(ExecutionMode::Graph, 4);
}

#[test]
fn eager_workers_train_like_one_process() {
    workers_match_one_process(ExecutionMode::Eager, 2);
}

#[test]
fn mirrored_replicas_on_two_devices_train_like_one_device() {
    let d = load_digits().unwrap();
    let idx = Tensor::from((0..200i64).collect::<Vec<_>>());
    let (x, y) = (ops::gather(&d.train_x, &idx, 0, 0).unwrap(), ops::gather(&d.train_y, &idx, 0, 0).unwrap());
    // 200 rows in batches of 64: the last batch (8 rows) splits 4 and 4.
    let opts =
        FitOptions { epochs: 2, batch_size: 64, shuffle: false, verbose: Verbosity::Silent, ..Default::default() };
    for mode in [ExecutionMode::Graph, ExecutionMode::Eager] {
        let strategy: Strategy = MirroredStrategy::with_devices(&["/cpu:0", "/reference:0"]).unwrap();
        assert_eq!(strategy.num_replicas_in_sync(), 2);
        let mut m = mlp(mode, Optimizer::sgd(0.2));
        m.distribute(&strategy).unwrap();
        m.build(&x, &y).unwrap();
        let initial = m.get_weights().unwrap();
        let single = mlp(mode, Optimizer::sgd(0.2));
        single.build(&x, &y).unwrap();
        set_weights(&single, &initial);
        let h1 = m.fit(&x, &y, &opts).unwrap();
        let h2 = single.fit(&x, &y, &opts).unwrap();
        close(&flat_weights(&m), &flat_weights(&single), 1e-4).unwrap();
        assert!((h1.last("loss").unwrap() - h2.last("loss").unwrap()).abs() < 1e-4, "{mode:?}");
    }
    assert!(MirroredStrategy::with_devices(&["/gpu:7"]).is_err());
    assert!(MirroredStrategy::with_devices(&[]).is_err());
}

#[test]
fn strategies_refuse_a_model_that_already_has_variables_and_average_losses() {
    let d = load_digits().unwrap();
    let mut m = mlp(ExecutionMode::Graph, Optimizer::sgd(0.1));
    m.build(&d.train_x, &d.train_y).unwrap();
    let e = m.distribute(&MirroredStrategy::new().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    let l = compute_average_loss(&Tensor::from(vec![1.0f32, 2.0, 3.0]), 12).unwrap();
    assert_eq!(l.to_scalar::<f32>().unwrap(), 0.5);
    assert!(compute_average_loss(&Tensor::from(vec![1.0f32]), 0).is_err());
    let single = MultiWorkerMirroredStrategy::with_group(Group::single());
    assert!(single.is_chief());
    assert_eq!(single.replica_rows(10), vec![(0, 10)]);
    let two = on_ranks(2, |_, g| MultiWorkerMirroredStrategy::with_group(g).replica_rows(9));
    assert_eq!(two, vec![vec![(0, 4)], vec![(4, 9)]]);
}

/// Counts the epochs it sees.
struct Epochs(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rivulet::nn::Callback for Epochs {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &std::collections::BTreeMap<String, f64>,
        _model: &Sequential,
    ) -> Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn only_worker_0_runs_callbacks_and_reports_global_metrics() {
    let d = load_digits().unwrap();
    let idx = Tensor::from((0..96i64).collect::<Vec<_>>());
    let (x, y) = (ops::gather(&d.train_x, &idx, 0, 0).unwrap(), ops::gather(&d.train_y, &idx, 0, 0).unwrap());
    let out = on_ranks(3, |_, g| {
        let strategy = MultiWorkerMirroredStrategy::with_group(g);
        let mut m = mlp(ExecutionMode::Graph, Optimizer::sgd(0.1));
        m.distribute(&strategy).unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let opts = FitOptions { epochs: 3, batch_size: 32, verbose: Verbosity::Silent, ..Default::default() }
            .callback(rivulet::nn::SharedCallback::new(Epochs(seen.clone())));
        let h = m.fit(&x, &y, &opts).unwrap();
        (
            m.is_chief(),
            seen.load(std::sync::atomic::Ordering::SeqCst),
            h.last("loss").unwrap(),
            h.last("accuracy").unwrap(),
        )
    });
    assert_eq!(out.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>(), vec![(true, 3), (false, 0), (false, 0)]);
    // The loss and accuracy over the global batch: the same on every worker.
    assert!(out.iter().all(|o| o.2 == out[0].2 && o.3 == out[0].3), "{out:?}");
}
