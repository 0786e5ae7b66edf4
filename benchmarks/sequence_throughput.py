"""Benchmark: the whole sequence_phases experiment against the same experiment written by hand.

    python -m benchmarks.sequence_throughput     # cells 2x1000 (3 rounds), 16x1000 (2 rounds)
    python -m benchmarks.sequence_throughput --cells 2x1000x5,16x250x1
    python -m benchmarks.sequence_throughput --quick          # 1 seed x 2 steps: a smoke test
    # the stored result: benchmarks/results/sequence_throughput_cpu.json

Both sides run ``experiments/sequence_phases.py``'s default task (icl_markov at Edelman et
al.'s settings: T = 100, 2-layer attention-only transformer, one head, d_model 16, Adam 1e-3,
batch 64; 40 log-spaced evaluations on 200 held-out sequences, 19,800 test positions; the
conditional null on: 100 draws per seed and reference, 3 references) with a cell's seeds and
steps (``SxT``; ``SxTxR``: R rounds, default ``--rounds``):

  experiment       ``sequence_phases.run(config, fresh workdir)``: what the command does
                   (training with its evaluations, the closed-form references, μ and the null,
                   checkpoints every 10 evaluations, results.npz, summary, the soft
                   measures and four figures).
  hand             ``benchmarks/sequence_hand_loop.py``: the same experiment written by hand
                   without the project's step or scoring code (plain jnp model, optax.adam, one
                   jitted step per seed in a Python loop, batches sampled on device, test
                   predictions fetched to the host at the same steps, μ and the same number of
                   null draws scored with numpy bincounts).
  experiment_1lane (``--one-lane``) the experiment without seed lanes (``seed_lanes=1``,
                   ``sgd_phases.lanes``): what lanes gain, in the same rounds.
  experiment_without_soft (``--without-soft``) the experiment with the soft measures off
                   (``soft.enabled=False``): the scope the hand loop was specified for
                   (training, evaluations, μ and the null; the soft measures came later).
  experiment_bare  (first cell only) the experiment with 2 evaluations and no null: its
                   training time against ``experiment``'s measures what the 40 evaluations cost.

Every (round, variant) is a fresh process, timed from after its imports to its end (compilation
included): wall and CPU seconds, peak RSS and, for the experiment, the seconds in each stage
(``train_f``: training with the evaluations; ``train_references``; ``score``: μ, per position
too, the null (``null_mu``) and the soft measures (``rescore``); ``finish``: summary,
figures). Rounds interleave the variants (alternating order). Reported per cell: medians, and
the paired ratio hand / experiment (the median over rounds of each round's ratio: > 1 means
the experiment is faster), robust to load changes between rounds.

``step_profile`` (in this process): the engine's training step (``steps.run_segment``, the
experiment's trainer with its on-device sampler) against the hand-written step, both as one
jitted ``fori_loop`` of steps on one seed (no Python dispatch), paired rounds; and XLA's cost
estimate (FLOPs, bytes accessed) of one step of each, on the traced program (``--profile-steps
0``: no profile). ``--quick``: 1 seed x 2 steps, 2 evaluations, 4 null draws, a 2-step profile.

The machine is shared: compare the paired ratios, and see the load averages in the JSON.
Writes benchmarks/results/sequence_throughput_<backend>.json (atomic; ``--quick``: _quick).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common  # first: environment settings (see benchmarks/common.py)

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CELLS = "2x1000,16x1000x2"
STAGES = ("train_f", "train_references", "score")  # train_lib's steps, timed in the experiment
# ... and within them: the conditional null (scoring.null_mu) and the soft measures
# (soft_scoring.rescore), both inside "score"; "finish": summary and figures
SHARES = STAGES + ("null_mu", "rescore", "finish")


def cell_config(seeds: int, steps: int, quick: bool, bare: bool = False, lanes: int = 0,
                soft: bool = True) -> Any:
  """The experiment's config for one cell (``bare``: 2 evaluations, no null; ``lanes``:
  ``seed_lanes``; ``soft``: the soft measures on)."""
  from experiments import sequence_phases  # pylint: disable=import-outside-toplevel
  c = sequence_phases.get_config("icl_markov,quick" if quick else "icl_markov")
  c.num_seeds, c.num_steps, c.progress, c.seed_lanes = seeds, steps, False, lanes
  c.soft.enabled = soft
  if quick:  # seconds: the code paths, not the sizes
    c.eval.num_points, c.null.num_permutations = 2, 4
  if bare:
    c.eval.num_points, c.null.num_permutations = 2, 0
  return c


@contextlib.contextmanager
def _timed(module: Any, names: tuple[str, ...], sink: dict[str, float]):
  """Wraps ``module.<name>`` so that every call adds its wall and process CPU seconds to
  ``sink[name]`` and ``sink[name + "_cpu"]``."""
  orig = {n: getattr(module, n) for n in names}

  def wrap(name, fn):
    def timed(*args, **kwargs):
      t, c = time.perf_counter(), time.process_time()
      try:
        return fn(*args, **kwargs)
      finally:
        sink[name] = sink.get(name, 0.0) + time.perf_counter() - t
        sink[name + "_cpu"] = sink.get(name + "_cpu", 0.0) + time.process_time() - c
    return timed

  for n, fn in orig.items():
    setattr(module, n, wrap(n, fn))
  try:
    yield
  finally:
    for n, fn in orig.items():
      setattr(module, n, fn)


def child(variant: str, seeds: int, steps: int, quick: bool) -> dict[str, Any]:
  """One timed run of ``variant`` in this (fresh) process."""
  from benchmarks import sequence_hand_loop  # pylint: disable=import-outside-toplevel
  from experiments import common as exp_common  # pylint: disable=import-outside-toplevel
  from experiments import sequence_phases  # pylint: disable=import-outside-toplevel
  from sgd_phases import scoring, soft_scoring, train_lib  # pylint: disable=g-import-not-at-top
  config = cell_config(seeds, steps, quick, bare=variant == "experiment_bare",
                       lanes=1 if variant == "experiment_1lane" else 0,
                       soft=variant != "experiment_without_soft")
  stages: dict[str, float] = {}
  wall, cpu = time.perf_counter(), time.process_time()
  if variant == "hand":
    out = sequence_hand_loop.run(config)
    stages = {k: out[f"{k}_s"] for k in ("train", "score", "train_cpu", "score_cpu")}
  else:
    with contextlib.ExitStack() as stack:
      wd = stack.enter_context(tempfile.TemporaryDirectory())
      for module, names in ((train_lib, STAGES), (exp_common, ("finish",)),
                            (scoring, ("null_mu",)), (soft_scoring, ("rescore",))):
        stack.enter_context(_timed(module, names, stages))
      sequence_phases.run(config, wd)
  return {"variant": variant, "seeds": seeds, "steps": steps,
          "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
          "stages_s": stages,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(variant: str, seeds: int, steps: int, quick: bool) -> dict[str, Any]:
  """``child`` in a fresh interpreter; its result."""
  cmd = [sys.executable, "-m", "benchmarks.sequence_throughput", "--child", variant,
         "--cells", f"{seeds}x{steps}"] + (["--quick"] if quick else [])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"{variant} {seeds}x{steps} failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def paired(a: list[float], b: list[float]) -> float:
  """Median over rounds of a[r] / b[r]."""
  return float(statistics.median(x / y for x, y in zip(a, b)))


def run_cell(seeds: int, steps: int, rounds: int, quick: bool, variants: tuple[str, ...],
             log=print) -> dict[str, Any]:
  """Every variant of one cell, ``rounds`` interleaved rounds; the cell's summary."""
  runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
  for r in range(rounds):
    for v in (variants if r % 2 == 0 else variants[::-1]):
      runs[v].append(run_child(v, seeds, steps, quick))
      log(f"  {seeds}x{steps} round {r + 1}/{rounds} {v}: {runs[v][-1]['wall_s']:.1f} s "
          f"(load {common.load_average()[0]})")
  wall = {v: [x["wall_s"] for x in rs] for v, rs in runs.items()}
  out: dict[str, Any] = {
      "seeds": seeds, "steps": steps, "rounds": rounds,
      "median_wall_s": {v: statistics.median(w) for v, w in wall.items()},
      "median_cpu_s": {v: statistics.median(x["cpu_s"] for x in rs) for v, rs in runs.items()},
      "hand_over_experiment_paired": paired(wall["hand"], wall["experiment"]),
      "hand_over_experiment_cpu_paired": paired([x["cpu_s"] for x in runs["hand"]],
                                                [x["cpu_s"] for x in runs["experiment"]]),
      "runs": runs}
  exp = runs["experiment"]
  stage = lambda name: [x["stages_s"].get(name, 0.0) for x in exp]
  share = {name: paired(stage(name), wall["experiment"]) for name in SHARES}
  if "experiment_bare" in runs:  # the 40 evaluations: training time with them minus without
    bare = [x["stages_s"]["train_f"] for x in runs["experiment_bare"]]
    share["evaluations"] = float(statistics.median(
        (a - b) / w for a, b, w in zip(stage("train_f"), bare, wall["experiment"])))
  out["experiment_share_of_wall"] = share
  if "experiment_1lane" in runs:  # > 1: lanes made the experiment faster
    out["one_lane_over_experiment_paired"] = paired(
        [x["wall_s"] for x in runs["experiment_1lane"]], wall["experiment"])
  # the soft measures (added after the hand loop was specified; it has none): the experiment
  # without their seconds, against the same hand rounds, and measured (--without-soft)
  out["hand_over_experiment_minus_soft_paired"] = paired(
      wall["hand"], [w - r for w, r in zip(wall["experiment"], stage("rescore"))])
  if "experiment_without_soft" in runs:  # > 1: faster than the hand loop
    out["hand_over_experiment_without_soft_paired"] = paired(
        wall["hand"], [x["wall_s"] for x in runs["experiment_without_soft"]])
  return out


