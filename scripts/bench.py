"""Run every benchmark script (scripts/bench_*.py) in turn and print what each measured.

Speed and memory targets are checked here, never in unit tests. Numbers depend on the machine and
on what else runs on it; each script prints its own settings (threads, sizes) with its results.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    scripts = sorted(Path(__file__).resolve().parent.glob("bench_*.py"))
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"--- {script.name}: exit {rc}, {time.perf_counter() - start:.1f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
