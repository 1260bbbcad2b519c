//! Running any op on a backend that has no kernel of its own for it: views
//! share one layout implementation, primitives go to the backend, and
//! composites (softmax, concat, pad, tile, one-hot, optimizer updates, fused
//! programs, ...) run as their decomposition into primitives.
//!
//! The match below is exhaustive: a new op does not compile until it says
//! which of the three it is.

use super::{transfer, views, Backend, KernelCtx, Values};
use crate::error::{bail, Error, Result};
use crate::op::creation::Distribution;
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::fused::{FusedProgram, Instr};
use crate::op::optim::UpdateRule;
use crate::op::reduce::{reduced_shape, ReduceOp};
use crate::op::{Meta, Op};
use crate::tensor::layout::Layout;
use crate::tensor::{DType, Scalar, Shape, Value};
use smallvec::{smallvec, SmallVec};

/// Runs ops of a decomposition on one backend.
struct Ex<'a> {
    be: &'a dyn Backend,
    ctx: &'a KernelCtx,
}

impl Ex<'_> {
    /// Run `op` here (inferring its outputs like any other call).
    fn op(&self, op: Op, inputs: &[&Value]) -> Result<Value> {
        let mut out = super::execute_on(self.be.device(), &op, inputs, self.ctx)?;
        if out.is_empty() {
            bail!(invalid, "{} gave no output", op.type_name());
        }
        Ok(out.swap_remove(0))
    }
    fn unary(&self, f: UnaryOp, x: &Value) -> Result<Value> {
        self.op(Op::Unary { f }, &[x])
    }
    fn binary(&self, f: BinaryOp, a: &Value, b: &Value) -> Result<Value> {
        self.op(Op::Binary { f }, &[a, b])
    }
    /// A scalar of `dtype` on this device.
    fn scalar(&self, v: impl Into<Scalar>, dtype: DType) -> Result<Value> {
        self.be.assemble(&Meta::new(dtype, Shape::scalar()), v.into(), &[])
    }
    /// `op(x, scalar)` with the scalar in `x`'s dtype.
    fn with(&self, f: BinaryOp, x: &Value, v: f64) -> Result<Value> {
        let s = self.scalar(v, x.dtype)?;
        self.binary(f, x, &s)
    }
    fn reduce(&self, f: ReduceOp, x: &Value, axes: &[usize], keepdims: bool) -> Result<Value> {
        self.op(Op::Reduce { f, axes: axes.to_vec(), keepdims }, &[x])
    }
    /// A contiguous copy (or `x` when it is contiguous already).
    fn contiguous(&self, x: &Value) -> Result<Value> {
        if x.layout.is_contiguous() {
            return Ok(x.clone());
        }
        self.be.assemble(
            &Meta::new(x.dtype, x.shape().clone()),
            Scalar::I64(0),
            &[(Layout::contiguous(x.shape().clone()), x)],
        )
    }
}

/// The region of a row-major `shape` that starts at `begin` and has `size`.
fn region(shape: &Shape, begin: &[usize], size: &Shape) -> Layout {
    let full = Layout::contiguous(shape.clone());
    let offset = if size.numel_known() == 0 { 0 } else { full.offset_of(begin) };
    Layout { shape: size.clone(), strides: full.strides.clone(), offset }
}

/// The first element of a value: floats as f64, integers exactly as i64.
fn first(be: &dyn Backend, v: &Value) -> Result<Scalar> {
    let host = be.download(v)?;
    let first = if v.dtype.is_float() {
        let c = crate::backend::cpu::elementwise::cast(&host, DType::F64)?;
        c.contiguous_slice::<f64>().and_then(|s| s.first().copied()).map(Scalar::F64)
    } else {
        let c = crate::backend::cpu::elementwise::cast(&host, DType::I64)?;
        c.contiguous_slice::<i64>().and_then(|s| s.first().copied()).map(Scalar::I64)
    };
    match first {
        Some(x) => Ok(x),
        None => bail!(invalid, "expected a scalar, got shape {}", v.shape()),
    }
}

