"""Training runs of the `tiny` preset for a few steps: each stage's outputs, load_run / export, the feature
cache's equality, the non-finite-loss guard, configuration errors and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip(
    "videogemma.modeling.videomamba", reason="the VideoMamba encoder (helper 'scan') has not landed yet"
)
import torch
from safetensors.torch import load_file

from videogemma.loading import ModelSource, build_model
from videogemma.train.train_config import TrainConfigError

pytestmark = pytest.mark.slow


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _initial_projectors() -> dict[str, torch.Tensor]:
    model = build_model(ModelSource(preset="tiny"), seed=42)
    return {k: v for k, v in model.state_dict().items() if k.split(".")[0].endswith("_projector")}


@pytest.mark.parametrize(
    ("stage", "trained"),
    [
        ("video-proj", {"video_projector"}),
        ("image-proj", {"image_projector"}),
        ("finetune", {"image_projector", "video_projector"}),
        ("full", {"image_projector", "video_projector"}),
    ],
)
def test_each_stage_trains_and_writes_its_run_directory(train_tiny, stage: str, trained: set[str]) -> None:
    # finetune also runs with (non-reentrant) gradient checkpointing, as the real-model configs do.
    run_dir = train_tiny(stage, plots=stage == "full", gradient_checkpointing=stage == "finetune")
    assert (run_dir / "train_config.yaml").is_file()
    assert (run_dir / "processor" / "processor_config.json").is_file()
    assert (run_dir / "trainer_state.json").is_file()
    log = _log(run_dir)
    train_lines = [e for e in log if "loss" in e]
    assert train_lines and all(k in train_lines[0] for k in ("learning_rate", "grad_norm", "step"))
    assert any("eval_loss" in e for e in log)

    initial = _initial_projectors()
    projectors = load_file(run_dir / "projectors.safetensors")
    assert set(projectors) == set(initial)
    changed = {name.split(".")[0] for name in projectors if not torch.equal(projectors[name], initial[name])}
    assert changed == trained
    if stage == "finetune":
        adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
        assert any("lora_A" in k for k in adapter)
        # The projectors travel with the adapter (PEFT modules_to_save), hence in every checkpoint too.
        assert {k.split(".")[2] for k in adapter if "lora_" not in k} == {
            "image_projector",
            "video_projector",
        }
    if stage == "full":
        assert (run_dir / "model" / "model.safetensors").is_file()
        assert not (run_dir / "adapter").exists()
        for plot in ("loss.png", "learning_rate.png", "grad_norm.png"):
            assert (run_dir / "plots" / plot).stat().st_size > 1000


def test_load_run_merges_lora_and_export_round_trips(tmp_path: Path, tiny_dataset: Path, train_tiny) -> None:
    from videogemma.cli import main
    from videogemma.loading import load_run
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

    run_dir = train_tiny("finetune", learning_rate=1e-2)
    model, processor = load_run(run_dir)
    assert not model.training and type(model) is VideoGemmaForConditionalGeneration

    # The merged decoder weight is the base weight plus (alpha / r) · B A from the saved adapter.
    base = build_model(ModelSource(preset="tiny"), seed=42).state_dict()
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    name = "language_model.model.layers.1.self_attn.q_proj"
    lora_a = adapter[f"base_model.model.{name}.lora_A.weight"]
    lora_b = adapter[f"base_model.model.{name}.lora_B.weight"]
    assert lora_b.abs().sum() > 0
    expected = base[f"{name}.weight"] + (8 / 4) * lora_b @ lora_a
    torch.testing.assert_close(model.state_dict()[f"{name}.weight"], expected)
    projectors = load_file(run_dir / "projectors.safetensors")
    for key, value in projectors.items():
        assert torch.equal(model.state_dict()[key], value)

    out_dir = tmp_path / "merged"
    assert main(["export", str(run_dir), "--merge", str(out_dir)]) == 0
    reloaded = VideoGemmaForConditionalGeneration.from_pretrained(out_dir).eval()
    videos = [str(tiny_dataset / json.loads((tiny_dataset / "qved_test.json").read_text())[0]["video"])]
    batch = processor(videos=videos, text=["How is my form?"], padding_side="left")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)

    # A second export onto the same folder is refused unless asked, and leaves the first one whole.
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}
    assert main(["export", str(run_dir), "--merge", str(out_dir)]) == 2
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} == before
    assert main(["export", str(run_dir), "--merge", str(out_dir), "--overwrite"]) == 0
    assert not list(tmp_path.glob(".*merged*"))  # no staging folder left


def test_feature_cache_gives_the_same_losses_and_weights(tmp_path: Path, train_tiny) -> None:
    # 10 training samples, batch 2: steps 6-7 are in the second epoch, served from the cache. A one-sample run
    # first caches the first sample of the (seeded) order, so the first batch mixes a hit and a miss: the miss
    # is encoded inside the forward, the rows reordered around it.
    common = dict(max_steps=7, eval_steps=7, feature_cache_dir=str(tmp_path / "cache"))
    one = dict(max_steps=1, eval_steps=1, per_device_train_batch_size=1, effective_batch_size=1)
    train_tiny("video-proj", "warm", **{**common, **one})
    cached = train_tiny("finetune", "cached", **common)
    uncached = train_tiny("finetune", "uncached", feature_cache="off", **common)
    cached_log, uncached_log = _log(cached), _log(uncached)
    losses = [[e["loss"] for e in log if "loss" in e] for log in (cached_log, uncached_log)]
    assert len(losses[0]) == 7
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    eval_losses = [[e["eval_loss"] for e in log if "eval_loss" in e] for log in (cached_log, uncached_log)]
    assert eval_losses[0] == pytest.approx(eval_losses[1], rel=1e-5, abs=1e-6)
    counted = [e for e in cached_log if "feature_cache_hits" in e]
    assert counted[0]["feature_cache_hits"] >= 1 and counted[0]["feature_cache_misses"] >= 1
    assert counted[-1]["feature_cache_hits"] > counted[0]["feature_cache_hits"]
    assert "feature_cache_hits" not in uncached_log[-1]
    a = load_file(cached / "adapter" / "adapter_model.safetensors")
    b = load_file(uncached / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_nonfinite_loss_stops_naming_the_step_or_is_skipped(
    train_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.train.trainer import NonFiniteLossError

    forward = VideoGemmaForConditionalGeneration.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if self.training and output.loss is not None:
            calls["n"] += 1
            if calls["n"] == 2:  # the second training batch
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(VideoGemmaForConditionalGeneration, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*batch of videos \['.*\.mp4'"):
        train_tiny("video-proj", "stop", max_steps=3)

    calls["n"] = 0
    run_dir = train_tiny("video-proj", "skip", max_steps=3, nonfinite_loss="skip")
    log = _log(run_dir)
    assert log[-2].get("skipped_nonfinite_batches") == 1 or any(
        e.get("skipped_nonfinite_batches") == 1 for e in log
    )
    projectors = load_file(run_dir / "projectors.safetensors")
    assert all(torch.isfinite(t).all() for t in projectors.values())


def test_bad_samples_are_skipped_and_counted(tmp_path: Path, tiny_dataset: Path, train_tiny) -> None:
    records = json.loads((tiny_dataset / "qved_train.json").read_text())
    (tiny_dataset / "broken.mp4").write_bytes(b"not a video")  # referenced by this test's split only
    records = [{**records[0], "video": "broken.mp4"}, *records[1:4]]
    split = tmp_path / "train_with_bad.json"
    split.write_text(json.dumps(records))
    run_dir = train_tiny(
        "video-proj",
        data={"train_file": str(split), "dataset_root": str(tiny_dataset), "val_file": None},
        feature_cache="off",
        max_steps=2,  # one epoch: every record is read
    )
    counted = [e for e in _log(run_dir) if "train_bad_samples_skipped" in e]
    assert counted and counted[-1]["train_bad_samples_skipped"] == 1
    assert counted[-1]["train_bad_samples_VideoDecodeError"] == 1


def test_configurations_that_cannot_work_fail_before_training(tmp_path: Path, train_tiny) -> None:
    with pytest.raises(TrainConfigError, match="multiple of chunk_size"):
        train_tiny("full", model={"preset": "tiny", "overrides": {"num_frames": 6}})
    with pytest.raises(TrainConfigError, match="does not exist"):
        train_tiny("full", data={"val_file": str(tmp_path / "missing_val.json")})
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_console_shows_one_progress_bar_with_the_loss_and_a_line_per_evaluation(train_tiny, capsys) -> None:
    # The stock Trainer bar prints the whole log dict on a new line at every step, burying the bar.
    train_tiny("video-proj", max_steps=4, eval_steps=2, logging_steps=1)
    captured = capsys.readouterr()
    console = captured.out + captured.err
    assert "{'loss'" not in console and "step 1: loss" not in console
    assert "loss=" in captured.err  # the latest loss sits in the bar's postfix
    assert len([line for line in console.splitlines() if "eval_loss" in line]) == 2
    assert "train_runtime" in console  # the final summary gets its line


def test_export_quantize_writes_a_model_that_loads_without_requantising(tmp_path: Path, train_tiny) -> None:
    import videogemma
    from videogemma.cli import main
    from videogemma.loading import load_run, prepare_decoder
    from videogemma.modeling.quantization import QUANTIZATION_FILE, QuantizedLinear
    from videogemma.precision import resolve_dtype

    run_dir = train_tiny("video-proj")
    out_dir = tmp_path / "int8"
    assert main(["export", str(run_dir), "--merge", str(out_dir), "--quantize", "int8"]) == 0
    assert json.loads((out_dir / QUANTIZATION_FILE).read_text())["method"] == "int8"
    stored = load_file(out_dir / "model.safetensors")
    assert stored["language_model.model.layers.0.mlp.up_proj.qweight"].dtype == torch.int8
    assert "language_model.model.layers.0.mlp.up_proj.weight" not in stored

    # Export quantises the weights in the CPU's dtype (bf16 where native): the same as quantising on load.
    dtype = resolve_dtype(None, "cpu")
    exported, _ = videogemma.load(out_dir, dtype=dtype, quiet=True)
    assert isinstance(exported.language_model.model.layers[0].mlp.up_proj, QuantizedLinear)
    in_memory, _ = load_run(run_dir, dtype=dtype)
    prepare_decoder(in_memory, "int8")
    ids = torch.tensor([[2, 5, 9, 300, 7]])
    with torch.no_grad():
        assert torch.equal(exported(input_ids=ids).logits, in_memory(input_ids=ids).logits)
