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

# two 3 x 3 convolutions of an 8 MiB feature map, 60 times (as a network's layers free and
# allocate their activations); print the minor page faults of the last 40 rounds
FAULTS = textwrap.dedent(
    """
    import resource, sys
    import torch
    import torch.nn.functional as F
    from topaz_lightning.utils.allocator import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.set_num_threads(1)
    x, w = torch.randn(1, 32, 256, 256), torch.randn(32, 32, 3, 3)
    for _ in range(20):
        F.conv2d(F.conv2d(x, w), w)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
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
    plain, _ = _faults("system")
    assert kept == "True" and plain == "False"
    # kept: the heap has grown to the loop's working set in the first rounds and later rounds
    # reuse it (measured ~0-100 faults); glibc's defaults map and unmap the activations again
    # and again (~36,000-56,000 faults in 60 rounds here, but how much it trims depends on the
    # heap's layout, so that side is not asserted). One 8 MiB feature map is 2,048 pages.
    assert faults_kept < 2048


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
