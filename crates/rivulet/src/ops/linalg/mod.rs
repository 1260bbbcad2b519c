//! Linear algebra: batched `matmul` (a primitive), `tensordot` and
//! `einsum` (composites of transpose, reshape, reduce and matmul), matrix
//! structure (`matrix.rs`), factorizations and solves (`factor.rs`, their
//! gradients in `grad.rs`).

mod factor;
mod grad;
mod matrix;

pub use factor::*;
pub(crate) use grad::linalg_grad;
pub use matrix::*;

use super::{apply1, checked, movement as mv, reduce, Op};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;

/// Matrix product of the last two dimensions, batched over the leading ones
/// (which broadcast); `transpose_a`/`transpose_b` transpose the matrices first.
#[track_caller]
pub fn matmul_t(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    if a.dtype().is_complex() && b.dtype().is_complex() {
        return super::complex::matmul(a, b, transpose_a, transpose_b);
    }
    apply1(Op::MatMul { transpose_a, transpose_b }, &[a, b])
}

/// Matrix product `a @ b` of the last two dimensions, batched over the leading ones.
#[track_caller]
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, false)
}

fn known_dims(t: &Tensor, what: &str) -> Result<Vec<usize>> {
    if !t.shape().is_fully_known() {
        bail!(shape, "{what} needs fully known shapes, got {}", t.shape());
    }
    Ok(t.shape().to_vec())
}

/// Contract `axes_a` of `a` with `axes_b` of `b` (pairwise), like NumPy's
/// `tensordot`: the result has `a`'s free axes then `b`'s.
#[track_caller]
pub fn tensordot(a: &Tensor, b: &Tensor, axes_a: &[i64], axes_b: &[i64]) -> Result<Tensor> {
    checked(tensordot_impl(a, b, axes_a, axes_b), "Tensordot", &[a, b])
}

/// [`tensordot`] over the last `n` axes of `a` and the first `n` of `b`
/// (TensorFlow's integer `axes`).
#[track_caller]
pub fn tensordot_n(a: &Tensor, b: &Tensor, n: usize) -> Result<Tensor> {
    if n > a.rank() || n > b.rank() {
        return checked(
            Err(Error::invalid(format!("tensordot over {n} axes of operands of ranks {} and {}", a.rank(), b.rank()))),
            "Tensordot",
            &[a, b],
        );
    }
    let axes_a: Vec<i64> = (a.rank() - n..a.rank()).map(|i| i as i64).collect();
    let axes_b: Vec<i64> = (0..n).map(|i| i as i64).collect();
    tensordot(a, b, &axes_a, &axes_b)
}

#[track_caller]
fn tensordot_impl(a: &Tensor, b: &Tensor, axes_a: &[i64], axes_b: &[i64]) -> Result<Tensor> {
    if axes_a.len() != axes_b.len() {
        bail!(invalid, "tensordot needs as many axes of a as of b, got {axes_a:?} and {axes_b:?}");
    }
    let (da, db) = (known_dims(a, "tensordot")?, known_dims(b, "tensordot")?);
    let ca: Vec<usize> = axes_a.iter().map(|&x| a.shape().axis(x)).collect::<Result<_>>()?;
    let cb: Vec<usize> = axes_b.iter().map(|&x| b.shape().axis(x)).collect::<Result<_>>()?;
    for (&i, &j) in ca.iter().zip(&cb) {
        if da[i] != db[j] {
            bail!(shape, "tensordot contracts axis {i} of {} with axis {j} of {}: sizes differ", a.shape(), b.shape());
        }
    }
    let free_a: Vec<usize> = (0..da.len()).filter(|i| !ca.contains(i)).collect();
    let free_b: Vec<usize> = (0..db.len()).filter(|i| !cb.contains(i)).collect();
    let k: usize = ca.iter().map(|&i| da[i]).product();
    let m: usize = free_a.iter().map(|&i| da[i]).product();
    let n: usize = free_b.iter().map(|&i| db[i]).product();
    let perm_a: Vec<usize> = free_a.iter().chain(&ca).copied().collect();
    let perm_b: Vec<usize> = cb.iter().chain(&free_b).copied().collect();
    let a2 = mv::reshape(&mv::transpose(a, &perm_a)?, &[m as i64, k as i64])?;
    let b2 = mv::reshape(&mv::transpose(b, &perm_b)?, &[k as i64, n as i64])?;
    let out: Vec<i64> = free_a.iter().map(|&i| da[i] as i64).chain(free_b.iter().map(|&i| db[i] as i64)).collect();
    mv::reshape(&matmul(&a2, &b2)?, &out)
}

