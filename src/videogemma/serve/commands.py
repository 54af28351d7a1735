"""`videogemma serve`: the chat-completions server and its page.

videogemma serve --model RUN_OR_PRESET [--model NAME=PATH ...] [--host 127.0.0.1] [--port 8000]
                 [--media-root DIR] [--api-key KEY] [--no-batching] [limits: --max-video-bytes N ...]

Options, model paths and the media root are checked before any model loads; a refusal is one line on stderr
(exit 2), as for every command.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any

from videogemma.errors import VideoGemmaError
from videogemma.settings import add_dataclass_arguments, dataclass_from_args

API_KEY_VARIABLE = "VIDEOGEMMA_API_KEY"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


class ServeArgumentError(VideoGemmaError):
    """A `videogemma serve` option that cannot work, refused before any model loads."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from videogemma.inference.commands import add_on_device_arguments
    from videogemma.serve.limits import ServeLimits

    serve = subparsers.add_parser(
        "serve",
        help="serve models over an OpenAI-compatible HTTP API, with a page to try them",
        description="An OpenAI-compatible chat-completions server for videos (POST /v1/chat/completions, "
        "GET /v1/models, GET /health) and a page at / to ask about a video. Loopback only by default.",
    )
    serve.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]MODEL",
        help="a preset (tiny), a saved model folder or a training run folder (LoRA runs as they are); give "
        "it twice, as NAME=PATH, to serve two models chosen by the request's `model` (default name: as given)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--media-root", type=Path, default=None, help="folder whose videos requests may name as file:// paths"
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE),
        help=f"require Authorization: Bearer KEY on every route but /health and the page "
        f"(default: ${API_KEY_VARIABLE}, else none)",
    )
    serve.add_argument(
        "--no-batching", action="store_true", help="generate one request at a time (--max-batch-size 1)"
    )
    serve.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    serve.add_argument("--device", default=None, help="e.g. cpu, cuda (default: where it loads)")
    serve.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_on_device_arguments(serve.add_argument_group("on device (every --model)"))
    add_dataclass_arguments(serve, ServeLimits, title="limits")
    serve.set_defaults(func=run_serve)


def parse_models(values: list[str]) -> dict[str, str]:
    """{name: preset or path} from the `--model` values (`PATH`, or `NAME=PATH`)."""
    from videogemma.config import PRESETS

    models: dict[str, str] = {}
    for value in values:
        name, separator, source = value.partition("=")
        if not separator or Path(value).exists() or not _MODEL_NAME.fullmatch(name):
            name, source = value, value
        if name in models:
            raise ServeArgumentError(f"--model {value}: the name {name!r} is given twice")
        if source not in PRESETS and not Path(source).exists():
            raise ServeArgumentError(
                f"--model {value}: {source} is no such folder, and not a preset ({', '.join(sorted(PRESETS))})"
            )
        models[name] = source
    return models


def check_serve_arguments(args: argparse.Namespace) -> tuple[dict[str, str], Any]:
    """(models, limits) from the parsed options, or `ServeArgumentError` naming the first bad one."""
    from videogemma.inference.generate import check_device
    from videogemma.serve.limits import ServeLimits

    models = parse_models(args.model)
    try:
        limits = dataclass_from_args(ServeLimits, args, **({"max_batch_size": 1} if args.no_batching else {}))
    except ValueError as error:
        raise ServeArgumentError(str(error)) from None
    if args.media_root is not None and not args.media_root.is_dir():
        raise ServeArgumentError(f"--media-root {args.media_root}: no such folder")
    if not 0 <= args.port <= 65535:
        raise ServeArgumentError(f"--port must be 0-65535, got {args.port}")
    if args.api_key is not None and not args.api_key.strip():
        raise ServeArgumentError("--api-key is empty")
    check_device(args.device)
    return models, limits


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from videogemma.inference.commands import on_device_options
    from videogemma.loading import load
    from videogemma.serve.app import create_app
    from videogemma.serve.batching import ServedModel

    models, limits = check_serve_arguments(args)
    if not _is_loopback(args.host) and args.api_key is None:
        print(
            f"videogemma serve: warning: listening on {args.host} without --api-key: anyone who can reach "
            "this address can use the models",
            file=sys.stderr,
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    served = {}
    for name, source in models.items():
        model, processor = load(source, dtype=args.dtype, device=args.device, **on_device_options(args))
        served[name] = ServedModel(name, model, processor)
    app = create_app(served, limits, media_root=args.media_root, api_key=args.api_key)
    print(
        f"serving {', '.join(served)} on http://{args.host}:{args.port} (page at /, API at /v1/chat/completions, "
        "coaching stream at /v1/coach/stream)",
        file=sys.stderr,
    )
    # A coaching stream's frame is one WebSocket message (uvicorn refuses larger ones, 16 MiB by default).
    ws_max_size = max(16 * 2**20, limits.max_frame_bytes + 2**16)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, ws_max_size=ws_max_size
    )
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
