"""Bad input and faults in `infer` / `infer-batch`: every refusal is one clear line naming the option, file or
record, comes before the model loads, and leaves earlier results byte for byte as they were."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogemma import cli
from videogemma.inference.batch import list_samples, run_batch_inference
from videogemma.inference.generate import GenerationSettings
from videogemma.inference.output import PredictionOutput, PredictionOutputError
from videogemma.inference.records import read_records

SETTINGS = GenerationSettings(max_new_tokens=4)
PROJECT = Path(__file__).resolve().parents[2]


def write_split(path: Path, videos: list[str], question: str = "Form?") -> Path:
    records = [
        {"video": v, "question": question, "answer": f"squats - answer {k}"} for k, v in enumerate(videos)
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (what "left as it was" is checked against)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path, make_clips, tiny_model):
    """A split of four clips and a finished prediction file for it (with its exports)."""
    clips = make_clips(tmp_path / "videos", 4)
    split = write_split(tmp_path / "split.json", [f"videos/{c.name}" for c in clips])
    out = tmp_path / "preds.jsonl"
    model, processor = tiny_model
    run_batch_inference(model, processor, list_samples(split), out, settings=SETTINGS, show_progress=False)
    return split, out


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command gets as far as loading the model."""

    def refuse(args):
        raise AssertionError("the model was loaded although the command should have stopped before")

    monkeypatch.setattr("videogemma.inference.commands.load_from_args", refuse)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--batch-size", "0"], "--batch-size"),
        (["--num-workers", "-1"], "--num-workers"),
        (["--do-sample", "--temperature", "0"], "--temperature"),
        (["--do-sample", "--top-p", "0"], "--top-p"),
        (["--device", "cuda:99"], "--device cuda:99"),
        (["--model", "no/such/run"], "--model no/such/run"),
        (["--resume", "--overwrite"], "--overwrite"),
        (["--retry-errors"], "--retry-errors"),
        ([], "preds.jsonl holds predictions"),
    ],
)
def test_bad_options_are_refused_before_the_output_or_the_model_is_touched(
    finished_run, no_model_load, capsys, options, named
):
    split, out = finished_run
    before = snapshot(out.parent)
    argv = ["infer-batch", "--data", str(split), "--out", str(out), "--num-workers", "0", *options]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("videogemma infer-batch: error: ") and named in error
    assert len(error.splitlines()) == 1
    assert snapshot(out.parent) == before


def test_infer_refuses_bad_options_and_a_missing_video_before_loading(tmp_path, no_model_load, capsys):
    video = tmp_path / "clip.mp4"
    assert cli.main(["infer", str(video)]) == 2
    assert f"{video}" in capsys.readouterr().err
    video.write_bytes(b"x")
    assert cli.main(["infer", str(video), "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens must be at least 1" in capsys.readouterr().err


def test_overwrite_replaces_an_existing_output(finished_run, tiny_model):
    split, out = finished_run
    out.write_text(json.dumps({"id": 99, "video_path": "old.mp4", "prompt": "p", "prediction": "old"}) + "\n")
    model, processor = tiny_model
    samples = list_samples(split)
    with pytest.raises(PredictionOutputError, match="holds predictions"):
        run_batch_inference(model, processor, samples, out, settings=SETTINGS, show_progress=False)
    run_batch_inference(
        model, processor, samples, out, overwrite=True, settings=SETTINGS, show_progress=False
    )
    assert [r.id for r in read_records(out)] == [0, 1, 2, 3]


def test_an_existing_export_is_not_replaced_by_a_new_run(finished_run, tiny_model):
    split, out = finished_run
    out.unlink()  # the JSON Lines file is gone, its JSON export is still there
    before = out.with_suffix(".json").read_bytes()
    model, processor = tiny_model
    with pytest.raises(PredictionOutputError, match=r"preds\.json exists"):
        run_batch_inference(
            model, processor, list_samples(split), out, settings=SETTINGS, show_progress=False
        )
    assert out.with_suffix(".json").read_bytes() == before and not out.exists()


def test_out_must_be_the_jsonl_and_never_an_export_or_the_input(finished_run, no_model_load, capsys):
    split, out = finished_run
    before = snapshot(out.parent)
    base = ["infer-batch", "--data", str(split), "--num-workers", "0", "--overwrite"]
    assert cli.main([*base, "--out", str(out.with_suffix(".json"))]) == 2
    assert f"use --out {out}" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(split.with_suffix(".jsonl"))]) == 2
    assert f"would overwrite the input {split}" in capsys.readouterr().err
    assert snapshot(out.parent) == before


