//! `rivulet bench`: the BENCHMARKS.md workloads, timed the way
//! `shared/peers/common.py` times them (warm-up, calibrated inner loop,
//! median of the samples), printed as a table or as the peers' JSON lines.

use rivulet::nn::{losses::sparse_softmax_cross_entropy, Initializer, Optimizer};
use rivulet::{ops, while_loop, Ctx, DType, GradientTape, Graph, Result, Session, Tensor, Variable, WhileOptions};
use serde_json::json;
use std::time::Instant;

const N2: f64 = 4096.0 * 4096.0;

/// The workloads of BENCHMARKS.md this command times.
pub const WORKLOADS: [&str; 11] = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11"];

/// One measurement.
struct Record {
    mode: &'static str,
    id: &'static str,
    param: String,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    reps: usize,
    inner: usize,
}

impl Record {
    fn figure(&self) -> (f64, &'static str) {
        let t = self.median_ms;
        match self.id {
            "B1" => {
                let n: f64 = self.param.trim_start_matches("n=").parse().unwrap_or(0.0);
                (2.0 * n * n * n / (t * 1e-3) / 1e9, "GFLOP/s")
            }
            "B2" => (8.0 * N2 / (t * 1e-3) / 1e9, "GB/s"),
            "B8" => (t * 1e3, "us"),
            "B7" => (t, "ms/step"),
            "B11" => (B11_ROWS as f64 / (t * 1e-3), "rows/s"),
            _ => (t, "ms"),
        }
    }
}

/// Timing settings, as in the peers' `auto_bench`.
struct Budget {
    budget_s: f64,
    min_reps: usize,
    max_reps: usize,
    per: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { budget_s: 2.0, min_reps: 5, max_reps: 30, per: 1 }
    }
}

fn auto_bench(mut f: impl FnMut() -> Result<()>, b: Budget) -> Result<(f64, f64, f64, usize, usize)> {
    // A device's queued work is waited for after the warm-up, the
    // calibration call and each timed inner loop, as the GPU peers wait
    // (`torch.cuda.synchronize()`, `block_until_ready`): calls within a loop
    // may overlap the device's work, as theirs do.
    let sync = rivulet::synchronize;
    f()?;
    let (mut k, t0) = (1, Instant::now());
    while k < 3 || t0.elapsed().as_secs_f64() < 0.3 {
        f()?;
        k += 1;
    }
    sync()?;
    let t = Instant::now();
    f()?;
    sync()?;
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let inner = ((5e-3 / one).ceil() as usize).max(1);
    let reps = ((b.budget_s / (one * inner as f64)) as usize).clamp(b.min_reps, b.max_reps);
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            f()?;
        }
        sync()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3 / inner as f64 / b.per as f64);
    }
    samples.sort_by(f64::total_cmp);
    let m = samples.len();
    let median = if m % 2 == 1 { samples[m / 2] } else { 0.5 * (samples[m / 2 - 1] + samples[m / 2]) };
    Ok((median, samples[0], samples[m - 1], reps, inner))
}

