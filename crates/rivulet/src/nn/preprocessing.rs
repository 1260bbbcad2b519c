//! Keras's preprocessing layers: `Normalization` (with `adapt`),
//! `StringLookup` and `IntegerLookup` (vocabularies with out-of-vocabulary
//! buckets), `CategoryEncoding`, `Discretization` and `Hashing`.
//!
//! `Normalization`, `CategoryEncoding` and `Discretization` are layers of
//! graph ops (they go into a `Sequential`). The lookups and `Hashing` map
//! strings or integers through a table or a hash on the host: they run in
//! the input pipeline (`Dataset::map`), where Keras also recommends them
//! for `tf.data`, since graph tensors hold no strings here. Hashing is
//! TensorFlow's: FarmHash's Fingerprint64 modulo the bins
//! (`tf.strings.to_hash_bucket_fast`), integers hashed as their decimal text.

use super::layers::{unique_name, Layer};
use crate::data::{Dataset, Field, Strings};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::ops::{self, Variable};
use crate::tensor::{DType, Shape};
use std::collections::HashMap;
use std::hash::Hash;

/// The values of a field as f64 rows of `width` features (the last axis), for `adapt`.
fn feature_rows(t: &Tensor) -> Result<(Vec<f64>, usize)> {
    let width = t.shape().dims().last().copied().unwrap_or(1).max(1);
    let v = ops::cast(t, DType::F64)?.to_vec::<f64>()?;
    Ok((v, width))
}

/// Features standardized with a mean and variance per feature (the last
/// axis), learned by [`adapt`](Normalization::adapt) or given:
/// `(x - mean) / max(sqrt(variance), 1e-7)` (`keras.layers.Normalization`).
pub struct Normalization {
    name: String,
    mean: Option<Vec<f64>>,
    variance: Option<Vec<f64>>,
    invert: bool,
}

impl Default for Normalization {
    fn default() -> Normalization {
        Normalization::new()
    }
}

impl Normalization {
    /// A layer to `adapt` before use.
    pub fn new() -> Normalization {
        Normalization { name: unique_name("normalization"), mean: None, variance: None, invert: false }
    }
    /// A layer with a fixed mean and variance per feature.
    pub fn with_stats(mean: Vec<f64>, variance: Vec<f64>) -> Result<Normalization> {
        if mean.len() != variance.len() || mean.is_empty() {
            bail!(shape, "Normalization: {} means and {} variances", mean.len(), variance.len());
        }
        if variance.iter().any(|v| v.is_nan() || *v < 0.0) {
            bail!(invalid, "Normalization: a variance is negative or NaN");
        }
        Ok(Normalization { mean: Some(mean), variance: Some(variance), ..Normalization::new() })
    }
    /// Map normalized values back: `mean + x · max(sqrt(variance), 1e-7)`.
    pub fn inverted(mut self) -> Normalization {
        self.invert = true;
        self
    }
    /// The mean and (population) variance per feature over every row of
    /// the dataset's first field (batches or single rows), in f64 with
    /// Chan's pairwise update: one pass, bounded memory.
    pub fn adapt(&mut self, data: &Dataset) -> Result<()> {
        let mut stats: Option<(f64, Vec<f64>, Vec<f64>)> = None;
        for e in data {
            let e = e?;
            let (values, width) = feature_rows(e.tensor(0)?)?;
            let (count, mean, m2) = stats.get_or_insert_with(|| (0.0, vec![0.0; width], vec![0.0; width]));
            if mean.len() != width {
                bail!(shape, "Normalization.adapt: rows of {width} features after rows of {}", mean.len());
            }
            let n = (values.len() / width) as f64;
            if n == 0.0 {
                continue;
            }
            for j in 0..width {
                let col = values.iter().skip(j).step_by(width);
                let bm = col.clone().sum::<f64>() / n;
                let bm2: f64 = col.map(|v| (v - bm) * (v - bm)).sum();
                let total = *count + n;
                let delta = bm - mean[j];
                mean[j] += delta * n / total;
                m2[j] += bm2 + delta * delta * *count * n / total;
            }
            *count += n;
        }
        let Some((count, mean, m2)) = stats.filter(|s| s.0 > 0.0) else {
            bail!(invalid, "Normalization.adapt: the data has no rows");
        };
        self.variance = Some(m2.iter().map(|v| v / count).collect());
        self.mean = Some(mean);
        Ok(())
    }
    /// `adapt` on the rows of one tensor.
    pub fn adapt_tensor(&mut self, x: &Tensor) -> Result<()> {
        self.adapt(&Dataset::from_tensors(x.clone())?)
    }
    pub fn mean(&self) -> Option<&[f64]> {
        self.mean.as_deref()
    }
    pub fn variance(&self) -> Option<&[f64]> {
        self.variance.as_deref()
    }
}