def step_profile(quick: bool, rounds: int, num_steps: int) -> dict[str, Any]:
  """The engine's training step against the hand-written one (module docstring)."""
  from benchmarks import sequence_hand_loop as hand  # pylint: disable=import-outside-toplevel
  from sgd_phases import datasets, engine, steps  # pylint: disable=import-outside-toplevel
  c = cell_config(1, num_steps, quick)
  ds = datasets.get_dataset(c.dataset)
  smp = ds.meta["train_sampler"]
  tr = engine.make_trainer(c.model, c.model_kwargs, c.optimizer, c.loss, c.batch_size,
                           num_steps, ds.num_classes, sampler=smp)
  arrays = {k: jnp.asarray(v) for k, v in smp.arrays().items()}
  init_key, data_key = engine.seed_keys(0, np.arange(1))
  state = steps.create_state(tr, init_key[0], jnp.asarray(ds.x_train[0]))
  tx, hand_step = hand.make_step(c)
  params = hand.init(c, jax.random.key(0))
  opt_state = tx.init(params)
  n = jnp.int32(num_steps)
  engine_loop = jax.jit(lambda s, k: steps.run_segment(tr, s, k, arrays, jnp.int32(0), n)[0])
  hand_loop = jax.jit(lambda p, o, k: jax.lax.fori_loop(
      0, n, lambda t, po: hand_step(po[0], po[1], k, t), (p, o)))
  fns = {"engine": lambda: engine_loop(state, data_key[0]),
         "hand": lambda: hand_loop(params, opt_state, data_key[0])}
  times = common.interleaved(fns, rounds)

  def cost(fn, *args):  # XLA's estimate on the traced (unoptimized) program: no compile
    ca = fn.lower(*args).cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    return {"flops": float(ca.get("flops", 0.0)), "bytes_accessed": float(ca.get(
        "bytes accessed", 0.0))}

  one = lambda s, k: steps.segment_step(
      tr, jnp.int32(0), (s, jnp.zeros((0,), jnp.int32), jnp.int32(-1)), k, arrays)
  return {"steps": num_steps, "rounds": rounds,
          "ms_per_step": {v: 1e3 * statistics.median(t) / num_steps for v, t in times.items()},
          "engine_over_hand_paired": paired(times["engine"], times["hand"]),
          "samples_s": times,
          "cost_per_step": {"engine": cost(jax.jit(one), state, data_key[0]),
                            "hand": cost(jax.jit(hand_step), params, opt_state, data_key[0],
                                         jnp.int32(0))}}


