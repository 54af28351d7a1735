"""The frozen-feature cache on plain tensors: exact round trip, keys, atomic writes, corrupt entries."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from videogemma.train.feature_cache import FeatureCache, file_content_hash, module_weights_hash

SETTINGS = {"num_frames": 8, "clip_size": 64}


def _video(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _features(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "clip_features": torch.randn(8, 16, 64, generator=g),
        "videomamba_features": torch.randn(64, 64, generator=g).to(torch.bfloat16),
        "keyframe_indices": torch.tensor([0, 3, 4, 6]),
    }


def test_round_trip_is_exact_and_counts_hits(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", "enc", SETTINGS)
    video = _video(tmp_path, "a.mp4", b"video bytes")
    assert cache.load(video) is None and cache.misses == 1
    stored = _features()
    cache.store(video, stored)
    loaded = cache.load(video)
    assert loaded is not None and cache.hits == 1
    for name, tensor in stored.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)


def test_key_follows_content_encoders_and_settings_not_path(tmp_path: Path) -> None:
    a = _video(tmp_path, "a.mp4", b"same")
    b = _video(tmp_path, "b.mp4", b"same")
    c = _video(tmp_path, "c.mp4", b"other")
    cache = FeatureCache(tmp_path / "cache", "enc", SETTINGS)
    assert cache.key(a) == cache.key(b)
    assert cache.key(a) != cache.key(c)
    assert FeatureCache(tmp_path / "cache", "enc2", SETTINGS).key(a) != cache.key(a)
    assert FeatureCache(tmp_path / "cache", "enc", {**SETTINGS, "num_frames": 16}).key(a) != cache.key(a)
    # A file rewritten in place (new size / mtime) is a new video.
    cache.store(a, _features())
    a.write_bytes(b"changed content")
    assert a not in cache


def test_corrupt_entry_counts_as_absent_and_is_removed(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", "enc", SETTINGS)
    video = _video(tmp_path, "a.mp4", b"x")
    cache.store(video, _features())
    entry = next((tmp_path / "cache").rglob("*.safetensors"))
    entry.write_bytes(b"truncated")
    assert cache.load(video) is None
    assert not entry.exists()


def _writer(args: tuple[str, str, int]) -> None:
    directory, video, seed = args
    cache = FeatureCache(directory, "enc", SETTINGS)
    for _ in range(5):
        cache.store(video, _features(seed))


def test_concurrent_writers_leave_one_complete_entry(tmp_path: Path) -> None:
    video = _video(tmp_path, "a.mp4", b"x")
    directory = str(tmp_path / "cache")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_writer, [(directory, str(video), 0), (directory, str(video), 0)])
    files = [p for p in Path(directory).rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    loaded = FeatureCache(directory, "enc", SETTINGS).load(video)
    assert loaded is not None and torch.equal(loaded["clip_features"], _features(0)["clip_features"])


def test_interrupted_write_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureCache(tmp_path / "cache", "enc", SETTINGS)
    video = _video(tmp_path, "a.mp4", b"x")

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.store(video, _features())
    monkeypatch.undo()
    assert video not in cache
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_hashes_change_with_bytes_and_weights(tmp_path: Path) -> None:
    assert file_content_hash(_video(tmp_path, "a", b"1")) != file_content_hash(_video(tmp_path, "b", b"2"))
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 4)
    before = module_weights_hash(module)
    assert module_weights_hash(module) == before
    with torch.no_grad():
        module.weight[0, 0] += 1
    assert module_weights_hash(module) != before