impl Layer for Normalization {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let (Some(mean), Some(var)) = (&self.mean, &self.variance) else {
            bail!(precondition, "Normalization '{}': call adapt() or give the statistics first", self.name);
        };
        let dt = if x.dtype().is_float() { x.dtype() } else { DType::F32 };
        let x = if x.dtype() == dt { x.clone() } else { ops::cast(x, dt)? };
        if x.shape().dims().last() != Some(&mean.len()) {
            bail!(shape, "Normalization '{}': input {} does not end in {} features", self.name, x.shape(), mean.len());
        }
        let m = ops::cast(&Tensor::from_slice(mean, Shape::new(&[mean.len()]))?, dt)?;
        let sd: Vec<f64> = var.iter().map(|v| v.sqrt().max(1e-7)).collect();
        let sd = ops::cast(&Tensor::from_slice(&sd, Shape::new(&[sd.len()]))?, dt)?;
        if self.invert {
            ops::add(&m, &ops::mul(&x, &sd)?)
        } else {
            ops::div(&ops::sub(&x, &m)?, &sd)
        }
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Normalization".into()
    }
}

/// TensorFlow's `to_hash_bucket_fast`: Fingerprint64 of the bytes modulo `bins`.
pub fn hash_bucket(bytes: &[u8], bins: u64) -> i64 {
    (farmhash::fingerprint64(bytes) % bins) as i64
}

/// A vocabulary: tokens by index, and the layout of Keras's lookups
/// (mask token, then the out-of-vocabulary buckets, then the tokens).
#[derive(Clone, Debug)]
struct Vocab<K> {
    tokens: Vec<K>,
    index: HashMap<K, i64>,
    num_oov: usize,
    has_mask: bool,
}

impl<K: Hash + Eq + Clone + Ord> Vocab<K> {
    fn new(num_oov: usize, has_mask: bool) -> Vocab<K> {
        Vocab { tokens: Vec::new(), index: HashMap::new(), num_oov, has_mask }
    }
    fn first_token_index(&self) -> i64 {
        self.num_oov as i64 + i64::from(self.has_mask)
    }
    fn set(&mut self, tokens: Vec<K>) -> Result<()> {
        let start = self.first_token_index();
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if index.insert(t.clone(), start + i as i64).is_some() {
                bail!(invalid, "the vocabulary holds a token twice");
            }
        }
        self.tokens = tokens;
        self.index = index;
        Ok(())
    }
    /// The most frequent tokens first, at most `max` of them. Ties go in
    /// descending token order, as Keras's lexsort-then-reverse does.
    fn learn(&mut self, counts: HashMap<K, u64>, max: Option<usize>) -> Result<()> {
        let mut v: Vec<(K, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        let keep = max.map_or(v.len(), |m| m.saturating_sub(self.first_token_index() as usize).min(v.len()));
        self.set(v.into_iter().take(keep).map(|(k, _)| k).collect())
    }
    fn lookup(&self, k: &K, oov_hash: impl Fn(&K) -> u64) -> i64 {
        match self.index.get(k) {
            Some(&i) => i,
            None if self.num_oov == 0 => -1,
            None if self.num_oov == 1 => i64::from(self.has_mask),
            None => i64::from(self.has_mask) + (oov_hash(k) % self.num_oov as u64) as i64,
        }
    }
    fn size(&self) -> usize {
        self.tokens.len() + self.first_token_index() as usize
    }
}

