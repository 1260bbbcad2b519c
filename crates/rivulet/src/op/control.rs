//! Control-flow ops: `If`, `Case` and `While`, whose branches and bodies
//! are functions kept in the graph's library (TensorFlow 2's functional
//! control flow). The op holds the functions' indices and the output types
//! decided when the node was built; the runtime runs the bodies.

use super::Meta;
use crate::error::{Error, Result};
use crate::tensor::{DType, Shape};
use serde::{Deserialize, Serialize};

/// Index of a function in a graph's library.
pub type FunctionId = u32;

/// What a `While` keeps of its iterations for the backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum History {
    /// Nothing: the plain loop.
    #[default]
    None,
    /// The loop variables entering every `every`-th iteration (1: all of
    /// them), stacked along a new first axis; then the trip count.
    Every { every: u64 },
}

impl History {
    /// Extra outputs after the loop variables: one stack per variable and the trip count.
    pub fn extra_outputs(&self, vars: &[Meta]) -> Vec<Meta> {
        match self {
            History::None => Vec::new(),
            History::Every { .. } => {
                let mut v: Vec<Meta> = vars
                    .iter()
                    .map(|m| {
                        let mut dims = vec![crate::tensor::UNKNOWN];
                        dims.extend_from_slice(m.shape.dims());
                        Meta::new(m.dtype, Shape::from(dims))
                    })
                    .collect();
                v.push(Meta::new(DType::I64, Shape::scalar()));
                v
            }
        }
    }
}

/// The attributes of a `While`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhileSpec {
    /// Takes the loop variables and the captures; returns a bool scalar.
    pub cond: FunctionId,
    /// Takes the loop variables and the captures; returns the next loop variables.
    pub body: FunctionId,
    /// Type of each loop variable (its shape invariant).
    pub vars: Vec<Meta>,
    /// Stop after this many iterations even if `cond` still holds.
    pub maximum_iterations: Option<u64>,
    pub history: History,
    /// For the gradient: keep every n-th state and recompute the others.
    pub checkpoint_every: Option<u64>,
}

/// Check the selector of `If` (a bool scalar) or `Case` (an integer scalar).
pub fn check_selector(op: &str, selector: &Meta, boolean: bool) -> Result<()> {
    let ok_dtype =
        if boolean { selector.dtype == DType::Bool } else { matches!(selector.dtype, DType::I32 | DType::I64) };
    if !ok_dtype || selector.shape.rank() != 0 {
        let want = if boolean { "a bool scalar" } else { "an int32 or int64 scalar" };
        return Err(Error::invalid(format!("{op} needs {want} to choose a branch, got {selector}")));
    }
    Ok(())
}

/// Output types of `If`/`Case`.
pub fn infer_branches(op: &str, boolean: bool, outputs: &[Meta], inputs: &[Meta]) -> Result<Vec<Meta>> {
    let Some(selector) = inputs.first() else {
        return Err(Error::invalid(format!("{op} takes a selector first, got no inputs")));
    };
    check_selector(op, selector, boolean)?;
    Ok(outputs.to_vec())
}

/// Output types of `While`: the loop variables (then the history, if kept).
pub fn infer_while(spec: &WhileSpec, inputs: &[Meta]) -> Result<Vec<Meta>> {
    if inputs.len() < spec.vars.len() {
        return Err(Error::invalid(format!(
            "While has {} loop variables but {} inputs",
            spec.vars.len(),
            inputs.len()
        )));
    }
    for (i, (m, input)) in spec.vars.iter().zip(inputs).enumerate() {
        if m.dtype != input.dtype || !m.shape.is_compatible_with(&input.shape) {
            return Err(Error::invalid(format!("loop variable {i} is {input}, but its shape invariant is {m}")));
        }
    }
    let mut out = spec.vars.clone();
    out.extend(spec.history.extra_outputs(&spec.vars));
    Ok(out)
}

/// The most specific shape two branches' outputs both have (dimensions that
/// differ become unknown); `None` when the ranks differ.
pub fn merge_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    if a.rank() != b.rank() {
        return None;
    }
    let dims: Vec<usize> =
        a.dims().iter().zip(b.dims()).map(|(&x, &y)| if x == y { x } else { crate::tensor::UNKNOWN }).collect();
    Some(Shape::from(dims))
}

/// Whether a value's or body output's shape `s` keeps to the invariant `inv`:
/// every dimension the invariant knows, `s` has and equals.
pub fn keeps_invariant(s: &Shape, inv: &Shape) -> bool {
    s.rank() == inv.rank() && s.dims().iter().zip(inv.dims()).all(|(&d, &i)| i == crate::tensor::UNKNOWN || d == i)
}

impl super::Op {
    /// The functions of the library this op calls (none for other ops).
    pub fn functions(&self) -> Vec<FunctionId> {
        match self {
            super::Op::If { then_branch, else_branch, .. } => vec![*then_branch, *else_branch],
            super::Op::Case { branches, .. } => branches.clone(),
            super::Op::While { spec } => vec![spec.cond, spec.body],
            _ => Vec::new(),
        }
    }

    /// This op with each function it calls renumbered by `map` (when a
    /// library is copied or pruned).
    pub fn map_functions(&self, mut map: impl FnMut(FunctionId) -> Result<FunctionId>) -> Result<super::Op> {
        use super::Op;
        Ok(match self {
            Op::If { then_branch, else_branch, outputs } => {
                Op::If { then_branch: map(*then_branch)?, else_branch: map(*else_branch)?, outputs: outputs.clone() }
            }
            Op::Case { branches, outputs } => Op::Case {
                branches: branches.iter().map(|&b| map(b)).collect::<Result<_>>()?,
                outputs: outputs.clone(),
            },
            Op::While { spec } => {
                let mut spec = spec.clone();
                spec.cond = map(spec.cond)?;
                spec.body = map(spec.body)?;
                Op::While { spec }
            }
            other => other.clone(),
        })
    }
}