/// `reps` timed calls after `warmup` untimed ones, one sample per call (the
/// peers' `fixed_bench` / `train_bench`).
fn fixed_bench(
    mut f: impl FnMut(usize) -> Result<()>,
    warmup: usize,
    reps: usize,
) -> Result<(f64, f64, f64, usize, usize)> {
    for i in 0..warmup {
        f(i)?;
    }
    let mut samples = Vec::with_capacity(reps);
    for i in warmup..warmup + reps {
        let t = Instant::now();
        f(i)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let m = samples.len();
    let median = if m % 2 == 1 { samples[m / 2] } else { 0.5 * (samples[m / 2 - 1] + samples[m / 2]) };
    Ok((median, samples[0], samples[m - 1], reps, 1))
}

/// The B5 MLP's logits for inputs `x` and parameters `p` (kernel, bias per layer).
pub(crate) fn b5_forward(x: &Tensor, p: &[Tensor]) -> Result<Tensor> {
    let h1 = ops::relu(&(&ops::matmul(x, &p[0])? + &p[1])?)?;
    let h2 = ops::relu(&(&ops::matmul(&h1, &p[2])? + &p[3])?)?;
    &ops::matmul(&h2, &p[4])? + &p[5]
}

/// The logits of a benchmark model for inputs `x` and parameters `p`.
type Forward = fn(&Tensor, &[Tensor]) -> Result<Tensor>;

/// One B5 or B6 training step written eagerly (tape, gradients, Adam);
/// returns the loss. Run as is for eager mode and traced by
/// `rivulet::function` for graph mode.
fn eager_step(forward: Forward, vars: &[Variable], opt: &Optimizer, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let tape = GradientTape::new();
    let refs: Vec<&Variable> = vars.iter().collect();
    let p: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
    let loss = sparse_softmax_cross_entropy(y, &forward(x, &p)?)?;
    let grads = tape.gradient_vars(&loss, &refs)?;
    let pairs: Vec<(Tensor, &Variable)> =
        grads.into_iter().zip(&refs).filter_map(|(g, v)| g.map(|g| (g, *v))).collect();
    opt.apply_gradients(&pairs)?;
    Ok(loss)
}

/// B5: MLP 784-512-512-10 training step (forward, backward, Adam), batch 128.
fn b5(r: &mut Runner) -> Result<()> {
    const PARAM: &str = "784-512-512-10, batch 128, Adam";
    let sizes = [(784usize, 512usize), (512, 512), (512, 10)];
    let batches: Vec<(Tensor, Tensor)> = (0..8u64)
        .map(|i| {
            let x = normal(&[128, 784], 51 + i)?;
            let y = ops::random_uniform_int(Ctx::Eager, [128], 0, 10, DType::I32, Some(151 + i))?;
            Ok((x, y))
        })
        .collect::<Result<_>>()?;
    let init_params = |seed: u64| -> Result<Vec<Tensor>> {
        let mut p = Vec::new();
        for (i, &(a, b)) in sizes.iter().enumerate() {
            p.push(Initializer::GlorotUniform.init(Ctx::Eager, [a, b], DType::F32, Some(seed + i as u64))?);
            p.push(Tensor::zeros([b], DType::F32)?);
        }
        Ok(p)
    };
    if r.want("eager") {
        let vars: Vec<Variable> = init_params(50)?
            .iter()
            .enumerate()
            .map(|(i, t)| Variable::new(&format!("p{i}"), t, true))
            .collect::<Result<_>>()?;
        let opt = Optimizer::adam_with(1e-3, 0.9, 0.999, 1e-8);
        let step = |i: usize| -> Result<()> {
            let (x, y) = &batches[i % batches.len()];
            eager_step(b5_forward, &vars, &opt, x, y)?.to_scalar::<f32>().map(drop)
        };
        let t = fixed_bench(step, 20, 200)?;
        r.report("eager", "B5", PARAM, t);
    }
    if r.want("graph") {
        // The eager step, unchanged, traced into a graph by rivulet::function.
        let vars: Vec<Variable> = init_params(50)?
            .iter()
            .enumerate()
            .map(|(i, t)| Variable::new(&format!("p{i}"), t, true))
            .collect::<Result<_>>()?;
        let opt = Optimizer::adam_with(1e-3, 0.9, 0.999, 1e-8);
        let train =
            rivulet::function(|args: &[Tensor]| Ok(vec![eager_step(b5_forward, &vars, &opt, &args[0], &args[1])?]));
        let step = |i: usize| -> Result<()> {
            let (x, y) = &batches[i % batches.len()];
            train.call(&[x, y])?[0].to_scalar::<f32>().map(drop)
        };
        let t = fixed_bench(step, 20, 200)?;
        r.report("graph", "B5", &format!("{PARAM} (variant: eager step wrapped in rivulet::function)"), t);
    }
    if r.want("graph") {
        let g = Graph::new();
        let px = g.placeholder("x", DType::F32, [128, 784])?;
        let py = g.placeholder("y", DType::I32, [128])?;
        let vars: Vec<Variable> = init_params(50)?
            .iter()
            .enumerate()
            .map(|(i, t)| Variable::in_graph(&g, &format!("p{i}"), t, true))
            .collect::<Result<_>>()?;
        let p: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
        let loss = sparse_softmax_cross_entropy(&py, &b5_forward(&px, &p)?)?;
        let refs: Vec<&Variable> = vars.iter().collect();
        let opt = Optimizer::adam_with(1e-3, 0.9, 0.999, 1e-8);
        let train = opt.minimize(&loss, &refs)?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let step = |i: usize| -> Result<()> {
            let (x, y) = &batches[i % batches.len()];
            s.run_with_targets(&[&loss], &[(&px, x), (&py, y)], &[&train])?[0].to_scalar::<f32>().map(drop)
        };
        let t = fixed_bench(step, 20, 200)?;
        r.report("graph", "B5", PARAM, t);
    }
    Ok(())
}

/// The B6 CNN's logits: two 3x3 SAME convolutions with ReLU and 2x2 max
/// pooling, flatten, dense 10 (parameters: kernel, bias per layer).
fn b6_forward(x: &Tensor, p: &[Tensor]) -> Result<Tensor> {
    let same = ops::Padding::Same;
    let h = ops::relu(&(&ops::conv2d(x, &p[0], &[1], same.clone())? + &p[1])?)?;
    let h = ops::max_pool2d(&h, &[2], &[2], ops::Padding::Valid)?;
    let h = ops::relu(&(&ops::conv2d(&h, &p[2], &[1], same)? + &p[3])?)?;
    let h = ops::max_pool2d(&h, &[2], &[2], ops::Padding::Valid)?;
    let h = ops::reshape(&h, &[-1, 7 * 7 * 64])?;
    &ops::matmul(&h, &p[4])? + &p[5]
}

/// B6: the CNN training step (forward, backward, Adam), batch 64 of 28x28x1,
/// eager, traced by `rivulet::function`, and as a session graph.
fn b6(r: &mut Runner) -> Result<()> {
    const PARAM: &str = "CNN 64x28x28x1, Adam";
    let shapes: [&[usize]; 3] = [&[3, 3, 1, 32], &[3, 3, 32, 64], &[7 * 7 * 64, 10]];
    let batches: Vec<(Tensor, Tensor)> = (0..8u64)
        .map(|i| {
            let x = ops::random_uniform(Ctx::Eager, [64, 28, 28, 1], 0.01, 1.01, DType::F32, Some(61 + i))?;
            let y = ops::random_uniform_int(Ctx::Eager, [64], 0, 10, DType::I32, Some(161 + i))?;
            Ok((x, y))
        })
        .collect::<Result<_>>()?;
    let params = |g: Option<&Graph>| -> Result<Vec<Variable>> {
        let mut vars = Vec::new();
        for (i, shape) in shapes.iter().enumerate() {
            let w = Initializer::GlorotUniform.init(Ctx::Eager, shape.to_vec(), DType::F32, Some(60 + i as u64))?;
            let b = Tensor::zeros([shape[shape.len() - 1]], DType::F32)?;
            for (j, t) in [w, b].iter().enumerate() {
                let name = format!("p{}", 2 * i + j);
                vars.push(match g {
                    Some(g) => Variable::in_graph(g, &name, t, true)?,
                    None => Variable::new(&name, t, true)?,
                });
            }
        }
        Ok(vars)
    };
    let adam = || Optimizer::adam_with(1e-3, 0.9, 0.999, 1e-7);
    if r.want("eager") {
        let (vars, opt) = (params(None)?, adam());
        let step = |i: usize| -> Result<()> {
            let (x, y) = &batches[i % batches.len()];
            eager_step(b6_forward, &vars, &opt, x, y)?.to_scalar::<f32>().map(drop)
        };
        r.report("eager", "B6", PARAM, fixed_bench(step, 5, 50)?);
    }
    if r.want("graph") {
        let (vars, opt) = (params(None)?, adam());
        let train =
            rivulet::function(|args: &[Tensor]| Ok(vec![eager_step(b6_forward, &vars, &opt, &args[0], &args[1])?]));
        let step = |i: usize| -> Result<()> {
            let (x, y) = &batches[i % batches.len()];
            train.call(&[x, y])?[0].to_scalar::<f32>().map(drop)
        };
        let t = fixed_bench(step, 5, 50)?;
        r.report("graph", "B6", &format!("{PARAM} (variant: eager step wrapped in rivulet::function)"), t);

        let g = Graph::new();
        let px = g.placeholder("x", DType::F32, [64, 28, 28, 1])?;
        let py = g.placeholder("y", DType::I32, [64])?;
        let vars = params(Some(&g))?;
        let p: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
        let loss = sparse_softmax_cross_entropy(&py, &b6_forward(&px, &p)?)?;
        let refs: Vec<&Variable> = vars.iter().collect();
        let train = adam().minimize(&loss, &refs)?;
        let s = Session::new(&g);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let step = |i: usize| -> Result<()> {
            let (x, y) = &batches[i % batches.len()];
            s.run_with_targets(&[&loss], &[(&px, x), (&py, y)], &[&train])?[0].to_scalar::<f32>().map(drop)
        };
        r.report("graph", "B6", PARAM, fixed_bench(step, 5, 50)?);
    }
    Ok(())
}

/// One B7 step: `u + 0.2 * pad(laplacian(interior))`, the boundary fixed
/// (Dirichlet), written as the TensorFlow and JAX peers write it.
fn heat_step(u: &Tensor) -> Result<Tensor> {
    let n = u.shape().dims()[0];
    let m = (n - 2) as i64;
    let at = |i: usize, j: usize| ops::slice(u, &[i, j], &[m, m]);
    let sum = (&(&(&at(0, 1)? + &at(2, 1)?)? + &at(1, 0)?)? + &at(1, 2)?)?;
    let lap = (&sum - &(&at(1, 1)? * 4.0)?)?;
    u + &(&ops::pad(&lap, &[(1, 1), (1, 1)], ops::PadMode::Constant, 0.0)? * 0.2)?
}

/// B7: the 2-D heat equation, 200 steps per call: one `Session::run` of a
/// `while_loop` (graph), or a Rust loop of ops (eager).
fn b7(r: &mut Runner) -> Result<()> {
    const PARAM: &str = "1024x1024, 200 steps/call";
    let u0 = normal(&[1024, 1024], 7)?;
    let budget = || Budget { budget_s: 6.0, min_reps: 5, max_reps: 7, per: 200 };
    r.time("eager", "B7", PARAM, budget(), || {
        let mut u = u0.clone();
        for _ in 0..200 {
            u = heat_step(&u)?;
        }
        Ok(())
    })?;
    let g = Graph::new();
    let pu = g.placeholder("u", DType::F32, [1024, 1024])?;
    let (_, u) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(200i32)),
        |(i, u): &(Tensor, Tensor)| Ok((ops::add(i, &Tensor::scalar(1i32))?, heat_step(u)?)),
        (Tensor::scalar(0i32), pu.clone()),
        &WhileOptions::default(),
    )?;
    let s = Session::new(&g);
    r.time("graph", "B7", PARAM, budget(), || s.run(&[&u], &[(&pu, &u0)]).map(drop))?;
    Ok(())
}

