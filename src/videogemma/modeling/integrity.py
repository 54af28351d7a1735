"""Weights that are what they claim: checks run when a saved model, adapter, projector file or checkpoint
is read, so that a damaged file is an error naming the file and the tensor instead of a model that answers
with random or NaN weights.

- `safetensors_header(path)`: the tensors a `.safetensors` file declares (name → shape), after checking that
  the file is whole: the header parses and the tensors' bytes fill the rest of the file exactly (a truncated
  or overwritten file fails here, before any loader reads it).
- `check_tensors_match(expected, found, where)`: every expected tensor present with its shape, nothing else.
- `check_finite(tensors, where)`: no NaN or infinite value in any floating-point tensor.
- `check_torch_archive(path)`: a `torch.save` file (optimizer, scheduler, RNG states) whose zip archive is
  whole and whose every member matches its CRC.
- `check_saved_weights(folder)` / `check_loaded_model(...)`: the two halves of a strict `from_pretrained`.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from videogemma.errors import ModelLoadError

# Bytes per element of the safetensors dtypes (those whose size is a whole number of bytes).
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
# A header larger than this is not a real one (safetensors itself caps it at 100 MB).
_MAX_HEADER_BYTES = 100_000_000
# Tensor names listed one by one in a message; the rest are counted.
_SHOWN = 3
# Elements checked for finiteness at a time (bounds the temporary boolean tensor on a huge embedding).
_FINITE_CHUNK = 1 << 24


class ModelWeightsError(ModelLoadError):
    """A weights file that is corrupt, lacks or mis-shapes a tensor the model needs, holds tensors it does
    not, or holds NaN / infinite values; the message names the file and the tensor."""


def safetensors_header(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Name → shape of each tensor of a safetensors file, after checking that the file is whole."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            prefix = file.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            raw = file.read(length) if 0 <= length <= min(size - 8, _MAX_HEADER_BYTES) else None
    except OSError as error:
        raise ModelWeightsError(f"{path}: cannot read it ({error})") from None
    if raw is None:
        raise ModelWeightsError(f"{path}: corrupt safetensors file (no valid header; truncated?)")
    try:
        header = json.loads(raw)
    except ValueError as error:  # bad JSON or UTF-8
        raise ModelWeightsError(f"{path}: corrupt safetensors file (unreadable header: {error})") from None
    if not isinstance(header, dict):
        raise ModelWeightsError(f"{path}: corrupt safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - length
    shapes, covered = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _entry(path, name, entry)
        if not 0 <= begin <= end <= data_bytes:
            raise ModelWeightsError(f"{path}: tensor {name} lies past the end of the file (truncated?)")
        element = _DTYPE_BYTES.get(dtype)
        if element is not None and math.prod(shape) * element != end - begin:
            raise ModelWeightsError(f"{path}: tensor {name} has {end - begin} bytes for shape {list(shape)}")
        shapes[name] = shape
        covered = max(covered, end)
    if covered != data_bytes:
        raise ModelWeightsError(
            f"{path}: corrupt safetensors file ({data_bytes - covered} stray bytes at the end)"
        )
    return shapes


def tensor_location(path: str | os.PathLike, name: str) -> tuple[str, tuple[int, ...], int]:
    """(dtype, shape, byte offset of its data in the file) of one tensor of a safetensors file, after checking
    that the file is whole: where a memory map of it starts."""
    path = Path(path)
    if name not in safetensors_header(path):
        raise ModelWeightsError(f"{path}: holds no tensor {name}")
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(length))
    dtype, shape, (begin, _) = _entry(path, name, header[name])
    return dtype, shape, 8 + length + begin


def _entry(path: Path, name: str, entry: object) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """(dtype, shape, (begin, end)) of one header entry."""
    try:
        dtype = str(entry["dtype"])  # type: ignore[index]
        shape = tuple(int(d) for d in entry["shape"])  # type: ignore[index]
        begin, end = (int(o) for o in entry["data_offsets"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise ModelWeightsError(f"{path}: corrupt safetensors header entry for tensor {name}") from None
    return dtype, shape, (begin, end)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def describe_mismatch(
    missing: Iterable[str], unexpected: Iterable[str], mis_shaped: Iterable[tuple[str, tuple, tuple]]
) -> str | None:
    """One line saying which tensors are missing, mis-shaped or unexpected; None when all match."""
    missing, unexpected, mis_shaped = sorted(missing), sorted(unexpected), sorted(mis_shaped)
    parts = []
    if missing:
        parts.append(f"missing tensor {_names(missing)}")
    if mis_shaped:
        name, in_file, in_model = mis_shaped[0]
        more = f" (and {len(mis_shaped) - 1} more mis-shaped)" if len(mis_shaped) > 1 else ""
        parts.append(f"tensor {name} has shape {list(in_file)} where the model needs {list(in_model)}{more}")
    if unexpected:
        parts.append(f"tensor {_names(unexpected)} not in the model")
    return "; ".join(parts) or None


def check_tensors_match(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], where: str | os.PathLike
) -> None:
    """Raise `ModelWeightsError` unless `found` holds exactly the `expected` tensors, each with its shape."""
    mis_shaped = [
        (name, tuple(found[name]), tuple(shape))
        for name, shape in expected.items()
        if name in found and tuple(found[name]) != tuple(shape)
    ]
    problem = describe_mismatch(set(expected) - set(found), set(found) - set(expected), mis_shaped)
    if problem:
        raise ModelWeightsError(f"{where}: {problem} (an incomplete file, or one for another configuration)")


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], where: str | os.PathLike) -> None:
    """Raise `ModelWeightsError` naming the first floating-point tensor with a NaN or infinite value."""
    for name, tensor in tensors:
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.device.type == "meta":
            continue
        flat = tensor.detach().reshape(-1)
        for start in range(0, flat.numel(), _FINITE_CHUNK):
            if not torch.isfinite(flat[start : start + _FINITE_CHUNK]).all():
                bad = int((~torch.isfinite(flat)).sum())
                raise ModelWeightsError(
                    f"{where}: tensor {name} holds {bad} NaN or infinite values (of {flat.numel()}); the file "
                    "is damaged or the training that wrote it diverged"
                )


def check_torch_archive(path: str | os.PathLike) -> None:
    """Raise `ModelWeightsError` unless `path` is a whole `torch.save` zip archive (every CRC checked)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ModelWeightsError(f"{path}: corrupt torch file ({error})") from None
    if damaged is not None:
        raise ModelWeightsError(f"{path}: corrupt torch file (member {damaged} fails its CRC check)")


