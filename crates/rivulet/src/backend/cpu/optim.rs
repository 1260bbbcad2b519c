//! The fused optimizer updates of `ops::optim`: one parallel pass computes
//! the new variable and slot values, either into new buffers (the pure
//! `ApplyUpdate` op) or over the old ones ([`InPlaceUpdate`], for a
//! session's variables: about a third less memory traffic).

use super::copy::materialize;
use super::elementwise::cast;
use super::parallel::Shared;
use super::simd::{vectorize, Kernel};
use crate::error::{bail, Result};
use crate::op::optim::UpdateRule;
use crate::tensor::dtype::Element;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Value};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

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
    fn abs(self) -> Self;
    fn maximum(self, o: Self) -> Self;
    fn clamp_to(self, lo: Self, hi: Self) -> Self;
    fn powf(self, e: Self) -> Self;
    /// -1, 0 or 1 (TensorFlow's sign: zero stays zero, NaN stays NaN).
    fn sign(self) -> Self;
}
macro_rules! real_impl {
    ($($t:ty),*) => {$(
        impl Real for $t {
            #[inline(always)]
            fn of(v: f64) -> $t {
                v as $t
            }
            #[inline(always)]
            fn sqrt(self) -> $t {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> $t {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn maximum(self, o: $t) -> $t {
                if self.is_nan() || o.is_nan() { <$t>::NAN } else { <$t>::max(self, o) }
            }
            #[inline(always)]
            fn clamp_to(self, lo: $t, hi: $t) -> $t {
                self.max(lo).min(hi)
            }
            #[inline(always)]
            fn powf(self, e: $t) -> $t {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn sign(self) -> $t {
                if self > 0.0 { 1.0 } else if self < 0.0 { -1.0 } else if self == 0.0 { 0.0 } else { self }
            }
        }
    )*};
}
real_impl!(f32, f64);

fn scalar(v: &Value) -> Result<f64> {
    let c = cast(v, DType::F64)?;
    Ok(c.contiguous_slice::<f64>().and_then(|s| s.first().copied()).unwrap_or(0.0))
}

/// One rule's arithmetic for one element: `(w, g, slots) -> (w', slots')`.
/// The only definition of each rule; both memory patterns below use it.
trait Rule<T, const N: usize>: Copy + Sync {
    fn apply(&self, w: T, g: T, s: [T; N]) -> (T, [T; N]);
}

#[derive(Clone, Copy)]
struct Sgd<T> {
    lr: T,
}
impl<T: Real> Rule<T, 0> for Sgd<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, _: [T; 0]) -> (T, [T; 0]) {
        (w - self.lr * g, [])
    }
}

#[derive(Clone, Copy)]
struct Momentum<T> {
    lr: T,
    mu: T,
    nesterov: bool,
}
impl<T: Real> Rule<T, 1> for Momentum<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [m]: [T; 1]) -> (T, [T; 1]) {
        let m = m * self.mu - g * self.lr;
        let w = if self.nesterov { w + (m * self.mu - g * self.lr) } else { w + m };
        (w, [m])
    }
}

#[derive(Clone, Copy)]
struct Adam<T> {
    lr: T,
    one_b1: T,
    one_b2: T,
    /// `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`, computed once in f64:
    /// Keras's step size, with epsilon added to the uncorrected `sqrt(v)`.
    alpha: T,
    eps: T,
    wd: T,
    decay: bool,
}
impl<T: Real> Rule<T, 2> for Adam<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [m, v]: [T; 2]) -> (T, [T; 2]) {
        // Keras's order of operations, so that results match TensorFlow's.
        let m = m + (g - m) * self.one_b1;
        let v = v + (g * g - v) * self.one_b2;
        let w = if self.decay { w - w * self.wd * self.lr } else { w };
        (w - (m * self.alpha) / (v.sqrt() + self.eps), [m, v])
    }
}

#[derive(Clone, Copy)]
struct RmsProp<T> {
    lr: T,
    rho: T,
    one_rho: T,
    eps: T,
}
impl<T: Real> Rule<T, 1> for RmsProp<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [ms]: [T; 1]) -> (T, [T; 1]) {
        let ms = self.rho * ms + self.one_rho * g * g;
        (w - self.lr * g / (ms + self.eps).sqrt(), [ms])
    }
}

