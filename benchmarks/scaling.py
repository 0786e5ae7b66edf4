"""Benchmark: time vs number of seeds (MLP training) and vs test-set size (information measures).

    python -m benchmarks.scaling                     # seeds 1..64, N = 1e3..1e6, two PNGs
    python -m benchmarks.scaling --seeds 1,4,16 --sizes 1000,100000
    python -m benchmarks.scaling --quick             # tiny, seconds (smoke test)

Seeds: ``engine.run_seeds`` (strategy auto, and ``--strategies`` to compare) on MNIST-shaped
data, MLP 784-512-512-2, batch 64, T steps per seed, final evaluation on 256 test examples; the
time of one call after a warm-up call (median of rounds). Ideal batching: time grows linearly
in the number of seeds with a per-seed cost that falls (or stays flat) as seeds are batched.
Sizes: ``mutual_info.information_measures`` (jitted, K = 2) on [S, E, N] predictions with
S = 4 seeds and E = 100 evaluations against one reference, N = 1e3 ... 1e6 test examples:
should be linear in N (``per_example_ns`` flat).
Writes benchmarks/results/scaling_<backend>.json and scaling_seeds.png, scaling_mi.png
(``--quick``: ..._quick.json and no PNGs unless ``--plot``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common, train_throughput
from sgd_phases import engine, mutual_info


def seed_scaling(seed_counts: list[int], steps: int, strategies: list[str], rounds: int,
                 ds: Any) -> list[dict[str, Any]]:
  """One row per (strategy, seeds): median seconds of a ``run_seeds`` call and per-seed cost."""
  data = engine.EvalData.create(train_throughput.subset_test(ds, 256), 256)
  tr = train_throughput.make_trainer("mlp", steps)
  fns = {}
  for strategy in strategies:
    resolved = engine.resolve_strategy(strategy, "mlp",
                                          num_params=engine.num_params(tr, ds.x_train[0]))
    for s in seed_counts:
      fns[(strategy, resolved, s)] = train_throughput.engine_fn(tr, data, ds.y_train, s, steps,
                                                                resolved)
  times = common.interleaved({f"{k[0]}:{k[2]}": f for k, f in fns.items()}, rounds, log=print)
  rows = []
  for (strategy, resolved, s) in fns:
    summ = common.timing_summary(times[f"{strategy}:{s}"])
    rows.append(dict(strategy=strategy, resolved=resolved, seeds=s, steps=steps, **summ,
                     per_seed_s=summ["median_s"] / s,
                     seed_steps_per_s=s * steps / summ["median_s"]))
  return rows


def size_scaling(sizes: list[int], seeds: int, evals: int, rounds: int,
                 seed: int = 0) -> list[dict[str, Any]]:
  """One row per N: median seconds of ``information_measures`` on [seeds, evals, N]."""
  rng = np.random.default_rng(seed)
  fn = jax.jit(functools.partial(mutual_info.information_measures, num_classes=2))
  fns, shapes = {}, {}
  for n in sizes:
    y = rng.integers(0, 2, n, dtype=np.int32)
    ref = np.where(rng.random((seeds, 1, n)) < 0.8, y, 1 - y).astype(np.int8)
    f = np.where(rng.random((seeds, evals, n)) < 0.7, y, ref).astype(np.int8)
    args = (jnp.asarray(f), jnp.asarray(ref), jnp.asarray(y))
    fns[str(n)] = functools.partial(lambda a: fn(*a), args)
    shapes[str(n)] = (seeds, evals, n)
  times = common.interleaved(fns, rounds, log=print)
  rows = []
  for n in sizes:
    summ = common.timing_summary(times[str(n)])
    rows.append(dict(n=n, shape=list(shapes[str(n)]), **summ,
                     per_example_ns=summ["median_s"] / (seeds * evals * n) * 1e9))
  return rows


def plot(seed_rows: list[dict[str, Any]], size_rows: list[dict[str, Any]], out_dir: Path,
         title: str) -> list[Path]:
  """scaling_seeds.png and scaling_mi.png (log-log, with a linear reference line)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from sgd_phases import plotting  # pylint: disable=import-outside-toplevel

  paths = []
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  for strategy in dict.fromkeys(r["strategy"] for r in seed_rows):
    rs = [r for r in seed_rows if r["strategy"] == strategy]
    s = np.array([r["seeds"] for r in rs])
    t = np.array([r["median_s"] for r in rs])
    label = f"{strategy} ({rs[0]['resolved']})"
    ax1.loglog(s, t, "o-", label=label)
    ax2.semilogx(s, [r["seed_steps_per_s"] for r in rs], "o-", label=label)
  s = np.array(sorted({r["seeds"] for r in seed_rows}))
  t1 = min(r["median_s"] for r in seed_rows if r["seeds"] == s[0])
  ax1.loglog(s, t1 * s / s[0], "k--", lw=0.8, label="linear from the first point")
  ax1.set(xlabel="seeds", ylabel="seconds per run_seeds call", title="MLP training time")
  ax2.set(xlabel="seeds", ylabel="seed-steps / s", title="throughput (higher = cheaper per seed)")
  for ax in (ax1, ax2):
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
  fig.suptitle(title, fontsize=9)
  paths.append(Path(plotting.save_figure(fig, out_dir / "scaling_seeds.png")))
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(5, 4))
  n = np.array([r["n"] for r in size_rows])
  t = np.array([r["median_s"] for r in size_rows])
  ax.loglog(n, t, "o-", label="information_measures")
  ax.loglog(n, t[-1] * n / n[-1], "k--", lw=0.8, label="linear through the last point")
  shape = size_rows[0]["shape"]
  ax.set(xlabel="test examples N", ylabel="seconds",
         title=f"all measures, [{shape[0]} seeds x {shape[1]} evals x N]")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, which="both")
  fig.suptitle(title, fontsize=9)
  paths.append(Path(plotting.save_figure(fig, out_dir / "scaling_mi.png")))
  plt.close(fig)
  return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--seeds", default=None, help="comma-separated (default 1,2,4,8,16,32,64)")
  p.add_argument("--sizes", default=None, help="comma-separated N (default 1e3,1e4,1e5,1e6)")
  p.add_argument("--steps", type=int, default=None, help="steps per seed (default 50)")
  p.add_argument("--strategies", default="auto", help="comma-separated: auto, vmap, map")
  p.add_argument("--plot", action="store_true", help="write the PNGs in --quick mode too")
  args = p.parse_args(argv)
  seed_counts = [int(s) for s in (args.seeds or ("1,2" if args.quick else
                                                 "1,2,4,8,16,32,64")).split(",")]
  sizes = [int(float(s)) for s in (args.sizes or ("1e3,1e4" if args.quick else
                                                  "1e3,1e4,1e5,1e6")).split(",")]
  steps = args.steps or (3 if args.quick else 50)
  rounds = args.rounds or (1 if args.quick else 3)
  ds, source = common.mnist_binary(*((512, 256) if args.quick else (None, None)),
                                   synthetic=True)
  env = common.environment()
  seed_rows = seed_scaling(seed_counts, steps, args.strategies.split(","), rounds, ds)
  size_rows = size_scaling(sizes, 2 if args.quick else 4, 10 if args.quick else 100, rounds)
  print(common.format_table(seed_rows, ["strategy", "resolved", "seeds", "steps", "median_s",
                                        "per_seed_s", "seed_steps_per_s"]))
  print(common.format_table(size_rows, ["n", "median_s", "per_example_ns"]))
  out = common.out_path("scaling", args.out, args.quick)
  payload = dict(benchmark="scaling", env=env, load_average_end=common.load_average(),
                 data_source=source, model="mlp 784-512-512-2", batch=train_throughput.BATCH,
                 rounds=rounds, quick=args.quick, seeds=seed_rows, sizes=size_rows)
  if not args.quick or args.plot:
    title = (f"{env['backend']} ({env['cpu_count']} CPUs), jax {env['jax']}, "
             f"load {env['load_average'][0]:.1f}")
    payload["figures"] = [str(p) for p in plot(seed_rows, size_rows, out.parent, title)]
  path = common.write_json(out, payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
