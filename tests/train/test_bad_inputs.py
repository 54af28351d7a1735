"""Bad input and faults in `train` and in loading a run: a finished run is never replaced by accident, a
checkpoint is whole or absent, `--resume` passes over a damaged one, and a damaged adapter or projector file
is an error naming the file and the tensor."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from videogemma.modeling.integrity import ModelWeightsError

pytestmark = pytest.mark.slow


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(module_config_file) -> Path:
    """A finished `finetune` run (4 steps, checkpoints at 2 and 4), shared by the tests that only read it."""
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    config = module_config_file("finetune", "finished", max_steps=4, save_steps=2, save_total_limit=3)
    return run_training(load_train_config(config))


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A copy of the finished run whose config points at the copy."""
    import yaml

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    config = yaml.safe_load((copy / "train_config.yaml").read_text())
    config["output_dir"] = str(copy)
    (copy / "train_config.yaml").write_text(yaml.safe_dump(config))
    return copy


def _config_file(run_dir: Path) -> Path:
    return run_dir / "train_config.yaml"


def test_training_into_a_finished_run_is_refused_and_leaves_it_as_it_was(run_copy, capsys):
    from videogemma.cli import main

    before = snapshot(run_copy)
    assert main(["train", "--config", str(_config_file(run_copy))]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith("videogemma train: error:")
    assert f"output_dir {run_copy} holds a training run" in message and "--overwrite" in message
    assert snapshot(run_copy) == before


def test_overwrite_replaces_the_run_and_keeps_unrelated_files(run_copy):
    from videogemma.cli import main

    (run_copy / "notes.txt").write_text("mine")
    old_checkpoint = (run_copy / "checkpoint-4" / "trainer_state.json").read_bytes()
    config = run_copy.parent / "short.yaml"
    config.write_text(
        _config_file(run_copy).read_text()
    )  # the run's own config, outside the folder it clears
    assert main(["train", "--config", str(config), "--overwrite", "--max_steps", "2"]) == 0
    assert (run_copy / "notes.txt").read_text() == "mine"
    assert (run_copy / "checkpoint-2").is_dir() and not (run_copy / "checkpoint-4").exists()
    assert (run_copy / "checkpoint-2" / "trainer_state.json").read_bytes() != old_checkpoint


def test_resume_passes_over_a_damaged_newest_checkpoint(run_copy, caplog):
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    damaged = run_copy / "checkpoint-4" / "adapter_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="videogemma.train.run"):
        run_training(load_train_config(_config_file(run_copy)), resume=True)
    warnings = caplog.text
    assert f"passing over a damaged checkpoint: {damaged}" in warnings
    assert "continuing from checkpoint-2 instead" in warnings
    # Steps 3-4 ran again from checkpoint-2 and wrote a whole checkpoint-4.
    assert load_file(damaged).keys() and (run_copy / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_with_every_checkpoint_damaged_is_an_error(run_copy):
    from videogemma.train.run import run_training
    from videogemma.train.train_config import TrainConfigError, load_train_config

    for step in (2, 4):
        (run_copy / f"checkpoint-{step}" / "trainer_state.json").write_text("{")
    before = snapshot(run_copy)
    with pytest.raises(TrainConfigError, match=r"every checkpoint in .* is damaged .*checkpoint-4"):
        run_training(load_train_config(_config_file(run_copy)), resume=True)
    assert snapshot(run_copy) == before


def test_a_checkpoint_cut_short_never_appears_and_is_cleaned_up(tmp_path, tiny_config_file, monkeypatch):
    from transformers import Trainer

    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    def fail(self, output_dir):
        raise OSError("No space left on device")

    monkeypatch.setattr(Trainer, "_save_rng_state", fail)  # after the weights and optimizer, before the state
    config = load_train_config(tiny_config_file("finetune", "cut", max_steps=2, save_steps=1, eval_steps=1))
    with pytest.raises(OSError, match="No space left"):
        run_training(config)
    run_dir = Path(config.output_dir)
    assert not list(run_dir.glob("checkpoint-*"))  # only the staging folder holds the partial one
    assert [p.name for p in run_dir.glob(".staging-*")] == [".staging-checkpoint-1"]
    monkeypatch.undo()
    run_training(config, resume=True)  # no checkpoint to resume: starts over, and clears the staging folder
    assert not list(run_dir.glob(".staging-*")) and (run_dir / "checkpoint-2").is_dir()


def test_a_damaged_adapter_or_projector_file_is_named_when_the_run_loads(run_copy):
    from videogemma.loading import load_run

    adapter = run_copy / "adapter" / "adapter_model.safetensors"
    state = load_file(adapter)
    lora = sorted(name for name in state if "lora_A" in name)[0]
    original = dict(state)
    del state[lora]
    save_file(state, adapter)
    with pytest.raises(ModelWeightsError, match=f"{adapter}: missing tensor {lora}"):
        load_run(run_copy)
    state = dict(original)
    state[lora] = torch.zeros(state[lora].shape[0] + 1, state[lora].shape[1])
    save_file(state, adapter)
    with pytest.raises(ModelWeightsError, match=f"{adapter}: tensor {lora} has shape"):
        load_run(run_copy)
    save_file(original, adapter)

    projectors = run_copy / "projectors.safetensors"
    state = load_file(projectors)
    image_only = {k: v for k, v in state.items() if k.startswith("image_projector.")}
    save_file(image_only, projectors)
    with pytest.raises(ModelWeightsError, match=f"{projectors}: missing tensor video_projector"):
        load_run(run_copy)
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], float("inf"))
    save_file(state, projectors)
    with pytest.raises(ModelWeightsError, match=f"{projectors}: tensor {name} holds"):
        load_run(run_copy)
