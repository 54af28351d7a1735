"""VideoMamba (OpenGVLab), the bidirectional video encoder of Mobile-VideoGPT (ARCHITECTURE §4).

A clip of T frames becomes one sequence `[CLS, frame 0 patches, frame 1 patches, …]`; residual blocks of
RMSNorm + bidirectional Mamba mix it; the final-norm features of the patches (CLS dropped) come out.
Parameter names equal the keys of the released checkpoints (`videomamba_m16_25M_f8_res224.pth`), so
`from_original_checkpoint` loads them 1:1 and refuses a checkpoint that lacks any of them, in particular
the backward-direction (`_b`) weights a forward-only port would silently drop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videogemma.config import VideoMambaConfig
from videogemma.modeling.checkpoints import load_torch_checkpoint
from videogemma.modeling.selective_scan import selective_scan

CHECKPOINT_PREFIX = "vision_encoder."
# The mixer's SSM parameters that stay fp32 whatever the model's dtype, as in Mamba: the scan exponentiates
# A_log and Δ, and bf16's 8-bit mantissa would move the decay rates of every state (names within a mixer).
KEEP_IN_FP32 = ("A_log", "A_b_log", "D", "D_b", "dt_proj.bias", "dt_proj_b.bias")
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


def keeps_fp32(name: str) -> bool:
    """Whether the parameter `name` (a full or relative state-dict name) is a mixer's `KEEP_IN_FP32` one."""
    _, found, tail = name.rpartition("mixer.")
    return bool(found) and tail in KEEP_IN_FP32


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (as mamba_ssm's fused kernel does), returned in the weight's dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight.float()).to(self.weight.dtype)


