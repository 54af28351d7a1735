"""`videogemma data ...` end to end: synth → prepare → validate → clean → augment → stats, unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from videogemma.cli import main
from videogemma.datasets.qved.prepare import SPLIT_FILE_NAMES


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "dataset"
    argv = [
        "data",
        "synth",
        "--out",
        str(root),
        "--per-variant",
        "2",
        "--size",
        "32",
        "--frames",
        "12",
        "--seed",
        "1",
    ]
    assert main(argv) == 0
    return root


def test_synth_then_prepare_then_validate(synthetic, tmp_path, capsys):
    capsys.readouterr()
    root = tmp_path / "dataset"
    shutil.copytree(synthetic, root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest) == 6 * 3 * 2 and (root / "mountain-climbers").is_dir()

    assert main(["data", "prepare", "--root", str(root), "--stratify", "--max-per-class", "5"]) == 0
    table = capsys.readouterr().out
    assert "TOTAL" in table and "mountain-climbers" in table and "No feedback available." in table
    assert all((root / name).exists() for name in SPLIT_FILE_NAMES)
    assert sum(len(json.loads((root / n).read_text())) for n in SPLIT_FILE_NAMES[:3]) == 6 * 5

    report = tmp_path / "report.json"
    assert main(["data", "validate", str(root), "--report", str(report)]) == 0
    assert "OK" in capsys.readouterr().out
    assert json.loads(report.read_text())["ok"] is True

    # break one clip: validation fails, names it, and still checks the rest
    train = json.loads((root / "qved_train.json").read_text())
    (root / train[0]["video"]).write_bytes(b"")
    assert main(["data", "validate", str(root / "qved_train.json"), str(root / "qved_val.json")]) == 1
    captured = capsys.readouterr()
    assert f"qved_train.json, record 0 ({train[0]['video']}): empty_video" in captured.err
    assert "FAILED" in captured.out and "qved_val.json" in captured.out


def test_clean_augment_stats(synthetic, tmp_path, capsys):
    root = tmp_path / "dataset"
    shutil.copytree(synthetic, root)
    out = tmp_path / "clean"
    # 32-px synthetic clips are far below QVED's 640×360: the default filter rejects them all
    assert main(["data", "clean", "--root", str(root), "--out", str(out)]) == 0
    assert "low_resolution" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text()) == {}
    assert main(["data", "clean", "--root", str(root), "--in-place", "--min-width", "32", "--min-height", "32",
                 "--min-frames", "8", "--max-brightness", "255", "--min-brightness", "0"]) == 0  # fmt: skip
    assert "TOTAL" in capsys.readouterr().out
    assert len(json.loads((root / "manifest.json").read_text())) == 36
    assert main(["data", "clean", "--root", str(root)]) == 2  # neither --out nor --in-place
    assert "give exactly one of --out DIR and --in-place" in capsys.readouterr().err

    assert main(["data", "augment", "--root", str(root), "--ops", "hflip,salt", "--classes", "squats"]) == 0
    assert "TOTAL" in capsys.readouterr().out
    assert len(list((root / "squats").glob("*_aug1.mp4"))) == 6
    assert main(["data", "prepare", "--root", str(root), "--seed", "3"]) == 0
    assert main(["data", "validate", str(root)]) == 0
    capsys.readouterr()

    assert main(["data", "stats", "--root", str(root), "--out", str(tmp_path / "stats")]) == 0
    table = capsys.readouterr().out
    assert "32x32" in table and "squats" in table
    assert (tmp_path / "stats" / "dataset_stats.png").stat().st_size > 10_000
    stats = json.loads((tmp_path / "stats" / "dataset_stats.json").read_text())
    assert sum(stats["counts"]["squats"].values()) == 12  # 6 sources + 6 augmented
