//! The 2-D wave equation `u_tt = c² ∇²u` on a periodic square, stepped by
//! leapfrog (`u⁺ = 2u - u⁻ + (c dt)² ∇²u`) inside `while_loop`s, from a
//! Gaussian bump at rest. Leapfrog conserves the discrete energy
//! `E = ½ Σ ((u⁺ - u)/dt)² h² - ½ c² Σ u⁺ ∇²u h²` exactly; the run measures
//! its drift, and the drift of the plain energy `½|u_t|² + ½ c²|∇u|²`.
//!
//! `cargo run --release --example wave`

use rivulet::ops::{self, grid::laplacian, Boundary};
use rivulet::{while_loop, Result, Tensor, WhileOptions};

/// A run: the field at each frame and the energy history.
pub struct WaveRun {
    /// `(t, discrete energy)` at each frame, the first at t = 0.
    pub energy: Vec<(f64, f64)>,
    /// The field at each frame (the first is the initial bump).
    pub frames: Vec<Tensor>,
    /// The largest relative change of the discrete energy from its first value.
    pub drift: f64,
    /// The time step.
    pub dt: f64,
}

/// An `n`×`n` grid on [0, 1)², c = 1, dt = 0.5 h (CFL 0.5), `steps` steps
/// split into `frames` equal loops (each one `while_loop`).
pub fn simulate(n: usize, steps: u64, frames: u64) -> Result<WaveRun> {
    let (c, h) = (1.0f64, 1.0 / n as f64);
    let dt = 0.5 * h / c;
    let bump: Vec<f64> = (0..n * n)
        .map(|p| {
            let (x, y) = ((p % n) as f64 * h - 0.5, (p / n) as f64 * h - 0.5);
            (-(x * x + y * y) / 0.005).exp()
        })
        .collect();
    let lap = |u: &Tensor| laplacian(u, &[h, h], Boundary::Periodic);
    let k2 = (c * dt) * (c * dt);
    let u0 = Tensor::from_vec(bump, vec![n, n])?;
    // At rest: u(-dt) = u(0) + ½ (c dt)² ∇²u(0) (second order).
    let mut prev = ops::add(&u0, &ops::mul(&lap(&u0)?, 0.5 * k2)?)?;
    let mut u = u0.clone();
    let energy_of = |prev: &Tensor, u: &Tensor| -> Result<f64> {
        let v = ops::div(&ops::sub(u, prev)?, dt)?;
        let kinetic = ops::sum(&ops::square(&v)?, rivulet::Axes::All, false)?.to_scalar::<f64>()?;
        let potential = ops::sum(&ops::mul(u, &lap(prev)?)?, rivulet::Axes::All, false)?.to_scalar::<f64>()?;
        Ok(0.5 * (kinetic - c * c * potential) * h * h)
    };
    let per = steps / frames.max(1);
    let mut run = WaveRun { energy: vec![(0.0, energy_of(&prev, &u)?)], frames: vec![u0], drift: 0.0, dt };
    for f in 1..=frames.max(1) {
        let options = WhileOptions { maximum_iterations: Some(per), ..WhileOptions::default() };
        let (p, q) = while_loop(
            |_: &(Tensor, Tensor)| Ok(Tensor::scalar(true)),
            |(p, q): &(Tensor, Tensor)| {
                let next = ops::sub(&ops::add(&ops::mul(q, 2.0)?, &ops::mul(&lap(q)?, k2)?)?, p)?;
                Ok((q.clone(), next))
            },
            (prev, u),
            &options,
        )?;
        (prev, u) = (p, q);
        run.energy.push(((f * per) as f64 * dt, energy_of(&prev, &u)?));
        run.frames.push(u.clone());
    }
    let e0 = run.energy[0].1;
    run.drift = run.energy.iter().map(|(_, e)| ((e - e0) / e0).abs()).fold(0.0, f64::max);
    Ok(run)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = simulate(128, 512, 8)?;
    let (t, e) = r.energy[r.energy.len() - 1];
    println!("wave 128x128, 512 leapfrog steps to t = {t:.3}: energy {e:.9} ({:.1e} relative drift)", r.drift);
    Ok(())
}
