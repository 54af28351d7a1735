"""Where the decoder's weights lie in memory on a Linux CPU: on 2 MiB pages for decoding, and a mapped file's
pages handed back once nothing reads them; and a prompt's large temporary tensors reused, not mapped afresh.

A decode step reads every weight of the decoder once, so it runs at the speed memory streams. On 4 KiB pages
our row kernels (`quantized_rows`) read E2B's int8 weights at 13 GB/s on this 2-core CPU; on 2 MiB pages at
20-21 GB/s, with the same code (`benchmarks/row_products.py --pages`): each 4 KiB page costs a TLB miss and
ends the hardware prefetcher's stream, and the kernels read 2 KiB ahead across page ends. A plain copy runs
at the same 25 GB/s on either size (the bound `benchmarks/inference.py` measures).

Linux gives 2 MiB pages ("transparent huge pages") to memory that asks for them when
/sys/kernel/mm/transparent_hugepage/enabled is `madvise` (the common default) or `always`. So
`place_on_huge_pages` copies the weights of the linear layers (plain and quantised) into one anonymous mapping aligned to 2 MiB and
advised `MADV_HUGEPAGE`, and the tensors become views of it; the bytes they were read from (a mapped
safetensors file's pages, or the allocator's) are handed back as each one moves, so the peak memory grows by
at most one tensor. Elsewhere (not Linux, huge pages off, tensors not on the CPU, or
`VIDEOGEMMA_HUGE_PAGES=0`) the weights stay where they are.

glibc's malloc maps each block above its threshold (at most 32 MiB) afresh and unmaps it when freed, so every
prefill pays a page fault for each 4 KiB of its large activations and dequantised weights (an E2B prefill:
1.1-1.6 million faults). `reuse_freed_memory` raises the threshold and the heap's trim threshold, so those
blocks come from the heap and are reused: E2B int4 compiled prefill 19.0-19.1 → 16.7-17.7 s, its peak 3.66 →
3.75 GiB. A process that sets glibc's own variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
`GLIBC_TUNABLES`), or `VIDEOGEMMA_MALLOC_REUSE=0`, keeps its allocator as it is.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys
from pathlib import Path

import torch
from torch import nn

HUGE_PAGE = 2 << 20
# Each tensor starts on a cache line of its own.
TENSOR_ALIGNMENT = 64
HUGE_PAGES_ENV = "VIDEOGEMMA_HUGE_PAGES"
TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_MADV_PAGEOUT = 21  # Linux 5.4+: reclaim the pages (file pages are dropped, anonymous ones kept or swapped)
MALLOC_REUSE_ENV = "VIDEOGEMMA_MALLOC_REUSE"
GLIBC_MALLOC_ENVS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
# Blocks up to this size come from the heap, and this much free heap is kept: a prefill's largest temporaries
# (E2B: 40-80 MB) and their sum between two layers.
HEAP_REUSE_BYTES = 1 << 30


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _glibc() -> ctypes.CDLL | None:
    """This process's C library where it is glibc on Linux (its `mallopt` and `malloc_trim`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc = _libc()
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def page_out(tensor: torch.Tensor) -> bool:
    """Advise the kernel to reclaim the whole pages inside `tensor`'s bytes (Linux; elsewhere nothing). The
    contents stay as they were (a later read faults them back in), so this is safe for any memory; it frees
    resident memory only for pages of a mapped file, such as a safetensors file's tensors. Returns whether the
    kernel took the advice."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous() or not sys.platform.startswith("linux"):
        return False
    page = mmap.PAGESIZE
    start = -(-tensor.data_ptr() // page) * page
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    if end <= start:
        return False
    return _libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_PAGEOUT) == 0


def huge_pages_available() -> bool:
    """Whether this process can ask for 2 MiB pages (Linux, transparent huge pages not `never`, not turned
    off through `VIDEOGEMMA_HUGE_PAGES=0`)."""
    if os.environ.get(HUGE_PAGES_ENV, "1") == "0":
        return False
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        setting = TRANSPARENT_HUGE_PAGES.read_text()
    except OSError:
        return False
    return "[never]" not in setting


def huge_page_buffer(nbytes: int) -> torch.Tensor:
    """`nbytes` of zeroed uint8 memory starting on a 2 MiB boundary, advised onto 2 MiB pages (the pages come
    as the bytes are first written). The tensor keeps its mapping alive."""
    mapping = mmap.mmap(
        -1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE
    )  # shared anonymous memory is shmem: no THP
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    start = -address % HUGE_PAGE
    mapping.madvise(mmap.MADV_HUGEPAGE, start, nbytes)
    return torch.frombuffer(mapping, dtype=torch.uint8, count=nbytes, offset=start)


def layer_tensors(
    module: nn.Module, layer_types: tuple[type[nn.Module], ...]
) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(owner, name, tensor) of every parameter and buffer of the `layer_types` layers inside `module`, each
    tensor once (a tied weight is one tensor)."""
    seen: set[int] = set()
    found = []
    for layer in module.modules():
        if not isinstance(layer, layer_types):
            continue
        owned = list(layer.named_parameters(recurse=False)) + list(layer.named_buffers(recurse=False))
        for name, tensor in owned:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                found.append((layer, name, tensor))
    return found


@torch.no_grad()
def place_on_huge_pages(module: nn.Module, layer_types: tuple[type[nn.Module], ...]) -> int:
    """Move the parameters and buffers of `module`'s `layer_types` layers (those on the CPU) onto 2 MiB pages,
    in place; the values, and tensors tied between layers, are unchanged. Returns the bytes moved (0 where huge
    pages are not available)."""
    if not huge_pages_available():
        return 0
    moving = [
        (owner, name, tensor)
        for owner, name, tensor in layer_tensors(module, layer_types)
        if tensor.device.type == "cpu" and not tensor.is_meta
    ]
    offsets, total = [], 0
    for _, _, tensor in moving:
        offsets.append(total)
        total += -(-tensor.nbytes // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT
    if total == 0:
        return 0
    arena = huge_page_buffer(total)
    for (owner, name, tensor), offset in zip(moving, offsets, strict=True):
        placed = arena[offset : offset + tensor.nbytes].view(tensor.dtype).view(tensor.shape)
        placed.copy_(tensor)
        page_out(tensor)  # a mapped file's pages go back now; the allocator's when the tensor is freed
        if isinstance(tensor, nn.Parameter):
            tensor.data = placed  # the same Parameter: ties and references keep holding it
        else:
            owner._buffers[name] = placed
    return total


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc's malloc serve large blocks from its heap and keep freed ones for reuse (once per process;
    Linux with glibc, unless the process set glibc's own variables or `VIDEOGEMMA_MALLOC_REUSE=0`). Returns
    whether it took the settings."""
    if os.environ.get(MALLOC_REUSE_ENV, "1") == "0" or any(
        os.environ.get(name) for name in GLIBC_MALLOC_ENVS
    ):
        return False
    libc = _glibc()
    if libc is None:
        return False  # not Linux, or another C library (musl): no such settings
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, HEAP_REUSE_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, HEAP_REUSE_BYTES)
    )


def give_back_freed_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc's `malloc_trim`; elsewhere nothing): what loading
    left free would otherwise stay resident under the kept heap (`reuse_freed_memory`). Returns whether it ran."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim(0)
    return True
