"""VideoMamba `.pth` files as training scripts save them: weights plus metadata objects, read without
running code; anything that would run code is refused before it does."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from videogemma.config import VideoMambaConfig
from videogemma.modeling.checkpoints import UnsafeCheckpointError, load_torch_checkpoint
from videogemma.modeling.videomamba import VideoMamba

CONFIG = VideoMambaConfig(
    embed_dim=24, depth=2, patch_size=8, num_frames=3, image_size=16, d_state=4, d_conv=3, expand=2, dt_rank=5
)


class EasyDict(dict):
    """easydict's EasyDict as released (a dict whose items are also attributes, nested dicts converted), and
    named like it: it pickles as `easydict.EasyDict` (NEWOBJ, the items, then the attributes as state)."""

    def __init__(self, d=None, **kwargs):
        for key, value in {**(d or {}), **kwargs}.items():
            setattr(self, key, value)

    def __setattr__(self, name, value):
        if isinstance(value, (list, tuple)):
            value = type(value)(EasyDict(x) if isinstance(x, dict) else x for x in value)
        elif isinstance(value, dict) and not isinstance(value, EasyDict):
            value = EasyDict(value)
        super().__setattr__(name, value)
        super().__setitem__(name, value)

    __setitem__ = __setattr__


EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"


@pytest.fixture
def save_with_easydict(monkeypatch):
    """torch.save with an importable `easydict` module (pickle checks the class is findable by name); loading
    happens after the module is gone again, as on a machine without easydict."""
    assert importlib.util.find_spec("easydict") is None  # the real one is not installed here

    def save(obj, path: Path) -> Path:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "easydict", types.SimpleNamespace(EasyDict=EasyDict))
            torch.save(obj, path)
        assert "easydict" not in sys.modules
        return path

    return save


def opengvlab_checkpoint() -> dict:
    """What OpenGVLab's training code writes: the weights under `model`, and the run's metadata beside them."""
    torch.manual_seed(0)
    state = VideoMamba(CONFIG).state_dict()
    config = EasyDict(
        model=dict(vision_encoder=dict(name="videomamba_middle", img_size=224)),
        optimizer=dict(lr=1e-4, betas=[0.9, 0.999]),
        num_frames=8,
        tags=[dict(kind="a"), "b"],
    )
    args = argparse.Namespace(lr=2e-4, output_dir="runs/m16", epochs=40, schedule=[10, 20])
    return {
        "model": state,
        "config": config,
        "args": args,
        "epoch": 39,
        "best_acc": np.float64(0.8125),
        "step": np.int64(12000),
        "class_weights": np.array([[0.5, 1.5], [2.0, 0.25]], dtype=np.float32),
        "names": np.array(["squats", "pushups"]),
    }


def test_metadata_loads_as_plain_data(tmp_path, save_with_easydict):
    checkpoint = opengvlab_checkpoint()
    path = save_with_easydict(checkpoint, tmp_path / "videomamba_m16_tiny.pth")
    with pytest.raises(pickle.UnpicklingError, match=r"easydict\.EasyDict"):  # what plain weights_only does
        torch.load(path, weights_only=True)

    loaded = load_torch_checkpoint(path)
    assert type(loaded["config"]) is dict
    assert loaded["config"] == {
        "model": {"vision_encoder": {"name": "videomamba_middle", "img_size": 224}},
        "optimizer": {"lr": 1e-4, "betas": [0.9, 0.999]},
        "num_frames": 8,
        "tags": [{"kind": "a"}, "b"],
    }
    assert type(loaded["config"]["model"]["vision_encoder"]) is dict
    assert type(loaded["config"]["tags"][0]) is dict
    assert type(loaded["args"]) is dict
    assert loaded["args"] == {"lr": 2e-4, "output_dir": "runs/m16", "epochs": 40, "schedule": [10, 20]}
    assert loaded["epoch"] == 39
    assert loaded["best_acc"] == 0.8125 and loaded["best_acc"].dtype == np.float64
    assert loaded["step"] == 12000 and loaded["step"].dtype == np.int64
    np.testing.assert_array_equal(loaded["class_weights"], checkpoint["class_weights"])
    assert loaded["class_weights"].dtype == np.float32
    np.testing.assert_array_equal(loaded["names"], checkpoint["names"])
    for key, tensor in checkpoint["model"].items():
        assert torch.equal(loaded["model"][key], tensor), key
    assert "easydict" not in sys.modules


def test_videomamba_reads_such_a_checkpoint(tmp_path, save_with_easydict):
    checkpoint = opengvlab_checkpoint()
    path = save_with_easydict(checkpoint, tmp_path / "videomamba_m16_tiny.pth")
    encoder = VideoMamba.from_original_checkpoint(path)
    assert encoder.config.embed_dim == CONFIG.embed_dim and encoder.config.depth == CONFIG.depth
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, checkpoint["model"][key]), key


def _touch(path: str) -> None:
    Path(path).touch()


class _Payload:
    """Unpickling this would create a marker file: by a function of this module, by `open`, by `os`."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "function":
            return _touch, (str(self.marker),)
        if self.how == "open":
            return open, (str(self.marker), "w")
        return os.makedirs, (str(self.marker),)


@pytest.mark.parametrize(
    ("how", "named"),
    [("function", f"{__name__}._touch"), ("open", "io.open"), ("os", "os.makedirs")],
)
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, save_with_easydict, how, named):
    marker = tmp_path / "marker"
    state = VideoMamba(CONFIG).state_dict()
    path = tmp_path / "videomamba_m16_tiny.pth"
    save_with_easydict({"model": state, "config": EasyDict(lr=1.0), "hook": _Payload(marker, how)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_torch_checkpoint(path)
    assert not marker.exists()
    message = str(error.value)
    assert str(path) in message and named in message
    assert "weights_only" not in message  # never the advice to load it unsafely
    assert error.value.refused == [named]  # easydict.EasyDict is not among the refused
    with pytest.raises(UnsafeCheckpointError, match=re.escape(named)):
        VideoMamba.from_original_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"junk"])
def test_a_corrupt_file_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.pth: not a readable torch checkpoint") as error:
        load_torch_checkpoint(path)
    assert not isinstance(error.value, UnsafeCheckpointError) and "weights_only" not in str(error.value)


def test_the_legacy_format_is_refused_the_same_way(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "legacy.pth"
    torch.save({"hook": _Payload(marker, "function")}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"{__name__}._touch")):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_omegaconf_containers_load_as_plain_data(tmp_path):
    omegaconf = pytest.importorskip("omegaconf", reason="only read when omegaconf is installed")
    config = omegaconf.OmegaConf.create(
        {"model": {"lr": 1e-3, "layers": [1, 2]}, "name": "m16", "run": "${name}-run"}
    )
    path = tmp_path / "videomamba.pth"
    torch.save({"model": VideoMamba(CONFIG).state_dict(), "config": config}, path)
    loaded = load_torch_checkpoint(path)["config"]
    assert type(loaded) is dict and type(loaded["model"]["layers"]) is list
    # Interpolations stay text: nothing is resolved while loading.
    assert loaded == {"model": {"lr": 1e-3, "layers": [1, 2]}, "name": "m16", "run": "${name}-run"}
