"""``make bench``: run every benchmark in this folder; each writes bench/results/*.md.

Benchmarks compare against a reference measured in the same run (ratios), because the
machines are shared and noisy. They are never part of ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    # _name.py: a module the benchmarks import, not a benchmark
    scripts = sorted(p for p in HERE.glob("*.py")
                     if p.name != "run.py" and not p.name.startswith("_"))
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
