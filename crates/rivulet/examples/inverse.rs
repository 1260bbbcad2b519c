//! Differentiable simulation: recover the initial temperature of a plate
//! from one blurred observation of it later, by gradient descent through
//! the whole simulation.
//!
//! The forward model is the heat equation `u_t = α ∇²u` on the periodic unit
//! square, 50 explicit Euler steps (on 32²) in one `while_loop`
//! (`sim::integrate`). The loss `½ |u(T; u₀) - observed|²` is
//! differentiated with respect to the initial field `u₀` through the loop
//! (its backward pass is itself a loop), and gradient descent with
//! momentum walks `u₀` from zero to the field that explains the
//! observation. The forward pass and the gradient are traced once into one
//! graph (`function`), then called every iteration.
//!
//! `cargo run --release --example inverse`

use rivulet::ops::{self, grid::laplacian, Boundary};
use rivulet::sim::{integrate, Method};
use rivulet::{function, gradients, Axes, Error, ErrorKind, Result, Tensor, Unconnected, WhileOptions};

/// The diffusivity α and the observation time T (`α T = 2·10⁻³`: the
/// observation keeps 72% of the peak; finer detail than about 0.06 is gone).
pub const ALPHA: f64 = 0.1;
pub const T_OBSERVED: f64 = 0.02;
/// Euler steps of the forward model on an `n`×`n` grid: 50 on 32², and
/// as many more on finer grids as keep `dt α 8/h²` (the explicit scheme's
/// stability number) at 1/3.
pub fn steps(n: usize) -> u64 {
    50 * (n as u64).div_ceil(32).pow(2)
}

/// What a recovery produced.
pub struct Recovery {
    /// The true initial field, the observation, and the recovered initial field (`n`×`n`).
    pub truth: Tensor,
    pub observed: Tensor,
    pub recovered: Tensor,
    /// The loss at each iteration (before its update).
    pub losses: Vec<f64>,
    /// `|recovered - truth| / |truth|` (L2) at the end.
    pub error: f64,
}

/// The true initial field: three Gaussian spots of both signs, periodic.
pub fn truth(n: usize) -> Result<Tensor> {
    let h = 1.0 / n as f64;
    let spots = [(0.3, 0.35, 0.1, 1.0), (0.7, 0.6, 0.08, -0.7), (0.55, 0.2, 0.07, 0.5)];
    let wrap = |d: f64| (d + 0.5).rem_euclid(1.0) - 0.5;
    let data = (0..n * n)
        .map(|p| {
            let (y, x) = ((p / n) as f64 * h, (p % n) as f64 * h);
            spots
                .iter()
                .map(|(cx, cy, s, a)| a * (-(wrap(x - cx).powi(2) + wrap(y - cy).powi(2)) / (2.0 * s * s)).exp())
                .sum::<f64>()
        })
        .collect();
    Tensor::from_vec(data, vec![n, n])
}

/// The forward model: the field after `steps(n)` Euler steps to `T_OBSERVED`.
pub fn forward(u0: &Tensor, n: usize) -> Result<Tensor> {
    let h = 1.0 / n as f64;
    let rhs = |_: &Tensor, u: &Tensor| ops::mul(&laplacian(u, &[h, h], Boundary::Periodic)?, ALPHA);
    let steps = steps(n);
    integrate(rhs, u0, 0.0, T_OBSERVED / steps as f64, steps, Method::Euler, &WhileOptions::default())
}

/// Recover the initial field on an `n`×`n` grid from the observation of
/// [`truth`] by `iterations` steps of gradient descent (learning rate 1,
/// momentum 0.9) from zero.
pub fn recover(n: usize, iterations: usize) -> Result<Recovery> {
    let truth = truth(n)?;
    let observed = forward(&truth, n)?;
    // One graph: the loss and its gradient with respect to the initial field.
    let loss_and_gradient = function(move |args: &[Tensor]| {
        let (u0, observed) = (&args[0], &args[1]);
        let residual = ops::sub(&forward(u0, n)?, observed)?;
        let loss = ops::mul(&ops::sum(&ops::square(&residual)?, Axes::All, false)?, 0.5)?;
        let grad = gradients(&[&loss], &[u0], None, Unconnected::Zero)?.remove(0);
        let grad = grad.ok_or_else(|| Error::new(ErrorKind::Graph, "the loss does not depend on u0"))?;
        Ok(vec![loss, grad])
    });
    let (rate, momentum) = (1.0, 0.9);
    let mut u0 = ops::zeros_like(&truth)?;
    let mut velocity = ops::zeros_like(&truth)?;
    let mut losses = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let out = loss_and_gradient.call(&[&u0, &observed])?;
        losses.push(out[0].to_scalar::<f64>()?);
        velocity = ops::sub(&ops::mul(&velocity, momentum)?, &ops::mul(&out[1], rate)?)?;
        u0 = ops::add(&u0, &velocity)?;
    }
    let norm =
        |t: &Tensor| -> Result<f64> { Ok(ops::sum(&ops::square(t)?, Axes::All, false)?.to_scalar::<f64>()?.sqrt()) };
    let error = norm(&ops::sub(&u0, &truth)?)? / norm(&truth)?;
    Ok(Recovery { truth, observed, recovered: u0, losses, error })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = recover(32, 150)?;
    println!(
        "inverse heat problem on 32x32: loss {:.3e} -> {:.3e} in {} iterations; initial field recovered to {:.3}% (L2)",
        r.losses[0],
        r.losses[r.losses.len() - 1],
        r.losses.len(),
        100.0 * r.error
    );
    Ok(())
}
