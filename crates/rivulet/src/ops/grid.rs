//! Operations on fields sampled on regular grids, for numerical methods:
//! `roll` (`tf.roll`), and second-order central finite differences
//! (gradient, divergence, laplacian) with periodic, Dirichlet or Neumann
//! boundaries. Composed of slices, concatenations and pads, so they run on
//! every device and differentiate.

use super::{checked, elementwise as ew, movement as mv, PadMode, SliceItem};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::tensor::shape::{normalize_axis, UNKNOWN};

/// `x` shifted cyclically by `shift[i]` along `axes[i]`: an element at
/// position `j` moves to `j + shift` modulo the length (`tf.roll`; shifts
/// along a repeated axis add up).
#[track_caller]
pub fn roll(x: &Tensor, shift: &[i64], axes: &[i64]) -> Result<Tensor> {
    checked(roll_impl(x, shift, axes), "Roll", &[x])
}

fn roll_impl(x: &Tensor, shift: &[i64], axes: &[i64]) -> Result<Tensor> {
    if shift.len() != axes.len() {
        bail!(invalid, "roll needs one shift per axis, got {} shifts and {} axes", shift.len(), axes.len());
    }
    let mut out = x.clone();
    for (&s, &a) in shift.iter().zip(axes) {
        let axis = normalize_axis(a, x.rank())?;
        out = roll_axis(&out, s, axis)?;
    }
    Ok(out)
}

/// The slice `lo..hi` of `x` along `axis`.
fn along(x: &Tensor, axis: usize, lo: i64, hi: i64) -> Result<Tensor> {
    let mut spec = vec![SliceItem::ALL; x.rank()];
    spec[axis] = SliceItem::range(lo, hi);
    mv::strided_slice(x, &spec)
}

fn roll_axis(x: &Tensor, shift: i64, axis: usize) -> Result<Tensor> {
    let n = x.shape()[axis];
    if n == UNKNOWN {
        bail!(shape, "roll needs the rolled dimension known when the graph is built, got shape {}", x.shape());
    }
    if n == 0 {
        return Ok(x.clone());
    }
    let s = shift.rem_euclid(n as i64);
    if s == 0 {
        return Ok(x.clone());
    }
    let n = n as i64;
    mv::concat(&[&along(x, axis, n - s, n)?, &along(x, axis, 0, n - s)?], axis as i64)
}

/// What a field is outside its grid, which sets the differences at the edges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Boundary {
    /// The grid wraps around (the last point neighbours the first).
    Periodic,
    /// The field is `value` at the points one spacing outside the grid on
    /// every side (a node-centred Dirichlet boundary).
    Dirichlet(f64),
    /// Zero normal derivative at the edge points: the point outside mirrors
    /// the one inside (`u[-1] = u[1]`).
    Neumann,
}

/// The grid axes of a field: the last `spacing.len()` ones.
fn grid_axes(u: &Tensor, spacing: &[f64], op: &str) -> Result<Vec<usize>> {
    let d = spacing.len();
    if d == 0 || d > u.rank() {
        bail!(invalid, "{op} needs 1 to rank-of-the-field grid spacings, got {d} for shape {}", u.shape());
    }
    if let Some(h) = spacing.iter().find(|h| !h.is_finite() || **h <= 0.0) {
        bail!(invalid, "{op} needs positive finite grid spacings, got {h}");
    }
    Ok((u.rank() - d..u.rank()).collect())
}

/// The field's values at each point's lower and upper neighbour along `axis`.
fn neighbours(u: &Tensor, axis: usize, boundary: Boundary) -> Result<(Tensor, Tensor)> {
    let n = u.shape()[axis];
    if n == UNKNOWN {
        bail!(shape, "finite differences need the grid's dimensions known, got shape {}", u.shape());
    }
    if boundary == Boundary::Periodic {
        return Ok((roll_axis(u, 1, axis)?, roll_axis(u, -1, axis)?));
    }
    if boundary == Boundary::Neumann && n < 2 {
        bail!(shape, "a Neumann boundary needs at least 2 points along each grid axis, got shape {}", u.shape());
    }
    let mut pads = vec![(0, 0); u.rank()];
    pads[axis] = (1, 1);
    let padded = match boundary {
        Boundary::Dirichlet(v) => mv::pad(u, &pads, PadMode::Constant, v)?,
        _ => mv::pad(u, &pads, PadMode::Reflect, 0.0)?,
    };
    let n = n as i64;
    Ok((along(&padded, axis, 0, n)?, along(&padded, axis, 2, n + 2)?))
}

