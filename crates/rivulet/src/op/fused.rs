//! Fused ops, made by the graph optimizer (never needed by users, but valid
//! ops like any other):
//!
//! - [`FusedProgram`]: a chain or tree of elementwise ops with broadcasting,
//!   optionally ending in a sum/mean/max/min over trailing axes, evaluated
//!   in one pass over memory, cache-sized chunk by chunk;
//! - `FusedMatMul`: matrix product, bias and activation in one kernel.
//!
//! Both compute exactly what their unfused ops compute, in the same order,
//! so results are bitwise identical.

use super::elementwise::{BinaryOp, UnaryOp};
use super::reduce::{reduced_shape, ReduceOp};
use super::{Meta, Metas};
use crate::error::{bail, Result};
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{DType, Scalar, Shape};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;
use std::fmt::Write;

/// One instruction; its result is the register with the instruction's index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instr {
    /// Input tensor `i` of the fused op (broadcast to the program's shape).
    Input(usize),
    /// A constant.
    Scalar(Scalar, DType),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// `cond ? a : b`.
    Select(usize, usize, usize),
    Cast(DType, usize),
}

/// A reduction ending a fused program: over its trailing `axes` (or all).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusedReduce {
    pub f: ReduceOp,
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

/// An elementwise program over broadcast inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusedProgram {
    pub instrs: Vec<Instr>,
    /// The register holding the result.
    pub output: usize,
    pub reduce: Option<FusedReduce>,
}

impl FusedProgram {
    /// Number of tensor inputs the program reads.
    pub fn num_inputs(&self) -> usize {
        self.instrs.iter().filter_map(|i| if let Instr::Input(k) = i { Some(k + 1) } else { None }).max().unwrap_or(0)
    }

    /// Dtype and shape of every register, checked with each op's own inference.
    pub(crate) fn registers(&self, inputs: &[Meta]) -> Result<Vec<Meta>> {
        let mut regs: Vec<Meta> = Vec::with_capacity(self.instrs.len());
        for (i, ins) in self.instrs.iter().enumerate() {
            let get = |r: usize| -> Result<&Meta> {
                if r >= i {
                    bail!(invalid, "fused instruction {i} reads register {r}, which is not computed yet");
                }
                Ok(&regs[r])
            };
            let m = match ins {
                Instr::Input(k) => match inputs.get(*k) {
                    Some(m) => m.clone(),
                    None => bail!(invalid, "fused program reads input {k} of {}", inputs.len()),
                },
                Instr::Scalar(_, dtype) => Meta::new(*dtype, Shape::scalar()),
                Instr::Unary(f, a) => f.infer(get(*a)?)?,
                Instr::Binary(f, a, b) => f.infer(get(*a)?, get(*b)?)?,
                Instr::Select(c, a, b) => {
                    super::elementwise::infer_select(&[get(*c)?.clone(), get(*a)?.clone(), get(*b)?.clone()])?
                }
                Instr::Cast(dtype, a) => Meta::new(*dtype, get(*a)?.shape.clone()),
            };
            if !matches!(m.dtype, DType::F32 | DType::Bool) {
                bail!(dtype, "fused programs compute in f32 and bool, register {i} is {}", m.dtype);
            }
            regs.push(m);
        }
        Ok(regs)
    }

    /// The elementwise (pre-reduction) shape: all inputs broadcast together.
    pub(crate) fn shape(&self, inputs: &[Meta]) -> Result<Shape> {
        let mut s = Shape::scalar();
        for m in inputs {
            s = broadcast_shapes(&s, &m.shape)?;
        }
        if s.is_fully_known() {
            s.checked_numel()?;
        }
        Ok(s)
    }

    pub(crate) fn infer(&self, inputs: &[Meta]) -> Result<Metas> {
        if inputs.len() != self.num_inputs() {
            bail!(invalid, "fused program takes {} inputs, got {}", self.num_inputs(), inputs.len());
        }
        let regs = self.registers(inputs)?;
        let Some(out) = regs.get(self.output) else {
            bail!(invalid, "fused program output register {} does not exist", self.output);
        };
        let shape = self.shape(inputs)?;
        if out.shape != shape && out.shape.is_fully_known() && shape.is_fully_known() {
            bail!(shape, "fused program result {} is not the broadcast shape {shape}", out.shape);
        }
        match &self.reduce {
            None => Ok(smallvec![Meta::new(out.dtype, shape)]),
            Some(r) => {
                if out.dtype != DType::F32
                    || !matches!(r.f, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min)
                {
                    bail!(dtype, "fused reductions are sum, mean, max or min of f32");
                }
                let rank = shape.rank();
                let trailing = r.axes.iter().enumerate().all(|(i, &a)| a == rank - r.axes.len() + i);
                if !trailing {
                    bail!(invalid, "fused reductions run over trailing axes, got {:?} of rank {rank}", r.axes);
                }
                Ok(smallvec![Meta::new(DType::F32, reduced_shape(&shape, &r.axes, r.keepdims))])
            }
        }
    }

    /// One instruction per line, for plan dumps.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, ins) in self.instrs.iter().enumerate() {
            let text = match ins {
                Instr::Input(k) => format!("input {k}"),
                Instr::Scalar(v, d) => format!("{v} as {d}"),
                Instr::Unary(f, a) => format!("{}(r{a})", f.name()),
                Instr::Binary(f, a, b) => format!("{}(r{a}, r{b})", f.name()),
                Instr::Select(c, a, b) => format!("select(r{c}, r{a}, r{b})"),
                Instr::Cast(d, a) => format!("cast(r{a}, {d})"),
            };
            let mark = if i == self.output { "  <- result" } else { "" };
            let _ = writeln!(s, "r{i} = {text}{mark}");
        }
        if let Some(r) = &self.reduce {
            let _ = writeln!(s, "then {} over axes {:?} (keepdims={})", r.f.name(), r.axes, r.keepdims);
        }
        s
    }
}

/// Inference of `FusedMatMul`: a matmul, plus a bias over the last axis.
pub(crate) fn infer_fused_matmul(ta: bool, tb: bool, activation: Option<UnaryOp>, inputs: &[Meta]) -> Result<Metas> {
    if inputs.len() != 3 {
        bail!(invalid, "FusedMatMul takes a, b and a bias, got {} inputs", inputs.len());
    }
    let out = super::linalg::infer_matmul(ta, tb, &inputs[0], &inputs[1])?;
    if out.dtype != DType::F32 {
        bail!(dtype, "FusedMatMul computes in f32, got {}", out.dtype);
    }
    let bias = &inputs[2];
    let n = out.shape.last().copied();
    if bias.dtype != out.dtype
        || bias.shape.rank() != 1
        || (Some(bias.shape[0]) != n && bias.shape[0] != crate::tensor::UNKNOWN)
    {
        bail!(shape, "FusedMatMul needs a bias of shape [{}], got {}{}", n.unwrap_or(0), bias.dtype, bias.shape);
    }
    if let Some(f) = activation {
        f.infer(&out)?;
    }
    Ok(smallvec![out])
}
