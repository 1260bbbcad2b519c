//! The 2-D heat equation `u_t = α ∇²u` on a periodic square, integrated
//! with explicit Euler steps inside one `while_loop` (a single graph node),
//! and checked against the analytic decay of a Fourier mode:
//! `u = sin(kx) sin(ly) · exp(-α (k² + l²) t)`.
//!
//! `cargo run --release --example heat`

use rivulet::ops::{self, grid::laplacian, Boundary};
use rivulet::sim::{integrate, Method};
use rivulet::{Result, Tensor, WhileOptions};

/// What a run measured.
#[derive(Debug)]
pub struct HeatReport {
    /// Largest difference from the analytic solution, relative to the initial amplitude.
    pub max_error: f64,
    /// The amplitude at the end, measured and analytic.
    pub amplitude: (f64, f64),
    /// The amplitude the discrete scheme gives exactly (`(1 + dt λ_h)^steps`).
    pub scheme_amplitude: f64,
}

/// A run: the field and the mode's amplitude at each frame.
pub struct HeatRun {
    /// `(t, measured amplitude, analytic amplitude)` at each frame, the first at t = 0.
    pub amplitude: Vec<(f64, f64, f64)>,
    /// The field at each frame (the first is the initial mode).
    pub frames: Vec<Tensor>,
    /// The report at the last frame.
    pub report: HeatReport,
}

/// `n`×`n` grid on [0, 2π)², mode (k, l) = (1, 2), α = 0.5, `steps` steps of
/// dt = 0.2 h² / α, split into `frames` equal loops (each one `while_loop`).
pub fn simulate(n: usize, steps: u64, frames: u64) -> Result<HeatRun> {
    let (k, l, alpha) = (1.0f64, 2.0f64, 0.5f64);
    let h = 2.0 * std::f64::consts::PI / n as f64;
    let dt = 0.2 * h * h / alpha;
    let mode: Vec<f64> = (0..n * n).map(|p| ((p / n) as f64 * h * k).sin() * ((p % n) as f64 * h * l).sin()).collect();
    let u0 = Tensor::from_vec(mode.clone(), vec![n, n])?;
    let rhs = |_: &Tensor, u: &Tensor| ops::mul(&laplacian(u, &[h, h], Boundary::Periodic)?, alpha);
    let norm2: f64 = mode.iter().map(|m| m * m).sum();
    let per = steps / frames.max(1);
    let mut run = HeatRun {
        amplitude: vec![(0.0, 1.0, 1.0)],
        frames: vec![u0.clone()],
        report: HeatReport { max_error: 0.0, amplitude: (1.0, 1.0), scheme_amplitude: 1.0 },
    };
    let mut u = u0;
    for f in 1..=frames.max(1) {
        let t0 = dt * ((f - 1) * per) as f64;
        u = integrate(rhs, &u, t0, dt, per, Method::Euler, &WhileOptions::default())?;
        let t = dt * (f * per) as f64;
        let exact = (-alpha * (k * k + l * l) * t).exp();
        let got = u.to_vec::<f64>()?;
        // The amplitude: the projection onto the mode.
        let amplitude = got.iter().zip(&mode).map(|(g, m)| g * m).sum::<f64>() / norm2;
        run.amplitude.push((t, amplitude, exact));
        run.frames.push(u.clone());
        let lambda = alpha * ((2.0 * (k * h).cos() - 2.0) + (2.0 * (l * h).cos() - 2.0)) / (h * h);
        let max_error = got.iter().zip(&mode).map(|(g, m)| (g - m * exact).abs()).fold(0.0, f64::max);
        run.report = HeatReport {
            max_error,
            amplitude: (amplitude, exact),
            scheme_amplitude: (1.0 + dt * lambda).powi((f * per) as i32),
        };
    }
    Ok(run)
}

/// [`simulate`] in one loop of `steps` steps.
pub fn run(n: usize, steps: u64) -> Result<HeatReport> {
    Ok(simulate(n, steps, 1)?.report)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run(64, 200)?;
    println!(
        "heat 64x64, 200 Euler steps: amplitude {:.6} (analytic {:.6}, the scheme's own {:.6}); max error {:.2e}",
        r.amplitude.0, r.amplitude.1, r.scheme_amplitude, r.max_error
    );
    Ok(())
}
