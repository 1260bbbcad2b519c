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
    /// Register `operand` padded with `value`: `(before, after)` elements
    /// per dimension, as the `Pad` op in constant mode. The operand and
    /// everything it reads live in the unpadded index space (see
    /// [`FusedProgram::spaces`]); the kernel evaluates them only where the
    /// result is not padding.
    Pad {
        operand: usize,
        pads: Vec<(usize, usize)>,
        value: Scalar,
    },
}

impl Instr {
    /// The instruction reading register `f(r)` wherever it reads `r`.
    pub(crate) fn map_registers(&self, f: impl Fn(usize) -> usize) -> Instr {
        match self {
            Instr::Input(_) | Instr::Scalar(..) => self.clone(),
            Instr::Unary(g, a) => Instr::Unary(*g, f(*a)),
            Instr::Cast(d, a) => Instr::Cast(*d, f(*a)),
            Instr::Binary(g, a, b) => Instr::Binary(*g, f(*a), f(*b)),
            Instr::Select(c, a, b) => Instr::Select(f(*c), f(*a), f(*b)),
            Instr::Pad { operand, pads, value } => {
                Instr::Pad { operand: f(*operand), pads: pads.clone(), value: *value }
            }
        }
    }

    /// The registers this instruction reads.
    pub(crate) fn operands(&self) -> smallvec::SmallVec<[usize; 3]> {
        match self {
            Instr::Input(_) | Instr::Scalar(..) => smallvec![],
            Instr::Unary(_, a) | Instr::Cast(_, a) | Instr::Pad { operand: a, .. } => smallvec![*a],
            Instr::Binary(_, a, b) => smallvec![*a, *b],
            Instr::Select(c, a, b) => smallvec![*c, *a, *b],
        }
    }
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
                Instr::Pad { operand, pads, .. } => {
                    let m = get(*operand)?;
                    if pads.len() != m.shape.rank() || m.shape.rank() == 0 {
                        bail!(shape, "fused pad of {} dimensions for a register of shape {}", pads.len(), m.shape);
                    }
                    let dims: Vec<usize> = m
                        .shape
                        .iter()
                        .zip(pads)
                        .map(|(&d, &(lo, hi))| {
                            if d == crate::tensor::UNKNOWN {
                                Ok(d)
                            } else {
                                d.checked_add(lo).and_then(|v| v.checked_add(hi)).ok_or_else(|| {
                                    crate::error::Error::shape(format!("fused pad of {} overflows", m.shape))
                                })
                            }
                        })
                        .collect::<Result<_>>()?;
                    Meta::new(m.dtype, Shape::from(dims))
                }
            };
            if !matches!(m.dtype, DType::F32 | DType::Bool) {
                bail!(dtype, "fused programs compute in f32 and bool, register {i} is {}", m.dtype);
            }
            regs.push(m);
        }
        Ok(regs)
    }

    /// Whether the program pads a register (then its inputs live in more
    /// than one index space).
    pub fn has_pads(&self) -> bool {
        self.instrs.iter().any(|i| matches!(i, Instr::Pad { .. }))
    }

    /// The index space of every register: `None` for the program's own
    /// (the result's) space, `Some(p)` for the unpadded space of the `Pad`
    /// instruction `p`, which is what its operand and everything that feeds
    /// it are computed in. Literals belong to every space (reported as
    /// `None`), as do registers the result does not depend on. A register
    /// read in two spaces, and a pad inside a pad, are errors.
    pub(crate) fn spaces(&self) -> Result<Vec<Option<usize>>> {
        let n = self.instrs.len();
        let mut space: Vec<Option<Option<usize>>> = vec![None; n];
        if let Some(s) = space.get_mut(self.output) {
            *s = Some(None);
        }
        for i in (0..n).rev() {
            let Some(here) = space[i] else { continue };
            let ins = &self.instrs[i];
            let there = match ins {
                Instr::Pad { .. } if here.is_some() => bail!(invalid, "fused pad {i} is inside another pad"),
                Instr::Pad { .. } => Some(i),
                _ => here,
            };
            for r in ins.operands() {
                if r >= i {
                    bail!(invalid, "fused instruction {i} reads register {r}, which is not computed yet");
                }
                if matches!(self.instrs[r], Instr::Scalar(..)) {
                    continue;
                }
                match space[r] {
                    Some(s) if s != there => {
                        bail!(invalid, "fused register {r} is read both inside and outside a padded region")
                    }
                    _ => space[r] = Some(there),
                }
            }
        }
        Ok(space.into_iter().map(Option::flatten).collect())
    }

    /// The elementwise (pre-reduction) shape: all inputs broadcast together,
    /// where inputs read under a pad count with the pad's result shape.
    pub(crate) fn shape(&self, inputs: &[Meta]) -> Result<Shape> {
        let mut s = Shape::scalar();
        if self.has_pads() {
            let (regs, spaces) = (self.registers(inputs)?, self.spaces()?);
            for (i, ins) in self.instrs.iter().enumerate() {
                let outer = spaces[i].is_none();
                if matches!(ins, Instr::Pad { .. }) || (outer && matches!(ins, Instr::Input(_))) {
                    s = broadcast_shapes(&s, &regs[i].shape)?;
                }
            }
            if s.is_fully_known() {
                s.checked_numel()?;
            }
            return Ok(s);
        }
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
        if self.has_pads() {
            self.spaces()?;
            if self.reduce.is_some() {
                bail!(invalid, "fused programs with padding end without a reduction");
            }
        }
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
                Instr::Pad { operand, pads, value } => format!("pad(r{operand}, {pads:?}, {value})"),
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

impl FusedProgram {
    /// The program where each pad is known to be inside its unpadded
    /// region (`inside(p)` for the `Pad` instruction `p`: the pad is its
    /// operand, a no-op cast) or outside it (the pad's value), with what
    /// the result no longer reads replaced by literals. Register numbers
    /// and dtypes are kept, so `regs` (the original program's) still
    /// describe it.
    pub(crate) fn specialize(&self, regs: &[Meta], inside: impl Fn(usize) -> bool) -> FusedProgram {
        let mut instrs: Vec<Instr> = self
            .instrs
            .iter()
            .enumerate()
            .map(|(i, ins)| match ins {
                Instr::Pad { operand, .. } if inside(i) => Instr::Cast(regs[i].dtype, *operand),
                Instr::Pad { value, .. } => Instr::Scalar(*value, regs[i].dtype),
                other => other.clone(),
            })
            .collect();
        let mut live = vec![false; instrs.len()];
        if let Some(l) = live.get_mut(self.output) {
            *l = true;
        }
        for i in (0..instrs.len()).rev() {
            if live[i] {
                for r in instrs[i].operands() {
                    live[r] = true;
                }
            }
        }
        for (i, ins) in instrs.iter_mut().enumerate() {
            if !live[i] {
                let zero = if regs[i].dtype == DType::Bool { Scalar::Bool(false) } else { Scalar::F64(0.0) };
                *ins = Instr::Scalar(zero, regs[i].dtype);
            }
        }
        FusedProgram { instrs, output: self.output, reduce: self.reduce.clone() }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize]) -> Meta {
        Meta::new(DType::F32, Shape::from(shape.to_vec()))
    }

    #[test]
    fn a_pad_puts_what_it_reads_in_its_own_index_space() -> Result<()> {
        // r3 = x + pad(exp(y)): y is read in the pad's space, x in the program's.
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(1),
                Instr::Unary(UnaryOp::Exp, 0),
                Instr::Pad { operand: 1, pads: vec![(1, 2)], value: Scalar::F64(-1.0) },
                Instr::Input(0),
                Instr::Binary(BinaryOp::Add, 3, 2),
            ],
            output: 4,
            reduce: None,
        };
        assert_eq!(program.spaces()?, vec![Some(2), Some(2), None, None, None]);
        let metas = [f32s(&[7]), f32s(&[4])];
        assert_eq!(program.shape(&metas)?, Shape::from(vec![7]));
        assert_eq!(program.infer(&metas)?[0], f32s(&[7]));
        assert!(program.describe().contains("pad(r1, [(1, 2)], -1)"), "{}", program.describe());
        // Inside: the pad is its operand; outside: its value, the rest dead.
        let regs = program.registers(&metas)?;
        let inside = program.specialize(&regs, |_| true);
        assert_eq!(inside.instrs[2], Instr::Cast(DType::F32, 1));
        let outside = program.specialize(&regs, |_| false);
        assert_eq!(outside.instrs[2], Instr::Scalar(Scalar::F64(-1.0), DType::F32));
        assert!(matches!(outside.instrs[0], Instr::Scalar(..)) && matches!(outside.instrs[1], Instr::Scalar(..)));
        assert_eq!(outside.instrs[3], Instr::Input(0));

        // A register read both inside and outside the pad.
        let mut shared = program.clone();
        shared.instrs[4] = Instr::Binary(BinaryOp::Add, 1, 2);
        assert!(shared.infer(&metas).is_err());
        let e = shared.spaces().unwrap_err();
        assert!(e.to_string().contains("both inside and outside"), "{e}");
        // A pad inside a pad, a pad of the wrong rank, a pad before a reduction.
        let mut nested = program.clone();
        nested.instrs[1] = Instr::Pad { operand: 0, pads: vec![(0, 0)], value: Scalar::F64(0.0) };
        assert!(nested.infer(&metas).unwrap_err().to_string().contains("inside another pad"));
        let mut rank = program.clone();
        rank.instrs[2] = Instr::Pad { operand: 1, pads: vec![(1, 2), (0, 0)], value: Scalar::F64(0.0) };
        assert!(rank.infer(&metas).is_err());
        let mut reduced = program.clone();
        reduced.reduce = Some(FusedReduce { f: ReduceOp::Sum, axes: vec![0], keepdims: false });
        assert!(reduced.infer(&metas).unwrap_err().to_string().contains("without a reduction"));
        Ok(())
    }
}
