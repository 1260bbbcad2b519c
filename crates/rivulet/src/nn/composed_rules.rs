//! Optimizer rules written with ops instead of one fused update kernel:
//! those that need a norm of the whole variable (Lamb), slots of other
//! shapes (Adafactor's factored second moments), matrix products (Muon's
//! Newton-Schulz iteration) or a slot that starts as the variable
//! (ScheduleFreeAdamW). They follow Keras 3's `update_step` formulas, run
//! eagerly and in graphs, and on every device.

use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{self, Axes};
use crate::tensor::Shape;

/// An optimizer rule composed of ops (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ComposedRule {
    /// Adam's moments with a layer-wise trust ratio: the step is scaled by
    /// `‖w‖ / ‖update‖` (You et al. 2019).
    Lamb { beta1: f64, beta2: f64, epsilon: f64 },
    /// Factored second moments (row and column means for the last two
    /// axes), a relative step size and update clipping (Shazeer and Stern 2018).
    Adafactor { beta_2_decay: f64, epsilon_1: f64, epsilon_2: f64, clip_threshold: f64 },
    /// Momentum orthogonalized by a quintic Newton-Schulz iteration for
    /// matrices; AdamW (at `adam_lr_ratio` times the rate) for every other
    /// variable and for variables named like embeddings.
    Muon {
        adam_beta1: f64,
        adam_beta2: f64,
        epsilon: f64,
        momentum: f64,
        nesterov: bool,
        ns_steps: usize,
        /// The Newton-Schulz coefficients (a, b, c).
        ns_coefficients: (f64, f64, f64),
        /// The update is scaled by `sqrt(max(rows, cols)) * rms_rate` (`None`: unscaled).
        rms_rate: Option<f64>,
        adam_lr_ratio: f64,
        /// Decoupled weight decay of the matrices, and of the AdamW variables.
        weight_decay: f64,
        adam_weight_decay: f64,
        exclude_embeddings: bool,
    },
    /// Adam without a schedule: an average of the iterates with a base
    /// sequence (`momentum`) that starts at the weights (Defazio et al.
    /// 2024), as Keras computes it on TensorFlow (see `apply`).
    ScheduleFreeAdamW { beta1: f64, beta2: f64, epsilon: f64, warmup_steps: usize },
}

/// One slot of a composed rule: its name and shape.
pub(crate) struct SlotSpec {
    pub name: &'static str,
    pub shape: Shape,
}

impl ComposedRule {
    /// Muon treats a variable as a matrix (rank 2, not an embedding table).
    fn muon_matrix(self, name: &str, shape: &Shape) -> bool {
        match self {
            ComposedRule::Muon { exclude_embeddings, .. } => {
                shape.rank() == 2 && !(exclude_embeddings && name.to_lowercase().contains("embedding"))
            }
            _ => false,
        }
    }

    /// The slots of a variable `name` of `shape` (all start at zero).
    pub(crate) fn slots(self, name: &str, shape: &Shape) -> Vec<SlotSpec> {
        let like = |name| SlotSpec { name, shape: shape.clone() };
        match self {
            ComposedRule::Lamb { .. } => vec![like("m"), like("v")],
            ComposedRule::Adafactor { .. } => {
                let d = shape.dims();
                if d.len() >= 2 {
                    let rows = Shape::new(&d[..d.len() - 1]);
                    let mut cols = d[..d.len() - 2].to_vec();
                    cols.push(d[d.len() - 1]);
                    vec![
                        SlotSpec { name: "r", shape: rows },
                        SlotSpec { name: "c", shape: Shape::new(&cols) },
                        like("v"),
                    ]
                } else {
                    vec![like("v")]
                }
            }
            ComposedRule::Muon { .. } if self.muon_matrix(name, shape) => vec![like("momentum")],
            ComposedRule::Muon { .. } => vec![like("momentum"), like("velocity")],
            ComposedRule::ScheduleFreeAdamW { .. } => vec![like("momentum"), like("velocity")],
        }
    }

