//! Layers that move or resample values without weights, as Keras's:
//! `Reshape`, `ZeroPadding1D/2D/3D`, `UpSampling1D/2D/3D`, `Resizing`,
//! `Cropping1D/2D/3D`, `Permute` and `RepeatVector`.

use super::conv_layers::check_rank;
use super::layers::{unique_name, Layer};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, PadMode, ResizeMethod, Variable};
use crate::tensor::UNKNOWN;

/// Reshapes each example to `target` (the batch axis stays); one entry may
/// be `-1`, inferred from the rest.
pub struct Reshape {
    name: String,
    target: Vec<i64>,
}

impl Reshape {
    pub fn new(target: &[i64]) -> Reshape {
        Reshape { name: unique_name("reshape"), target: target.to_vec() }
    }
}

impl Layer for Reshape {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let rest = x.shape().dims().get(1..).unwrap_or(&[]);
        let bad = || {
            crate::error::Error::shape(format!(
                "{}: cannot reshape examples of shape {} to {:?}",
                self.name,
                x.shape(),
                self.target
            ))
        };
        let inferred = self.target.iter().filter(|&&d| d == -1).count();
        if x.rank() == 0 || rest.contains(&UNKNOWN) || inferred > 1 || self.target.iter().any(|&d| d < -1) {
            return Err(bad());
        }
        let size: usize = rest.iter().product();
        let Some(known) = self.target.iter().filter(|&&d| d != -1).try_fold(1i64, |acc, &d| acc.checked_mul(d)) else {
            return Err(bad());
        };
        let mut dims = vec![-1];
        for &d in &self.target {
            if d == -1 {
                if known == 0 || size as i64 % known != 0 {
                    return Err(bad());
                }
                dims.push(size as i64 / known);
            } else {
                dims.push(d);
            }
        }
        if inferred == 0 && known != size as i64 {
            return Err(bad());
        }
        if let Some(&n) = x.shape().dims().first().filter(|&&n| n != UNKNOWN) {
            dims[0] = n as i64;
        }
        ops::reshape(x, &dims)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Reshape".to_string()
    }
}

/// Pads the `R` spatial axes of `[batch, spatial..., channels]` with zeros.
pub struct ZeroPadding<const R: usize> {
    name: String,
    pads: [(usize, usize); R],
}

/// `keras.layers.ZeroPadding1D`.
pub type ZeroPadding1D = ZeroPadding<1>;
/// `keras.layers.ZeroPadding2D`.
pub type ZeroPadding2D = ZeroPadding<2>;
/// `keras.layers.ZeroPadding3D`.
pub type ZeroPadding3D = ZeroPadding<3>;

impl<const R: usize> ZeroPadding<R> {
    /// `(before, after)` zeros on each spatial axis.
    pub fn new(pads: [(usize, usize); R]) -> ZeroPadding<R> {
        ZeroPadding { name: unique_name(&format!("zero_padding{R}d")), pads }
    }
    /// `p` zeros on both sides of every spatial axis.
    pub fn uniform(p: usize) -> ZeroPadding<R> {
        ZeroPadding::new([(p, p); R])
    }
}

impl<const R: usize> Layer for ZeroPadding<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        check_rank::<R>(&self.name, x)?;
        let mut pads = vec![(0, 0)];
        pads.extend(self.pads);
        pads.push((0, 0));
        ops::pad(x, &pads, PadMode::Constant, 0.0)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        format!("ZeroPadding{R}D")
    }
}

/// Repeats each spatial position `size` times along each spatial axis
/// (nearest), or interpolates bilinearly (2-D only).
pub struct UpSampling<const R: usize> {
    name: String,
    size: [usize; R],
    method: ResizeMethod,
}

/// `keras.layers.UpSampling1D`.
pub type UpSampling1D = UpSampling<1>;
/// `keras.layers.UpSampling2D`.
pub type UpSampling2D = UpSampling<2>;
/// `keras.layers.UpSampling3D`.
pub type UpSampling3D = UpSampling<3>;

impl<const R: usize> UpSampling<R> {
    /// Nearest-neighbour upsampling by `size` (Keras's default).
    pub fn new(size: [usize; R]) -> UpSampling<R> {
        UpSampling { name: unique_name(&format!("up_sampling{R}d")), size, method: ResizeMethod::Nearest }
    }
    /// Bilinear interpolation instead (`interpolation="bilinear"`, 2-D).
    pub fn bilinear(mut self) -> UpSampling<R> {
        self.method = ResizeMethod::Bilinear;
        self
    }
}