/// Run `op` on `be` without a kernel of the backend's own.
pub(crate) fn run(be: &dyn Backend, op: &Op, inputs: &[&Value], outs: &[Meta], ctx: &KernelCtx) -> Result<Values> {
    let x = || inputs[0];
    let out = || &outs[0];
    let ex = Ex { be, ctx };
    let v: Value = match op {
        // Graph plumbing.
        Op::Const { value } => transfer(&value.0, be.device())?,
        Op::Placeholder { .. } => {
            return Err(Error::precondition("a placeholder has no value: feed it in Session::run"));
        }
        Op::Identity | Op::StopGradient | Op::CopyToDevice { .. } => x().clone(),
        Op::NoOp => return Ok(SmallVec::new()),
        Op::Variable { .. } | Op::Assign { .. } | Op::ReadVariable | Op::ResourceApplyUpdate { .. } => {
            return Err(Error::precondition(
                "variables live in a Session (graph mode) or an eager Variable; this op cannot run on its own",
            ));
        }
        Op::If { .. } | Op::Case { .. } | Op::While { .. } => {
            return Err(Error::precondition(
                "control flow runs its bodies in a Session (graph mode), or as Rust closures eagerly",
            ));
        }

        // Primitives.
        Op::Unary { f } => be.unary(*f, x(), out())?,
        Op::Binary { f } => be.binary(*f, inputs[0], inputs[1], out())?,
        Op::Select => be.select(inputs[0], inputs[1], inputs[2], out())?,
        Op::Cast { .. } if x().dtype == out().dtype => x().clone(),
        Op::Cast { .. } => be.cast(x(), out())?,
        Op::Reduce { f, axes, .. } => be.reduce(*f, x(), axes, out())?,
        Op::ArgReduce { f, axis, .. } => be.arg_reduce(*f, x(), *axis, out())?,
        Op::Scan { f, axis, exclusive, reverse } => be.scan(*f, x(), *axis, *exclusive, *reverse, out())?,
        Op::MatMul { transpose_a, transpose_b } => {
            be.matmul(inputs[0], inputs[1], *transpose_a, *transpose_b, out())?
        }
        Op::Range { start, delta, .. } => be.range(*start, *delta, out())?,
        Op::Random { dist, seed, .. } => draw(be, dist, out(), *seed, ctx)?,
        Op::RandomLike { dist, seed } => match inputs.get(1) {
            Some(offset) => be.random_offset(dist, out(), *seed, offset)?,
            None => draw(be, dist, out(), *seed, ctx)?,
        },
        Op::Gather { axis, batch_dims } => be.gather(inputs[0], inputs[1], *axis, *batch_dims, out())?,
        Op::GatherNd => be.gather_nd(inputs[0], inputs[1], out())?,
        Op::ScatterNd { .. } => be.scatter_nd(inputs[0], inputs[1], out())?,
        Op::GatherGrad { axis, batch_dims } => be.scatter_add(inputs[0], inputs[1], *axis, *batch_dims, out())?,
        Op::GatherNdGrad => be.scatter_nd(inputs[1], inputs[0], out())?,
        Op::TopK { k, .. } => {
            let (v, i) = be.top_k(x(), *k, outs)?;
            return Ok(smallvec![v, i]);
        }
        // Row-sequential algorithms: on a host copy, the results copied back.
        Op::Host { f } => return on_host(be, inputs, |v| super::cpu::host::run(*f, v[0], outs)),
        // Collectives move host buffers.
        Op::Collective { c } => return on_host(be, inputs, |v| super::cpu::collective::run(c, v, outs)),
        // Factorizations: faer's kernels, on host copies too.
        Op::Linalg { f } => return on_host(be, inputs, |v| super::cpu::linalg::run(*f, v, outs)),
        // Complex parts and transforms: on host copies.
        Op::Complex { .. } | Op::Fft { .. } => return on_host(be, inputs, |v| super::cpu::complex::run(op, v, outs)),
        // Convolutions and pooling: as taps of strided views (`window`).
        Op::Window { f } => window(&ex, f, inputs, out(), IM2COL_MAX_ELEMENTS)?,

        // Views.
        Op::Reshape { shape } => views::reshape(x(), shape, |v| ex.contiguous(v))?,
        Op::ReshapeLike => {
            let spec: Vec<i64> = out().shape.iter().map(|&d| d as i64).collect();
            views::reshape(x(), &spec, |v| ex.contiguous(v))?
        }
        Op::Transpose { perm } => views::transpose(x(), perm),
        Op::ExpandDims { axis } => views::expand_dims(x(), *axis),
        Op::Squeeze { axes } => views::squeeze(x(), axes),
        Op::BroadcastTo { .. } | Op::BroadcastLike | Op::BroadcastToDims => views::broadcast_to(x(), &out().shape)?,
        Op::ShapeOf { dtype } => transfer(&super::cpu::creation::shape_of(x().shape(), *dtype)?, be.device())?,
        Op::Slice { begin, .. } => views::slice(x(), begin, out()),
        Op::StridedSlice { spec } => views::strided_slice(x(), spec)?,
        Op::Reverse { axes } => views::reverse(x(), axes),
        Op::Split { axis, sizes } => return Ok(views::split(x(), *axis, sizes).into()),
        Op::Unstack { axis, num } => return Ok(views::unstack(x(), *axis, *num).into()),
        Op::SplitLike { axis } => {
            let sizes: Vec<usize> = inputs[1..].iter().map(|v| v.shape()[*axis]).collect();
            return Ok(views::split(x(), *axis, &sizes).into());
        }

        // Composites.
        Op::Fill { value, .. } | Op::FillLike { value } => be.assemble(out(), *value, &[])?,
        Op::Size { .. } => be.assemble(out(), Scalar::I64(x().numel() as i64), &[])?,
        Op::Concat { axis } => {
            let mut begin = vec![0usize; out().shape.rank()];
            let mut pieces = Vec::with_capacity(inputs.len());
            for v in inputs {
                pieces.push((region(&out().shape, &begin, v.shape()), *v));
                begin[*axis] += v.shape()[*axis];
            }
            be.assemble(out(), Scalar::I64(0), &pieces)?
        }
        Op::Pad { paddings, mode, value } => pad(&ex, x(), paddings, *mode, *value, out())?,
        Op::Tile { multiples } => {
            // [d0, d1] -> [1, d0, 1, d1] broadcast to [m0, d0, m1, d1], copied, reshaped.
            let dims = x().shape().to_vec();
            let spread: Vec<i64> = dims.iter().flat_map(|&d| [1, d as i64]).collect();
            let target: Vec<usize> = dims.iter().zip(multiples).flat_map(|(&d, &m)| [m, d]).collect();
            let s = views::reshape(x(), &spread, |v| ex.contiguous(v))?;
            let b = views::broadcast_to(&s, &Shape::from(target))?;
            let spec: Vec<i64> = out().shape.iter().map(|&d| d as i64).collect();
            views::reshape(&ex.contiguous(&b)?, &spec, |v| ex.contiguous(v))?
        }
        Op::OneHot { depth, on, off, axis, dtype } => {
            // indices[..., None, ...] == range(depth) along `axis`, then on/off.
            let idx = ex.op(Op::Cast { dtype: DType::I64 }, &[x()])?;
            let idx = views::expand_dims(&idx, *axis);
            let mut r_shape = vec![1usize; out().shape.rank()];
            r_shape[*axis] = *depth;
            let r = be.range(Scalar::I64(0), Scalar::I64(1), &Meta::new(DType::I64, Shape::from(r_shape)))?;
            let hit = ex.binary(BinaryOp::Equal, &idx, &r)?;
            let (on, off) = (ex.scalar(*on, *dtype)?, ex.scalar(*off, *dtype)?);
            be.select(&hit, &on, &off, out())?
        }
        Op::Linspace { start, stop, .. } => {
            let n = out().shape.numel_known();
            let step = if n > 1 { (stop - start) / (n - 1) as f64 } else { 0.0 };
            let r = be.range(Scalar::F64(*start), Scalar::F64(step), out())?;
            if n > 1 {
                // The last value is `stop` exactly.
                let head = views::slice(&r, &[0], &Meta::new(out().dtype, Shape::from(vec![n - 1])));
                let last = ex.scalar(*stop, out().dtype)?;
                let last = views::expand_dims(&last, 0);
                let at_end = region(&out().shape, &[n - 1], last.shape());
                be.assemble(
                    out(),
                    Scalar::I64(0),
                    &[(region(&out().shape, &[0], head.shape()), &head), (at_end, &last)],
                )?
            } else {
                r
            }
        }
        Op::Eye { rows, cols, dtype } => {
            let r = be.range(Scalar::I64(0), Scalar::I64(1), &Meta::new(DType::I64, Shape::from(vec![*rows, 1])))?;
            let c = be.range(Scalar::I64(0), Scalar::I64(1), &Meta::new(DType::I64, Shape::from(vec![1, *cols])))?;
            let hit = ex.binary(BinaryOp::Equal, &r, &c)?;
            ex.op(Op::Cast { dtype: *dtype }, &[&hit])?
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let m = ex.reduce(ReduceOp::Max, x(), &[*axis], true)?;
            let z = ex.binary(BinaryOp::Sub, x(), &m)?;
            let e = ex.unary(UnaryOp::Exp, &z)?;
            let s = ex.reduce(ReduceOp::Sum, &e, &[*axis], true)?;
            if matches!(op, Op::Softmax { .. }) {
                ex.binary(BinaryOp::Div, &e, &s)?
            } else {
                ex.binary(BinaryOp::Sub, &z, &ex.unary(UnaryOp::Log, &s)?)?
            }
        }
        Op::SumTo => {
            let (gr, lr) = (x().shape().rank(), out().shape.rank());
            let lead = gr - lr;
            let axes: Vec<usize> =
                (0..gr).filter(|&d| d < lead || (out().shape[d - lead] == 1 && x().shape()[d] != 1)).collect();
            let summed = if axes.is_empty() {
                x().clone()
            } else {
                let keep = reduced_shape(x().shape(), &axes, true);
                be.reduce(ReduceOp::Sum, x(), &axes, &Meta::new(x().dtype, keep))?
            };
            let spec: Vec<i64> = out().shape.iter().map(|&d| d as i64).collect();
            views::reshape(&summed, &spec, |v| ex.contiguous(v))?
        }
        Op::StridedSliceGrad { spec } => {
            let region = views::strided_layout(&Layout::contiguous(out().shape.clone()), spec)?;
            be.assemble(out(), Scalar::I64(0), &[(region, x())])?
        }
        Op::ApplyUpdate { rule } => return Ok(apply_update(&ex, rule, inputs)?.into()),
        Op::FusedElementwise { program } => fused(&ex, program, inputs)?,
        Op::FusedMatMul { transpose_a, transpose_b, activation } => {
            let y =
                ex.op(Op::MatMul { transpose_a: *transpose_a, transpose_b: *transpose_b }, &[inputs[0], inputs[1]])?;
            let y = ex.binary(BinaryOp::Add, &y, inputs[2])?;
            match activation {
                Some(f) => ex.unary(*f, &y)?,
                None => y,
            }
        }
    };
    Ok(smallvec![v])
}