def check_saved_weights(directory: Path) -> dict[str, Path]:
    """Tensor name → file of a saved model's safetensors weights (single file or shards), each file checked
    to be whole; empty for anything else (a Hub id, `.bin` weights)."""
    if not directory.is_dir():
        return {}
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if not index.is_file():
        return dict.fromkeys(safetensors_header(single), single) if single.is_file() else {}
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = {str(name): directory / str(shard) for name, shard in weight_map.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelWeightsError(f"{index}: not a readable weights index ({error})") from None
    for shard in sorted(set(files.values())):
        if not shard.is_file():
            raise ModelWeightsError(f"{shard}: missing (listed in {index})")
        safetensors_header(shard)
    return files


def check_loaded_model(
    model: torch.nn.Module,
    info: Mapping[str, Any],
    files: Mapping[str, Path],
    source: Path,
    tolerate_mismatch: bool,
) -> None:
    """After `from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)`: raise
    `ModelWeightsError` for a missing, unexpected or (unless tolerated) mis-shaped tensor, or a non-finite one,
    naming the file that holds (or should hold) it."""
    only_file = next(iter(set(files.values()))) if len(set(files.values())) == 1 else None

    def where(tensor: str | None) -> str:
        return str(files.get(tensor, only_file or source) if tensor is not None else only_file or source)

    mismatched = [] if tolerate_mismatch else list(info["mismatched_keys"])
    problem = describe_mismatch(info["missing_keys"], info["unexpected_keys"], mismatched)
    if problem:
        first = min([*info["missing_keys"], *(name for name, *_ in mismatched)], default=None)
        raise ModelWeightsError(
            f"{where(first)}: {problem} (an incomplete file, or one for another configuration)"
        )
    for name, tensor in model.state_dict().items():
        check_finite([(name, tensor)], where(name))