    /// The new value of variable `name` (value `w`) and of its slots, from
    /// the gradient `g`, the learning rate `lr` and the step `t` (1 for the
    /// first update), all of the variable's dtype.
    pub(crate) fn apply(
        self,
        name: &str,
        w: &Tensor,
        g: &Tensor,
        lr: &Tensor,
        t: &Tensor,
        slots: &[Tensor],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        match self {
            ComposedRule::Lamb { beta1, beta2, epsilon } => {
                let (m, v) = moments(g, &slots[0], &slots[1], beta1, beta2)?;
                let m_hat = ops::div(&m, &ops::sub(1.0, &ops::pow(beta1, t)?)?)?;
                let v_hat = ops::div(&v, &ops::sub(1.0, &ops::pow(beta2, t)?)?)?;
                let update = ops::div(&m_hat, &ops::add(&ops::sqrt(&v_hat)?, epsilon)?)?;
                let (w_norm, u_norm) = (norm(w)?, norm(&update)?);
                let ratio = ops::select(
                    &ops::logical_and(&ops::greater(&w_norm, 0.0)?, &ops::greater(&u_norm, 0.0)?)?,
                    &ops::div(&w_norm, &u_norm)?,
                    1.0,
                )?;
                let w = ops::sub(w, &ops::mul(&ops::mul(&ratio, lr)?, &update)?)?;
                Ok((w, vec![m, v]))
            }
            ComposedRule::Adafactor { beta_2_decay, epsilon_1, epsilon_2, clip_threshold } => {
                let rho = ops::minimum(lr, &ops::rsqrt(t)?)?;
                let alpha = ops::mul(&ops::maximum(&rms(w)?, epsilon_2)?, &rho)?;
                let g2 = ops::add(&ops::square(g)?, epsilon_1)?;
                let beta = ops::sub(1.0, &ops::pow(t, beta_2_decay)?)?;
                let blend = |old: &Tensor, new: &Tensor| -> Result<Tensor> {
                    ops::add(&ops::mul(&beta, old)?, &ops::mul(&ops::sub(1.0, &beta)?, new)?)
                };
                let (new_slots, v) = if w.rank() >= 2 {
                    let r = blend(&slots[0], &ops::mean(&g2, -1, false)?)?;
                    let c = blend(&slots[1], &ops::mean(&g2, -2, false)?)?;
                    let rows = ops::expand_dims(&ops::div(&r, &ops::mean(&r, -1, true)?)?, -1)?;
                    let v = ops::mul(&rows, &ops::expand_dims(&c, -2)?)?;
                    (vec![r, c, v.clone()], v)
                } else {
                    let v = blend(&slots[0], &g2)?;
                    (vec![v.clone()], v)
                };
                let u = ops::div(g, &ops::sqrt(&v)?)?;
                let u = ops::div(&u, &ops::maximum(&ops::div(&rms(&u)?, clip_threshold)?, 1.0)?)?;
                Ok((ops::sub(w, &ops::mul(&alpha, &u)?)?, new_slots))
            }
            ComposedRule::Muon {
                adam_beta1,
                adam_beta2,
                epsilon,
                momentum,
                nesterov,
                ns_steps,
                ns_coefficients,
                rms_rate,
                adam_lr_ratio,
                weight_decay,
                adam_weight_decay,
                ..
            } => {
                let matrix = self.muon_matrix(name, w.shape());
                let decay = if matrix { weight_decay } else { adam_weight_decay };
                let w = ops::sub(w, &ops::mul(&ops::mul(w, decay)?, lr)?)?;
                if !matrix {
                    let lr = ops::mul(lr, adam_lr_ratio)?;
                    let (m, v) = moments(g, &slots[0], &slots[1], adam_beta1, adam_beta2)?;
                    let bias = ops::div(
                        &ops::sqrt(&ops::sub(1.0, &ops::pow(adam_beta2, t)?)?)?,
                        &ops::sub(1.0, &ops::pow(adam_beta1, t)?)?,
                    )?;
                    let step = ops::div(&ops::mul(&m, &ops::mul(&lr, &bias)?)?, &ops::add(&ops::sqrt(&v)?, epsilon)?)?;
                    return Ok((ops::sub(&w, &step)?, vec![m, v]));
                }
                let m = ops::add(&ops::mul(&slots[0], momentum)?, g)?;
                let direction = if nesterov { ops::add(g, &ops::mul(&m, momentum)?)? } else { m.clone() };
                let mut update = newton_schulz(&direction, ns_steps, ns_coefficients)?;
                if let Some(rate) = rms_rate {
                    let d = w.shape().dims();
                    update = ops::mul(&update, (d[0].max(d[1]) as f64).sqrt() * rate)?;
                }
                Ok((ops::sub(&w, &ops::mul(lr, &update)?)?, vec![m]))
            }
            ComposedRule::ScheduleFreeAdamW { beta1, beta2, epsilon, warmup_steps } => {
                let lr = if warmup_steps > 0 {
                    ops::mul(lr, &ops::minimum(&ops::div(t, warmup_steps as f64)?, 1.0)?)?
                } else {
                    lr.clone()
                };
                // The base sequence starts at the weights: at the first
                // step the slot (zeros until then) stands for them.
                let z_old = ops::select(&ops::equal(t, 1.0)?, w, &slots[0])?;
                let v = ops::add(&slots[1], &ops::mul(&ops::sub(&ops::square(g)?, &slots[1])?, 1.0 - beta2)?)?;
                let correction = ops::sub(1.0, &ops::pow(beta2, t)?)?;
                let denom = ops::add(&ops::sqrt(&ops::div(&v, &correction)?)?, epsilon)?;
                let z = ops::sub(&z_old, &ops::div(&ops::mul(&lr, g)?, &denom)?)?;
                let weight = ops::reciprocal(t)?;
                // Keras on TensorFlow recovers the previous average with the
                // base sequence after this step's update (its "old" momentum
                // reads the slot after the assignment); the paper, and Keras
                // on JAX, use the one before. TensorFlow's numbers here.
                let x_old = ops::div(&ops::sub(w, &ops::mul(&z, 1.0 - beta1)?)?, beta1)?;
                let x = ops::add(&ops::mul(&ops::sub(1.0, &weight)?, &x_old)?, &ops::mul(&weight, &z)?)?;
                let y = ops::add(&ops::mul(&z, 1.0 - beta1)?, &ops::mul(&x, beta1)?)?;
                Ok((y, vec![z, v]))
            }
        }
    }
}

