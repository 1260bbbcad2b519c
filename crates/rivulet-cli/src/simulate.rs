//! `rivulet simulate NAME`: the worked simulations of `crates/rivulet/examples`
//! (the same code, included from there), run and written out as data
//! (CSV) and pictures (PNG heat maps and line plots, GIF animations).

#[path = "../../rivulet/examples/cavity.rs"]
mod cavity;
#[path = "../../rivulet/examples/heat.rs"]
mod heat;
#[path = "../../rivulet/examples/inverse.rs"]
mod inverse;
#[path = "../../rivulet/examples/karman.rs"]
mod karman;
#[path = "../../rivulet/examples/taylor_green.rs"]
mod taylor_green;
#[path = "../../rivulet/examples/wave.rs"]
mod wave;

use rivulet::plot::{self, Animation, Colormap, HeatMap, LinePlot, Series};
use rivulet::{Error, ErrorKind, Result};
use std::fmt::Write as _;
use std::path::Path;

/// The simulations this command runs.
pub const SIMULATIONS: [&str; 6] = ["heat", "wave", "taylor-green", "cavity", "karman", "inverse"];

/// Run simulation `name` on an `n`×`n` grid for `steps` steps at Reynolds
/// number `re` (defaults per simulation), writing into `out/name/`.
pub fn run(name: &str, n: Option<usize>, steps: Option<u64>, re: Option<f64>, out: &Path) -> Result<()> {
    if re.is_some() && !matches!(name, "cavity" | "karman") {
        return Err(Error::new(ErrorKind::InvalidArgument, format!("--re is for cavity and karman, not for '{name}'")));
    }
    let dir = out.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot create {}: {e}", dir.display())))?;
    match name {
        "heat" => heat_run(n.unwrap_or(64), steps.unwrap_or(400), &dir),
        "wave" => wave_run(n.unwrap_or(128), steps.unwrap_or(512), &dir),
        "taylor-green" => taylor_green_run(n.unwrap_or(128), steps.unwrap_or(256), &dir),
        "karman" => karman_run(n.unwrap_or(64), steps.unwrap_or(12_000), re.unwrap_or(150.0), &dir),
        "inverse" => inverse_run(n.unwrap_or(32), steps.unwrap_or(150), &dir),
        "cavity" => cavity_run(n.unwrap_or(129), steps.unwrap_or(1_000_000), re.unwrap_or(100.0), &dir),
        other => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("no simulation '{other}' (there are: {})", SIMULATIONS.join(", ")),
        )),
    }
}

const FRAMES: u64 = 16;

fn check_grid(n: usize, steps: u64) -> Result<()> {
    if !(8..=4096).contains(&n) || steps < FRAMES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("--n must be 8..=4096 and --steps at least {FRAMES}, got {n} and {steps}"),
        ));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::new(ErrorKind::Io, format!("cannot write {}: {e}", path.display())))
}

