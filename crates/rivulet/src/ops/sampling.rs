//! Candidate sampling and the sampled losses: TensorFlow's candidate
//! samplers (uniform, log-uniform, fixed and learned unigram, all),
//! `compute_accidental_hits`, and `nce_loss` / `sampled_softmax_loss`,
//! which train a large softmax against a few sampled classes.
//!
//! The samplers draw on the host with Rivulet's Philox stream, so they run
//! eagerly; the losses are composed of ops and also run in graphs when the
//! caller passes the sampled classes (as TensorFlow's `sampled_values`).

use super::array::host_values;
use super::{elementwise as ew, linalg, movement as mv, nn, reduce, Ctx};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::creation::{Distribution, RandomStream, Sample};
use crate::tensor::DType;

/// What a candidate sampler gives: `sampled` `[num_sampled]` int64 class
/// ids, and how many times each true class (`[batch, num_true]`) and each
/// sampled class (`[num_sampled]`) is expected among the samples (f32).
#[derive(Clone, Debug)]
pub struct SampledCandidates {
    pub sampled: Tensor,
    pub true_expected_count: Tensor,
    pub sampled_expected_count: Tensor,
}

/// The class distribution of a candidate sampler.
#[derive(Clone, Debug, PartialEq)]
pub enum CandidateDistribution {
    /// Every class of `0..range_max` equally likely.
    Uniform { range_max: usize },
    /// Zipf-like: `P(k) = log((k + 2) / (k + 1)) / log(range_max + 1)`, for
    /// classes sorted by decreasing frequency.
    LogUniform { range_max: usize },
    /// Class `k` with probability proportional to `weights[k]`.
    Weighted { weights: Vec<f64> },
}

impl CandidateDistribution {
    fn range_max(&self) -> usize {
        match self {
            CandidateDistribution::Uniform { range_max } | CandidateDistribution::LogUniform { range_max } => {
                *range_max
            }
            CandidateDistribution::Weighted { weights } => weights.len(),
        }
    }
}

/// A distribution ready to draw from: probabilities and, for weights, the
/// cumulative sums to search.
struct Drawer {
    dist: CandidateDistribution,
    cumulative: Vec<f64>,
}

impl Drawer {
    fn new(dist: CandidateDistribution) -> Result<Drawer> {
        let mut cumulative = Vec::new();
        match &dist {
            CandidateDistribution::Uniform { range_max } | CandidateDistribution::LogUniform { range_max } => {
                if *range_max == 0 || *range_max > i64::MAX as usize {
                    bail!(invalid, "a candidate sampler needs 0 < range_max <= 2^63 - 1, got {range_max}");
                }
            }
            CandidateDistribution::Weighted { weights } => {
                let mut total = 0.0;
                for (k, &w) in weights.iter().enumerate() {
                    if !(w.is_finite() && w >= 0.0) {
                        bail!(invalid, "candidate sampler weight {k} is {w}; weights must be finite and >= 0");
                    }
                    total += w;
                    cumulative.push(total);
                }
                if !(total > 0.0 && total.is_finite()) {
                    bail!(invalid, "a candidate sampler needs weights with a positive finite sum, got {total}");
                }
            }
        }
        Ok(Drawer { dist, cumulative })
    }

    fn probability(&self, k: i64) -> f64 {
        let range = self.dist.range_max();
        if k < 0 || k as usize >= range {
            return 0.0;
        }
        match &self.dist {
            CandidateDistribution::Uniform { .. } => 1.0 / range as f64,
            CandidateDistribution::LogUniform { .. } => {
                ((k as f64 + 2.0) / (k as f64 + 1.0)).ln() / (range as f64).ln_1p()
            }
            CandidateDistribution::Weighted { weights } => {
                weights[k as usize] / self.cumulative.last().copied().unwrap_or(1.0)
            }
        }
    }