#[derive(Clone, Copy)]
struct Adagrad<T> {
    lr: T,
    eps: T,
}
impl<T: Real> Rule<T, 1> for Adagrad<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [acc]: [T; 1]) -> (T, [T; 1]) {
        let acc = acc + g * g;
        (w - self.lr * g / (acc + self.eps).sqrt(), [acc])
    }
}

#[derive(Clone, Copy)]
struct Adamax<T> {
    lr: T,
    one_b1: T,
    b2: T,
    /// `1 - b1^t`.
    correction: T,
    eps: T,
}
impl<T: Real> Rule<T, 2> for Adamax<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [m, u]: [T; 2]) -> (T, [T; 2]) {
        let m = m + (g - m) * self.one_b1;
        let u = (self.b2 * u).maximum(g.abs());
        (w - self.lr * m / (self.correction * (u + self.eps)), [m, u])
    }
}

#[derive(Clone, Copy)]
struct Nadam<T> {
    lr: T,
    one_b1: T,
    one_b2: T,
    /// `u_(t+1) / (1 - prod u_(<=t+1))` and `(1 - u_t) / (1 - prod u_(<=t))`.
    c_m: T,
    c_g: T,
    /// `1 - b2^t`.
    v_correction: T,
    eps: T,
}
impl<T: Real> Rule<T, 2> for Nadam<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [m, v]: [T; 2]) -> (T, [T; 2]) {
        let m = m + (g - m) * self.one_b1;
        let v = v + (g * g - v) * self.one_b2;
        let m_hat = self.c_m * m + self.c_g * g;
        let v_hat = v / self.v_correction;
        (w - m_hat * self.lr / (v_hat.sqrt() + self.eps), [m, v])
    }
}

#[derive(Clone, Copy)]
struct Adadelta<T> {
    lr: T,
    rho: T,
    one_rho: T,
    eps: T,
}
impl<T: Real> Rule<T, 2> for Adadelta<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [ag, ad]: [T; 2]) -> (T, [T; 2]) {
        let ag = self.rho * ag + self.one_rho * (g * g);
        let delta = T::of(0.0) - (ad + self.eps).sqrt() * g / (ag + self.eps).sqrt();
        let ad = self.rho * ad + self.one_rho * (delta * delta);
        (w + self.lr * delta, [ag, ad])
    }
}

#[derive(Clone, Copy)]
struct Ftrl<T> {
    lr: T,
    /// `-learning_rate_power`.
    power: T,
    l1: T,
    /// `l2 + beta / (2 lr)`.
    l2: T,
    l2_shrinkage: T,
}
impl<T: Real> Rule<T, 2> for Ftrl<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [acc, linear]: [T; 2]) -> (T, [T; 2]) {
        let two = T::of(2.0);
        let grad = g + two * self.l2_shrinkage * w;
        let new_acc = acc + g * g;
        let linear = linear + (grad - (new_acc.powf(self.power) - acc.powf(self.power)) / self.lr * w);
        let quadratic = new_acc.powf(self.power) / self.lr + two * self.l2;
        let clipped = linear.clamp_to(T::of(0.0) - self.l1, self.l1);
        ((clipped - linear) / quadratic, [new_acc, linear])
    }
}

#[derive(Clone, Copy)]
struct Lion<T> {
    lr: T,
    b1: T,
    one_b1: T,
    b2: T,
    one_b2: T,
}
impl<T: Real> Rule<T, 1> for Lion<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [m]: [T; 1]) -> (T, [T; 1]) {
        let update = (m * self.b1 + g * self.one_b1).sign();
        (w - self.lr * update, [m * self.b2 + g * self.one_b2])
    }
}

#[derive(Clone, Copy)]
struct RmsPropMomentum<T> {
    lr: T,
    rho: T,
    one_rho: T,
    momentum: T,
    eps: T,
    centered: bool,
}
impl<T: Real> Rule<T, 3> for RmsPropMomentum<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [v, a, m]: [T; 3]) -> (T, [T; 3]) {
        let v = self.rho * v + self.one_rho * (g * g);
        let (a, denom) = if self.centered {
            let a = self.rho * a + self.one_rho * g;
            (a, v - a * a + self.eps)
        } else {
            (a, v + self.eps)
        };
        let increment = self.lr * g / denom.sqrt();
        let m = self.momentum * m + increment;
        (w - m, [v, a, m])
    }
}

