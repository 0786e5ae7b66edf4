"""Benchmark: a learning-rate grid trained as ONE nested (lr × seed) program vs one run per lr.

    python -m benchmarks.sweep_bench                 # 3 lrs × 4 seeds, MLP, 300 and 3000 steps
    python -m benchmarks.sweep_bench --quick         # tiny, seconds (smoke test)
    python -m benchmarks.sweep_bench --steps 1000 --width 512 --out /tmp/sweep.json

Both sides train F exactly as ``train_lib.train`` does (``run_seeds``: compile, SGD segments,
every evaluation recorded on device), on the same data, seeds and steps:
  * sequential: for each learning rate, the engine's trainer (``engine.make_trainer``) and
    one ``run_seeds`` call over the 4 seeds (3 compilations, 3 programs);
  * nested: ``sgd_phases.nested.train_f_nested``: one ``run_seeds`` call over 12 entries with
    the learning rate in each entry's optimizer state (``optax.inject_hyperparams``).
Times are end to end (compilation included: that is what a sweep pays per point), median over
round-robin rounds, wall and process CPU seconds (the CPU time is less sensitive to other load
on a shared machine); the compile seconds are those the engine logs. Equivalence: the share of
identical test predictions [S, E, N] and the largest test-accuracy difference per lr.
Writes benchmarks/results/sweep_bench_<backend>.json atomically.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import jax
import numpy as np

from benchmarks import common
from sgd_phases import config_lib, engine, eval_lib, sweep
from sgd_phases import datasets as datasets_lib


class _CompileLog(logging.Handler):
  """Sums the engine's "compiled <what> in <s> s" log records."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.seconds = 0.0

  def emit(self, record: logging.LogRecord) -> None:
    if record.msg == "compiled %s in %.1f s":
      self.seconds += float(record.args[1])


def make_configs(lrs: list[float], num_seeds: int, num_steps: int, width: int, n_train: int,
                 n_test: int) -> list[Any]:
  """One engine config per learning rate (MLP on the 50-d sinusoid, no references)."""
  out = []
  for lr in lrs:
    c = config_lib.base_config("sinusoid_hd", "mlp", width=width, depth=2)
    c.dataset.n_train, c.dataset.n_test = n_train, n_test
    c.optimizer.learning_rate = lr
    c.num_seeds, c.num_steps, c.batch_size = num_seeds, num_steps, 64
    c.eval.num_points, c.eval.train_eval_size = 30, 1000
    c.progress, c.checkpoint_every = False, 0
    c.t0.reference = ""
    out.append(c)
  return out


def sequential(configs: list[Any]) -> list[dict[str, np.ndarray]]:
  """F of each config by its own ``run_seeds`` call (what ``train_lib.train`` does per point)."""
  outs = []
  for c in configs:
    ds = datasets_lib.get_dataset(c.dataset)
    data = engine.EvalData.create(ds, c.eval.train_eval_size)
    eval_at = eval_lib.eval_steps(c.num_steps, c.eval.schedule, c.eval.num_points)
    tr = engine.make_trainer(c.model, c.model_kwargs, c.optimizer, c.loss, c.batch_size,
                                c.num_steps, ds.num_classes, c.eval.batch_size)
    out = engine.run_seeds(tr, data, ds.y_train, engine.SeedSet(c.seed, np.arange(c.num_seeds)),
                           eval_at, engine.RunOptions(
                               strategy=engine.resolve_strategy(c.seed_strategy, c.model)))
    outs.append({k: np.asarray(v) for k, v in out.items()})
  return outs


def _timed(fn: Callable[[], Any], log: _CompileLog) -> tuple[dict[str, float], Any]:
  log.seconds = 0.0
  wall, cpu = time.perf_counter(), time.process_time()
  out = jax.block_until_ready(fn())
  return dict(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu,
              compile_s=log.seconds), out


