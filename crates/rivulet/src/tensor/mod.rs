//! Values: n-dimensional arrays of one dtype in memory of one device, and
//! what describes them (dtype, shape, strided layout, device, storage).
//!
//! The user-facing [`Tensor`](crate::Tensor) (a value, or a symbolic output
//! of a graph node) is in `crate::graph`; this layer knows nothing of graphs.

pub mod device;
pub mod dtype;
pub mod layout;
pub mod shape;
pub mod storage;

pub use device::{Device, DeviceKind};
pub use dtype::{Complex, DType, Element, Scalar};
pub use layout::Layout;
pub use shape::{Shape, UNKNOWN};

use crate::error::{bail, Result};
use std::sync::Arc;
use storage::{HostBuffer, Storage};

/// A computed tensor: dtype, layout and shared storage.
#[derive(Clone)]
pub(crate) struct Value {
    pub dtype: DType,
    pub layout: Layout,
    pub storage: Arc<Storage>,
}

impl Value {
    /// A value over a fresh contiguous buffer.
    #[inline]
    pub fn from_buffer(dtype: DType, shape: Shape, buffer: HostBuffer) -> Value {
        Value::from_buffer_on(Device::CPU, dtype, shape, buffer)
    }
    /// A value over a fresh contiguous host buffer of `device` (the CPU or the reference device).
    #[inline]
    pub fn from_buffer_on(device: Device, dtype: DType, shape: Shape, buffer: HostBuffer) -> Value {
        Value { dtype, layout: Layout::contiguous(shape), storage: Arc::new(Storage::host_on(device, buffer)) }
    }
    /// The device the data lives on.
    #[inline]
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    /// The device address of the first element, for values in an
    /// accelerator's memory (`None` in host memory).
    pub fn device_address(&self) -> Option<u64> {
        let base = self.storage.device_memory()?.address();
        Some(base + (self.layout.offset * self.dtype.size()) as u64)
    }
    /// A view of the same storage with another layout.
    pub fn view(&self, layout: Layout) -> Value {
        Value { dtype: self.dtype, layout, storage: self.storage.clone() }
    }
    /// The same bytes read as another dtype of the same size.
    pub fn retyped(&self, dtype: DType) -> Value {
        debug_assert_eq!(dtype.size(), self.dtype.size());
        Value { dtype, layout: self.layout.clone(), storage: self.storage.clone() }
    }
    /// The elements of a contiguous one-byte (u8 or bool) value as bytes.
    pub fn contiguous_bytes(&self) -> &[u8] {
        debug_assert_eq!(self.dtype.size(), 1);
        let n = self.numel();
        if n == 0 || !self.layout.is_contiguous() {
            return &[];
        }
        &self.storage.host().bytes()[self.layout.offset..self.layout.offset + n]
    }
    pub fn shape(&self) -> &Shape {
        &self.layout.shape
    }
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    /// The whole underlying buffer as `T` (index it with the layout).
    pub fn buffer<T: Element>(&self) -> &[T] {
        debug_assert_eq!(T::DTYPE, self.dtype);
        self.storage.host().as_slice::<T>()
    }
    /// The elements in order, when the layout is contiguous.
    pub fn contiguous_slice<T: Element>(&self) -> Option<&[T]> {
        let n = self.numel();
        if n == 0 {
            // Empty views may carry an offset past the end of their buffer.
            return Some(&[]);
        }
        if !self.layout.is_contiguous() {
            return None;
        }
        Some(&self.buffer::<T>()[self.layout.offset..self.layout.offset + n])
    }
    /// Whether `other` is this very value: same storage, layout and dtype.
    pub fn is_same(&self, other: &Value) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage) && self.layout == other.layout && self.dtype == other.dtype
    }
    /// A contiguous value of `dtype` and `shape` over a copy of
    /// little-endian `bytes` (files and serialized graphs: untrusted, so the
    /// size and bool bytes are checked).
    pub fn from_le_bytes(dtype: DType, shape: Shape, bytes: &[u8]) -> Result<Value> {
        let n = shape.checked_numel()?;
        if Some(bytes.len()) != n.checked_mul(dtype.size()) {
            bail!(format, "{} bytes cannot hold {dtype}{shape}", bytes.len());
        }
        if dtype == DType::Bool {
            if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                bail!(format, "bool data holds the byte {b}, not 0 or 1");
            }
        }
        // Straight into storage: one copy of the data, and an error rather
        // than an abort when memory runs out.
        let mut buf = HostBuffer::new(bytes.len())?;
        buf.bytes_mut().copy_from_slice(bytes);
        Ok(Value::from_buffer(dtype, shape, buf))
    }

    /// The elements in row-major order as little-endian bytes, whatever the
    /// layout (host values).
    pub fn to_le_bytes(&self) -> Result<Vec<u8>> {
        let size = self.dtype.size();
        let n = self.numel();
        let mut out = storage::try_vec_with_capacity(n * size)?;
        // A device value is read back here, its error returned (not met in `host`).
        self.storage.sync_host()?;
        let bytes = self.storage.host().bytes();
        if n == 0 {
            return Ok(out);
        }
        if self.layout.is_contiguous() {
            let at = self.layout.offset * size;
            out.extend_from_slice(&bytes[at..at + n * size]);
            return Ok(out);
        }
        let dims = self.shape();
        let rank = dims.rank();
        let strides = &self.layout.strides;
        // An odometer over the index; offsets in elements.
        let mut index = vec![0usize; rank];
        let mut at = self.layout.offset as isize;
        loop {
            let p = at as usize * size;
            out.extend_from_slice(&bytes[p..p + size]);
            let mut d = rank;
            loop {
                if d == 0 {
                    return Ok(out);
                }
                d -= 1;
                index[d] += 1;
                at += strides[d];
                if index[d] < dims[d] {
                    break;
                }
                at -= strides[d] * dims[d] as isize;
                index[d] = 0;
            }
        }
    }

    /// The single element of a one-element (host) real value, as f64.
    pub fn scalar_f64(&self) -> Option<f64> {
        if self.numel() != 1 || self.dtype.is_complex() || self.storage.sync_host().is_err() {
            return None;
        }
        let at = self.layout.offset;
        Some(dtype::with_dtype!(self.dtype, T => self.storage.host().as_slice::<T>()[at].to_f64()))
    }

    /// True when both have equal dtype, shape and bitwise-equal elements.
    /// Compares in place, whatever the layouts (no copies).
    pub fn bitwise_eq(&self, other: &Value) -> bool {
        let (a, b) = (self, other);
        if a.dtype != b.dtype || a.shape() != b.shape() {
            return false;
        }
        if Arc::ptr_eq(&a.storage, &b.storage) && a.layout == b.layout {
            return true;
        }
        let size = a.dtype.size();
        // Device values are read back first; one that cannot be is unequal.
        if a.storage.sync_host().is_err() || b.storage.sync_host().is_err() {
            return false;
        }
        let (ab, bb) = (a.storage.host().bytes(), b.storage.host().bytes());
        fn element(bytes: &[u8], at: isize, size: usize) -> &[u8] {
            let at = at as usize * size;
            &bytes[at..at + size]
        }
        let rank = a.shape().rank();
        if a.numel() == 0 {
            return true;
        }
        if rank == 0 {
            return element(ab, a.layout.offset as isize, size) == element(bb, b.layout.offset as isize, size);
        }
        // An odometer over the outer dimensions; the last one is compared as a row.
        let dims = a.shape();
        let inner = dims[rank - 1];
        let (sa, sb) = (&a.layout.strides, &b.layout.strides);
        let mut index = vec![0usize; rank - 1];
        let (mut oa, mut ob) = (a.layout.offset as isize, b.layout.offset as isize);
        loop {
            let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
            if ia == 1 && ib == 1 {
                let (pa, pb) = (oa as usize * size, ob as usize * size);
                if ab[pa..pa + inner * size] != bb[pb..pb + inner * size] {
                    return false;
                }
            } else {
                for j in 0..inner as isize {
                    if element(ab, oa + j * ia, size) != element(bb, ob + j * ib, size) {
                        return false;
                    }
                }
            }
            // Next row.
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return true;
                }
                d -= 1;
                index[d] += 1;
                oa += sa[d];
                ob += sb[d];
                if index[d] < dims[d] {
                    break;
                }
                oa -= sa[d] * dims[d] as isize;
                ob -= sb[d] * dims[d] as isize;
                index[d] = 0;
            }
        }
    }
}