#[derive(Clone, Copy)]
struct AdamAmsgrad<T> {
    one_b1: T,
    one_b2: T,
    alpha: T,
    eps: T,
}
impl<T: Real> Rule<T, 3> for AdamAmsgrad<T> {
    #[inline(always)]
    fn apply(&self, w: T, g: T, [m, v, v_hat]: [T; 3]) -> (T, [T; 3]) {
        let m = m + (g - m) * self.one_b1;
        let v = v + (g * g - v) * self.one_b2;
        let v_hat = v_hat.maximum(v);
        (w - m * self.alpha / (v_hat.sqrt() + self.eps), [m, v, v_hat])
    }
}

/// Evaluate `$body` with `$r` bound to `$rule`'s arithmetic for type `$t`
/// (learning rate `$lr` and 1-based step `$step`, both f64).
macro_rules! with_rule {
    ($t:ty, $rule:expr, $lr:expr, $step:expr, $r:ident => $body:expr) => {{
        let lr = <$t>::of($lr);
        match *$rule {
            UpdateRule::Sgd => {
                let $r = Sgd { lr };
                $body
            }
            UpdateRule::Momentum { momentum, nesterov } => {
                let $r = Momentum { lr, mu: <$t>::of(momentum), nesterov };
                $body
            }
            UpdateRule::Adam { beta1, beta2, epsilon, weight_decay } => {
                let $r = Adam {
                    lr,
                    one_b1: <$t>::of(1.0 - beta1),
                    one_b2: <$t>::of(1.0 - beta2),
                    alpha: <$t>::of($lr * (1.0 - beta2.powf($step)).sqrt() / (1.0 - beta1.powf($step))),
                    eps: <$t>::of(epsilon),
                    wd: <$t>::of(weight_decay),
                    decay: weight_decay > 0.0,
                };
                $body
            }
            UpdateRule::RmsProp { rho, epsilon } => {
                let $r = RmsProp { lr, rho: <$t>::of(rho), one_rho: <$t>::of(1.0 - rho), eps: <$t>::of(epsilon) };
                $body
            }
            UpdateRule::Adagrad { epsilon } => {
                let $r = Adagrad { lr, eps: <$t>::of(epsilon) };
                $body
            }
            UpdateRule::Adamax { beta1, beta2, epsilon } => {
                let $r = Adamax {
                    lr,
                    one_b1: <$t>::of(1.0 - beta1),
                    b2: <$t>::of(beta2),
                    correction: <$t>::of(1.0 - beta1.powf($step)),
                    eps: <$t>::of(epsilon),
                };
                $body
            }
            UpdateRule::Nadam { beta1, beta2, epsilon } => {
                let (u_t, u_next, prod, prod_next) = $crate::op::optim::nadam_schedule(beta1, $step);
                let $r = Nadam {
                    lr,
                    one_b1: <$t>::of(1.0 - beta1),
                    one_b2: <$t>::of(1.0 - beta2),
                    c_m: <$t>::of(u_next / (1.0 - prod_next)),
                    c_g: <$t>::of((1.0 - u_t) / (1.0 - prod)),
                    v_correction: <$t>::of(1.0 - beta2.powf($step)),
                    eps: <$t>::of(epsilon),
                };
                $body
            }
            UpdateRule::Adadelta { rho, epsilon } => {
                let $r = Adadelta { lr, rho: <$t>::of(rho), one_rho: <$t>::of(1.0 - rho), eps: <$t>::of(epsilon) };
                $body
            }
            UpdateRule::Ftrl { learning_rate_power, l1, l2, l2_shrinkage, beta } => {
                let $r = Ftrl {
                    lr,
                    power: <$t>::of(-learning_rate_power),
                    l1: <$t>::of(l1),
                    l2: <$t>::of(l2 + beta / (2.0 * $lr)),
                    l2_shrinkage: <$t>::of(l2_shrinkage),
                };
                $body
            }
            UpdateRule::RmsPropMomentum { rho, momentum, epsilon, centered } => {
                let $r = RmsPropMomentum {
                    lr,
                    rho: <$t>::of(rho),
                    one_rho: <$t>::of(1.0 - rho),
                    momentum: <$t>::of(momentum),
                    eps: <$t>::of(epsilon),
                    centered,
                };
                $body
            }
            UpdateRule::AdamAmsgrad { beta1, beta2, epsilon } => {
                let $r = AdamAmsgrad {
                    one_b1: <$t>::of(1.0 - beta1),
                    one_b2: <$t>::of(1.0 - beta2),
                    alpha: <$t>::of($lr * (1.0 - beta2.powf($step)).sqrt() / (1.0 - beta1.powf($step))),
                    eps: <$t>::of(epsilon),
                };
                $body
            }
            UpdateRule::Lion { beta1, beta2 } => {
                let $r = Lion {
                    lr,
                    b1: <$t>::of(beta1),
                    one_b1: <$t>::of(1.0 - beta1),
                    b2: <$t>::of(beta2),
                    one_b2: <$t>::of(1.0 - beta2),
                };
                $body
            }
        }
    }};
}

