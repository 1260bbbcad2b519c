"""The peer of `rivulet serve` for issue 19: the same digits model behind a
minimal Python HTTP server that calls TensorFlow.

It reads the weights of a Rivulet saved model (the demo's MLP, exported by
`rivulet demo --export DIR`: three Dense layers, relu, relu, logits) from
its safetensors file, builds the same Keras model, and answers TensorFlow
Serving's row format (`{"instances": [...]}` -> `{"predictions": [...]}`)
at POST /v1/models/digits:predict, one thread per connection
(`ThreadingHTTPServer`), the model call compiled with `tf.function`.

    python bench/peers/serve_tf.py DIR/1 --port 8502

Not run by CI (it needs TensorFlow): `bench/serve.sh` runs it beside
`rivulet serve` and measures both with `rivulet loadtest`.
"""

import argparse
import json
import os
import socket
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def read_safetensors(path):
    """name -> array, from a safetensors file (8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    dtypes = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def build_model(saved_model_dir):
    weights = read_safetensors(os.path.join(saved_model_dir, "variables", "variables.safetensors"))
    kernels = sorted((k for k in weights if k.endswith("kernel")), key=lambda k: (len(k), k))
    layers = []
    for i, k in enumerate(kernels):
        bias = weights[k[: -len("kernel")] + "bias"]
        last = i == len(kernels) - 1
        layer = tf.keras.layers.Dense(bias.shape[0], activation=None if last else "relu")
        layer.build((None, weights[k].shape[0]))
        layer.set_weights([weights[k], bias])
        layers.append(layer)
    model = tf.keras.Sequential(layers)
    call = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, 64], tf.float32)])
    return call


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=8502)
    args = parser.parse_args()
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    call = build_model(args.model_dir)
    call(np.zeros((1, 64), np.float32))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def setup(self):
            super().setup()
            # Headers and body go out in two writes: without this, Nagle's
            # algorithm holds the body for the client's delayed ACK (40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self):
            try:
                n = int(self.headers.get("content-length", 0))
                request = json.loads(self.rfile.read(n))
                x = np.asarray(request["instances"], dtype=np.float32)
                body = json.dumps({"predictions": call(x).numpy().tolist()}).encode()
                status = 200
            except Exception as e:  # the error body TensorFlow Serving gives
                body = json.dumps({"error": str(e)}).encode()
                status = 400
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"serving on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
