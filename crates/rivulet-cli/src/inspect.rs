//! `rivulet inspect`: what the session's graph optimizer does to a graph —
//! the nodes before and after each pass, the fused groups, and the memory
//! plan (peak bytes with and without optimization).

use rivulet::nn::losses::sparse_softmax_cross_entropy;
use rivulet::nn::{Initializer, Optimizer};
use rivulet::{
    ops, Ctx, DType, Error, Graph, Operation, PlanReport, Result, Session, SessionOptions, Tensor, Variable,
};
use std::path::{Path, PathBuf};

/// The B5 training graph (MLP 784-512-512-10, Adam): the default subject.
/// A graph and the fetches, feeds and targets of the request to inspect.
type Subject = (Graph, Vec<Tensor>, Vec<Tensor>, Vec<Operation>);

fn mlp_training_graph() -> Result<Subject> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [128, 784])?;
    let y = g.placeholder("y", DType::I32, [128])?;
    let mut h = x.clone();
    let mut vars = Vec::new();
    for (i, &(a, b)) in [(784usize, 512usize), (512, 512), (512, 10)].iter().enumerate() {
        let _scope = g.name_scope(&format!("dense_{i}"));
        let w = Variable::in_graph(
            &g,
            "kernel",
            &Initializer::GlorotUniform.init(&g, [a, b], DType::F32, Some(i as u64))?,
            true,
        )?;
        let bias = Variable::in_graph(&g, "bias", &ops::zeros(Ctx::Graph(&g), [b], DType::F32)?, true)?;
        h = (&ops::matmul(&h, &w.read())? + &bias.read())?;
        if i < 2 {
            h = ops::relu(&h)?;
        }
        vars.push(w);
        vars.push(bias);
    }
    let loss = sparse_softmax_cross_entropy(&y, &h)?.named("loss")?;
    let refs: Vec<&Variable> = vars.iter().collect();
    let train = Optimizer::adam(1e-3).minimize(&loss, &refs)?;
    Ok((g, vec![loss], vec![x, y], vec![train]))
}

fn print_report(title: &str, r: &PlanReport) {
    println!("== {title}");
    println!(
        "steps: {}   in-place steps: {}   peak bytes: {}",
        r.steps,
        r.in_place,
        r.peak_bytes.map_or("unknown (run-time shapes)".into(), |b| b.to_string())
    );
}

pub fn run(
    file: Option<PathBuf>,
    fetch: Vec<String>,
    feed: Vec<String>,
    target: Vec<String>,
    dot: Option<PathBuf>,
    full: bool,
    profile: Option<usize>,
) -> Result<()> {
    let (g, fetches, feeds, targets) = match &file {
        None => {
            println!("no graph given: inspecting the B5 MLP training step (rivulet inspect FILE.json --fetch NODE:0 --feed NODE:0 ...)");
            mlp_training_graph()?
        }
        Some(path) => {
            let in_file = |e: Error| Error::new(e.kind(), format!("{}: {}", path.display(), e.message()));
            let text = std::fs::read_to_string(path).map_err(|e| in_file(Error::from(e)))?;
            let g = Graph::from_json(&text).map_err(in_file)?;
            let f = fetch.iter().map(|n| g.tensor(n)).collect::<Result<Vec<_>>>()?;
            let d = feed.iter().map(|n| g.tensor(n)).collect::<Result<Vec<_>>>()?;
            let t = target.iter().map(|n| g.operation(n)).collect::<Result<Vec<_>>>()?;
            (g, f, d, t)
        }
    };
    let fetch_refs: Vec<&Tensor> = fetches.iter().collect();
    let feed_refs: Vec<&Tensor> = feeds.iter().collect();
    let target_refs: Vec<&Operation> = targets.iter().collect();
    let optimized = Session::new(&g).explain(&fetch_refs, &feed_refs, &target_refs)?;
    let plain =
        Session::with_options(&g, SessionOptions::unoptimized()).explain(&fetch_refs, &feed_refs, &target_refs)?;
    println!("graph: {} nodes", g.num_nodes());
    for p in &optimized.passes {
        println!("  after {:<34} {:>5} nodes", p.pass, p.nodes);
    }
    print_report("unoptimized plan", &plain);
    print_report("optimized plan", &optimized);
    if !optimized.fused.is_empty() {
        println!("== fused groups ({})", optimized.fused.len());
        for (name, program) in &optimized.fused {
            println!("{name}:");
            for line in program.lines() {
                println!("    {line}");
            }
        }
    }
    if !optimized.bodies.is_empty() {
        println!("== control-flow bodies");
        print_bodies(&optimized, 1);
    }
    if full {
        if let (Some(first), Some(last)) = (optimized.passes.first(), optimized.passes.last()) {
            println!("== before optimization\n{}", first.text);
            println!("== after optimization\n{}", last.text);
        }
    }
    if let Some(dir) = dot {
        write_dots(&dir, &optimized)?;
    }
    if let Some(runs) = profile {
        print_profile(&g, &fetch_refs, &feeds, &target_refs, runs)?;
    }
    Ok(())
}

