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

/// Settings of [`integrate_adaptive`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveOptions {
    /// Relative tolerance of each step's error estimate.
    pub rtol: f64,
    /// Absolute tolerance of each step's error estimate.
    pub atol: f64,
    /// The first step tried (later ones follow the error estimates).
    pub first_step: f64,
    /// Stop after this many steps (accepted or rejected) even short of `t1`.
    pub max_steps: u64,
}

impl Default for AdaptiveOptions {
    fn default() -> AdaptiveOptions {
        AdaptiveOptions { rtol: 1e-6, atol: 1e-9, first_step: 1e-3, max_steps: 100_000 }
    }
}

/// The result of [`integrate_adaptive`]: the state, the time reached (`t1`
/// unless `max_steps` ran out) and the steps taken (int64, rejected ones included).
#[derive(Clone, Debug)]
pub struct AdaptiveSolution {
    pub y: Tensor,
    pub t: Tensor,
    pub steps: Tensor,
}

/// Dormand–Prince 5(4) stage coefficients (`A[i]` weighs the earlier
/// stages of stage `i + 1`), the fifth-order weights, and the differences
/// between the fifth- and fourth-order weights (the error estimate).
const DP_C: [f64; 6] = [0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
const DP_A: [&[f64]; 6] = [
    &[0.2],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
    &[9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
    &[35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
];
const DP_E: [f64; 7] = [
    35.0 / 384.0 - 5179.0 / 57600.0,
    0.0,
    500.0 / 1113.0 - 7571.0 / 16695.0,
    125.0 / 192.0 - 393.0 / 640.0,
    -2187.0 / 6784.0 + 92097.0 / 339200.0,
    11.0 / 84.0 - 187.0 / 2100.0,
    -1.0 / 40.0,
];

/// `y` at `t1` from `y0` at `t0` by the adaptive Dormand–Prince 5(4)
/// method (`scipy`'s RK45, `ode45`): each step's error estimate, scaled by
/// `atol + rtol·|y|` and averaged in root mean square, must be at most 1, and
/// sets the next step. One `while_loop`.
#[track_caller]
pub fn integrate_adaptive(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    y0: &Tensor,
    t0: f64,
    t1: f64,
    options: &AdaptiveOptions,
) -> Result<AdaptiveSolution> {
    if !y0.dtype().is_float() {
        bail!(dtype, "integrate_adaptive needs a float state, got {}", y0.dtype());
    }
    let AdaptiveOptions { rtol, atol, first_step, max_steps } = *options;
    if !(t0.is_finite() && t1.is_finite() && t1 >= t0) {
        bail!(invalid, "integrate_adaptive needs finite t0 <= t1, got {t0} and {t1}");
    }
    if !(rtol >= 0.0 && atol >= 0.0 && rtol + atol > 0.0 && first_step > 0.0 && first_step.is_finite()) {
        bail!(invalid, "integrate_adaptive needs rtol, atol >= 0 (not both 0) and a positive first step, got {rtol}, {atol}, {first_step}");
    }
    let dtype = y0.dtype();
    let scalar = |v: f64| ops::cast(&Tensor::scalar(v), dtype);
    let limit = i64::try_from(max_steps).unwrap_or(i64::MAX);
    let end = scalar(t1)?;
    let (t, y, _, steps) = while_loop(
        |(t, _, _, steps): &(Tensor, Tensor, Tensor, Tensor)| {
            ops::logical_and(&ops::less(t, &end)?, &ops::less(steps, &Tensor::scalar(limit))?)
        },
        |(t, y, dt, steps): &(Tensor, Tensor, Tensor, Tensor)| {
            let h = ops::minimum(dt, &ops::sub(&end, t)?)?;
            let mut k = vec![f(t, y)?];
            for (i, row) in DP_A.iter().enumerate() {
                let mut incr: Vec<Tensor> = Vec::with_capacity(row.len());
                for (kj, &a) in k.iter().zip(row.iter()) {
                    if a != 0.0 {
                        incr.push(ops::mul(kj, a)?);
                    }
                }
                let sum = ops::add_n(&incr.iter().collect::<Vec<_>>())?;
                let yi = ops::add(y, &ops::mul(&sum, &h)?)?;
                let ti = ops::add(t, &ops::mul(&h, DP_C[i])?)?;
                if i + 1 == DP_A.len() {
                    // The last row is the fifth-order solution; its slope closes the estimate.
                    k.push(f(&ti, &yi)?);
                    let mut err: Vec<Tensor> = Vec::new();
                    for (kj, &e) in k.iter().zip(DP_E.iter()) {
                        if e != 0.0 {
                            err.push(ops::mul(kj, e)?);
                        }
                    }
                    let err = ops::mul(&ops::add_n(&err.iter().collect::<Vec<_>>())?, &h)?;
                    let scale = ops::add(&ops::mul(&ops::maximum(&ops::abs(y)?, &ops::abs(&yi)?)?, rtol)?, atol)?;
                    let norm =
                        ops::sqrt(&ops::mean(&ops::square(&ops::div(&err, &scale)?)?, crate::ops::Axes::All, false)?)?;
                    let accept = ops::less_equal(&norm, 1.0)?;
                    let factor = ops::clip_by_value(&ops::mul(&ops::pow(&norm, -0.2)?, 0.9)?, 0.2, 10.0)?;
                    let t_next = ops::select(&accept, &ops::add(t, &h)?, t)?;
                    let y_next = ops::select(&accept, &yi, y)?;
                    return Ok((t_next, y_next, ops::mul(&h, &factor)?, ops::add(steps, 1i64)?));
                }
                k.push(f(&ti, &yi)?);
            }
            Err(crate::error::Error::invalid("internal: the Dormand-Prince tableau has no last row"))
        },
        (scalar(t0)?, y0.clone(), scalar(first_step)?, Tensor::scalar(0i64)),
        &WhileOptions::default(),
    )?;
    Ok(AdaptiveSolution { y, t, steps })
}
