"""Run every benchmark script (scripts/bench_*.py) in turn and print what each measured.

Speed and memory targets are checked here, never in unit tests. Numbers depend on the machine and
on what else runs on it; each script prints its own settings (threads, sizes) with its results.
bench_topaz.py (it installs Topaz into its own venv and trains both tools) is left to
``make bench-topaz``. At the end the framework overhead ratios printed by bench_train_step.py
(Lightning step incl. sampling / bare PyTorch step; target <= 1.25) are repeated.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# run by their own make targets
SEPARATE = {"bench_topaz.py", "bench_strided.py"}
OVERHEAD_TARGET = 1.25


def main() -> int:
    scripts = sorted(Path(__file__).resolve().parent.glob("bench_*.py"))
    failed = []
    overhead: list[str] = []
    for script in scripts:
        if script.name in SEPARATE:
            continue
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("overhead ratio"):
                overhead.append(line.strip())
        rc = proc.wait()
        print(f"--- {script.name}: exit {rc}, {time.perf_counter() - start:.1f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if overhead:
        print(f"\nframework overhead (target <= {OVERHEAD_TARGET}):")
        for line in overhead:
            print("  " + line)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