    /// One class from a uniform `u` in [0, 1).
    fn draw(&self, u: f64) -> i64 {
        let range = self.dist.range_max();
        let k = match &self.dist {
            CandidateDistribution::Uniform { .. } => (u * range as f64) as i64,
            CandidateDistribution::LogUniform { .. } => ((u * (range as f64).ln_1p()).exp() - 1.0) as i64,
            CandidateDistribution::Weighted { .. } => {
                let target = u * self.cumulative.last().copied().unwrap_or(0.0);
                self.cumulative.partition_point(|&c| c <= target) as i64
            }
        };
        k.clamp(0, range as i64 - 1)
    }
}

/// Uniform numbers in [0, 1) from the Philox stream of `seed`.
struct Uniforms {
    stream: RandomStream,
    block: u64,
    pending: Vec<f64>,
}

impl Iterator for Uniforms {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        if self.pending.is_empty() {
            let unit = Distribution::Uniform { low: 0.0, high: 1.0 };
            if let Sample::F(v) = self.stream.sample_block(&unit, DType::F64, self.block) {
                self.pending.extend([v[1], v[0]]);
            }
            self.block += 1;
        }
        self.pending.pop()
    }
}

/// Check `true_classes` `[batch, num_true]` and read them.
fn true_class_values(what: &str, true_classes: &Tensor, num_true: usize) -> Result<(Vec<i64>, usize)> {
    let d = true_classes.shape().dims();
    if !true_classes.dtype().is_int() || true_classes.rank() != 2 || d[1] != num_true || num_true == 0 {
        bail!(
            shape,
            "{what} needs integer true_classes [batch, num_true = {num_true}], got {} {:?}",
            true_classes.dtype(),
            true_classes.shape()
        );
    }
    Ok((host_values::<i64>(&ew::cast(true_classes, DType::I64)?, what)?, d[0]))
}

/// [`true_class_values`], each class inside `0..range` as TensorFlow's samplers require.
fn true_classes_in_range(
    what: &str,
    true_classes: &Tensor,
    num_true: usize,
    range: usize,
) -> Result<(Vec<i64>, usize)> {
    let (truth, batch) = true_class_values(what, true_classes, num_true)?;
    if let Some(k) = truth.iter().find(|&&k| k < 0 || k as u64 >= range as u64) {
        bail!(invalid, "{what}: true class {k} is outside [0, {range})");
    }
    Ok((truth, batch))
}

/// Draw `num_sampled` classes from `dist` (distinct ones if `unique`,
/// by rejecting repeats) and the expected counts, as TensorFlow's range
/// samplers compute them: `p * num_sampled` when every draw was kept, else
/// the chance of appearing in the draws made, `1 - (1 - p)^tries`.
/// `None` seeds from the global seed.
#[track_caller]
pub fn candidate_sampler(
    true_classes: &Tensor,
    num_true: usize,
    num_sampled: usize,
    unique: bool,
    dist: CandidateDistribution,
    seed: Option<u64>,
) -> Result<SampledCandidates> {
    let (truth, batch) = true_classes_in_range("candidate_sampler", true_classes, num_true, dist.range_max())?;
    draw_candidates(&truth, batch, num_true, num_sampled, unique, dist, seed)
}

