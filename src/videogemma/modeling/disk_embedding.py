"""Gemma-3n's per-layer embedding table left on disk: a memory map of the safetensors file, read row by row.

The table (`embed_tokens_per_layer`, vocab 262,144 × 30 layers × 256 at E2B: 2.0 B parameters, 4 GiB in
bf16) is a lookup: a forward reads only the rows of the tokens it is given, and no shipped stage trains it.
`DiskEmbedding` maps the tensor's bytes read-only and copies out the rows in use, so the process holds the
few pages those rows lie on instead of the whole table (the "E" of E2B: what Google's runtimes keep out of
fast memory). Its output is bit-for-bit the loaded table's: the same rows, converted to the same dtype,
times the same scale.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videogemma.modeling.integrity import ModelWeightsError, tensor_location

# The per-layer embedding module of Gemma-3n's text model (`language_model.model.<this>`).
PER_LAYER_EMBEDDING = "embed_tokens_per_layer"
# safetensors dtype → (numpy dtype of the stored bytes, torch dtype to view them as; None: numpy's own).
_STORED_AS = {
    "BF16": (np.uint16, torch.bfloat16),
    "F16": (np.float16, None),
    "F32": (np.float32, None),
}


class DiskEmbedding(nn.Module):
    """A scaled embedding (`Gemma3nTextScaledWordEmbedding`'s forward) whose table stays in a file.

    path / key: the safetensors file and the tensor's name in it; dtype: what the rows are converted to (the
    model's dtype); embed_scale: the factor the output is multiplied by (in `dtype`, as Gemma-3n does)."""

    def __init__(self, path: str | Path, key: str, dtype: torch.dtype, embed_scale: float) -> None:
        super().__init__()
        self.path, self.key = Path(path), key
        stored, shape, offset = tensor_location(self.path, key)
        if stored not in _STORED_AS or len(shape) != 2:
            raise ModelWeightsError(
                f"{self.path}: tensor {key} is {stored} of shape {list(shape)}; a per-layer embedding table "
                f"on disk must be a 2-D {'/'.join(_STORED_AS)} tensor"
            )
        numpy_dtype, self._view_as = _STORED_AS[stored]
        self.num_embeddings, self.embedding_dim = shape
        self.dtype = dtype
        self.scalar_embed_scale = embed_scale
        self._table = np.memmap(self.path, dtype=numpy_dtype, mode="r", offset=offset, shape=shape)

    @classmethod
    def replacing(cls, module: nn.Module, path: str | Path, key: str, dtype: torch.dtype) -> DiskEmbedding:
        """The on-disk stand-in for a `Gemma3nTextScaledWordEmbedding`; its shape must match the file's."""
        disk = cls(path, key, dtype, float(module.scalar_embed_scale))
        expected = (module.num_embeddings, module.embedding_dim)
        if (disk.num_embeddings, disk.embedding_dim) != expected:
            raise ModelWeightsError(
                f"{path}: tensor {key} has shape {[disk.num_embeddings, disk.embedding_dim]}, the model "
                f"expects {list(expected)}"
            )
        return disk

    def stored_table(self) -> torch.Tensor:
        """The whole table as a read-only view of the file's bytes, in the stored dtype: nothing is read until
        the tensor's data is (a shape check costs nothing; saving copies the file's rows)."""
        with warnings.catch_warnings():  # the view is never written to
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            table = torch.from_numpy(self._table)
        return table.view(self._view_as) if self._view_as is not None else table

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        # The table is part of the model: its state dict, and so `save_pretrained`, must hold it.
        destination[prefix + "weight"] = self.stored_table()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The stored rows of `ids` (1-D, CPU), in `dtype`, read from the file."""
        picked = torch.from_numpy(np.ascontiguousarray(self._table[ids.numpy()]))
        if self._view_as is not None:
            picked = picked.view(self._view_as)
        return picked.to(self.dtype)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if bool(((input_ids < 0) | (input_ids >= self.num_embeddings)).any()):
            raise IndexError(f"token ids outside the per-layer table's {self.num_embeddings} rows")
        unique, inverse = torch.unique(input_ids.cpu(), return_inverse=True)
        rows = self.rows(unique).to(input_ids.device)
        scale = torch.tensor(self.scalar_embed_scale, dtype=torch.float32).to(self.dtype)
        return rows[inverse] * scale.to(rows.device)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, on disk: {self.path.name}[{self.key}]"