/// New values into new buffers: `(ow, os) = rule(w, g, s)`.
struct IntoNew<'a, T, R, const N: usize> {
    rule: R,
    w: &'a [T],
    g: &'a [T],
    s: [&'a [T]; N],
    ow: &'a mut [T],
    os: [&'a mut [T]; N],
}

impl<T: Copy, R: Rule<T, N>, const N: usize> Kernel for IntoNew<'_, T, R, N> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let IntoNew { rule, w, g, s, ow, os } = self;
        let n = ow.len();
        let (w, g) = (&w[..n], &g[..n]);
        let s: [&[T]; N] = s.map(|x| &x[..n]);
        for i in 0..n {
            let (nw, ns) = rule.apply(w[i], g[i], std::array::from_fn(|k| s[k][i]));
            ow[i] = nw;
            for k in 0..N {
                os[k][i] = ns[k];
            }
        }
    }
}

/// New values over the old ones: `(w, s) = rule(w, g, s)`.
struct Over<'a, T, R, const N: usize> {
    rule: R,
    w: &'a mut [T],
    g: &'a [T],
    s: [&'a mut [T]; N],
}

impl<T: Copy, R: Rule<T, N>, const N: usize> Kernel for Over<'_, T, R, N> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Over { rule, w, g, s } = self;
        let n = w.len();
        let g = &g[..n];
        let s = s.map(|x| &mut x[..n]);
        for i in 0..n {
            let (nw, ns) = rule.apply(w[i], g[i], std::array::from_fn(|k| s[k][i]));
            w[i] = nw;
            for k in 0..N {
                s[k][i] = ns[k];
            }
        }
    }
}

fn chunk_range(c: usize, n: usize) -> std::ops::Range<usize> {
    c * CHUNK..((c + 1) * CHUNK).min(n)
}

/// The pure op: new buffers for the variable and its slots.
pub(crate) fn apply_update(rule: &UpdateRule, inputs: &[&Value]) -> Result<Vec<Value>> {
    let dtype = inputs[0].dtype;
    match dtype {
        DType::F32 => into_new::<f32>(rule, inputs),
        DType::F64 => into_new::<f64>(rule, inputs),
        DType::F16 | DType::BF16 => {
            let up: Vec<Value> = inputs.iter().map(|v| cast(v, DType::F32)).collect::<Result<_>>()?;
            let refs: Vec<&Value> = up.iter().collect();
            into_new::<f32>(rule, &refs)?.iter().map(|v| cast(v, dtype)).collect()
        }
        d => bail!(dtype, "optimizer updates need a floating-point variable, got {d}"),
    }
}

fn into_new<T: Real>(rule: &UpdateRule, inputs: &[&Value]) -> Result<Vec<Value>> {
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
    if w.len() != n || g.len() != n || slots.len() != rule.num_slots() || slots.iter().any(|s| s.len() != n) {
        bail!(shape, "optimizer update: the gradient and slots must have the variable's shape {shape}");
    }
    let mut outs: Vec<HostBuffer> =
        (0..1 + slots.len()).map(|_| HostBuffer::for_elements::<T>(n)).collect::<Result<_>>()?;
    let ptrs: Vec<Shared<T>> = outs.iter_mut().map(|b| Shared(b.as_mut_slice::<T>().as_mut_ptr())).collect();
    (0..n.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let r = chunk_range(c, n);
        // SAFETY: chunks are disjoint ranges within 0..n; every output holds
        // n elements and is ours alone until returned.
        let out = |k: usize| unsafe { ptrs[k].part(&r) };
        let (w, g) = (&w[r.clone()], &g[r.clone()]);
        with_rule!(T, rule, lr, step, rule => {
            let s = std::array::from_fn(|k| &slots[k][r.clone()]);
            vectorize(IntoNew { rule, w, g, s, ow: out(0), os: std::array::from_fn(|k| out(1 + k)) })
        });
    });
    drop(ptrs);
    Ok(outs.into_iter().map(|b| Value::from_buffer(T::DTYPE, shape.clone(), b)).collect())
}