/// Reflect and symmetric padding one dimension at a time: the reversed edges
/// and the middle assembled side by side; constant padding in one assembly.
fn pad(
    ex: &Ex<'_>,
    x: &Value,
    paddings: &[(usize, usize)],
    mode: crate::op::movement::PadMode,
    value: Scalar,
    out: &Meta,
) -> Result<Value> {
    use crate::op::movement::PadMode;
    if mode == PadMode::Constant {
        let begin: Vec<usize> = paddings.iter().map(|p| p.0).collect();
        return ex.be.assemble(out, value, &[(region(&out.shape, &begin, x.shape()), x)]);
    }
    let shift = if mode == PadMode::Reflect { 1 } else { 0 };
    let mut cur = x.clone();
    for (axis, &(before, after)) in paddings.iter().enumerate() {
        if before == 0 && after == 0 {
            continue;
        }
        let n = cur.shape()[axis];
        let edge = |start: usize, len: usize| {
            let mut begin = vec![0usize; cur.shape().rank()];
            let mut size = cur.shape().to_vec();
            begin[axis] = start;
            size[axis] = len;
            views::reverse(&views::slice(&cur, &begin, &Meta::new(cur.dtype, Shape::from(size))), &[axis])
        };
        let (head, tail) = (edge(shift, before), edge(n - after - shift, after));
        let mut dims = cur.shape().to_vec();
        dims[axis] += before + after;
        let shape = Shape::from(dims);
        let mut at = vec![0usize; shape.rank()];
        let mut pieces = vec![(region(&shape, &at, head.shape()), &head)];
        at[axis] = before;
        pieces.push((region(&shape, &at, cur.shape()), &cur));
        at[axis] = before + n;
        pieces.push((region(&shape, &at, tail.shape()), &tail));
        let next = ex.be.assemble(&Meta::new(cur.dtype, shape), Scalar::I64(0), &pieces)?;
        cur = next;
    }
    ex.contiguous(&cur)
}

