"""Writes the NumPy files the dataset tests read: an .npz made by np.savez
and one made by np.savez_compressed (x: float32 [6, 2] = arange(12) / 4,
y: int64 [6] = 10 * arange(6), name: a string array NumPy can hold but
Rivulet's tensors cannot), and a big-endian and a Fortran-order .npy.
Run with NumPy installed: python make_arrays.py
"""
import numpy as np

x = (np.arange(12, dtype=np.float32) / 4).reshape(6, 2)
y = 10 * np.arange(6, dtype=np.int64)
names = np.array(["a", "b", "c", "d", "e", "f"])
np.savez("arrays.npz", x=x, y=y, name=names)
np.savez_compressed("arrays_compressed.npz", x=x, y=y)
np.save("big_endian.npy", np.arange(8, dtype=">f8").reshape(4, 2))
np.save("fortran.npy", np.asfortranarray(np.arange(6, dtype=np.int32).reshape(3, 2)))
