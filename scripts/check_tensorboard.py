"""Reads Rivulet's TensorBoard logs with TensorBoard's own EventAccumulator.

Usage: check_tensorboard.py LOGDIR EXPECTED.json DEMO_LOGDIR DEMO_EPOCHS

LOGDIR and EXPECTED.json come from `cargo run --example tensorboard_logs`;
DEMO_LOGDIR from `rivulet demo --epochs DEMO_EPOCHS --logdir DEMO_LOGDIR`.
Exits non-zero, saying what differs, on the first mismatch.
"""

import json
import struct
import sys
import zlib

from tensorboard.backend.event_processing import event_accumulator as ea_mod

CHECKS = 0


def check(condition, what):
    global CHECKS
    if not condition:
        sys.exit(f"FAIL: {what}")
    CHECKS += 1


def load(path):
    acc = ea_mod.EventAccumulator(path, size_guidance={k: 0 for k in ea_mod.DEFAULT_SIZE_GUIDANCE})
    acc.Reload()
    return acc


def f32(x):
    """x rounded to float32, as a `simple_value` stores it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def png_gray_pixels(data):
    """The pixels of an 8-bit grayscale, non-interlaced PNG (zlib and the
    five PNG row filters; no imaging library needed)."""
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature")
    pos, idat, width, height = 8, b"", None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            check((depth, color, interlace) == (8, 0, 0), f"an 8-bit gray PNG, got depth {depth} color {color}")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, out, prev = zlib.decompress(idat), [], [0] * width
    for r in range(height):
        row = raw[r * (width + 1) : (r + 1) * (width + 1)]
        kind, line = row[0], list(row[1:])
        for i in range(width):
            a = line[i - 1] if i else 0
            b, c = prev[i], prev[i - 1] if i else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out.extend(line)
        prev = line
    return width, height, out


def check_graph(acc, expected_names, where):
    graph = acc.Graph()
    names = {n.name for n in graph.node}
    check(len(graph.node) > 10, f"{where}: the graph has {len(graph.node)} nodes")
    if expected_names is not None:
        check(names <= set(expected_names), f"{where}: graph nodes not in the model's graph: {names - set(expected_names)}")
    for n in graph.node:
        check(n.op != "", f"{where}: node {n.name} has an op")
        for i in n.input:
            source = i[1:] if i.startswith("^") else i.split(":")[0]
            check(source in names, f"{where}: node {n.name}'s input {i} names no node")
    return graph


def check_run(logdir, expected):
    train, val = load(f"{logdir}/train"), load(f"{logdir}/validation")
    epochs = expected["epochs"]
    for acc, part in ((train, "train"), (val, "validation")):
        for tag, values in expected[part].items():
            events = acc.Scalars(tag)
            check([e.step for e in events] == list(range(epochs)), f"{part}/{tag} steps {[e.step for e in events]}")
            got, want = [e.value for e in events], [f32(v) for v in values]
            check(got == want, f"{part}/{tag}: {got} != {want}")
            print(f"  {part:<10} {tag:<15} steps 0..{epochs - 1}: {', '.join(f'{v:.6f}' for v in got)}")
    batch = train.Scalars("batch_loss")
    check([e.step for e in batch] == expected["batch_steps"], f"batch_loss steps {[e.step for e in batch]}")
    check(len(train.Scalars("batch_accuracy")) == len(batch), "batch_accuracy like batch_loss")
    print(f"  train      batch_loss      {len(batch)} points at steps {[e.step for e in batch]}")

    tags = train.Tags()
    want_histos = [name for name, _ in expected["histograms"]]
    check(sorted(tags["histograms"]) == sorted(want_histos), f"histogram tags {tags['histograms']} != {want_histos}")
    for name, count in expected["histograms"]:
        events = train.Histograms(name)
        check([e.step for e in events] == list(range(epochs)), f"histogram {name} steps")
        for e in events:
            h = e.histogram_value
            check(h.num == count and sum(h.bucket) == count, f"histogram {name}: num {h.num}, buckets sum {sum(h.bucket)}")
            check(h.min <= h.max and h.bucket_limit[-1] == h.max, f"histogram {name}: limits end at max")
            check(len(h.bucket) == len(h.bucket_limit) in (1, 30), f"histogram {name}: {len(h.bucket)} buckets")
        print(f"  histogram  {name:<15} {count} values, steps {[e.step for e in events]}")
    check(tags["graph"], "the train run has a graph")
    graph = check_graph(train, expected["graph_nodes"], "train")
    print(f"  graph      {len(graph.node)} nodes, every input names a node")
    check(val.Tags()["histograms"] == [] and not val.Tags()["graph"], "validation holds scalars only")

    samples = load(f"{logdir}/samples")
    images = expected["images"]
    check(sorted(samples.Tags()["images"]) == images["tags"], f"image tags {samples.Tags()['images']}")
    for tag in images["tags"]:
        (e,) = samples.Images(tag)
        check((e.width, e.height, e.step) == (images["width"], images["height"], 0), f"image {tag} size and step")
    w, h, pixels = png_gray_pixels(samples.Images(images["tags"][0])[0].encoded_image_string)
    check((w, h) == (images["width"], images["height"]), "PNG size")
    check(pixels == images["first_pixels"], f"PNG pixels {pixels} != {images['first_pixels']}")
    print(f"  images     {images['tags']}: {w}x{h} PNGs, the first one's pixels as written")
    text = expected["text"]
    (e,) = samples.Tensors(text["tag"])
    check(e.tensor_proto.string_val == [text["value"].encode()], f"text {e.tensor_proto.string_val}")
    check(text["tag"] in samples.PluginTagToContent("text"), "the text summary belongs to the text plugin")
    print(f"  text       {text['tag']!r}: {text['value']!r}")


def check_demo(logdir, epochs):
    train, val = load(f"{logdir}/train"), load(f"{logdir}/validation")
    for acc, part in ((train, "train"), (val, "validation")):
        for tag in ("epoch_loss", "epoch_accuracy"):
            steps = [e.step for e in acc.Scalars(tag)]
            check(steps == list(range(epochs)), f"demo {part}/{tag} steps {steps}")
    histos = train.Tags()["histograms"]
    dense = {f"inference/{layer}/{w}" for layer in ("dense", "dense_1", "dense_2") for w in ("kernel", "bias")}
    check(dense <= set(histos), f"demo: a histogram per weight of the three dense layers, got {histos}")
    check(train.Tags()["graph"], "demo: a graph")
    check_graph(train, None, "demo")
    samples = load(f"{logdir}/samples")
    (img,) = samples.Images("test_digits")
    check((img.width, img.height) == (80, 8), f"demo image {img.width}x{img.height}")
    check("about" in samples.PluginTagToContent("text"), "demo text summary")
    print(f"  demo: epoch_loss/epoch_accuracy for train and validation at {epochs} steps, "
          f"{len(histos)} weight histograms, the graph, an {img.width}x{img.height} image, a text summary")


def main():
    logdir, expected_path, demo_logdir, demo_epochs = sys.argv[1:5]
    with open(expected_path) as f:
        expected = json.load(f)
    print(f"EventAccumulator on {logdir}:")
    check_run(logdir, expected)
    print(f"EventAccumulator on {demo_logdir}:")
    check_demo(demo_logdir, int(demo_epochs))
    print(f"OK: {CHECKS} checks passed")


if __name__ == "__main__":
    main()
