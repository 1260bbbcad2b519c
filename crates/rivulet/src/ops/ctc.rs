//! Connectionist temporal classification (Graves et al. 2006): the loss,
//! composed of ops so that it differentiates and runs on every device, and
//! TensorFlow's decoders and label helpers. The decoders and
//! `collapse_repeated` give outputs whose size depends on the values, so
//! they run eagerly (on values); `ctc_unique_labels` keeps its input's
//! shape and also runs in graphs.

use super::array::host_values;
use super::{apply, creation as cr, elementwise as ew, movement as mv, nn::log_softmax, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::HostOp;
use crate::tensor::DType;

/// Connectionist temporal classification loss (Graves et al. 2006), per
/// example: `-log p(labels | logits)` summed over every alignment.
/// `labels` is `[batch, max_label_length]` (dense, padded past
/// `label_length`), `logits` is `[batch, time, classes]` (batch major, so
/// TensorFlow's `logits_time_major=False`), class `blank_index` is the
/// blank. The forward recursion runs in log space over the time steps
/// (unrolled: the graph grows with `time`); an alignment that cannot exist
/// costs about 1e30 rather than inf, which keeps gradients finite.
#[track_caller]
pub fn ctc_loss(
    labels: &Tensor,
    logits: &Tensor,
    label_length: &Tensor,
    logit_length: &Tensor,
    blank_index: usize,
) -> Result<Tensor> {
    let (dl, dz) = (labels.shape().dims(), logits.shape().dims());
    if !labels.dtype().is_int()
        || labels.rank() != 2
        || logits.rank() != 3
        || !labels.shape().is_fully_known()
        || !logits.shape().is_fully_known()
        || dl[0] != dz[0]
        || blank_index >= dz[2]
    {
        bail!(
            shape,
            "ctc_loss needs integer labels [batch, length] and logits [batch, time, classes] with the blank among the classes, got {} {:?}, {:?} and blank {blank_index}",
            labels.dtype(),
            labels.shape(),
            logits.shape()
        );
    }
    let (batch, max_len, time) = (dl[0], dl[1], dz[1]);
    let states = 2 * max_len + 1;
    const NEG: f64 = -1e30;
    let ctx = super::Ctx::of(logits);
    let logp = log_softmax(logits, -1)?;
    // The label sequence with blanks around and between: [batch, states].
    let labels = ew::cast(labels, DType::I64)?;
    let blanks = cr::fill(ctx, [batch, max_len], blank_index as i64, DType::I64)?;
    let pairs = mv::reshape(&mv::stack(&[&blanks, &labels], 2)?, &[batch as i64, 2 * max_len as i64])?;
    let ext = mv::concat(&[&pairs, &cr::fill(ctx, [batch, 1], blank_index as i64, DType::I64)?], 1)?;
    // Emissions: log-probability of each state's class at each step, [batch, time, states].
    let idx = mv::broadcast_to(&mv::expand_dims(&ext, 1)?, [batch, time, states])?;
    let emit = mv::gather(&logp, &idx, 2, 2)?;
    // A state may also be entered from two back: a label differing from the one two before.
    let skip = if states > 2 {
        let cur = mv::slice(&ext, &[0, 2], &[-1, -1])?;
        let back = mv::slice(&ext, &[0, 0], &[-1, states as i64 - 2])?;
        let ok = ew::logical_and(&ew::not_equal(&cur, blank_index as i64)?, &ew::not_equal(&cur, &back)?)?;
        mv::concat(&[&cr::fill(ctx, [batch, 2], false, DType::Bool)?, &ok], 1)?
    } else {
        cr::fill(ctx, [batch, states], false, DType::Bool)?
    };
    let lengths = ew::cast(logit_length, DType::I64)?;
    let step = |t: usize| mv::squeeze(&mv::slice(&emit, &[0, t, 0], &[-1, 1, -1])?, &[1]);
    let neg = |n: usize| cr::fill(ctx, [batch, n], NEG, logits.dtype());
    // alpha_0: the first blank or the first label.
    let first_two = mv::slice(&step(0)?, &[0, 0], &[-1, states.min(2) as i64])?;
    let mut alpha = if states > 2 { mv::concat(&[&first_two, &neg(states - 2)?], 1)? } else { first_two };
    for t in 1..time {
        let prev1 = mv::concat(&[&neg(1)?, &mv::slice(&alpha, &[0, 0], &[-1, states as i64 - 1])?], 1)?;
        let mut total = ew::logaddexp(&alpha, &prev1)?;
        if states > 2 {
            let prev2 = mv::concat(&[&neg(2)?, &mv::slice(&alpha, &[0, 0], &[-1, states as i64 - 2])?], 1)?;
            total = ew::logaddexp(&total, &ew::select(&skip, &prev2, NEG)?)?;
        }
        let next = ew::add(&total, &step(t)?)?;
        // Past an example's logit length its alphas stay as they are.
        let live = mv::expand_dims(&ew::less(t as i64, &lengths)?, 1)?;
        alpha = ew::select(&live, &next, &alpha)?;
    }
    // The path ends on the last label or the blank after it.
    let ll = ew::cast(label_length, DType::I64)?;
    let last_blank = mv::expand_dims(&ew::mul(&ll, 2i64)?, 1)?;
    let last_label = ew::maximum(&ew::sub(&last_blank, 1i64)?, 0i64)?;
    let end_blank = mv::squeeze(&mv::gather(&alpha, &last_blank, 1, 1)?, &[1])?;
    let end_label = mv::squeeze(&mv::gather(&alpha, &last_label, 1, 1)?, &[1])?;
    let has_label = ew::greater(&ll, 0i64)?;
    ew::neg(&ew::select(&has_label, &ew::logaddexp(&end_blank, &end_label)?, &end_blank)?)
}

/// A batch of label sequences in TensorFlow's sparse form (the three parts
/// of a `SparseTensor`): `indices` `[n, 2]` int64 (row, position),
/// `values` `[n]` int64 labels, `dense_shape` `[2]` int64 (rows, longest).
#[derive(Clone, Debug)]
pub struct SparseLabels {
    pub indices: Tensor,
    pub values: Tensor,
    pub dense_shape: Tensor,
}

impl SparseLabels {
    /// From one label sequence per row.
    fn from_rows(rows: &[Vec<i64>]) -> Result<SparseLabels> {
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for (b, row) in rows.iter().enumerate() {
            for (t, &v) in row.iter().enumerate() {
                indices.extend([b as i64, t as i64]);
                values.push(v);
            }
        }
        let n = values.len();
        Ok(SparseLabels {
            indices: Tensor::from_vec(indices, [n, 2])?,
            values: Tensor::from_vec(values, [n])?,
            dense_shape: Tensor::from_vec(vec![rows.len() as i64, longest as i64], [2])?,
        })
    }

    /// The dense `[rows, longest]` int64 matrix, `default` past each
    /// sequence's end (TensorFlow's `sparse.to_dense`).
    pub fn to_dense(&self, default: i64) -> Result<Tensor> {
        let shape = host_values::<i64>(&self.dense_shape, "SparseLabels::to_dense")?;
        let (rows, cols) = match shape[..] {
            [r, c] if r >= 0 && c >= 0 => (r as usize, c as usize),
            _ => bail!(shape, "SparseLabels::to_dense needs a dense shape [rows, columns], got {shape:?}"),
        };
        let shifted = ew::sub(&self.values, default)?;
        let scattered = mv::scatter_nd(&self.indices, &shifted, [rows, cols])?;
        ew::add(&scattered, default)
    }
}

/// Check `[time, batch, classes]` float logits and `[batch]` lengths, and
/// read both (the decoders run on the host).
fn decoder_inputs(what: &str, inputs: &Tensor, sequence_length: &Tensor) -> Result<(Vec<f64>, Vec<usize>, [usize; 3])> {
    let d = inputs.shape().dims();
    if !inputs.dtype().is_float() || inputs.rank() != 3 || !inputs.shape().is_fully_known() {
        bail!(shape, "{what} needs float logits [time, batch, classes], got {} {:?}", inputs.dtype(), inputs.shape());
    }
    let (time, batch, classes) = (d[0], d[1], d[2]);
    if !sequence_length.dtype().is_int() || sequence_length.shape().dims() != [batch] {
        bail!(
            shape,
            "{what} needs integer sequence lengths [{batch}], got {} {:?}",
            sequence_length.dtype(),
            sequence_length.shape()
        );
    }
    let lengths = host_values::<i64>(&ew::cast(sequence_length, DType::I64)?, what)?;
    let mut out = Vec::with_capacity(batch);
    for (b, &l) in lengths.iter().enumerate() {
        if l < 0 || l as usize > time {
            bail!(invalid, "{what}: sequence_length[{b}] = {l} is outside [0, {time}]");
        }
        out.push(l as usize);
    }
    let values = host_values::<f64>(&ew::cast(inputs, DType::F64)?, what)?;
    Ok((values, out, [time, batch, classes]))
}

/// Greedy (best path) decoding of time-major logits `[time, batch,
/// classes]`: the most likely class at each step, blanks dropped, and with
/// `merge_repeated` a repeat of the previous step's class dropped too (a
/// blank between two equal labels keeps both). `blank_index` defaults to
/// the last class; a negative one counts from the end. Also gives
/// `neg_sum_logits` `[batch, 1]`, minus the sum of each step's largest
/// logit. As `tf.nn.ctc_greedy_decoder`: ties go to the lowest class.
#[track_caller]
pub fn ctc_greedy_decoder(
    inputs: &Tensor,
    sequence_length: &Tensor,
    merge_repeated: bool,
    blank_index: Option<i64>,
) -> Result<(SparseLabels, Tensor)> {
    let (x, lengths, [_, batch, classes]) = decoder_inputs("ctc_greedy_decoder", inputs, sequence_length)?;
    let blank = match blank_index {
        None => classes as i64 - 1,
        Some(b) if b < 0 => classes as i64 + b,
        Some(b) => b,
    };
    if blank < 0 || blank >= classes as i64 {
        bail!(invalid, "ctc_greedy_decoder: blank_index {blank_index:?} is outside the {classes} classes");
    }
    let blank = blank as usize;
    let mut rows = Vec::with_capacity(batch);
    let mut neg_sum = Vec::with_capacity(batch);
    for (b, &len) in lengths.iter().enumerate() {
        let mut seq = Vec::new();
        let mut prev = None;
        let mut sum = 0.0;
        for t in 0..len {
            let row = &x[(t * batch + b) * classes..(t * batch + b + 1) * classes];
            // The first largest class, as TensorFlow's kernel finds it.
            let mut best = 0;
            for c in 1..classes {
                if row[c] > row[best] {
                    best = c;
                }
            }
            sum += row[best];
            if best != blank && !(merge_repeated && prev == Some(best)) {
                seq.push(best as i64);
            }
            prev = Some(best);
        }
        rows.push(seq);
        neg_sum.push(-sum);
    }
    let neg = ew::cast(&Tensor::from_vec(neg_sum, [batch, 1])?, inputs.dtype())?;
    Ok((SparseLabels::from_rows(&rows)?, neg))
}

/// One prefix of the beam search: its probabilities (log space) of ending
/// in a blank, in its last label, and in total, now and one step ago.
#[derive(Clone, Copy)]
struct Probs {
    blank: f64,
    label: f64,
    total: f64,
}

const ZERO: Probs = Probs { blank: f64::NEG_INFINITY, label: f64::NEG_INFINITY, total: f64::NEG_INFINITY };

struct Prefix {
    parent: Option<usize>,
    label: usize,
    old: Probs,
    new: Probs,
    children: Option<std::ops::Range<usize>>,
}

/// The most prefixes one sequence's search may hold.
const MAX_PREFIXES: usize = 1 << 22;

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// TensorFlow's prefix beam search for one sequence (`steps` rows of
/// `classes` logits, the blank last): the `top_paths` best label sequences
/// with their log-probabilities.
fn beam_search(steps: &[&[f64]], classes: usize, beam_width: usize, top_paths: usize) -> Result<Vec<(Vec<i64>, f64)>> {
    let blank = classes - 1;
    let mut nodes = vec![Prefix {
        parent: None,
        label: usize::MAX,
        old: ZERO,
        new: Probs { blank: 0.0, label: f64::NEG_INFINITY, total: 0.0 },
        children: None,
    }];
    let mut beam: Vec<usize> = vec![0];
    // The beam, best first (ties keep the earlier entry first).
    let sort = |beam: &mut Vec<usize>, nodes: &[Prefix]| {
        beam.sort_by(|&a, &b| nodes[b].new.total.partial_cmp(&nodes[a].new.total).unwrap_or(std::cmp::Ordering::Equal))
    };
    for row in steps {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let norm = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let logp = |c: usize| row[c] - norm;
        let branches = std::mem::take(&mut beam);
        for &b in &branches {
            nodes[b].old = nodes[b].new;
        }
        // Existing prefixes: extend by a repeat of their last label or a blank.
        for &b in &branches {
            if let Some(p) = nodes[b].parent {
                if nodes[p].new.total != f64::NEG_INFINITY {
                    let previous =
                        if nodes[b].label == nodes[p].label { nodes[p].old.blank } else { nodes[p].old.total };
                    nodes[b].new.label = log_add(nodes[b].new.label, previous);
                }
                nodes[b].new.label += logp(nodes[b].label);
            }
            nodes[b].new.blank = nodes[b].old.total + logp(blank);
            nodes[b].new.total = log_add(nodes[b].new.blank, nodes[b].new.label);
            beam.push(b);
        }
        sort(&mut beam, &nodes);
        // New prefixes: each candidate prefix followed by each label.
        for &b in &branches {
            let candidate = |p: &Probs, beam: &[usize], nodes: &[Prefix]| {
                p.total > f64::NEG_INFINITY
                    && (beam.len() < beam_width || beam.last().is_some_and(|&w| p.total > nodes[w].new.total))
            };
            if !candidate(&nodes[b].old, &beam, &nodes) {
                continue;
            }
            let range = match nodes[b].children.clone() {
                Some(r) => r,
                None => {
                    if nodes.len() > MAX_PREFIXES {
                        bail!(
                            invalid,
                            "ctc_beam_search_decoder: the beam grew past {MAX_PREFIXES} prefixes; use a smaller beam_width (got {beam_width})"
                        );
                    }
                    let start = nodes.len();
                    for c in 0..blank {
                        nodes.push(Prefix { parent: Some(b), label: c, old: ZERO, new: ZERO, children: None });
                    }
                    nodes[b].children = Some(start..nodes.len());
                    start..nodes.len()
                }
            };
            for c in range {
                if nodes[c].new.total != f64::NEG_INFINITY {
                    continue;
                }
                let label = nodes[c].label;
                let previous = if label == nodes[b].label { nodes[b].old.blank } else { nodes[b].old.total };
                let l = logp(label) + previous;
                nodes[c].new = Probs { blank: f64::NEG_INFINITY, label: l, total: l };
                if candidate(&nodes[c].new, &beam, &nodes) {
                    if beam.len() == beam_width {
                        if let Some(w) = beam.pop() {
                            nodes[w].new = ZERO;
                        }
                    }
                    let at = beam.partition_point(|&o| nodes[o].new.total >= l);
                    beam.insert(at, c);
                } else {
                    nodes[c].old = ZERO;
                    nodes[c].new = ZERO;
                }
            }
        }
    }
    if beam.len() < top_paths {
        bail!(
            invalid,
            "ctc_beam_search_decoder: {} prefixes in the beam, fewer than top_paths = {top_paths}",
            beam.len()
        );
    }
    Ok(beam
        .iter()
        .take(top_paths)
        .map(|&e| {
            let mut labels = Vec::new();
            let mut at = Some(e);
            while let Some(i) = at {
                if nodes[i].parent.is_some() {
                    labels.push(nodes[i].label as i64);
                }
                at = nodes[i].parent;
            }
            labels.reverse();
            (labels, nodes[e].new.total)
        })
        .collect())
}

/// Beam search decoding of time-major logits `[time, batch, classes]`
/// (the blank is the last class): the `top_paths` most likely label
/// sequences of each example, best first, each rank as one
/// [`SparseLabels`], and their log-probabilities `[batch, top_paths]`.
/// Prefixes are scored with every alignment that yields them (blank-ending
/// and label-ending probabilities kept apart), as TensorFlow's
/// `tf.nn.ctc_beam_search_decoder` (which does not merge repeats).
#[track_caller]
pub fn ctc_beam_search_decoder(
    inputs: &Tensor,
    sequence_length: &Tensor,
    beam_width: usize,
    top_paths: usize,
) -> Result<(Vec<SparseLabels>, Tensor)> {
    let (x, lengths, [_, batch, classes]) = decoder_inputs("ctc_beam_search_decoder", inputs, sequence_length)?;
    if beam_width == 0 || top_paths == 0 || top_paths > beam_width || top_paths > crate::op::MAX_OUTPUTS || classes == 0
    {
        bail!(
            invalid,
            "ctc_beam_search_decoder needs 0 < top_paths ({top_paths}) <= beam_width ({beam_width}) and at least one class"
        );
    }
    let mut paths = vec![Vec::with_capacity(batch); top_paths];
    let mut log_probs = Vec::with_capacity(batch * top_paths);
    for (b, &len) in lengths.iter().enumerate() {
        let steps: Vec<&[f64]> =
            (0..len).map(|t| &x[(t * batch + b) * classes..(t * batch + b + 1) * classes]).collect();
        for (rank, (labels, lp)) in beam_search(&steps, classes, beam_width, top_paths)?.into_iter().enumerate() {
            paths[rank].push(labels);
            log_probs.push(lp);
        }
    }
    let decoded = paths.iter().map(|rows| SparseLabels::from_rows(rows)).collect::<Result<Vec<_>>>()?;
    let lp = ew::cast(&Tensor::from_vec(log_probs, [batch, top_paths])?, inputs.dtype())?;
    Ok((decoded, lp))
}

/// Merge repeated labels `[batch, time]` (within each row's
/// `seq_length`) into one, zero-padded to the longest result: the collapsed
/// labels `[batch, longest]` and their lengths (in `seq_length`'s dtype),
/// as `tf.nn.collapse_repeated`.
#[track_caller]
pub fn collapse_repeated(labels: &Tensor, seq_length: &Tensor) -> Result<(Tensor, Tensor)> {
    let d = labels.shape().dims().to_vec();
    if labels.rank() != 2
        || !labels.shape().is_fully_known()
        || seq_length.shape().dims() != [d[0]]
        || !seq_length.dtype().is_int()
        || !labels.dtype().is_int()
    {
        bail!(
            shape,
            "collapse_repeated needs integer labels [batch, time] and integer lengths [batch], got {} {:?} and {} {:?}",
            labels.dtype(),
            labels.shape(),
            seq_length.dtype(),
            seq_length.shape()
        );
    }
    let (batch, time) = (d[0], d[1]);
    let x = host_values::<i64>(&ew::cast(labels, DType::I64)?, "collapse_repeated")?;
    let lengths = host_values::<i64>(&ew::cast(seq_length, DType::I64)?, "collapse_repeated")?;
    let rows: Vec<Vec<i64>> = (0..batch)
        .map(|b| {
            let row = &x[b * time..(b + 1) * time];
            let len = lengths[b].clamp(0, time as i64) as usize;
            let mut out: Vec<i64> = Vec::with_capacity(len);
            for (t, &v) in row[..len].iter().enumerate() {
                if t == 0 || row[t - 1] != v {
                    out.push(v);
                }
            }
            out
        })
        .collect();
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut dense = vec![0i64; batch * longest];
    for (b, row) in rows.iter().enumerate() {
        dense[b * longest..b * longest + row.len()].copy_from_slice(row);
    }
    let new_len: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
    Ok((
        ew::cast(&Tensor::from_vec(dense, [batch, longest])?, labels.dtype())?,
        ew::cast(&Tensor::from_vec(new_len, [batch])?, seq_length.dtype())?,
    ))
}

/// Each row's distinct labels in order of first appearance, zero-padded to
/// the row's length (int64), and each label's index among them (int32):
/// `tf.nn.ctc_unique_labels`, for a CTC loss over unique labels.
#[track_caller]
pub fn ctc_unique_labels(labels: &Tensor) -> Result<(Tensor, Tensor)> {
    if labels.rank() != 2 {
        bail!(shape, "ctc_unique_labels needs labels [batch, length], got {:?}", labels.shape());
    }
    let mut out = apply(Op::Host { f: HostOp::UniqueRows }, &[labels])?;
    match (out.pop(), out.pop()) {
        (Some(idx), Some(y)) => Ok((y, idx)),
        _ => bail!(graph, "ctc_unique_labels produced no outputs"),
    }
}
