"""A reader of CTranslate2 `model.bin` files (binary version 6), with numpy/struct only (no ctranslate2)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_CT2_BINARY_VERSION = 6
_CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


class _Ct2Reader:
    """Sequential little-endian reader over the bytes of a CTranslate2 `model.bin`."""

    def __init__(self, data: bytearray):
        self.data = data
        self.offset = 0

    def _take(self, size: int) -> int:
        start = self.offset
        if start + size > len(self.data):
            raise ValueError(f"needs {start + size} bytes but the file has {len(self.data)}")
        self.offset += size
        return start

    def unpack(self, fmt: str) -> int:
        return struct.unpack_from("<" + fmt, self.data, self._take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        size = self.unpack("H")
        start = self._take(size)
        return self.data[start : start + size].rstrip(b"\0").decode("utf-8")

    def tensor(self) -> torch.Tensor:
        import torch

        shape = [self.unpack("I") for _ in range(self.unpack("B"))]
        dtype_id = self.unpack("B")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"unknown data type id {dtype_id}")
        dtype = getattr(torch, _CT2_DTYPES[dtype_id])
        num_bytes = self.unpack("I")
        count = num_bytes // dtype.itemsize
        if count * dtype.itemsize != num_bytes or count != torch.Size(shape).numel():
            raise ValueError(f"a variable of shape {shape} holds {num_bytes} bytes of {dtype}")
        start = self._take(num_bytes)
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(self.data, dtype=dtype, count=count, offset=start).reshape(shape)


def read_ct2_model(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
    """Parse a CTranslate2 `model.bin` (binary version 6) without importing ctranslate2.

    Layout: u32 version, spec name, u32 revision, u32 variable count, then per variable its name, u8 rank,
    `rank` u32 dims, u8 dtype, u32 byte count and the raw bytes; then u32 alias count and (alias, target) name
    pairs. Strings are a u16 byte count (NUL included) followed by the bytes.

    Returns:
        The spec name (e.g. `"WhisperSpec"`) and the variables by name, aliases resolved.

    Raises:
        ValueError: If the file is truncated, has trailing bytes or is not a version 6 model.
    """
    reader = _Ct2Reader(bytearray(Path(path).read_bytes()))
    version = reader.unpack("I")
    if version != _CT2_BINARY_VERSION:
        raise ValueError(f"binary version {version} is not {_CT2_BINARY_VERSION}")
    spec = reader.string()
    reader.unpack("I")  # spec revision
    variables = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        variables[name] = reader.tensor()
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise ValueError(f"alias {alias} points to the unknown variable {target}")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise ValueError(f"{len(reader.data) - reader.offset} unexpected bytes after the last record")
    return spec, variables
