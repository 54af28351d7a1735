"""Shared fixtures of the training tests: one tiny synthetic dataset per session, tiny configs.

The dataset is the project's own synthetic exercise clips (`data.synthetic`), split by `data.qved_prepare`:
18 clips of 32×32 pixels, 10 train / 4 val / 4 test. Configs train the `tiny` preset a few steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the clips and qved_{train,val,test}.json (video paths relative to it)."""
    from videogemma.datasets.qved.prepare import prepare_splits
    from videogemma.datasets.synthetic.generate import generate_dataset

    root = tmp_path_factory.mktemp("tiny_qved")
    generate_dataset(root, per_variant=1, seed=0, size=32, num_frames=8, fps=8.0, progress=False)
    prepare_splits(root)
    return root


def make_tiny_config(dataset: Path, out_dir: Path, stage: str = "full", **changes: Any) -> dict[str, Any]:
    """A config dict training the `tiny` preset for a few steps on the tiny dataset."""
    config: dict[str, Any] = {
        "stage": stage,
        "output_dir": str(out_dir),
        "model": {"preset": "tiny"},
        "data": {"train_file": str(dataset / "qved_train.json"), "val_file": str(dataset / "qved_val.json")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "learning_rate": 1e-3,
        "projector_learning_rate": 5e-4,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "effective_batch_size": 2,
        "eval_steps": 2,
        "save_total_limit": 2,
        "gradient_checkpointing": False,
        "feature_cache_dir": str(out_dir.parent / "feature_cache"),
        "plots": False,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def train_tiny(tmp_path: Path, tiny_dataset: Path) -> Callable[..., Path]:
    """`train_tiny(stage, name="run", **changes)` trains in-process and returns the run directory."""
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    def train(stage: str, name: str = "run", **changes: Any) -> Path:
        config = make_tiny_config(tiny_dataset, tmp_path / name, stage=stage, **changes)
        return run_training(load_train_config(write_config(tmp_path / f"{name}.yaml", config)))

    return train


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_dataset: Path) -> Callable[..., Path]:
    """`tiny_config_file(stage, name="run", **changes)` writes a config file and returns its path."""

    def write(stage: str, name: str = "run", **changes: Any) -> Path:
        config = make_tiny_config(tiny_dataset, tmp_path / name, stage=stage, **changes)
        return write_config(tmp_path / f"{name}.yaml", config)

    return write


@pytest.fixture(scope="module")
def module_config_file(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Callable[..., Path]:
    """`tiny_config_file` for module-scoped fixtures (a run trained once and read by several tests)."""

    def write(stage: str, name: str = "run", **changes: Any) -> Path:
        folder = tmp_path_factory.mktemp(name)
        config = make_tiny_config(tiny_dataset, folder / name, stage=stage, **changes)
        return write_config(folder / f"{name}.yaml", config)

    return write
