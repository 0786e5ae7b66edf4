"""Benchmark: what the soft measures cost a run (F's probabilities on device, KL/JS, mixture).

    python -m benchmarks.soft_overhead          # sequence_phases icl_markov_small, linear_phase
    python -m benchmarks.soft_overhead --quick  # tiny, seconds (smoke test)

Each workload is one ``train_lib.train`` run (workdir None, the null on) with the soft measures
off (``soft.enabled=False``: no probability buffer, nothing scored) and on (the default), each
in a fresh process (compilation included: what a user's run costs, and peak resident memory
per variant), the two variants alternating over ``--rounds`` rounds. Per run: wall time of
``train``, the time spent in ``soft_scoring.score`` (KL/JS/cross-entropies and the mixture
fit, compile included), peak RSS, and the probability buffer's size (S·E·N·K·4 bytes).
Reported: overhead = median over rounds of (on / off − 1) in wall time and in the process's
CPU time (user + system: less sensitive to other jobs on a shared machine), the soft scoring's
share of the run, and the RSS difference. Workloads (``--seeds`` seeds each, default 2):
  sequence     ``experiments/sequence_phases.py`` icl_markov_small (3000 steps, 25 evaluations
               of 128 × 63 positions, K = 3, references unigram/bigram/Bayes; the published
               icl_markov settings' soft share: benchmarks/sequence_throughput.py, stage rescore)
  linear_phase ``experiments/linear_phase.py`` sinusoid_hd at its defaults (MLP 256×2, 20k
               steps, ~100 evaluations of 10,000 test points, K = 2, a linear reference)
Writes benchmarks/results/soft_overhead_<backend>.json (``--quick``: ..._quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import common

WORKLOADS = ("sequence", "linear_phase")


def make_config(workload: str, seeds: int, quick: bool, soft: bool):
  """The engine config of one benchmarked run."""
  from experiments import common as exp_common
  from experiments import linear_phase, sequence_phases
  if workload == "sequence":
    c = exp_common.engine_config(sequence_phases.get_config(
        "icl_markov_small,quick" if quick else "icl_markov_small"))
  else:
    c = linear_phase.get_config("sinusoid_hd,quick" if quick else "sinusoid_hd")
  c.num_seeds, c.progress, c.checkpoint_every = seeds, False, 0
  c.soft.enabled = soft
  if quick:  # a smoke test: a few null draws
    c.null.num_permutations = 5
  return c


def child(workload: str, seeds: int, quick: bool, soft: bool) -> dict[str, Any]:
  """One run in this process: wall time, soft scoring time, peak RSS, buffer size."""
  from sgd_phases import soft_scoring, train_lib
  spent = []
  score = soft_scoring.score

  def timed(*args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    out = score(*args, **kwargs)
    spent.append((time.perf_counter() - start, time.process_time() - cpu))
    return out

  soft_scoring.score = timed
  c = make_config(workload, seeds, quick, soft)
  start, cpu = time.perf_counter(), time.process_time()
  a = train_lib.train(c, None).arrays
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  s, e, n = a["predictions"].shape
  k = int(a["num_classes"])
  return {"wall_s": wall, "cpu_s": cpu, "soft_s": sum(w for w, _ in spent),
          "soft_cpu_s": sum(c for _, c in spent),
          "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "buffer_mb": s * e * n * k * 4 / 2**20 if soft else 0.0, "shape": [s, e, n, k]}


def _spawn(workload: str, seeds: int, quick: bool, soft: bool) -> dict[str, Any]:
  cmd = [sys.executable, "-m", "benchmarks.soft_overhead", "--child", workload,
         "--seeds", str(seeds), "--soft", str(int(soft))] + (["--quick"] if quick else [])
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--workloads", default=",".join(WORKLOADS))
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  p.add_argument("--soft", type=int, default=1, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(child(args.child, args.seeds, args.quick, bool(args.soft))))
    return {}
  rounds = args.rounds or (1 if args.quick else 2)
  env = common.environment()
  rows = []
  for workload in args.workloads.split(","):
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for r in range(rounds):
      for variant in ("off", "on") if r % 2 == 0 else ("on", "off"):
        runs[variant].append(_spawn(workload, args.seeds, args.quick, variant == "on"))
        print(f"{workload} round {r + 1} {variant}: {runs[variant][-1]}", flush=True)
    ratios = [on["wall_s"] / off["wall_s"] - 1.0 for on, off in zip(runs["on"], runs["off"])]
    cpu_ratios = [on["cpu_s"] / off["cpu_s"] - 1.0 for on, off in zip(runs["on"], runs["off"])]
    on = runs["on"]
    rows.append({
        "workload": workload, "shape_SENK": on[0]["shape"],
        "wall_off_s": statistics.median(x["wall_s"] for x in runs["off"]),
        "wall_on_s": statistics.median(x["wall_s"] for x in on),
        "overhead": statistics.median(ratios), "overheads": ratios,
        "cpu_off_s": statistics.median(x["cpu_s"] for x in runs["off"]),
        "cpu_on_s": statistics.median(x["cpu_s"] for x in on),
        "cpu_overhead": statistics.median(cpu_ratios), "cpu_overheads": cpu_ratios,
        "soft_scoring_s": statistics.median(x["soft_s"] for x in on),
        "soft_scoring_cpu_s": statistics.median(x["soft_cpu_s"] for x in on),
        "soft_scoring_share": statistics.median(x["soft_s"] / x["wall_s"] for x in on),
        "soft_scoring_cpu_share": statistics.median(x["soft_cpu_s"] / x["cpu_s"] for x in on),
        "buffer_mb": on[0]["buffer_mb"],
        "maxrss_off_mb": statistics.median(x["maxrss_mb"] for x in runs["off"]),
        "maxrss_on_mb": statistics.median(x["maxrss_mb"] for x in on), "runs": runs})
  print(common.format_table(rows, ["workload", "wall_off_s", "wall_on_s", "overhead",
                                   "cpu_off_s", "cpu_on_s", "cpu_overhead",
                                   "soft_scoring_cpu_s", "soft_scoring_cpu_share", "buffer_mb",
                                   "maxrss_off_mb", "maxrss_on_mb"]))
  payload = {"benchmark": "soft_overhead", "env": env, "seeds": args.seeds, "rounds": rounds,
             "quick": args.quick, "load_average_end": common.load_average(), "rows": rows}
  path = common.write_json(common.out_path("soft_overhead", args.out, args.quick), payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
