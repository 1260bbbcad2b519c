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

/// `n`×`n` grid on [0, 2π)², mode (k, l) = (1, 2), α = 0.5, `steps` steps of dt = 0.2 h² / α.
pub fn run(n: usize, steps: u64) -> Result<HeatReport> {
    let (k, l, alpha) = (1.0f64, 2.0f64, 0.5f64);
    let h = 2.0 * std::f64::consts::PI / n as f64;
    let dt = 0.2 * h * h / alpha;
    let mode: Vec<f64> = (0..n * n).map(|p| ((p / n) as f64 * h * k).sin() * ((p % n) as f64 * h * l).sin()).collect();
    let u0 = Tensor::from_vec(mode.clone(), vec![n, n])?;
    let rhs = |_: &Tensor, u: &Tensor| ops::mul(&laplacian(u, &[h, h], Boundary::Periodic)?, alpha);
    let u = integrate(rhs, &u0, 0.0, dt, steps, Method::Euler, &WhileOptions::default())?;
    let t = dt * steps as f64;
    let exact = (-alpha * (k * k + l * l) * t).exp();
    let lambda = alpha * ((2.0 * (k * h).cos() - 2.0) + (2.0 * (l * h).cos() - 2.0)) / (h * h);
    let scheme = (1.0 + dt * lambda).powi(steps as i32);
    let got = u.to_vec::<f64>()?;
    let max_error = got.iter().zip(&mode).map(|(g, m)| (g - m * exact).abs()).fold(0.0, f64::max);
    // The amplitude: the projection onto the mode.
    let norm2: f64 = mode.iter().map(|m| m * m).sum();
    let amplitude = got.iter().zip(&mode).map(|(g, m)| g * m).sum::<f64>() / norm2;
    Ok(HeatReport { max_error, amplitude: (amplitude, exact), scheme_amplitude: scheme })
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