fn heat_run(n: usize, steps: u64, dir: &Path) -> Result<()> {
    check_grid(n, steps)?;
    let r = heat::simulate(n, steps, FRAMES)?;
    let two_pi = 2.0 * std::f64::consts::PI;
    let map = |title: String| HeatMap {
        title,
        colormap: Colormap::Diverging,
        range: Some((-1.0, 1.0)),
        extent: [0.0, two_pi, 0.0, two_pi],
        ..HeatMap::default()
    };
    let mut gif = Animation::create(dir.join("heat.gif"), map(String::new()).size, 120)?;
    for (f, (t, ..)) in r.frames.iter().zip(&r.amplitude) {
        gif.frame(f, &map(format!("heat: u at t = {t:.3}")))?;
    }
    let last = r.frames.last().expect("frames");
    let t_end = r.amplitude.last().map_or(0.0, |a| a.0);
    // The last frame on its own scale (the animation keeps the first one's).
    let own = HeatMap { range: None, ..map(format!("heat: u at t = {t_end:.3}")) };
    plot::save_heat_map(dir.join("field.png"), last, &own)?;
    let mut csv = String::from("t,amplitude,analytic\n");
    for (t, a, e) in &r.amplitude {
        let _ = writeln!(csv, "{t},{a},{e}");
    }
    write(&dir.join("amplitude.csv"), &csv)?;
    let series = [
        Series {
            name: "measured".into(),
            x: r.amplitude.iter().map(|a| a.0).collect(),
            y: r.amplitude.iter().map(|a| a.1).collect(),
        },
        Series {
            name: "analytic".into(),
            x: r.amplitude.iter().map(|a| a.0).collect(),
            y: r.amplitude.iter().map(|a| a.2).collect(),
        },
    ];
    let opts = LinePlot {
        title: "heat: decay of the (1, 2) mode".into(),
        x_label: "t".into(),
        y_label: "amplitude".into(),
        log_y: true,
        ..LinePlot::default()
    };
    plot::save_line_plot(dir.join("amplitude.png"), &series, &opts)?;
    let rep = &r.report;
    println!(
        "heat {n}x{n}, {steps} Euler steps to t = {t_end:.4}: amplitude {:.6} (analytic {:.6}, the scheme's own {:.6}), max error {:.2e}",
        rep.amplitude.0, rep.amplitude.1, rep.scheme_amplitude, rep.max_error
    );
    println!("wrote {}/{{field.png, heat.gif, amplitude.csv, amplitude.png}}", dir.display());
    Ok(())
}

fn wave_run(n: usize, steps: u64, dir: &Path) -> Result<()> {
    check_grid(n, steps)?;
    let r = wave::simulate(n, steps, FRAMES)?;
    let map = |title: String| HeatMap {
        title,
        colormap: Colormap::Diverging,
        range: Some((-0.3, 0.3)),
        ..HeatMap::default()
    };
    let mut gif = Animation::create(dir.join("wave.gif"), map(String::new()).size, 120)?;
    for (f, (t, _)) in r.frames.iter().zip(&r.energy) {
        gif.frame(f, &map(format!("wave: u at t = {t:.3}")))?;
    }
    let t_end = r.energy.last().map_or(0.0, |e| e.0);
    plot::save_heat_map(
        dir.join("field.png"),
        r.frames.last().expect("frames"),
        &map(format!("wave: u at t = {t_end:.3}")),
    )?;
    let e0 = r.energy[0].1;
    let mut csv = String::from("t,energy,relative_drift\n");
    for (t, e) in &r.energy {
        let _ = writeln!(csv, "{t},{e},{}", (e - e0) / e0);
    }
    write(&dir.join("energy.csv"), &csv)?;
    let series = [Series {
        name: "discrete energy".into(),
        x: r.energy.iter().map(|e| e.0).collect(),
        y: r.energy.iter().map(|e| (e.1 - e0) / e0).collect(),
    }];
    let opts = LinePlot {
        title: "wave: leapfrog energy drift".into(),
        x_label: "t".into(),
        y_label: "(E - E0) / E0".into(),
        ..LinePlot::default()
    };
    plot::save_line_plot(dir.join("energy.png"), &series, &opts)?;
    println!("wave {n}x{n}, {steps} leapfrog steps (dt = {:.2e}) to t = {t_end:.4}: energy {e0:.9}, largest relative drift {:.1e}", r.dt, r.drift);
    println!("wrote {}/{{field.png, wave.gif, energy.csv, energy.png}}", dir.display());
    Ok(())
}

