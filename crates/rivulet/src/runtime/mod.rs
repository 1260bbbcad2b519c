//! The run stage: sessions and their compiled plans.

pub mod function;
mod plan;
mod session;
mod store;

pub(crate) use store::VariableCell;

pub use function::{function, Function, FunctionOptions};
pub use plan::PlanReport;
pub use session::{RunProfile, Session, SessionOptions, StepProfile};
