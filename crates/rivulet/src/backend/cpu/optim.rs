//! The fused optimizer updates of `ops::optim`: one parallel pass computes
//! the new variable and slot values.

use super::elementwise::cast;
use super::movement::materialize;
use crate::error::{bail, Result};
use crate::ops::optim::UpdateRule;
use crate::tensor::dtype::Element;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Value};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Floats the update is computed in (f16/bf16 go through f32).
trait Real:
    Element
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    fn of(v: f64) -> Self;
    fn sqrt(self) -> Self;
}
impl Real for f32 {
    #[inline(always)]
    fn of(v: f64) -> f32 {
        v as f32
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
}
impl Real for f64 {
    #[inline(always)]
    fn of(v: f64) -> f64 {
        v
    }
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
}

fn scalar(v: &Value) -> Result<f64> {
    let c = cast(v, DType::F64)?;
    Ok(c.contiguous_slice::<f64>().and_then(|s| s.first().copied()).unwrap_or(0.0))
}

pub(crate) fn apply_update(rule: &UpdateRule, inputs: &[&Value]) -> Result<Vec<Value>> {
    let dtype = inputs[0].dtype;
    match dtype {
        DType::F32 => update_typed::<f32>(rule, inputs),
        DType::F64 => update_typed::<f64>(rule, inputs),
        DType::F16 | DType::BF16 => {
            let up: Vec<Value> = inputs.iter().map(|v| cast(v, DType::F32)).collect::<Result<_>>()?;
            let refs: Vec<&Value> = up.iter().collect();
            update_typed::<f32>(rule, &refs)?.iter().map(|v| cast(v, dtype)).collect()
        }
        d => bail!(dtype, "optimizer updates need a floating-point variable, got {d}"),
    }
}

fn update_typed<T: Real>(rule: &UpdateRule, inputs: &[&Value]) -> Result<Vec<Value>> {
    let lr = scalar(inputs[2])?;
    let step = scalar(inputs[3])?;
    let dense: Vec<Value> = [0usize, 1]
        .iter()
        .chain(&(4..inputs.len()).collect::<Vec<_>>())
        .map(|&i| materialize(inputs[i]))
        .collect::<Result<_>>()?;
    let shape = inputs[0].shape().clone();
    let n = shape.numel_known();
    let w = dense[0].contiguous_slice::<T>().unwrap_or(&[]);
    let g = dense[1].contiguous_slice::<T>().unwrap_or(&[]);
    let slots: Vec<&[T]> = dense[2..].iter().map(|v| v.contiguous_slice::<T>().unwrap_or(&[])).collect();
    let mut outs: Vec<HostBuffer> =
        (0..1 + slots.len()).map(|_| HostBuffer::for_elements::<T>(n)).collect::<Result<_>>()?;
    let lr_t = T::of(lr);
    match *rule {
        UpdateRule::Sgd => {
            let [ow] = &mut outs[..] else { return Err(wrong_slots()) };
            ow.as_mut_slice::<T>().par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
                let base = c * CHUNK;
                for (j, o) in o.iter_mut().enumerate() {
                    *o = w[base + j] - lr_t * g[base + j];
                }
            });
        }
        UpdateRule::Momentum { momentum, nesterov } => {
            let mu = T::of(momentum);
            let [ow, oa] = &mut outs[..] else { return Err(wrong_slots()) };
            let a = slots[0];
            ow.as_mut_slice::<T>()
                .par_chunks_mut(CHUNK)
                .zip(oa.as_mut_slice::<T>().par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (ow, oa))| {
                    let base = c * CHUNK;
                    for j in 0..ow.len() {
                        let i = base + j;
                        let acc = mu * a[i] + g[i];
                        oa[j] = acc;
                        ow[j] = if nesterov { w[i] - lr_t * (g[i] + mu * acc) } else { w[i] - lr_t * acc };
                    }
                });
        }
        UpdateRule::Adam { beta1, beta2, epsilon, weight_decay } => {
            let (b1, b2, eps, wd) = (T::of(beta1), T::of(beta2), T::of(epsilon), T::of(weight_decay));
            let (one_b1, one_b2) = (T::of(1.0 - beta1), T::of(1.0 - beta2));
            // Bias corrections 1 - beta^t, computed once in f64.
            let (c1, c2) = (T::of(1.0 - beta1.powf(step)), T::of(1.0 - beta2.powf(step)));
            let decay = weight_decay > 0.0;
            let [ow, om, ov] = &mut outs[..] else { return Err(wrong_slots()) };
            let (m, v) = (slots[0], slots[1]);
            ow.as_mut_slice::<T>()
                .par_chunks_mut(CHUNK)
                .zip(om.as_mut_slice::<T>().par_chunks_mut(CHUNK))
                .zip(ov.as_mut_slice::<T>().par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, ((ow, om), ov))| {
                    let base = c * CHUNK;
                    for j in 0..ow.len() {
                        let i = base + j;
                        let gi = g[i];
                        let mi = b1 * m[i] + one_b1 * gi;
                        let vi = b2 * v[i] + one_b2 * gi * gi;
                        om[j] = mi;
                        ov[j] = vi;
                        let mut update = (mi / c1) / ((vi / c2).sqrt() + eps);
                        if decay {
                            update = update + wd * w[i];
                        }
                        ow[j] = w[i] - lr_t * update;
                    }
                });
        }
        UpdateRule::RmsProp { rho, epsilon } => {
            let (r, one_r, eps) = (T::of(rho), T::of(1.0 - rho), T::of(epsilon));
            let [ow, os] = &mut outs[..] else { return Err(wrong_slots()) };
            let ms = slots[0];
            ow.as_mut_slice::<T>()
                .par_chunks_mut(CHUNK)
                .zip(os.as_mut_slice::<T>().par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (ow, os))| {
                    let base = c * CHUNK;
                    for j in 0..ow.len() {
                        let i = base + j;
                        let s = r * ms[i] + one_r * g[i] * g[i];
                        os[j] = s;
                        ow[j] = w[i] - lr_t * g[i] / (s.sqrt() + eps);
                    }
                });
        }
        UpdateRule::Adagrad { epsilon } => {
            let eps = T::of(epsilon);
            let [ow, oa] = &mut outs[..] else { return Err(wrong_slots()) };
            let acc = slots[0];
            ow.as_mut_slice::<T>()
                .par_chunks_mut(CHUNK)
                .zip(oa.as_mut_slice::<T>().par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (ow, oa))| {
                    let base = c * CHUNK;
                    for j in 0..ow.len() {
                        let i = base + j;
                        let a = acc[i] + g[i] * g[i];
                        oa[j] = a;
                        ow[j] = w[i] - lr_t * g[i] / (a.sqrt() + eps);
                    }
                });
        }
    }
    Ok(outs.into_iter().map(|b| Value::from_buffer(T::DTYPE, shape.clone(), b)).collect())
}

fn wrong_slots() -> crate::Error {
    crate::Error::new(crate::ErrorKind::InvalidArgument, "optimizer update: wrong number of slots")
}