class BiMambaMixer(nn.Module):
    """Mamba mixer with a forward and a backward scan sharing `in_proj` and `out_proj` ("bimamba v2")."""

    def __init__(self, config: VideoMambaConfig) -> None:
        super().__init__()
        self.d_inner = config.d_inner
        self.d_state = config.d_state
        self.dt_rank = config.dt_rank
        self.scan_backend = config.scan_backend
        self.in_proj = nn.Linear(config.embed_dim, 2 * self.d_inner, bias=False)
        self.out_proj = nn.Linear(self.d_inner, config.embed_dim, bias=False)
        for suffix in ("", "_b"):  # the forward direction's weights, then the backward direction's
            conv = nn.Conv1d(
                self.d_inner,
                self.d_inner,
                kernel_size=config.d_conv,
                groups=self.d_inner,
                padding=config.d_conv - 1,  # the first L outputs of this padding are the causal conv
            )
            setattr(self, f"conv1d{suffix}", conv)
            setattr(
                self, f"x_proj{suffix}", nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
            )
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            dt_proj.bias = nn.Parameter(dt_proj.bias.detach().float())  # fp32 even under a bf16 default dtype
            setattr(self, f"dt_proj{suffix}", dt_proj)
            fp32 = torch.float32
            setattr(self, f"A{suffix}_log", nn.Parameter(torch.empty(self.d_inner, self.d_state, dtype=fp32)))
            setattr(self, f"D{suffix}", nn.Parameter(torch.empty(self.d_inner, dtype=fp32)))

    def _apply(self, fn: Any, recurse: bool = True) -> BiMambaMixer:
        """`.to(bfloat16)`, `.half()`... convert everything but the `KEEP_IN_FP32` parameters, which only
        move device (HF's `_keep_in_fp32_modules_strict` does the same when a model is loaded)."""
        before = {name: self.get_parameter(name).data for name in KEEP_IN_FP32}
        super()._apply(fn, recurse)
        for name, data in before.items():
            param = self.get_parameter(name)
            if data.dtype == torch.float32 and param.dtype in LOW_PRECISION_DTYPES:
                param.data = data.to(device=param.device)
                if param.grad is not None:
                    param.grad = param.grad.to(torch.float32)
        return self

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba's initialisation: S4D-real A, D = 1, and dt_proj so that softplus(bias) ∈ [dt_min, dt_max]."""
        for suffix in ("", "_b"):
            dt_proj = getattr(self, f"dt_proj{suffix}")
            std = self.dt_rank**-0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            log_dt = torch.rand(self.d_inner, dtype=torch.float32, device=dt_proj.bias.device)
            log_dt = log_dt * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            dt = torch.exp(log_dt).clamp(min=dt_floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
            A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=dt_proj.bias.device)
            A = A.expand(self.d_inner, -1)
            getattr(self, f"A{suffix}_log").copy_(torch.log(A))
            getattr(self, f"D{suffix}").fill_(1.0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, embed_dim) -> (B, L, embed_dim)."""
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2·d_inner, L)
        y_forward = self.scan_direction(xz, "")
        y_backward = self.scan_direction(xz.flip(-1), "_b").flip(-1)  # right to left, put back in order
        return self.out_proj((y_forward + y_backward).transpose(1, 2))

    def scan_direction(self, xz: torch.Tensor, suffix: str) -> torch.Tensor:
        """One direction, left to right over `xz` (B, 2·d_inner, L): the selective scan, gated by silu(z)."""
        x, z = xz.chunk(2, dim=1)
        length = x.shape[-1]
        u = F.silu(getattr(self, f"conv1d{suffix}")(x)[..., :length])
        dt, B, C = getattr(self, f"x_proj{suffix}")(u.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        dt_proj = getattr(self, f"dt_proj{suffix}")
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # bias goes in as delta_bias, before the softplus
        y = selective_scan(
            u,
            delta,
            -torch.exp(getattr(self, f"A{suffix}_log").float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            getattr(self, f"D{suffix}").float(),
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return y * F.silu(z)


class VideoMambaBlock(nn.Module):
    """Pre-norm residual block; the residual stream is carried separately (in fp32) as in mamba_ssm."""

    def __init__(self, config: VideoMambaConfig) -> None:
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.embed_dim, eps=config.rms_norm_eps)
        self.mixer = BiMambaMixer(config)

    def forward(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden_states if residual is None else residual + hidden_states
        if self.residual_in_fp32:
            residual = residual.float()
        return self.mixer(self.norm(residual)), residual


class PatchEmbed(nn.Module):
    """Non-overlapping (tubelet × patch × patch) cubes -> embed_dim, as one Conv3d."""

    def __init__(self, config: VideoMambaConfig) -> None:
        super().__init__()
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, D, T/tubelet, H/patch, W/patch)."""
        return self.proj(frames)


