"""Reference values for Rivulet's preprocessing layers, made with real Keras.

Run in a throwaway virtualenv with TensorFlow installed:
    python keras_preprocessing.py > keras_preprocessing.json
CI never runs this; the JSON it wrote is committed next to it.
"""
import json

import numpy as np
import tensorflow as tf
from tensorflow import keras

words = ["apple", "banana", "cherry", "", "naïve", "zebra", "tf.data", "12", "-7", "apple pie"]
ints = [0, 1, 2, 12, -7, 123456789, -1, 40, 41, 99]
out = {"words": words, "ints": ints}

# Hashing: strings and integers, with and without a mask value.
out["hashing"] = {}
for bins in (1, 3, 10, 1000):
    out["hashing"][f"str_{bins}"] = keras.layers.Hashing(num_bins=bins)(tf.constant(words)).numpy().tolist()
    out["hashing"][f"int_{bins}"] = keras.layers.Hashing(num_bins=bins)(tf.constant(ints, tf.int64)).numpy().tolist()
out["hashing"]["str_mask_10"] = keras.layers.Hashing(num_bins=10, mask_value="banana")(tf.constant(words)).numpy().tolist()
out["hashing"]["int_mask_10"] = keras.layers.Hashing(num_bins=10, mask_value=2)(tf.constant(ints, tf.int64)).numpy().tolist()

# StringLookup / IntegerLookup with several OOV buckets and a mask token.
vocab = ["banana", "apple", "zebra"]
q = words + ["kiwi", "mango", "papaya", "fig"]
out["string_lookup_query"] = q
out["string_lookup"] = {
    "oov1": keras.layers.StringLookup(vocabulary=vocab)(tf.constant(q)).numpy().tolist(),
    "oov3": keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=3)(tf.constant(q)).numpy().tolist(),
    "oov3_mask": keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=3, mask_token="")(tf.constant(q)).numpy().tolist(),
}
ivocab = [12, 1, 99]
iq = ints + [5, 6, 7, 1000]
out["integer_lookup_query"] = iq
out["integer_lookup"] = {
    "oov1": keras.layers.IntegerLookup(vocabulary=ivocab)(tf.constant(iq, tf.int64)).numpy().tolist(),
    "oov3": keras.layers.IntegerLookup(vocabulary=ivocab, num_oov_indices=3)(tf.constant(iq, tf.int64)).numpy().tolist(),
}
# Adapt: the vocabulary by frequency.
corpus = ["b", "a", "c", "a", "b", "a", "d"]
sl = keras.layers.StringLookup(num_oov_indices=2)
sl.adapt(tf.constant(corpus))
out["string_lookup_adapt"] = {"corpus": corpus, "vocabulary": sl.get_vocabulary()}

# Normalization.adapt over a dataset of batches.
rng = np.random.default_rng(7)
x = (rng.normal(size=(37, 3)) * [1.0, 10.0, 0.0] + [2.0, -5.0, 3.0]).astype(np.float32)
norm = keras.layers.Normalization(axis=-1)
norm.adapt(tf.data.Dataset.from_tensor_slices(x).batch(8))
probe = np.array([[0.0, 0.0, 3.0], [2.0, -5.0, 4.0]], np.float32)
out["normalization"] = {
    "x": x.tolist(),
    "mean": np.asarray(norm.mean).reshape(-1).tolist(),
    "variance": np.asarray(norm.variance).reshape(-1).tolist(),
    "probe": probe.tolist(),
    "normalized": norm(probe).numpy().tolist(),
}

# CategoryEncoding and Discretization (with given boundaries).
idx = np.array([[0, 2, 2], [3, 3, 1]], np.int64)
out["category_encoding"] = {
    "indices": idx.tolist(),
    "multi_hot": keras.layers.CategoryEncoding(num_tokens=5, output_mode="multi_hot")(idx).numpy().tolist(),
    "count": keras.layers.CategoryEncoding(num_tokens=5, output_mode="count")(idx).numpy().tolist(),
    "one_hot": keras.layers.CategoryEncoding(num_tokens=5, output_mode="one_hot")(np.array([4, 0, 2], np.int64)).numpy().tolist(),
}
vals = np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 9.0], np.float32)
out["discretization"] = {
    "boundaries": [0.0, 1.0, 2.0],
    "values": vals.tolist(),
    "buckets": keras.layers.Discretization(bin_boundaries=[0.0, 1.0, 2.0])(vals).numpy().tolist(),
}
out["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
print(json.dumps(out, indent=1))