def parse_cells(text: str, rounds: int) -> list[tuple[int, int, int]]:
  """``"SxT[xR],..."`` -> [(seeds, steps, rounds)] (R defaults to ``rounds``)."""
  cells = []
  for part in text.split(","):
    fields = part.split("x")
    if not (len(fields) in (2, 3) and all(f.isdigit() and int(f) > 0 for f in fields)):
      raise ValueError(f"--cells: {part!r} is not SEEDSxSTEPS or SEEDSxSTEPSxROUNDS")
    cells.append((int(fields[0]), int(fields[1]),
                  int(fields[2]) if len(fields) == 3 else rounds))
  return cells


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--cells", default=None, help="SEEDSxSTEPS[xROUNDS],... "
                 f"(default {DEFAULT_CELLS}; ROUNDS: --rounds)")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one run (run_child)
  p.add_argument("--no-bare", action="store_true", help="skip the experiment_bare variant")
  p.add_argument("--one-lane", action="store_true",
                 help="also run experiment_1lane (the experiment without seed lanes)")
  p.add_argument("--without-soft", action="store_true",
                 help="also run experiment_without_soft (the experiment, soft measures off)")
  p.add_argument("--profile-steps", type=int, default=100,
                 help="steps of the step profile (0: no profile)")
  args = p.parse_args(argv)
  rounds = args.rounds or (1 if args.quick else 3)
  cells = parse_cells(args.cells or ("1x2" if args.quick else DEFAULT_CELLS), rounds)
  if args.child:
    print("RESULT " + json.dumps(child(args.child, *cells[0][:2], args.quick)))
    return {}
  load_start, t0 = common.load_average(), time.perf_counter()
  out_cells = []
  for i, (s, t, r) in enumerate(cells):
    variants = (("experiment", "hand") + (("experiment_1lane",) if args.one_lane else ())
                + (("experiment_without_soft",) if args.without_soft else ())
                + (() if i or args.no_bare else ("experiment_bare",)))
    out_cells.append(run_cell(s, t, r, args.quick, variants))
  profile = (step_profile(args.quick, 1 if args.quick else max(rounds, 3),
                          2 if args.quick else args.profile_steps)
             if args.profile_steps else None)
  rows = [{"cell": f"{c['seeds']}x{c['steps']}",
           **{f"{v}_s": c["median_wall_s"][v] for v in ("experiment", "hand")},
           "hand/experiment": c["hand_over_experiment_paired"],
           "hand/experiment_cpu": c["hand_over_experiment_cpu_paired"],
           "hand/(experiment-soft)": c["hand_over_experiment_minus_soft_paired"],
           **({"hand/experiment_without_soft": c["hand_over_experiment_without_soft_paired"]}
              if "hand_over_experiment_without_soft_paired" in c else {})}
          for c in out_cells]
  print(common.format_table(rows, list(rows[0])))
  if profile:
    print(f"step: engine {profile['ms_per_step']['engine']:.2f} ms, hand "
          f"{profile['ms_per_step']['hand']:.2f} ms (engine/hand paired "
          f"{profile['engine_over_hand_paired']:.3f})")
  c = cell_config(*cells[0][:2], args.quick)
  payload = {
      "benchmark": "sequence_throughput",
      "command": " ".join(["python -m benchmarks.sequence_throughput"]
                          + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)]),
      "env": common.environment(), "load_average_start": load_start,
      "load_average_end": common.load_average(), "wall_s": time.perf_counter() - t0,
      "settings": {"task": "sequence_phases icl_markov" + (",quick" if args.quick else ""),
                   "model_kwargs": c.model_kwargs.to_dict(), "optimizer": c.optimizer.to_dict(),
                   "batch_size": c.batch_size, "length": c.dataset.length,
                   "test_size": c.dataset.test_size, "num_points": c.eval.num_points,
                   "null_permutations": c.null.num_permutations,
                   "references": sorted(c.references.keys())},
      "rows": rows, "cells": out_cells, "step_profile": profile, "quick": args.quick}
  path = common.write_json(common.out_path("sequence_throughput", args.out, args.quick), payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