/// An optimizer update as elementwise ops, with the rules' published
/// formulas (`ops::optim::UpdateRule`): new values of the variable and slots.
fn apply_update(ex: &Ex<'_>, rule: &UpdateRule, inputs: &[&Value]) -> Result<Vec<Value>> {
    let (w, g) = (inputs[0], inputs[1]);
    if !w.dtype.is_float() {
        bail!(dtype, "optimizer updates need a floating-point variable, got {}", w.dtype);
    }
    if g.shape() != w.shape() || inputs[4..].iter().any(|s| s.shape() != w.shape()) {
        bail!(shape, "optimizer update: the gradient and slots must have the variable's shape {}", w.shape());
    }
    let lr = first(ex.be, inputs[2])?.as_f64();
    let step = first(ex.be, inputs[3])?.as_f64();
    let (mul, add, sub, div) = (BinaryOp::Mul, BinaryOp::Add, BinaryOp::Sub, BinaryOp::Div);
    let scaled = |v: &Value, k: f64| ex.with(mul, v, k);
    let minus_lr = |step: &Value| -> Result<Value> { ex.binary(sub, w, &scaled(step, lr)?) };
    Ok(match *rule {
        UpdateRule::Sgd => vec![minus_lr(g)?],
        UpdateRule::Momentum { momentum, nesterov } => {
            // Keras 3: m = m mu - g lr; w += m, or w += m mu - g lr (Nesterov).
            let m = ex.binary(sub, &scaled(inputs[4], momentum)?, &scaled(g, lr)?)?;
            let step = if nesterov { ex.binary(sub, &scaled(&m, momentum)?, &scaled(g, lr)?)? } else { m.clone() };
            vec![ex.binary(add, w, &step)?, m]
        }
        UpdateRule::Adam { beta1, beta2, epsilon, weight_decay } => {
            // Keras: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); with decay
            // w -= w wd lr first; then w -= m alpha / (sqrt(v) + eps).
            let m = ex.binary(add, inputs[4], &scaled(&ex.binary(sub, g, inputs[4])?, 1.0 - beta1)?)?;
            let g2 = ex.binary(mul, g, g)?;
            let v = ex.binary(add, inputs[5], &scaled(&ex.binary(sub, &g2, inputs[5])?, 1.0 - beta2)?)?;
            let alpha = lr * (1.0 - beta2.powf(step)).sqrt() / (1.0 - beta1.powf(step));
            let w = if weight_decay > 0.0 {
                ex.binary(sub, w, &scaled(&scaled(w, weight_decay)?, lr)?)?
            } else {
                w.clone()
            };
            let denom = ex.with(add, &ex.unary(UnaryOp::Sqrt, &v)?, epsilon)?;
            let update = ex.binary(div, &scaled(&m, alpha)?, &denom)?;
            vec![ex.binary(sub, &w, &update)?, m, v]
        }
        UpdateRule::RmsProp { rho, epsilon } => {
            let g2 = ex.binary(mul, &scaled(g, 1.0 - rho)?, g)?;
            let ms = ex.binary(add, &scaled(inputs[4], rho)?, &g2)?;
            let denom = ex.unary(UnaryOp::Sqrt, &ex.with(add, &ms, epsilon)?)?;
            vec![ex.binary(sub, w, &ex.binary(div, &scaled(g, lr)?, &denom)?)?, ms]
        }
        UpdateRule::Adagrad { epsilon } => {
            let acc = ex.binary(add, inputs[4], &ex.binary(mul, g, g)?)?;
            let denom = ex.unary(UnaryOp::Sqrt, &ex.with(add, &acc, epsilon)?)?;
            vec![ex.binary(sub, w, &ex.binary(div, &scaled(g, lr)?, &denom)?)?, acc]
        }
        UpdateRule::Adamax { beta1, beta2, epsilon } => {
            let m = ex.binary(add, inputs[4], &scaled(&ex.binary(sub, g, inputs[4])?, 1.0 - beta1)?)?;
            let u = ex.binary(BinaryOp::Maximum, &scaled(inputs[5], beta2)?, &ex.unary(UnaryOp::Abs, g)?)?;
            let denom = scaled(&ex.with(add, &u, epsilon)?, 1.0 - beta1.powf(step))?;
            vec![ex.binary(sub, w, &ex.binary(div, &scaled(&m, lr)?, &denom)?)?, m, u]
        }
        UpdateRule::Nadam { beta1, beta2, epsilon } => {
            let (u_t, u_next, prod, prod_next) = crate::op::optim::nadam_schedule(beta1, step);
            let m = ex.binary(add, inputs[4], &scaled(&ex.binary(sub, g, inputs[4])?, 1.0 - beta1)?)?;
            let g2 = ex.binary(mul, g, g)?;
            let v = ex.binary(add, inputs[5], &scaled(&ex.binary(sub, &g2, inputs[5])?, 1.0 - beta2)?)?;
            let m_hat =
                ex.binary(add, &scaled(&m, u_next / (1.0 - prod_next))?, &scaled(g, (1.0 - u_t) / (1.0 - prod))?)?;
            let v_hat = ex.with(div, &v, 1.0 - beta2.powf(step))?;
            let denom = ex.with(add, &ex.unary(UnaryOp::Sqrt, &v_hat)?, epsilon)?;
            vec![ex.binary(sub, w, &ex.binary(div, &scaled(&m_hat, lr)?, &denom)?)?, m, v]
        }
        UpdateRule::Adadelta { rho, epsilon } => {
            let rms = |x: &Value| ex.unary(UnaryOp::Sqrt, &ex.with(add, x, epsilon)?);
            let ag = ex.binary(add, &scaled(inputs[4], rho)?, &scaled(&ex.binary(mul, g, g)?, 1.0 - rho)?)?;
            let delta = ex.unary(UnaryOp::Neg, &ex.binary(div, &ex.binary(mul, &rms(inputs[5])?, g)?, &rms(&ag)?)?)?;
            let d2 = ex.binary(mul, &delta, &delta)?;
            let ad = ex.binary(add, &scaled(inputs[5], rho)?, &scaled(&d2, 1.0 - rho)?)?;
            vec![ex.binary(add, w, &scaled(&delta, lr)?)?, ag, ad]
        }
        UpdateRule::Ftrl { learning_rate_power, l1, l2, l2_shrinkage, beta } => {
            let (acc, linear) = (inputs[4], inputs[5]);
            let power = -learning_rate_power;
            let grad = ex.binary(add, g, &scaled(w, 2.0 * l2_shrinkage)?)?;
            let new_acc = ex.binary(add, acc, &ex.binary(mul, g, g)?)?;
            let (pn, pa) = (ex.with(BinaryOp::Pow, &new_acc, power)?, ex.with(BinaryOp::Pow, acc, power)?);
            let sigma = ex.with(div, &ex.binary(sub, &pn, &pa)?, lr)?;
            let linear = ex.binary(add, linear, &ex.binary(sub, &grad, &ex.binary(mul, &sigma, w)?)?)?;
            let quadratic = ex.with(add, &ex.with(div, &pn, lr)?, 2.0 * (l2 + beta / (2.0 * lr)))?;
            let clipped = ex.with(BinaryOp::Minimum, &ex.with(BinaryOp::Maximum, &linear, -l1)?, l1)?;
            vec![ex.binary(div, &ex.binary(sub, &clipped, &linear)?, &quadratic)?, new_acc, linear]
        }
        UpdateRule::RmsPropMomentum { rho, momentum, epsilon, centered } => {
            let g2 = ex.binary(mul, g, g)?;
            let v = ex.binary(add, &scaled(inputs[4], rho)?, &scaled(&g2, 1.0 - rho)?)?;
            let (a, denom) = if centered {
                let a = ex.binary(add, &scaled(inputs[5], rho)?, &scaled(g, 1.0 - rho)?)?;
                let d = ex.with(add, &ex.binary(sub, &v, &ex.binary(mul, &a, &a)?)?, epsilon)?;
                (a, d)
            } else {
                (inputs[5].clone(), ex.with(add, &v, epsilon)?)
            };
            let increment = ex.binary(div, &scaled(g, lr)?, &ex.unary(UnaryOp::Sqrt, &denom)?)?;
            let m = ex.binary(add, &scaled(inputs[6], momentum)?, &increment)?;
            vec![ex.binary(sub, w, &m)?, v, a, m]
        }
        UpdateRule::AdamAmsgrad { beta1, beta2, epsilon } => {
            let m = ex.binary(add, inputs[4], &scaled(&ex.binary(sub, g, inputs[4])?, 1.0 - beta1)?)?;
            let g2 = ex.binary(mul, g, g)?;
            let v = ex.binary(add, inputs[5], &scaled(&ex.binary(sub, &g2, inputs[5])?, 1.0 - beta2)?)?;
            let v_hat = ex.binary(BinaryOp::Maximum, inputs[6], &v)?;
            let alpha = lr * (1.0 - beta2.powf(step)).sqrt() / (1.0 - beta1.powf(step));
            let denom = ex.with(add, &ex.unary(UnaryOp::Sqrt, &v_hat)?, epsilon)?;
            vec![ex.binary(sub, w, &ex.binary(div, &scaled(&m, alpha)?, &denom)?)?, m, v, v_hat]
        }
        UpdateRule::Lion { beta1, beta2 } => {
            let m = inputs[4];
            let direction = ex.unary(UnaryOp::Sign, &ex.binary(add, &scaled(m, beta1)?, &scaled(g, 1.0 - beta1)?)?)?;
            let m_new = ex.binary(add, &scaled(m, beta2)?, &scaled(g, 1.0 - beta2)?)?;
            vec![ex.binary(sub, w, &scaled(&direction, lr)?)?, m_new]
        }
    })
}

