"""The same training command twice gives the same weights: seeded initial weights, data order and DataLoader
workers, one torch thread (what `videogemma demo` relies on for the same figures on every run)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "videogemma.modeling.videomamba", reason="the VideoMamba encoder (helper 'scan') has not landed yet"
)
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def test_a_short_training_run_twice_ends_with_equal_weights(train_tiny) -> None:
    # The demo's kind of run: `full` from scratch with the alignment loss, a DataLoader worker decoding into the
    # frame cache, shuffled epochs (10 clips, batch 2: step 6 starts the second epoch), one thread.
    changes = dict(
        max_steps=6, eval_steps=6, answer_alignment_weight=1.0, torch_threads=1, weight_decay=0.01,
        data={"num_workers": 1, "frame_cache_mb": 64},
    )  # fmt: skip
    first, second = (train_tiny("full", name, **changes) for name in ("first", "second"))
    weights = [load_file(run / "model" / "model.safetensors") for run in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    # The runs did train: the weights moved from the seed's initial ones.
    initial = _initial_weights()
    assert any(not torch.equal(weights[0][key], initial[key]) for key in weights[0] if key in initial)
    logs = [(run / "metrics.jsonl").read_text().splitlines() for run in (first, second)]
    losses = [[line for line in log if '"loss"' in line] for log in logs]
    assert len(losses[0]) == 6 and _losses(losses[0]) == _losses(losses[1])


def _initial_weights() -> dict[str, torch.Tensor]:
    from videogemma.loading import ModelSource, build_model

    return build_model(ModelSource(preset="tiny"), seed=42).state_dict()


def _losses(lines: list[str]) -> list[float]:
    import json

    return [json.loads(line)["loss"] for line in lines]