/// Strings to integer indices through a vocabulary (`keras.layers.StringLookup`):
/// index 0 is the mask token when there is one, then `num_oov_indices`
/// out-of-vocabulary indices (`[UNK]`), then the vocabulary, most frequent
/// token first after [`adapt`](StringLookup::adapt).
#[derive(Clone, Debug)]
pub struct StringLookup {
    vocab: Vocab<String>,
    mask_token: Option<String>,
    max_tokens: Option<usize>,
}

impl Default for StringLookup {
    fn default() -> StringLookup {
        StringLookup::new(1, None)
    }
}

impl StringLookup {
    /// An empty lookup to `adapt`, with `num_oov_indices` buckets and an optional mask token.
    pub fn new(num_oov_indices: usize, mask_token: Option<&str>) -> StringLookup {
        StringLookup {
            vocab: Vocab::new(num_oov_indices, mask_token.is_some()),
            mask_token: mask_token.map(str::to_string),
            max_tokens: None,
        }
    }
    /// A lookup over a given vocabulary.
    pub fn with_vocabulary<S: Into<String>>(mut self, tokens: impl IntoIterator<Item = S>) -> Result<StringLookup> {
        self.vocab.set(tokens.into_iter().map(Into::into).collect())?;
        Ok(self)
    }
    /// Keep at most `max_tokens` indices in all (mask and OOV included), as Keras counts them.
    pub fn max_tokens(mut self, max_tokens: usize) -> StringLookup {
        self.max_tokens = Some(max_tokens);
        self
    }
    /// Learn the vocabulary from the strings of the dataset's first field.
    pub fn adapt(&mut self, data: &Dataset) -> Result<()> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for e in data {
            let e = e?;
            let s =
                e.field(0)?.as_strings().ok_or_else(|| Error::dtype("StringLookup.adapt: the data is not strings"))?;
            for v in s.values() {
                if Some(v) != self.mask_token.as_ref() {
                    *counts.entry(v.clone()).or_default() += 1;
                }
            }
        }
        self.vocab.learn(counts, self.max_tokens)
    }
    /// Every index's token: the mask, `[UNK]` per OOV index, then the vocabulary.
    pub fn vocabulary(&self) -> Vec<String> {
        let mut v: Vec<String> = self.mask_token.iter().cloned().collect();
        v.extend(std::iter::repeat_n("[UNK]".to_string(), self.vocab.num_oov));
        v.extend(self.vocab.tokens.iter().cloned());
        v
    }
    /// Number of indices the output can take.
    pub fn vocabulary_size(&self) -> usize {
        self.vocab.size()
    }
    /// The i64 index of each string (same shape).
    pub fn lookup(&self, s: &Strings) -> Result<Tensor> {
        let idx: Vec<i64> = s
            .values()
            .iter()
            .map(|v| {
                if Some(v) == self.mask_token.as_ref() {
                    0
                } else {
                    self.vocab.lookup(v, |k| farmhash::fingerprint64(k.as_bytes()))
                }
            })
            .collect();
        Tensor::from_slice(&idx, s.shape().clone())
    }
}

/// Integers to indices through a vocabulary (`keras.layers.IntegerLookup`);
/// laid out as [`StringLookup`], the OOV token shown as -1; several OOV
/// buckets take `value mod buckets` (Keras's default `oov_method`).
#[derive(Clone, Debug)]
pub struct IntegerLookup {
    vocab: Vocab<i64>,
    mask_token: Option<i64>,
    max_tokens: Option<usize>,
}

impl Default for IntegerLookup {
    fn default() -> IntegerLookup {
        IntegerLookup::new(1, None)
    }
}

