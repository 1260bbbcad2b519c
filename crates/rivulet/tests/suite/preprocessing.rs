//! Keras's preprocessing layers against Keras itself
//! (`tests/reference/keras_preprocessing.json`, made by
//! `keras_preprocessing.py` with real TensorFlow): Hashing's FarmHash
//! buckets, the lookups' OOV buckets and masks, the vocabulary order
//! `adapt` learns, Normalization's statistics over a batched dataset,
//! CategoryEncoding and Discretization. Then hand-computed cases and the
//! error paths.

use crate::common::*;
use rivulet::data::{Dataset, Field, Strings};
use rivulet::nn::{
    CategoryEncoding, Discretization, EncodingMode, Hashing, IntegerLookup, Layer, Normalization, StringLookup,
};
use rivulet::{DType, ErrorKind, Result, Tensor};
use serde_json::Value;
use std::path::PathBuf;

fn reference() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/keras_preprocessing.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn i64v(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|s| s.as_i64().unwrap()).collect()
}

fn f64v(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().cloned().unwrap_or_else(|| vec![s.clone()]))
        .map(|s| s.as_f64().unwrap())
        .collect()
}

#[test]
fn hashing_matches_keras_for_strings_and_integers() -> Result<()> {
    let r = reference();
    let words = Field::Strings(Strings::vector(strs(&r["words"])));
    let ints = Field::Tensor(Tensor::from_vec(i64v(&r["ints"]), [10])?);
    for bins in [1usize, 3, 10, 1000] {
        let h = Hashing::new(bins)?;
        assert_eq!(
            h.hash(&words)?.to_vec::<i64>()?,
            i64v(&r["hashing"][format!("str_{bins}")]),
            "strings, {bins} bins"
        );
        assert_eq!(h.hash(&ints)?.to_vec::<i64>()?, i64v(&r["hashing"][format!("int_{bins}")]), "ints, {bins} bins");
    }
    let masked = Hashing::new(10)?.mask_value("banana");
    assert_eq!(masked.hash(&words)?.to_vec::<i64>()?, i64v(&r["hashing"]["str_mask_10"]));
    let masked = Hashing::new(10)?.mask_value("2");
    assert_eq!(masked.hash(&ints)?.to_vec::<i64>()?, i64v(&r["hashing"]["int_mask_10"]));
    // The output keeps the input's shape; floats are refused.
    let grid = Field::Tensor(Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], [2, 3])?);
    assert_eq!(Hashing::new(7)?.hash(&grid)?.shape().dims(), &[2, 3]);
    assert_eq!(kind(Hashing::new(7)?.hash(&Field::Tensor(Tensor::scalar(1.5f32)))), ErrorKind::DType);
    assert_eq!(kind(Hashing::new(0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(Hashing::new(1)?.mask_value("x").hash(&words)), ErrorKind::InvalidArgument);
    Ok(())
}

#[test]
fn lookups_match_keras_oov_buckets_masks_and_adapt_order() -> Result<()> {
    let r = reference();
    let q = Strings::vector(strs(&r["string_lookup_query"]));
    let vocab = ["banana", "apple", "zebra"];
    let one = StringLookup::new(1, None).with_vocabulary(vocab)?;
    assert_eq!(one.lookup(&q)?.to_vec::<i64>()?, i64v(&r["string_lookup"]["oov1"]));
    let three = StringLookup::new(3, None).with_vocabulary(vocab)?;
    assert_eq!(three.lookup(&q)?.to_vec::<i64>()?, i64v(&r["string_lookup"]["oov3"]));
    let masked = StringLookup::new(3, Some("")).with_vocabulary(vocab)?;
    assert_eq!(masked.lookup(&q)?.to_vec::<i64>()?, i64v(&r["string_lookup"]["oov3_mask"]));
    assert_eq!(masked.vocabulary_size(), 1 + 3 + 3);

    let iq = Tensor::from_vec(i64v(&r["integer_lookup_query"]), [14])?;
    let one = IntegerLookup::new(1, None).with_vocabulary([12, 1, 99])?;
    assert_eq!(one.lookup(&iq)?.to_vec::<i64>()?, i64v(&r["integer_lookup"]["oov1"]));
    let three = IntegerLookup::new(3, None).with_vocabulary([12, 1, 99])?;
    assert_eq!(three.lookup(&iq)?.to_vec::<i64>()?, i64v(&r["integer_lookup"]["oov3"]));
    assert_eq!(three.vocabulary(), vec![-1, -1, -1, 12, 1, 99]);

    // adapt: most frequent first, ties in descending token order, as Keras.
    let corpus = strs(&r["string_lookup_adapt"]["corpus"]);
    let mut learned = StringLookup::new(2, None);
    learned.adapt(&Dataset::from_strings(corpus)?.batch(3, false)?)?;
    assert_eq!(learned.vocabulary(), strs(&r["string_lookup_adapt"]["vocabulary"]));
    let mut capped = StringLookup::new(2, None).max_tokens(4);
    capped.adapt(&Dataset::from_strings(["b", "a", "c", "a", "b", "a", "d"])?)?;
    assert_eq!(capped.vocabulary(), vec!["[UNK]", "[UNK]", "a", "b"]);
    let mut ints = IntegerLookup::new(1, Some(0));
    ints.adapt(&Dataset::from_tensor_slices(Tensor::from_vec(vec![5i64, 0, 7, 5, 0, 7, 7, 3], [8])?)?)?;
    assert_eq!(ints.vocabulary(), vec![0, -1, 7, 5, 3]);
    assert_eq!(ints.lookup(&Tensor::from_vec(vec![0i64, 3, 4, 7], [4])?)?.to_vec::<i64>()?, vec![0, 4, 1, 2]);

    // No OOV buckets: unknown tokens are -1; a token twice is an error.
    let strict = StringLookup::new(0, None).with_vocabulary(["a"])?;
    assert_eq!(strict.lookup(&Strings::vector(["a", "b"]))?.to_vec::<i64>()?, vec![0, -1]);
    assert_eq!(kind(StringLookup::new(1, None).with_vocabulary(["a", "a"])), ErrorKind::InvalidArgument);
    assert_eq!(kind(IntegerLookup::new(1, None).lookup(&Tensor::scalar(1.0f64))), ErrorKind::DType);
    Ok(())
}

#[test]
fn normalization_adapts_over_batches_like_keras() -> Result<()> {
    let r = &reference()["normalization"];
    let x = f64v(&r["x"]);
    let rows = x.len() / 3;
    let xs = Tensor::from_vec(x.iter().map(|&v| v as f32).collect::<Vec<_>>(), [rows, 3])?;
    let mut norm = Normalization::new();
    norm.adapt(&Dataset::from_tensor_slices(xs.clone())?.batch(8, false)?)?;
    for (got, want) in norm.mean().unwrap().iter().zip(f64v(&r["mean"])) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "mean {got} vs Keras {want}");
    }
    for (got, want) in norm.variance().unwrap().iter().zip(f64v(&r["variance"])) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "variance {got} vs Keras {want}");
    }
    let probe = Tensor::from_vec(f64v(&r["probe"]).iter().map(|&v| v as f32).collect::<Vec<_>>(), [2, 3])?;
    let out = norm.call(&probe, false)?;
    assert_eq!(out.dtype(), DType::F32);
    for (got, want) in values(&out).iter().zip(f64v(&r["normalized"])) {
        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "normalized {got} vs Keras {want}");
    }
    // The same statistics from one tensor, and inverted undoes it.
    let mut once = Normalization::new();
    once.adapt_tensor(&xs)?;
    for (a, b) in once.mean().unwrap().iter().zip(norm.mean().unwrap()) {
        assert!((a - b).abs() < 1e-9);
    }
    let inv = Normalization::with_stats(vec![1.0, 2.0], vec![4.0, 9.0])?.inverted();
    assert_eq!(values(&inv.call(&Tensor::from_vec(vec![1.0f32, -1.0], [1, 2])?, false)?), vec![3.0, -1.0]);
    // Not adapted, or a width that does not match: errors.
    assert_eq!(kind(Normalization::new().call(&probe, false)), ErrorKind::FailedPrecondition);
    assert!(norm.call(&Tensor::zeros([2, 4], DType::F32)?, false).is_err());
    assert!(Normalization::with_stats(vec![0.0], vec![-1.0]).is_err());
    Ok(())
}

