//! Flow past a cylinder until the Kármán vortex street forms, by the
//! lattice Boltzmann method (D2Q9, BGK collision), written as graph ops:
//! moments and the equilibrium are elementwise arithmetic, streaming is one
//! `roll` per lattice direction, the cylinder bounces populations back.
//!
//! The channel is `4n`×`n` cells, periodic across; the inlet holds the
//! equilibrium at speed `U = 0.1` (lattice units), the outlet copies its
//! neighbour. The cylinder (diameter `n/5`, a cell off the axis to start
//! the shedding sooner) sits at a fifth of the length. The relaxation time
//! follows the Reynolds number: `ν = U D / Re`, `τ = 3ν + ½`.
//!
//! A probe behind the cylinder records the cross-stream velocity; its
//! period gives the Strouhal number `St = D / (period · U)`, about 0.16–0.2
//! for Re 100–200 in experiments (Williamson 1996).
//!
//! `cargo run --release --example karman`

use rivulet::ops::{self, grid::roll};
use rivulet::{function, Axes, DType, Result, Tensor};

/// The D2Q9 lattice: velocities (x, y), weights, and each direction's opposite.
const CX: [f32; 9] = [0.0, 1.0, 0.0, -1.0, 0.0, 1.0, -1.0, -1.0, 1.0];
const CY: [f32; 9] = [0.0, 0.0, 1.0, 0.0, -1.0, 1.0, 1.0, -1.0, -1.0];
const W: [f32; 9] =
    [4.0 / 9.0, 1.0 / 9.0, 1.0 / 9.0, 1.0 / 9.0, 1.0 / 9.0, 1.0 / 36.0, 1.0 / 36.0, 1.0 / 36.0, 1.0 / 36.0];
const OPPOSITE: [i32; 9] = [0, 3, 4, 1, 2, 7, 8, 5, 6];
/// The inflow speed in lattice units (Mach 0.17).
pub const U: f64 = 0.1;

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct KarmanSetup {
    /// Cells across the channel (its length is `4n`).
    pub n: usize,
    pub re: f64,
    /// Lattice steps in all, and between frames.
    pub steps: u64,
    pub frame_every: u64,
}

/// A finished run.
pub struct KarmanRun {
    /// The vorticity at each frame (`n`×`4n`, rows across the channel), NaN inside the cylinder.
    pub frames: Vec<Tensor>,
    /// `(step, cross-stream velocity)` at the probe, one per frame.
    pub probe: Vec<(u64, f64)>,
    /// The cylinder's diameter in cells.
    pub diameter: f64,
    /// The Strouhal number from the probe's last half, if it oscillated.
    pub strouhal: Option<f64>,
    pub seconds: f64,
}

fn lattice(values: &[f32; 9]) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), vec![9, 1, 1])
}

/// The equilibrium populations of density `rho` and velocity `(ux, uy)` (each `[1, ny, nx]` or broadcastable).
fn equilibrium(rho: &Tensor, ux: &Tensor, uy: &Tensor) -> Result<Tensor> {
    let cu = ops::add(&ops::mul(&lattice(&CX)?, ux)?, &ops::mul(&lattice(&CY)?, uy)?)?;
    let usq = ops::add(&ops::square(ux)?, &ops::square(uy)?)?;
    let poly = ops::sub(
        &ops::add(&ops::add(&ops::mul(&cu, 3.0f32)?, &ops::mul(&ops::square(&cu)?, 4.5f32)?)?, 1.0f32)?,
        &ops::mul(&usq, 1.5f32)?,
    )?;
    ops::mul(&ops::mul(&lattice(&W)?, rho)?, &poly)
}

/// Density and velocity of populations `f` (`[9, ny, nx]`), each `[1, ny, nx]`.
fn moments(f: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let rho = ops::sum(f, Axes::from(0), true)?;
    let ux = ops::div(&ops::sum(&ops::mul(f, &lattice(&CX)?)?, Axes::from(0), true)?, &rho)?;
    let uy = ops::div(&ops::sum(&ops::mul(f, &lattice(&CY)?)?, Axes::from(0), true)?, &rho)?;
    Ok((rho, ux, uy))
}

/// The vorticity `∂uy/∂x - ∂ux/∂y` of `f` by central differences, NaN on `solid`.
fn vorticity(f: &Tensor, solid: &Tensor) -> Result<Tensor> {
    let (_, ux, uy) = moments(f)?;
    let d = |u: &Tensor, axis: i64| ops::mul(&ops::sub(&roll(u, &[-1], &[axis])?, &roll(u, &[1], &[axis])?)?, 0.5f32);
    let w = ops::sub(&d(&uy, 2)?, &d(&ux, 1)?)?;
    let nan = ops::mul(&ops::ones_like(&w)?, f32::NAN)?;
    ops::squeeze(&ops::select(solid, &nan, &w)?, &[0])
}

