//! The CUDA backend, as far as it is built: finding the driver at run time
//! ([`probe`]) and the source of the fused elementwise kernels
//! ([`codegen`]), both checked on machines without a GPU. Compiling the
//! kernels (NVRTC), device memory, launches and the [`super::Backend`]
//! implementation come next (issue 14); until then no GPU device is
//! registered and every op runs on the CPU.

// Used by the kernel launcher that comes next; exercised by its tests now.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod codegen;
pub(crate) mod probe;
