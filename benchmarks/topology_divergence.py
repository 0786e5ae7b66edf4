"""How far "the same seed" stays the same run across topologies: device count, seed chunking
and seed strategy (vmap | map), on a full-length run.

Every variant trains the same config (default: ``experiments/synthetic_ball.py``'s, 4 seeds,
40k steps; no probe grid, no null) in its own process (``XLA_FLAGS`` sets the CPU device count)
and records every seed's test predictions at every evaluation. Each variant is compared with
the reference of its strategy (1 device, all seeds in one chunk): per seed, the first
evaluation whose predictions differ and the final agreement of test predictions.

    python -m benchmarks.topology_divergence            # CPU, ~10 min on 2 cores
    python -m benchmarks.topology_divergence --quick    # seconds (2,000 steps)

Writes benchmarks/results/topology_divergence_<backend>[_quick].json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
# name -> (seed_strategy, devices, seeds_per_chunk); the first of each strategy is its reference
VARIANTS = {
    "vmap_1dev": ("vmap", 1, 0), "vmap_1dev_chunk1": ("vmap", 1, 1),
    "vmap_1dev_chunk2": ("vmap", 1, 2), "vmap_4dev": ("vmap", 4, 0),
    "map_1dev": ("map", 1, 0), "map_1dev_chunk1": ("map", 1, 1), "map_4dev": ("map", 4, 0),
}
_CHILD = """
import sys
import numpy as np
from experiments import synthetic_ball
from sgd_phases import train_lib
c = synthetic_ball.training_config(synthetic_ball.get_config())
c.seed_strategy, c.seeds_per_chunk, c.num_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c.eval.probe_grid, c.null.num_permutations, c.progress = 0, 0, False
a = train_lib.train(c, None).arrays
np.savez(sys.argv[4], predictions=a["predictions"], steps=a["steps"], test_acc=a["test_acc"])
"""


def compare(ref: np.ndarray, other: np.ndarray) -> dict[str, list]:
  """Per seed: first evaluation index with any differing prediction (-1: none) and the final
  agreement fraction; ``ref``/``other``: predictions [S, E, N]."""
  differ = (ref != other).any(axis=-1)  # [S, E]
  first = [int(np.argmax(d)) if d.any() else -1 for d in differ]
  return {"first_differing_eval": first,
          "final_agreement": [float(x) for x in (ref[:, -1] == other[:, -1]).mean(axis=-1)]}


def main() -> None:
  p = common.parser(__doc__)
  p.add_argument("--num_steps", type=int, default=None)
  args = p.parse_args()
  steps = args.num_steps or (2000 if args.quick else 40_000)
  runs, seconds = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, (strategy, devices, chunk) in VARIANTS.items():
      out = os.path.join(tmp, f"{name}.npz")
      env = dict(os.environ, PYTHONPATH=str(ROOT),
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
      start = time.perf_counter()
      subprocess.run([sys.executable, "-c", _CHILD, strategy, str(chunk), str(steps), out],
                     cwd=ROOT, env=env, check=True)
      seconds[name] = time.perf_counter() - start
      runs[name] = dict(np.load(out))
      print(f"{name}: {seconds[name]:.0f} s", flush=True)
  result = {"num_steps": steps, "num_evals": int(len(runs["vmap_1dev"]["steps"])),
            "steps": runs["vmap_1dev"]["steps"].tolist(), "variants": {}}
  for name, (strategy, devices, chunk) in VARIANTS.items():
    ref = f"{strategy}_1dev"
    row = {"seed_strategy": strategy, "devices": devices, "seeds_per_chunk": chunk,
           "reference": ref, "seconds": seconds[name],
           **compare(runs[ref]["predictions"], runs[name]["predictions"])}
    if strategy == "map":
      row["versus_vmap_1dev"] = compare(runs["vmap_1dev"]["predictions"],
                                        runs[name]["predictions"])
    result["variants"][name] = row
    print(name, {k: row[k] for k in ("first_differing_eval", "final_agreement")})
  path = common.write_json(common.out_path("topology_divergence", args.out, args.quick),
                           {"env": common.environment(), **result})
  print(path)


if __name__ == "__main__":
  main()
