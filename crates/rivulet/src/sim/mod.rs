//! Numerical solvers made of graph ops, so that they run eagerly or in a
//! graph, on any device, and differentiate (through `while_loop`):
//! matrix-free conjugate gradients ([`conjugate_gradient`]), explicit
//! time integration with a fixed step ([`integrate`]: Euler, RK4) or an
//! adaptive one ([`integrate_adaptive`]: Dormand–Prince 5(4)); Poisson
//! solvers ([`poisson_periodic`] by FFT; [`poisson_dirichlet_sine`] by the
//! sine transform, and [`poisson_dirichlet`] by CG, on Dirichlet boundaries).

mod cg;
mod integrate;
mod poisson;

pub use cg::{conjugate_gradient, CgOptions, CgSolution};
pub use integrate::{integrate, integrate_adaptive, AdaptiveOptions, AdaptiveSolution, Method};
pub use poisson::{poisson_dirichlet, poisson_dirichlet_sine, poisson_periodic};
