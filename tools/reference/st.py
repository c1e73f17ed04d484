"""Minimal safetensors reader/writer and numeric decoders, numpy only.

Independent of sickle's C++ code. Format (huggingface/safetensors): u64 little-endian header
length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end)}, __metadata__},
then the data section; offsets are relative to byte 8 + N.
"""
import json
import os
import struct

import numpy as np

# dtype string -> (numpy storage type, bytes per element)
STORAGE = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.uint8,
}


def bf16_to_f32(u16):
    """bfloat16 bits -> float32 (exact: bf16 is the top half of an f32)."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    """float32 -> bfloat16 bits, round to nearest even (NaN kept as NaN)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    out = rounded.astype(np.uint16)
    out[nan] = 0x7FC0
    return out


def _e4m3_table():
    """All 256 float8 e4m3fn values (OCP FP8: bias 7, no infinities, S.1111.111 = NaN)."""
    t = np.zeros(256, dtype=np.float64)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e = (b >> 3) & 0xF
        m = b & 0x7
        if e == 0xF and m == 0x7:
            t[b] = np.nan
        elif e == 0:
            t[b] = s * (m / 8.0) * 2.0 ** -6
        else:
            t[b] = s * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return t


E4M3 = _e4m3_table()


def fp8_e4m3_to_f64(u8):
    return E4M3[np.asarray(u8, dtype=np.uint8)]


def f64_to_fp8_e4m3(x):
    """Nearest e4m3fn code (ties: smaller magnitude code); saturates at +-448. For writing test
    checkpoints only."""
    x = np.clip(np.asarray(x, dtype=np.float64), -448.0, 448.0)
    finite = np.where(np.isnan(E4M3), np.inf, E4M3)
    pos = np.arange(128)
    vals = finite[pos]  # non-negative codes 0..127 (127 = NaN -> inf, never nearest)
    mag = np.abs(x).reshape(-1, 1)
    idx = np.argmin(np.abs(vals[None, :] - mag), axis=1).astype(np.uint8)
    sign = (np.signbit(x).reshape(-1) & (idx != 0)).astype(np.uint8) << 7
    return (idx | sign).reshape(np.shape(x)).astype(np.uint8)


class SafeTensors:
    """One .safetensors file, read fully into memory (the checkpoints used here are small)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n].decode("utf-8"))
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header = header
        self._data = memoryview(raw)[8 + n:]
        for name, h in header.items():
            b, e = h["data_offsets"]
            numel = int(np.prod(h["shape"], dtype=np.int64)) if h["shape"] else 1
            size = np.dtype(STORAGE[h["dtype"]]).itemsize
            if e - b != numel * size or e > len(self._data):
                raise ValueError(f"{path}: tensor {name}: bad data_offsets {b},{e} for {h['dtype']} {h['shape']}")

    def names(self):
        return list(self.header.keys())

    def dtype(self, name):
        return self.header[name]["dtype"]

    def shape(self, name):
        return list(self.header[name]["shape"])

    def raw_bytes(self, name):
        b, e = self.header[name]["data_offsets"]
        return bytes(self._data[b:e])

    def get(self, name):
        """The stored values as a numpy array of the storage type (BF16 as uint16 bits, FP8 as uint8)."""
        h = self.header[name]
        b, e = h["data_offsets"]
        arr = np.frombuffer(self._data[b:e], dtype=STORAGE[h["dtype"]])
        return arr.reshape(h["shape"]) if h["shape"] else arr.reshape(())

    def get_f64(self, name):
        """Decoded to float64 for float dtypes; integers converted as they are."""
        dt = self.dtype(name)
        a = self.get(name)
        if dt == "BF16":
            return bf16_to_f32(a).astype(np.float64)
        if dt == "F8_E4M3":
            return fp8_e4m3_to_f64(a)
        if dt == "F8_E5M2":
            raise NotImplementedError(f"{self.path}: {name}: F8_E5M2 not used by this model family")
        return a.astype(np.float64)


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_str, numpy array in storage type)} or {name: np.ndarray} with the
    dtype inferred for float64/float32/int32/int64/uint8. Written in sorted-name order, header
    padded with spaces to a multiple of 8."""
    infer = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int32): "I32",
             np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    items = []
    for name in sorted(tensors):
        v = tensors[name]
        if isinstance(v, tuple):
            dt, arr = v
        else:
            arr = np.asarray(v)
            dt = infer[arr.dtype]
        arr = np.ascontiguousarray(np.asarray(arr, dtype=STORAGE[dt]))
        items.append((name, dt, list(arr.shape), arr.tobytes()))
    header = {}
    off = 0
    for name, dt, shape, data in items:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for _, _, _, data in items:
            f.write(data)
    os.replace(tmp, path)
