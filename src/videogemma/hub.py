"""Hugging Face Hub names: which component names are repository ids rather than local paths.

A name like `google/gemma-3n-E2B-it` that is not a local path is read from the Hub (a network and, for gated
models, a token are needed); everything else must exist on disk. Loading and its config checks share this rule.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_hub_id(name: str | os.PathLike) -> bool:
    """`owner/name`, not an existing local path and not written as one (`./x/y`, `/x/y`, `~/x`)."""
    text = str(name)
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        return False
    owner, repo = text.split("/")
    return bool(owner) and bool(repo) and "\\" not in text
