//! A versioned JSON form of a graph that round-trips exactly.
//!
//! Constants are stored as base64 of their little-endian bytes, so every bit
//! (NaN payloads included) survives. Loading treats the text as untrusted:
//! it checks the format and version, that inputs refer to earlier nodes and
//! existing outputs, that constants have the bytes their shape needs, and it
//! re-runs shape inference and compares with the stored output types.
//!
//! Version 2 adds the function library (control-flow branches and bodies,
//! each a graph document of its own, recursively) and the variable aliases
//! of function graphs; version 1 documents still load.

use super::{Edge, Function, Graph, Node};
use crate::error::{Error, Result};
use crate::op::{ConstValue, Meta, Op};
use crate::tensor::{DType, Device, Shape, Value};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `format` field of a serialized graph.
pub const FORMAT: &str = "rivulet.graph";
/// The version this build writes and reads.
pub const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
pub(super) struct GraphDoc {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) nodes: Vec<NodeDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) functions: Vec<FunctionDoc>,
    /// Stand-in variable nodes and the outermost graph's variable each stands for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) aliases: Vec<(usize, usize)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct FunctionDoc {
    pub(super) name: String,
    pub(super) graph: Box<GraphDoc>,
    pub(super) inputs: Vec<Edge>,
    pub(super) outputs: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) effects: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) variable_inputs: Vec<(usize, usize)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct NodeDoc {
    pub(super) name: String,
    pub(super) op: Op,
    pub(super) inputs: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) control_inputs: Vec<usize>,
    pub(super) location: String,
    pub(super) outputs: Vec<Meta>,
    /// The device asked for, as TensorFlow names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct TensorDoc {
    dtype: DType,
    shape: Shape,
    data: String,
}