impl IntegerLookup {
    pub fn new(num_oov_indices: usize, mask_token: Option<i64>) -> IntegerLookup {
        IntegerLookup { vocab: Vocab::new(num_oov_indices, mask_token.is_some()), mask_token, max_tokens: None }
    }
    pub fn with_vocabulary(mut self, tokens: impl IntoIterator<Item = i64>) -> Result<IntegerLookup> {
        self.vocab.set(tokens.into_iter().collect())?;
        Ok(self)
    }
    pub fn max_tokens(mut self, max_tokens: usize) -> IntegerLookup {
        self.max_tokens = Some(max_tokens);
        self
    }
    /// Learn the vocabulary from the integers of the dataset's first field.
    pub fn adapt(&mut self, data: &Dataset) -> Result<()> {
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for e in data {
            let e = e?;
            for v in integers(e.tensor(0)?, "IntegerLookup.adapt")? {
                if Some(v) != self.mask_token {
                    *counts.entry(v).or_default() += 1;
                }
            }
        }
        self.vocab.learn(counts, self.max_tokens)
    }
    pub fn vocabulary(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.mask_token.into_iter().collect();
        v.extend(std::iter::repeat_n(-1, self.vocab.num_oov));
        v.extend(self.vocab.tokens.iter().copied());
        v
    }
    pub fn vocabulary_size(&self) -> usize {
        self.vocab.size()
    }
    /// The i64 index of each integer (same shape).
    pub fn lookup(&self, x: &Tensor) -> Result<Tensor> {
        let idx: Vec<i64> = integers(x, "IntegerLookup")?
            .into_iter()
            .map(|v| {
                if Some(v) == self.mask_token {
                    0
                } else {
                    // Keras's default `oov_method="floormod"` for integers.
                    self.vocab.lookup(&v, |k| k.rem_euclid(self.vocab.num_oov as i64) as u64)
                }
            })
            .collect();
        Tensor::from_slice(&idx, x.shape().clone())
    }
}

fn integers(t: &Tensor, what: &str) -> Result<Vec<i64>> {
    if !t.dtype().is_int() {
        bail!(dtype, "{what}: expected integers, got {}", t.dtype());
    }
    ops::cast(t, DType::I64)?.to_vec::<i64>()
}

/// Strings or integers hashed into `num_bins` buckets (`keras.layers.Hashing`):
/// Fingerprint64 modulo the bins; with a mask value, that value maps to 0 and
/// the rest to `1..num_bins`.
#[derive(Clone, Debug)]
pub struct Hashing {
    num_bins: u64,
    mask_value: Option<String>,
}

impl Hashing {
    pub fn new(num_bins: usize) -> Result<Hashing> {
        if num_bins == 0 {
            bail!(invalid, "Hashing: num_bins must be positive");
        }
        Ok(Hashing { num_bins: num_bins as u64, mask_value: None })
    }
    /// A value (as text) that hashes to 0.
    pub fn mask_value(mut self, value: impl Into<String>) -> Hashing {
        self.mask_value = Some(value.into());
        self
    }
    fn bucket(&self, text: &str) -> i64 {
        match &self.mask_value {
            Some(m) if m == text => 0,
            Some(_) => 1 + hash_bucket(text.as_bytes(), self.num_bins - 1),
            None => hash_bucket(text.as_bytes(), self.num_bins),
        }
    }
    /// The bucket of each element of a string or integer field (i64, same shape).
    pub fn hash(&self, field: &Field) -> Result<Tensor> {
        if self.mask_value.is_some() && self.num_bins < 2 {
            bail!(invalid, "Hashing: a mask value needs at least 2 bins");
        }
        match field {
            Field::Strings(s) => {
                let v: Vec<i64> = s.values().iter().map(|t| self.bucket(t)).collect();
                Tensor::from_slice(&v, s.shape().clone())
            }
            Field::Tensor(t) => {
                let v: Vec<i64> = integers(t, "Hashing")?.iter().map(|i| self.bucket(&i.to_string())).collect();
                Tensor::from_slice(&v, t.shape().clone())
            }
        }
    }
}

/// How [`CategoryEncoding`] encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingMode {
    /// One index per sample: `[batch]` or `[batch, 1]` to `[batch, num_tokens]`.
    OneHot,
    /// 1 at each index present in a sample's `[batch, k]` indices.
    MultiHot,
    /// How often each index occurs.
    Count,
}

