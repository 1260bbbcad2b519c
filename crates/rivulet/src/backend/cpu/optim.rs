//! The fused optimizer updates of `ops::optim`: one parallel pass computes
//! the new variable and slot values.

use super::elementwise::cast;
use super::movement::materialize;
use super::simd::{vectorize, Kernel};
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

/// `w' = f(w, g)` for rules without slots.
struct Loop0<'a, T, F> {
    w: &'a [T],
    g: &'a [T],
    ow: &'a mut [T],
    f: F,
}

impl<T: Copy, F: Fn(T, T) -> T> Kernel for Loop0<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Loop0 { w, g, ow, f } = self;
        for ((o, &wi), &gi) in ow.iter_mut().zip(w).zip(g) {
            *o = f(wi, gi);
        }
    }
}

/// `(w', s') = f(w, g, s)` for rules with one slot.
struct Loop1<'a, T, F> {
    w: &'a [T],
    g: &'a [T],
    s: &'a [T],
    ow: &'a mut [T],
    os: &'a mut [T],
    f: F,
}

impl<T: Copy, F: Fn(T, T, T) -> (T, T)> Kernel for Loop1<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Loop1 { w, g, s, ow, os, f } = self;
        for i in 0..ow.len().min(w.len()).min(g.len()).min(s.len()).min(os.len()) {
            let (a, b) = f(w[i], g[i], s[i]);
            ow[i] = a;
            os[i] = b;
        }
    }
}

/// `(w', s0', s1') = f(w, g, s0, s1)` for rules with two slots.
struct Loop2<'a, T, F> {
    w: &'a [T],
    g: &'a [T],
    s0: &'a [T],
    s1: &'a [T],
    ow: &'a mut [T],
    o0: &'a mut [T],
    o1: &'a mut [T],
    f: F,
}

impl<T: Copy, F: Fn(T, T, T, T) -> (T, T, T)> Kernel for Loop2<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Loop2 { w, g, s0, s1, ow, o0, o1, f } = self;
        let n = ow.len().min(w.len()).min(g.len()).min(s0.len()).min(s1.len()).min(o0.len()).min(o1.len());
        for i in 0..n {
            let (a, b, c) = f(w[i], g[i], s0[i], s1[i]);
            ow[i] = a;
            o0[i] = b;
            o1[i] = c;
        }
    }
}

/// Run `body(range)` over chunks of `n` elements in parallel.
fn chunks(n: usize, body: impl Fn(std::ops::Range<usize>) + Sync) {
    (0..n.div_ceil(CHUNK)).into_par_iter().for_each(|c| body(c * CHUNK..((c + 1) * CHUNK).min(n)));
}

/// A mutable sub-slice of an output that chunks write disjointly.
struct Out<T>(*mut T);
// SAFETY: each chunk writes a disjoint range of a buffer the caller owns exclusively.
unsafe impl<T> Sync for Out<T> {}
impl<T> Out<T> {
    /// # Safety
    /// Ranges handed out must be disjoint and within the buffer.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, r: &std::ops::Range<usize>) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(r.start), r.len())
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
    if w.len() != n || g.len() != n || slots.iter().any(|s| s.len() != n) {
        bail!(shape, "optimizer update: the gradient and slots must have the variable's shape {shape}");
    }
    let mut outs: Vec<HostBuffer> =
        (0..1 + slots.len()).map(|_| HostBuffer::for_elements::<T>(n)).collect::<Result<_>>()?;
    let ptrs: Vec<Out<T>> = outs.iter_mut().map(|b| Out(b.as_mut_slice::<T>().as_mut_ptr())).collect();
    let lr_t = T::of(lr);
    // SAFETY (all arms): `chunks` hands out disjoint ranges within 0..n, and
    // every output buffer holds n elements.
    match *rule {
        UpdateRule::Sgd => chunks(n, |r| {
            let ow = unsafe { ptrs[0].part(&r) };
            vectorize(Loop0 { w: &w[r.clone()], g: &g[r], ow, f: |w: T, g: T| w - lr_t * g });
        }),
        UpdateRule::Momentum { momentum, nesterov } => {
            let mu = T::of(momentum);
            chunks(n, |r| {
                let (ow, os) = unsafe { (ptrs[0].part(&r), ptrs[1].part(&r)) };
                let f = |w: T, g: T, a: T| {
                    let acc = mu * a + g;
                    (if nesterov { w - lr_t * (g + mu * acc) } else { w - lr_t * acc }, acc)
                };
                vectorize(Loop1 { w: &w[r.clone()], g: &g[r.clone()], s: &slots[0][r], ow, os, f });
            })
        }
        UpdateRule::Adam { beta1, beta2, epsilon, weight_decay } => {
            let (b1, b2, eps, wd) = (T::of(beta1), T::of(beta2), T::of(epsilon), T::of(weight_decay));
            let (one_b1, one_b2) = (T::of(1.0 - beta1), T::of(1.0 - beta2));
            // Reciprocal bias corrections 1 / (1 - beta^t), computed once in
            // f64: a multiplication per element instead of a division.
            let (inv_c1, inv_c2) = (T::of(1.0 / (1.0 - beta1.powf(step))), T::of(1.0 / (1.0 - beta2.powf(step))));
            let decay = weight_decay > 0.0;
            chunks(n, |r| {
                let (ow, o0, o1) = unsafe { (ptrs[0].part(&r), ptrs[1].part(&r), ptrs[2].part(&r)) };
                let f = |w: T, g: T, m: T, v: T| {
                    let m = b1 * m + one_b1 * g;
                    let v = b2 * v + one_b2 * g * g;
                    let step = (m * inv_c1) / ((v * inv_c2).sqrt() + eps);
                    let step = if decay { step + wd * w } else { step };
                    (w - lr_t * step, m, v)
                };
                vectorize(Loop2 {
                    w: &w[r.clone()],
                    g: &g[r.clone()],
                    s0: &slots[0][r.clone()],
                    s1: &slots[1][r],
                    ow,
                    o0,
                    o1,
                    f,
                });
            })
        }
        UpdateRule::RmsProp { rho, epsilon } => {
            let (rh, one_r, eps) = (T::of(rho), T::of(1.0 - rho), T::of(epsilon));
            chunks(n, |r| {
                let (ow, os) = unsafe { (ptrs[0].part(&r), ptrs[1].part(&r)) };
                let f = |w: T, g: T, ms: T| {
                    let ms = rh * ms + one_r * g * g;
                    (w - lr_t * g / (ms.sqrt() + eps), ms)
                };
                vectorize(Loop1 { w: &w[r.clone()], g: &g[r.clone()], s: &slots[0][r], ow, os, f });
            })
        }
        UpdateRule::Adagrad { epsilon } => {
            let eps = T::of(epsilon);
            chunks(n, |r| {
                let (ow, os) = unsafe { (ptrs[0].part(&r), ptrs[1].part(&r)) };
                let f = |w: T, g: T, acc: T| {
                    let acc = acc + g * g;
                    (w - lr_t * g / (acc.sqrt() + eps), acc)
                };
                vectorize(Loop1 { w: &w[r.clone()], g: &g[r.clone()], s: &slots[0][r], ow, os, f });
            })
        }
    }
    drop(ptrs);
    Ok(outs.into_iter().map(|b| Value::from_buffer(T::DTYPE, shape.clone(), b)).collect())
}