impl Serialize for ConstValue {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let t = &self.0;
        let bytes = t.to_le_bytes().map_err(serde::ser::Error::custom)?;
        TensorDoc {
            dtype: t.dtype,
            shape: t.shape().clone(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ConstValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ConstValue, D::Error> {
        let doc = TensorDoc::deserialize(d)?;
        value_from_bytes(doc).map(ConstValue).map_err(serde::de::Error::custom)
    }
}

fn value_from_bytes(doc: TensorDoc) -> Result<Value> {
    let n = doc.shape.checked_numel()?;
    let expected = n.checked_mul(doc.dtype.size()).ok_or_else(|| Error::format("constant too large"))?;
    // base64 expands by 4/3: refuse before decoding anything absurd.
    if doc.data.len() / 4 * 3 > expected + 3 {
        return Err(Error::format(format!("constant data is longer than {} needs", doc.shape)));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(doc.data.as_bytes())
        .map_err(|e| Error::format(format!("constant data is not base64: {e}")))?;
    if bytes.len() != expected {
        return Err(Error::format(format!(
            "constant of shape {} and dtype {} needs {expected} bytes, found {}",
            doc.shape,
            doc.dtype,
            bytes.len()
        )));
    }
    Value::from_le_bytes(doc.dtype, doc.shape, &bytes)
}

impl Graph {
    /// The graph as versioned JSON (`{"format": "rivulet.graph", "version": 1, ...}`).
    pub fn to_json(&self) -> Result<String> {
        let doc = self.to_doc();
        serde_json::to_string(&doc).map_err(|e| Error::format(format!("cannot serialize the graph: {e}")))
    }

    pub(super) fn to_doc(&self) -> GraphDoc {
        let s = self.read();
        let functions = s.functions.clone();
        let mut aliases: Vec<(usize, usize)> = s.aliases.iter().map(|(&a, &b)| (a, b)).collect();
        aliases.sort_unstable();
        let mut doc = GraphDoc {
            format: FORMAT.to_string(),
            version: VERSION,
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeDoc {
                    name: n.name.clone(),
                    op: n.op.clone(),
                    inputs: n.inputs.clone(),
                    control_inputs: n.control_inputs.clone(),
                    location: n.location.clone(),
                    outputs: n.outputs.to_vec(),
                    device: n.device.map(|d| d.to_string()),
                })
                .collect(),
            functions: Vec::new(),
            aliases,
        };
        // Serializing a constant may copy it with parallel kernels: not
        // while the graph's lock is held.
        drop(s);
        doc.functions = functions
            .iter()
            .map(|f| FunctionDoc {
                name: f.name.clone(),
                graph: Box::new(f.graph.to_doc()),
                inputs: f.inputs.clone(),
                outputs: f.outputs.clone(),
                effects: f.effects.clone(),
                variable_inputs: f.variable_inputs.clone(),
            })
            .collect();
        doc
    }

    /// Load a graph written by [`Graph::to_json`], checking it thoroughly.
    pub fn from_json(text: &str) -> Result<Graph> {
        let doc: GraphDoc =
            serde_json::from_str(text).map_err(|e| Error::format(format!("not a rivulet graph: {e}")))?;
        if doc.format != FORMAT {
            return Err(Error::format(format!("format is '{}', expected '{FORMAT}'", doc.format)));
        }
        if !(1..=VERSION).contains(&doc.version) {
            return Err(Error::format(format!(
                "graph version {} is not supported (this build reads 1 to {VERSION})",
                doc.version
            )));
        }
        let g = Graph::from_doc(doc)?;
        // Every alias, at any depth, names a variable of this outermost graph.
        check_aliases(&g, &g)?;
        Ok(g)
    }

    pub(super) fn from_doc(doc: GraphDoc) -> Result<Graph> {
        let g = Graph::new();
        for f in doc.functions {
            let fg = Graph::from_doc(*f.graph)?;
            let check_edge = |e: &Edge, what: &str| -> Result<()> {
                match fg.node(e.node) {
                    Some(n) if e.index < n.outputs.len() => Ok(()),
                    _ => Err(Error::format(format!("function '{}': {what} {e:?} does not exist", f.name))),
                }
            };
            for e in &f.inputs {
                check_edge(e, "input")?;
                if !matches!(fg.node(e.node).map(|n| n.op), Some(Op::Placeholder { .. })) {
                    return Err(Error::format(format!("function '{}': input {e:?} is not a placeholder", f.name)));
                }
            }
            for e in &f.outputs {
                check_edge(e, "output")?;
            }
            if let Some(&bad) = f.effects.iter().find(|&&n| n >= fg.num_nodes()) {
                return Err(Error::format(format!("function '{}': effect node {bad} does not exist", f.name)));
            }
            for &(input, node) in &f.variable_inputs {
                if input >= f.inputs.len() || !matches!(fg.node(node).map(|n| n.op), Some(Op::Variable { .. })) {
                    return Err(Error::format(format!("function '{}': bad variable input ({input}, {node})", f.name)));
                }
            }
            g.add_function(Function {
                name: f.name,
                graph: fg,
                inputs: f.inputs,
                outputs: f.outputs,
                effects: f.effects,
                variable_inputs: f.variable_inputs,
            })?;
        }
        for (id, n) in doc.nodes.into_iter().enumerate() {
            let mut metas = Vec::with_capacity(n.inputs.len());
            for e in &n.inputs {
                let producer = g.read().nodes.get(e.node).map(|p| p.outputs.get(e.index).cloned());
                match producer {
                    Some(Some(m)) if e.node < id => metas.push(m),
                    _ => {
                        return Err(Error::format(format!(
                            "node '{}' reads output {} of node {}, which does not precede it or has no such output",
                            n.name, e.index, e.node
                        )))
                    }
                }
            }
            if let Some(&c) = n.control_inputs.iter().find(|&&c| c >= id) {
                return Err(Error::format(format!(
                    "node '{}' has a control input {c} that does not precede it",
                    n.name
                )));
            }
            if n.name.is_empty() || n.name.contains(':') {
                return Err(Error::format(format!("invalid node name '{}'", n.name)));
            }
            let outputs = n.op.infer(&metas).map_err(|e| {
                Error::format(format!("node '{}' ({}) does not type-check: {}", n.name, n.op.type_name(), e.message()))
            })?;
            if outputs.as_slice() != n.outputs.as_slice() {
                return Err(Error::format(format!("node '{}': stored output types disagree with inference", n.name)));
            }
            let device = match &n.device {
                Some(d) => {
                    Some(Device::parse(d).map_err(|e| Error::format(format!("node '{}': {}", n.name, e.message())))?)
                }
                None => None,
            };
            g.push_checked(Node {
                op: n.op,
                inputs: n.inputs,
                control_inputs: n.control_inputs,
                name: n.name,
                location: n.location,
                outputs,
                device,
            })?;
        }
        for (node, root) in doc.aliases {
            if !matches!(g.node(node).map(|n| n.op), Some(Op::Variable { .. })) {
                return Err(Error::format(format!("alias of node {node}, which is not a variable")));
            }
            g.set_variable_alias(node, root);
        }
        for n in g.read().nodes.iter() {
            check_calls(&g, n)?;
        }
        Ok(g)
    }
}

/// A control-flow node's functions exist and take and return what the node passes and expects.
fn check_calls(g: &Graph, n: &Node) -> Result<()> {
    let bad = |why: String| Error::format(format!("node '{}' ({}): {why}", n.name, n.op.type_name()));
    let arity = |id: u32, inputs: usize, outputs: usize| -> Result<()> {
        let f = g.function(id).map_err(|e| bad(e.message().to_string()))?;
        if f.inputs.len() != inputs || f.outputs.len() != outputs {
            return Err(bad(format!(
                "function '{}' takes {} and returns {}, the node passes {inputs} and expects {outputs}",
                f.name,
                f.inputs.len(),
                f.outputs.len()
            )));
        }
        Ok(())
    };
    let args = n.inputs.len().saturating_sub(1);
    match &n.op {
        Op::If { then_branch, else_branch, outputs } => {
            arity(*then_branch, args, outputs.len())?;
            arity(*else_branch, args, outputs.len())
        }
        Op::Case { branches, outputs } => {
            if branches.is_empty() {
                return Err(bad("no branches".into()));
            }
            branches.iter().try_for_each(|&b| arity(b, args, outputs.len()))
        }
        Op::While { spec } => {
            arity(spec.cond, n.inputs.len(), 1)?;
            arity(spec.body, n.inputs.len(), spec.vars.len())
        }
        _ => Ok(()),
    }
}

/// Every variable node of `g`'s function graphs (recursively) stands for a
/// variable of `root` of the same dtype and shape.
pub(super) fn check_aliases(g: &Graph, root: &Graph) -> Result<()> {
    for f in g.functions() {
        let stand_ins: Vec<(usize, Option<usize>, Op)> = {
            let s = f.graph.read();
            s.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| matches!(n.op, Op::Variable { .. }))
                .map(|(id, n)| (id, s.aliases.get(&id).copied(), n.op.clone()))
                .collect()
        };
        for (id, alias, op) in stand_ins {
            let target = alias.and_then(|a| root.node(a)).map(|n| n.op);
            if target.as_ref() != Some(&op) {
                return Err(Error::format(format!(
                    "function '{}': variable node {id} does not stand for a variable of the graph of its type",
                    f.name
                )));
            }
        }
        check_aliases(&f.graph, root)?;
    }
    Ok(())
}
