//! # Rivulet
//!
//! Numerical computation on dataflow graphs, in the spirit of TensorFlow.
//! Build a [`Graph`] of operations on symbolic tensors and run it in a
//! [`Session`] (lazy, compiled once per request), or call the same operations
//! on values and get results at once (eager). Both modes run the same kernels
//! and give bitwise-identical results.
//!
//! ```
//! use rivulet::{ops, DType, Graph, Session, Tensor};
//!
//! // Eager: values in, values out.
//! let a = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
//! let b = ops::matmul(&a, &a)?;
//! assert_eq!(b.to_vec::<f32>()?, vec![7.0, 10.0, 15.0, 22.0]);
//!
//! // Graph: build once, run with feeds.
//! let g = Graph::new();
//! let x = g.placeholder("x", DType::F32, [None, Some(2)])?;
//! let y = ops::sum(&ops::matmul(&x, &a)?, 1, false)?;
//! let sess = Session::new(&g);
//! let out = sess.run(&[&y], &[(&x, &a)])?;
//! assert_eq!(out[0].to_vec::<f32>()?, vec![17.0, 37.0]);
//! # Ok::<(), rivulet::Error>(())
//! ```

// The layers, bottom up (docs/ARCHITECTURE.md; a test forbids a module to
// import one above its own layer).
pub mod autodiff;
pub(crate) mod backend;
pub mod collective;
pub mod context;
pub mod data;
pub mod distribute;
pub mod error;
pub mod function;
pub mod graph;
pub mod io;
mod methods;
pub mod nn;
pub mod op;
pub mod ops;
pub mod passes;
pub mod plot;
pub mod runtime;
pub mod saved_model;
pub mod sim;
pub mod summary;
pub mod tensor;

pub use autodiff::{gradients, GradientTape, Unconnected};
pub use backend::cpu::simd_level;
pub use backend::cuda::probe::{cuda_probe, CudaProbe};
pub use backend::cuda::{enable_tensor_float_32_execution, gpu_status, tensor_float_32_execution_enabled};
pub use backend::{default_device, release_cached_memory, set_default_device, synchronize};
pub use context::{device, device_scope, devices, eager_scope, DefaultGraphGuard, DeviceScope};
pub use error::{Error, ErrorKind, OpContext, Result};
pub use function::{function, ConcreteFunction, Function, FunctionOptions};
pub use graph::{Graph, Operation, Tensor};
pub use io::npy::{load_npy, read_npy, save_npy, write_npy};
pub use ops::creation::set_random_seed;
pub use ops::{cond, switch_case, while_loop, Axes, Ctx, Nest, Op, Variable, WhileOptions};
pub use passes::PassOptions;
pub use runtime::{
    enable_graph_capture, graph_capture_enabled, GraphStatus, PlanReport, RunProfile, Session, SessionOptions,
    StepProfile,
};
pub use tensor::{Complex, DType, Device, DeviceKind, Scalar, Shape, UNKNOWN};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The items most programs use: `use rivulet::prelude::*;`.
pub mod prelude {
    pub use crate::ops::{self, Axes, Ctx};
    pub use crate::{DType, Error, Graph, Result, Session, Shape, Tensor};
}
