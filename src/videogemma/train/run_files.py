"""The files of a run directory, kept safe: no run replaced by accident, checkpoints that are whole or absent.

- `check_output_dir(run_dir, resume, overwrite)`: a folder that holds a run (its config, weights, checkpoints,
  logs) is refused unless `--resume` continues it or `--overwrite` replaces it; `clear_run` removes exactly
  the run's files for `--overwrite` (anything else in the folder is left alone).
- Checkpoints (and the final `model/` / `adapter/`) are written into a `.staging-<name>` folder beside their
  place and renamed into it when complete (`publish_folder`), so a `checkpoint-<step>` folder is always whole;
  a kill leaves only a staging folder, which the next run removes (`remove_staging`).
- `newest_intact_checkpoint(run_dir)`: the newest checkpoint whose every file reads back (trainer state,
  safetensors weights without NaN, torch archives with their CRCs); newer damaged ones are listed with the
  reason, so that `--resume` can fall back with a warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection
from pathlib import Path

from videogemma.files import fsync_folder
from videogemma.train.train_config import TrainConfigError

STAGING_PREFIX = ".staging-"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Extensions of the files `torch.save` writes into a checkpoint (optimizer, scheduler, RNG, arguments).
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def run_contents(run_dir: Path, run_files: Collection[str]) -> list[Path]:
    """The run files (names in `run_files`) and checkpoints (complete or staged) in `run_dir`."""
    if not run_dir.is_dir():
        return []
    return sorted(
        path
        for path in run_dir.iterdir()
        if path.name in run_files
        or CHECKPOINT_PATTERN.match(path.name)
        or path.name.startswith(STAGING_PREFIX)
    )


def check_output_dir(run_dir: Path, resume: bool, overwrite: bool, run_files: Collection[str]) -> None:
    """Refuse to train into a folder holding a run unless `resume` or `overwrite` says what to do with it."""
    if resume and overwrite:
        raise TrainConfigError(
            "--resume continues the run in output_dir and --overwrite replaces it: pick one"
        )
    contents = run_contents(run_dir, run_files)
    if contents and not resume and not overwrite:
        shown = ", ".join(path.name for path in contents[:4]) + (", ..." if len(contents) > 4 else "")
        raise TrainConfigError(
            f"output_dir {run_dir} holds a training run ({shown}); pass --resume to continue it, --overwrite "
            "to replace it, or choose another output_dir"
        )


def clear_run(run_dir: Path, run_files: Collection[str]) -> list[Path]:
    """Remove the run files and checkpoints of `run_dir` (for `--overwrite`); returns what was removed."""
    removed = run_contents(run_dir, run_files)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def staging_path(final: Path) -> Path:
    return final.with_name(STAGING_PREFIX + final.name)


def remove_staging(run_dir: Path) -> None:
    """Remove staging folders a killed run left behind (never complete, never read)."""
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            if path.name.startswith(STAGING_PREFIX) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def publish_folder(staged: Path, final: Path) -> None:
    """Rename the complete `staged` folder to `final`, replacing an older `final` (kept aside until the new one
    is in place, so that at any moment one of them is whole)."""
    old = final.with_name(f"{STAGING_PREFIX}replaced-{final.name}")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(staged, final)
    shutil.rmtree(old, ignore_errors=True)
    fsync_folder(final.parent)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (one line naming the file), or None when it reads back whole."""
    from safetensors import safe_open
    from transformers.trainer import TRAINER_STATE_NAME

    from videogemma.modeling.integrity import (
        ModelWeightsError,
        check_finite,
        check_torch_archive,
        safetensors_header,
    )

    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"{checkpoint / TRAINER_STATE_NAME}: unreadable ({error})"
    try:
        for path in sorted(checkpoint.rglob("*")):
            if path.suffix == ".safetensors":
                safetensors_header(path)
                with safe_open(str(path), framework="pt") as weights:
                    for name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        check_finite([(name, weights.get_tensor(name))], path)
            elif path.suffix in _TORCH_SUFFIXES and path.is_file():
                check_torch_archive(path)
    except ModelWeightsError as error:
        return str(error)
    except OSError as error:
        return f"{checkpoint}: unreadable ({error})"
    return None


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each `checkpoint-<step>` in `run_dir`, newest first."""
    if not run_dir.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if (match := CHECKPOINT_PATTERN.match(path.name)) and path.is_dir()
    ]
    return sorted(found, reverse=True)


def newest_intact_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that reads back whole, and the problems of the newer ones passed over."""
    problems = []
    for _, path in checkpoints(run_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, problems
        problems.append(problem)
    return None, problems
