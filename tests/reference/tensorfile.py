"""Reader and writer of anvil's named-tensor file (trainer/tensorfile.h), numpy only.

Format (little endian): 8 bytes magic "ANVTENS1", then records until end of file:
  u32 name_len, name, u32 dtype (0 float32, 1 int32), u32 ndim, i64 dims[ndim], data
"""
import struct

import numpy as np

MAGIC = b"ANVTENS1"
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<i4")}


def read_tensorfile(path):
    """Return {name: numpy array} of every tensor in the file, in file order."""
    out = {}
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != MAGIC:
        raise ValueError(f"{path}: not a tensorfile (bad magic)")
    pos = 8
    while pos < len(buf):
        (name_len,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        name = buf[pos:pos + name_len].decode("utf-8")
        pos += name_len
        dtype, ndim = struct.unpack_from("<II", buf, pos)
        pos += 8
        dims = struct.unpack_from(f"<{ndim}q", buf, pos)
        pos += 8 * ndim
        dt = DTYPES[dtype]
        n = int(np.prod(dims, dtype=np.int64)) if ndim else 1
        if pos + n * dt.itemsize > len(buf):
            raise ValueError(f"{path}: tensor '{name}' is truncated")
        out[name] = np.frombuffer(buf, dtype=dt, count=n, offset=pos).reshape(dims).copy()
        pos += n * dt.itemsize
    return out


def write_tensorfile(path, tensors):
    """Write {name: numpy array (float32 or int32)} in the same format."""
    with open(path, "wb") as f:
        f.write(MAGIC)
        for name, a in tensors.items():
            a = np.asarray(a)
            code = 1 if np.issubdtype(a.dtype, np.integer) else 0
            a = np.ascontiguousarray(a, dtype=DTYPES[code])
            nb = name.encode("utf-8")
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<II", code, a.ndim))
            f.write(struct.pack(f"<{a.ndim}q", *a.shape))
            f.write(a.tobytes())