/// The 5-point (7-point in 3-D, ...) laplacian `Σ (u[i+1] - 2u[i] + u[i-1]) / h²`
/// over the last `spacing.len()` axes, with `boundary` outside the grid.
#[track_caller]
pub fn laplacian(u: &Tensor, spacing: &[f64], boundary: Boundary) -> Result<Tensor> {
    checked(laplacian_impl(u, spacing, boundary), "Laplacian", &[u])
}

fn laplacian_impl(u: &Tensor, spacing: &[f64], boundary: Boundary) -> Result<Tensor> {
    let axes = grid_axes(u, spacing, "laplacian")?;
    let terms: Vec<Tensor> = axes
        .iter()
        .zip(spacing)
        .map(|(&axis, &h)| {
            let (lo, hi) = neighbours(u, axis, boundary)?;
            ew::mul(&ew::sub(&ew::add(&lo, &hi)?, &ew::mul(u, 2.0)?)?, 1.0 / (h * h))
        })
        .collect::<Result<_>>()?;
    super::add_n(&terms.iter().collect::<Vec<_>>())
}

/// The central-difference gradient `(u[i+1] - u[i-1]) / 2h` along each of
/// the last `spacing.len()` axes, stacked on a new last axis.
#[track_caller]
pub fn gradient(u: &Tensor, spacing: &[f64], boundary: Boundary) -> Result<Tensor> {
    checked(gradient_impl(u, spacing, boundary), "Gradient", &[u])
}

