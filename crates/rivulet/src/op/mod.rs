//! Op definitions: every operation's attributes, its dtype and shape
//! inference, and the facts passes and backends ask of it (arity, whether it
//! is stateful, its TensorFlow type name). Nothing here runs an op or builds
//! a graph: the public functions are in `crate::ops`, the kernels in
//! `crate::backend`, the gradient rules next to the public functions.

pub mod collective;
pub mod complex;
pub mod control;
pub mod creation;
pub mod elementwise;
pub mod fused;
pub mod host;
pub mod linalg;
pub mod movement;
pub mod nn;
pub mod optim;
pub mod reduce;
pub mod variables;
pub mod window;

pub use collective::CollectiveOp;
pub use complex::{ComplexOp, FftOp};
pub use control::{FunctionId, History, WhileSpec};
pub use creation::Distribution;
pub use elementwise::{BinaryOp, UnaryOp};
pub use fused::FusedProgram;
pub use host::HostOp;
pub use linalg::LinalgOp;
pub use movement::{PadMode, SliceItem};
pub use optim::UpdateRule;
pub use reduce::{ArgOp, ReduceOp, ScanOp};
pub use variables::AssignOp;
pub use window::{ConvSpec, Padding, PoolKind, PoolSpec, WindowOp};

use crate::error::{Error, Result};
use crate::tensor::{DType, Scalar, Shape, Value};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// The most outputs one op may have (split, unstack): a count from a caller
/// never sizes an allocation beyond it.
pub const MAX_OUTPUTS: usize = 1 << 20;

/// The pattern of every movement op (shape rules in `movement.rs`, gradient
/// rules in `ops/movement.rs`): one list for the matches that hand them on.
macro_rules! movement_ops {
    () => {
        Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::ExpandDims { .. }
            | Op::Squeeze { .. }
            | Op::BroadcastTo { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Unstack { .. }
            | Op::Slice { .. }
            | Op::StridedSlice { .. }
            | Op::Gather { .. }
            | Op::GatherNd
            | Op::ScatterNd { .. }
            | Op::Tile { .. }
            | Op::Pad { .. }
            | Op::Reverse { .. }
            | Op::OneHot { .. }
            | Op::SumTo
            | Op::BroadcastLike
            | Op::ReshapeLike
            | Op::Size { .. }
            | Op::ShapeOf { .. }
            | Op::BroadcastToDims
            | Op::StridedSliceGrad { .. }
            | Op::GatherGrad { .. }
            | Op::GatherNdGrad
            | Op::SplitLike { .. }
    };
}
pub(crate) use movement_ops;

/// Static type of one tensor: dtype and (possibly partial) shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub dtype: DType,
    pub shape: Shape,
}

impl Meta {
    pub fn new(dtype: DType, shape: Shape) -> Meta {
        Meta { dtype, shape }
    }
}

impl std::fmt::Display for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// Output metas of an op: almost always one.
pub type Metas = SmallVec<[Meta; 1]>;

