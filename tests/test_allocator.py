"""utils.allocator: freed memory is reused instead of being page-faulted back in, and the user's
own malloc settings win."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from topaz_lightning.utils.allocator import OPT_OUT_VARIABLE, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# two 3 x 3 convolutions of a 39 MiB feature map (glibc's defaults map anything above 32 MiB
# afresh and unmap it on free), 15 times, as a network's layers allocate and free their
# activations; print the minor page faults of the last 10 rounds
FAULTS = textwrap.dedent(
    """
    import resource, sys
    import torch
    import torch.nn.functional as F
    from topaz_lightning.utils.allocator import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.set_num_threads(1)
    x, w = torch.randn(1, 16, 802, 802), torch.randn(16, 16, 3, 3)
    for _ in range(5):
        F.conv2d(F.conv2d(x, w), w)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        F.conv2d(F.conv2d(x, w), w)
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    kept, faults_kept = _faults("keep")
    plain, faults_plain = _faults("system")
    assert kept == "True" and plain == "False"
    # one 39 MiB map is ~10,000 pages: glibc's defaults fault both maps in again every round
    # (measured ~600,000 in 10 rounds); kept, later rounds reuse the heap (measured 0 or ~10,000)
    pages = 16 * 800 * 800 * 4 // 4096
    assert faults_plain > 20 * pages
    assert faults_kept < 3 * pages


@pytest.mark.parametrize(
    "environ",
    [
        {OPT_OUT_VARIABLE: "system"},
        {OPT_OUT_VARIABLE: " System "},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
    ],
)
def test_the_users_own_settings_win(environ):
    assert keep_freed_memory(environ) is False


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_unrelated_tunables_do_not_opt_out():
    # returns True: the thresholds are set (in this test process: harmless, only faster)
    assert keep_freed_memory({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}) is True
