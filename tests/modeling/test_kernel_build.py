"""Where the CPU and a C compiler allow our kernels, they build: a source that does not compile must fail here,
not leave every kernel test skipped and the model on torch's kernels."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

import pytest
import torch

from videogemma.modeling import quantized_rows


def test_the_kernels_build_and_load_where_the_cpu_and_a_compiler_allow(tmp_path, monkeypatch) -> None:
    compiler = os.environ.get("CC") or next((c for c in quantized_rows.C_COMPILERS if shutil.which(c)), None)
    if (
        compiler is None
        or platform.machine().lower() not in ("x86_64", "amd64")
        or torch.backends.cpu.get_cpu_capability() != "AVX512"
    ):
        pytest.skip("no AVX-512 or no C compiler here: torch's kernels decode, by design")
    monkeypatch.setenv(
        "XDG_CACHE_HOME", str(tmp_path)
    )  # a fresh build, not one cached from an earlier source
    try:
        library = quantized_rows._build(compiler)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"quantized_rows.c does not compile:\n{error.stderr}")
    assert quantized_rows.kernels() is not None  # and the process's own build loaded and bound
    assert library.is_file()
