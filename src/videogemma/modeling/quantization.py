"""Weight-only quantisation of the text decoder's linear layers for inference: int8 (per output row) or int4
(groups of `INT4_GROUP_SIZE` along the input, asymmetric), the activations kept in the model's dtype, except
that an int4 decoder's decode steps on the CPU may round them to int8 (`set_int4_activations`; `load`'s default).

    quantize_language_model(model, "int4", lm_head=True)   # in place; returns the names it replaced
    prepare_for_inference(model)                           # CPU: int4 weights in torch's kernel's order

On the CPU the matrix products are torch's own weight-only kernels (`torch._weight_int8pack_mm`,
`torch._weight_int4pack_mm_for_cpu`: the kernels gpt-fast and torchao's CPU layouts call). torchao 0.18 was
measured first: its int8 weight-only tensor runs a decode-shaped product 3× slower than bf16 on this CPU and
it has no int4 layout for an x86 CPU any more (docs/ONDEVICE.md). Elsewhere (CUDA) a layer dequantises its
weight for each product: correct, and the weights take the quantised size in memory, but not faster. A
prefill (many rows) dequantises each weight once and runs the dtype's own GEMM, which is several times
faster than the weight-only kernels at that shape; decoding (one row) runs the kernels.

What stays in the model's dtype: the encoders, the projectors, the embeddings, the norms and the decoder's
few small linears (AltUp's 4 × 4 coefficients and router: too small for the kernels' tiles, < 0.1 % of the
weights). The tied LM head (Gemma-3n's 262,144 × 2,048 embedding table, read whole by every decode step) is
quantised only when asked (`lm_head=True`): it is then untied, the embedding table kept as it was.

A quantised model saves as a model directory whose `quantization.json` says what was quantised; the weights
file holds each layer's `qweight` / `scales` (/ `zeros`) as quantised, so loading never re-quantises.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from videogemma.constants import INT4_ACTIVATION_CHOICES, QUANTIZE_CHOICES
from videogemma.errors import ModelLoadError
from videogemma.modeling import quantized_rows
from videogemma.modeling.memory_pages import page_out

INT4_GROUP_SIZE = 128
# The CPU int4 kernel packs output rows in tiles of 16.
INT4_ROW_MULTIPLE = 16
# The CPU int4 kernel's layout repeats every this many output rows (`_cpu_kernel_order`).
INT4_KERNEL_BLOCK = 64
# Rows packed for the CPU kernel at a time (whole kernel blocks): the kernel takes its input as int32, 8 bytes for
# each packed byte, which for the whole 262,144-row LM head at E2B would be 2.1 GB at once.
INT4_PACK_ROWS = 64 * INT4_KERNEL_BLOCK
# From this many rows (tokens) on, a layer dequantises its weight and runs the dtype's own GEMM (a prefill).
DEQUANTIZE_FROM_ROWS = 16
# int4 values are stored offset by 8 (0..15), as the int4 kernels read them: w = (q - 8) · scale + zero.
INT4_OFFSET = 8
# One-row int8 products over input widths in this range go through the paired view (`int8_one_row_product`):
# measured faster at 2,048 (1.2-1.4×), no faster at 8,192, slower at 256 (`benchmarks/row_products.py`).
INT8_PAIRED_WIDTHS = range(1024, 4096 + 1)
QUANTIZATION_FILE = "quantization.json"
LM_HEAD = "language_model.lm_head"


class QuantizedLinear(nn.Module):
    """`nn.Linear` with an int8 or int4 weight; `forward` computes x·Wᵀ (+ b) in x's dtype.

    Persistent buffers (what a saved model holds): `qweight` (int8 (out, in) for int8; uint8 (out, in/2),
    two int4 values per byte, the even input index in the low nibble, for int4), `scales` ((out,) for int8;
    (out, in/group) for int4) and, for int4, `zeros` (out, in/group)."""

    # int4 only: whether a decode step's product (a few rows, our CPU kernels, AVX512-VNNI) rounds x to int8 per
    # group of 128 first (`set_int4_activations`). Not saved: a choice of how to compute, not of the weights.
    int8_activations = False

    def __init__(self, in_features: int, out_features: int, bits: int, bias: bool = False) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, not {bits}")
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.group_size = INT4_GROUP_SIZE if bits == 4 else in_features
        groups = in_features // self.group_size
        if bits == 8:
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scales", torch.ones(out_features))
            self.zeros = None
        else:
            self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scales", torch.ones(out_features, groups))
            self.register_buffer("zeros", torch.zeros(out_features, groups))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # The int4 CPU kernel's [groups, out, 2] scales and zeros, once `qweight` is in its order (`prepare`).
        self._scales_and_zeros: torch.Tensor | None = None

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        """Whether the kernels take this layer's shape: input in whole int4 groups, output rows in tiles (the
        same layers at both precisions; AltUp's 4 × 4 coefficients, which Gemma-3n clamps through `.weight`,
        are not)."""
        return linear.in_features % INT4_GROUP_SIZE == 0 and linear.out_features % INT4_ROW_MULTIPLE == 0

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, bits: int) -> QuantizedLinear:
        """The layer's weight quantised (round to nearest), scales in the weight's dtype."""
        weight = linear.weight.detach().float()
        module = cls(linear.in_features, linear.out_features, bits, bias=linear.bias is not None)
        module.to(linear.weight.device)
        if bits == 8:
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
            module.qweight.copy_(torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
            module.scales = scales.to(linear.weight.dtype)
        else:
            grouped = weight.reshape(linear.out_features, -1, module.group_size)
            low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
            scales = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
            values = torch.round((grouped - low[..., None]) / scales[..., None]).clamp(0, 15)
            module.qweight.copy_(pack_int4(values.reshape(linear.out_features, -1).to(torch.uint8)))
            module.scales = scales.to(linear.weight.dtype)
            module.zeros = (low + INT4_OFFSET * scales).to(linear.weight.dtype)
        if linear.bias is not None:
            module.bias = linear.bias.detach().clone()
        return module

    def plain_values(self) -> torch.Tensor:
        """The int4 values (out, in) as uint8 0..15, in row order, whether packed for the kernel or not."""
        if self._scales_and_zeros is None:
            return unpack_int4(self.qweight)
        return cpu_kernel_packed_to_plain(self.qweight)

    def dequantized(self) -> torch.Tensor:
        """The weight the quantised values stand for, (out, in) in the scales' dtype."""
        # One weight-sized result, computed in place after it is made (int8: the product promotes to the scales'
        # dtype): each fresh weight-sized tensor costs its page faults, and a prefill dequantises every layer.
        # The same bits as the step-by-step form.
        if self.bits == 8 and self._dequantizes_in_c():
            return quantized_rows.int8_dequantize(self.qweight, self.scales)
        if self.bits == 8:
            return torch.mul(self.qweight, self.scales[:, None])
        if self._dequantizes_in_c():
            return quantized_rows.int4_dequantize(self.qweight, self.scales, self.zeros)
        scales, zeros = self._group_scales_and_zeros()
        values = self.plain_values().to(scales.dtype).sub_(INT4_OFFSET)
        grouped = values.reshape(self.out_features, -1, self.group_size)
        grouped.mul_(scales[..., None]).add_(zeros[..., None])
        return values

    def _dequantizes_in_c(self) -> bool:
        """Eager on the CPU with our kernels, an int8 weight or an int4 one in row order dequantises in one C
        pass (traced code keeps the torch form, which inductor fuses)."""
        return (
            self._scales_and_zeros is None
            and self.qweight.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and self.scales.dtype in quantized_rows.KERNEL_DTYPES
            and quantized_rows.kernels() is not None
        )

    def _group_scales_and_zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        """int4's (out, groups) scales and zeros: once packed, views of the kernel's own copy (`prepare`)."""
        if self._scales_and_zeros is None:
            return self.scales, self.zeros
        return self._scales_and_zeros[..., 0].t(), self._scales_and_zeros[..., 1].t()

    def prepare(self) -> None:
        """On the CPU, put an int4 layer's values in the order torch's kernel reads (in place: the same bytes;
        saving converts them back), unless our row kernels decode (they read the saved row order). Elsewhere,
        and for int8, nothing to do."""
        if self.bits != 4 or self.qweight.device.type != "cpu" or self._scales_and_zeros is not None:
            return
        if quantized_rows.kernels() is not None:
            return
        row_order = self.qweight
        self.qweight = torch.cat(
            [
                torch._convert_weight_to_int4pack_for_cpu(unpack_int4(rows).to(torch.int32), 1)
                for rows in row_order.split(INT4_PACK_ROWS)
            ]
        )
        self._scales_and_zeros = torch.stack([self.scales, self.zeros], dim=-1).transpose(0, 1).contiguous()
        # A saved model's row-order bytes, scales and zeros are pages of the memory-mapped weights file, resident
        # since they were read: handing them back keeps them from counting twice in the process's memory (the
        # kernel reads its own copies from now on).
        for tensor in (row_order, self.scales, self.zeros):
            page_out(tensor)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._scales_and_zeros is not None:  # saved in the plain order, whatever the device
            destination[prefix + "qweight"] = pack_int4(self.plain_values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] >= DEQUANTIZE_FROM_ROWS or flat.device.type != "cpu":
            # A prefill: the weight dequantised once and the dtype's own GEMM (AVX512-BF16, AMX) is several
            # times faster than the weight-only kernels, which are made for few rows (decoding).
            out = F.linear(flat, self.dequantized().to(flat.dtype))
        else:
            out = self._few_rows(flat)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def _few_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """A decode step's product on the CPU: our row kernels where they run, else torch's kernels."""
        if self._scales_and_zeros is not None:  # int4 in torch's kernel order
            return torch._weight_int4pack_mm_for_cpu(
                flat, self.qweight, self.group_size, self._scales_and_zeros.to(flat.dtype)
            )
        if quantized_rows.kernels() is not None and flat.dtype in quantized_rows.KERNEL_DTYPES:
            flat = flat.contiguous()
            if self.bits == 8:
                return quantized_rows.int8_rows(flat, self.qweight, self.scales)
            return quantized_rows.int4_rows(
                flat, self.qweight, self.scales, self.zeros, self.int8_activations
            )
        if self.bits == 8 and flat.shape[0] == 1 and self._pairs_rows:
            return int8_one_row_product(flat, self.qweight, self.scales)
        if self.bits == 8:
            return torch._weight_int8pack_mm(flat, self.qweight, self.scales.to(flat.dtype))
        return F.linear(flat, self.dequantized().to(flat.dtype))

    @property
    def _pairs_rows(self) -> bool:
        return self.in_features in INT8_PAIRED_WIDTHS and self.out_features % 2 == 0

    def extra_repr(self) -> str:
        group = f", group {self.group_size}" if self.bits == 4 else ""
        return f"{self.in_features}, {self.out_features}, int{self.bits}{group}"


