# Run once in a throwaway virtualenv with TensorFlow (2.21 here):
#   python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu && /tmp/tf/bin/python THIS
# CI never runs it; its output is pinned in tests/suite/fidelity.rs
# (argmax_and_argmin_skip_nan_as_tensorflow_does, integer_mean_is_exact_as_in_tensorflow).
import numpy as np
import tensorflow as tf

n = np.nan
for x in [[1.0, n, 3.0, n], [n, 1.0, 3.0, n], [n, n, n, n], [3.0, n, 1.0, n], [n, 5.0, 2.0, 5.0]]:
    t = tf.constant(x, tf.float32)
    print(x, int(tf.argmax(t)), int(tf.argmin(t)))
m = tf.constant([[1.0, n], [n, 2.0], [4.0, 3.0]], tf.float32)
print("axis 0", tf.argmax(m, 0).numpy().tolist(), tf.argmin(m, 0).numpy().tolist())
print(int(tf.reduce_mean(tf.constant([2**30, 2**30, 2**30], tf.int32))))
print(int(tf.reduce_mean(tf.constant([-3, 0], tf.int32))), int(tf.reduce_mean(tf.constant([-1, -1, 0], tf.int32))))
print(int(tf.reduce_mean(tf.constant([200, 200, 100], tf.uint8))))
print(int(tf.reduce_mean(tf.constant([2**62, 2**62, 2**62], tf.int64))))
print(tf.reduce_mean(tf.constant([[2**30, 2**30], [1, 2]], tf.int32), axis=1).numpy().tolist())