/// A fused elementwise program, one instruction at a time.
fn fused(ex: &Ex<'_>, program: &FusedProgram, inputs: &[&Value]) -> Result<Value> {
    let mut regs: Vec<Value> = Vec::with_capacity(program.instrs.len());
    for (i, ins) in program.instrs.iter().enumerate() {
        let get = |r: usize| -> Result<&Value> {
            match regs.get(r) {
                Some(v) if r < i => Ok(v),
                _ => bail!(invalid, "fused instruction {i} reads register {r}, which is not computed yet"),
            }
        };
        let v = match ins {
            Instr::Input(k) => match inputs.get(*k) {
                Some(v) => (*v).clone(),
                None => bail!(invalid, "fused program reads input {k} of {}", inputs.len()),
            },
            Instr::Scalar(s, dtype) => ex.scalar(*s, *dtype)?,
            Instr::Unary(f, a) => ex.unary(*f, get(*a)?)?,
            Instr::Binary(f, a, b) => ex.binary(*f, get(*a)?, get(*b)?)?,
            Instr::Select(c, a, b) => ex.op(Op::Select, &[get(*c)?, get(*a)?, get(*b)?])?,
            Instr::Cast(dtype, a) => ex.op(Op::Cast { dtype: *dtype }, &[get(*a)?])?,
            Instr::Pad { operand, pads, value } => {
                let pad =
                    Op::Pad { paddings: pads.clone(), mode: crate::op::movement::PadMode::Constant, value: *value };
                ex.op(pad, &[get(*operand)?])?
            }
        };
        regs.push(v);
    }
    let Some(result) = regs.get(program.output) else {
        bail!(invalid, "fused program output register {} does not exist", program.output);
    };
    // The program's result has the broadcast shape of all its inputs.
    let metas: Vec<Meta> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
    let shape = program.shape(&metas)?;
    let result = views::broadcast_to(result, &shape)?;
    match &program.reduce {
        Some(r) => ex.reduce(r.f, &result, &r.axes, r.keepdims),
        None => ex.contiguous(&result),
    }
}

/// Run a CPU-only kernel for backend `be`: the inputs copied to the host,
/// the results copied back.
pub(crate) fn on_host(
    be: &dyn Backend,
    inputs: &[&Value],
    kernel: impl FnOnce(&[&Value]) -> Result<SmallVec<[Value; 2]>>,
) -> Result<Values> {
    let host: Vec<Value> = inputs.iter().map(|v| transfer(v, crate::tensor::Device::CPU)).collect::<Result<_>>()?;
    let refs: Vec<&Value> = host.iter().collect();
    kernel(&refs)?.iter().map(|r| transfer(r, be.device())).collect()
}

/// The largest im2col matrix a convolution builds (elements); larger ones
/// run tap by tap.
const IM2COL_MAX_ELEMENTS: usize = 1 << 26;

/// The windows of a convolution or pooling as a padded copy of the input
/// and, for each tap, a strided view of it `[batch, output..., channels]`
/// (a stride of `stride · row` along each spatial axis).
struct Taps {
    geometry: crate::op::window::Geometry,
    padded: Shape,
    /// Offsets (in the padded layout) of each tap's first element.
    offsets: Vec<usize>,
    strides: crate::tensor::layout::Strides,
}

impl Taps {
    fn new(geometry: crate::op::window::Geometry) -> Taps {
        let g = &geometry;
        let r = g.rank();
        let mut dims = vec![g.batch];
        for d in 0..r {
            let needed = (g.output[d].max(1) - 1) * g.strides[d] + (g.window[d] - 1) * g.dilations[d] + 1;
            dims.push((g.pad_before[d] + g.input[d]).max(needed));
        }
        dims.push(g.channels);
        let padded = Shape::from(dims);
        let full = Layout::contiguous(padded.clone());
        let mut strides = full.strides.clone();
        for d in 0..r {
            strides[d + 1] *= g.strides[d] as isize;
        }
        let mut offsets = Vec::with_capacity(g.taps());
        for t in 0..g.taps() {
            let mut index = vec![0usize; r + 2];
            let mut rest = t;
            for d in (0..r).rev() {
                index[d + 1] = (rest % g.window[d]) * g.dilations[d];
                rest /= g.window[d];
            }
            offsets.push(full.offset_of(&index));
        }
        Taps { geometry, padded, offsets, strides }
    }
    /// The region of the padded tensor tap `t` reads, over `channels`
    /// channels from `c0`.
    fn layout(&self, t: usize, c0: usize, channels: usize) -> Layout {
        let shape = self.geometry.output_shape(channels);
        Layout { shape, strides: self.strides.clone(), offset: self.offsets[t] + c0 }
    }
    /// Whether the im2col matrix of `channels` channels (every output
    /// position's window, all taps side by side) has at most `limit` elements:
    /// then a convolution is one matrix product per group instead of one per
    /// tap.
    fn columns_fit(&self, channels: usize, limit: usize) -> bool {
        let rows = self.geometry.output_shape(1).numel_known();
        let elements = rows.saturating_mul(self.offsets.len()).saturating_mul(channels);
        elements > 0 && elements <= limit
    }
    /// The im2col matrix of the padded input `p` over channels
    /// `c0..c0 + channels`: `[batch · output positions, taps · channels]`,
    /// row `r` holding output position `r`'s window, tap by tap.
    fn columns(&self, ex: &Ex<'_>, p: &Value, c0: usize, channels: usize) -> Result<Value> {
        let taps = self.offsets.len();
        let cols = self.geometry.output_shape(taps * channels);
        let piece = self.geometry.output_shape(channels);
        let pieces: Vec<(Layout, Value)> = (0..taps)
            .map(|t| {
                let mut begin = vec![0usize; cols.rank()];
                begin[cols.rank() - 1] = t * channels;
                (region(&cols, &begin, &piece), p.view(self.layout(t, c0, channels)))
            })
            .collect();
        let refs: Vec<(Layout, &Value)> = pieces.iter().map(|(l, v)| (l.clone(), v)).collect();
        let m = ex.be.assemble(&Meta::new(p.dtype, cols), Scalar::F64(0.0), &refs)?;
        views::reshape(&m, &[-1, (taps * channels) as i64], |v| ex.contiguous(v))
    }
    /// `x` placed in the padded shape, `fill` around it.
    fn pad(&self, ex: &Ex<'_>, x: &Value, fill: Scalar) -> Result<Value> {
        let mut begin = vec![0usize];
        begin.extend(&self.geometry.pad_before);
        begin.push(0);
        ex.be.assemble(&Meta::new(x.dtype, self.padded.clone()), fill, &[(region(&self.padded, &begin, x.shape()), x)])
    }
    /// The input's part of a padded-shaped gradient.
    fn crop(&self, ex: &Ex<'_>, padded: &Value, input: &Shape) -> Result<Value> {
        let mut begin = vec![0usize];
        begin.extend(&self.geometry.pad_before);
        begin.push(0);
        ex.contiguous(&views::slice(padded, &begin, &Meta::new(padded.dtype, input.clone())))
    }
    /// Sum of `pieces` (each at a tap's region) scattered into zeros of the padded shape.
    fn scatter(&self, ex: &Ex<'_>, dtype: DType, pieces: &[(Layout, Value)], acc: Option<Value>) -> Result<Value> {
        let refs: Vec<(Layout, &Value)> = pieces.iter().map(|(l, v)| (l.clone(), v)).collect();
        let placed = ex.be.assemble(&Meta::new(dtype, self.padded.clone()), Scalar::F64(0.0), &refs)?;
        match acc {
            Some(a) => ex.binary(BinaryOp::Add, &a, &placed),
            None => Ok(placed),
        }
    }
}