#[test]
fn category_encoding_and_discretization_match_keras() -> Result<()> {
    let r = reference();
    let c = &r["category_encoding"];
    let idx = Tensor::from_vec(f64v(&c["indices"]).iter().map(|&v| v as i64).collect::<Vec<_>>(), [2, 3])?;
    let multi = CategoryEncoding::new(5, EncodingMode::MultiHot).call(&idx, false)?;
    assert_eq!(values(&multi), f64v(&c["multi_hot"]));
    assert_eq!(dims(&multi), vec![2, 5]);
    assert_eq!(values(&CategoryEncoding::new(5, EncodingMode::Count).call(&idx, false)?), f64v(&c["count"]));
    let one = CategoryEncoding::new(5, EncodingMode::OneHot).call(&Tensor::from_vec(vec![4i64, 0, 2], [3])?, false)?;
    assert_eq!(values(&one), f64v(&c["one_hot"]));
    assert_eq!(kind(CategoryEncoding::new(5, EncodingMode::OneHot).call(&idx, false)), ErrorKind::Shape);
    assert_eq!(kind(CategoryEncoding::new(3, EncodingMode::Count).call(&idx, false)), ErrorKind::InvalidArgument);

    let d = &r["discretization"];
    let disc = Discretization::new(f64v(&d["boundaries"]))?;
    let vals = Tensor::from_vec(f64v(&d["values"]).iter().map(|&v| v as f32).collect::<Vec<_>>(), [7])?;
    assert_eq!(disc.call(&vals, false)?.to_vec::<i64>()?, i64v(&d["buckets"]));
    assert!(Discretization::new(vec![1.0, 0.0]).is_err());
    // adapt: equal-count buckets at exact quantiles of 0..100.
    let data = Dataset::from_tensor_slices(Tensor::from_vec((0..100).map(|v| v as f64).collect::<Vec<_>>(), [100])?)?;
    let learned = Discretization::adapt(&data.batch(16, false)?, 4)?;
    assert_eq!(learned.bin_boundaries(), &[25.0, 50.0, 75.0]);
    let counts = learned
        .call(&Tensor::from_vec((0..100).map(|v| v as f64).collect::<Vec<_>>(), [100])?, false)?
        .to_vec::<i64>()?;
    for b in 0..4 {
        assert_eq!(counts.iter().filter(|&&v| v == b).count(), 25);
    }
    assert!(Discretization::adapt(&data, 1).is_err());
    Ok(())
}