fn taylor_green_run(n: usize, steps: u64, dir: &Path) -> Result<()> {
    if !(32..=4096).contains(&n) || !n.is_multiple_of(4) || steps < 16 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("taylor-green refines n/4, n/2, n: --n must be a multiple of 4 in 32..=4096 and --steps at least 16, got {n} and {steps}"),
        ));
    }
    let (runs, orders) = taylor_green::convergence(n, steps)?;
    let mut csv = String::from("n,h,steps,max_error,energy_ratio,order\n");
    for (k, r) in runs.iter().enumerate() {
        let order = if k == 0 { String::new() } else { orders[k - 1].to_string() };
        let h = 2.0 * std::f64::consts::PI / r.n as f64;
        let _ = writeln!(csv, "{},{h},{},{},{},{order}", r.n, r.steps, r.error, r.energy_ratio);
    }
    write(&dir.join("convergence.csv"), &csv)?;
    let log_n: Vec<f64> = runs.iter().map(|r| (r.n as f64).log2()).collect();
    // Second order through the coarsest point, for reference.
    let e0 = runs[0].error;
    let series = [
        Series { name: "max error".into(), x: log_n.clone(), y: runs.iter().map(|r| r.error).collect() },
        Series {
            name: "second order".into(),
            x: log_n.clone(),
            y: log_n.iter().map(|l| e0 * (2f64).powf(-2.0 * (l - log_n[0]))).collect(),
        },
    ];
    let opts = LinePlot {
        title: format!("taylor-green: error at t = {} under refinement", taylor_green::T_END),
        x_label: "log2 n".into(),
        y_label: "max |u - u_exact| / F(t)".into(),
        log_y: true,
        ..LinePlot::default()
    };
    plot::save_line_plot(dir.join("convergence.png"), &series, &opts)?;
    let last = runs.last().expect("three runs");
    let two_pi = 2.0 * std::f64::consts::PI;
    let map = HeatMap {
        title: format!("taylor-green: vorticity at t = {}, {n}x{n}", taylor_green::T_END),
        colormap: Colormap::Diverging,
        extent: [0.0, two_pi, 0.0, two_pi],
        ..HeatMap::default()
    };
    plot::save_heat_map(dir.join("vorticity.png"), &last.vorticity, &map)?;
    for r in &runs {
        println!(
            "taylor-green {0}x{0}, {1} RK4 steps to t = {2}: max error {3:.3e} of the amplitude, energy ratio {4:.6}, max |div u| h/F {5:.1e}",
            r.n,
            r.steps,
            taylor_green::T_END,
            r.error,
            r.energy_ratio,
            r.divergence
        );
    }
    println!("observed orders of accuracy: {orders:.3?} (the scheme's: 2)");
    println!("wrote {}/{{convergence.csv, convergence.png, vorticity.png}}", dir.display());
    Ok(())
}