/// Channels `j·width .. (j + 1)·width` of `v` (`[..., channels]`) as a
/// `[rows, width]` matrix (one group of a grouped convolution).
fn channel_group(ex: &Ex<'_>, v: &Value, j: usize, width: usize) -> Result<Value> {
    let r = v.shape().rank();
    let mut begin = vec![0usize; r];
    begin[r - 1] = j * width;
    let mut size = v.shape().to_vec();
    size[r - 1] = width;
    as_matrix(ex, &views::slice(v, &begin, &Meta::new(v.dtype, Shape::from(size))), width)
}

/// Samples of a seeded random op from the stream `ctx` names: its number,
/// or where a recorded device graph reads it.
fn draw(be: &dyn Backend, dist: &Distribution, out: &Meta, seed: u64, ctx: &KernelCtx) -> Result<Value> {
    match ctx.random_stream_at {
        Some(at) => be.random_at(dist, out, seed, at),
        None => be.random(dist, out, seed, ctx.random_stream),
    }
}

/// `[rows, channels]`, a contiguous copy where needed.
fn as_matrix(ex: &Ex<'_>, v: &Value, channels: usize) -> Result<Value> {
    views::reshape(v, &[-1, channels as i64], |v| ex.contiguous(v))
}

/// Convolutions and pooling as taps of strided views: each tap's view is
/// multiplied by its slice of the filter (or compared, or summed), and the
/// gradients scatter back through the same views.
fn window(
    ex: &Ex<'_>,
    f: &crate::op::window::WindowOp,
    inputs: &[&Value],
    out: &Meta,
    im2col_limit: usize,
) -> Result<Value> {
    use crate::op::window::{Geometry, PoolKind, WindowOp};
    let dtype = out.dtype;
    let slice =
        |v: &Value, begin: Vec<usize>, size: Vec<usize>| views::slice(v, &begin, &Meta::new(dtype, Shape::from(size)));
    // The filter's [cg, og] block for tap `t` and group `j`, from `[taps, cg, channels]`.
    let block = |w: &Value, t: usize, j: usize, cg: usize, og: usize| slice(w, vec![t, 0, j * og], vec![1, cg, og]);
    let taps_filter = |w: &Value, taps: usize, cg: usize, channels: usize| -> Result<Value> {
        views::reshape(w, &[taps as i64, cg as i64, channels as i64], |v| ex.contiguous(v))
    };
    let matrix = |b: Value, cg: usize, og: usize| views::reshape(&b, &[cg as i64, og as i64], |v| ex.contiguous(v));
    match f {
        WindowOp::FusedConv { spec, activation } => {
            let y = window(ex, &WindowOp::Conv { spec: spec.clone() }, &inputs[..2], out, im2col_limit)?;
            let y = ex.binary(BinaryOp::Add, &y, inputs[2])?;
            match activation {
                Some(f) => ex.unary(*f, &y),
                None => Ok(y),
            }
        }
        WindowOp::Conv { spec } => {
            let (x, w) = (inputs[0], inputs[1]);
            let (g, channels) = spec.geometry(x.shape(), w.shape())?;
            let (cg, og) = (g.channels / spec.groups, channels / spec.groups);
            let taps = Taps::new(g);
            let p = taps.pad(ex, x, Scalar::F64(0.0))?;
            let wt = taps_filter(w, taps.offsets.len(), cg, channels)?;
            let spec_shape: Vec<i64> = out.shape.iter().map(|&d| d as i64).collect();
            if taps.columns_fit(cg, im2col_limit) {
                // im2col: one product per group, [rows, taps·cg] x [taps·cg, og].
                let n = taps.offsets.len();
                let mut parts = Vec::with_capacity(spec.groups);
                for j in 0..spec.groups {
                    let a = taps.columns(ex, &p, j * cg, cg)?;
                    let b = matrix(slice(&wt, vec![0, 0, j * og], vec![n, cg, og]), n * cg, og)?;
                    parts.push(ex.op(Op::MatMul { transpose_a: false, transpose_b: false }, &[&a, &b])?);
                }
                let refs: Vec<&Value> = parts.iter().collect();
                let y = if parts.len() == 1 { parts[0].clone() } else { ex.op(Op::Concat { axis: 1 }, &refs)? };
                return views::reshape(&y, &spec_shape, |v| ex.contiguous(v));
            }
            let mut acc: Option<Value> = None;
            for t in 0..taps.offsets.len() {
                let mut parts = Vec::with_capacity(spec.groups);
                for j in 0..spec.groups {
                    let a = as_matrix(ex, &p.view(taps.layout(t, j * cg, cg)), cg)?;
                    let b = matrix(block(&wt, t, j, cg, og), cg, og)?;
                    parts.push(ex.op(Op::MatMul { transpose_a: false, transpose_b: false }, &[&a, &b])?);
                }
                let refs: Vec<&Value> = parts.iter().collect();
                let y = if parts.len() == 1 { parts[0].clone() } else { ex.op(Op::Concat { axis: 1 }, &refs)? };
                acc = Some(match acc {
                    Some(a) => ex.binary(BinaryOp::Add, &a, &y)?,
                    None => y,
                });
            }
            match acc {
                Some(a) => views::reshape(&a, &spec_shape, |v| ex.contiguous(v)),
                None => ex.be.assemble(out, Scalar::F64(0.0), &[]),
            }
        }
        WindowOp::ConvBackpropInput { spec, .. } => {
            let (dy, w) = (inputs[0], inputs[1]);
            let (g, channels) = spec.geometry(&out.shape, w.shape())?;
            let (cg, og) = (g.channels / spec.groups, channels / spec.groups);
            let taps = Taps::new(g);
            let n = taps.offsets.len();
            let wt = taps_filter(w, n, cg, channels)?;
            let dy_group = |j: usize| channel_group(ex, dy, j, og);
            let shaped =
                |piece: &Value| views::reshape(piece, &to_spec(&taps.geometry.output_shape(cg)), |v| ex.contiguous(v));
            // im2col's transpose: one product per group gives every tap's
            // columns, [rows, og] x [og, taps·cg]; else one product per tap.
            // (Every group's columns stay alive through the taps: sized together.)
            let columns = if taps.columns_fit(cg * spec.groups, im2col_limit) {
                let mut all = Vec::with_capacity(spec.groups);
                for j in 0..spec.groups {
                    let b = matrix(slice(&wt, vec![0, 0, j * og], vec![n, cg, og]), n * cg, og)?;
                    all.push(ex.op(Op::MatMul { transpose_a: false, transpose_b: true }, &[&dy_group(j)?, &b])?);
                }
                Some(all)
            } else {
                None
            };
            let mut acc = None;
            for t in 0..n {
                let mut pieces = Vec::with_capacity(spec.groups);
                for j in 0..spec.groups {
                    let piece = match &columns {
                        Some(all) => {
                            let rows = all[j].shape()[0];
                            views::slice(&all[j], &[0, t * cg], &Meta::new(dtype, Shape::from(vec![rows, cg])))
                        }
                        None => {
                            let b = matrix(block(&wt, t, j, cg, og), cg, og)?;
                            ex.op(Op::MatMul { transpose_a: false, transpose_b: true }, &[&dy_group(j)?, &b])?
                        }
                    };
                    pieces.push((taps.layout(t, j * cg, cg), shaped(&piece)?));
                }
                acc = Some(taps.scatter(ex, dtype, &pieces, acc)?);
            }
            match acc {
                Some(a) => taps.crop(ex, &a, &out.shape),
                None => ex.be.assemble(out, Scalar::F64(0.0), &[]),
            }
        }
        WindowOp::ConvBackpropFilter { spec, window } => {
            let (x, dy) = (inputs[0], inputs[1]);
            let g = Geometry::new(x.shape(), window, &spec.strides, &spec.dilations, &spec.padding)?;
            let channels = out.shape[out.shape.rank() - 1];
            let (cg, og) = (g.channels / spec.groups, channels / spec.groups);
            let taps = Taps::new(g);
            let p = taps.pad(ex, x, Scalar::F64(0.0))?;
            let n = taps.offsets.len();
            let whole = Shape::from(vec![n, cg, channels]);
            let mut blocks = Vec::with_capacity(n * spec.groups);
            if taps.columns_fit(cg, im2col_limit) {
                // im2col: one product per group, [taps·cg, rows] x [rows, og].
                for j in 0..spec.groups {
                    let a = taps.columns(ex, &p, j * cg, cg)?;
                    let b = ex.op(
                        Op::MatMul { transpose_a: true, transpose_b: false },
                        &[&a, &channel_group(ex, dy, j, og)?],
                    )?;
                    let b = views::reshape(&b, &[n as i64, cg as i64, og as i64], |v| ex.contiguous(v))?;
                    blocks.push((region(&whole, &[0, 0, j * og], &Shape::from(vec![n, cg, og])), b));
                }
            } else {
                for t in 0..n {
                    for j in 0..spec.groups {
                        let a = as_matrix(ex, &p.view(taps.layout(t, j * cg, cg)), cg)?;
                        let d = channel_group(ex, dy, j, og)?;
                        let b = ex.op(Op::MatMul { transpose_a: true, transpose_b: false }, &[&a, &d])?;
                        blocks.push((region(&whole, &[t, 0, j * og], &Shape::from(vec![1, cg, og])), b));
                    }
                }
            }
            let refs: Vec<(Layout, &Value)> = blocks.iter().map(|(l, v)| (l.clone(), v)).collect();
            ex.be.assemble(out, Scalar::F64(0.0), &refs)
        }
        WindowOp::Pool { f, spec } => {
            let x = inputs[0];
            let g = spec.geometry(x.shape())?;
            let c = g.channels;
            let taps = Taps::new(g);
            match f {
                PoolKind::Max => {
                    // NaN padding: any number in the window replaces it, as it
                    // replaces a NaN input (see `wins`).
                    let p = taps.pad(ex, x, Scalar::F64(f64::NAN))?;
                    let mut best = ex.contiguous(&p.view(taps.layout(0, 0, c)))?;
                    for t in 1..taps.offsets.len() {
                        let v = p.view(taps.layout(t, 0, c));
                        best = ex.be.select(&wins(ex, &v, &best)?, &v, &best, out)?;
                    }
                    Ok(best)
                }
                PoolKind::Avg => {
                    let (sum, count) = avg_parts(ex, &taps, x)?;
                    ex.binary(BinaryOp::Div, &sum, &count)
                }
            }
        }
        WindowOp::PoolGrad { f, spec } => {
            let (x, dy) = (inputs[0], inputs[1]);
            let g = spec.geometry(x.shape())?;
            let c = g.channels;
            let taps = Taps::new(g);
            let mut acc = None;
            match f {
                PoolKind::Max => {
                    let pooled = taps.geometry.output_shape(c);
                    let masks = first_max_masks(ex, &taps, x, &pooled)?;
                    let zero = ex.scalar(0.0, dtype)?;
                    for (t, m) in masks.iter().enumerate() {
                        let piece = ex.be.select(m, dy, &zero, &Meta::new(dtype, dy.shape().clone()))?;
                        acc = Some(taps.scatter(ex, dtype, &[(taps.layout(t, 0, c), piece)], acc)?);
                    }
                }
                PoolKind::Avg => {
                    let (_, count) = avg_parts(ex, &taps, x)?;
                    let share = ex.binary(BinaryOp::Div, dy, &count)?;
                    for t in 0..taps.offsets.len() {
                        acc = Some(taps.scatter(ex, dtype, &[(taps.layout(t, 0, c), share.clone())], acc)?);
                    }
                }
            }
            match acc {
                Some(a) => taps.crop(ex, &a, x.shape()),
                None => ex.be.assemble(out, Scalar::F64(0.0), &[]),
            }
        }
        WindowOp::MaxPoolGradGrad { spec } => {
            let (x, gx) = (inputs[0], inputs[1]);
            let g = spec.geometry(x.shape())?;
            let c = g.channels;
            let taps = Taps::new(g);
            let masks = first_max_masks(ex, &taps, x, &out.shape)?;
            let pg = taps.pad(ex, gx, Scalar::F64(0.0))?;
            let mut acc = ex.be.assemble(out, Scalar::F64(0.0), &[])?;
            for (t, m) in masks.iter().enumerate() {
                let v = pg.view(taps.layout(t, 0, c));
                let picked = ex.be.select(m, &v, &acc, out)?;
                acc = picked;
            }
            Ok(acc)
        }
    }
}