/// Adam's moment updates, as Keras writes them: `m += (g - m)(1 - β1)`,
/// `v += (g² - v)(1 - β2)`.
fn moments(g: &Tensor, m: &Tensor, v: &Tensor, beta1: f64, beta2: f64) -> Result<(Tensor, Tensor)> {
    let m = ops::add(m, &ops::mul(&ops::sub(g, m)?, 1.0 - beta1)?)?;
    let v = ops::add(v, &ops::mul(&ops::sub(&ops::square(g)?, v)?, 1.0 - beta2)?)?;
    Ok((m, v))
}

/// The L2 norm of all elements.
fn norm(x: &Tensor) -> Result<Tensor> {
    ops::sqrt(&ops::sum(&ops::square(x)?, Axes::All, false)?)
}

/// The root mean square of all elements.
fn rms(x: &Tensor) -> Result<Tensor> {
    ops::sqrt(&ops::mean(&ops::square(x)?, Axes::All, false)?)
}

/// `x` (a matrix) mapped towards the nearest semi-orthogonal matrix by
/// `steps` quintic Newton-Schulz iterations `x ← a·x + (b·A + c·A²)·x`,
/// `A = x·xᵀ`, after scaling to Frobenius norm 1; a tall matrix is
/// iterated transposed.
fn newton_schulz(x: &Tensor, steps: usize, (a, b, c): (f64, f64, f64)) -> Result<Tensor> {
    let d = x.shape().dims();
    let tall = d[0] > d[1];
    let mut x = if tall { ops::transpose(x, &[1, 0])? } else { x.clone() };
    x = ops::div(&x, &ops::add(&norm(&x)?, 1e-7)?)?;
    for _ in 0..steps {
        let gram = ops::matmul_t(&x, &x, false, true)?;
        let poly = ops::add(&ops::mul(&gram, b)?, &ops::mul(&ops::matmul(&gram, &gram)?, c)?)?;
        x = ops::add(&ops::mul(&x, a)?, &ops::matmul(&poly, &x)?)?;
    }
    if tall {
        ops::transpose(&x, &[1, 0])
    } else {
        Ok(x)
    }
}
