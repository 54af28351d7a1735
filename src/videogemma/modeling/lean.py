"""Loading for on-device inference: a saved model read tensor by tensor, with the per-layer embedding table
left on disk (`DiskEmbedding`) and / or the decoder's layers in the quantised form a saved quantised model
holds (`quantization.json`). Hugging Face's `from_pretrained` would read every tensor of the file into
memory first (4 GiB for the table alone at E2B).

The same checks as `from_pretrained`'s strict path apply: each file whole, exactly the model's tensors,
each with its shape, none NaN or infinite (the table on disk is read by rows and not scanned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.utils import GENERATION_CONFIG_NAME

from videogemma.modeling.checkpoints import (
    CheckpointFiles,
    assign_tensors,
    materialise_meta_tensors,
)
from videogemma.modeling.disk_embedding import PER_LAYER_EMBEDDING, DiskEmbedding
from videogemma.modeling.integrity import (
    ModelWeightsError,
    check_finite,
    check_saved_weights,
    check_tensors_match,
    safetensors_header,
)
from videogemma.modeling.memory_pages import page_out
from videogemma.modeling.quantization import LM_HEAD, QuantizationSettings, quantized_shells

# The per-layer table's name in a saved VideoGemma's state dict.
SAVED_PER_LAYER_KEY = f"language_model.model.{PER_LAYER_EMBEDDING}.weight"


def put_per_layer_table_on_disk(
    language_model: torch.nn.Module, file: Path, key: str, dtype: torch.dtype
) -> None:
    """Replace the text model's per-layer embedding by the table `key` of the safetensors `file`."""
    if file.suffix != ".safetensors":
        raise ModelWeightsError(f"{file}: the per-layer table can stay on disk only in a safetensors file")
    text_model = language_model.model
    disk = DiskEmbedding.replacing(getattr(text_model, PER_LAYER_EMBEDDING), file, key, dtype)
    setattr(text_model, PER_LAYER_EMBEDDING, disk)


def build_from_saved(
    model_class: type,
    directory: str | Path,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    per_layer_on_disk: bool = True,
    **config_overrides: Any,
) -> Any:
    """A saved VideoGemma directory (safetensors) as a model in `dtype` on `device`, in eval mode."""
    directory = Path(directory)
    files = check_saved_weights(directory)
    if not files:
        raise ModelWeightsError(f"{directory}: no safetensors weights (model.safetensors or its index)")
    config_dict, _ = model_class.config_class.get_config_dict(directory)
    config = model_class.config_class.from_dict(config_dict, **config_overrides)
    quantization = QuantizationSettings.read(directory)
    with torch.device("meta"):
        model = model_class(config)
    if quantization is not None:
        quantized_shells(model, quantization)
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    found = {
        key: shape for file in sorted(set(files.values())) for key, shape in safetensors_header(file).items()
    }
    tied = set(model.all_tied_weights_keys) if config.tie_word_embeddings else set()
    check_tensors_match({k: v for k, v in expected.items() if k not in tied}, found, directory)

    skipped = {SAVED_PER_LAYER_KEY} if per_layer_on_disk else set()
    if per_layer_on_disk:
        put_per_layer_table_on_disk(
            model.language_model, files[SAVED_PER_LAYER_KEY], SAVED_PER_LAYER_KEY, dtype
        )
    keys = [k for k in model.state_dict() if k not in tied and k not in skipped]
    tensors = CheckpointFiles(directory).read(
        {k: k for k in keys}, desc=f"weights from {directory.name}", device=device
    )
    for file in sorted(set(files.values())):  # the error names the file that holds the tensor
        check_finite(((k, t) for k, t in tensors.items() if files.get(k) == file), file)
    # The table on disk is already in place (and in the state dict, as a view of the file).
    assign_tensors(model, tensors, f"saved model ({directory})", dtype, tied | skipped)
    model.tie_weights()
    if quantization is not None and LM_HEAD in quantization.modules:
        # Untied from a quantised head, the embedding table is only a lookup (1.07 GB at E2B): the finiteness
        # check read it whole; the rows in use come back from the file as they are read.
        page_out(model.language_model.model.embed_tokens.weight)
    materialise_meta_tensors(model, dtype, device)  # the non-persistent buffers (RoPE frequencies...)
    model.initialize_weights()
    if (directory / GENERATION_CONFIG_NAME).is_file():  # as `from_pretrained` reads it
        model.generation_config = GenerationConfig.from_pretrained(directory)
    model.freeze_encoders(clip=True, videomamba=True)
    return model.eval()