fn gradient_impl(u: &Tensor, spacing: &[f64], boundary: Boundary) -> Result<Tensor> {
    let axes = grid_axes(u, spacing, "gradient")?;
    let parts: Vec<Tensor> = axes
        .iter()
        .zip(spacing)
        .map(|(&axis, &h)| {
            let (lo, hi) = neighbours(u, axis, boundary)?;
            ew::mul(&ew::sub(&hi, &lo)?, 0.5 / h)
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = parts.iter().collect();
    mv::stack(&refs, -1)
}

/// The central-difference divergence `Σ (v_k[i+1] - v_k[i-1]) / 2h_k` of a
/// vector field whose last axis holds its `spacing.len()` components, over
/// the grid axes before it.
#[track_caller]
pub fn divergence(v: &Tensor, spacing: &[f64], boundary: Boundary) -> Result<Tensor> {
    checked(divergence_impl(v, spacing, boundary), "Divergence", &[v])
}

fn divergence_impl(v: &Tensor, spacing: &[f64], boundary: Boundary) -> Result<Tensor> {
    let r = v.rank();
    let d = spacing.len();
    if r < d + 1 || v.shape()[r - 1] != d {
        bail!(shape, "divergence needs a last axis of {d} components (one per grid spacing), got shape {}", v.shape());
    }
    let terms: Vec<Tensor> = spacing
        .iter()
        .enumerate()
        .map(|(k, &h)| {
            let comp = mv::strided_slice(v, &[SliceItem::Ellipsis, SliceItem::Index(k as i64)])?;
            let axis = comp.rank() - d + k;
            let (lo, hi) = neighbours(&comp, axis, boundary)?;
            ew::mul(&ew::sub(&hi, &lo)?, 0.5 / h)
        })
        .collect::<Result<_>>()?;
    super::add_n(&terms.iter().collect::<Vec<_>>())
}

/// The field at arbitrary points by multilinear interpolation (bilinear in
/// 2-D, trilinear in 3-D): the tool of semi-Lagrangian advection. `coords`
/// is `[..., d]`, positions in index units along the field's first `d` axes
/// (`0` is the first point, `n - 1` the last); the field's remaining axes
/// are channels, so the result is `[..., channels...]`. Points near or past
/// the edge take the neighbours `boundary` gives: wrapped, the edge value
/// repeated (Neumann: no slope across the edge), or the Dirichlet value. Differentiable in the field
/// and in the coordinates.
#[track_caller]
pub fn interpolate(field: &Tensor, coords: &Tensor, boundary: Boundary) -> Result<Tensor> {
    checked(interpolate_impl(field, coords, boundary), "Interpolate", &[field, coords])
}

fn interpolate_impl(field: &Tensor, coords: &Tensor, boundary: Boundary) -> Result<Tensor> {
    let r = coords.rank();
    let d = if r == 0 { UNKNOWN } else { coords.shape()[r - 1] };
    if d == UNKNOWN || d == 0 || d > 3 || d > field.rank() {
        bail!(shape, "interpolate needs coordinates [..., d] with d of 1 to 3 and at most the field's rank, got {} for a field {}", coords.shape(), field.shape());
    }
    if coords.dtype() != field.dtype() || !field.dtype().is_float() {
        bail!(
            dtype,
            "interpolate needs float coordinates of the field's dtype, got {} and {}",
            coords.dtype(),
            field.dtype()
        );
    }
    let sizes: Vec<usize> = field.shape()[..d].to_vec();
    if sizes.iter().any(|&n| n == UNKNOWN || n == 0) {
        bail!(shape, "interpolate needs the field's grid dimensions known and nonzero, got {}", field.shape());
    }
    let channels = field.rank() - d;
    let base = ew::floor(coords)?;
    let frac = ew::sub(coords, &base)?;
    let component = |t: &Tensor, k: usize| mv::strided_slice(t, &[SliceItem::Ellipsis, SliceItem::Index(k as i64)]);
    let mut total: Vec<Tensor> = Vec::with_capacity(1 << d);
    for corner in 0..1usize << d {
        let mut index = Vec::with_capacity(d);
        let mut weight: Option<Tensor> = None;
        let mut inside: Option<Tensor> = None;
        for (k, &n) in sizes.iter().enumerate() {
            let up = corner >> k & 1 == 1;
            let i = ew::add(&component(&base, k)?, if up { 1.0 } else { 0.0 })?;
            let t = component(&frac, k)?;
            let w = if up { t } else { ew::sub(1.0, &t)? };
            weight = Some(match weight {
                Some(acc) => ew::mul(&acc, &w)?,
                None => w,
            });
            let last = (n - 1) as f64;
            let i = match boundary {
                Boundary::Periodic => ew::floor_mod(&i, n as f64)?,
                Boundary::Neumann => ew::clip_by_value(&i, 0.0, last)?,
                Boundary::Dirichlet(_) => {
                    let ok = ew::logical_and(&ew::greater_equal(&i, 0.0)?, &ew::less_equal(&i, last)?)?;
                    inside = Some(match inside {
                        Some(acc) => ew::logical_and(&acc, &ok)?,
                        None => ok,
                    });
                    ew::clip_by_value(&i, 0.0, last)?
                }
            };
            index.push(ew::cast(&i, crate::tensor::DType::I64)?);
        }
        let refs: Vec<&Tensor> = index.iter().collect();
        let mut values = mv::gather_nd(field, &mv::stack(&refs, -1)?)?;
        let (Some(mut weight), mut inside) = (weight, inside) else { bail!(invalid, "interpolate needs a grid axis") };
        for _ in 0..channels {
            weight = mv::expand_dims(&weight, -1)?;
            inside = inside.map(|m| mv::expand_dims(&m, -1)).transpose()?;
        }
        if let (Boundary::Dirichlet(v), Some(m)) = (boundary, inside) {
            values = ew::select(&m, &values, v)?;
        }
        total.push(ew::mul(&values, &weight)?);
    }
    super::add_n(&total.iter().collect::<Vec<_>>())
}
