//! Complex numbers and Fourier transforms: the ops that cross between real
//! and complex tensors (a complex tensor from its parts, the parts of a
//! complex tensor) and the FFTs. Complex arithmetic is made of real ops on
//! the parts (`crate::ops::complex`), so these few ops are all a backend
//! needs; their kernels run on the host.

use super::{Meta, Metas};
use crate::error::{bail, Result};
use crate::tensor::shape::{broadcast_shapes, UNKNOWN};
use crate::tensor::Shape;
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

/// Between a complex tensor and its real parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplexOp {
    /// `re + i·im` from two real tensors of one float dtype (f32 gives
    /// c64, f64 gives c128), broadcast together.
    Make,
    /// The real part of a complex tensor.
    Real,
    /// The imaginary part of a complex tensor.
    Imag,
}

impl ComplexOp {
    /// The op type as TensorFlow spells it.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            ComplexOp::Make => "Complex",
            ComplexOp::Real => "Real",
            ComplexOp::Imag => "Imag",
        }
    }

    pub(crate) fn arity(self) -> usize {
        match self {
            ComplexOp::Make => 2,
            ComplexOp::Real | ComplexOp::Imag => 1,
        }
    }

    pub(crate) fn infer(self, inputs: &[Meta]) -> Result<Metas> {
        let x = &inputs[0];
        Ok(match self {
            ComplexOp::Make => {
                let y = &inputs[1];
                if x.dtype != y.dtype {
                    bail!(
                        dtype,
                        "complex needs real and imaginary parts of one dtype, got {} and {}",
                        x.dtype,
                        y.dtype
                    );
                }
                let Some(c) = x.dtype.to_complex() else {
                    bail!(dtype, "complex needs f32 or f64 parts, got {}", x.dtype);
                };
                smallvec![Meta::new(c, broadcast_shapes(&x.shape, &y.shape)?)]
            }
            ComplexOp::Real | ComplexOp::Imag => {
                let Some(part) = x.dtype.complex_part() else {
                    bail!(dtype, "{} needs a complex input, got {}", self.type_name(), x.dtype);
                };
                smallvec![Meta::new(part, x.shape.clone())]
            }
        })
    }
}

/// A discrete Fourier transform over the last `rank` axes (1, 2 or 3),
/// batched over the others, as TensorFlow's `FFT`, `IFFT2D`, `RFFT3D`, ...:
/// the forward transforms are unnormalized, the inverse ones divide by the
/// number of points transformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FftOp {
    /// Complex to complex, `X_k = Σ x_j e^(-2πi jk/n)` along each axis.
    Fft { rank: u8 },
    /// The inverse of [`FftOp::Fft`].
    Ifft { rank: u8 },
    /// Real to complex: the last axis of length `n` gives its `n/2 + 1`
    /// non-negative frequencies (the rest are their conjugates).
    Rfft { rank: u8 },
    /// The inverse of [`FftOp::Rfft`], to a last axis of length `n` from
    /// `n/2 + 1` frequencies (the imaginary parts of the zero and, for even
    /// `n`, the Nyquist frequency are ignored).
    Irfft { rank: u8, n: usize },
}

impl FftOp {
    /// How many trailing axes are transformed.
    pub fn rank(self) -> usize {
        match self {
            FftOp::Fft { rank } | FftOp::Ifft { rank } | FftOp::Rfft { rank } | FftOp::Irfft { rank, .. } => {
                rank as usize
            }
        }
    }

    /// The op type as TensorFlow spells it.
    pub(crate) fn type_name(self) -> &'static str {
        const NAMES: [[&str; 3]; 4] = [
            ["FFT", "FFT2D", "FFT3D"],
            ["IFFT", "IFFT2D", "IFFT3D"],
            ["RFFT", "RFFT2D", "RFFT3D"],
            ["IRFFT", "IRFFT2D", "IRFFT3D"],
        ];
        let kind = match self {
            FftOp::Fft { .. } => 0,
            FftOp::Ifft { .. } => 1,
            FftOp::Rfft { .. } => 2,
            FftOp::Irfft { .. } => 3,
        };
        NAMES[kind][self.rank().clamp(1, 3) - 1]
    }

    pub(crate) fn infer(self, x: &Meta) -> Result<Metas> {
        let name = self.type_name();
        let rank = self.rank();
        if !(1..=3).contains(&rank) {
            bail!(invalid, "{name} transforms 1, 2 or 3 axes, not {rank}");
        }
        if x.shape.rank() < rank {
            bail!(shape, "{name} needs rank >= {rank}, got shape {}", x.shape);
        }
        let mut dims = x.shape.to_vec();
        let last = dims.len() - 1;
        let dtype = match self {
            FftOp::Fft { .. } | FftOp::Ifft { .. } => {
                if !x.dtype.is_complex() {
                    bail!(dtype, "{name} needs a complex input (c64 or c128), got {} (cast it, or use rfft)", x.dtype);
                }
                x.dtype
            }
            FftOp::Rfft { .. } => {
                let Some(c) = x.dtype.to_complex() else {
                    bail!(dtype, "{name} needs an f32 or f64 input, got {}", x.dtype);
                };
                if dims[last] == 0 {
                    bail!(shape, "{name} needs at least one point along the last axis, got shape {}", x.shape);
                }
                if dims[last] != UNKNOWN {
                    dims[last] = dims[last] / 2 + 1;
                }
                c
            }
            FftOp::Irfft { n, .. } => {
                let Some(r) = x.dtype.complex_part() else {
                    bail!(dtype, "{name} needs a complex input (c64 or c128), got {}", x.dtype);
                };
                if n == 0 || n == UNKNOWN {
                    bail!(invalid, "{name} needs an output length of at least 1, got {n}");
                }
                if dims[last] != UNKNOWN && dims[last] != n / 2 + 1 {
                    bail!(
                        shape,
                        "{name} to length {n} needs {} frequencies along the last axis, got shape {}",
                        n / 2 + 1,
                        x.shape
                    );
                }
                dims[last] = n;
                r
            }
        };
        Ok(smallvec![Meta::new(dtype, Shape::from(dims))])
    }
}
