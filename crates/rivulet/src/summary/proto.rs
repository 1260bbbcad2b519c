//! TensorFlow's event-file messages, declared by hand with `prost` derives.
//!
//! Each struct mirrors a message of TensorFlow's `.proto` files (named on
//! each item) with the same field numbers and wire types, but only the
//! fields Rivulet writes or reads; fields a reader does not know are
//! skipped by protobuf decoding, so files written by TensorFlow still
//! decode.

use std::collections::BTreeMap;

/// The `prost` trait that encodes and decodes these messages
/// (`encode_to_vec`, `decode`), re-exported so that users need not depend
/// on `prost` themselves.
pub use prost::Message;

/// `tensorflow.Event` (`tensorflow/core/util/event.proto`): one record of an
/// event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch when the event was written.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The training step the event belongs to.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds.
    #[prost(oneof = "event::What", tags = "3, 4, 5")]
    pub what: Option<event::What>,
}

/// The `oneof what` of [`Event`].
pub mod event {
    /// What an [`Event`](super::Event) holds (the kinds Rivulet writes).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of a file: `"brain.Event:2"`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// A serialized [`GraphDef`](super::GraphDef).
        #[prost(bytes = "vec", tag = "4")]
        GraphDef(Vec<u8>),
        /// Summary values (scalars, histograms, images, tensors).
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary` (`tensorflow/core/framework/summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values, one per tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// The nested messages of [`Summary`].
pub mod summary {
    /// `tensorflow.Summary.Image`: an encoded (PNG) image.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        /// Height in pixels.
        #[prost(int32, tag = "1")]
        pub height: i32,
        /// Width in pixels.
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 1 grayscale, 2 grayscale + alpha, 3 RGB, 4 RGBA.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        /// The image file's bytes.
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }

    /// `tensorflow.Summary.Value`: one tagged value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The name TensorBoard shows and groups by.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// Which plugin reads the value (set for tensor summaries).
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::SummaryMetadata>,
        /// The value itself.
        #[prost(oneof = "value::Value", tags = "2, 4, 5, 8")]
        pub value: Option<value::Value>,
    }

    /// The `oneof value` of [`Value`].
    pub mod value {
        /// The kinds of summary value Rivulet writes.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A scalar (TensorBoard's Scalars).
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// An image (Images).
            #[prost(message, tag = "4")]
            Image(super::Image),
            /// A histogram (Histograms and Distributions).
            #[prost(message, tag = "5")]
            Histo(super::super::HistogramProto),
            /// A tensor read by the plugin named in the metadata (text).
            #[prost(message, tag = "8")]
            Tensor(super::super::TensorProto),
        }
    }
}

/// `tensorflow.HistogramProto` (`summary.proto`): bucket `i` counts the
/// values up to `bucket_limit[i]` and above the previous limit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    /// The smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// The largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// How many values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Their sum.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// The sum of their squares.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Each bucket's right edge.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Each bucket's count.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorflow.SummaryMetadata` (`summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// The plugin that owns the value.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<summary_metadata::PluginData>,
    /// `tensorflow.DataClass`: 1 scalar, 2 tensor, 3 blob sequence.
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// The nested message of [`SummaryMetadata`].
pub mod summary_metadata {
    /// `tensorflow.SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        /// The plugin's name (`"text"`).
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        /// The plugin's own serialized settings.
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }
}

/// `tensorflow.DataType` (`tensorflow/core/framework/types.proto`), the
/// values Rivulet's dtypes map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    /// `DT_INVALID`.
    DtInvalid = 0,
    /// `DT_FLOAT` (f32).
    DtFloat = 1,
    /// `DT_DOUBLE` (f64).
    DtDouble = 2,
    /// `DT_INT32`.
    DtInt32 = 3,
    /// `DT_UINT8`.
    DtUint8 = 4,
    /// `DT_INT16`.
    DtInt16 = 5,
    /// `DT_INT8`.
    DtInt8 = 6,
    /// `DT_STRING` (text summaries).
    DtString = 7,
    /// `DT_COMPLEX64`.
    DtComplex64 = 8,
    /// `DT_INT64`.
    DtInt64 = 9,
    /// `DT_BOOL`.
    DtBool = 10,
    /// `DT_BFLOAT16`.
    DtBfloat16 = 14,
    /// `DT_UINT16`.
    DtUint16 = 17,
    /// `DT_COMPLEX128`.
    DtComplex128 = 18,
    /// `DT_HALF` (f16).
    DtHalf = 19,
    /// `DT_UINT32`.
    DtUint32 = 22,
    /// `DT_UINT64`.
    DtUint64 = 23,
}

/// `tensorflow.TensorShapeProto` (`tensor_shape.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first (none for a scalar).
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    /// The rank itself is unknown.
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// The nested message of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// `tensorflow.TensorShapeProto.Dim`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        /// The size; -1 when unknown.
        #[prost(int64, tag = "1")]
        pub size: i64,
    }
}

/// `tensorflow.TensorProto` (`tensor.proto`), for string tensors.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// A [`DataType`] value.
    #[prost(enumeration = "DataType", tag = "1")]
    pub dtype: i32,
    /// The shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The elements of a `DT_STRING` tensor.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.GraphDef` (`tensorflow/core/framework/graph.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphDef {
    /// The nodes, inputs before their consumers.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeDef>,
}

/// `tensorflow.NodeDef` (`node_def.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeDef {
    /// The node's unique (scoped) name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The op type (`MatMul`).
    #[prost(string, tag = "2")]
    pub op: String,
    /// Data inputs as `node` (output 0) or `node:index`, then control
    /// inputs as `^node`.
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    /// The requested device (`/device:CPU:0`), empty when placed automatically.
    #[prost(string, tag = "4")]
    pub device: String,
    /// Attributes by name.
    #[prost(btree_map = "string, message", tag = "5")]
    pub attr: BTreeMap<String, AttrValue>,
}

/// `tensorflow.AttrValue` (`attr_value.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttrValue {
    /// The attribute's value.
    #[prost(oneof = "attr_value::Value", tags = "1, 2, 6, 7")]
    pub value: Option<attr_value::Value>,
}

/// The nested messages of [`AttrValue`].
pub mod attr_value {
    /// `tensorflow.AttrValue.ListValue` (the shapes list only).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListValue {
        /// A list of shapes (`_output_shapes`).
        #[prost(message, repeated, tag = "7")]
        pub shape: Vec<super::TensorShapeProto>,
    }

    /// The `oneof value` of [`AttrValue`](super::AttrValue).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A list.
        #[prost(message, tag = "1")]
        List(ListValue),
        /// Bytes (a string).
        #[prost(bytes = "vec", tag = "2")]
        S(Vec<u8>),
        /// A [`DataType`](super::DataType) value.
        #[prost(enumeration = "super::DataType", tag = "6")]
        Type(i32),
        /// A shape.
        #[prost(message, tag = "7")]
        Shape(super::TensorShapeProto),
    }
}