class VideoMamba(nn.Module):
    """Bidirectional VideoMamba: frames (B, T, 3, H, W) -> final-norm patch features (B, T·h·w, embed_dim)."""

    def __init__(self, config: VideoMambaConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size or config.num_frames % config.tubelet_size:
            raise ValueError(
                f"image_size {config.image_size} must be a multiple of patch_size {config.patch_size} and "
                f"num_frames {config.num_frames} a multiple of tubelet_size {config.tubelet_size}"
            )
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size**2 + 1, dim))
        self.temporal_pos_embedding = nn.Parameter(
            torch.zeros(1, config.num_frames // config.tubelet_size, dim)
        )
        self.layers = nn.ModuleList(VideoMambaBlock(config) for _ in range(config.depth))
        self.norm = RMSNorm(dim, eps=config.rms_norm_eps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init as in VideoMamba/Mamba, so that an untrained model gives finite, O(1) features."""
        for param in (self.cls_token, self.pos_embed, self.temporal_pos_embedding):
            nn.init.trunc_normal_(param, std=0.02)
        for layer in self.layers:
            layer.mixer.reset_ssm_parameters()
            # GPT-2 style: scale the residual branch's output projection by 1/sqrt(depth)
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            layer.mixer.out_proj.weight /= math.sqrt(self.config.depth)

    @property
    def tokens_per_frame(self) -> int:
        return self.config.grid_size**2

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) normalised frames -> (B, T/tubelet · h · w, embed_dim), CLS dropped."""
        self._check_frames(frames)
        batch = frames.shape[0]
        dtype = self.patch_embed.proj.weight.dtype
        x = self.patch_embed(frames.to(dtype).transpose(1, 2))  # (B, D, T', h, w)
        _, dim, steps, _, _ = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(batch, steps, -1, dim)  # (B, T', h·w, D)
        x = x + self.pos_embed[:, None, 1:]  # spatial position of every patch
        x = x + self.temporal_pos_embedding[:, :, None]  # time of every frame
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)  # one CLS for the whole clip
        hidden = torch.cat([cls, x.reshape(batch, -1, dim)], dim=1)  # [CLS, f0p0 … f0pN, f1p0 …]
        residual = None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        hidden = self.norm(residual + hidden)
        return hidden[:, 1:]

    def _check_frames(self, frames: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.num_frames, cfg.in_channels, cfg.image_size, cfg.image_size)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(
                f"VideoMamba expects frames of shape (batch, {', '.join(map(str, expected))}) "
                f"(num_frames, channels, image_size, image_size from its config), got {tuple(frames.shape)}"
            )

    # ---- loading the released weights -------------------------------------------------------------------

    @classmethod
    def from_original_checkpoint(
        cls,
        path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
        interpolate_temporal_pos_embedding: bool = False,
        source: str | None = None,
        **config_overrides: Any,
    ) -> VideoMamba:
        """Load an OpenGVLab VideoMamba checkpoint (.pth or .safetensors, or its state dict).

        The architecture (embed_dim, depth, patch/tubelet size, frames, image size, d_state, d_conv, expand,
        dt_rank) is read from the tensor shapes. `config_overrides` may set the other fields (rms_norm_eps,
        scan_backend, …); an override that contradicts the weights is an error, except `num_frames` with
        `interpolate_temporal_pos_embedding=True`, which resamples the temporal embedding linearly.
        Keys of other heads (text encoder, clip_decoder, masks, head) are ignored; a missing or mis-shaped
        encoder key (including every `_b` key of the backward scan) raises ValueError naming it.
        """
        if source is None:
            source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, Path)) else "state dict"
        state_dict = encoder_state_dict(path_or_state_dict)
        inferred = infer_config_from_state_dict(state_dict, source)

        num_frames = config_overrides.pop("num_frames", inferred["num_frames"])
        for key, value in config_overrides.items():
            if key in inferred and value != inferred[key]:
                raise ValueError(
                    f"{source}: the weights have {key}={inferred[key]}, cannot override with {value}"
                )
        if num_frames != inferred["num_frames"]:
            if not interpolate_temporal_pos_embedding:
                raise ValueError(
                    f"{source}: 'temporal_pos_embedding' is for {inferred['num_frames']} frames but "
                    f"num_frames={num_frames} was asked; pass interpolate_temporal_pos_embedding=True to "
                    "resample it linearly"
                )
            state_dict = dict(state_dict)
            state_dict["temporal_pos_embedding"] = _resample_temporal(
                state_dict["temporal_pos_embedding"], num_frames // inferred["tubelet_size"]
            )
        config = VideoMambaConfig(**{**inferred, **config_overrides, "num_frames": num_frames})
        tensors = checked_tensors(config, state_dict, source)
        model = cls(config)
        model.load_state_dict(tensors)
        return model.eval()