/// Every operation, with its attributes. Inputs are not part of the op:
/// they are the edges of a graph node, or the tensors of an eager call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// A value baked into the graph.
    Const { value: ConstValue },
    /// An input fed at run time.
    Placeholder { dtype: DType, shape: Shape },
    /// Passes its input through (useful to name a tensor or pin a dependency).
    Identity,
    /// Identity whose gradient is zero.
    StopGradient,
    /// The input, copied to `device` (inserted by placement where a value
    /// crosses devices).
    CopyToDevice { device: crate::tensor::Device },
    /// Does nothing; a target that groups control dependencies.
    NoOp,

    /// `f(x)` elementwise.
    Unary { f: elementwise::UnaryOp },
    /// `f(a, b)` elementwise with broadcasting.
    Binary { f: elementwise::BinaryOp },
    /// `cond ? a : b` elementwise with broadcasting of all three.
    Select,
    /// Conversion to another dtype.
    Cast { dtype: DType },

    /// Reduction over `axes` (sorted, non-negative).
    Reduce { f: reduce::ReduceOp, axes: Vec<usize>, keepdims: bool },
    /// Index of the largest/smallest element along `axis`.
    ArgReduce { f: reduce::ArgOp, axis: usize, output: DType },
    /// Cumulative sum or product along `axis`.
    Scan { f: reduce::ScanOp, axis: usize, exclusive: bool, reverse: bool },

    /// Batched matrix product with broadcast batch dimensions.
    MatMul { transpose_a: bool, transpose_b: bool },

    /// New shape for the same elements; one entry may be -1.
    Reshape { shape: Vec<i64> },
    /// Permutation of the dimensions.
    Transpose { perm: Vec<usize> },
    /// Insert a dimension of size 1 at `axis`.
    ExpandDims { axis: usize },
    /// Remove the listed dimensions of size 1 (all of them when `axes` is empty).
    Squeeze { axes: Vec<usize> },
    /// Broadcast to `shape`.
    BroadcastTo { shape: Shape },
    /// Join inputs along `axis`.
    Concat { axis: usize },
    /// Cut along `axis` into pieces of `sizes`.
    Split { axis: usize, sizes: Vec<usize> },
    /// Split along `axis` into slices of size 1 with that axis removed.
    Unstack { axis: usize, num: usize },
    /// A box `begin .. begin + size` (`-1` size: to the end).
    Slice { begin: Vec<usize>, size: Vec<i64> },
    /// NumPy-style indexing with ranges, steps, new axes and an ellipsis.
    StridedSlice { spec: Vec<movement::SliceItem> },
    /// Pick slices along `axis` by index.
    Gather { axis: usize, batch_dims: usize },
    /// Pick slices by multi-dimensional index.
    GatherNd,
    /// Zeros of `shape` with updates added at indices.
    ScatterNd { shape: Shape },
    /// Repeat `multiples[i]` times along each dimension.
    Tile { multiples: Vec<usize> },
    /// Pad each dimension with `(before, after)` elements.
    Pad { paddings: Vec<(usize, usize)>, mode: movement::PadMode, value: Scalar },
    /// Flip the listed dimensions.
    Reverse { axes: Vec<usize> },
    /// One-hot encoding of integer indices along a new `axis`.
    OneHot { depth: usize, on: Scalar, off: Scalar, axis: usize, dtype: DType },

    /// A tensor of `shape` filled with `value`.
    Fill { shape: Shape, value: Scalar, dtype: DType },
    /// A tensor shaped like the input, filled with `value`.
    FillLike { value: Scalar },
    /// `start, start + delta, ...` below `limit`.
    Range { start: Scalar, limit: Scalar, delta: Scalar, dtype: DType },
    /// `num` evenly spaced values from `start` to `stop` inclusive.
    Linspace { start: f64, stop: f64, num: usize, dtype: DType },
    /// Identity matrix (ones on the main diagonal).
    Eye { rows: usize, cols: usize, dtype: DType },
    /// Seeded random numbers (Philox 4x32-10, counter based).
    Random { dist: creation::Distribution, shape: Shape, dtype: DType, seed: u64 },
    /// Seeded random numbers shaped like the first input (whose shape may be
    /// known only at run time), of its dtype. An optional second input, an
    /// i64 scalar, is mixed into the seed and replaces the run counter, so
    /// that the numbers follow state kept in a variable.
    RandomLike { dist: creation::Distribution, seed: u64 },

    /// `exp(x) / sum(exp(x))` along `axis`, computed stably.
    Softmax { axis: usize },
    /// `x - logsumexp(x)` along `axis`, computed stably.
    LogSoftmax { axis: usize },
    /// The `k` largest entries along the last axis and their indices.
    TopK { k: usize, sorted: bool },
    /// A row-sequential algorithm run on the host (see [`HostOp`]).
    Host { f: host::HostOp },
    /// A collective across the ranks of a group (see [`CollectiveOp`]).
    Collective { c: collective::CollectiveOp },
    /// A matrix factorization or solve (see [`LinalgOp`]).
    Linalg { f: linalg::LinalgOp },
    /// A complex tensor from its parts, or a part of one (see [`ComplexOp`]).
    Complex { f: complex::ComplexOp },
    /// A Fourier transform over the last axes (see [`FftOp`]).
    Fft { f: complex::FftOp },
    /// A convolution or pooling window, or a gradient of one (see
    /// [`WindowOp`]); boxed, as the largest attributes, so that every other
    /// op stays small.
    Window { f: Box<window::WindowOp> },

    /// Sum the first input down to the shape of the second (the gradient of
    /// broadcasting; the shape may be known only at run time).
    SumTo,
    /// Broadcast the first input to the shape of the second.
    BroadcastLike,
    /// Reshape the first input to the shape of the second.
    ReshapeLike,
    /// The input's shape as a vector of `dtype` (i32 or i64), taken when
    /// the op runs (TensorFlow's `Shape`): dimensions known only at run time
    /// become values.
    ShapeOf { dtype: DType },
    /// Broadcast the first input to the shape the second holds (an integer
    /// vector read when the op runs: TensorFlow's `BroadcastTo` with a
    /// shape tensor, and `fill` with a run-time shape).
    BroadcastToDims,
    /// Number of elements of the input, as a scalar of `dtype`.
    Size { dtype: DType },
    /// Zeros shaped like the second input, with the first written into the
    /// region `spec` selects (the gradient of slicing).
    StridedSliceGrad { spec: Vec<movement::SliceItem> },
    /// Zeros shaped like the third input (params), with the first added at
    /// the positions the second (indices) gathers (the gradient of gather).
    GatherGrad { axis: usize, batch_dims: usize },
    /// Zeros shaped like the third input, with the first added at the
    /// index vectors of the second (the gradient of gather_nd).
    GatherNdGrad,
    /// Split the first input along `axis` into pieces as long as each of
    /// the other inputs is along it (the gradient of concat).
    SplitLike { axis: usize },

    /// A variable: state that persists across runs (in a session's store).
    Variable { dtype: DType, shape: Shape },
    /// An elementwise program (with an optional trailing reduction) run in
    /// one pass over memory; made by the graph optimizer.
    FusedElementwise { program: fused::FusedProgram },
    /// `activation(op(a) @ op(b) + bias)` in one kernel; made by the graph optimizer.
    FusedMatMul { transpose_a: bool, transpose_b: bool, activation: Option<elementwise::UnaryOp> },
    /// New values of a variable and its optimizer slots (inputs `[var, grad,
    /// lr, step, slots...]`, outputs `[var, slots...]`).
    ApplyUpdate { rule: optim::UpdateRule },
    /// `ApplyUpdate` that reads and overwrites the variable and its slots in
    /// the session's store (inputs `[grad, lr, step]`, outputs the new
    /// values); made by the graph optimizer from a read-update-assign chain.
    ResourceApplyUpdate { rule: optim::UpdateRule },
    /// Set (or add to, or subtract from) the variable that is the first
    /// input; the output is the variable's new value.
    Assign { f: variables::AssignOp },
    /// The current value of the variable that is the input, read where the
    /// node's dependencies place it (after the writes it waits for).
    ReadVariable,

    /// Run function `then_branch` or `else_branch` of the graph's library
    /// (inputs: a bool scalar, then the branches' arguments); only the
    /// taken branch runs.
    If { then_branch: control::FunctionId, else_branch: control::FunctionId, outputs: Vec<Meta> },
    /// Run branch `index` of `branches` (the last one for an index out of
    /// range: the default); inputs: an integer scalar, then the arguments.
    Case { branches: Vec<control::FunctionId>, outputs: Vec<Meta> },
    /// Run the body while the condition holds (inputs: the loop variables,
    /// then the captured tensors).
    While { spec: control::WhileSpec },
}

