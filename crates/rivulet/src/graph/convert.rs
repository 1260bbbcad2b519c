//! Conversions from Rust scalars, slices, vectors and nested arrays.
//!
//! `Tensor::from([[1.0f32, 2.0], [3.0, 4.0]])` builds a 2x2 tensor; the shape
//! comes from the array type, so these conversions cannot fail.

use super::Tensor;
use crate::tensor::{Element, Shape};
use half::{bf16, f16};

macro_rules! from_scalar {
    ($($t:ty),*) => {$(
        impl From<$t> for Tensor {
            fn from(v: $t) -> Tensor {
                Tensor::scalar(v)
            }
        }
    )*};
}
from_scalar!(f32, f64, f16, bf16, i32, i64, u8, bool);

impl<T: Element> From<Vec<T>> for Tensor {
    fn from(v: Vec<T>) -> Tensor {
        let n = v.len();
        Tensor::from_known(&v, Shape::new(&[n]))
    }
}

impl<T: Element> From<&[T]> for Tensor {
    fn from(v: &[T]) -> Tensor {
        Tensor::from_known(v, Shape::new(&[v.len()]))
    }
}

impl<T: Element, const N: usize> From<[T; N]> for Tensor {
    fn from(v: [T; N]) -> Tensor {
        Tensor::from_known(&v, Shape::new(&[N]))
    }
}

impl<T: Element, const N: usize, const M: usize> From<[[T; N]; M]> for Tensor {
    fn from(v: [[T; N]; M]) -> Tensor {
        let flat: Vec<T> = v.iter().flatten().copied().collect();
        Tensor::from_known(&flat, Shape::new(&[M, N]))
    }
}

impl<T: Element, const N: usize, const M: usize, const K: usize> From<[[[T; N]; M]; K]> for Tensor {
    fn from(v: [[[T; N]; M]; K]) -> Tensor {
        let flat: Vec<T> = v.iter().flatten().flatten().copied().collect();
        Tensor::from_known(&flat, Shape::new(&[K, M, N]))
    }
}

impl From<&Tensor> for Tensor {
    fn from(t: &Tensor) -> Tensor {
        t.clone()
    }
}
