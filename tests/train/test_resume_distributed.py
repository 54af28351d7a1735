"""Command-line training in subprocesses: SIGKILL + `--resume` ends with the same weights as an uninterrupted
run; DDP with torchrun (2 CPU processes, gloo); DeepSpeed ZeRO-2 and ZeRO-3 (2 CPU processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "videogemma.modeling.videomamba", reason="the VideoMamba encoder (helper 'scan') has not landed yet"
)
import torch
from safetensors.torch import load_file

from videogemma.train.train_config import SHIPPED_CONFIGS

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT / "src"), env.get("PYTHONPATH", "")])
    return env


def _train_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "videogemma.cli", "train", "--config", str(config), *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "videogemma.cli", "train", "--config", str(config), *extra]  # fmt: skip
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)


def _assert_same_tensors(a: Path, b: Path) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tiny_config_file) -> None:
    changes = dict(max_steps=8, save_steps=2, eval_steps=2, save_total_limit=3, lora={"dropout": 0.1})
    reference = tiny_config_file("finetune", "reference", **changes)
    interrupted = tiny_config_file("finetune", "interrupted", **changes)
    subprocess.run(_train_command(reference), env=_env(), check=True, capture_output=True, timeout=300)

    run_dir = interrupted.with_suffix("")
    process = subprocess.Popen(_train_command(interrupted), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "adapter").exists(), "the run finished before it was killed"

    subprocess.run(
        _train_command(interrupted, "--resume"), env=_env(), check=True, capture_output=True, timeout=300
    )
    reference_dir = reference.with_suffix("")
    _assert_same_tensors(reference_dir / "adapter" / "adapter_model.safetensors",
                         run_dir / "adapter" / "adapter_model.safetensors")  # fmt: skip
    _assert_same_tensors(reference_dir / "projectors.safetensors", run_dir / "projectors.safetensors")
    steps = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 8  # the steps after the checkpoint, trained twice, are logged once


@pytest.mark.parametrize(
    ("stage", "changes", "weights"),
    [
        ("finetune", {}, "adapter/adapter_model.safetensors"),
        # From scratch with the video-answer alignment loss, which reads the visual tokens off the DDP output,
        # and a time limit that has passed after the first step: both ranks must stop at the same step.
        ("full", {"answer_alignment_weight": 1.0, "max_train_minutes": 1e-6}, "model/model.safetensors"),
    ],
)
def test_ddp_with_torchrun_on_two_cpu_processes(
    tiny_config_file, stage: str, changes: dict, weights: str
) -> None:
    config = tiny_config_file(
        stage, f"ddp_{stage}", per_device_train_batch_size=1, effective_batch_size=2, max_steps=2, **changes
    )
    result = _torchrun(config)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = config.with_suffix("")
    assert (run_dir / weights).is_file()
    # One process group, and the Trainer's DDP wrapper around it: gradients are averaged across the ranks.
    assert "2 processes (parallel mode distributed)" in result.stderr
    # The first rank reports; the second says only what goes wrong.
    assert result.stderr.count("parameters train; 2 processes") == 1
    assert result.stdout.count("run directory:") == 1
    assert "Grad strides do not match" not in result.stderr
    log = (run_dir / "metrics.jsonl").read_text()
    assert '"loss"' in log and '"eval_loss"' in log
    if changes:
        assert '"answer_alignment_loss"' in log
        assert (run_dir / "checkpoint-1").is_dir() and not (run_dir / "checkpoint-2").exists()


def test_deepspeed_zero2_on_two_cpu_processes(tiny_config_file) -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")
    config = tiny_config_file(
        "finetune",
        "zero2",
        per_device_train_batch_size=1,
        effective_batch_size=2,
        max_steps=2,
        deepspeed=str(SHIPPED_CONFIGS / "deepspeed" / "zero2.json"),
        precision="fp32",
    )
    result = _torchrun(config)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = config.with_suffix("")
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    projectors = load_file(run_dir / "projectors.safetensors")
    assert all(torch.isfinite(t).all() for t in projectors.values())


def test_deepspeed_zero3_with_every_parameter_partitioned_trains_as_ddp(tiny_config_file, tmp_path) -> None:
    """ZeRO-3 as at real scale: no parameter under the persistence threshold, each one freed after use. The
    frozen encoders' cache misses are encoded inside the engine's forward; one process's batch is a cache hit
    while the other's is a miss (the all-hits process must run the encoders with it), and the run trains the
    same adapter as DDP."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")
    zero3 = json.loads((SHIPPED_CONFIGS / "deepspeed" / "zero3.json").read_text())
    zero3["zero_optimization"].update(
        stage3_param_persistence_threshold=0,
        stage3_max_live_parameters=0,
        stage3_max_reuse_distance=0,
        stage3_prefetch_bucket_size=0,
    )
    (tmp_path / "zero3.json").write_text(json.dumps(zero3))
    common = dict(per_device_train_batch_size=1, effective_batch_size=2, max_steps=2, precision="fp32",
                  gradient_checkpointing=True, feature_cache_dir=str(tmp_path / "cache"))  # fmt: skip
    # One sample run first caches the first sample of the seeded order (and the validation split): the first
    # two-process batch is then one hit and one miss.
    warm = tiny_config_file("video-proj", "warm", **{**common, "effective_batch_size": 1, "max_steps": 1,
                                                     "eval_steps": 1})  # fmt: skip
    subprocess.run(_train_command(warm), env=_env(), check=True, capture_output=True, timeout=300)
    config = tiny_config_file("finetune", "zero3", deepspeed=str(tmp_path / "zero3.json"), **common)
    reference = tiny_config_file("finetune", "ddp", feature_cache="off", **common)

    result = _torchrun(config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _torchrun(reference).returncode == 0
    run_dir, ddp_dir = config.with_suffix(""), reference.with_suffix("")
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(entry.get("feature_cache_hits") for entry in log)
    losses = [[e["loss"] for e in _jsonl(d) if "loss" in e] for d in (run_dir, ddp_dir)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    ours, theirs = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (run_dir, ddp_dir))
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-3, atol=1e-5)
    # Each save gathered the trained tensors only (LoRA and the projectors), never the frozen base.
    gathered = re.findall(r"gathering the (\d+) trained tensors \([\d,]+ values\) of (\d+)", result.stderr)
    assert gathered and all(int(trained) < int(total) for trained, total in gathered)


def _jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
