//! `rivulet bench`: the BENCHMARKS.md workloads, timed the way
//! `shared/peers/common.py` times them (warm-up, calibrated inner loop,
//! median of the samples), printed as a table or as the peers' JSON lines.

use rivulet::{ops, Ctx, DType, Graph, Result, Session, Tensor};
use serde_json::json;
use std::time::Instant;

const N2: f64 = 4096.0 * 4096.0;

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
    f()?;
    let (mut k, t0) = (1, Instant::now());
    while k < 3 || t0.elapsed().as_secs_f64() < 0.3 {
        f()?;
        k += 1;
    }
    let t = Instant::now();
    f()?;
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let inner = ((5e-3 / one).ceil() as usize).max(1);
    let reps = ((b.budget_s / (one * inner as f64)) as usize).clamp(b.min_reps, b.max_reps);
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            f()?;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3 / inner as f64 / b.per as f64);
    }
    samples.sort_by(f64::total_cmp);
    let m = samples.len();
    let median = if m % 2 == 1 { samples[m / 2] } else { 0.5 * (samples[m / 2 - 1] + samples[m / 2]) };
    Ok((median, samples[0], samples[m - 1], reps, inner))
}

struct Runner {
    records: Vec<Record>,
    json: bool,
    mode: Option<String>,
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
        let (median_ms, min_ms, max_ms, reps, inner) = auto_bench(f, b)?;
        let r = Record { mode, id, param: param.to_string(), median_ms, min_ms, max_ms, reps, inner };
        let (figure, unit) = r.figure();
        if self.json {
            println!(
                "{}",
                json!({"peer": "rivulet", "mode": r.mode, "id": r.id, "param": r.param, "median_ms": r.median_ms,
                       "min_ms": r.min_ms, "max_ms": r.max_ms, "figure": figure, "unit": unit, "reps": r.reps,
                       "inner": r.inner, "simd": rivulet::simd_level()})
            );
        } else {
            eprintln!("  {} {:<6} {:<40} {:>10.4} ms  {:>9.2} {}", r.id, r.mode, r.param, r.median_ms, figure, unit);
        }
        self.records.push(r);
        Ok(())
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

pub fn run(ids: &[String], json: bool, mode: Option<&str>) -> Result<()> {
    let want = |id: &str| ids.is_empty() || ids.iter().any(|i| i.eq_ignore_ascii_case(id));
    let mut r = Runner { records: Vec::new(), json, mode: mode.map(str::to_string) };
    if !json {
        eprintln!("rivulet bench (simd={}, threads={})", rivulet::simd_level(), crate::rayon_threads());
    }
    if want("B1") {
        for n in [128usize, 512, 1024, 2048] {
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
    }
    Ok(())
}