/// The gradient (contiguous), learning rate and step of an update.
pub(crate) fn update_operands(grad: &Value, lr: &Value, step: &Value) -> Result<(Value, f64, f64)> {
    Ok((materialize(grad)?, scalar(lr)?, scalar(step)?))
}

/// An update that overwrites a variable and its slots where they are,
/// chunk by chunk. Any thread may run chunks ([`InPlaceUpdate::help`]):
/// one that wants the variable while it is being updated finishes the
/// update instead of waiting for a thread that may be waiting for it.
pub(crate) struct InPlaceUpdate {
    rule: UpdateRule,
    dtype: DType,
    lr: f64,
    step: f64,
    grad: Value,
    n: usize,
    /// The variable and its slots, owned by nobody else (checked in `new`);
    /// handed out once by `take_results`.
    targets: Mutex<Option<Vec<Value>>>,
    ptrs: Vec<Shared<u8>>,
    chunks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// A chunk panicked: the update never completes.
    poisoned: AtomicBool,
}

impl InPlaceUpdate {
    /// The update of `targets` (the variable, then its slots), or the
    /// targets back, untouched, when it cannot run in place: a buffer
    /// shared with another holder or not a whole contiguous array, a dtype
    /// other than f32/f64, no elements, or a gradient that does not match
    /// (the pure op then reports it). `grad`, `lr` and `step` as
    /// [`update_operands`] makes them.
    pub(crate) fn new(
        rule: UpdateRule,
        mut targets: Vec<Value>,
        grad: &Value,
        lr: f64,
        step: f64,
    ) -> std::result::Result<InPlaceUpdate, Vec<Value>> {
        let Some(var) = targets.first() else { return Err(targets) };
        let (dtype, shape) = (var.dtype, var.shape().clone());
        let n = shape.numel_known();
        let eligible = n > 0
            && matches!(dtype, DType::F32 | DType::F64)
            && grad.dtype == dtype
            && grad.shape() == &shape
            && grad.layout.is_contiguous()
            && targets.len() == 1 + rule.num_slots()
            && targets.iter().all(|t| {
                t.dtype == dtype
                    && t.shape() == &shape
                    && t.layout.offset == 0
                    && t.layout.is_contiguous()
                    && t.storage.host().len_bytes() == n * dtype.size()
                    && Arc::strong_count(&t.storage) == 1
                    && Arc::weak_count(&t.storage) == 0
            });
        if !eligible {
            return Err(targets);
        }
        let mut ptrs = Vec::with_capacity(targets.len());
        for t in &mut targets {
            // A unique handle (checked above): no view or clone of the buffer exists.
            if let Some(b) = Arc::get_mut(&mut t.storage).map(|s| s.host_mut()) {
                ptrs.push(Shared(b.as_mut_ptr()));
            }
        }
        if ptrs.len() != targets.len() {
            return Err(targets);
        }
        Ok(InPlaceUpdate {
            rule,
            dtype,
            lr,
            step,
            grad: grad.clone(),
            n,
            targets: Mutex::new(Some(targets)),
            ptrs,
            chunks: n.div_ceil(CHUNK),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        })
    }

