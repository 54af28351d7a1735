"""Readers for the three pretrained components, and the assembly of VideoGemma from them.

- Gemma-3n: a full multimodal `google/gemma-3n-E2B(-it)` directory (`model.language_model.*` keys, usually
  sharded with `model.safetensors.index.json`, `config.json` with a `text_config`) or a text-only
  `Gemma3nForCausalLM` directory (`model.*` keys). Only the text decoder's tensors are read, and from a full
  checkpoint `model.embed_vision.*` (≈ 4.5 M parameters), which gives the vectors of the vision-vocabulary
  tokens (<end_of_image>); the vision and audio towers (≈ 1 B parameters) are never loaded.
- CLIP: a `CLIPModel` directory (`vision_model.*` keys, `config.json` with a `vision_config`) or a
  `CLIPVisionModel` directory; safetensors, or `pytorch_model.bin` when a directory has no safetensors
  (read with `torch.load(weights_only=True)`).
- VideoMamba: an original OpenGVLab `.pth` (read by `videogemma.modeling.videomamba`), through
  `load_torch_checkpoint`: `torch.load(weights_only=True)` that also reads the training metadata such files
  carry (an EasyDict `config`, argparse `args`, numpy values) as plain data, and refuses anything else.

The model is built on the meta device, so no component is first filled with random weights; the tensors are
then read from the files straight to the target device, converted to the target dtype one by one, and
assigned; only what no checkpoint holds (the projectors, the non-persistent buffers such as RoPE frequencies)
is initialised. VideoMamba's SSM parameters stay fp32 in every dtype (`videomamba.keeps_fp32`).
"""

from __future__ import annotations

import importlib
import json
import logging
import pickle
import re
import struct
import typing
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, CLIPVisionConfig, Gemma3nTextConfig
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nMultimodalEmbedder

from videogemma.config import VideoGemmaConfig, VideoMambaConfig
from videogemma.errors import VideoGemmaError
from videogemma.hub import is_hub_id
from videogemma.modeling.disk_embedding import PER_LAYER_EMBEDDING

logger = logging.getLogger(__name__)

GEMMA3N_MULTIMODAL_TEXT_PREFIX = "model.language_model."
GEMMA3N_VISION_EMBEDDER_PREFIX = "model.embed_vision."
CLIP_VISION_PREFIX = "vision_model."
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_WEIGHTS = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
HUB_ALLOW_PATTERNS = ["config.json", "*.safetensors", SAFETENSORS_INDEX]
# Downloaded only when a repository has no safetensors (older CLIP uploads).
HUB_BIN_PATTERNS = ["config.json", PYTORCH_WEIGHTS, "pytorch_model-*.bin", PYTORCH_INDEX]


# ---- locating and reading checkpoint directories -----------------------------------------------------------


