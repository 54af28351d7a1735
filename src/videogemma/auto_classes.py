"""VideoGemma in transformers' Auto classes, registered without importing transformers at `import videogemma`.

After `import videogemma`:

    AutoConfig.from_pretrained("path/to/model")                      # VideoGemmaConfig
    AutoModelForImageTextToText.from_pretrained("path/to/model")     # VideoGemmaForConditionalGeneration
    AutoProcessor.from_pretrained("path/to/model")                   # VideoGemmaProcessor

Registering needs transformers (and with it torch: ~3 s), which `videogemma --help` must not pay for. So
`import videogemma` only installs an import hook (`install`): the config (with the model, by a stand-in that
imports the model class on first use) is registered once transformers' configuration Auto module is imported,
the processor once its processing Auto module is (right away for those already imported). Our own
modules call `register_loaded` at their end too, which covers the case where transformers' Auto module was
imported while one of ours was half-way through its own import (the class it registers did not exist yet).
Nothing is fetched from the Hub and no remote code is involved.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

CONFIG_AUTO = "transformers.models.auto.configuration_auto"
PROCESSOR_AUTO = "transformers.models.auto.processing_auto"
MODELING_MODULE = "videogemma.modeling.modeling_videogemma"
MODEL_CLASS = "VideoGemmaForConditionalGeneration"

# The model is registered with these Auto classes (Gemma-3n's own multimodal class sits in the first).
MODEL_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModel")

_registered: set[str] = set()


class _ModelOnFirstUse:
    """Stands for `VideoGemmaForConditionalGeneration` in the Auto model mappings until it is used: every
    config class transformers defines imports its modeling Auto module (for docstrings), so registering the
    real class there would import the whole model (Gemma-3n, CLIP, VideoMamba: seconds) with a mere config."""

    __name__ = MODEL_CLASS
    __qualname__ = MODEL_CLASS

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(importlib.import_module(MODELING_MODULE), MODEL_CLASS), name)

    def __repr__(self) -> str:
        return f"<{MODEL_CLASS}, imported on first use>"


def _register_config_and_model() -> None:
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    from videogemma.config import VideoGemmaConfig, VideoMambaConfig

    AutoConfig.register(VideoGemmaConfig.model_type, VideoGemmaConfig, exist_ok=True)
    AutoConfig.register(VideoMambaConfig.model_type, VideoMambaConfig, exist_ok=True)
    modeling = sys.modules.get(MODELING_MODULE)
    model_class = getattr(modeling, MODEL_CLASS, None) or _ModelOnFirstUse()
    for name in MODEL_AUTO_CLASSES:
        # The mapping itself: the Auto class's `register` reads `config_class`, which would import the model.
        getattr(modeling_auto, name)._model_mapping.register(VideoGemmaConfig, model_class, exist_ok=True)


def _register_processor() -> None:
    from transformers import AutoProcessor

    from videogemma.config import VideoGemmaConfig
    from videogemma.processing.processor import VideoGemmaProcessor

    AutoProcessor.register(VideoGemmaConfig, VideoGemmaProcessor, exist_ok=True)


# transformers' Auto module → the registration it enables.
REGISTRATIONS: dict[str, Callable[[], None]] = {
    CONFIG_AUTO: _register_config_and_model,
    PROCESSOR_AUTO: _register_processor,
}


def register_model_class(model_class: type) -> None:
    """Put the real model class in place of its stand-in (called when the modeling module has been run)."""
    if CONFIG_AUTO in _registered:
        import transformers

        for name in MODEL_AUTO_CLASSES:
            getattr(transformers, name).register(model_class.config_class, model_class, exist_ok=True)


def register_loaded() -> list[str]:
    """Register VideoGemma with every Auto module of transformers imported so far; returns the Auto modules
    newly served. One whose class cannot be imported yet (a module of ours still being imported) is left for
    a later call."""
    done = []
    for auto_module, register in REGISTRATIONS.items():
        if auto_module in _registered or auto_module not in sys.modules:
            continue
        try:
            register()
        except (ImportError, AttributeError):
            continue  # a half-imported module (ours or transformers'): a later call registers it
        _registered.add(auto_module)
        done.append(auto_module)
    return done


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds transformers' Auto modules with the other finders and registers VideoGemma once each has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in REGISTRATIONS or fullname in _registered:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        register_loaded()

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader...: the real loader's
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


_HOOK = _RegisterAfterImport()


def install() -> None:
    """Register now with the Auto modules already imported, and hook the others' import (idempotent)."""
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
    register_loaded()
