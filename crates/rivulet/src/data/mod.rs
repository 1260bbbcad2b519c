//! Data: `tf.data`-style input pipelines ([`Dataset`]), the sources that
//! read files into them, and the bundled handwritten-digits set.

mod digits;
mod element;

pub use digits::{load_digits, Digits, DIGITS_EXAMPLES, DIGITS_TEST};
pub use element::{Element, Field, Strings};
mod cache;
mod dataset;
mod transform;

pub use dataset::{Cardinality, Dataset, Iter};
mod csv;

pub use self::csv::{ColumnType, Compression, CsvColumn, CsvOptions, DefaultValue};
mod columnar;
mod files;
