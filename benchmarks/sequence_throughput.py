"""Benchmark: multi-seed transformer training throughput of the engine vs a per-seed JAX loop.

    python -m benchmarks.sequence_throughput                  # 1/4/16 seeds (~6 min, 2 cores)
    python -m benchmarks.sequence_throughput --seeds 16 --rounds 5
    python -m benchmarks.sequence_throughput --quick          # tiny, seconds (smoke test)
    # the stored result, benchmarks/results/sequence_throughput_cpu.json:
    python -m benchmarks.sequence_throughput

Task: ``experiments/sequence_phases.py``'s default config (icl_markov, k = 3, length 64; a
2-layer attention-only transformer, one head, d_model 32; Adam lr 3e-3, batch 32) with fresh
training sequences every step, as in the experiment (``train_size = steps x batch``: the
per-call fixed costs, one permutation and the label copy per seed, are amortised as in a real
run). Training only: every variant runs the same SGD steps of a (seeds) cell; the engine
evaluates at step 0 and at the end on 8 test and 8 train sequences (a few forward passes of
16 sequences: < 1% of the time), the loops do not evaluate. ``--quick`` uses the experiment's
quick config (length 24).

  engine_vmap / _map         ``engine.run_seeds`` with that seed strategy, all seeds in one
                             program; ``engine_auto`` is the row of whichever
                             ``resolve_strategy("auto")`` picks (not timed separately).
  jax_loop                   per seed in turn, a Python loop over steps of the jitted
                             ``steps.train_step`` (state donated): what a user writes without
                             the engine (``train_throughput.jax_loop_fn``).
  jax_fori                   per seed in turn, one jitted ``lax.fori_loop`` over all its steps
                             (``steps.run_segment``): the per-seed loop without Python dispatch.

Every variant is warmed up once (compiles; ``first_call_s`` records it), then the variants of
a cell are timed round-robin and the median is reported, as sequences/s (seeds x steps x batch
/ s), tokens/s (sequences/s x (T - 1) predicted positions) and the ratios to jax_loop and
jax_fori: of the medians (``vs_*``), of the median process CPU times (``vs_*_cpu``; XLA may
use a second core, so CPU time can exceed wall time) and paired (``vs_*_paired``: the median
over rounds of each round's ratio, robust to load changes between rounds). The CPU is shared
with other jobs: compare ratios within a cell, and see the load averages in the JSON.
Writes benchmarks/results/sequence_throughput_<backend>.json (atomic; ``--quick``:
..._quick.json).
"""

from __future__ import annotations

import functools
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import common, train_throughput
from sgd_phases import datasets, engine, steps

VARIANTS = ("engine_auto", "engine_vmap", "engine_map", "jax_loop", "jax_fori")
BASELINES = ("jax_loop", "jax_fori")
EVAL_SEQUENCES = 8  # test and train-evaluation sequences of the engine's two evaluations
STEP_BUDGET = 256   # seed-steps per measurement (3-6 s on 2 busy cores) -> steps = budget / seeds
MIN_STEPS = 16


def experiment_config(quick: bool) -> ml_collections.ConfigDict:
  """``sequence_phases``' config of the icl_markov task (its quick variant with ``quick``)."""
  from experiments import sequence_phases  # pylint: disable=import-outside-toplevel
  return sequence_phases.get_config("icl_markov,quick" if quick else "icl_markov")


