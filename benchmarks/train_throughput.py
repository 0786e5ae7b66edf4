"""Benchmark: multi-seed training throughput of the engine vs what users would run instead.

    python -m benchmarks.train_throughput                    # mlp + paper_cnn, 1/4/16 seeds
    python -m benchmarks.train_throughput --models mlp --seeds 16 --rounds 5
    python -m benchmarks.train_throughput --quick            # tiny, seconds (smoke test)
    # the stored result, benchmarks/results/train_throughput_cpu.json (~40 min on 2 idle cores):
    python -m benchmarks.train_throughput --rounds 3 --cnn-attempts 4
    # a ladder CNN (4 x conv3x3-32 SAME, 3 max-pools, Dense 256):
    python -m benchmarks.train_throughput --models cnn4 --seeds 1,16 --rounds 3 \
        --out benchmarks/results/train_throughput_cnn4_cpu.json
    # the "unroll" seed strategy (opt-in) against map and the PyTorch loop:
    python -m benchmarks.train_throughput --models cnn4,paper_cnn --seeds 16 --rounds 3 \
        --variants engine_map,engine_unroll,torch_loop \
        --out benchmarks/results/train_throughput_unroll_cpu.json

Task: MNIST 0-4 vs 5-9 (the offline IDX files of ``datasets.shared_data_dir()``, else
synthetic images of the same shape: timings do not depend on pixel values), batch 64, plain
SGD lr 0.05, the same number of steps for every variant of a (model, seeds) cell:

  engine_vmap / _map / _unroll   ``engine.run_seeds`` with that seed strategy; eval_at = [0, T]
                             on a 256-example test subset (the two evaluations cost < 1%);
                             ``engine_auto`` is whichever ``resolve_strategy("auto")`` picks;
                             on CPU map trains one seed lane per core (``sgd_phases.lanes``),
                             ``engine_map_1lane`` is map without lanes.
  jax_loop                   the same per-seed JAX step (``steps.train_step``, jitted, state
                             donated), seeds one after another from a Python loop over steps.
  torch_loop                 PyTorch: per seed, the standard forward/backward/opt.step() loop.
  torch_vmap                 PyTorch: ``torch.func.vmap(grad(loss))`` over stacked seeds.

Every variant is warmed up once (JAX: compiles; ``first_call_s`` records it), then the variants
of a cell are timed round-robin and the median is reported, as seed-examples/s (seeds x steps x
batch / s) and as ratios to the best PyTorch variant and to jax_loop. The CPU is shared with other
jobs: compare ratios within a cell (same rounds), and see ``load_average`` in the JSON.
Writes benchmarks/results/train_throughput_<backend>.json (atomic; ``--quick``: ..._quick.json).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from sgd_phases import config_lib, engine, steps

BATCH, LR = 64, 0.05
# seed-steps per measurement (about 8-20 s per variant on 2 cores) -> steps = budget / seeds.
# Long enough that per-call fixed costs (initialising 16 x 4.1M paper_cnn parameters, the first
# epoch's permutations: ~1 s together) do not dominate: with 5 steps per seed they made the
# engine look 2x slower than its steady state (measured, 2026-11-26).
STEP_BUDGET = {"mlp": 4800, "paper_cnn": 480}
MIN_STEPS = {"mlp": 300, "paper_cnn": 30}


def num_steps(model: str, seeds: int, quick: bool) -> int:
  """Steps per seed of one measurement: a fixed budget of seed-steps, at least MIN_STEPS."""
  if quick:
    return 4
  return max(MIN_STEPS.get(model, 20), STEP_BUDGET.get(model, 480) // seeds)


def make_trainer(model: str, steps_: int, model_kwargs: dict[str, Any] | None = None,
                 unroll: bool = False) -> steps.Trainer:
  return engine.make_trainer(model, model_kwargs or {},
                                config_lib.optimizer_config(learning_rate=LR), "cross_entropy",
                                BATCH, steps_, 2, eval_batch_size=256, unroll=unroll)


def engine_fn(tr: steps.Trainer, data: Any, labels: np.ndarray, seeds: int, steps_: int,
              strategy: str, lanes: int = 0) -> Callable[[], Any]:
  """One ``engine.run_seeds`` call: ``seeds`` seeds, ``steps_`` steps, final evaluation
  (``lanes``: ``RunOptions.lanes``, 0 = the default, one seed lane per core under map)."""
  at = np.array([0, steps_])
  return lambda: engine.run_seeds(tr, data, labels, engine.SeedSet(0, np.arange(seeds)), at,
                                  engine.RunOptions(strategy=strategy, lanes=lanes))["test_acc"]


def jax_loop_fn(tr: steps.Trainer, x_train: jax.Array, labels: jax.Array, seeds: int,
                steps_: int) -> Callable[[], Any]:
  """Seeds one after another; each a Python loop of the jitted ``steps.train_step``."""
  n = x_train.shape[0]
  per_epoch = n // tr.batch_size
  init_keys, data_keys = engine.seed_keys(0, np.arange(seeds))
  create = jax.jit(functools.partial(steps.create_state, tr))
  perm_fn = jax.jit(steps.epoch_permutation, static_argnums=2)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, x, y, perm, j):
    idx = jax.lax.dynamic_slice(perm, (j * tr.batch_size,), (tr.batch_size,))
    return steps.train_step(tr, state, x[idx], y[idx])

  def run():
    losses = []
    for s in range(seeds):
      state = create(init_keys[s], x_train[0])
      loss = None
      for t in range(steps_):
        if t % per_epoch == 0:
          perm = perm_fn(data_keys[s], t // per_epoch, n)
        state, loss = step(state, x_train, labels, perm, t % per_epoch)
      losses.append(loss)
    return jnp.stack(losses)

  return run


def torch_fns(model: str, x: np.ndarray, y: np.ndarray, seeds: int, steps_: int
              ) -> dict[str, Callable[[], Any]]:
  from benchmarks import torch_baselines as tb
  _check_twins_once()
  return {"torch_loop": lambda: tb.train_loop(model, x, y, seeds, steps_, BATCH, LR),
          "torch_vmap": lambda: tb.train_func_vmap(model, x, y, seeds, steps_, BATCH, LR)}


@functools.lru_cache(maxsize=1)
def _check_twins_once() -> None:
  """The PyTorch twins must have the engine models' parameter counts before they are timed."""
  from benchmarks import torch_baselines as tb
  tb.check_parameter_counts()


