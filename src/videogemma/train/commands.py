"""`videogemma train` and `videogemma export`.

    videogemma train --config qved_finetune [--resume] [--processes N] [--key value ...]
    videogemma export RUN_DIR --merge OUT_DIR

Any `--key value` the train parser does not know is a config override (dotted keys: `--lora.r 16`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from videogemma.constants import ATTN_IMPLEMENTATIONS, QUANTIZE_CHOICES
from videogemma.precision import DTYPE_CHOICES

# Shorthands for config keys, shared with `infer`.
SHORTHANDS = {"dtype": "model.dtype", "attn_implementation": "model.attn_implementation"}


class _OverridesParser(argparse.ArgumentParser):
    """Keeps unknown `--key value` pairs as config overrides instead of rejecting them."""

    def parse_known_args(
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.overrides = list(getattr(namespace, "overrides", None) or []) + extras
        return namespace, []


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a stage (video-proj, image-proj, finetune, full) from a YAML config",
        description="Train VideoGemma. Extra `--key value` pairs override the config (dotted keys for "
        "sections: --lora.r 16 --model.overrides.num_frames 16 --max_steps 100).",
    )
    train.__class__ = _OverridesParser
    train.add_argument(
        "--config",
        required=True,
        help="YAML training config: a path, or a shipped config by name (qved_finetune, finetune, full, ...)",
    )
    train.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint")
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run already in output_dir (its checkpoints too)"
    )
    train.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=None, help="the frozen base's dtype (model.dtype; auto: the "
        "training precision's)",
    )  # fmt: skip
    train.add_argument(
        "--attn-implementation", choices=ATTN_IMPLEMENTATIONS, default=None,
        help="Gemma-3n's attention (model.attn_implementation)",
    )  # fmt: skip
    train.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="train as N DDP processes on this machine (torchrun; on a CPU one per core, one thread each)",
    )  # fmt: skip
    train.set_defaults(func=_train, overrides=[])

    export = subparsers.add_parser(
        "export",
        help="write a training run as one model directory (LoRA merged), loadable by from_pretrained",
    )
    export.add_argument("run_dir", help="the training run directory (its output_dir)")
    export.add_argument("--merge", required=True, metavar="OUT_DIR", help="where to write the merged model")
    export.add_argument("--overwrite", action="store_true", help="replace a model already in OUT_DIR")
    export.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        default=None,
        help="write the text decoder's linear layers weight-only quantised (loads without re-quantising)",
    )
    export.add_argument("--quantize-lm-head", action="store_true", help="with --quantize: the LM head too")
    export.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    import logging

    from videogemma.train.run import run_training
    from videogemma.train.train_config import TrainConfigError

    # Under DDP every rank runs this; only the first one reports progress, the others only what goes wrong.
    first_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if first_rank else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.processes < 1:
        raise TrainConfigError(f"--processes must be at least 1, got {args.processes}")
    config = config_from_args(args)  # a bad config fails here, before any process starts
    if args.processes > 1 and "WORLD_SIZE" not in os.environ:
        from videogemma.train.launch import launch_training

        return launch_training(rank_argv(args), args.processes)
    # run_training refuses an output_dir holding a run (without --resume / --overwrite) before any work.
    run_dir = run_training(config, resume=args.resume, overwrite=args.overwrite)
    if first_rank:
        print(f"run directory: {run_dir}")
    return 0


def rank_argv(args: argparse.Namespace) -> list[str]:
    """The `train` command line each DDP rank runs: this one without `--processes`."""
    argv = ["train", "--config", str(args.config)]
    argv += ["--resume"] * args.resume + ["--overwrite"] * args.overwrite
    for name in SHORTHANDS:
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", getattr(args, name)]
    return argv + list(args.overrides)


def config_from_args(args: argparse.Namespace, validate: bool = True) -> Any:
    """The `TrainConfig` a `videogemma train` command line describes (its file, overrides and shorthands)."""
    from videogemma.train.train_config import load_train_config

    shorthands = [
        item for name, key in SHORTHANDS.items() if getattr(args, name) is not None
        for item in (f"--{key}", getattr(args, name))
    ]  # fmt: skip
    return load_train_config(args.config, [*args.overrides, *shorthands], validate=validate)


def _export(args: argparse.Namespace) -> int:
    from videogemma.train.export import export_run

    out_dir = export_run(
        args.run_dir, args.merge, overwrite=args.overwrite, quantize=args.quantize,
        quantize_lm_head=args.quantize_lm_head,
    )  # fmt: skip
    print(f"merged model written to {out_dir}" + (f" ({args.quantize})" if args.quantize else ""))
    return 0