/// [`candidate_sampler`] on true classes already read and checked.
fn draw_candidates(
    truth: &[i64],
    batch: usize,
    num_true: usize,
    num_sampled: usize,
    unique: bool,
    dist: CandidateDistribution,
    seed: Option<u64>,
) -> Result<SampledCandidates> {
    let drawer = Drawer::new(dist)?;
    let possible = match &drawer.dist {
        CandidateDistribution::Weighted { weights } => weights.iter().filter(|&&w| w > 0.0).count(),
        d => d.range_max(),
    };
    if unique && num_sampled > possible {
        bail!(invalid, "candidate_sampler: {num_sampled} distinct samples from {possible} possible classes");
    }
    let seed = seed.unwrap_or_else(super::creation::next_seed);
    let mut uniforms = Uniforms { stream: RandomStream::new(seed, 0), block: 0, pending: Vec::new() };
    let mut sampled = crate::tensor::storage::try_vec_with_capacity(num_sampled)?;
    let mut seen = std::collections::HashSet::new();
    let mut tries = 0usize;
    // Distinct draws of rare classes can take forever (TensorFlow's op
    // spins); give up after a generous budget instead.
    let budget = num_sampled.saturating_mul(1000).saturating_add(1_000_000);
    while sampled.len() < num_sampled {
        if tries == budget {
            bail!(
                invalid,
                "candidate_sampler: {} distinct classes after {tries} draws, {num_sampled} wanted; the rest are too rare",
                sampled.len()
            );
        }
        let k = drawer.draw(uniforms.next().unwrap_or(0.0));
        tries += 1;
        if !unique || seen.insert(k) {
            sampled.push(k);
        }
    }
    let expected = |k: i64| -> f32 {
        let p = drawer.probability(k);
        if tries == num_sampled {
            (p * num_sampled as f64) as f32
        } else {
            (-(tries as f64 * (-p).ln_1p()).exp_m1()) as f32
        }
    };
    let true_counts: Vec<f32> = truth.iter().map(|&k| expected(k)).collect();
    let sampled_counts: Vec<f32> = sampled.iter().map(|&k| expected(k)).collect();
    let n = sampled.len();
    Ok(SampledCandidates {
        sampled: Tensor::from_vec(sampled, [n])?,
        true_expected_count: Tensor::from_vec(true_counts, [batch, num_true])?,
        sampled_expected_count: Tensor::from_vec(sampled_counts, [n])?,
    })
}

/// Classes drawn uniformly from `0..range_max` (`tf.random.uniform_candidate_sampler`).
#[track_caller]
pub fn uniform_candidate_sampler(
    true_classes: &Tensor,
    num_true: usize,
    num_sampled: usize,
    unique: bool,
    range_max: usize,
    seed: Option<u64>,
) -> Result<SampledCandidates> {
    let dist = CandidateDistribution::Uniform { range_max };
    candidate_sampler(true_classes, num_true, num_sampled, unique, dist, seed)
}

/// Classes drawn from the log-uniform (Zipf-like) distribution over
/// `0..range_max` (`tf.random.log_uniform_candidate_sampler`): small ids
/// are the frequent classes.
#[track_caller]
pub fn log_uniform_candidate_sampler(
    true_classes: &Tensor,
    num_true: usize,
    num_sampled: usize,
    unique: bool,
    range_max: usize,
    seed: Option<u64>,
) -> Result<SampledCandidates> {
    let dist = CandidateDistribution::LogUniform { range_max };
    candidate_sampler(true_classes, num_true, num_sampled, unique, dist, seed)
}

/// Classes drawn in proportion to `unigrams` (counts or frequencies) raised
/// to `distortion`; the first `num_reserved_ids` ids are never drawn and
/// the unigrams cover the ids after them, so `num_reserved_ids +
/// unigrams.len()` must be `range_max` (`tf.random.fixed_unigram_candidate_sampler`
/// with in-memory unigrams; read a vocabulary file's counts into `unigrams`).
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn fixed_unigram_candidate_sampler(
    true_classes: &Tensor,
    num_true: usize,
    num_sampled: usize,
    unique: bool,
    range_max: usize,
    unigrams: &[f64],
    distortion: f64,
    num_reserved_ids: usize,
    seed: Option<u64>,
) -> Result<SampledCandidates> {
    if num_reserved_ids.checked_add(unigrams.len()) != Some(range_max) {
        bail!(
            invalid,
            "fixed_unigram_candidate_sampler: {num_reserved_ids} reserved ids and {} unigrams for range_max {range_max}",
            unigrams.len()
        );
    }
    let mut weights = crate::tensor::storage::try_vec(0.0, num_reserved_ids)?;
    weights.extend(unigrams.iter().map(|&u| u.powf(distortion)));
    candidate_sampler(true_classes, num_true, num_sampled, unique, CandidateDistribution::Weighted { weights }, seed)
}