/// B9's matrices (BENCHMARKS.md), drawn in f64 and cast: `(kind, param, inputs)`.
fn b9_inputs(dtype: DType) -> Result<Vec<(&'static str, &'static str, Vec<Tensor>)>> {
    let draw = |shape: &[usize], seed: u64| ops::random_normal(Ctx::Eager, shape, 0.0, 1.0, DType::F64, Some(seed));
    let eye = |n: usize| ops::eye(Ctx::Eager, n, n, DType::F64);
    let cast = |t: Tensor| ops::cast(&t, dtype);
    let m = draw(&[1024, 1024], 90)?;
    let spd = ((ops::matmul_t(&m, &m, false, true)? / 1024.0)? + eye(1024)?)?;
    let g = draw(&[1024, 1024], 91)?;
    let general = ((g / 32.0)? + (eye(1024)? * 3.0)?)?;
    let rhs = draw(&[1024, 16], 92)?;
    let square = draw(&[512, 512], 93)?;
    let s = draw(&[512, 512], 94)?;
    let sym = ((&s + &ops::adjoint(&s)?)? * 0.5)?;
    Ok(vec![
        ("cholesky", "cholesky 1024", vec![cast(spd)?]),
        ("solve", "solve 1024 nrhs=16", vec![cast(general)?, cast(rhs)?]),
        ("svd", "svd 512", vec![cast(square)?]),
        ("eigh", "eigh 512", vec![cast(sym)?]),
    ])
}