fn cavity_run(n: usize, max_steps: u64, re: f64, dir: &Path) -> Result<()> {
    if !(5..=1025).contains(&n) || n.is_multiple_of(2) || !(re > 0.0 && re <= 1e4) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("the cavity needs an odd --n in 5..=1025 and --re in (0, 10000], got {n} and {re}"),
        ));
    }
    let setup = cavity::CavitySetup { n, re, max_steps, tolerance: 1e-3 };
    let run = cavity::solve(&setup)?;
    let (ul, vl) = (run.u_centerline(), run.v_centerline());
    let mut csv = String::from("y,u\n");
    for (y, u) in &ul {
        let _ = writeln!(csv, "{y},{u}");
    }
    write(&dir.join("u_centerline.csv"), &csv)?;
    let mut csv = String::from("x,v\n");
    for (x, v) in &vl {
        let _ = writeln!(csv, "{x},{v}");
    }
    write(&dir.join("v_centerline.csv"), &csv)?;
    let field = |v: &[f64]| rivulet::Tensor::from_vec(v.to_vec(), vec![n, n]);
    let speed: Vec<f64> = run.u.iter().zip(&run.v).map(|(u, v)| u.hypot(*v)).collect();
    // Streamlines: contours of ψ, at Ghia et al.'s levels (the main vortex, then the corner eddies).
    let levels =
        [-0.1, -0.09, -0.07, -0.05, -0.03, -0.01, -1e-3, -1e-4, -1e-5, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 5e-4, 1e-3, 2e-3];
    let lines = plot::contour_lines(&field(&run.psi)?, &levels, [0.0, 1.0, 0.0, 1.0])?;
    let size = (600, 520);
    plot::save_heat_map(
        dir.join("speed.png"),
        &field(&speed)?,
        &HeatMap { title: format!("cavity Re {re}: speed and streamlines"), lines, size, ..HeatMap::default() },
    )?;
    plot::save_heat_map(
        dir.join("vorticity.png"),
        &field(&run.omega)?,
        &HeatMap {
            title: format!("cavity Re {re}: vorticity"),
            colormap: Colormap::Diverging,
            range: Some((-5.0, 5.0)),
            size,
            ..HeatMap::default()
        },
    )?;
    let mut series = vec![
        Series {
            name: "u(y) at x = 0.5".into(),
            x: ul.iter().map(|p| p.0).collect(),
            y: ul.iter().map(|p| p.1).collect(),
        },
        Series {
            name: "v(x) at y = 0.5".into(),
            x: vl.iter().map(|p| p.0).collect(),
            y: vl.iter().map(|p| p.1).collect(),
        },
    ];
    if let (Some((_, u)), Some((_, v))) =
        (cavity::GHIA_U.iter().find(|g| g.0 == re), cavity::GHIA_V.iter().find(|g| g.0 == re))
    {
        // Tabulated from the top; drawn as lines through their points.
        series.push(Series {
            name: "Ghia et al. u".into(),
            x: cavity::GHIA_Y.iter().rev().copied().collect(),
            y: u.iter().rev().copied().collect(),
        });
        series.push(Series {
            name: "Ghia et al. v".into(),
            x: cavity::GHIA_X.iter().rev().copied().collect(),
            y: v.iter().rev().copied().collect(),
        });
    }
    let opts = LinePlot {
        title: format!("cavity Re {re}: centerline velocities"),
        x_label: "position along the centerline".into(),
        y_label: "velocity".into(),
        ..LinePlot::default()
    };
    plot::save_line_plot(dir.join("centerlines.png"), &series, &opts)?;
    let dt = setup.dt();
    println!(
        "cavity Re {re} on {n}x{n}: {} Euler steps (dt = {dt:.2e}, t = {:.2}) in {:.2} s; {} (max |dω/dt| = {:.1e})",
        run.steps,
        run.steps as f64 * dt,
        run.seconds,
        if run.steady { "steady" } else { "NOT steady: --steps ran out" },
        run.residual
    );
    match run.ghia_deviation() {
        Some((du, dv)) => {
            println!("largest deviation from Ghia, Ghia & Shin (1982), Tables I and II: u {du:.4}, v {dv:.4}")
        }
        None => println!("(Ghia et al. tabulate Re 100, 400 and 1000 only; nothing to compare at Re {re})"),
    }
    println!(
        "wrote {}/{{u_centerline.csv, v_centerline.csv, speed.png, vorticity.png, centerlines.png}}",
        dir.display()
    );
    Ok(())
}

