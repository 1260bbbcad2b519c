//! Finding the NVIDIA driver at run time, without linking it: `dlopen` of
//! `libcuda.so.1`, then `cuInit` and the device list through `dlsym`.
//! Nothing here can panic on a machine without a GPU (a CUDA wrapper's own
//! loader would, when the library is missing); it reports what it looked
//! for instead.

use std::sync::OnceLock;

/// What the driver probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaProbe {
    /// The library names tried, in order.
    pub looked_for: Vec<String>,
    /// The one that loaded.
    pub library: Option<String>,
    /// The driver's CUDA version as `major.minor`.
    pub driver_version: Option<String>,
    /// Each GPU's name, by device index.
    pub devices: Vec<String>,
    /// Why no GPU is usable, when none is.
    pub problem: Option<String>,
}

impl CudaProbe {
    /// One line per fact, for `rivulet devices`.
    pub fn describe(&self) -> String {
        match (&self.library, &self.problem) {
            (None, _) => format!(
                "no NVIDIA driver: looked for {} (set RIVULET_CUDA_DRIVER to a path to try another); running on the CPU",
                self.looked_for.join(", ")
            ),
            (Some(lib), Some(problem)) => format!("NVIDIA driver {lib} loaded, but {problem}; running on the CPU"),
            (Some(lib), None) => {
                let mut s = format!(
                    "NVIDIA driver {lib} (CUDA {}), {} GPU(s):",
                    self.driver_version.as_deref().unwrap_or("?"),
                    self.devices.len()
                );
                for (i, d) in self.devices.iter().enumerate() {
                    s.push_str(&format!("\n  gpu:{i}  {d}"));
                }
                s
            }
        }
    }
}

/// The probe's result, computed once per process.
pub fn cuda_probe() -> &'static CudaProbe {
    static PROBE: OnceLock<CudaProbe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let names: Vec<String> = match std::env::var("RIVULET_CUDA_DRIVER") {
            Ok(path) if !path.is_empty() => vec![path],
            _ => vec!["libcuda.so.1".to_string(), "libcuda.so".to_string()],
        };
        probe(&names)
    })
}

/// Try `names` in order.
pub(crate) fn probe(names: &[String]) -> CudaProbe {
    let mut found = CudaProbe {
        looked_for: names.to_vec(),
        library: None,
        driver_version: None,
        devices: Vec::new(),
        problem: None,
    };
    #[cfg(target_os = "linux")]
    for name in names {
        if let Some(lib) = driver::Library::open(name) {
            found.library = Some(name.clone());
            match driver::query(&lib) {
                Ok((version, devices)) => {
                    found.driver_version = Some(format!("{}.{}", version / 1000, (version % 1000) / 10));
                    if devices.is_empty() {
                        found.problem = Some("it reports no devices".to_string());
                    }
                    found.devices = devices;
                }
                Err(problem) => found.problem = Some(problem),
            }
            break;
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        found.problem = Some("the driver is only looked for on Linux".to_string());
    }
    found
}

#[cfg(target_os = "linux")]
mod driver {
    use std::ffi::{c_char, c_int, c_void, CString};

    /// A `dlopen`ed library, closed on drop.
    pub struct Library(*mut c_void);

    impl Library {
        pub fn open(name: &str) -> Option<Library> {
            let c = CString::new(name).ok()?;
            // SAFETY: a valid C string; loading the driver runs only its own
            // initializers.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
            (!handle.is_null()).then(|| Library(handle))
        }

        fn symbol(&self, name: &str) -> Result<*mut c_void, String> {
            let c = CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: a live handle and a valid C string.
            let f = unsafe { libc::dlsym(self.0, c.as_ptr()) };
            if f.is_null() {
                Err(format!("it has no {name}"))
            } else {
                Ok(f)
            }
        }
    }

    impl Drop for Library {
        fn drop(&mut self) {
            // SAFETY: the handle came from dlopen and nothing from it outlives
            // the query (names are copied out).
            unsafe { libc::dlclose(self.0) };
        }
    }

    type CuInit = unsafe extern "C" fn(c_int) -> c_int;
    type CuCount = unsafe extern "C" fn(*mut c_int) -> c_int;
    type CuGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type CuName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;

    /// The driver's version (as `cuDriverGetVersion` gives it) and each device's name.
    pub fn query(lib: &Library) -> Result<(i32, Vec<String>), String> {
        // SAFETY: the symbols are the driver API's, with these signatures
        // (CUDA driver API reference); every out-pointer is a live local.
        unsafe {
            let init: CuInit = std::mem::transmute::<*mut c_void, CuInit>(lib.symbol("cuInit")?);
            let version: CuCount = std::mem::transmute::<*mut c_void, CuCount>(lib.symbol("cuDriverGetVersion")?);
            let count: CuCount = std::mem::transmute::<*mut c_void, CuCount>(lib.symbol("cuDeviceGetCount")?);
            let get: CuGet = std::mem::transmute::<*mut c_void, CuGet>(lib.symbol("cuDeviceGet")?);
            let name: CuName = std::mem::transmute::<*mut c_void, CuName>(lib.symbol("cuDeviceGetName")?);
            let status = init(0);
            if status != 0 {
                return Err(format!("cuInit failed with CUDA error {status}"));
            }
            let mut v = 0;
            if version(&mut v) != 0 {
                return Err("cuDriverGetVersion failed".to_string());
            }
            let mut n = 0;
            let status = count(&mut n);
            if status != 0 {
                return Err(format!("cuDeviceGetCount failed with CUDA error {status}"));
            }
            let mut names = Vec::new();
            for i in 0..n.max(0) {
                let mut device = 0;
                let mut buf = [0 as c_char; 256];
                if get(&mut device, i) != 0 || name(buf.as_mut_ptr(), buf.len() as c_int - 1, device) != 0 {
                    names.push(format!("device {i} (its name could not be read)"));
                    continue;
                }
                names.push(std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            }
            Ok((v, names))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library that is not there is reported by name, with nothing else.
    #[test]
    fn a_missing_driver_is_reported_not_fatal() {
        let p = probe(&["/nonexistent/libcuda.so.1".to_string()]);
        assert_eq!(p.library, None);
        assert!(p.devices.is_empty());
        assert!(p.describe().contains("looked for /nonexistent/libcuda.so.1"), "{}", p.describe());
    }

    /// A library that loads but is not the driver is a problem, not a crash.
    #[test]
    fn a_library_without_the_driver_api_is_a_problem() {
        let p = probe(&["libc.so.6".to_string()]);
        assert_eq!(p.library.as_deref(), Some("libc.so.6"));
        assert_eq!(p.problem.as_deref(), Some("it has no cuInit"));
        assert!(p.describe().contains("running on the CPU"));
    }
}
