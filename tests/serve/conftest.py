"""Fixtures of the serving tests: live servers on loopback ports, the tiny model, a LoRA run, request bodies.

- `tiny_served`: `(model, processor)` of `videogemma.load("tiny")`, once per session.
- `lora_run`: a `finetune` (LoRA) run of the tiny preset, 2 steps on synthetic clips, once per session.
- `live_server(app) -> base URL` (a context manager): uvicorn serving `app` in a thread on a free loopback
  port, stopped at the end of the block.
- `video_request(url, question=None, **fields) -> dict`: a chat-completions body with one video part.
- `data_url(path) -> str`: the file as a `data:video/mp4;base64,...` URL.
- `media_root`: a folder holding the real clip (`clip.mp4`), a corrupt one (`corrupt.mp4`) and a link pointing
  outside (`escape.mp4`); a file outside it (`outside.mp4`) sits beside it.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml


@pytest.fixture(scope="session")
def tiny_served() -> tuple[Any, Any]:
    from videogemma import load

    return load("tiny")


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from videogemma.datasets.qved.prepare import prepare_splits
    from videogemma.datasets.synthetic.generate import generate_dataset
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    folder = tmp_path_factory.mktemp("lora")
    data = folder / "data"
    generate_dataset(data, per_variant=1, seed=0, size=32, num_frames=8, fps=8.0, progress=False)
    prepare_splits(data)
    config = {
        "stage": "finetune",
        "output_dir": str(folder / "run"),
        "model": {"preset": "tiny"},
        "data": {"train_file": str(data / "qved_train.json"), "val_file": str(data / "qved_val.json")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        # Large steps, so that two steps change the answers (the test tells the two models apart by them).
        "learning_rate": 1e-2,
        "projector_learning_rate": 5e-3,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "effective_batch_size": 2,
        "eval_steps": 2,
        "save_total_limit": 1,
        "gradient_checkpointing": False,
        "feature_cache_dir": str(folder / "feature_cache"),
        "plots": False,
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    return run_training(load_train_config(folder / "run.yaml"))


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port (in a thread); yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture(name="live_server")
def live_server_fixture() -> Any:
    return live_server


def data_url(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


@pytest.fixture(name="data_url")
def data_url_fixture() -> Any:
    return data_url


def video_request(url: str, question: str | None = None, **fields: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "video_url", "video_url": {"url": url}}]
    if question is not None:
        content.append({"type": "text", "text": question})
    return {"messages": [{"role": "user", "content": content}], **fields}


@pytest.fixture(name="video_request")
def video_request_fixture() -> Any:
    return video_request


@pytest.fixture
def media_root(tmp_path: Path, real_clip: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(real_clip, root / "clip.mp4")
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    shutil.copy(real_clip, tmp_path / "outside.mp4")
    (root / "escape.mp4").symlink_to(tmp_path / "outside.mp4")
    return root