def resolve_checkpoint_dir(name_or_path: str | Path, what: str) -> Path:
    """A local directory, or a Hub id downloaded with `huggingface_hub` (config and safetensors; the `.bin`
    weights instead when the repository has no safetensors)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} checkpoint {path} is a file; expected a directory")
    name = str(name_or_path)
    if not is_hub_id(name):
        raise FileNotFoundError(f"{what} checkpoint {name} does not exist")
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(name, allow_patterns=HUB_ALLOW_PATTERNS))
        if not any(directory.glob("*.safetensors")):
            directory = Path(snapshot_download(name, allow_patterns=HUB_BIN_PATTERNS))
        return directory
    except Exception as error:  # offline, unknown repo, gated model...
        raise FileNotFoundError(
            f"{what} checkpoint {name} is not a local directory and could not be fetched from the Hub: {error}"
        ) from error


class CheckpointFiles:
    """The tensors of a checkpoint directory, read key by key: safetensors (one file, or shards listed in an
    index) or, in a directory without safetensors, PyTorch `.bin` files (`pytorch_model.bin` or the shards of
    its index), loaded with `weights_only=True`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._bin_states: dict[Path, dict[str, torch.Tensor]] = {}
        self.key_to_file = self._safetensors_keys()
        if self.key_to_file is None:
            self.key_to_file = self._bin_keys()
        if self.key_to_file is None:
            raise FileNotFoundError(
                f"no weights in {directory} (expected model.safetensors, {SAFETENSORS_INDEX}, {PYTORCH_WEIGHTS} "
                f"or {PYTORCH_INDEX})"
            )

    def _indexed(self, index_name: str) -> dict[str, Path] | None:
        index_path = self.directory / index_name
        if not index_path.exists():
            return None
        weight_map = json.loads(index_path.read_text())["weight_map"]
        key_to_file = {key: self.directory / file for key, file in weight_map.items()}
        for file in sorted(set(key_to_file.values())):
            if not file.exists():
                raise FileNotFoundError(f"{index_path} lists the shard {file.name}, which is missing")
        return key_to_file

    def _safetensors_keys(self) -> dict[str, Path] | None:
        indexed = self._indexed(SAFETENSORS_INDEX)
        if indexed is not None:
            return indexed
        files = sorted(self.directory.glob("*.safetensors"))
        if not files:
            return None
        key_to_file: dict[str, Path] = {}
        for file in files:
            with safe_open(file, framework="pt") as handle:
                key_to_file.update(dict.fromkeys(handle.keys(), file))
        return key_to_file

    def _bin_keys(self) -> dict[str, Path] | None:
        indexed = self._indexed(PYTORCH_INDEX)
        if indexed is not None:
            return indexed
        file = self.directory / PYTORCH_WEIGHTS
        if not file.is_file():
            return None
        return dict.fromkeys(self._bin_state(file), file)

    def _bin_state(self, file: Path) -> dict[str, torch.Tensor]:
        if file not in self._bin_states:
            try:  # memory-mapped where the file's format allows it (torch ≥ 1.6 zip files)
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                state = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(state, Mapping):
                raise ValueError(f"{file}: holds a {type(state).__name__}, not a state dict")
            self._bin_states[file] = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        return self._bin_states[file]

    def read(
        self, sources: Mapping[str, str], desc: str, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Read `{target name: key in the files}` onto `device`; only these tensors are loaded."""
        missing = [source for source in sources.values() if source not in self.key_to_file]
        if missing:
            raise KeyError(
                f"{self.directory}: {len(missing)} tensors missing from the checkpoint, e.g. {missing[:3]}"
            )
        by_file: dict[Path, list[tuple[str, str]]] = defaultdict(list)
        for target, source in sources.items():
            by_file[self.key_to_file[source]].append((target, source))
        tensors = {}
        with tqdm(total=len(sources), desc=desc, unit="tensor", leave=False) as progress:
            for file, pairs in by_file.items():
                if file.suffix == ".safetensors":
                    with safe_open(file, framework="pt", device=str(device)) as handle:
                        for target, source in pairs:
                            tensors[target] = handle.get_tensor(source)
                            progress.update()
                    continue
                state = self._bin_state(file)
                for target, source in pairs:
                    tensors[target] = state[source].to(device)
                    progress.update()
                del self._bin_states[file]  # read once: free the mapping
        return tensors


def _read_config(directory: Path, what: str) -> Any:
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"{what} checkpoint {directory} has no config.json")
    return AutoConfig.from_pretrained(directory)


# ---- the components -------------------------------------------------------------------------------------


def read_gemma3n_text_config(directory: Path) -> tuple[Gemma3nTextConfig, dict[str, Any]]:
    """The text decoder's config, and the ids a full multimodal config defines (image_token_id...)."""
    config = _read_config(directory, "Gemma-3n")
    text_config = config.get_text_config()
    if not isinstance(text_config, Gemma3nTextConfig):
        raise ValueError(f"{directory}/config.json is a {type(config).__name__}, not a Gemma-3n config")
    ids = {"image_token_id": config.image_token_id} if hasattr(config, "image_token_id") else {}
    return text_config, ids


def gemma3n_text_sources(checkpoint: CheckpointFiles, model_keys: list[str]) -> dict[str, str]:
    """Map `Gemma3nForCausalLM` state-dict keys to the checkpoint's keys (multimodal or text-only layout)."""
    multimodal = any(key.startswith(GEMMA3N_MULTIMODAL_TEXT_PREFIX) for key in checkpoint.key_to_file)
    sources = {}
    for key in model_keys:
        if multimodal and key.startswith("model."):
            sources[key] = GEMMA3N_MULTIMODAL_TEXT_PREFIX + key[len("model.") :]
        else:
            sources[key] = key
    return sources


def gemma3n_vision_vocab(directory: Path, checkpoint: CheckpointFiles) -> dict[str, int]:
    """`vision_vocab_offset` / `vision_vocab_size` of a full checkpoint that holds `model.embed_vision.*`;
    {} otherwise (a text-only checkpoint: those ids keep their text embedding rows)."""
    vision_config = getattr(_read_config(directory, "Gemma-3n"), "vision_config", None)
    if vision_config is None:
        return {}
    if not any(key.startswith(GEMMA3N_VISION_EMBEDDER_PREFIX) for key in checkpoint.key_to_file):
        logger.warning(
            "%s: no %s* tensors: <end_of_image> and the other vision-vocabulary ids take their text "
            "embedding rows, which Gemma-3n never used",
            directory,
            GEMMA3N_VISION_EMBEDDER_PREFIX,
        )
        return {}
    return {"vision_vocab_offset": vision_config.vocab_offset, "vision_vocab_size": vision_config.vocab_size}


def read_gemma3n_vision_token_embeds(
    directory: Path, checkpoint: CheckpointFiles, config: VideoGemmaConfig
) -> torch.Tensor:
    """(vision_vocab_size, hidden): what Gemma-3n's `embed_vision` gives each id of its vision vocabulary block,
    computed in fp32 by transformers' own `Gemma3nMultimodalEmbedder` from the checkpoint's weights."""
    full_config = _read_config(directory, "Gemma-3n")
    vision_config = getattr(full_config, "vision_config", None)
    if vision_config is None:
        raise ValueError(
            f"{directory} is a text-only Gemma-3n checkpoint: it has no embed_vision for vision_vocab_offset "
            f"{config.vision_vocab_offset} (leave vision_vocab_offset unset)"
        )
    if (vision_config.vocab_offset, vision_config.vocab_size) != (
        config.vision_vocab_offset,
        config.vision_vocab_size,
    ):
        raise ValueError(
            f"{directory}: embed_vision covers ids {vision_config.vocab_offset} + {vision_config.vocab_size}, "
            f"the config asks for {config.vision_vocab_offset} + {config.vision_vocab_size}"
        )
    with torch.device("meta"):
        embedder = Gemma3nMultimodalEmbedder(vision_config, full_config.get_text_config())
    # The hard-token path only: soft_embedding_norm (for the vision tower's soft tokens) stays on disk.
    hard_path = [key for key in embedder.state_dict() if not key.startswith("soft_embedding_norm.")]
    sources = {key: GEMMA3N_VISION_EMBEDDER_PREFIX + key for key in hard_path}
    tensors = checkpoint.read(sources, desc=f"Gemma-3n embed_vision from {directory.name}")
    embedder.load_state_dict({key: t.float() for key, t in tensors.items()}, strict=False, assign=True)
    ids = torch.arange(vision_config.vocab_offset, vision_config.vocab_offset + vision_config.vocab_size)
    with torch.no_grad():
        return embedder(input_ids=ids)


def read_clip_vision_config(directory: Path) -> CLIPVisionConfig:
    config = _read_config(directory, "CLIP")
    vision_config = getattr(config, "vision_config", config)
    if not isinstance(vision_config, CLIPVisionConfig):
        raise ValueError(f"{directory}/config.json is a {type(config).__name__}, not a CLIP config")
    return vision_config


def clip_vision_sources(checkpoint: CheckpointFiles, model_keys: list[str]) -> dict[str, str]:
    """`CLIPVisionModel` keys → the checkpoint's (`vision_model.*` in `CLIPModel` and older saves)."""
    prefixed = any(key.startswith(CLIP_VISION_PREFIX) for key in checkpoint.key_to_file)
    return {key: (CLIP_VISION_PREFIX + key if prefixed else key) for key in model_keys}


def read_videomamba(path: str | Path) -> tuple[VideoMambaConfig, dict[str, torch.Tensor]]:
    """The architecture (from the tensor shapes) and the encoder tensors of an original OpenGVLab VideoMamba
    checkpoint, as they are stored."""
    from videogemma.modeling.videomamba import encoder_state_dict, infer_config_from_state_dict

    if not Path(path).is_file():
        raise FileNotFoundError(f"VideoMamba checkpoint {path} does not exist")
    state_dict = encoder_state_dict(path)
    return VideoMambaConfig(**infer_config_from_state_dict(state_dict, str(path))), state_dict


def videomamba_tensors_for(
    path: str | Path, state_dict: dict[str, torch.Tensor], stored_frames: int, config: VideoMambaConfig
) -> dict[str, torch.Tensor]:
    """The checked encoder tensors for `config`, as stored (no fp32 module is built to check them); a temporal
    embedding trained on another frame count is resampled to `config.num_frames` (and the log says so)."""
    from videogemma.modeling.videomamba import _resample_temporal, checked_tensors

    if config.num_frames != stored_frames:
        logger.warning(
            "%s: VideoMamba was trained on %d frames, the model reads %d keyframes: its temporal position "
            "embedding is resampled linearly",
            path,
            stored_frames,
            config.num_frames,
        )
        state_dict = dict(state_dict)
        state_dict["temporal_pos_embedding"] = _resample_temporal(
            state_dict["temporal_pos_embedding"], config.num_frames // config.tubelet_size
        )
    return checked_tensors(config, state_dict, str(path))


# ---- torch checkpoints that carry training metadata -------------------------------------------------------

# What `load_torch_checkpoint` reads besides tensors and plain containers (named in its refusals).
METADATA_KINDS = "EasyDict, argparse.Namespace, numpy arrays and scalars, OmegaConf containers"


class UnsafeCheckpointError(VideoGemmaError):
    """A checkpoint whose unpickling would need a class or function outside the allow-list (it could run code)."""

    def __init__(self, path: str | Path, refused: list[str]) -> None:
        self.path = str(path)
        self.refused = refused
        super().__init__(
            f"{path}: refused to load: unpickling it needs {', '.join(refused)}, which could run code. "
            f"Only tensors, plain containers and common training metadata ({METADATA_KINDS}) are read from "
            "checkpoints; convert the file to safetensors, or save it without the other objects"
        )


def load_torch_checkpoint(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)`, with the training metadata checkpoints carry read as plain data.

    Tensors and plain containers load as `weights_only` allows. Besides, without importing their classes or
    running their code: `easydict.EasyDict` becomes a dict of its items, `argparse.Namespace` a dict of its
    attributes, OmegaConf `DictConfig` / `ListConfig` (when omegaconf is installed) dicts and lists with
    interpolations left unresolved; numpy arrays, dtypes and scalars are rebuilt by numpy from their bytes.
    Any other global is refused with `UnsafeCheckpointError` naming it, before anything of it runs.
    """
    plain = _PlainMetadata()
    with torch.serialization.safe_globals(plain.safe_globals()):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            refused = _refused_globals(path, str(error))
            if refused:
                raise UnsafeCheckpointError(path, refused) from None
            raise ValueError(f"{path}: not a readable torch checkpoint: {_unpickler_reason(error)}") from None
        except (RuntimeError, TypeError, ValueError, AttributeError, EOFError, struct.error) as error:
            # a truncated or corrupt file, or a pickle that misuses the allowed classes
            raise ValueError(f"{path}: not a readable torch checkpoint: {error}") from None
    return plain.convert(loaded, {})


class _PlainMetadata:
    """Stand-ins for metadata classes (built as `OrderedDict`s, the one mapping type `weights_only` lets
    both fill and give attributes to), and the conversion of what they built to plain dicts afterwards."""

    def __init__(self) -> None:
        # id → (where the data is, the object): "items" for EasyDict (its attributes mirror its items),
        # "attributes" for Namespace. The objects are kept so that their ids stay theirs.
        self.built: dict[int, tuple[str, OrderedDict]] = {}
        self.omegaconf = _omegaconf()

    def stand_in(self, source: str) -> type:
        built = self.built

        class StandIn:
            def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:  # an OrderedDict, not a StandIn
                data: OrderedDict = OrderedDict(args[0] if args and isinstance(args[0], Mapping) else ())
                data.update(kwargs)
                built[id(data)] = (source, data)
                return data

        return StandIn

    def safe_globals(self) -> list[tuple[Callable, str]]:
        entries = [
            (self.stand_in("items"), "easydict.EasyDict"),
            (self.stand_in("attributes"), "argparse.Namespace"),
        ]
        return entries + _numpy_globals() + _omegaconf_globals()

    def convert(self, value: Any, memo: dict[int, Any]) -> Any:
        """`value` with every stand-in replaced by a dict and OmegaConf containers by plain ones (in place in
        dicts and lists, which unpickling just created)."""
        if id(value) in memo:
            return memo[id(value)]
        source, data = self.built.get(id(value), (None, None))
        if data is value:
            plain: dict[Any, Any] = {}
            memo[id(value)] = plain
            for key, item in (value if source == "items" else vars(value)).items():
                plain[key] = self.convert(item, memo)
            return plain
        if self.omegaconf is not None and isinstance(value, self.omegaconf.Container):
            container = self.omegaconf.OmegaConf.to_container(value, resolve=False)
            memo[id(value)] = converted = self.convert(container, memo)
            return converted
        memo[id(value)] = value
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = self.convert(item, memo)
        elif isinstance(value, list):
            value[:] = [self.convert(item, memo) for item in value]
        elif type(value) is tuple:  # not torch.Size
            memo[id(value)] = value = tuple(self.convert(item, memo) for item in value)
        return value


def _numpy_globals() -> list[tuple[Callable, str]]:
    """numpy's reconstruction of arrays, dtypes and scalars from their bytes, under numpy 1 and 2 names."""
    import numpy as np

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    entries: list[tuple[Callable, str]] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [
            (multiarray._reconstruct, f"{module}._reconstruct"),
            (multiarray.scalar, f"{module}.scalar"),
        ]
    # A dtype's state is set on an instance of its concrete class (numpy.dtypes.Float32DType, …).
    for name, dtype_class in vars(np.dtypes).items():
        if isinstance(dtype_class, type) and issubclass(dtype_class, np.dtype):
            entries.append((dtype_class, f"numpy.dtypes.{name}"))
    return entries


def _omegaconf() -> Any:
    try:
        return importlib.import_module("omegaconf")
    except ImportError:
        return None


def _omegaconf_globals() -> list[tuple[Callable, str]]:
    """OmegaConf's containers, nodes and metadata, with the builtin types its metadata names (when installed)."""
    omegaconf = _omegaconf()
    if omegaconf is None:
        return []
    base, nodes = omegaconf.base, omegaconf.nodes

    classes = [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata]
    classes += [c for c in vars(nodes).values() if isinstance(c, type) and issubclass(c, base.Node)]
    entries = [(c, f"{c.__module__}.{c.__qualname__}") for c in classes]
    builtin_types = (dict, list, tuple, int, float, str, bool, bytes, object)
    entries += [(t, f"builtins.{t.__name__}") for t in builtin_types]
    return [*entries, (typing.Any, "typing.Any"), (defaultdict, "collections.defaultdict")]


def _refused_globals(path: str | Path, message: str) -> list[str]:
    """The globals of the checkpoint outside the allow-list, read from the pickle without running it (or,
    for the legacy non-zip format, the one the unpickler stopped at)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError):
        return re.findall(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)[:1]


def _unpickler_reason(error: Exception) -> str:
    """torch's reason for refusing, without its advice (which suggests loading with weights_only=False)."""
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
    reason = match.group(1) if match else str(error).strip().splitlines()[-1]
    return reason.split(" Please use `torch.serialization")[0]


# ---- assembly ---------------------------------------------------------------------------------------------


def _merge_overrides(config: Any, override: Any) -> Any:
    """A dict override updates a sub-config's fields; anything else replaces the value."""
    if isinstance(override, dict):
        for key, value in override.items():
            setattr(config, key, value)
        return config
    return override


def _target_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype | None, fp32: bool) -> torch.dtype:
    """The dtype a floating tensor is stored in: fp32 for the SSM parameters and the fp32 modules, else `dtype`
    (None: the tensor's own)."""
    from videogemma.modeling.videomamba import keeps_fp32

    if fp32 or keeps_fp32(name):
        return torch.float32
    return dtype if dtype is not None else tensor.dtype