fn karman_run(n: usize, steps: u64, re: f64, dir: &Path) -> Result<()> {
    if !((16..=1024).contains(&n) && re > 0.0 && re <= 1000.0) || steps < 2 * FRAMES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "karman needs --n in 16..=1024, --re in (0, 1000] and --steps >= {}, got {n}, {re}, {steps}",
                2 * FRAMES
            ),
        ));
    }
    // About 60 frames, on whole steps.
    let frame_every = (steps / 60).max(1);
    let setup = karman::KarmanSetup { n, re, steps, frame_every };
    let run = karman::simulate(&setup)?;
    // A range that shows the street downstream, not only the boundary layer on the cylinder.
    let last = run.frames.last().expect("frames");
    let mut mags: Vec<f64> = rivulet::ops::cast(last, rivulet::DType::F64)?
        .to_vec::<f64>()?
        .into_iter()
        .filter(|w| w.is_finite())
        .map(f64::abs)
        .collect();
    mags.sort_by(f64::total_cmp);
    let limit = mags.get(mags.len() * 97 / 100).copied().unwrap_or(1.0).max(1e-6);
    let (w, h) = (4 * n as u32, n as u32);
    let size = (960, (960 * h / w + 140).max(220));
    let map = |title: String| HeatMap {
        title,
        colormap: Colormap::Diverging,
        range: Some((-limit, limit)),
        extent: [0.0, 4.0 * n as f64 / run.diameter, 0.0, n as f64 / run.diameter],
        x_label: "x / D".into(),
        y_label: "y / D".into(),
        size,
        ..HeatMap::default()
    };
    let mut gif = Animation::create(dir.join("karman.gif"), size, 80)?;
    for (frame, (step, _)) in run.frames.iter().zip(&run.probe) {
        gif.frame(frame, &map(format!("Kármán street, Re {re}: vorticity at step {step}")))?;
    }
    let steps_done = run.probe.last().map_or(0, |p| p.0);
    plot::save_heat_map(
        dir.join("vorticity.png"),
        last,
        &map(format!("Kármán street, Re {re}: vorticity at step {steps_done}")),
    )?;
    let mut csv = String::from("step,cross_stream_velocity\n");
    for (s, v) in &run.probe {
        let _ = writeln!(csv, "{s},{v}");
    }
    write(&dir.join("probe.csv"), &csv)?;
    let series = [Series {
        name: String::new(),
        x: run.probe.iter().map(|p| p.0 as f64).collect(),
        y: run.probe.iter().map(|p| p.1).collect(),
    }];
    let opts = LinePlot {
        title: "Kármán street: cross-stream velocity 2 D behind the cylinder".into(),
        x_label: "lattice step".into(),
        y_label: "v / (lattice units)".into(),
        ..LinePlot::default()
    };
    plot::save_line_plot(dir.join("probe.png"), &series, &opts)?;
    println!(
        "karman {}x{n} at Re {re}: {steps_done} lattice Boltzmann steps in {:.1} s; Strouhal number {}",
        4 * n,
        run.seconds,
        run.strouhal.map_or("- (no shedding yet: more --steps)".to_string(), |s| format!(
            "{s:.3} (experiments: about 0.16-0.2)"
        ))
    );
    println!("wrote {}/{{karman.gif, vorticity.png, probe.csv, probe.png}}", dir.display());
    Ok(())
}

fn inverse_run(n: usize, iterations: u64, dir: &Path) -> Result<()> {
    if !(8..=512).contains(&n) || !(1..=100_000).contains(&iterations) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("inverse needs --n in 8..=512 and --steps (gradient descent iterations) in 1..=100000, got {n} and {iterations}"),
        ));
    }
    let r = inverse::recover(n, iterations as usize)?;
    let mut csv = String::from("iteration,loss\n");
    for (k, l) in r.losses.iter().enumerate() {
        let _ = writeln!(csv, "{k},{l}");
    }
    write(&dir.join("loss.csv"), &csv)?;
    let series =
        [Series { name: String::new(), x: (0..r.losses.len()).map(|k| k as f64).collect(), y: r.losses.clone() }];
    let opts = LinePlot {
        title: "inverse heat problem: loss".into(),
        x_label: "gradient descent iteration".into(),
        y_label: "1/2 |u(T) - observed|^2".into(),
        log_y: true,
        ..LinePlot::default()
    };
    plot::save_line_plot(dir.join("loss.png"), &series, &opts)?;
    let panel = |title: &str| HeatMap {
        title: title.into(),
        colormap: Colormap::Diverging,
        range: Some((-1.0, 1.0)),
        size: (600, 520),
        ..HeatMap::default()
    };
    let (a, b, c) = (
        panel("true initial field"),
        panel(&format!("observed at t = {}", inverse::T_OBSERVED)),
        panel(&format!("recovered ({:.2}% error)", 100.0 * r.error)),
    );
    plot::save_heat_maps(
        dir.join("fields.png"),
        &[(&r.truth, &a), (&r.observed, &b), (&r.recovered, &c)],
        (1500, 480),
    )?;
    println!(
        "inverse heat problem on {n}x{n}: loss {:.3e} -> {:.3e} in {iterations} gradient descent steps through the {}-step simulation",
        r.losses[0],
        r.losses[r.losses.len() - 1],
        inverse::steps(n)
    );
    println!("initial field recovered to {:.3}% (relative L2 error)", 100.0 * r.error);
    println!("wrote {}/{{loss.csv, loss.png, fields.png}}", dir.display());
    Ok(())
}
