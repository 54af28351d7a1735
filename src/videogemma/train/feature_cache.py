"""On-disk cache of the frozen encoders' outputs per video (ARCHITECTURE §7).

When CLIP and VideoMamba are frozen (eval mode, no grad) and no random augmentation is on, a video always
yields the same `VideoFeatures`, so they are computed once and read back in later epochs and later runs.

An entry is keyed by
- the video file's content hash (not its path: a re-encoded file at the same path is a different video),
- the encoder weights' hash (a different CLIP or VideoMamba gives different features),
- the frame settings (frames, sizes, normalisation, chunking: anything that changes the pixels or the keyframes).

Writes go to a unique temporary file in the same folder, then `os.replace` moves it into place, so concurrent
workers and processes never read a half-written entry and a killed write leaves only a stray temp file.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_HASH_BLOCK = 1 << 20


def file_content_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def module_weights_hash(*modules: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the modules' parameters and buffers."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """A folder of `<key>.safetensors` files, one per (video, encoders, frame settings)."""

    def __init__(self, directory: str | Path, encoder_hash: str, frame_settings: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = json.dumps(frame_settings, sort_keys=True, default=str)
        self._salt = hashlib.sha256(f"{encoder_hash}\n{settings}".encode()).hexdigest()
        # Content hashes of files already read in this process, invalidated by size or mtime changes.
        self._content_hashes: dict[tuple[str, int, int], str] = {}
        self.hits = 0
        self.misses = 0

    def key(self, video_path: str | Path) -> str:
        path = os.path.realpath(video_path)
        stat = os.stat(path)
        memo = (path, stat.st_size, stat.st_mtime_ns)
        if memo not in self._content_hashes:
            self._content_hashes[memo] = file_content_hash(path)
        return hashlib.sha256(f"{self._content_hashes[memo]}\n{self._salt}".encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, video_path: str | Path) -> dict[str, torch.Tensor] | None:
        """The cached tensors of one video, or None when absent (a corrupt entry is removed and counts as absent)."""
        entry = self._entry(self.key(video_path))
        try:
            tensors = load_file(entry)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (SafetensorError, OSError, ValueError):
            entry.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return tensors

    def store(self, video_path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
        entry = self._entry(self.key(video_path))
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = entry.with_name(f".{entry.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, temporary)
            os.replace(temporary, entry)
        finally:
            temporary.unlink(missing_ok=True)

    def __contains__(self, video_path: str | Path) -> bool:
        return self._entry(self.key(video_path)).is_file()
