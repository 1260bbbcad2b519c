"""Writes wine.csv (and, for the tests, wine.parquet and wine.arrow): scikit-learn's
bundled copy of the UCI Wine data set (Forina et al.; UCI Machine Learning Repository,
CC BY 4.0), 178 wines, 13 measurements, 3 cultivars. The rows are shuffled once with a
fixed seed (the original lists the classes in order, so a validation split from the end
would hold one class only); the label column `class` holds the class names.

Run with scikit-learn and pyarrow installed: python make_wine.py
"""
import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
from sklearn.datasets import load_wine

here = os.path.dirname(os.path.abspath(__file__))
w = load_wine()
order = np.random.default_rng(178).permutation(len(w.target))
names = [n.replace("/", "_") for n in w.feature_names]
with open(os.path.join(here, "wine.csv"), "w", newline="\n") as f:
    out = csv.writer(f, lineterminator="\n")
    out.writerow(names + ["class"])
    for i in order:
        out.writerow([repr(float(v)) for v in w.data[i]] + [w.target_names[w.target[i]]])

tests = os.path.join(here, "..", "..", "tests", "data")
os.makedirs(tests, exist_ok=True)
cols = {n: pa.array(w.data[order, j].astype(np.float64)) for j, n in enumerate(names)}
cols["class"] = pa.array([str(w.target_names[w.target[i]]) for i in order])
cols["label"] = pa.array(w.target[order].astype(np.int32))
table = pa.table(cols)
pq.write_table(table, os.path.join(tests, "wine.parquet"), row_group_size=50, compression="snappy")
feather.write_feather(table, os.path.join(tests, "wine.arrow"), compression="uncompressed")
