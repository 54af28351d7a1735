"""DeepSpeed ZeRO-3 (parameters partitioned across processes): which modules gather their parameters whole.

ZeRO-3 gathers a module's own parameters in a hook before its `forward` and frees them after. Code that reads
a submodule's parameter outside that submodule's forward then sees an empty partition, at real scale only
(parameters under `stage3_param_persistence_threshold` are never partitioned, which hides it at tiny sizes):

- VideoMamba's mixer multiplies by `dt_proj.weight` directly (Δ's bias goes into the scan separately);
- Gemma-3n's decoder layer calls AltUp's `predict` / `correct`, which read `prediction_coefs.weight` and
  `correction_coefs.weight` outside those modules' forward (in training mode).

A *leaf* module gathers all its descendants' parameters before its forward instead
(`deepspeed.utils.set_z3_leaf_modules`).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

# Class names; a mixer (VideoMamba-M: ~4 M parameters) or a decoder layer (E2B: ~60 M) gathered at once.
LEAF_MODULE_CLASSES = ("BiMambaMixer", "Gemma3nTextDecoderLayer")


def is_zero3_config(path: str | Path | None) -> bool:
    """Whether a DeepSpeed JSON config partitions the parameters (`zero_optimization.stage` 3)."""
    if path is None:
        return False
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    return int(config.get("zero_optimization", {}).get("stage", 0)) == 3


def mark_leaf_modules(model: nn.Module) -> list[nn.Module]:
    """Flag every module of `LEAF_MODULE_CLASSES` in `model` as a ZeRO-3 leaf; returns them."""
    from deepspeed.utils import set_z3_leaf_modules

    return set_z3_leaf_modules(model, list(LEAF_MODULE_CLASSES))
