"""A reader for CTranslate2's ``model.bin``: a flat container of named arrays (no ctranslate2 needed).

The layout (little-endian; read from a real file, binary version 6, spec ``WhisperSpec`` revision 3)::

    uint32  binary_version                      (4, 5 or 6 are read here)
    string  spec_name                           e.g. "WhisperSpec"
    uint32  spec_revision
    uint32  num_variables
    num_variables x:
        string  name                            e.g. "encoder/layer_0/self_attention/linear_0/weight"
        uint8   rank
        uint32  dims[rank]
        uint8   dtype_id                        0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
        uint32  num_bytes
        bytes   data[num_bytes]                 row-major (C order)
    uint32  num_aliases                         (binary_version >= 3)
    num_aliases x: string alias, string target  e.g. "decoder/projection/weight" -> "decoder/embeddings/weight"

where ``string`` is a uint16 length (including a trailing NUL) followed by that many bytes. Scalars (rank 0)
hold settings such as ``encoder/num_heads`` (int16). Quantised models store an int8/int16 ``.../weight`` with a
float ``.../weight_scale`` (weight = stored / scale); :func:`load_ct2` dequantises those.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lyra_sdk.errors import CheckpointError

_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: raw 16-bit patterns, reinterpreted by torch
}
_BFLOAT16 = 5


@dataclass(frozen=True)
class Ct2Variable:
    """Where one array lives in the file."""

    name: str
    shape: tuple[int, ...]
    dtype_id: int
    offset: int
    num_bytes: int


@dataclass
class Ct2Model:
    """The parsed header of a ``model.bin``: spec name, revision, variables by name and aliases."""

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, Ct2Variable]
    aliases: dict[str, str]


class _Reader:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise CheckpointError(f"{self.path}: truncated CTranslate2 file (wanted {size} bytes at offset {self.pos})")
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        length = self.take("H")
        raw = bytes(self.data[self.pos:self.pos + length])
        if len(raw) != length:
            raise CheckpointError(f"{self.path}: truncated CTranslate2 file (string at offset {self.pos})")
        self.pos += length
        return raw.rstrip(b"\0").decode("utf-8")


def read_ct2_header(path: str | Path) -> Ct2Model:
    """Parse the variable table of a CTranslate2 ``model.bin`` (array data is not read)."""
    path = Path(path)
    try:
        data = memoryview(np.memmap(path, dtype=np.uint8, mode="r"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read CTranslate2 model {path}: {exc}") from exc
    r = _Reader(data, path)
    version = r.take("I")
    if not 4 <= version <= 6:
        raise CheckpointError(f"{path}: unsupported CTranslate2 binary version {version} (supported: 4 to 6)")
    spec, revision = r.string(), r.take("I")
    variables: dict[str, Ct2Variable] = {}
    for _ in range(r.take("I")):
        name = r.string()
        shape = tuple(r.take("I") for _ in range(r.take("B")))
        dtype_id, num_bytes = r.take("B"), r.take("I")
        if dtype_id not in _DTYPES:
            raise CheckpointError(f"{path}: variable {name!r} has unknown CTranslate2 dtype id {dtype_id}")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype_id].itemsize
        if num_bytes != expected or r.pos + num_bytes > len(data):
            raise CheckpointError(f"{path}: variable {name!r} of shape {shape} declares {num_bytes} bytes "
                                  f"(expected {expected}) or runs past the end of the file")
        variables[name] = Ct2Variable(name, shape, dtype_id, r.pos, num_bytes)
        r.pos += num_bytes
    aliases = {}
    for _ in range(r.take("I")):
        alias = r.string()
        aliases[alias] = r.string()
    return Ct2Model(path, version, spec, revision, variables, aliases)


def _raw(model: Ct2Model, name: str) -> Tensor:
    var = model.variables[model.aliases.get(name, name)]
    dtype = _DTYPES[var.dtype_id]
    arr = np.fromfile(model.path, dtype=dtype, count=var.num_bytes // dtype.itemsize, offset=var.offset)
    t = torch.from_numpy(arr.reshape(var.shape))
    return t.view(torch.bfloat16) if var.dtype_id == _BFLOAT16 else t


def has_variable(model: Ct2Model, name: str) -> bool:
    """Whether ``name`` (or an alias of it) is stored."""
    return model.aliases.get(name, name) in model.variables


def load_ct2(model: Ct2Model, name: str) -> Tensor:
    """One array as a float32 tensor (int8/int16 weights with a ``weight_scale`` are dequantised).

    Scalars come back as 0-d tensors of their stored type.
    """
    if not has_variable(model, name):
        raise CheckpointError(f"{model.path}: missing CTranslate2 variable {name!r}")
    t = _raw(model, name)
    if t.dim() == 0:
        return t
    if not t.is_floating_point():
        scale_name = name + "_scale"
        if not has_variable(model, scale_name):
            raise CheckpointError(f"{model.path}: integer variable {name!r} has no {scale_name!r} to dequantise it")
        if has_variable(model, name.rsplit("/", 1)[0] + "/weight_zero"):
            raise CheckpointError(f"{model.path}: {name!r} uses zero-point (AWQ) quantisation, which is not supported")
        scale = _raw(model, scale_name).float()
        scale = scale.reshape(-1, *([1] * (t.dim() - 1))) if scale.dim() else scale  # per output row
        return t.float() / scale
    return t.float()


def scalar(model: Ct2Model, name: str) -> int:
    """A stored integer setting such as ``encoder/num_heads``."""
    if not has_variable(model, name):
        raise CheckpointError(f"{model.path}: missing CTranslate2 variable {name!r}")
    value = _raw(model, name).reshape(-1)
    if value.numel() != 1:
        raise CheckpointError(f"{model.path}: {name!r} should be a scalar, got shape {tuple(value.shape)}")
    return int(value[0].item())
