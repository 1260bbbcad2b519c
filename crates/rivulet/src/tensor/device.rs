//! Devices: where a tensor's data lives and where an op runs.
//!
//! Names follow TensorFlow: `/cpu:0`, `/device:CPU:0`, `CPU:0`, `cpu` (and
//! the full `/job:localhost/replica:0/task:0/device:CPU:0`). Besides the CPU
//! there is the reference device (`/reference:0`): plain scalar loops over
//! host memory, the oracle that other backends are checked against, and a
//! second device on every machine, so that placement and copies are tested
//! for real. GPUs (`/gpu:0`) join when their backend is found at run time.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A kind of device: which backend runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// The host CPU (the optimized backend, always present).
    Cpu,
    /// The reference backend: plain loops over host memory.
    Reference,
    /// An NVIDIA GPU.
    Gpu,
}

impl DeviceKind {
    /// The name as TensorFlow spells the device type (`CPU`, `GPU`).
    pub fn type_name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "CPU",
            DeviceKind::Reference => "REFERENCE",
            DeviceKind::Gpu => "GPU",
        }
    }

    fn parse(name: &str) -> Option<DeviceKind> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Some(DeviceKind::Cpu),
            "reference" => Some(DeviceKind::Reference),
            "gpu" | "cuda" => Some(DeviceKind::Gpu),
            _ => None,
        }
    }
}

/// One device: a kind and an index among the devices of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Device {
    pub kind: DeviceKind,
    pub index: u32,
}

impl Device {
    /// The CPU, where tensors made from host data live.
    pub const CPU: Device = Device { kind: DeviceKind::Cpu, index: 0 };
    /// The reference device.
    pub const REFERENCE: Device = Device { kind: DeviceKind::Reference, index: 0 };

    /// Parse a TensorFlow device name (see the module documentation). This
    /// only reads the name; whether such a device exists is asked of
    /// [`crate::devices`].
    pub fn parse(name: &str) -> Result<Device> {
        let bad = || {
            Error::invalid(format!(
                "'{name}' is not a device name (expected forms like /cpu:0, /device:GPU:0, /reference:0)"
            ))
        };
        // The last path component names the device; job/replica/task parts are accepted and ignored.
        let last = name.trim().rsplit('/').next().ok_or_else(bad)?;
        let last = last.strip_prefix("device:").unwrap_or(last);
        let (kind, index) = match last.split_once(':') {
            Some((k, i)) => (k, i.parse::<u32>().map_err(|_| bad())?),
            None => (last, 0),
        };
        let kind = DeviceKind::parse(kind).ok_or_else(bad)?;
        Ok(Device { kind, index })
    }

    /// The short name, `/cpu:0`.
    pub fn short_name(&self) -> String {
        format!("/{}:{}", self.kind.type_name().to_ascii_lowercase(), self.index)
    }
}

impl fmt::Display for Device {
    /// TensorFlow's canonical form, `/device:CPU:0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/device:{}:{}", self.kind.type_name(), self.index)
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Device> {
        Device::parse(s)
    }
}