def test_a_second_writer_is_refused_naming_the_first(finished_run, no_model_load, capsys):
    split, out = finished_run
    holder = (
        "import sys, time; from pathlib import Path; from videogemma.inference.output import PredictionPaths, "
        "PredictionFileLock; paths = PredictionPaths.for_out(sys.argv[1]); "
        "PredictionFileLock(paths.lock, paths.jsonl).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src")}
    first = subprocess.Popen(
        [sys.executable, "-c", holder, str(out)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "locked"
        before = snapshot(out.parent)
        argv = ["infer-batch", "--data", str(split), "--out", str(out), "--resume", "--num-workers", "0"]
        assert cli.main(argv) == 2
        error = capsys.readouterr().err
        assert f"{out} is being written by another infer-batch run (pid {first.pid})" in error
        assert snapshot(out.parent) == before
    finally:
        first.kill()
        first.wait()
    # The lock died with its holder (its file stays behind): the output can be claimed again.
    with PredictionOutput.claim(out, list_samples(split), resume=True) as output:
        assert len(output.done) == 4


def test_resume_against_another_split_is_refused(finished_run, make_clips, tmp_path, no_model_load, capsys):
    _split, out = finished_run
    other_clips = make_clips(tmp_path / "other", 2)
    other = write_split(tmp_path / "other.json", [f"other/{c.name}" for c in other_clips])
    before = snapshot(tmp_path)
    argv = ["infer-batch", "--data", str(other), "--out", str(out), "--resume", "--num-workers", "0"]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"{out}: 4 of its 4 records answer samples that {other} does not hold" in error
    assert "line 1: video 'videos/clip_00.mp4'" in error
    assert snapshot(tmp_path) == before


def test_resume_matches_records_by_video_and_prompt_not_position(
    finished_run, make_clips, tmp_path, tiny_model
):
    _split, out = finished_run
    earlier = {r.video_path: r.prediction for r in read_records(out)}
    # Re-prepared: the same four clips in another order, and a new one in front.
    make_clips(tmp_path / "videos", 5)
    reordered = write_split(tmp_path / "split.json", [f"videos/clip_0{k}.mp4" for k in (4, 3, 2, 1, 0)])
    model, processor = tiny_model
    stats = run_batch_inference(
        model, processor, list_samples(reordered), out, resume=True, settings=SETTINGS, show_progress=False
    )
    assert stats["records"] == 1  # only the new clip ran
    records = read_records(out)
    assert sorted((r.id, r.video_path) for r in records) == [
        (k, f"videos/clip_0{4 - k}.mp4") for k in range(5)
    ]
    assert all(earlier[r.video_path] == r.prediction for r in records if r.video_path in earlier)
    assert len(out.read_text().splitlines()) == 5  # one record per sample, renumbered in place


def test_damaged_lines_anywhere_are_reported_and_only_their_samples_rerun(finished_run, tiny_model, capsys):
    split, out = finished_run
    lines = out.read_text().splitlines()
    kept = {json.loads(line)["id"]: line for k, line in enumerate(lines) if k != 1}
    lines[1] = lines[1][:30] + "\x00garbage"  # a line in the middle, overwritten
    out.write_text("\n".join(lines) + "\n")
    model, processor = tiny_model
    stats = run_batch_inference(
        model, processor, list_samples(split), out, resume=True, settings=SETTINGS, show_progress=False
    )
    printed = capsys.readouterr().out
    assert f"{out}: skipped 1 unreadable line" in printed and "line 2: invalid JSON" in printed
    assert stats["records"] == 1
    after = out.read_text().splitlines()
    assert len(after) == 4 and all(
        line in after for line in kept.values()
    )  # intact records kept as they were
    assert sorted(r.id for r in read_records(out)) == [0, 1, 2, 3]


def test_retry_errors_replaces_the_error_record(tmp_path, make_clips, tiny_model):
    clips = make_clips(tmp_path / "videos", 2)
    split = write_split(tmp_path / "split.json", [f"videos/{clips[0].name}", "videos/late.mp4"])
    out = tmp_path / "preds.jsonl"
    model, processor = tiny_model
    run_batch_inference(model, processor, list_samples(split), out, settings=SETTINGS, show_progress=False)
    assert [r.status for r in read_records(out)] == ["success", "error"]
    clips[1].rename(tmp_path / "videos" / "late.mp4")  # the missing video turns up
    run_batch_inference(
        model, processor, list_samples(split), out, resume=True, retry_errors=True, settings=SETTINGS,
        show_progress=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["id"], line["status"]) for line in lines] == [(0, "success"), (1, "success")]
    assert [item["status"] for item in json.loads(out.with_suffix(".json").read_text())] == ["success"] * 2


def test_non_finite_or_empty_generations_are_error_records(tmp_path, make_clips, tiny_model):
    model, processor = tiny_model
    clips = make_clips(tmp_path / "videos", 1)
    split = write_split(tmp_path / "split.json", [f"videos/{clips[0].name}"])
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.language_model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    silent = copy.deepcopy(model)
    eos = silent.generation_config.eos_token_id
    silent.generation_config.forced_eos_token_id = eos[0] if isinstance(eos, list) else eos
    for name, variant, error in (("nan", broken, "NonFiniteGenerationError"), ("empty", silent, "Empty")):
        out = tmp_path / f"{name}.jsonl"
        settings = GenerationSettings(max_new_tokens=1 if name == "empty" else 4)
        stats = run_batch_inference(
            variant, processor, list_samples(split), out, settings=settings, show_progress=False
        )
        (record,) = read_records(out)
        assert record.status == "error" and record.prediction == "" and error in record.error
        assert stats["errors"] == 1


def test_infer_reports_a_non_finite_answer_as_an_error(real_clip, tiny_model, monkeypatch, capsys):
    model, processor = tiny_model
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.language_model.model.layers[0].mlp.down_proj.weight[0, 0] = float("inf")
    monkeypatch.setattr("videogemma.inference.commands.load_from_args", lambda args: (broken, processor, "x"))
    assert cli.main(["infer", str(real_clip), "--max-new-tokens", "3"]) == 1
    error = capsys.readouterr().err
    assert f"videogemma infer: error: {real_clip}: NonFiniteGenerationError" in error


def test_a_model_with_non_finite_weights_is_refused_at_load(tmp_path, finished_run, tiny_model, capsys):
    split, out = finished_run
    model, processor = tiny_model
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.video_projector.mlp[0].weight[1, 2] = float("nan")
    broken.save_pretrained(tmp_path / "broken")
    processor.save_pretrained(tmp_path / "broken")
    before = snapshot(out.parent)
    argv = [
        "infer-batch",
        "--data",
        str(split),
        "--out",
        str(out),
        "--resume",
        "--model",
        str(tmp_path / "broken"),
    ]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert (
        f"{tmp_path / 'broken' / 'model.safetensors'}: tensor video_projector.mlp.0.weight holds 1 NaN"
        in error
    )
    assert snapshot(out.parent) == before


def test_a_folder_link_pointing_outside_is_an_error_sample_never_read(tmp_path, make_clips):
    from videogemma.inference.batch import list_samples

    outside = make_clips(tmp_path / "outside", 1)[0]
    folder = tmp_path / "videos"
    inside = make_clips(folder, 1)[0]
    (folder / "link.mp4").symlink_to(outside)
    samples = {sample.id: sample for sample in list_samples(folder)}
    assert samples[inside.name].error is None and samples[inside.name].video == inside.resolve()
    assert samples["link.mp4"].video is None
    assert "PathOutsideRootError" in samples["link.mp4"].error and str(outside) in samples["link.mp4"].error