/// A constant's value (a wrapper so that graphs can serialize it).
#[derive(Clone)]
pub struct ConstValue(pub(crate) Value);

impl std::fmt::Debug for ConstValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Const({}{})", self.0.dtype, self.0.shape())
    }
}

impl PartialEq for ConstValue {
    fn eq(&self, other: &ConstValue) -> bool {
        self.0.bitwise_eq(&other.0)
    }
}

impl Op {
    /// The op type as TensorFlow spells it (`AddV2`, `MatMul`, `Softmax`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Const { .. } => "Const",
            Op::Placeholder { .. } => "Placeholder",
            Op::Identity => "Identity",
            Op::CopyToDevice { .. } => "CopyToDevice",
            Op::StopGradient => "StopGradient",
            Op::NoOp => "NoOp",
            Op::Unary { f } => f.type_name(),
            Op::Binary { f } => f.type_name(),
            Op::Select => "Select",
            Op::Cast { .. } => "Cast",
            Op::Reduce { f, .. } => f.type_name(),
            Op::ArgReduce { f, .. } => f.type_name(),
            Op::Scan { f, .. } => f.type_name(),
            Op::MatMul { .. } => "MatMul",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::ExpandDims { .. } => "ExpandDims",
            Op::Squeeze { .. } => "Squeeze",
            Op::BroadcastTo { .. } => "BroadcastTo",
            Op::Concat { .. } => "ConcatV2",
            Op::Split { .. } => "SplitV",
            Op::Unstack { .. } => "Unpack",
            Op::Slice { .. } => "Slice",
            Op::StridedSlice { .. } => "StridedSlice",
            Op::Gather { .. } => "GatherV2",
            Op::GatherNd => "GatherNd",
            Op::ScatterNd { .. } => "ScatterNd",
            Op::Tile { .. } => "Tile",
            Op::Pad { .. } => "Pad",
            Op::Reverse { .. } => "ReverseV2",
            Op::OneHot { .. } => "OneHot",
            Op::Fill { .. } => "Fill",
            Op::FillLike { .. } => "FillLike",
            Op::Range { .. } => "Range",
            Op::Linspace { .. } => "LinSpace",
            Op::Eye { .. } => "Eye",
            Op::Random { dist, .. } | Op::RandomLike { dist, .. } => dist.type_name(),
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::TopK { .. } => "TopKV2",
            Op::Host { f } => f.type_name(),
            Op::Collective { c } => c.type_name(),
            Op::Linalg { f } => f.type_name(),
            Op::Complex { f } => f.type_name(),
            Op::Fft { f } => f.type_name(),
            Op::Window { f } => f.type_name(),
            Op::SumTo => "SumTo",
            Op::BroadcastLike => "BroadcastLike",
            Op::ReshapeLike => "ReshapeLike",
            Op::ShapeOf { .. } => "Shape",
            Op::BroadcastToDims => "BroadcastTo",
            Op::Size { .. } => "Size",
            Op::StridedSliceGrad { .. } => "StridedSliceGrad",
            Op::GatherGrad { .. } => "GatherGrad",
            Op::GatherNdGrad => "GatherNdGrad",
            Op::SplitLike { .. } => "SplitLike",
            Op::Variable { .. } => "VariableV2",
            Op::ApplyUpdate { rule } => rule.type_name(),
            Op::ResourceApplyUpdate { rule } => rule.resource_type_name(),
            Op::FusedElementwise { .. } => "FusedElementwise",
            Op::FusedMatMul { .. } => "_FusedMatMul",
            Op::Assign { f } => f.type_name(),
            Op::ReadVariable => "ReadVariableOp",
            Op::If { .. } => "If",
            Op::Case { .. } => "Case",
            Op::While { .. } => "While",
        }
    }

    /// The default node name stem: the public function's name (`add`,
    /// `matmul`, `sum`), or the op type for graph plumbing (`Const`, `Placeholder`).
    pub fn default_name(&self) -> String {
        match self {
            Op::Const { .. } | Op::Placeholder { .. } | Op::NoOp => self.type_name().to_string(),
            Op::Unary { f } => f.name().to_string(),
            Op::Binary { f } => f.name().to_string(),
            Op::Reduce { f, .. } => f.name().to_string(),
            Op::MatMul { .. } => "matmul".to_string(),
            _ => {
                let t = self.type_name().trim_end_matches("V2");
                let mut out = String::with_capacity(t.len() + 4);
                for (i, ch) in t.chars().enumerate() {
                    if ch.is_ascii_uppercase() {
                        if i > 0 && !t.as_bytes()[i - 1].is_ascii_uppercase() {
                            out.push('_');
                        }
                        out.push(ch.to_ascii_lowercase());
                    } else {
                        out.push(ch);
                    }
                }
                out
            }
        }
    }

    /// Number of inputs the op takes, when fixed (`None` for variadic ops).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Linalg { f } => f.arity(),
            Op::Collective { c } => return c.arity(),
            Op::Complex { f } => f.arity(),
            Op::Fft { .. } => 1,
            Op::Window { f } => f.arity(),
            Op::Const { .. }
            | Op::Placeholder { .. }
            | Op::NoOp
            | Op::Fill { .. }
            | Op::Range { .. }
            | Op::Linspace { .. }
            | Op::Eye { .. }
            | Op::Random { .. } => 0,
            Op::Variable { .. } => 0,
            Op::Binary { .. }
            | Op::MatMul { .. }
            | Op::Gather { .. }
            | Op::GatherNd
            | Op::ScatterNd { .. }
            | Op::SumTo
            | Op::BroadcastLike
            | Op::ReshapeLike
            | Op::BroadcastToDims
            | Op::StridedSliceGrad { .. }
            | Op::Assign { .. } => 2,
            Op::GatherGrad { .. } | Op::GatherNdGrad => 3,
            Op::Select => 3,
            Op::Concat { .. }
            | Op::SplitLike { .. }
            | Op::ApplyUpdate { .. }
            | Op::RandomLike { .. }
            | Op::FusedElementwise { .. }
            | Op::If { .. }
            | Op::Case { .. }
            | Op::While { .. } => return None,
            Op::FusedMatMul { .. } | Op::ResourceApplyUpdate { .. } => 3,
            Op::Identity
            | Op::StopGradient
            | Op::CopyToDevice { .. }
            | Op::Unary { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::ArgReduce { .. }
            | Op::Scan { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::ExpandDims { .. }
            | Op::Squeeze { .. }
            | Op::BroadcastTo { .. }
            | Op::Split { .. }
            | Op::Unstack { .. }
            | Op::Slice { .. }
            | Op::StridedSlice { .. }
            | Op::Tile { .. }
            | Op::Pad { .. }
            | Op::Reverse { .. }
            | Op::OneHot { .. }
            | Op::FillLike { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::TopK { .. }
            | Op::Host { .. }
            | Op::Size { .. }
            | Op::ShapeOf { .. }
            | Op::ReadVariable => 1,
        })
    }

    /// True for ops whose result depends on more than their inputs (random
    /// numbers, variables): never folded, merged or reordered.
    pub fn is_stateful(&self) -> bool {
        matches!(
            self,
            Op::Random { .. }
                | Op::RandomLike { .. }
                | Op::Variable { .. }
                | Op::Assign { .. }
                | Op::ReadVariable
                | Op::ResourceApplyUpdate { .. }
                | Op::If { .. }
                | Op::Case { .. }
                | Op::While { .. }
                | Op::Collective { .. }
        )
    }

    /// True for `If`, `Case` and `While`, whose bodies are functions of the graph.
    pub fn is_control_flow(&self) -> bool {
        matches!(self, Op::If { .. } | Op::Case { .. } | Op::While { .. })
    }

    /// Dtype and shape of every output, from those of the inputs. Runs when a
    /// node is added and before every eager kernel; with unknown input
    /// dimensions it returns unknown output dimensions where it must. No
    /// output may hold more than [`MAX_ELEMENTS`](crate::tensor::shape::MAX_ELEMENTS)
    /// elements, so that element counts never overflow (a broadcast can
    /// describe far more elements than memory holds).
    pub fn infer(&self, inputs: &[Meta]) -> Result<Metas> {
        let outputs = self.infer_outputs(inputs)?;
        for m in &outputs {
            if m.shape.is_fully_known() {
                m.shape.checked_numel()?;
            }
        }
        Ok(outputs)
    }

    fn infer_outputs(&self, inputs: &[Meta]) -> Result<Metas> {
        if let Some(n) = self.arity() {
            if inputs.len() != n {
                return Err(Error::invalid(format!("takes {n} inputs, got {}", inputs.len())));
            }
        }
        let one = |m: Meta| -> Result<Metas> { Ok(smallvec::smallvec![m]) };
        match self {
            Op::Const { value } => one(Meta::new(value.0.dtype, value.0.shape().clone())),
            Op::Placeholder { dtype, shape } => one(Meta::new(*dtype, shape.clone())),
            Op::Identity | Op::StopGradient | Op::CopyToDevice { .. } => one(inputs[0].clone()),
            Op::NoOp => Ok(SmallVec::new()),
            Op::Unary { f } => one(f.infer(&inputs[0])?),
            Op::Binary { f } => one(f.infer(&inputs[0], &inputs[1])?),
            Op::Select => one(elementwise::infer_select(inputs)?),
            Op::Cast { dtype } => one(Meta::new(*dtype, inputs[0].shape.clone())),
            Op::Reduce { f, axes, keepdims } => one(reduce::infer_reduce(*f, axes, *keepdims, &inputs[0])?),
            Op::ArgReduce { axis, output, .. } => one(reduce::infer_arg(*axis, *output, &inputs[0])?),
            Op::Scan { axis, .. } => one(reduce::infer_scan(*axis, &inputs[0])?),
            Op::MatMul { transpose_a, transpose_b } => {
                one(linalg::infer_matmul(*transpose_a, *transpose_b, &inputs[0], &inputs[1])?)
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => one(nn::infer_softmax(*axis, &inputs[0])?),
            Op::TopK { k, .. } => nn::infer_top_k(*k, &inputs[0]),
            Op::Host { f } => f.infer(&inputs[0]),
            Op::Collective { c } => c.infer(inputs),
            Op::Linalg { f } => f.infer(inputs),
            Op::Complex { f } => f.infer(inputs),
            Op::Fft { f } => f.infer(&inputs[0]),
            Op::Window { f } => f.infer(inputs),
            Op::Fill { .. }
            | Op::FillLike { .. }
            | Op::Range { .. }
            | Op::Linspace { .. }
            | Op::Eye { .. }
            | Op::Random { .. }
            | Op::RandomLike { .. } => creation::infer(self, inputs),
            Op::Variable { dtype, shape } => one(Meta::new(*dtype, shape.clone())),
            Op::Assign { f } => one(variables::infer_assign(*f, &inputs[0], &inputs[1])?),
            Op::ReadVariable => one(inputs[0].clone()),
            Op::ApplyUpdate { rule } => optim::infer_update(rule, inputs),
            Op::ResourceApplyUpdate { rule } => {
                Err(Error::invalid(format!("{} is made by the graph optimizer only", rule.resource_type_name())))
            }
            Op::FusedElementwise { program } => program.infer(inputs),
            Op::FusedMatMul { transpose_a, transpose_b, activation } => {
                fused::infer_fused_matmul(*transpose_a, *transpose_b, *activation, inputs)
            }
            Op::If { outputs, .. } => Ok(control::infer_branches("If", true, outputs, inputs)?.into()),
            Op::Case { outputs, .. } => Ok(control::infer_branches("Case", false, outputs, inputs)?.into()),
            Op::While { spec } => Ok(control::infer_while(spec, inputs)?.into()),
            movement_ops!() => movement::infer(self, inputs),
        }
    }
}

/// Describe inputs as `f32[2, 3]` for error messages.
pub(crate) fn describe(metas: &[Meta]) -> Vec<String> {
    metas.iter().map(|m| m.to_string()).collect()
}
