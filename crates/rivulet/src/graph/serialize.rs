//! A versioned JSON form of a graph that round-trips exactly.
//!
//! Constants are stored as base64 of their little-endian bytes, so every bit
//! (NaN payloads included) survives. Loading treats the text as untrusted:
//! it checks the format and version, that inputs refer to earlier nodes and
//! existing outputs, that constants have the bytes their shape needs, and it
//! re-runs shape inference and compares with the stored output types.

use super::{Edge, Graph, Node};
use crate::error::{Error, Result};
use crate::op::{ConstValue, Meta, Op};
use crate::tensor::{DType, Device, Shape, Value};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `format` field of a serialized graph.
pub const FORMAT: &str = "rivulet.graph";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct GraphDoc {
    format: String,
    version: u32,
    nodes: Vec<NodeDoc>,
}

#[derive(Serialize, Deserialize)]
struct NodeDoc {
    name: String,
    op: Op,
    inputs: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    control_inputs: Vec<usize>,
    location: String,
    outputs: Vec<Meta>,
    /// The device asked for, as TensorFlow names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
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
        let s = self.read();
        let doc = GraphDoc {
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
        };
        // Serializing a constant may copy it with parallel kernels: not
        // while the graph's lock is held.
        drop(s);
        serde_json::to_string(&doc).map_err(|e| Error::format(format!("cannot serialize the graph: {e}")))
    }

    /// Load a graph written by [`Graph::to_json`], checking it thoroughly.
    pub fn from_json(text: &str) -> Result<Graph> {
        let doc: GraphDoc =
            serde_json::from_str(text).map_err(|e| Error::format(format!("not a rivulet graph: {e}")))?;
        if doc.format != FORMAT {
            return Err(Error::format(format!("format is '{}', expected '{FORMAT}'", doc.format)));
        }
        if doc.version != VERSION {
            return Err(Error::format(format!(
                "graph version {} is not supported (this build reads {VERSION})",
                doc.version
            )));
        }
        let g = Graph::new();
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
        Ok(g)
    }
}
