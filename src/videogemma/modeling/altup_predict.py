"""AltUp's prediction and correction (`Gemma3nTextAltUp.predict` / `.correct`) in forms that run fast for
inference.

The library mixes AltUp's four streams with a batched matrix product: one (hidden × 4) by (4 × 4) product per
position, with transposing copies around it. Traced (a compiled prefill) that is 2-3 s of an E2B prefill on 2
cores; eager for one position (a decode step) 88 µs a layer, 2.6 ms of an E2B step on this CPU, for 32,768
multiply-adds. Written as a broadcast product and a sum instead, inductor fuses it into one pass over the
streams (`_mixed`). Eager, each of the two steps is one C call (`quantized_rows.c`; the positions split between
the threads): the router (RMSNorm, the 2,048 → 4 product, tanh), the coefficients and the mixing, in fp32 and
rounded once to the streams' dtype where the library rounds after each of its ~12 operations: for one position
75-85 µs a layer for the prediction and 67 for the correction in the library's operations, a few µs each in C;
for an E2B prompt of 2,443 positions, eager bf16 on the 2-core Xeon of stop 32, the whole prefill 11.5 → 9.1 s
(the library's transposing copies and in-place additions over the four streams were 2-2.5 s of it). Tested
against the library's forms: within its bf16 roundings, fp32 to 1e-5, a tiny model's greedy tokens. Where the C
cannot run, the prediction's broadcast form in fp32 for one position and the library's forms otherwise.
Training calls the library's forms (the broadcast form's intermediate is 4 × 4 × positions × hidden).

    use_fused_altup_predict(language_model)    # in place, once; `loading.prepare_decoder` does it
"""

from __future__ import annotations

import torch
from torch import nn

from videogemma.modeling import quantized_rows
from videogemma.modeling.row_norms import fp32_weight

ONE_CALL_STREAMS = 8  # the C file's ALTUP_STREAMS


def _one_call_takes(altup: nn.Module, states: torch.Tensor) -> bool:
    """What the C calls compute: inference on the CPU (any positions), not traced, the streams' dtype throughout."""
    weights = (altup.modality_router.weight, altup.prediction_coefs.weight, altup.correction_coefs.weight)
    return (
        not altup.training
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and states.device.type == "cpu"
        and states.dtype in quantized_rows.KERNEL_DTYPES
        and all(weight.dtype == states.dtype and weight.is_contiguous() for weight in weights)
        and getattr(altup.router_norm, "with_scale", False)
        and states.shape[-1] % 16 == 0
        and altup.config.altup_num_inputs <= ONE_CALL_STREAMS
        and quantized_rows.kernels() is not None
    )


def _one_call(
    kernel: str, altup: nn.Module, inputs: tuple[torch.Tensor, ...], coefficients: nn.Linear
) -> torch.Tensor:
    """`altup_predict` (inputs: the streams) or `altup_correct` (the predictions, the layer's output) in C: the
    router (its norm's weight in fp32, eps, the library's input scale 1 / hidden, its weight), the coefficients'
    weight, an output shaped as the streams."""
    inputs = tuple(tensor.contiguous() for tensor in inputs)
    streams = inputs[0]
    out = torch.empty_like(streams)
    n, width = streams.shape[0], streams.shape[-1]
    norm = altup.router_norm
    norm_weight = fp32_weight(norm)  # held here until the call returns
    quantized_rows.run(
        kernel, *(tensor.data_ptr() for tensor in inputs), altup.config.altup_active_idx, norm_weight.data_ptr(),
        norm.variance_epsilon, altup.config.hidden_size**-1.0, altup.modality_router.weight.data_ptr(),
        coefficients.weight.data_ptr(), out.data_ptr(), int(streams.dtype == torch.bfloat16), n,
        streams.numel() // (n * width), width,
    )  # fmt: skip
    return out


class FusedAltUpPredict:
    """A layer's `altup.predict`: one C call in eager inference, the broadcast form when traced (or for one
    position where the C cannot run), else the library's."""

    def __init__(self, altup: nn.Module) -> None:
        self.altup = altup
        self.library = altup.predict

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        altup = self.altup
        if altup.training:
            return self.library(hidden_states)
        if torch.compiler.is_compiling():
            return self._mixed(hidden_states, hidden_states.dtype)
        if _one_call_takes(altup, hidden_states):
            return _one_call("altup_predict", altup, (hidden_states,), altup.prediction_coefs)
        if hidden_states.shape[-2] == 1:  # (streams, batch, positions, hidden): a decode step
            return self._mixed(hidden_states, torch.float32)
        return self.library(hidden_states)

    def _mixed(self, hidden_states: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
        altup = self.altup
        config = altup.config
        modalities = altup.compute_router_modalities(hidden_states[config.altup_active_idx])
        n = config.altup_num_inputs
        # coefs[j, i]: how much stream i adds to prediction j (the library's coefficients, transposed).
        coefs = altup.prediction_coefs(modalities).reshape(*modalities.shape[:-1], n, n).permute(2, 3, 0, 1)
        streams = hidden_states.to(compute_dtype)
        mixed = (streams[None] * coefs[..., None].to(compute_dtype)).sum(dim=1)
        return (mixed + streams).contiguous().type_as(hidden_states)


class FusedAltUpCorrect:
    """A layer's `altup.correct`: one C call in eager inference, else the library's."""

    def __init__(self, altup: nn.Module) -> None:
        self.altup = altup
        self.library = altup.correct

    def __call__(self, predictions: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
        altup = self.altup
        if not (_one_call_takes(altup, predictions) and activated.dtype == predictions.dtype):
            return self.library(predictions, activated)
        return _one_call("altup_correct", altup, (predictions, activated), altup.correction_coefs)


def use_fused_altup_predict(language_model: nn.Module) -> None:
    """Give every decoder layer of a Gemma-3n language model the fused prediction and correction (in place;
    idempotent)."""
    for layer in language_model.model.layers:
        if not isinstance(layer.altup.predict, FusedAltUpPredict):
            layer.altup.predict = FusedAltUpPredict(layer.altup)
        if not isinstance(layer.altup.correct, FusedAltUpCorrect):
            layer.altup.correct = FusedAltUpCorrect(layer.altup)
