//! `rivulet simulate NAME`: the worked simulations of `crates/rivulet/examples`
//! (the same code, included from there), run and written out as data
//! (CSV) and pictures (PNG heat maps and line plots, GIF animations).

#[path = "../../rivulet/examples/heat.rs"]
mod heat;
#[path = "../../rivulet/examples/wave.rs"]
mod wave;

use rivulet::plot::{self, Animation, Colormap, HeatMap, LinePlot, Series};
use rivulet::{Error, ErrorKind, Result};
use std::fmt::Write as _;
use std::path::Path;

/// The simulations this command runs.
pub const SIMULATIONS: [&str; 2] = ["heat", "wave"];

/// Run simulation `name` on an `n`×`n` grid for `steps` steps (defaults per
/// simulation), writing into `out/name/`.
pub fn run(name: &str, n: Option<usize>, steps: Option<u64>, out: &Path) -> Result<()> {
    let dir = out.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot create {}: {e}", dir.display())))?;
    match name {
        "heat" => heat_run(n.unwrap_or(64), steps.unwrap_or(400), &dir),
        "wave" => wave_run(n.unwrap_or(128), steps.unwrap_or(512), &dir),
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