/// Parsed einsum operand: one letter per axis.
/// The letters of one einsum term; `...` stands for `ellipsis` (the
/// broadcast dimensions, right-aligned across operands).
fn parse_term(term: &str, ellipsis: Option<&[char]>) -> Result<Vec<char>> {
    let mut letters = Vec::new();
    let (head, tail) = match term.split_once("...") {
        Some((h, t)) => (h, Some(t)),
        None => (term, None),
    };
    let letter = |c: char| -> Result<char> {
        if c.is_ascii_alphabetic() {
            Ok(c)
        } else {
            bail!(invalid, "einsum subscripts must be letters or one '...', found '{c}' in '{term}'")
        }
    };
    for c in head.chars() {
        letters.push(letter(c)?);
    }
    if let Some(tail) = tail {
        letters.extend(ellipsis.unwrap_or(&[]));
        for c in tail.chars() {
            letters.push(letter(c)?);
        }
    }
    Ok(letters)
}

/// Einstein summation in TensorFlow's notation: any number of operands,
/// `...` for broadcast dimensions, repeated letters within an operand for
/// its diagonal (`"ii->i"`, `"ii->"` is the trace), letters only in inputs
/// summed, an implicit output (the letters that appear once, in order).
/// Lowered to diagonals, transposes, reductions, reshapes and `matmul`
/// (left to right for more than two operands).
#[track_caller]
pub fn einsum(equation: &str, operands: &[&Tensor]) -> Result<Tensor> {
    checked(einsum_impl(equation, operands), "Einsum", operands)
}

/// The diagonal of `x` over every letter repeated in `term` (the later axis goes).
#[track_caller]
fn einsum_diagonals(x: &Tensor, term: &[char]) -> Result<(Tensor, Vec<char>)> {
    let (mut x, mut term) = (x.clone(), term.to_vec());
    while let Some((p, q)) = (0..term.len()).find_map(|q| term[..q].iter().position(|&c| c == term[q]).map(|p| (p, q)))
    {
        let dims = known_dims(&x, "einsum")?;
        if dims[p] != dims[q] {
            bail!(shape, "einsum letter '{}' repeats over axes of sizes {} and {}", term[q], dims[p], dims[q]);
        }
        let ctx = super::Ctx::of(&x);
        let mut shape = vec![1i64; dims.len()];
        shape[p] = dims[p] as i64;
        shape[q] = dims[q] as i64;
        let mask = mv::reshape(&super::creation::eye(ctx, dims[p], dims[q], x.dtype())?, &shape)?;
        x = reduce::sum(&super::elementwise::mul(&x, &mask)?, q as i64, false)?;
        term.remove(q);
    }
    Ok((x, term))
}