/// One B9 call on `x` (symbolic or values): the outputs the peers compute.
fn b9_call(kind: &str, x: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(match kind {
        "cholesky" => vec![ops::cholesky(&x[0])?],
        "solve" => vec![ops::solve(&x[0], &x[1])?],
        "svd" => {
            let (s, u, v) = ops::svd(&x[0], false)?;
            vec![s, u, v]
        }
        _ => {
            let (e, v) = ops::eigh(&x[0])?;
            vec![e, v]
        }
    })
}

/// B9: factorizations and a solve, f32 and f64, eager and graph.
fn b9(r: &mut Runner) -> Result<()> {
    let budget = || Budget { budget_s: 2.0, min_reps: 5, max_reps: 15, per: 1 };
    for (dt, dtype) in [("f32", DType::F32), ("f64", DType::F64)] {
        for (kind, param, inputs) in b9_inputs(dtype)? {
            let p = format!("{param} {dt}");
            r.time("eager", "B9", &p, budget(), || b9_call(kind, &inputs).map(drop))?;
            let g = Graph::new();
            let ps: Vec<Tensor> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| g.placeholder(&format!("x{i}"), dtype, t.shape().clone()))
                .collect::<Result<_>>()?;
            let outs = b9_call(kind, &ps)?;
            let fetch: Vec<&Tensor> = outs.iter().collect();
            let feeds: Vec<(&Tensor, &Tensor)> = ps.iter().zip(&inputs).collect();
            let s = Session::new(&g);
            r.time("graph", "B9", &p, budget(), || s.run(&fetch, &feeds).map(drop))?;
        }
    }
    Ok(())
}

