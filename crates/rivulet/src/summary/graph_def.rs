//! A Rivulet graph as TensorFlow's `GraphDef`, for TensorBoard's graph view.

use super::proto::{attr_value, tensor_shape_proto, AttrValue, DataType, GraphDef, NodeDef, TensorShapeProto};
use crate::graph::Graph;
use crate::op::Op;
use crate::tensor::{DType, Shape, UNKNOWN};

/// TensorFlow's `DataType` for a dtype.
pub fn data_type(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::DtFloat,
        DType::F64 => DataType::DtDouble,
        DType::F16 => DataType::DtHalf,
        DType::BF16 => DataType::DtBfloat16,
        DType::I8 => DataType::DtInt8,
        DType::I16 => DataType::DtInt16,
        DType::I32 => DataType::DtInt32,
        DType::I64 => DataType::DtInt64,
        DType::U8 => DataType::DtUint8,
        DType::U16 => DataType::DtUint16,
        DType::U32 => DataType::DtUint32,
        DType::U64 => DataType::DtUint64,
        DType::Bool => DataType::DtBool,
        DType::C64 => DataType::DtComplex64,
        DType::C128 => DataType::DtComplex128,
    }
}

/// A shape as `TensorShapeProto` (unknown dimensions as -1).
pub fn shape_proto(shape: &Shape) -> TensorShapeProto {
    let dim = shape
        .dims()
        .iter()
        .map(|&d| tensor_shape_proto::Dim { size: if d == UNKNOWN { -1 } else { i64::try_from(d).unwrap_or(-1) } })
        .collect();
    TensorShapeProto { dim, unknown_rank: false }
}

/// The graph's nodes as a `GraphDef`, in creation (topological) order:
/// name, op type, inputs (`node` for output 0 and `node:i` for the others,
/// then control inputs as `^node`, as TensorFlow writes them), the device
/// asked for, and the attributes `dtype` (the first output's),
/// `_output_shapes` (which TensorBoard shows on edges), `shape` for
/// placeholders and variables, and `_location` (the source line that
/// created the node). The bodies of control-flow ops are not included.
pub fn graph_def(graph: &Graph) -> GraphDef {
    let nodes = graph.nodes();
    let name = |id: usize| nodes.get(id).map(|n| n.name.as_str()).unwrap_or("?");
    let node = nodes
        .iter()
        .map(|n| {
            let mut input: Vec<String> = n
                .inputs
                .iter()
                .map(|e| if e.index == 0 { name(e.node).to_string() } else { format!("{}:{}", name(e.node), e.index) })
                .collect();
            input.extend(n.control_inputs.iter().map(|&c| format!("^{}", name(c))));
            let mut attr = std::collections::BTreeMap::new();
            let value = |v: attr_value::Value| AttrValue { value: Some(v) };
            if let Some(first) = n.outputs.first() {
                attr.insert("dtype".to_string(), value(attr_value::Value::Type(data_type(first.dtype) as i32)));
            }
            let shapes = n.outputs.iter().map(|m| shape_proto(&m.shape)).collect();
            attr.insert(
                "_output_shapes".to_string(),
                value(attr_value::Value::List(attr_value::ListValue { shape: shapes })),
            );
            if let Op::Placeholder { shape, .. } | Op::Variable { shape, .. } = &n.op {
                attr.insert("shape".to_string(), value(attr_value::Value::Shape(shape_proto(shape))));
            }
            attr.insert("_location".to_string(), value(attr_value::Value::S(n.location.clone().into_bytes())));
            NodeDef {
                name: n.name.clone(),
                op: n.op.type_name().to_string(),
                input,
                device: n.device.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                attr,
            }
        })
        .collect();
    GraphDef { node }
}