fn to_spec(shape: &Shape) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Sum of each window of `x` (zeros outside) and the number of its
/// elements inside `x`.
fn avg_parts(ex: &Ex<'_>, taps: &Taps, x: &Value) -> Result<(Value, Value)> {
    let c = taps.geometry.channels;
    let p = taps.pad(ex, x, Scalar::F64(0.0))?;
    let mut one_shape = vec![1usize];
    one_shape.extend(&taps.geometry.input);
    one_shape.push(1);
    let ones = ex.be.assemble(&Meta::new(x.dtype, Shape::from(one_shape)), Scalar::F64(1.0), &[])?;
    let mut ones_geometry = taps.geometry.clone();
    ones_geometry.batch = 1;
    ones_geometry.channels = 1;
    let ones_taps = Taps::new(ones_geometry);
    let po = ones_taps.pad(ex, &ones, Scalar::F64(0.0))?;
    let mut sum = ex.contiguous(&p.view(taps.layout(0, 0, c)))?;
    let mut count = ex.contiguous(&po.view(ones_taps.layout(0, 0, 1)))?;
    for t in 1..taps.offsets.len() {
        sum = ex.binary(BinaryOp::Add, &sum, &p.view(taps.layout(t, 0, c)))?;
        count = ex.binary(BinaryOp::Add, &count, &po.view(ones_taps.layout(t, 0, 1)))?;
    }
    Ok((sum, count))
}