impl<const R: usize> Layer for UpSampling<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        check_rank::<R>(&self.name, x)?;
        if self.size.contains(&0) {
            bail!(invalid, "{}: upsampling factors must be positive, got {:?}", self.name, self.size);
        }
        if self.method == ResizeMethod::Bilinear {
            let (h, w) = (x.shape()[1], x.shape().dims()[R]);
            if R != 2 || h == UNKNOWN || w == UNKNOWN {
                bail!(
                    shape,
                    "{}: bilinear upsampling needs [batch, h, w, c] with known h and w, got {}",
                    self.name,
                    x.shape()
                );
            }
            let (Some(oh), Some(ow)) = (h.checked_mul(self.size[0]), w.checked_mul(self.size[R - 1])) else {
                bail!(shape, "{}: upsampling {} by {:?} overflows", self.name, x.shape(), self.size);
            };
            return ops::resize(x, [oh, ow], ResizeMethod::Bilinear);
        }
        let mut y = x.clone();
        for (axis, &k) in self.size.iter().enumerate() {
            if k > 1 {
                y = ops::repeat(&y, k, Some(axis as i64 + 1))?;
            }
        }
        Ok(y)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        format!("UpSampling{R}D")
    }
}

/// Resizes `[batch, h, w, c]` images to `[batch, height, width, c]`
/// (`keras.layers.Resizing`, half-pixel centres).
pub struct Resizing {
    name: String,
    size: [usize; 2],
    method: ResizeMethod,
}

impl Resizing {
    /// Bilinear resizing to `height × width` (Keras's default).
    pub fn new(height: usize, width: usize) -> Resizing {
        Resizing { name: unique_name("resizing"), size: [height, width], method: ResizeMethod::Bilinear }
    }
    /// Another interpolation.
    pub fn method(mut self, method: ResizeMethod) -> Resizing {
        self.method = method;
        self
    }
}

impl Layer for Resizing {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ops::resize(x, self.size, self.method)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Resizing".to_string()
    }
}

/// Removes `(before, after)` positions from each of the `R` spatial axes of
/// `[batch, spatial..., channels]`.
pub struct Cropping<const R: usize> {
    name: String,
    crops: [(usize, usize); R],
}

/// `keras.layers.Cropping1D`.
pub type Cropping1D = Cropping<1>;
/// `keras.layers.Cropping2D`.
pub type Cropping2D = Cropping<2>;
/// `keras.layers.Cropping3D`.
pub type Cropping3D = Cropping<3>;

impl<const R: usize> Cropping<R> {
    pub fn new(crops: [(usize, usize); R]) -> Cropping<R> {
        Cropping { name: unique_name(&format!("cropping{R}d")), crops }
    }
}

impl<const R: usize> Layer for Cropping<R> {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        check_rank::<R>(&self.name, x)?;
        let mut begin = vec![0];
        let mut size = vec![-1];
        for (d, &(a, b)) in self.crops.iter().enumerate() {
            let n = x.shape()[d + 1];
            match a.checked_add(b) {
                Some(cut) if n != UNKNOWN && cut < n => {
                    begin.push(a);
                    size.push((n - cut) as i64);
                }
                _ => bail!(
                    shape,
                    "{}: cropping {:?} leaves nothing of {} (or its size is unknown)",
                    self.name,
                    self.crops,
                    x.shape()
                ),
            }
        }
        begin.push(0);
        size.push(-1);
        ops::slice(x, &begin, &size)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        format!("Cropping{R}D")
    }
}

/// Permutes the axes after the batch: `dims` are 1-based, as Keras's
/// (`Permute::new(&[2, 1])` swaps the two axes of each example).
pub struct Permute {
    name: String,
    dims: Vec<usize>,
}

impl Permute {
    pub fn new(dims: &[usize]) -> Permute {
        Permute { name: unique_name("permute"), dims: dims.to_vec() }
    }
}

impl Layer for Permute {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let mut sorted = self.dims.clone();
        sorted.sort_unstable();
        if x.rank() != self.dims.len() + 1 || sorted != (1..=self.dims.len()).collect::<Vec<_>>() {
            bail!(
                invalid,
                "{}: {:?} is not a permutation of the axes 1..={} of {}",
                self.name,
                self.dims,
                x.rank().saturating_sub(1),
                x.shape()
            );
        }
        let perm: Vec<usize> = std::iter::once(0).chain(self.dims.iter().copied()).collect();
        ops::transpose(x, &perm)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Permute".to_string()
    }
}

/// Repeats each `[batch, features]` example `n` times: `[batch, n, features]`.
pub struct RepeatVector {
    name: String,
    n: usize,
}

impl RepeatVector {
    pub fn new(n: usize) -> RepeatVector {
        RepeatVector { name: unique_name("repeat_vector"), n }
    }
}

impl Layer for RepeatVector {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if x.rank() != 2 {
            bail!(shape, "{}: expected [batch, features], got {}", self.name, x.shape());
        }
        ops::tile(&ops::expand_dims(x, 1)?, &[1, self.n, 1])
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "RepeatVector".to_string()
    }
}
