"""A KV cache whose full-attention layers grow in place, for generation.

transformers' `DynamicLayer` appends each decode step's key and value with `torch.cat`: a new tensor the size of
the whole cache, every step, in every layer that keeps its own keys. After a video prompt at E2B (2,443
positions, four such layers of 2 × 2.5 MB) that is 20 MB allocated, page-faulted and copied per token, 5 ms of a
decode step on this CPU. `GrowingLayer` keeps its keys and values in buffers with room for more positions and
writes only the new ones; the cache it returns is a view of the filled part, with the same values `torch.cat`
gives. The sliding-window layers keep transformers' layer (their cache is one window, 511 positions).

    cache = GrowingCache(config=text_config)      # what `VideoGemmaForConditionalGeneration.generate` uses
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# Room a buffer makes when it fills: this many positions, or a quarter of its length if that is more.
GROW_POSITIONS = 256


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` with its keys and values written into buffers that grow a chunk at a time. With gradients
    enabled it concatenates as the library does (a written buffer would change tensors autograd keeps)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if torch.is_grad_enabled():
            self._key_buffer = self._value_buffer = None
            return super().update(key_states, value_states, *args, **kwargs)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if not self._holds_the_cache(key_states) or end > self._key_buffer.shape[-2]:
            self._reallocate(key_states, value_states, end)
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def _holds_the_cache(self, key_states: torch.Tensor) -> bool:
        """Whether the current keys and values are the start of buffers that fit `key_states` (a beam search's
        reordering, for one, replaces them with new tensors)."""
        buffer = self._key_buffer
        if buffer is None or buffer.shape[:-2] != key_states.shape[:-2] or buffer.dtype != key_states.dtype:
            return False
        if self.keys.numel() == 0:
            return True
        return (
            self.keys.data_ptr() == buffer.data_ptr()
            and self.values.data_ptr() == self._value_buffer.data_ptr()
            and self.keys.stride() == buffer.stride()
        )

    def _reallocate(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        capacity = needed + max(GROW_POSITIONS, needed // 4)
        buffers = []
        for current, new in ((self.keys, key_states), (self.values, value_states)):
            buffer = new.new_empty(*new.shape[:-2], capacity, new.shape[-1])
            if current.numel():
                buffer[..., : current.shape[-2], :] = current
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers


class GrowingCache(DynamicCache):
    """transformers' `DynamicCache` for `config`, its full-attention layers `GrowingLayer`s."""

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]
