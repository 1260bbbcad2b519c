# Run once in a throwaway virtualenv with TensorFlow (2.21, Keras 3.15 here):
#   python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu && /tmp/tf/bin/python THIS
# CI never runs it; its output is pinned in tests/suite/fidelity.rs.
# Reference values for tests/suite/fidelity.rs: Keras RMSprop and Adagrad,
# f64 variables, loss = scale * sum(w^3), three steps.
import tensorflow as tf, keras, numpy as np
def run(opt, scale, steps=3):
    w = tf.Variable(np.array([1.0, -0.5, 2.0], dtype=np.float64))
    for _ in range(steps):
        with tf.GradientTape() as t:
            loss = scale * tf.reduce_sum(w * w * w)
        g = t.gradient(loss, [w])
        opt.apply_gradients(zip(g, [w]))
    return w.numpy().tolist()
print("tf", tf.__version__, "keras", keras.__version__)
for scale in [1.0, 1e-4]:
    print("rmsprop(0.01)", scale, repr(run(keras.optimizers.RMSprop(0.01), scale)))
    print("adagrad(0.1)", scale, repr(run(keras.optimizers.Adagrad(0.1), scale)))
    print("adagrad(0.1, acc0=0)", scale, repr(run(keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.0), scale)))
