//! Explicit time integration of `dy/dt = f(t, y)` with a fixed step, as one
//! `while_loop` (so a long run is one graph node and differentiates with
//! bounded memory through `WhileOptions::checkpoint_every`).

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, while_loop, WhileOptions};

/// The one-step method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Forward Euler: first order, one evaluation of `f` per step.
    Euler,
    /// The classical Runge–Kutta method: fourth order, four evaluations.
    Rk4,
}

/// `y` after `steps` steps of size `dt` from `y0` at time `t0`.
/// `f(t, y)` gets `t` as a scalar of `y`'s dtype.
#[track_caller]
pub fn integrate(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    y0: &Tensor,
    t0: f64,
    dt: f64,
    steps: u64,
    method: Method,
    options: &WhileOptions,
) -> Result<Tensor> {
    if !y0.dtype().is_float() {
        bail!(dtype, "integrate needs a float state, got {}", y0.dtype());
    }
    if !dt.is_finite() || !t0.is_finite() {
        bail!(invalid, "integrate needs a finite t0 and dt, got {t0} and {dt}");
    }
    let dtype = y0.dtype();
    let step = |t: &Tensor, y: &Tensor| -> Result<Tensor> {
        match method {
            Method::Euler => ops::add(y, &ops::mul(&f(t, y)?, dt)?),
            Method::Rk4 => {
                let half = ops::add(t, 0.5 * dt)?;
                let k1 = f(t, y)?;
                let k2 = f(&half, &ops::add(y, &ops::mul(&k1, 0.5 * dt)?)?)?;
                let k3 = f(&half, &ops::add(y, &ops::mul(&k2, 0.5 * dt)?)?)?;
                let k4 = f(&ops::add(t, dt)?, &ops::add(y, &ops::mul(&k3, dt)?)?)?;
                let sum = ops::add_n(&[&k1, &ops::mul(&k2, 2.0)?, &ops::mul(&k3, 2.0)?, &k4])?;
                ops::add(y, &ops::mul(&sum, dt / 6.0)?)
            }
        }
    };
    let limit = i64::try_from(steps).unwrap_or(i64::MAX);
    let (_, y) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(limit)),
        |(i, y): &(Tensor, Tensor)| {
            // The time of step i, not a running sum (which would drift).
            let t = ops::add(&ops::mul(&ops::cast(i, dtype)?, dt)?, t0)?;
            Ok((ops::add(i, 1i64)?, step(&t, y)?))
        },
        (Tensor::scalar(0i64), y0.clone()),
        options,
    )?;
    Ok(y)
}