/// B10's inputs (BENCHMARKS.md): `(kind, param, input)`.
fn b10_inputs() -> Result<Vec<(&'static str, &'static str, Tensor)>> {
    let draw = |shape: &[usize], seed: u64| ops::random_normal(Ctx::Eager, shape, 0.0, 1.0, DType::F32, Some(seed));
    let z = ops::complex(&draw(&[1024, 1024], 100)?, &draw(&[1024, 1024], 101)?)?;
    let x = draw(&[4096, 4096], 102)?;
    // The f64 transform of x rounded to complex64, as the peers' input.
    let spectrum = ops::cast(&ops::rfft(&ops::cast(&x, DType::F64)?, None)?, DType::C64)?;
    Ok(vec![
        ("fft2", "fft2 1024x1024 c64", z),
        ("rfft", "rfft 4096x4096 f32 axis=-1", x),
        ("irfft", "irfft 4096x2049 c64 -> 4096x4096 f32", spectrum),
    ])
}

fn b10_call(kind: &str, x: &Tensor) -> Result<Tensor> {
    match kind {
        "fft2" => ops::fft2(x),
        "rfft" => ops::rfft(x, None),
        _ => ops::irfft(x, Some(4096)),
    }
}

/// B10: FFTs, eager and graph.
fn b10(r: &mut Runner) -> Result<()> {
    let budget = || Budget { budget_s: 2.0, min_reps: 5, max_reps: 15, per: 1 };
    for (kind, param, input) in b10_inputs()? {
        r.time("eager", "B10", param, budget(), || b10_call(kind, &input).map(drop))?;
        let g = Graph::new();
        let p = g.placeholder("x", input.dtype(), input.shape().clone())?;
        let y = b10_call(kind, &p)?;
        let s = Session::new(&g);
        r.time("graph", "B10", param, budget(), || s.run(&[&y], &[(&p, &input)]).map(drop))?;
    }
    Ok(())
}