    /// Run chunks no thread has taken yet, until none is left. True if this
    /// call finished the last chunk (exactly one call returns true).
    pub(crate) fn help(&self) -> bool {
        /// Marks the update poisoned if a chunk unwinds.
        struct Poison<'a>(&'a AtomicBool);
        impl Drop for Poison<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Release);
                }
            }
        }
        let mut finished = false;
        loop {
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= self.chunks {
                return finished;
            }
            let guard = Poison(&self.poisoned);
            match self.dtype {
                DType::F64 => self.run_chunk::<f64>(c),
                _ => self.run_chunk::<f32>(c),
            }
            drop(guard);
            finished |= self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.chunks;
        }
    }

    /// How many chunks the update has (how many threads it can use).
    pub(crate) fn chunks(&self) -> usize {
        self.chunks
    }

    /// Whether a chunk panicked (the update will never be done).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The new values, once every chunk is written; `None` before, and
    /// after the first call.
    pub(crate) fn take_results(&self) -> Option<Vec<Value>> {
        if self.done.load(Ordering::Acquire) != self.chunks {
            return None;
        }
        self.targets.lock().take()
    }

    fn run_chunk<T: Real>(&self, c: usize) {
        let r = chunk_range(c, self.n);
        let g = &self.grad.contiguous_slice::<T>().unwrap_or(&[])[r.clone()];
        // SAFETY: `next` hands each chunk to one thread, chunks are disjoint
        // ranges within 0..n of buffers holding n elements of T, nobody else
        // holds these buffers (unique Arcs, checked in `new`), and
        // `take_results` hands them out only after every chunk is done
        // (Acquire on `done`).
        let part = |k: usize| unsafe { Shared(self.ptrs[k].0 as *mut T).part(&r) };
        with_rule!(T, &self.rule, self.lr, self.step, rule => {
            vectorize(Over { rule, w: part(0), g, s: std::array::from_fn(|k| part(1 + k)) })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(data: &[f32]) -> Value {
        Value::from_buffer(
            DType::F32,
            crate::tensor::Shape::new(&[data.len()]),
            HostBuffer::from_slice(data).expect("buffer"),
        )
    }

    fn scalar_value(v: f32) -> Value {
        Value::from_buffer(DType::F32, crate::tensor::Shape::scalar(), HostBuffer::from_slice(&[v]).expect("buffer"))
    }

    /// Over several chunks, the in-place update gives the pure op's bits for
    /// every rule, writes into the old buffers, and refuses a shared one.
    #[test]
    fn in_place_update_matches_the_pure_op() -> Result<()> {
        let n = 3 * CHUNK + 17;
        let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
        let s: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.01).collect();
        let rules = [
            UpdateRule::Sgd,
            UpdateRule::Momentum { momentum: 0.9, nesterov: true },
            UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.01 },
            UpdateRule::RmsProp { rho: 0.9, epsilon: 1e-7 },
            UpdateRule::Adagrad { epsilon: 1e-7 },
        ];
        let (lr, step, grad) = (scalar_value(0.01), scalar_value(3.0), value(&g));
        for rule in rules {
            let targets: Vec<Value> = (0..1 + rule.num_slots()).map(|k| value(if k == 0 { &w } else { &s })).collect();
            let mut inputs: Vec<&Value> = vec![&targets[0], &grad, &lr, &step];
            inputs.extend(targets[1..].iter());
            let expected = apply_update(&rule, &inputs)?;
            let before: Vec<*const u8> = targets.iter().map(|t| t.storage.host().bytes().as_ptr()).collect();
            let Ok(update) = InPlaceUpdate::new(rule, targets, &grad, 0.01, 3.0) else {
                panic!("unique f32 buffers update in place")
            };
            assert!(update.take_results().is_none(), "{rule:?}: results before the update ran");
            let finished: Vec<bool> = (0..3).into_par_iter().map(|_| update.help()).collect();
            assert_eq!(finished.iter().filter(|&&f| f).count(), 1, "{rule:?}: one helper finishes the update");
            let got = update.take_results().expect("done");
            assert!(update.take_results().is_none(), "results are handed out once");
            for (k, (e, v)) in expected.iter().zip(&got).enumerate() {
                assert_eq!(v.storage.host().bytes().as_ptr(), before[k], "{rule:?}: output {k} moved");
                let (e, v) = (e.contiguous_slice::<f32>().expect("e"), v.contiguous_slice::<f32>().expect("v"));
                assert!(e.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits()), "{rule:?}: output {k} differs");
            }
        }
        let shared = value(&w);
        let keep = shared.clone();
        let rule = UpdateRule::Sgd;
        assert!(InPlaceUpdate::new(rule, vec![shared], &grad, 0.01, 3.0).is_err(), "a shared buffer is refused");
        drop(keep);
        let short = value(&g[..10]);
        assert!(InPlaceUpdate::new(rule, vec![value(&w)], &short, 0.01, 3.0).is_err(), "a wrong gradient is refused");
        assert!(InPlaceUpdate::new(rule, vec![value(&[])], &value(&[]), 0.01, 3.0).is_err(), "no elements: no chunks");
        Ok(())
    }
}
