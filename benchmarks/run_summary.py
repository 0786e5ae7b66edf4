"""One experiment run, timed, with its summary and the machine it ran on in one JSON file.

    python -m benchmarks.run_summary --out lp16.json -- \\
        --config=experiments/linear_phase.py:mnist_mlp --config.num_seeds=16

Runs ``python -m experiments.<experiment>`` (default linear_phase) in a fresh temporary workdir
with the flags after ``--``, and writes ``{"env": ..., "wall_s": ..., "command": ...,
"summary": <its summary.json>}`` to ``--out`` (atomic). Used by ``device_check.sh`` for the
results-table row measured on an accelerator.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from sgd_phases import io_lib


def main(argv: list[str] | None = None) -> dict[str, Any]:
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = argv[argv.index("--") + 1:] if "--" in argv else []
  own = argv[:argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--out", required=True, help="JSON path to write")
  p.add_argument("--experiment", default="linear_phase", help="experiments.<name> to run")
  args = p.parse_args(own)
  with tempfile.TemporaryDirectory(prefix="run_summary.") as workdir:
    cmd = [sys.executable, "-m", f"experiments.{args.experiment}", f"--workdir={workdir}",
           *extra, "--config.progress=False"]  # --config.* after --config=file (absl)
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
      raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    summary = io_lib.read_json(Path(workdir) / "summary.json")
  payload = dict(benchmark="run_summary", env=common.environment(), wall_s=wall,
                 command=" ".join(["python", "-m", f"experiments.{args.experiment}", *extra]),
                 summary=summary)
  common.write_json(args.out, payload)
  print(f"wrote {args.out} ({wall:.0f} s)")
  return payload


if __name__ == "__main__":
  main()