/// A unigram sampler that learns the class frequencies from the true
/// classes it is shown: every class starts with weight 1, and each call
/// adds 1 for each true class after drawing (TensorFlow's
/// `LearnedUnigramCandidateSampler`, whose op keeps this state).
#[derive(Clone, Debug)]
pub struct LearnedUnigramSampler {
    weights: Vec<f64>,
    seed: Option<u64>,
    calls: u64,
}

impl LearnedUnigramSampler {
    /// A sampler over `0..range_max`; `seed` makes its draws reproducible.
    pub fn new(range_max: usize, seed: Option<u64>) -> Result<LearnedUnigramSampler> {
        Ok(LearnedUnigramSampler { weights: crate::tensor::storage::try_vec(1.0, range_max)?, seed, calls: 0 })
    }

    /// Draw from the counts so far, then count `true_classes`.
    #[track_caller]
    pub fn sample(
        &mut self,
        true_classes: &Tensor,
        num_true: usize,
        num_sampled: usize,
        unique: bool,
    ) -> Result<SampledCandidates> {
        let seed = self.seed.map(|s| crate::op::creation::splitmix64(s ^ crate::op::creation::splitmix64(self.calls)));
        let (truth, batch) =
            true_classes_in_range("LearnedUnigramSampler", true_classes, num_true, self.weights.len())?;
        let dist = CandidateDistribution::Weighted { weights: self.weights.clone() };
        let out = draw_candidates(&truth, batch, num_true, num_sampled, unique, dist, seed)?;
        for k in truth {
            if let Some(w) = usize::try_from(k).ok().and_then(|k| self.weights.get_mut(k)) {
                *w += 1.0;
            }
        }
        self.calls += 1;
        Ok(out)
    }
}

/// One draw of a fresh [`LearnedUnigramSampler`] (`tf.random.learned_unigram_candidate_sampler`
/// as its op's first run: uniform until it has counted some classes).
#[track_caller]
pub fn learned_unigram_candidate_sampler(
    true_classes: &Tensor,
    num_true: usize,
    num_sampled: usize,
    unique: bool,
    range_max: usize,
    seed: Option<u64>,
) -> Result<SampledCandidates> {
    LearnedUnigramSampler::new(range_max, seed)?.sample(true_classes, num_true, num_sampled, unique)
}

/// Every class `0..num_sampled`, each expected once
/// (`tf.random.all_candidate_sampler`, for testing the sampled losses).
#[track_caller]
pub fn all_candidate_sampler(true_classes: &Tensor, num_true: usize, num_sampled: usize) -> Result<SampledCandidates> {
    let d = true_classes.shape().dims();
    if !true_classes.is_symbolic() {
        true_classes_in_range("all_candidate_sampler", true_classes, num_true, num_sampled)?;
    } else if !true_classes.dtype().is_int() || true_classes.rank() != 2 || d[1] != num_true {
        bail!(
            shape,
            "all_candidate_sampler needs integer true_classes [batch, {num_true}], got {:?}",
            true_classes.shape()
        );
    }
    let ctx = Ctx::of(true_classes);
    Ok(SampledCandidates {
        sampled: super::creation::range(ctx, 0i64, num_sampled as i64, 1i64, DType::I64)?,
        // Shaped at run time (the batch may be unknown when a graph is built).
        true_expected_count: super::creation::ones_like(&ew::cast(true_classes, DType::F32)?)?,
        sampled_expected_count: super::creation::fill(ctx, [num_sampled], 1.0f32, DType::F32)?,
    })
}