def _have_torch() -> bool:
  try:
    import torch  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    return True
  except ImportError:
    return False


def run_cell(model: str, seeds: int, steps_: int, ds: Any, rounds: int,
             variants: tuple[str, ...], model_kwargs: dict[str, Any] | None = None,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Times every variant of one (model, seeds) cell round-robin; one row per variant."""
  tr = make_trainer(model, steps_, model_kwargs)
  data = engine.EvalData.create(subset_test(ds, 256), 256)
  auto = engine.resolve_strategy("auto", model,
                                    num_params=engine.num_params(tr, ds.x_train[0]))
  fns: dict[str, Callable[[], Any]] = {}
  for v in variants:
    if v == "engine_unroll":  # its own trainer: native convolutions, unrolled evaluation
      fns[v] = engine_fn(make_trainer(model, steps_, model_kwargs, unroll=True), data,
                         ds.y_train, seeds, steps_, "unroll")
    elif v == "engine_map_1lane":  # map without seed lanes (sgd_phases.lanes)
      fns[v] = engine_fn(tr, data, ds.y_train, seeds, steps_, "map", lanes=1)
    elif v.startswith("engine_") and v != "engine_auto":
      fns[v] = engine_fn(tr, data, ds.y_train, seeds, steps_, v.split("_", 1)[1])
    elif v == "jax_loop":
      fns[v] = jax_loop_fn(tr, data.x_train, jnp.asarray(ds.y_train, jnp.int32), seeds, steps_)
    elif v.startswith("torch_") and model in common.TORCH_MODELS and _have_torch() and not model_kwargs:
      fns[v] = torch_fns(model, ds.x_train, ds.y_train, seeds, steps_)[v]
  first = {}
  for name, fn in fns.items():
    first[name] = common.time_once(fn)
    log(f"  warm-up {model} x{seeds} {name}: {first[name]:.2f} s")
  times = common.interleaved(fns, rounds, warmup=0, log=log)
  rows = []
  for name, ts in times.items():
    summ = common.timing_summary(ts)
    rows.append(dict(model=model, seeds=seeds, steps=steps_, batch=BATCH, variant=name,
                     model_kwargs=model_kwargs or {}, first_call_s=first[name], **summ,
                     examples_per_s=seeds * steps_ * BATCH / summ["median_s"],
                     seed_steps_per_s=seeds * steps_ / summ["median_s"]))
  if "engine_auto" in variants and f"engine_{auto}" in fns:
    src = next(r for r in rows if r["variant"] == f"engine_{auto}")
    rows.append(dict(src, variant="engine_auto", resolved=auto))
  _add_ratios(rows)
  return rows


def subset_test(ds: Any, m: int) -> Any:
  """``ds`` with only its first ``m`` test examples (cheap final evaluation)."""
  return dataclasses.replace(ds, x_test=ds.x_test[:m], y_test=ds.y_test[:m],
                             y_test_clean=ds.y_test_clean[:m])


def _add_ratios(rows: list[dict[str, Any]]) -> None:
  """Adds speed ratios to the best PyTorch variant and to jax_loop (higher = faster)."""
  rate = {r["variant"]: r["examples_per_s"] for r in rows}
  torch_best = max((v for k, v in rate.items() if k.startswith("torch_")), default=None)
  for r in rows:
    if torch_best:
      r["vs_best_torch"] = r["examples_per_s"] / torch_best
    if "jax_loop" in rate:
      r["vs_jax_loop"] = r["examples_per_s"] / rate["jax_loop"]


CNN_FLAG_ATTEMPTS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
}


def cnn_attempts(ds: Any, seeds: int, steps_: int, rounds: int, quick: bool,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
  """Ways tried to make paper_cnn fast on CPU, each timed like a cell (rows + ratios).

  * conv_impl "lax" vs "patches" x engine vmap / map, and jax_loop (the per-seed step jitted
    alone, driven from Python: shows what XLA does to convolutions inside a while loop);
  * XLA CPU flags, each in a subprocess (flags are read at start-up): engine_map, patches.
    These subprocesses run one after another, NOT interleaved: on a loaded machine their
    differences can be load changes (check ``samples_s``), unlike the in-process rows.
  """
  rows = []
  for impl in ("lax", "patches"):
    rows += run_cell("paper_cnn", seeds, steps_, ds, rounds,
                     ("engine_vmap", "engine_map", "jax_loop"), {"conv_impl": impl}, log)
  flag_rows = []
  if not quick:
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel
    for name, flags in CNN_FLAG_ATTEMPTS.items():
      with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--models", "paper_cnn",
               "--seeds", str(seeds), "--variants", "engine_map", "--rounds", str(rounds),
               "--synthetic", "--out", out]
        env = dict(os.environ, XLA_FLAGS=flags)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
          flag_rows.append(dict(attempt=name, xla_flags=flags, error=res.stderr[-500:]))
          continue
        with open(out) as f:
          r = json.load(f)["rows"][0]
        flag_rows.append(dict(attempt=name, xla_flags=flags, **{
            k: r[k] for k in ("model", "seeds", "steps", "variant", "median_s", "examples_per_s",
                              "seed_steps_per_s", "samples_s")}))
        log(f"  flags {name}: {r['seed_steps_per_s']:.2f} seed-steps/s")
  return dict(seeds=seeds, steps=steps_, conv_impl_rows=rows, xla_flag_rows=flag_rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--models", default=None, help="comma-separated (default mlp,paper_cnn)")
  p.add_argument("--seeds", default=None, help="comma-separated seed counts (default 1,4,16)")
  p.add_argument("--variants", default="engine_auto,engine_vmap,engine_map,jax_loop,"
                 "torch_loop,torch_vmap")
  p.add_argument("--synthetic", action="store_true", help="synthetic MNIST-shaped data")
  p.add_argument("--cnn-attempts", type=int, default=0, metavar="SEEDS",
                 help="also time the paper_cnn attempts (conv_impl x strategy, XLA flags)")
  args = p.parse_args(argv)
  logging.getLogger("jax").setLevel(logging.WARNING)
  models = (args.models or ("mlp" if args.quick else "mlp,paper_cnn")).split(",")
  seed_counts = [int(s) for s in (args.seeds or ("2" if args.quick else "1,4,16")).split(",")]
  rounds = args.rounds or (1 if args.quick else 3)
  n_train, n_test = (512, 256) if args.quick else (None, None)
  ds, source = common.mnist_binary(n_train, n_test, synthetic=args.quick or args.synthetic)
  env = common.environment()
  rows: list[dict[str, Any]] = []
  t0 = time.perf_counter()
  for model in models:
    for s in seed_counts:
      rows += run_cell(model, s, num_steps(model, s, args.quick), ds, rounds,
                       tuple(args.variants.split(",")))
  cols = ["model", "seeds", "steps", "variant", "median_s", "examples_per_s", "vs_best_torch",
          "vs_jax_loop", "first_call_s"]
  attempts = None
  if args.cnn_attempts:
    s = args.cnn_attempts
    # the slow attempts (lax convolutions inside loops) run at a few seed-steps/s: short cells
    attempt_steps = num_steps("paper_cnn", s, True) if args.quick else MIN_STEPS["paper_cnn"]
    attempts = cnn_attempts(ds, s, attempt_steps, rounds, args.quick)
    print(common.format_table(attempts["conv_impl_rows"], cols + ["model_kwargs"]))
    if attempts["xla_flag_rows"]:
      print(common.format_table(attempts["xla_flag_rows"], ["attempt", "xla_flags",
                                                            "seed_steps_per_s", "error"]))
  print(common.format_table(rows, cols))
  payload = dict(benchmark="train_throughput", env=env, load_average_end=common.load_average(),
                 data_source=source, n_train=int(len(ds.y_train)), batch=BATCH,
                 learning_rate=LR, rounds=rounds, quick=args.quick,
                 wall_s=time.perf_counter() - t0, rows=rows, cnn_attempts=attempts)
  path = common.write_json(common.out_path("train_throughput", args.out, args.quick), payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
