//! The runtime context of a thread (TensorFlow's eager context): the device
//! scope that ops created on this thread are placed in.
//!
//! Kernels never read it: a rayon job that a waiting thread steals runs with
//! the placement its op was given, not with the stealing thread's scope.

use crate::backend;
use crate::error::Result;
use crate::tensor::Device;
use std::cell::{Cell, RefCell};

thread_local! {
    /// Open device scopes, innermost last.
    static DEVICE_SCOPES: RefCell<Vec<Device>> = const { RefCell::new(Vec::new()) };
    /// The innermost one (read by every op: a `Cell`, no borrow).
    static CURRENT_DEVICE: Cell<Option<Device>> = const { Cell::new(None) };
}

/// The device of the innermost scope on this thread, if any.
pub(crate) fn current_device() -> Option<Device> {
    CURRENT_DEVICE.with(|c| c.get())
}

/// Every device found on this machine, fastest first (the CPU, then the
/// reference device; GPUs join when their backend is found).
pub fn devices() -> Vec<Device> {
    backend::devices()
}

/// A device scope: ops created on this thread while it lives run on (eager)
/// or are placed on (graph) its device. Made by [`device_scope`]; ends when dropped.
#[must_use = "the scope ends when the guard is dropped"]
pub struct DeviceScope {
    // Not Send: the scope belongs to the thread that opened it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for DeviceScope {
    fn drop(&mut self) {
        DEVICE_SCOPES.with(|s| {
            let mut s = s.borrow_mut();
            s.pop();
            CURRENT_DEVICE.with(|c| c.set(s.last().copied()));
        });
    }
}

/// Open a device scope (TensorFlow's `with tf.device(name):`). `name` is a
/// TensorFlow device name (`/cpu:0`, `/device:GPU:0`, `/reference:0`); a
/// device this machine does not have is an error that lists the ones it has.
pub fn device_scope(name: &str) -> Result<DeviceScope> {
    let device = Device::parse(name)?;
    backend::backend(device)?;
    DEVICE_SCOPES.with(|s| s.borrow_mut().push(device));
    CURRENT_DEVICE.with(|c| c.set(Some(device)));
    Ok(DeviceScope { _not_send: std::marker::PhantomData })
}

/// Run `f` inside a device scope (see [`device_scope`]).
pub fn device<R>(name: &str, f: impl FnOnce() -> R) -> Result<R> {
    let _scope = device_scope(name)?;
    Ok(f())
}