/// Run the optimized plan `runs` times on made-up feeds (standard normal
/// floats, zeros otherwise) and print where the time goes.
fn print_profile(g: &Graph, fetches: &[&Tensor], feeds: &[Tensor], targets: &[&Operation], runs: usize) -> Result<()> {
    let values = feeds
        .iter()
        .map(|f| {
            if f.shape().dims().contains(&rivulet::tensor::UNKNOWN) {
                return Err(Error::new(
                    rivulet::ErrorKind::InvalidArgument,
                    format!("cannot make up a value for feed of shape {}: its dimensions must be known", f.shape()),
                ));
            }
            let shape = f.shape().clone();
            if f.dtype().is_float() {
                ops::random_normal(Ctx::Eager, shape, 0.0, 1.0, f.dtype(), Some(0))
            } else {
                ops::zeros(Ctx::Eager, shape, f.dtype())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let pairs: Vec<(&Tensor, &Tensor)> = feeds.iter().zip(&values).collect();
    let session = Session::new(g);
    session.run_targets(&[&g.global_variables_initializer()?])?;
    // One run first: it compiles the plan and warms the allocator.
    session.profile(fetches, &pairs, targets, 1)?;
    let p = session.profile(fetches, &pairs, targets, runs)?;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        session.run_with_targets(fetches, &pairs, targets)?;
    }
    let wall = started.elapsed().as_secs_f64() / runs as f64;
    let total = p.total_seconds();
    println!(
        "== profile: {} steps, {:.3} ms per run step by step, {:.3} ms per ordinary run; mean of {} runs",
        p.steps.len(),
        total * 1e3,
        wall * 1e3,
        p.runs
    );
    println!("by op:");
    for (op, t, n) in p.by_op() {
        println!("  {op:<28} {n:>4} steps {:>10.3} ms {:>6.1}%", t * 1e3, 100.0 * t / total);
    }
    let mut steps: Vec<_> = p.steps.iter().collect();
    steps.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    println!("slowest steps:");
    for s in steps.iter().take(20) {
        println!("  {:<48} {:<20} {:<16} {:>10.3} ms", s.node, s.op, s.device.short_name(), s.seconds * 1e3);
    }
    Ok(())
}

/// The plans of control-flow branches and bodies, nested as they nest.
fn print_bodies(r: &PlanReport, depth: usize) {
    for (node, function, body) in &r.bodies {
        let pad = "  ".repeat(depth);
        println!(
            "{pad}{node} / {function}: {} steps, {} fused groups, peak bytes {}",
            body.steps,
            body.fused.len(),
            body.peak_bytes.map_or("unknown".into(), |b| b.to_string())
        );
        if let Some(last) = body.passes.last() {
            for line in last.text.lines() {
                println!("{pad}    {line}");
            }
        }
        print_bodies(body, depth + 1);
    }
}

fn write_dots(dir: &Path, r: &PlanReport) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::from)?;
    for (i, p) in r.passes.iter().enumerate() {
        let base = dir.join(format!("{i:02}_{}", p.pass));
        std::fs::write(base.with_extension("dot"), &p.dot).map_err(Error::from)?;
        std::fs::write(base.with_extension("txt"), &p.text).map_err(Error::from)?;
    }
    println!("wrote {} DOT and text dumps to {}", r.passes.len(), dir.display());
    Ok(())
}
