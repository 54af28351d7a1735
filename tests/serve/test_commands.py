"""`videogemma serve` on the command line: options refused before any model loads, `--model NAME=PATH`, and the
serving package's imports (never training)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from videogemma import loading
from videogemma.cli import main
from videogemma.serve.commands import ServeArgumentError, parse_models


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(loading, "load", refuse)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "no-such-model"], "--model no-such-model: no-such-model is no such folder"),
        (["--model", "a=tiny", "--model", "a=tiny"], "the name 'a' is given twice"),
        (
            ["--model", "tiny", "--media-root", "no-such-folder"],
            "--media-root no-such-folder: no such folder",
        ),
        (["--model", "tiny", "--max-queue", "0"], "--max-queue must be a positive number"),
        (["--model", "tiny", "--default-max-tokens", "600"], "cannot exceed --max-tokens (512)"),
        (["--model", "tiny", "--port", "70000"], "--port must be 0-65535"),
        (["--model", "tiny", "--api-key", " "], "--api-key is empty"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_before_loading(no_loading, capsys, options, message):
    assert main(["serve", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("videogemma serve: error: ") and message in error and error.count("\n") == 1


def test_a_model_that_cannot_be_compiled_is_one_line_and_exit_2(monkeypatch, capsys):
    from videogemma.modeling import compiled_prefill

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled_prefill.shutil, "which", lambda name: None)
    assert main(["serve", "--model", "tiny", "--compile-prefill"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error[-1].startswith("videogemma serve: error: ") and "needs a C++ compiler" in error[-1]


def test_serve_loads_its_models_with_the_on_device_options(monkeypatch, live_server, real_clip, data_url):
    import httpx
    import uvicorn

    from videogemma.inference.generate import GenerationSettings, answer

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: apps.append(app))
    loaded = []
    real_load = loading.load
    monkeypatch.setattr(loading, "load", lambda *a, **k: loaded.append(real_load(*a, **k)) or loaded[-1])
    options = ["--quantize", "int8", "--compile-prefill", "--dtype", "float32", "--default-max-tokens", "4"]
    assert main(["serve", "--model", "tiny", *options]) == 0
    (model, processor), (app,) = loaded[0], apps
    assert loading.on_device_summary(model)["decoder"] == "int8"
    assert loading.on_device_summary(model)["prefill"] == "compiled"
    content = [
        {"type": "video_url", "video_url": {"url": data_url(real_clip)}},
        {"type": "text", "text": "Hi"},
    ]
    with live_server(app) as base:  # the first prompt compiles, in the server's generation thread
        response = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": content}]},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    eager, _ = real_load("tiny", quantize="int8", dtype="float32", quiet=True)
    want = answer(eager, processor, real_clip, "Hi", settings=GenerationSettings(max_new_tokens=4))
    assert response.json()["choices"][0]["message"]["content"] == want.text


def test_models_are_named_by_name_equals_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert parse_models(["tiny", f"coach={run}"]) == {"tiny": "tiny", "coach": str(run)}
    odd = tmp_path / "a=b"  # a folder whose name holds '=' is a path, not NAME=PATH
    odd.mkdir()
    assert parse_models([str(odd)]) == {str(odd): str(odd)}
    with pytest.raises(ServeArgumentError, match="no such folder"):
        parse_models([f"coach={tmp_path / 'missing'}"])


def test_serve_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "serve" in capsys.readouterr().out


_SERVING_WITHOUT_TRAINING = """
import sys
import videogemma.serve.app, videogemma.serve.commands, videogemma.serve.batching, videogemma.serve.media
# The coaching stream runs the live coach (videogemma.coach), which never imports training either.
print(sorted(name for name in sys.modules if name.startswith("videogemma.train")))
"""


def test_serving_never_imports_training():
    result = subprocess.run(
        [sys.executable, "-c", _SERVING_WITHOUT_TRAINING], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