/// The sampled classes that are one of a row's true classes: row indices
/// (int32), positions in `sampled` (int64) and the weight `-f32::MAX` that
/// removes each such logit (`tf.nn.compute_accidental_hits`; a class
/// sampled twice is found at its last position, as in TensorFlow).
#[track_caller]
pub fn compute_accidental_hits(
    true_classes: &Tensor,
    sampled: &Tensor,
    num_true: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (truth, batch) = true_class_values("compute_accidental_hits", true_classes, num_true)?;
    if sampled.rank() != 1 || !sampled.dtype().is_int() {
        bail!(
            shape,
            "compute_accidental_hits needs integer sampled candidates [num_sampled], got {:?}",
            sampled.shape()
        );
    }
    let samples = host_values::<i64>(&ew::cast(sampled, DType::I64)?, "compute_accidental_hits")?;
    let position: std::collections::HashMap<i64, i64> =
        samples.iter().enumerate().map(|(j, &k)| (k, j as i64)).collect();
    let (mut rows, mut ids) = (Vec::new(), Vec::new());
    for b in 0..batch {
        for &k in &truth[b * num_true..(b + 1) * num_true] {
            if let Some(&j) = position.get(&k) {
                rows.push(b as i32);
                ids.push(j);
            }
        }
    }
    let n = rows.len();
    Ok((Tensor::from_vec(rows, [n])?, Tensor::from_vec(ids, [n])?, Tensor::from_vec(vec![-f32::MAX; n], [n])?))
}

/// The options of the sampled losses beyond their tensors.
#[derive(Clone, Debug)]
pub struct SampledLossOptions {
    /// Classes sampled per batch.
    pub num_sampled: usize,
    /// Classes in all.
    pub num_classes: usize,
    /// True classes per example (the columns of `labels`).
    pub num_true: usize,
    /// Sampled classes and expected counts to use; `None` draws them from
    /// the log-uniform sampler (distinct classes), which needs eager mode.
    pub sampled_values: Option<SampledCandidates>,
    /// Mask sampled classes that are also an example's true class.
    pub remove_accidental_hits: bool,
    /// Seed of the default sampler (`None`: the global seed).
    pub seed: Option<u64>,
}