/// Where `v` replaces `best` in a max-pooling window: a larger number, or a
/// number after a NaN (the CPU kernel's rule).
fn wins(ex: &Ex<'_>, v: &Value, best: &Value) -> Result<Value> {
    let larger = ex.binary(BinaryOp::Greater, v, best)?;
    let best_nan = ex.binary(BinaryOp::NotEqual, best, best)?;
    let v_number = ex.binary(BinaryOp::Equal, v, v)?;
    let after_nan = ex.binary(BinaryOp::LogicalAnd, &best_nan, &v_number)?;
    ex.binary(BinaryOp::LogicalOr, &larger, &after_nan)
}

/// For each tap, where it holds its window's first largest element (the
/// element max pooling's gradient goes to).
fn first_max_masks(ex: &Ex<'_>, taps: &Taps, x: &Value, out: &Shape) -> Result<Vec<Value>> {
    let c = taps.geometry.channels;
    let p = taps.pad(ex, x, Scalar::F64(f64::NAN))?;
    let inside = {
        // 1 inside the input, 0 in the padding: padding never wins.
        let ones = ex.be.assemble(&Meta::new(DType::Bool, x.shape().clone()), Scalar::Bool(true), &[])?;
        taps.pad(ex, &ones, Scalar::Bool(false))?
    };
    let meta = Meta::new(x.dtype, out.clone());
    // The largest value of each window, NaN skipped as the CPU kernel does.
    let mut best: Option<Value> = None;
    for t in 0..taps.offsets.len() {
        let v = p.view(taps.layout(t, 0, c));
        best = Some(match best {
            None => ex.contiguous(&v)?,
            Some(b) => ex.be.select(&wins(ex, &v, &b)?, &v, &b, &meta)?,
        });
    }
    let Some(best) = best else { return Ok(Vec::new()) };
    let mut taken = ex.be.assemble(&Meta::new(DType::Bool, out.clone()), Scalar::Bool(false), &[])?;
    let mut masks = Vec::with_capacity(taps.offsets.len());
    for t in 0..taps.offsets.len() {
        let v = p.view(taps.layout(t, 0, c));
        let is = ex.binary(BinaryOp::Equal, &v, &best)?;
        let valid = inside.view(taps.layout(t, 0, c));
        let is = ex.binary(BinaryOp::LogicalAnd, &is, &valid)?;
        let fresh = ex.unary(UnaryOp::LogicalNot, &taken)?;
        let m = ex.binary(BinaryOp::LogicalAnd, &is, &fresh)?;
        taken = ex.binary(BinaryOp::LogicalOr, &taken, &m)?;
        masks.push(m);
    }
    Ok(masks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::window::{ConvSpec, Padding, WindowOp};
    use crate::tensor::Device;

    fn value(shape: &[usize], seed: u64) -> Value {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0).collect();
        let buf = crate::tensor::storage::HostBuffer::from_slice(&v).expect("buffer");
        Value::from_buffer(DType::F32, Shape::new(shape), buf)
    }

    fn floats(be: &dyn Backend, v: &Value) -> Vec<f64> {
        let host = be.download(v).expect("download");
        let c = crate::backend::cpu::elementwise::cast(&host, DType::F64).expect("cast");
        c.contiguous_slice::<f64>().expect("contiguous").to_vec()
    }

    /// A convolution and both its gradients give the same values through
    /// im2col (one product per group) and tap by tap (one per tap, for
    /// matrices too large to build): grouped, strided SAME, dilated.
    #[test]
    fn convolutions_through_im2col_match_tap_by_tap() {
        let be = super::super::backend(Device::REFERENCE).expect("reference");
        let ex = Ex { be, ctx: &KernelCtx::EAGER };
        for (strides, dilations, groups) in [([2, 1], [1, 1], 2), ([1, 1], [2, 1], 1), ([3, 2], [1, 2], 3)] {
            let spec =
                ConvSpec { strides: strides.to_vec(), dilations: dilations.to_vec(), padding: Padding::Same, groups };
            let (x, w) = (value(&[2, 7, 6, 6], 1), value(&[3, 2, 6 / groups, 6], 2));
            let y_meta = Op::Window { f: Box::new(WindowOp::Conv { spec: spec.clone() }) }
                .infer(&[Meta::new(DType::F32, x.shape().clone()), Meta::new(DType::F32, w.shape().clone())])
                .expect("conv shape")[0]
                .clone();
            let dy = value(y_meta.shape.dims(), 3);
            let cases = [
                (WindowOp::Conv { spec: spec.clone() }, vec![&x, &w], y_meta.clone()),
                (
                    WindowOp::ConvBackpropInput { spec: spec.clone(), input_spatial: vec![7, 6] },
                    vec![&dy, &w],
                    Meta::new(DType::F32, x.shape().clone()),
                ),
                (
                    WindowOp::ConvBackpropFilter { spec: spec.clone(), window: vec![3, 2] },
                    vec![&x, &dy],
                    Meta::new(DType::F32, w.shape().clone()),
                ),
            ];
            for (op, inputs, out) in cases {
                let im2col = window(&ex, &op, &inputs, &out, usize::MAX).expect("im2col");
                let taps = window(&ex, &op, &inputs, &out, 0).expect("tap by tap");
                assert_eq!(im2col.shape(), &out.shape, "{op:?}");
                let (a, b) = (floats(be, &im2col), floats(be, &taps));
                assert!(a.iter().any(|&v| v != 0.0), "{op:?}: all zeros");
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                        "{op:?} {strides:?} {dilations:?}: element {i}: {p} vs {q}"
                    );
                }
            }
        }
    }
}
