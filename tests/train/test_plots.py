"""The training-log plots a run writes into plots/."""

from __future__ import annotations

import json

import pytest

from videogemma.train.plots import plot_training_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_training_log_plots(tmp_path):
    log = tmp_path / "train_log.jsonl"
    lines = [
        {"step": s, "epoch": s / 20, "loss": 2.0 / s, "learning_rate": 1e-4, "grad_norm": 0.8}
        for s in range(1, 41)
    ]
    lines += [{"step": 20, "eval_loss": 1.1}, {"step": 40, "eval_loss": 0.9}]
    log.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"step": 41, "lo')
    with pytest.warns(UserWarning, match="incomplete last line"):
        written = plot_training_log(log, tmp_path / "plots")
    assert set(written) == {"loss", "learning_rate", "grad_norm"}
    for path in written.values():
        assert path.parent == tmp_path / "plots" and path.read_bytes()[:8] == PNG_MAGIC


def test_training_log_without_grad_norm_skips_that_plot(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "eval_loss": 0.5}\n')
    assert set(plot_training_log(log, tmp_path)) == {"loss"}
    log.write_text('{"loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"train_log\.jsonl, line 1"):
        plot_training_log(log, tmp_path)


def test_the_loss_plot_separates_the_lm_loss_from_the_alignment_term(tmp_path, monkeypatch):
    from videogemma.train import plots

    drawn = {}

    def keep_lines(figure, path):
        drawn.update({line.get_label(): list(line.get_ydata()) for line in figure.axes[0].get_lines()})
        return path

    monkeypatch.setattr(plots, "save_png", keep_lines)
    log = tmp_path / "metrics.jsonl"
    lines = [
        {
            "step": s,
            "loss": 1.47,
            "lm_loss": 0.13,
            "answer_alignment_term": 1.34,
            "answer_alignment_loss": 1.34,
        }
        for s in (1, 2)
    ]
    log.write_text("\n".join(json.dumps(line) for line in [*lines, {"step": 2, "eval_loss": 0.14}]) + "\n")
    plot_training_log(log, tmp_path)
    assert drawn == {
        "training total (LM + alignment term)": [1.47, 1.47],
        "training LM loss": [0.13, 0.13],
        "alignment term (weight × alignment loss)": [1.34, 1.34],
        "validation LM loss": [0.14],
    }
