"""A bf16 training run on the CPU: the base in bf16, LoRA and projectors trained and saved in fp32, and
`load_run` rebuilding the same bf16 base from the seed."""

from __future__ import annotations

import json

import torch
import yaml
from safetensors.torch import load_file

from videogemma.loading import ModelSource, build_model, load_run


def test_a_bf16_run_keeps_its_masters_in_fp32_and_reloads_its_base(train_tiny) -> None:
    run_dir = train_tiny("finetune", "bf16", precision="bf16", max_steps=2)
    saved = yaml.safe_load((run_dir / "train_config.yaml").read_text())
    assert saved["model"]["dtype"] == "bfloat16"  # resolved from auto: what load_run rebuilds
    for weights in (run_dir / "adapter" / "adapter_model.safetensors", run_dir / "projectors.safetensors"):
        assert {t.dtype for t in load_file(weights).values()} == {torch.float32}, weights.name
    losses = [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses if loss is not None)

    model, _ = load_run(run_dir, torch.bfloat16)
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    assert model.videomamba.layers[0].mixer.A_log.dtype == torch.float32
    # The frozen encoders are the seed's bf16 preset weights, as in training (LoRA only touched the decoder).
    fresh = build_model(ModelSource(preset="tiny"), seed=42, dtype=torch.bfloat16)
    for name, tensor in fresh.clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], tensor), name