const B11_ROWS: usize = 200_000;
const B11_PARAM: &str = "CSV 200000 rows x (16 f32 + 1 int), shuffle 10000, batch 256";
/// The file the peers write (`peers/common.py: b11_csv`), read when it is there.
const B11_PATH: &str = "/tmp/rivulet-b11/data.csv";

/// The B11 CSV: the peers' file when present, else one of the same format
/// and size from Rivulet's own generator (its checksums then differ from the peers').
fn b11_file() -> Result<std::path::PathBuf> {
    let peers = std::path::PathBuf::from(B11_PATH);
    if peers.exists() {
        return Ok(peers);
    }
    let own = std::env::temp_dir().join("rivulet-b11-own.csv");
    if !own.exists() {
        eprintln!("B11: {B11_PATH} is missing (the peers write it); writing {} instead", own.display());
        let x = normal(&[B11_ROWS, 16], 110)?.to_vec::<f32>()?;
        let y = ops::random_uniform_int(Ctx::Eager, [B11_ROWS], 0, 10, DType::I32, Some(111))?.to_vec::<i32>()?;
        let mut text = String::with_capacity(34 << 20);
        let header: Vec<String> = (0..16).map(|i| format!("f{i}")).collect();
        text.push_str(&format!("{},label\n", header.join(",")));
        for (row, label) in x.chunks(16).zip(&y) {
            for v in row {
                text.push_str(&format!("{v},"));
            }
            text.push_str(&format!("{label}\n"));
        }
        let tmp = own.with_extension("part");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &own)?;
    }
    Ok(own)
}

/// B11: one epoch of CSV → parse → shuffle(10,000, seeded) → batch(256)
/// → consume each batch on the host (features stacked to `[256, 16]`).
fn b11(r: &mut Runner) -> Result<()> {
    use rivulet::data::{CsvOptions, Dataset};
    let path = b11_file()?;
    let base = Dataset::csv(&[&path], CsvOptions::default())?.shuffle(10_000, 20261126)?.batch(256, false)?;
    let mut check = (0usize, 0f64, 0i64);
    for (mode, ds) in [("Dataset", base.clone()), ("Dataset+prefetch", base.prefetch(4))] {
        let mut epoch = |_| -> Result<()> {
            let (mut rows, mut feat, mut labels) = (0usize, 0f64, 0i64);
            for batch in &ds {
                let fields = batch?.tensors()?;
                let (cols, label) = fields.split_at(16);
                let refs: Vec<&Tensor> = cols.iter().collect();
                let x = ops::stack(&refs, 1)?;
                feat += x.to_vec::<f32>()?.iter().map(|&v| v as f64).sum::<f64>();
                let y = label[0].to_vec::<i32>()?;
                labels += y.iter().map(|&v| v as i64).sum::<i64>();
                rows += y.len();
            }
            check = (rows, feat, labels);
            Ok(())
        };
        r.report(mode, "B11", B11_PARAM, fixed_bench(&mut epoch, 1, 5)?);
        if !r.json {
            eprintln!("    rows {} feature sum {:.6} label sum {}", check.0, check.1, check.2);
        }
    }
    Ok(())
}

struct Runner {
    records: Vec<Record>,
    json: bool,
    mode: Option<String>,
    /// Where the workloads run (`/cpu:0`, `/gpu:0`).
    device: String,
}

impl Runner {
    fn want(&self, mode: &str) -> bool {
        self.mode.as_deref().is_none_or(|m| m == mode)
    }

