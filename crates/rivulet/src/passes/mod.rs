//! Graph optimization passes (Grappler-like), run when a session compiles a
//! plan for a request. Each works on the [`IrGraph`] of that request, keeps
//! results the same (bit for bit: no pass reassociates floating point),
//! except batch-norm folding, which only [`PassOptions::inference`] turns
//! on, and can be switched off in [`PassOptions`].

mod fold;
pub mod ir;
mod licm;
pub(crate) mod placement;
mod rewrite;

pub use ir::{IrEdge, IrGraph, IrNode};
pub(crate) use licm::hoist_loop_invariants;

use crate::error::Result;

/// Which passes run, and their limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// Evaluate nodes whose inputs are all constants, up to `constant_folding_limit` elements.
    pub constant_folding: bool,
    pub constant_folding_limit: usize,
    /// Merge nodes that compute the same op on the same inputs.
    pub common_subexpression_elimination: bool,
    /// `x * 1`, `x + 0`, `x - x` (integers), double transposes, reshape of
    /// reshape, casts to the same dtype, identities.
    pub algebraic_simplification: bool,
    /// Run chains and trees of elementwise ops (with an optional trailing
    /// reduction) as one pass over memory.
    pub elementwise_fusion: bool,
    /// Fold per-channel scales and shifts after a convolution or matmul
    /// (an inference-mode batch normalization) into its kernel. Changes
    /// results by rounding, so only [`PassOptions::inference`] turns it on.
    pub batch_norm_folding: bool,
    /// Matmul or convolution followed by a bias and an activation as one kernel.
    pub matmul_fusion: bool,
    /// Write elementwise results into an input buffer that dies there, and
    /// optimizer updates over the variables' own buffers.
    pub in_place: bool,
    /// Compute what a loop body does not change across iterations once,
    /// before the loop.
    pub loop_invariant_code_motion: bool,
}

impl Default for PassOptions {
    fn default() -> PassOptions {
        PassOptions::all()
    }
}

impl PassOptions {
    /// Every pass on.
    pub fn all() -> PassOptions {
        PassOptions {
            constant_folding: true,
            constant_folding_limit: 1 << 20,
            common_subexpression_elimination: true,
            algebraic_simplification: true,
            batch_norm_folding: false,
            elementwise_fusion: true,
            matmul_fusion: true,
            in_place: true,
            loop_invariant_code_motion: true,
        }
    }
    /// Every pass, and batch-norm folding: for serving a trained model,
    /// where predictions may move by rounding (about 1e-6 relative in f32)
    /// in exchange for a pass less over every activation.
    pub fn inference() -> PassOptions {
        PassOptions { batch_norm_folding: true, ..PassOptions::all() }
    }
    /// Every pass off: the plan runs the graph as written (pruned).
    pub fn none() -> PassOptions {
        PassOptions {
            constant_folding: false,
            constant_folding_limit: 1 << 20,
            common_subexpression_elimination: false,
            algebraic_simplification: false,
            batch_norm_folding: false,
            elementwise_fusion: false,
            matmul_fusion: false,
            in_place: false,
            loop_invariant_code_motion: false,
        }
    }
}

/// The IR after one pass, for dumps and `rivulet inspect`.
#[derive(Clone, Debug)]
pub struct PassDump {
    pub pass: &'static str,
    pub nodes: usize,
    pub text: String,
    pub dot: String,
}

/// Run the enabled passes in order; returns a dump after each (the first is
/// the pruned input).
pub(crate) fn optimize(ir: &mut IrGraph, options: &PassOptions, keep_dumps: bool) -> Result<Vec<PassDump>> {
    let mut dumps = Vec::new();
    let mut dump = |name: &'static str, ir: &IrGraph| {
        if keep_dumps {
            dumps.push(PassDump { pass: name, nodes: ir.live_count(), text: ir.to_text(), dot: ir.to_dot() });
        }
    };
    ir.prune();
    dump("pruning", ir);
    type Pass = fn(&mut IrGraph, &PassOptions) -> Result<()>;
    let passes: [(&'static str, bool, Pass); 8] = [
        ("algebraic_simplification", options.algebraic_simplification, rewrite::simplify),
        ("constant_folding", options.constant_folding, rewrite::fold_constants),
        (
            "common_subexpression_elimination",
            options.common_subexpression_elimination,
            rewrite::eliminate_common_subexpressions,
        ),
        ("batch_norm_folding", options.batch_norm_folding, fold::fold_batch_norm),
        // Again: the folded kernels and shifts of frozen weights are constants.
        ("constant_folding", options.batch_norm_folding && options.constant_folding, rewrite::fold_constants),
        ("matmul_fusion", options.matmul_fusion, rewrite::fuse_matmul),
        ("elementwise_fusion", options.elementwise_fusion, rewrite::fuse_elementwise),
        ("in_place_updates", options.in_place, rewrite::update_in_place),
    ];
    for (name, on, pass) in passes {
        if on {
            pass(ir, options)?;
            ir.prune();
            dump(name, ir);
        }
    }
    // Always: every step needs a device. Shown only where it changes something.
    let copies = placement::place(ir)?;
    if copies > 0 || ir.nodes.iter().any(|n| !n.dead && n.device.is_some_and(|d| d != crate::tensor::Device::CPU)) {
        dump("placement", ir);
    }
    Ok(dumps)
}