#[track_caller]
fn einsum_impl(equation: &str, operands: &[&Tensor]) -> Result<Tensor> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let raw: Vec<&str> = lhs.split(',').collect();
    if raw.len() != operands.len() {
        bail!(invalid, "einsum '{equation}' names {} operands, got {}", raw.len(), operands.len());
    }
    if operands.is_empty() {
        bail!(invalid, "einsum needs at least one operand");
    }
    // The ellipsis covers each operand's dimensions beyond its letters;
    // fresh labels (outside ASCII) name them, right-aligned.
    let mut widths = Vec::with_capacity(raw.len());
    for (t, x) in raw.iter().zip(operands) {
        let explicit = t.replace("...", "").chars().count();
        let width = if t.contains("...") { x.rank().checked_sub(explicit) } else { Some(0) };
        match width {
            Some(w) if t.contains("...") || explicit == x.rank() => widths.push(w),
            _ => bail!(shape, "einsum term '{t}' has {explicit} letters but the operand has shape {}", x.shape()),
        }
    }
    let widest = widths.iter().copied().max().unwrap_or(0);
    let fresh: Vec<char> = (0..widest).map(|i| char::from_u32(0x100 + i as u32).unwrap_or('?')).collect();
    let terms: Vec<Vec<char>> =
        raw.iter().zip(&widths).map(|(t, &w)| parse_term(t, Some(&fresh[widest - w..]))).collect::<Result<_>>()?;
    // Implicit output: the ellipsis, then the letters appearing exactly once, in alphabetical order.
    let out: Vec<char> = match &rhs {
        Some(r) => parse_term(r, Some(&fresh))?,
        None => {
            let mut once: Vec<char> = terms
                .iter()
                .flatten()
                .copied()
                .filter(|c| c.is_ascii() && terms.iter().flatten().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            fresh.iter().copied().chain(once).collect()
        }
    };
    for (i, c) in out.iter().enumerate() {
        if !terms.iter().flatten().any(|d| d == c) {
            bail!(invalid, "einsum output letter '{c}' does not appear in any input");
        }
        if out[..i].contains(c) {
            bail!(unimplemented, "einsum: repeated output letter '{c}' (writing a diagonal) is not supported");
        }
    }
    let mut xs = Vec::with_capacity(operands.len());
    let mut ts = Vec::with_capacity(operands.len());
    for (t, x) in terms.iter().zip(operands) {
        let (x, t) = einsum_diagonals(x, t)?;
        xs.push(x);
        ts.push(t);
    }
    // Left to right: each intermediate keeps the letters still needed.
    let (mut acc, mut acc_t) = (xs[0].clone(), ts[0].clone());
    for k in 1..xs.len() {
        let needed: Vec<char> = ts[k + 1..].iter().flatten().chain(&out).copied().collect();
        let keep: Vec<char> = if k + 1 == xs.len() {
            out.clone()
        } else {
            let mut keep: Vec<char> = acc_t.iter().copied().filter(|c| needed.contains(c)).collect();
            keep.extend(ts[k].iter().copied().filter(|c| needed.contains(c) && !acc_t.contains(c)));
            keep
        };
        acc = einsum_contract(equation, vec![acc_t.clone(), ts[k].clone()], vec![acc, xs[k].clone()], &keep)?;
        acc_t = keep;
    }
    if xs.len() == 1 {
        return einsum_contract(equation, vec![acc_t], vec![acc], &out);
    }
    Ok(acc)
}