def checked_tensors(
    config: VideoMambaConfig, state_dict: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """The encoder's tensors of `state_dict` (as stored: no copy, no conversion), each checked against the
    model `config` describes (built on the meta device); a missing or mis-shaped key is a ValueError."""
    with torch.device("meta"):
        expected = VideoMamba(config).state_dict()
    for key, target in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source}: the VideoMamba key {key!r} is missing")
        if tuple(state_dict[key].shape) != tuple(target.shape):
            raise ValueError(
                f"{source}: {key!r} has shape {tuple(state_dict[key].shape)}, expected {tuple(target.shape)}"
            )
    return {key: state_dict[key] for key in expected}


def infer_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> dict:
    """The architecture fields of `VideoMambaConfig`, read from the shapes of an encoder state dict."""

    def tensor(key: str, ndim: int) -> torch.Tensor:
        if key not in state_dict:
            raise ValueError(f"{source}: the VideoMamba key {key!r} is missing")
        value = state_dict[key]
        if value.dim() != ndim:
            raise ValueError(f"{source}: {key!r} has shape {tuple(value.shape)}, expected {ndim} dimensions")
        return value

    patch = tensor("patch_embed.proj.weight", 5)  # (D, C, tubelet, p, p)
    embed_dim, in_channels, tubelet_size, patch_size = patch.shape[:4]
    pos_embed = tensor("pos_embed", 3)
    grid = math.isqrt(pos_embed.shape[1] - 1)
    if grid * grid + 1 != pos_embed.shape[1]:
        raise ValueError(
            f"{source}: 'pos_embed' {tuple(pos_embed.shape)} is not 1 + a square number of patches"
        )
    depth = 0
    while f"layers.{depth}.norm.weight" in state_dict:
        depth += 1
    if depth == 0:
        raise ValueError(f"{source}: the VideoMamba key 'layers.0.norm.weight' is missing")
    A_log = tensor("layers.0.mixer.A_log", 2)  # (d_inner, d_state)
    d_inner, d_state = A_log.shape
    if d_inner % embed_dim:
        raise ValueError(
            f"{source}: 'layers.0.mixer.A_log' {tuple(A_log.shape)} is not a multiple of {embed_dim}"
        )
    return dict(
        embed_dim=int(embed_dim),
        depth=depth,
        patch_size=int(patch_size),
        tubelet_size=int(tubelet_size),
        num_frames=int(tensor("temporal_pos_embedding", 3).shape[1] * tubelet_size),
        image_size=int(grid * patch_size),
        in_channels=int(in_channels),
        d_state=int(d_state),
        d_conv=int(tensor("layers.0.mixer.conv1d.weight", 3).shape[-1]),
        expand=int(d_inner // embed_dim),
        dt_rank=int(tensor("layers.0.mixer.dt_proj.weight", 2).shape[1]),
    )


def _load_state_dict(path_or_state_dict: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict
    path = Path(path_or_state_dict)
    if not path.is_file():
        raise FileNotFoundError(f"VideoMamba checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        return load_torch_checkpoint(path)
    raise ValueError(
        f"{path}: unknown checkpoint format {path.suffix!r} (expected .pth, .pt, .bin or .safetensors)"
    )


def _encoder_tensors(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap {'model'|'module': …} and keep the `vision_encoder.` sub-dict when there is one."""
    for wrapper in ("model", "module"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    if any(key.startswith(CHECKPOINT_PREFIX) for key in checkpoint):
        return {
            key[len(CHECKPOINT_PREFIX) :]: value
            for key, value in checkpoint.items()
            if key.startswith(CHECKPOINT_PREFIX)
        }
    return {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def encoder_state_dict(path_or_state_dict: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a checkpoint file or state dict (other heads' keys and prefixes dropped)."""
    return _encoder_tensors(_load_state_dict(path_or_state_dict))


def _resample_temporal(embedding: torch.Tensor, steps: int) -> torch.Tensor:
    """(1, T, D) -> (1, steps, D) by linear interpolation over time."""
    resampled = F.interpolate(
        embedding.float().transpose(1, 2), size=steps, mode="linear", align_corners=False
    )
    return resampled.transpose(1, 2).to(embedding.dtype)