    fn time(
        &mut self,
        mode: &'static str,
        id: &'static str,
        param: &str,
        b: Budget,
        f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        if !self.want(mode) {
            return Ok(());
        }
        let t = auto_bench(f, b)?;
        self.report(mode, id, param, t);
        Ok(())
    }

    fn report(&mut self, mode: &'static str, id: &'static str, param: &str, t: (f64, f64, f64, usize, usize)) {
        let (median_ms, min_ms, max_ms, reps, inner) = t;
        let r = Record { mode, id, param: param.to_string(), median_ms, min_ms, max_ms, reps, inner };
        let (figure, unit) = r.figure();
        if self.json {
            println!(
                "{}",
                json!({"peer": "rivulet", "mode": r.mode, "id": r.id, "param": r.param, "median_ms": r.median_ms,
                       "min_ms": r.min_ms, "max_ms": r.max_ms, "figure": figure, "unit": unit, "reps": r.reps,
                       "inner": r.inner, "simd": rivulet::simd_level(), "device": self.device})
            );
        } else {
            eprintln!("  {} {:<6} {:<40} {:>10.4} ms  {:>9.2} {}", r.id, r.mode, r.param, r.median_ms, figure, unit);
        }
        self.records.push(r);
    }
}

fn normal(shape: &[usize], seed: u64) -> Result<Tensor> {
    ops::random_normal(Ctx::Eager, shape, 0.0, 1.0, DType::F32, Some(seed))
}

/// The B2 expression, written once for both modes.
fn b2_expr(x: &Tensor) -> Result<Tensor> {
    let t = ((x * 1.5)? + 0.5)?.tanh()?;
    (t * x.sigmoid()?)? - (x * x)?
}