/// Integer indices as one-hot, multi-hot or count vectors (`keras.layers.CategoryEncoding`).
pub struct CategoryEncoding {
    name: String,
    num_tokens: usize,
    mode: EncodingMode,
}

impl CategoryEncoding {
    pub fn new(num_tokens: usize, mode: EncodingMode) -> CategoryEncoding {
        CategoryEncoding { name: unique_name("category_encoding"), num_tokens, mode }
    }
}

impl Layer for CategoryEncoding {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if !x.dtype().is_int() {
            bail!(dtype, "CategoryEncoding '{}': indices must be integers, got {}", self.name, x.dtype());
        }
        if !x.is_symbolic() {
            // Keras checks the range; a value out of it would silently encode as nothing.
            if let Some(bad) =
                integers(x, "CategoryEncoding")?.into_iter().find(|&v| v < 0 || v >= self.num_tokens as i64)
            {
                bail!(invalid, "CategoryEncoding '{}': index {bad} is outside [0, {})", self.name, self.num_tokens);
            }
        }
        let x = match (self.mode, x.rank()) {
            (_, 1) => ops::expand_dims(x, -1)?,
            (EncodingMode::OneHot, 2) if x.shape().dims()[1] == 1 => x.clone(),
            (EncodingMode::OneHot, _) => {
                bail!(shape, "CategoryEncoding '{}': one_hot takes [batch] or [batch, 1], got {}", self.name, x.shape())
            }
            (_, 2) => x.clone(),
            _ => bail!(shape, "CategoryEncoding '{}': input of rank {} (1 or 2 expected)", self.name, x.rank()),
        };
        let hot = ops::one_hot(&x, self.num_tokens)?;
        match self.mode {
            EncodingMode::Count => ops::sum(&hot, 1, false),
            _ => ops::max(&hot, 1, false),
        }
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "CategoryEncoding".into()
    }
}

/// Values to bucket indices by sorted boundaries (`keras.layers.Discretization`):
/// index `i` for `boundaries[i-1] <= x < boundaries[i]` (i64).
pub struct Discretization {
    name: String,
    boundaries: Vec<f64>,
}

impl Discretization {
    /// Buckets between the given sorted boundaries.
    pub fn new(bin_boundaries: Vec<f64>) -> Result<Discretization> {
        if bin_boundaries.iter().any(|b| b.is_nan()) || bin_boundaries.windows(2).any(|w| w[0] > w[1]) {
            bail!(invalid, "Discretization: bin boundaries must be sorted and not NaN");
        }
        Ok(Discretization { name: unique_name("discretization"), boundaries: bin_boundaries })
    }
    /// Boundaries at the `i / num_bins` quantiles (i = 1..num_bins) of every
    /// value of the dataset's first field: equal-count buckets. Exact
    /// quantiles of the values (Keras sketches them approximately).
    pub fn adapt(data: &Dataset, num_bins: usize) -> Result<Discretization> {
        if num_bins < 2 {
            bail!(invalid, "Discretization.adapt: num_bins must be at least 2");
        }
        let mut values = Vec::new();
        for e in data {
            values.extend(ops::cast(e?.tensor(0)?, DType::F64)?.to_vec::<f64>()?);
        }
        values.retain(|v| !v.is_nan());
        if values.is_empty() {
            bail!(invalid, "Discretization.adapt: no values");
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let boundaries = (1..num_bins).map(|i| values[((i * n) / num_bins).min(n - 1)]).collect();
        Discretization::new(boundaries)
    }
    pub fn bin_boundaries(&self) -> &[f64] {
        &self.boundaries
    }
}

impl Layer for Discretization {
    fn call(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let dt = if x.dtype().is_float() { x.dtype() } else { DType::F64 };
        let x = ops::cast(x, dt)?;
        let b = ops::cast(&Tensor::from_slice(&self.boundaries, Shape::new(&[self.boundaries.len()]))?, dt)?;
        let ge = ops::greater_equal(&ops::expand_dims(&x, -1)?, &b)?;
        ops::sum(&ops::cast(&ge, DType::I64)?, -1, false)
    }
    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> String {
        "Discretization".into()
    }
}