def int8_one_row_product(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (1, in) · dequantised(qweight)ᵀ for an int8 (out, in) weight with per-row `scales`, through torch's
    int8 kernel over the weight viewed as (out / 2, 2 · in): each view row is two weight rows side by side,
    and x sits in one half of each of two input rows. On this CPU the kernel reads one 2,048-wide row
    (most of the decoder's) at 13-15 GB/s and 8,192-wide ones at 21-23; the paired view of 2,048-wide rows
    at 17-23 (`benchmarks/row_products.py`). The scales come after the kernel's rounding to x's dtype: one
    rounding more than the kernel's own scaling."""
    rows, columns = qweight.shape
    paired = x.new_zeros(2, 2 * columns)
    paired[0, :columns] = x[0]
    paired[1, columns:] = x[0]
    ones = x.new_ones(rows // 2)
    out = torch._weight_int8pack_mm(
        paired, qweight.view(rows // 2, 2 * columns), ones
    )  # out[j, m]: row 2m + j
    return out.t().reshape(1, rows) * scales.to(x.dtype)


@functools.cache
def _cpu_kernel_order(rows: int, columns: int) -> torch.Tensor:
    """For a block of `rows` output rows: the row-order position of each int4 value as
    `torch._convert_weight_to_int4pack_for_cpu` lays it out (its own tiling, read off by packing the positions'
    bits four at a time; the layout repeats every `INT4_KERNEL_BLOCK` rows)."""
    position = torch.arange(rows * columns, dtype=torch.int64).reshape(rows, columns)
    source = torch.zeros(rows * columns, dtype=torch.int64)
    for shift in range(0, (rows * columns - 1).bit_length(), 4):
        digits = ((position >> shift) & 15).to(torch.int32)
        packed = torch._convert_weight_to_int4pack_for_cpu(digits, 1)
        source |= unpack_int4(packed).reshape(-1).to(torch.int64) << shift
    return torch.argsort(source)


def cpu_kernel_packed_to_plain(packed: torch.Tensor) -> torch.Tensor:
    """The CPU kernel's packed bytes (out, in/2) → the (out, in) int4 values in row order.

    Each whole block of `INT4_KERNEL_BLOCK` rows is laid out as (in, 32) bytes whose low nibbles are the block's
    first 32 rows and high nibbles its last 32 (what `_cpu_kernel_order` reads off, checked by the tests), so
    two strided nibble extractions put it back; a part block at the end goes through the read-off order.
    """
    rows, columns = packed.shape[0], packed.shape[1] * 2
    full = rows - rows % INT4_KERNEL_BLOCK
    values = torch.empty(rows, columns, dtype=torch.uint8, device=packed.device)
    if full:
        half = INT4_KERNEL_BLOCK // 2
        blocks = packed[:full].reshape(full // INT4_KERNEL_BLOCK, columns, half)
        if torch.compiler.is_compiling():
            # Traced (a compiled prefill): `out=` into strided views would break the graph at every layer;
            # the functional form fuses with `dequantized`'s arithmetic into one pass.
            nibbles = torch.cat([blocks & 15, blocks >> 4], dim=2)
            values[:full] = nibbles.transpose(1, 2).reshape(full, columns)
        else:
            target = values[:full].view(full // INT4_KERNEL_BLOCK, INT4_KERNEL_BLOCK, columns)
            torch.bitwise_and(blocks, 15, out=target[:, :half].transpose(1, 2))
            torch.bitwise_right_shift(blocks, 4, out=target[:, half:].transpose(1, 2))
    if rows > full:
        tail = rows - full
        order = _cpu_kernel_order(tail, columns)
        values[full:] = unpack_int4(packed[full:]).reshape(-1)[order].reshape(tail, columns)
    return values


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """(rows, 2n) uint8 values 0..15 → (rows, n) bytes, the even column in the low nibble."""
    return values[:, ::2] | (values[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_int4`."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


@dataclass
class QuantizationSettings:
    """What `quantization.json` of a saved model records: the precision and the layers it applies to."""

    method: str
    modules: list[str] = field(default_factory=list)
    group_size: int = INT4_GROUP_SIZE

    @property
    def bits(self) -> int:
        return int(self.method.removeprefix("int"))

    def save(self, directory: Path) -> None:
        from videogemma.files import atomic_write

        with atomic_write(Path(directory) / QUANTIZATION_FILE) as file:
            file.write(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> QuantizationSettings | None:
        """The settings of a saved quantised model; None when the directory holds a plain one."""
        path = Path(directory) / QUANTIZATION_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            settings = cls(method=str(raw["method"]), modules=[str(m) for m in raw["modules"]],
                           group_size=int(raw.get("group_size", INT4_GROUP_SIZE)))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{path}: not a readable quantisation record ({error})") from None
        if settings.method not in QUANTIZE_CHOICES or settings.group_size != INT4_GROUP_SIZE:
            raise ModelLoadError(
                f"{path}: method {settings.method!r}, group size {settings.group_size}; this version reads "
                f"{'/'.join(QUANTIZE_CHOICES)} with groups of {INT4_GROUP_SIZE}"
            )
        return settings


def check_method(method: str | None) -> None:
    if method is not None and method not in QUANTIZE_CHOICES:
        raise ModelLoadError(f"quantize: {method!r} is not one of {', '.join(QUANTIZE_CHOICES)}")


def check_int4_activations(activations: str) -> None:
    if activations not in INT4_ACTIVATION_CHOICES:
        raise ModelLoadError(
            f"int4 activations: {activations!r} is not one of {', '.join(INT4_ACTIVATION_CHOICES)}"
        )


def decoder_linears(model: nn.Module, lm_head: bool) -> list[str]:
    """Names (in `model`) of the text decoder's linear layers the kernels take; the LM head too if asked."""
    names = [
        f"language_model.model.{name}"
        for name, module in model.language_model.model.named_modules()
        if isinstance(module, nn.Linear) and QuantizedLinear.fits(module)
    ]
    return names + ([LM_HEAD] if lm_head else [])


def untie_lm_head(model: nn.Module) -> None:
    """Stop tying the LM head to the embedding table (a quantised head is its own tensor)."""
    for config in (model.config, model.config.text_config, model.language_model.config):
        config.tie_word_embeddings = False


def quantize_language_model(model: nn.Module, method: str, lm_head: bool = False) -> QuantizationSettings:
    """Replace the decoder's linear layers (and the LM head if `lm_head`) by `QuantizedLinear`, in place."""
    check_method(method)
    bits = int(method.removeprefix("int"))
    names = decoder_linears(model, lm_head)
    if lm_head:
        head = model.language_model.lm_head
        if bits == 4 and not QuantizedLinear.fits(head):
            raise ModelLoadError(
                f"the LM head ({head.out_features} × {head.in_features}) does not fit the int4 kernel's tiles "
                f"(rows in multiples of {INT4_ROW_MULTIPLE}); quantise it to int8 or leave it"
            )
        untie_lm_head(model)
    for name in names:
        parent, child = _parent(model, name)
        setattr(parent, child, QuantizedLinear.from_linear(getattr(parent, child), bits))
    return QuantizationSettings(method=method, modules=names)


def quantized_shells(model: nn.Module, settings: QuantizationSettings) -> None:
    """Replace the layers `settings` names by empty `QuantizedLinear`s of their shapes (a saved quantised
    model's weights are then loaded into them)."""
    if LM_HEAD in settings.modules:
        untie_lm_head(model)
    for name in settings.modules:
        try:
            parent, child = _parent(model, name)
            linear = getattr(parent, child)
        except AttributeError:
            raise ModelLoadError(f"{QUANTIZATION_FILE}: the model has no layer {name}") from None
        if not isinstance(linear, nn.Linear):
            raise ModelLoadError(f"{QUANTIZATION_FILE}: {name} is not a linear layer")
        with torch.device(linear.weight.device):
            shell = QuantizedLinear(
                linear.in_features, linear.out_features, settings.bits, linear.bias is not None
            )
        setattr(parent, child, shell)


def prepare_for_inference(model: nn.Module) -> None:
    """Pack every int4 layer for the CPU kernel (after the model is on its device)."""
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            module.prepare()


def set_int4_activations(model: nn.Module, activations: str) -> None:
    """How the int4 layers' decode-step products take their input: "int8" rounds each group of 128 inputs to int8
    at its own scale (max |x| / 127) and multiplies in integers, ~2.4× the kernel's arithmetic rate, which at E2B
    on a 2-core Xeon took a decode step from 1.47× to 1.24× its memory bound; "exact" multiplies x as it is. A
    prefill (which dequantises each weight for the dtype's GEMM) and int8 layers are the same either way. The
    measured cost in answers: docs/ONDEVICE.md, `benchmarks/quantization.py`."""
    check_int4_activations(activations)
    for module in model.modules():
        if isinstance(module, QuantizedLinear) and module.bits == 4:
            module.int8_activations = activations == "int8"


def int4_activations_in_use(model: nn.Module) -> str | None:
    """What the int4 layers' decode steps multiply by here: "int8" (asked for, and the kernels round on this
    CPU), "exact", or None for a model without int4 layers."""
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear) and m.bits == 4]
    if not layers:
        return None
    rounded = any(m.int8_activations for m in layers) and quantized_rows.int8_activations_run()
    return "int8" if rounded else "exact"


def quantized_method(model: nn.Module) -> str | None:
    """ "int8" / "int4" when the model holds quantised layers, else None."""
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            return f"int{module.bits}"
    return None


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, child = name.rpartition(".")
    return model.get_submodule(path), child