/// The logits of the true and sampled classes with `log Q` subtracted, and
/// their labels (`1 / num_true` for true classes, 0 for sampled ones): the
/// common part of the sampled losses (TensorFlow's `_compute_sampled_logits`).
fn sampled_logits(
    weights: &Tensor,
    biases: &Tensor,
    labels: &Tensor,
    inputs: &Tensor,
    o: &SampledLossOptions,
) -> Result<(Tensor, Tensor)> {
    let (wd, ld, xd) = (weights.shape().dims(), labels.shape().dims(), inputs.shape().dims());
    if weights.rank() != 2
        || biases.shape().dims() != [wd[0]]
        || inputs.rank() != 2
        || xd[1] != wd[1]
        || labels.rank() != 2
        || ld[0] != xd[0]
        || ld[1] != o.num_true
        || !labels.dtype().is_int()
        || o.num_true == 0
    {
        bail!(
            shape,
            "sampled losses need weights [classes, dim], biases [classes], integer labels [batch, num_true = {}] and inputs [batch, dim], got {:?}, {:?}, {:?} and {:?}",
            o.num_true,
            weights.shape(),
            biases.shape(),
            labels.shape(),
            inputs.shape()
        );
    }
    let dim = wd[1] as i64;
    let num_true = o.num_true as i64;
    let labels = ew::cast(labels, DType::I64)?;
    let s = match &o.sampled_values {
        Some(s) => s.clone(),
        None => log_uniform_candidate_sampler(&labels, o.num_true, o.num_sampled, true, o.num_classes, o.seed)?,
    };
    let sampled = mv::stop_gradient(&ew::cast(&s.sampled, DType::I64)?)?;
    let true_expected = mv::stop_gradient(&s.true_expected_count)?;
    let sampled_expected = mv::stop_gradient(&s.sampled_expected_count)?;
    let flat = mv::reshape(&labels, &[-1])?;
    let true_w = mv::reshape(&nn::embedding_lookup(weights, &flat)?, &[-1, num_true, dim])?;
    let sampled_w = nn::embedding_lookup(weights, &sampled)?;
    let true_b = mv::reshape(&nn::embedding_lookup(biases, &flat)?, &[-1, num_true])?;
    let sampled_b = nn::embedding_lookup(biases, &sampled)?;
    let true_logits = reduce::sum(&ew::mul(&mv::expand_dims(inputs, 1)?, &true_w)?, 2, false)?;
    let true_logits = ew::add(&true_logits, &true_b)?;
    let mut sampled_logits = ew::add(&linalg::matmul_t(inputs, &sampled_w, false, true)?, &sampled_b)?;
    if o.remove_accidental_hits {
        // [batch, num_true, 1] == [num_sampled]: a hit anywhere in the row,
        // at the last position of a class sampled more than once (as
        // TensorFlow's compute_accidental_hits finds it).
        let hits = reduce::any(&ew::equal(&mv::expand_dims(&labels, 2)?, &sampled)?, 1, false)?;
        let position = ew::sub(&super::reduce::cumsum(&super::creation::ones_like(&sampled)?, 0, false, false)?, 1i64)?;
        let later = ew::less(&mv::expand_dims(&position, 1)?, &mv::expand_dims(&position, 0)?)?;
        let same = ew::equal(&mv::expand_dims(&sampled, 1)?, &mv::expand_dims(&sampled, 0)?)?;
        let repeated_later = reduce::any(&ew::logical_and(&same, &later)?, 1, false)?;
        let hits = ew::logical_and(&hits, &ew::logical_not(&repeated_later)?)?;
        let removed = ew::add(&sampled_logits, -f64::from(f32::MAX))?;
        sampled_logits = ew::select(&hits, &removed, &sampled_logits)?;
    }
    let true_logits = ew::sub(&true_logits, &ew::log(&ew::cast(&true_expected, inputs.dtype())?)?)?;
    let sampled_logits = ew::sub(&sampled_logits, &ew::log(&ew::cast(&sampled_expected, inputs.dtype())?)?)?;
    let logits = mv::concat(&[&true_logits, &sampled_logits], 1)?;
    // Shaped at run time (the batch may be unknown when a graph is built).
    let ones = ew::mul(&super::creation::ones_like(&true_logits)?, 1.0 / o.num_true as f64)?;
    let zeros = super::creation::zeros_like(&sampled_logits)?;
    let targets = mv::concat(&[&ones, &zeros], 1)?;
    Ok((logits, targets))
}

/// Noise-contrastive estimation loss per example (Gutmann and Hyvärinen
/// 2010; `tf.nn.nce_loss`): logistic regression of the true classes against
/// `num_sampled` sampled ones, each logit corrected by the log of its
/// expected count. `weights` `[num_classes, dim]`, `biases`
/// `[num_classes]`, `labels` `[batch, num_true]`, `inputs` `[batch, dim]`;
/// gives `[batch]`.
#[track_caller]
pub fn nce_loss(
    weights: &Tensor,
    biases: &Tensor,
    labels: &Tensor,
    inputs: &Tensor,
    options: &SampledLossOptions,
) -> Result<Tensor> {
    let (logits, targets) = sampled_logits(weights, biases, labels, inputs, options)?;
    reduce::sum(&nn::sigmoid_cross_entropy_with_logits(&targets, &logits)?, 1, false)
}

/// Sampled softmax loss per example (Jean et al. 2014;
/// `tf.nn.sampled_softmax_loss`): softmax cross-entropy over the true
/// classes and `num_sampled` sampled ones, each logit corrected by the log
/// of its expected count. Arguments as [`nce_loss`]; TensorFlow's default
/// removes accidental hits.
#[track_caller]
pub fn sampled_softmax_loss(
    weights: &Tensor,
    biases: &Tensor,
    labels: &Tensor,
    inputs: &Tensor,
    options: &SampledLossOptions,
) -> Result<Tensor> {
    let (logits, targets) = sampled_logits(weights, biases, labels, inputs, options)?;
    nn::softmax_cross_entropy_with_logits(&targets, &logits, -1)
}