pub fn run(ids: &[String], json: bool, mode: Option<&str>, device: &str) -> Result<()> {
    let want = |id: &str| ids.is_empty() || ids.iter().any(|i| i.eq_ignore_ascii_case(id));
    let device = rivulet::Device::parse(device)?;
    let gpu = device.kind == rivulet::DeviceKind::Gpu;
    let mut r = Runner { records: Vec::new(), json, mode: mode.map(str::to_string), device: device.short_name() };
    if !json {
        eprintln!("rivulet bench on {device} (simd={}, threads={})", rivulet::simd_level(), crate::rayon_threads());
    }
    if want("B1") {
        // On a GPU, f32 products are strict f32 (cuBLAS sgemm, as PyTorch's
        // default), with one TensorFloat-32 row (TensorFlow's default) beside.
        let sizes: &[usize] = if gpu { &[128, 512, 1024, 2048, 4096] } else { &[128, 512, 1024, 2048] };
        let tf32 = rivulet::tensor_float_32_execution_enabled();
        if gpu {
            rivulet::enable_tensor_float_32_execution(false);
            let n = 4096;
            let (a, b) = (normal(&[n, n], 1)?, normal(&[n, n], 2)?);
            rivulet::enable_tensor_float_32_execution(true);
            let budget = Budget { budget_s: 3.0, ..Budget::default() };
            r.time("eager", "B1", &format!("n={n} tf32"), budget, || ops::matmul(&a, &b).map(drop))?;
            rivulet::enable_tensor_float_32_execution(false);
        }
        for &n in sizes {
            let (a, b) = (normal(&[n, n], 1)?, normal(&[n, n], 2)?);
            let p = format!("n={n}");
            let budget = || Budget { budget_s: if n >= 1024 { 3.0 } else { 2.0 }, ..Budget::default() };
            r.time("eager", "B1", &p, budget(), || ops::matmul(&a, &b).map(drop))?;
            let g = Graph::new();
            let (pa, pb) = (g.placeholder("a", DType::F32, [n, n])?, g.placeholder("b", DType::F32, [n, n])?);
            let c = ops::matmul(&pa, &pb)?;
            let s = Session::new(&g);
            r.time("graph", "B1", &p, budget(), || s.run(&[&c], &[(&pa, &a), (&pb, &b)]).map(drop))?;
        }
        rivulet::enable_tensor_float_32_execution(tf32);
    }
    if want("B2") || want("B3") {
        let x = normal(&[4096, 4096], 3)?;
        let g = Graph::new();
        let px = g.placeholder("x", DType::F32, [4096, 4096])?;
        let s = Session::new(&g);
        if want("B2") {
            let b = || Budget { budget_s: 3.0, ..Budget::default() };
            r.time("eager", "B2", "4096x4096", b(), || b2_expr(&x).map(drop))?;
            let y = b2_expr(&px)?;
            r.time("graph", "B2", "4096x4096", b(), || s.run(&[&y], &[(&px, &x)]).map(drop))?;
        }
        if want("B3") {
            r.time("eager", "B3", "sum all 4096x4096", Budget::default(), || x.sum_all().map(drop))?;
            let y = px.sum_all()?;
            r.time("graph", "B3", "sum all 4096x4096", Budget::default(), || s.run(&[&y], &[(&px, &x)]).map(drop))?;
            r.time("eager", "B3", "mean axis=1 4096x4096", Budget::default(), || x.mean(1, false).map(drop))?;
            let y = px.mean(1, false)?;
            r.time("graph", "B3", "mean axis=1 4096x4096", Budget::default(), || s.run(&[&y], &[(&px, &x)]).map(drop))?;
        }
    }
    if want("B4") {
        let x = normal(&[4096, 1024], 4)?;
        r.time("eager", "B4", "4096x1024 axis=-1", Budget::default(), || x.softmax(-1).map(drop))?;
        let g = Graph::new();
        let px = g.placeholder("x", DType::F32, [4096, 1024])?;
        let y = px.softmax(-1)?;
        let s = Session::new(&g);
        r.time("graph", "B4", "4096x1024 axis=-1", Budget::default(), || s.run(&[&y], &[(&px, &x)]).map(drop))?;
    }
    if want("B5") {
        b5(&mut r)?;
    }
    if want("B6") {
        b6(&mut r)?;
    }
    if want("B7") {
        b7(&mut r)?;
    }
    if want("B9") {
        b9(&mut r)?;
    }
    if want("B10") {
        b10(&mut r)?;
    }
    if want("B11") {
        b11(&mut r)?;
    }
    if want("B8") {
        let b8 = |per| Budget { min_reps: 5, max_reps: 15, per, ..Budget::default() };
        r.time("eager", "B8", "eager: a = a + 1", b8(10_000), || {
            let mut a = Tensor::scalar(1.0f32);
            for _ in 0..10_000 {
                a = (&a + 1.0)?;
            }
            Ok(())
        })?;
        let g = Graph::new();
        let p = g.placeholder("a", DType::F32, ())?;
        let y = (&p + 1.0)?;
        let s = Session::new(&g);
        r.time("graph", "B8", "graph: one-add function, call + fetch result each", b8(1_000), || {
            let mut a = Tensor::scalar(1.0f32);
            for _ in 0..1_000 {
                a = s.run(&[&y], &[(&p, &a)])?.swap_remove(0);
            }
            Ok(())
        })?;
        // Control-flow overhead: one run of a 100,000-iteration loop whose
        // body is one scalar add (TensorFlow's costs tens of us an iteration).
        let g = Graph::new();
        let limit = g.placeholder("limit", DType::I32, ())?;
        let count = while_loop(
            |i: &Tensor| ops::less(i, &limit),
            |i: &Tensor| ops::add(i, &Tensor::scalar(1i32)),
            Tensor::scalar(0i32),
            &WhileOptions::default(),
        )?;
        let s = Session::new(&g);
        let n = Tensor::scalar(100_000i32);
        r.time("graph", "B8", "while_loop: one scalar add per iteration", b8(100_000), || {
            s.run(&[&count], &[(&limit, &n)]).map(drop)
        })?;
    }
    Ok(())
}