def compare(seq: list[dict[str, np.ndarray]], nest: list[dict[str, np.ndarray]]
            ) -> dict[str, Any]:
  """Agreement of the two paths' outputs, per learning rate."""
  same = [float(np.mean(a["predictions"] == b["predictions"])) for a, b in zip(seq, nest)]
  dacc = [float(np.max(np.abs(a["test_acc"] - b["test_acc"]))) for a, b in zip(seq, nest)]
  dloss = [float(np.max(np.abs(a["train_loss"] - b["train_loss"]))) for a, b in zip(seq, nest)]
  return dict(identical_predictions=same, max_test_acc_diff=dacc, max_train_loss_diff=dloss,
              bitwise_equal=all(np.array_equal(a[k], b[k]) for a, b in zip(seq, nest)
                                for k in a))


def bench(lrs: list[float], num_seeds: int, num_steps: int, width: int, n_train: int,
          n_test: int, rounds: int) -> dict[str, Any]:
  """Times both paths ``rounds`` times, round-robin; returns one table row."""
  configs = make_configs(lrs, num_seeds, num_steps, width, n_train, n_test)
  log = _CompileLog()
  logging.getLogger().addHandler(log)
  logging.getLogger().setLevel(logging.INFO)
  fns = {"sequential": lambda: sequential(configs),
         "nested": lambda: sweep.train_f_nested(configs)}
  try:
    outs = {name: fn() for name, fn in fns.items()}  # warm-up: jax start-up, data caches
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in fns}
    for _ in range(rounds):
      for name, fn in fns.items():
        t, outs[name] = _timed(fn, log)
        samples[name].append(t)
  finally:
    logging.getLogger().removeHandler(log)
  med = {n: {k: float(np.median([s[k] for s in v])) for k in v[0]} for n, v in samples.items()}
  return dict(num_steps=num_steps, num_lrs=len(lrs), num_seeds=num_seeds, width=width,
              n_train=n_train, rounds=rounds, samples=samples,
              seq_wall_s=med["sequential"]["wall_s"], nest_wall_s=med["nested"]["wall_s"],
              seq_cpu_s=med["sequential"]["cpu_s"], nest_cpu_s=med["nested"]["cpu_s"],
              seq_compile_s=med["sequential"]["compile_s"],
              nest_compile_s=med["nested"]["compile_s"],
              speedup_wall=med["sequential"]["wall_s"] / med["nested"]["wall_s"],
              speedup_cpu=med["sequential"]["cpu_s"] / med["nested"]["cpu_s"],
              **compare(outs["sequential"], outs["nested"]))


def main() -> None:
  p = common.parser(__doc__)
  p.add_argument("--steps", type=int, nargs="+", default=[300, 3000])
  p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05, 0.1])
  p.add_argument("--seeds", type=int, default=4)
  p.add_argument("--width", type=int, default=256)
  args = p.parse_args()
  steps = [50] if args.quick else args.steps
  width, n_train, n_test = (32, 256, 256) if args.quick else (args.width, 2000, 2000)
  rounds = args.rounds or (1 if args.quick else 3)
  rows = []
  for s in steps:
    rows.append(bench(args.lrs, args.seeds, s, width, n_train, n_test, rounds))
    print(f"steps={s}: sequential {rows[-1]['seq_wall_s']:.2f} s, nested "
          f"{rows[-1]['nest_wall_s']:.2f} s", flush=True)
  cols = ["num_steps", "seq_wall_s", "nest_wall_s", "speedup_wall", "seq_cpu_s", "nest_cpu_s",
          "speedup_cpu", "seq_compile_s", "nest_compile_s", "bitwise_equal"]
  print(common.format_table(rows, cols))
  for r in rows:
    print(f"steps={r['num_steps']}: identical predictions per lr {r['identical_predictions']}, "
          f"max |Δ test acc| {r['max_test_acc_diff']}")
  path = common.write_json(common.out_path("sweep_bench", args.out, args.quick),
                           {"env": common.environment(), "lrs": args.lrs, "rows": rows})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