/// One or two operands (their letters distinct within each) contracted into `out`.
#[track_caller]
fn einsum_contract(equation: &str, terms: Vec<Vec<char>>, operands: Vec<Tensor>, out: &[char]) -> Result<Tensor> {
    let out = out.to_vec();
    // Sum away letters that appear only in one operand and not in the output.
    let mut xs: Vec<Tensor> = Vec::new();
    let mut ts: Vec<Vec<char>> = Vec::new();
    for (k, (t, x)) in terms.iter().zip(&operands).enumerate() {
        let other: Vec<char> = terms.iter().enumerate().filter(|(j, _)| *j != k).flat_map(|(_, t)| t.clone()).collect();
        let drop: Vec<i64> = t
            .iter()
            .enumerate()
            .filter(|(_, c)| !out.contains(c) && !other.contains(c))
            .map(|(i, _)| i as i64)
            .collect();
        let x = if drop.is_empty() { x.clone() } else { reduce::sum(x, drop.clone(), false)? };
        let t: Vec<char> =
            t.iter().enumerate().filter(|(i, _)| !drop.contains(&(*i as i64))).map(|(_, c)| *c).collect();
        xs.push(x);
        ts.push(t);
    }
    let permute_to = |x: &Tensor, from: &[char], to: &[char]| -> Result<Tensor> {
        let perm: Vec<usize> = to.iter().map(|c| from.iter().position(|d| d == c).unwrap_or(0)).collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            Ok(x.clone())
        } else {
            mv::transpose(x, &perm)
        }
    };
    if xs.len() == 1 {
        return permute_to(&xs[0], &ts[0], &out);
    }
    let (ta, tb) = (&ts[0], &ts[1]);
    let (a, b) = (&xs[0], &xs[1]);
    let (da, db) = (known_dims(a, "einsum")?, known_dims(b, "einsum")?);
    let size = |c: char| -> usize {
        ta.iter()
            .position(|&d| d == c)
            .map(|i| da[i])
            .or_else(|| tb.iter().position(|&d| d == c).map(|i| db[i]))
            .unwrap_or(1)
    };
    for c in ta.iter().filter(|c| tb.contains(c)) {
        let (i, j) = (ta.iter().position(|d| d == c).unwrap_or(0), tb.iter().position(|d| d == c).unwrap_or(0));
        if da[i] != db[j] {
            bail!(shape, "einsum letter '{c}' has size {} in the first operand and {} in the second", da[i], db[j]);
        }
    }
    let batch: Vec<char> = out.iter().copied().filter(|c| ta.contains(c) && tb.contains(c)).collect();
    let contract: Vec<char> = ta.iter().copied().filter(|c| tb.contains(c) && !out.contains(c)).collect();
    let free_a: Vec<char> = ta.iter().copied().filter(|c| !tb.contains(c)).collect();
    let free_b: Vec<char> = tb.iter().copied().filter(|c| !ta.contains(c)).collect();
    let prod = |cs: &[char]| -> i64 { cs.iter().map(|&c| size(c) as i64).product() };
    let mut order_a = batch.clone();
    order_a.extend(&free_a);
    order_a.extend(&contract);
    let mut order_b = batch.clone();
    order_b.extend(&contract);
    order_b.extend(&free_b);
    let nb = prod(&batch);
    let a3 = mv::reshape(&permute_to(a, ta, &order_a)?, &[nb, prod(&free_a), prod(&contract)])?;
    let b3 = mv::reshape(&permute_to(b, tb, &order_b)?, &[nb, prod(&contract), prod(&free_b)])?;
    let c3 = matmul(&a3, &b3)?;
    let mut c_letters = batch.clone();
    c_letters.extend(&free_a);
    c_letters.extend(&free_b);
    let c_dims: Vec<i64> = c_letters.iter().map(|&c| size(c) as i64).collect();
    let c = mv::reshape(&c3, &c_dims)?;
    if c_letters.len() != out.len() {
        return Err(Error::invalid(format!("einsum '{equation}': output letters do not match the inputs")));
    }
    permute_to(&c, &c_letters, &out)
}

/// Gradient of `c = op(a) @ op(b)` (op = optional transpose), summed back
/// over broadcast batch dimensions.
pub(crate) fn matmul_grad(
    ta: bool,
    tb: bool,
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    wants: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    use super::movement::sum_to;
    let da = || -> Result<Tensor> {
        match (ta, tb) {
            (false, false) => matmul_t(g, b, false, true),
            (false, true) => matmul_t(g, b, false, false),
            (true, false) => matmul_t(b, g, false, true),
            (true, true) => matmul_t(b, g, true, true),
        }
    };
    let db = || -> Result<Tensor> {
        match (ta, tb) {
            (false, false) => matmul_t(a, g, true, false),
            (false, true) => matmul_t(g, a, true, false),
            (true, false) => matmul_t(a, g, false, false),
            (true, true) => matmul_t(g, a, true, true),
        }
    };
    Ok([if wants[0] { Some(sum_to(&da()?, a)?) } else { None }, if wants[1] { Some(sum_to(&db()?, b)?) } else { None }])
}
