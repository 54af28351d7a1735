"""Load a training run for inference (`load_run`) and export it as one model directory (`export_run`).

A run directory (see `run.py`) holds the resolved config; from it `load_run` rebuilds the base model the run
started from (a preset from its seed, a saved directory, or the components), applies the trained parts
(`full`: the whole saved model; otherwise the projectors and, for `finetune`, the LoRA adapter merged into
the decoder) and returns a plain `VideoGemmaForConditionalGeneration` in eval mode with its processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videogemma.train.model_source import build_model, load_projector_weights
from videogemma.train.run import CONFIG_NAME, PROJECTORS_NAME
from videogemma.train.stages import PROJECTORS
from videogemma.train.train_config import load_train_config


def load_run(run_dir: str | Path) -> tuple[Any, Any]:
    """(model, processor) of a finished training run, LoRA merged, ready for `generate`."""
    from videogemma.data.processor import VideoGemmaProcessor
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run directory: {CONFIG_NAME} is missing")
    config = load_train_config(config_path, validate=False)
    processor = VideoGemmaProcessor.from_pretrained(run_dir / "processor")
    if config.stage == "full":
        model_dir = run_dir / "model"
        if not model_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: the `full` run saved no model/ directory (did it finish?)")
        model = VideoGemmaForConditionalGeneration.from_pretrained(model_dir)
    else:
        projectors = run_dir / PROJECTORS_NAME
        if not projectors.is_file():
            raise FileNotFoundError(f"{run_dir}: {PROJECTORS_NAME} is missing (did the run finish?)")
        model = build_model(config.model, config.seed)
        load_projector_weights(model, projectors, required=PROJECTORS)
        if config.stage == "finetune":
            adapter_dir = run_dir / "adapter"
            if not adapter_dir.is_dir():
                raise FileNotFoundError(f"{run_dir}: the LoRA adapter/ directory is missing")
            model = load_adapter(model, adapter_dir).merge_and_unload()
            # modules_to_save copies were merged back into the projectors; the file is the ground truth.
            load_projector_weights(model, projectors, required=PROJECTORS)
    model.freeze_encoders(clip=True, videomamba=True)
    return model.eval(), processor


def load_adapter(model: Any, adapter_dir: Path) -> Any:
    """The PEFT model of `model` with the LoRA adapter saved in `adapter_dir`, strictly: the adapter file must be
    whole, hold every tensor the adapter's config creates, each with its shape, nothing else and no NaN or
    infinite value (PEFT alone would warn and leave what is missing at its random initialisation)."""
    import warnings

    from peft import PeftModel, get_peft_model_state_dict
    from peft.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import load_file

    from videogemma.modeling.integrity import (
        ModelWeightsError,
        check_finite,
        check_tensors_match,
        safetensors_header,
    )

    weights = adapter_dir / SAFETENSORS_WEIGHTS_NAME
    if not weights.is_file():
        raise ModelWeightsError(f"{weights}: missing (the run's LoRA adapter weights)")
    found = safetensors_header(weights)
    with warnings.catch_warnings():
        # PEFT warns about the tensors it skips; the check below names them and stops instead.
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(model, adapter_dir, ignore_mismatched_sizes=True)
    expected = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(peft_model).items()}
    check_tensors_match(expected, found, weights)
    check_finite(load_file(str(weights)).items(), weights)
    return peft_model


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a full model directory (LoRA merged) + processor, loadable by `from_pretrained`."""
    model, processor = load_run(run_dir)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