def assign_tensors(
    module: nn.Module,
    tensors: dict[str, torch.Tensor],
    what: str,
    dtype: torch.dtype | None = None,
    tied: set[str] = frozenset(),
) -> None:
    """Assign loaded tensors to a meta-built module; every tensor of the module must be given (or tied).
    Floating tensors are converted to `dtype` one at a time (default: the model's dtype as built), so that at
    most one tensor of a checkpoint ever exists in two dtypes."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(tensors) - tied)
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        raise KeyError(f"{what}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    current = module.state_dict()
    for key, tensor in tensors.items():
        if tensor.shape != current[key].shape:
            raise ValueError(
                f"{what}: tensor {key} has shape {tuple(tensor.shape)}, the model expects {tuple(current[key].shape)}"
            )
        if tensor.is_floating_point():  # checkpoints are often bf16: convert to the model's dtype
            target = _target_dtype(key, current[key], dtype, fp32=False)
            tensors[key] = tensor.to(target)
    module.load_state_dict(tensors, strict=False, assign=True)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if name in tensors:
            tensor._is_hf_initialized = True


def materialise_meta_tensors(
    model: nn.Module,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    fp32_modules: tuple[str, ...] = (),
) -> list[str]:
    """Give every tensor still on the meta device real (uninitialised) storage on `device`, parameters in
    `dtype` (fp32 under `fp32_modules` and for the SSM parameters); returns their names."""
    names = []
    for module_name, module in model.named_modules():
        in_fp32_module = any(module_name == m or module_name.startswith(f"{m}.") for m in fp32_modules)
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                full = f"{module_name}.{name}"
                target = (
                    _target_dtype(full, param, dtype, in_fp32_module) if param.is_floating_point() else None
                )
                empty = torch.empty_like(param, device=device, dtype=target or param.dtype)
                module._parameters[name] = nn.Parameter(empty, requires_grad=param.requires_grad)
                names.append(full)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty_like(buffer, device=device)
                names.append(f"{module_name}.{name}")
    return names


def build_from_components(
    model_class: type,
    lm: str | Path,
    clip: str | Path,
    videomamba: str | Path,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    fp32_modules: tuple[str, ...] = (),
    per_layer_on_disk: bool | None = False,
    **config_overrides: Any,
) -> Any:
    """See `VideoGemmaForConditionalGeneration.from_components`."""
    lm_dir = resolve_checkpoint_dir(lm, "Gemma-3n")
    clip_dir = resolve_checkpoint_dir(clip, "CLIP")
    text_config, lm_ids = read_gemma3n_text_config(lm_dir)
    lm_checkpoint = CheckpointFiles(lm_dir)
    lm_ids.update(gemma3n_vision_vocab(lm_dir, lm_checkpoint))
    vision_config = read_clip_vision_config(clip_dir)
    videomamba_config, videomamba_state = read_videomamba(videomamba)
    stored_frames = videomamba_config.num_frames  # the config below derives its own from num_frames

    fields: dict[str, Any] = {
        "text_config": text_config,
        "vision_config": vision_config,
        "videomamba_config": videomamba_config,
        **lm_ids,
    }
    for key, value in config_overrides.items():
        fields[key] = _merge_overrides(fields[key], value) if key in fields else value
    config = VideoGemmaConfig(**fields)

    with torch.device("meta"):
        model = model_class(config)

    language_model = model.language_model
    lm_keys = list(language_model.state_dict())
    tied = set(language_model.all_tied_weights_keys) if text_config.tie_word_embeddings else set()
    sources = gemma3n_text_sources(lm_checkpoint, [k for k in lm_keys if k not in tied])
    table_key = f"model.{PER_LAYER_EMBEDDING}.weight"
    table_file = lm_checkpoint.key_to_file.get(sources[table_key])
    if per_layer_on_disk is None:
        per_layer_on_disk = table_file is not None and table_file.suffix == ".safetensors"
    if per_layer_on_disk and table_file is not None:  # (a missing table is reported by `read` below)
        from videogemma.modeling.lean import put_per_layer_table_on_disk

        put_per_layer_table_on_disk(
            language_model, table_file, sources.pop(table_key), dtype or torch.float32
        )
        tied = tied | {table_key}
    tensors = lm_checkpoint.read(sources, desc=f"Gemma-3n text weights from {lm_dir.name}", device=device)
    assign_tensors(language_model, tensors, f"Gemma-3n text model ({lm_dir})", dtype, tied)
    if config.vision_vocab_offset is not None:
        vision_token_embeds = read_gemma3n_vision_token_embeds(lm_dir, lm_checkpoint, config)
        model.vision_token_embeds = vision_token_embeds.to(dtype or vision_token_embeds.dtype)

    clip_model = model.clip.vision_model
    clip_checkpoint = CheckpointFiles(clip_dir)
    sources = clip_vision_sources(clip_checkpoint, list(clip_model.state_dict()))
    tensors = clip_checkpoint.read(sources, desc=f"CLIP vision weights from {clip_dir.name}", device=device)
    assign_tensors(clip_model, tensors, f"CLIP vision model ({clip_dir})", dtype)

    videomamba_tensors = videomamba_tensors_for(
        videomamba, videomamba_state, stored_frames, config.videomamba_config
    )
    videomamba_tensors = {key: tensor.to(device) for key, tensor in videomamba_tensors.items()}
    assign_tensors(model.videomamba, videomamba_tensors, f"VideoMamba ({videomamba})", dtype)

    # lm_head shares embed_tokens. Then only the projectors and the non-persistent buffers (RoPE frequencies,
    # embedding scales) are left: initialise them; HF's per-module init skips every tensor flagged as loaded.
    model.tie_weights()
    materialise_meta_tensors(model, dtype, device, fp32_modules)
    model.initialize_weights()
    model.freeze_encoders(clip=True, videomamba=True)
    return model.eval()
