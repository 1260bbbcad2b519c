//! Numerical solvers made of graph ops, so that they run eagerly or in a
//! graph, on any device, and differentiate (through `while_loop`):
//! matrix-free conjugate gradients ([`conjugate_gradient`]) and explicit
//! time integration ([`integrate`]).

mod cg;
mod integrate;

pub use cg::{conjugate_gradient, CgOptions, CgSolution};
pub use integrate::{integrate, Method};
