//! The CUDA backend, as far as it is built: finding the driver at run time
//! ([`probe`]), the source of the fused elementwise kernels ([`codegen`])
//! and the stream-ordered caching allocator's bookkeeping ([`allocator`]),
//! all checked on machines without a GPU. Compiling the kernels (NVRTC),
//! the driver calls behind the allocator, launches and the
//! [`super::Backend`] implementation come next (issue 14); until then no GPU
//! device is registered and every op runs on the CPU.

// Used by the backend that comes next; exercised by their tests now.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod allocator;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod codegen;
pub(crate) mod probe;