/// Run the channel, keeping a vorticity frame every `frame_every` steps.
pub fn simulate(setup: &KarmanSetup) -> Result<KarmanRun> {
    let KarmanSetup { n, re, steps, frame_every } = setup.clone();
    if n < 16 || !(re > 0.0 && re.is_finite()) || frame_every == 0 || steps < frame_every {
        return Err(rivulet::Error::new(
            rivulet::ErrorKind::InvalidArgument,
            format!("karman needs n >= 16, a positive Re and 0 < frame_every <= steps, got {setup:?}"),
        ));
    }
    let (ny, nx) = (n, 4 * n);
    let diameter = (n / 5) as f64;
    let (cx, cy) = (nx as f64 / 5.0, ny as f64 / 2.0 + 1.0);
    let tau = 3.0 * U * diameter / re + 0.5;
    let solid: Vec<bool> = (0..ny * nx)
        .map(|p| {
            let (y, x) = ((p / nx) as f64, (p % nx) as f64);
            (x - cx).powi(2) + (y - cy).powi(2) <= (diameter / 2.0).powi(2)
        })
        .collect();
    let solid = Tensor::from_vec(solid, vec![1, ny, nx])?;
    let column = |c: usize| Tensor::from_vec((0..nx).map(|x| x == c).collect::<Vec<_>>(), vec![1, 1, nx]);
    let (inlet, outlet) = (column(0)?, column(nx - 1)?);
    let inflow = equilibrium(&Tensor::scalar(1.0f32), &Tensor::scalar(U as f32), &Tensor::scalar(0.0f32))?;
    let omega = (1.0 / tau) as f32;
    let opposite = Tensor::from_vec(OPPOSITE.to_vec(), vec![9])?;
    let shifts: Vec<(i64, i64)> = (0..9).map(|i| (CY[i] as i64, CX[i] as i64)).collect();
    let (solid_c, inlet_c, outlet_c, inflow_c, opposite_c) =
        (solid.clone(), inlet.clone(), outlet.clone(), inflow.clone(), opposite.clone());
    let advance = function(move |args: &[Tensor]| {
        let steps = frame_every;
        let (_, f) = rivulet::while_loop(
            |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(steps as i64)),
            |(i, f): &(Tensor, Tensor)| {
                // The outlet copies its inner neighbour; the inlet is held at the inflow's equilibrium.
                let f = ops::select(&outlet_c, &roll(f, &[1], &[2])?, f)?;
                let (rho, ux, uy) = moments(&f)?;
                let relaxed = ops::sub(&f, &ops::mul(&ops::sub(&f, &equilibrium(&rho, &ux, &uy)?)?, omega)?)?;
                let relaxed = ops::select(&inlet_c, &ops::broadcast_like(&inflow_c, &f)?, &relaxed)?;
                // In the cylinder, each population turns back the way it came.
                let collided = ops::select(&solid_c, &ops::gather(&f, &opposite_c, 0, 0)?, &relaxed)?;
                let streamed = ops::unstack(&collided, 0)?
                    .iter()
                    .zip(&shifts)
                    .map(|(fi, &(sy, sx))| roll(fi, &[sy, sx], &[0, 1]))
                    .collect::<Result<Vec<_>>>()?;
                Ok((ops::add(i, 1i64)?, ops::stack(&streamed.iter().collect::<Vec<_>>(), 0)?))
            },
            (Tensor::scalar(0i64), args[0].clone()),
            &rivulet::WhileOptions::default(),
        )?;
        Ok(vec![f])
    });
    // Start from the inflow everywhere (at rest inside the cylinder), pushed
    // slightly across the channel in its upper half: the wake's instability
    // grows from that push, not from rounding noise, whose size depends on
    // the device's arithmetic.
    let push: Vec<f32> = (0..ny * nx).map(|p| if ((p / nx) as f64) < cy { (0.05 * U) as f32 } else { 0.0 }).collect();
    let pushed =
        equilibrium(&Tensor::scalar(1.0f32), &Tensor::scalar(U as f32), &Tensor::from_vec(push, vec![1, ny, nx])?)?;
    let mut f = ops::select(&solid, &ops::broadcast_like(&lattice(&W)?, &pushed)?, &pushed)?;
    let probe_at = (cy as usize) * nx + (cx + 2.0 * diameter) as usize;
    let start = std::time::Instant::now();
    let mut run = KarmanRun { frames: Vec::new(), probe: Vec::new(), diameter, strouhal: None, seconds: 0.0 };
    for frame in 1..=steps / frame_every {
        f = advance.call(&[&f])?.remove(0);
        let (_, _, uy) = moments(&f)?;
        let uy = ops::cast(&uy, DType::F64)?.to_vec::<f64>()?;
        run.probe.push((frame * frame_every, uy[probe_at]));
        run.frames.push(vorticity(&f, &solid)?);
    }
    run.seconds = start.elapsed().as_secs_f64();
    run.strouhal = strouhal(&run.probe[run.probe.len() / 2..], diameter);
    Ok(run)
}

/// `D / (period · U)` from the upward zero crossings of a probe's signal
/// (about its mean), if it crossed at least three times.
fn strouhal(signal: &[(u64, f64)], diameter: f64) -> Option<f64> {
    let mean = signal.iter().map(|s| s.1).sum::<f64>() / signal.len().max(1) as f64;
    let ups: Vec<f64> = signal
        .windows(2)
        .filter(|w| w[0].1 < mean && w[1].1 >= mean)
        .map(|w| w[0].0 as f64 + (w[1].0 - w[0].0) as f64 * (mean - w[0].1) / (w[1].1 - w[0].1))
        .collect();
    if ups.len() < 3 {
        return None;
    }
    let period = (ups[ups.len() - 1] - ups[0]) / (ups.len() - 1) as f64;
    Some(diameter / (period * U))
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let run = simulate(&KarmanSetup { n: 64, re: 150.0, steps: 12_000, frame_every: 100 })?;
    println!(
        "karman 256x64 at Re 150: {} steps in {:.1} s; Strouhal number {:?}",
        run.probe.last().map_or(0, |p| p.0),
        run.seconds,
        run.strouhal
    );
    Ok(())
}