def num_steps(seeds: int, budget: int, quick: bool) -> int:
  """Steps per seed of one measurement: ``budget`` seed-steps, at least ``MIN_STEPS``."""
  return 4 if quick else max(MIN_STEPS, budget // seeds)


def make_dataset(config: ml_collections.ConfigDict, steps_: int) -> datasets.Dataset:
  """The experiment's data with one fresh batch of sequences per step, 8 test sequences."""
  cfg = ml_collections.ConfigDict(config.dataset.to_dict())
  cfg.train_size, cfg.test_size = steps_ * config.batch_size, EVAL_SEQUENCES
  return datasets.get_dataset(cfg)


def make_trainer(config: ml_collections.ConfigDict, steps_: int, num_classes: int
                 ) -> steps.Trainer:
  """The experiment's trainer (F) for ``steps_`` steps."""
  return engine.make_trainer(config.model, config.model_kwargs, config.optimizer, config.loss,
                             config.batch_size, steps_, num_classes, config.eval.batch_size)


def jax_fori_fn(tr: steps.Trainer, x_train: jax.Array, labels: jax.Array, seeds: int,
                steps_: int) -> Callable[[], Any]:
  """Seeds one after another; each one jitted ``fori_loop`` over all its steps."""
  init_keys, data_keys = engine.seed_keys(0, np.arange(seeds))
  create = jax.jit(functools.partial(steps.create_state, tr))

  @functools.partial(jax.jit, donate_argnums=0)
  def train(state, data_key, x, y):
    return steps.run_segment(tr, state, data_key, (x, y), jnp.int32(0), jnp.int32(steps_))

  def run():
    out = []
    for s in range(seeds):
      state, bad = train(create(init_keys[s], x_train[0]), data_keys[s], x_train, labels)
      out.append((state.params, bad))
    return out

  return run


def with_cpu_time(fn: Callable[[], Any], sink: list[float]) -> Callable[[], Any]:
  """``fn`` (waited for) that appends the process CPU seconds of each call to ``sink``."""
  def run():
    start = time.process_time()
    out = jax.block_until_ready(fn())
    sink.append(time.process_time() - start)
    return out

  return run


def run_cell(config: ml_collections.ConfigDict, seeds: int, steps_: int, rounds: int,
             variants: tuple[str, ...], log: Callable[[str], None] = print
             ) -> list[dict[str, Any]]:
  """Times every variant of one seeds cell round-robin; one row per variant."""
  ds = make_dataset(config, steps_)
  tr = make_trainer(config, steps_, ds.num_classes)
  data = engine.EvalData.create(ds, EVAL_SEQUENCES)
  auto = engine.resolve_strategy("auto", config.model,
                                 num_params=engine.num_params(tr, ds.x_train[0]))
  labels = jnp.asarray(ds.y_train, jnp.int32)
  fns: dict[str, Callable[[], Any]] = {}
  for v in variants:
    if v.startswith("engine_") and v != "engine_auto":
      fns[v] = train_throughput.engine_fn(tr, data, ds.y_train, seeds, steps_,
                                          v.split("_", 1)[1])
    elif v == "jax_loop":
      fns[v] = train_throughput.jax_loop_fn(tr, data.x_train, labels, seeds, steps_)
    elif v == "jax_fori":
      fns[v] = jax_fori_fn(tr, data.x_train, labels, seeds, steps_)
  cpu: dict[str, list[float]] = {name: [] for name in fns}
  fns = {name: with_cpu_time(fn, cpu[name]) for name, fn in fns.items()}
  first = {}
  for name, fn in fns.items():
    first[name] = common.time_once(fn)
    log(f"  warm-up x{seeds} {name}: {first[name]:.2f} s")
  times = common.interleaved(fns, rounds, warmup=0, log=log)
  positions = int(ds.x_train.shape[1])  # T - 1 predicted tokens per sequence
  rows = []
  for name, ts in times.items():
    summ = common.timing_summary(ts)
    seqs = seeds * steps_ * config.batch_size / summ["median_s"]
    cpu_s = statistics.median(cpu[name][1:])  # [0]: the warm-up call
    rows.append(dict(seeds=seeds, steps=steps_, batch=config.batch_size, positions=positions,
                     variant=name, first_call_s=first[name], **summ, sequences_per_s=seqs,
                     tokens_per_s=seqs * positions, seed_steps_per_s=seeds * steps_ /
                     summ["median_s"], cpu_median_s=cpu_s, cpu_samples_s=cpu[name][1:],
                     sequences_per_cpu_s=seeds * steps_ * config.batch_size / cpu_s))
  if "engine_auto" in variants and f"engine_{auto}" in fns:
    src = next(r for r in rows if r["variant"] == f"engine_{auto}")
    rows.append(dict(src, variant="engine_auto", resolved=auto))
  add_ratios(rows)
  return rows


def paired_speedup(times: list[float], baseline: list[float]) -> float:
  """Median over rounds of baseline time / time, each round's pair timed back to back."""
  return float(statistics.median(b / t for t, b in zip(times, baseline)))


def add_ratios(rows: list[dict[str, Any]]) -> None:
  """Adds the speed relative to each per-seed loop (higher = faster): ``vs_<baseline>`` (of
  the median wall times), ``vs_<baseline>_cpu`` (of the median process CPU times) and
  ``vs_<baseline>_paired`` (``paired_speedup`` of the wall times: robust to load changes
  between rounds)."""
  for key, suffix in (("sequences_per_s", ""), ("sequences_per_cpu_s", "_cpu")):
    rate = {r["variant"]: r[key] for r in rows}
    for r in rows:
      for b in BASELINES:
        if b in rate:
          r[f"vs_{b}{suffix}"] = r[key] / rate[b]
  samples = {r["variant"]: r["samples_s"] for r in rows}
  for r in rows:
    for b in BASELINES:
      if b in samples:
        r[f"vs_{b}_paired"] = paired_speedup(r["samples_s"], samples[b])


def auto_check(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per seeds cell: the strategy ``auto`` picked, the faster of vmap / map (wall time), and
  the speed ratio vmap / map by wall time, CPU time and paired rounds."""
  out = []
  for s in sorted({r["seeds"] for r in rows}):
    rate = {r["variant"]: r for r in rows if r["seeds"] == s}
    if not {"engine_vmap", "engine_map"} <= set(rate):
      continue
    vmap, map_ = rate["engine_vmap"]["sequences_per_s"], rate["engine_map"]["sequences_per_s"]
    cpu = rate["engine_vmap"]["sequences_per_cpu_s"] / rate["engine_map"]["sequences_per_cpu_s"]
    auto = rate.get("engine_auto", {}).get("resolved")
    paired = paired_speedup(rate["engine_vmap"]["samples_s"], rate["engine_map"]["samples_s"])
    out.append(dict(seeds=s, auto=auto, faster="vmap" if vmap > map_ else "map",
                    vmap_over_map=vmap / map_, vmap_over_map_cpu=cpu,
                    vmap_over_map_paired=paired))
  return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--seeds", default=None, help="comma-separated seed counts (default 1,4,16)")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--step-budget", type=int, default=STEP_BUDGET,
                 help="seed-steps per measurement (steps per seed = budget / seeds)")
  args = p.parse_args(argv)
  logging.getLogger("jax").setLevel(logging.WARNING)
  seed_counts = [int(s) for s in (args.seeds or ("2" if args.quick else "1,4,16")).split(",")]
  rounds = args.rounds or (1 if args.quick else 7)
  config = experiment_config(args.quick)
  env = common.environment()
  rows: list[dict[str, Any]] = []
  t0 = time.perf_counter()
  for s in seed_counts:
    rows += run_cell(config, s, num_steps(s, args.step_budget, args.quick), rounds,
                     tuple(args.variants.split(",")))
  cols = ["seeds", "steps", "variant", "median_s", "sequences_per_s", "tokens_per_s",
          "vs_jax_loop", "vs_jax_fori", "vs_jax_loop_paired", "vs_jax_fori_paired",
          "first_call_s"]
  print(common.format_table(rows, cols))
  checks = auto_check(rows)
  if checks:
    print(common.format_table(checks, ["seeds", "auto", "faster", "vmap_over_map",
                                       "vmap_over_map_cpu", "vmap_over_map_paired"]))
  small = make_dataset(config, 1)
  n_params = engine.num_params(make_trainer(config, 1, small.num_classes), small.x_train[0])
  payload = dict(
      benchmark="sequence_throughput",
      command=" ".join(["python -m benchmarks.sequence_throughput"]
                       + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)]),
      env=env, load_average_end=common.load_average(), nproc=env["cpu_count"],
      task=dict(experiment="sequence_phases",
                dataset=dict(config.dataset.to_dict(), train_size="steps x batch (per cell)",
                             test_size=EVAL_SEQUENCES),
                model=config.model, model_kwargs=config.model_kwargs.to_dict(),
                num_params=n_params, optimizer=config.optimizer.to_dict(),
                batch=config.batch_size, positions=int(small.x_train.shape[1]),
                auto=engine.resolve_strategy("auto", config.model, num_params=n_params)),
      measured="training only (engine: evaluations at step 0 and at the end on "
               f"{EVAL_SEQUENCES} test + {EVAL_SEQUENCES} train sequences); compile excluded "
               "(warm-up call, first_call_s)",
      step_budget=args.step_budget, rounds=rounds, quick=args.quick,
      wall_s=time.perf_counter() - t0, rows=rows, auto_check=checks)
  path = common.write_json(common.out_path("sequence_throughput", args.out, args.quick), payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
