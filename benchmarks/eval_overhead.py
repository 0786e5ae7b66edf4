"""Benchmark: cost of the engine's evaluations (predictions, metrics, information measures).

    python -m benchmarks.eval_overhead                  # MLP 512x2, 4 seeds, 4000 steps
    python -m benchmarks.eval_overhead --quick          # tiny, seconds (smoke test)
    # the stored results (benchmarks/results/): the linear_phase mnist_mlp length (10k steps),
    # and the paper's MNIST run (50 epochs at batch 64 = 46,875 steps)
    python -m benchmarks.eval_overhead --steps 10000 --seeds 2 --rounds 2 \
        --out benchmarks/results/eval_overhead_10k_cpu.json
    python -m benchmarks.eval_overhead --steps 46875 --seeds 1 --rounds 1 \
        --out benchmarks/results/eval_overhead_paper_cpu.json

Three ``train_lib.train`` runs of the same config (MLP 784-512-512-2 on MNIST 0-4 vs 5-9 from the
offline IDX files, else ``sinusoid_hd`` with 784 features and MNIST's sizes: the same shapes
for an MLP), timed round-robin, in memory (workdir None):
  full     ``eval.num_points`` = 100 log-spaced evaluations: hard predictions on the 10,000
           test examples and accuracy/loss on ``eval.train_eval_size`` train examples per seed
           (the config default, 2000, unless ``--train-eval-size``), then every information
           measure against one linear reference;
  full_test_only   the same with a 1-example train subset (the test-set part alone);
  no_eval  the same run with ``eval.num_points`` = 2 (step 0 and the end).
The overhead is full / no_eval - 1. Because the evaluations are forward passes that grow with
the number of evaluations while training grows with the number of steps, the JSON also gives
the measured cost of one evaluation in SGD-step equivalents and the number of steps above which
the 100 evaluations cost <= 25% (``break_even_steps_25pct``), for both.
Writes benchmarks/results/eval_overhead_<backend>.json (atomic; ``--quick``: ..._quick.json).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from benchmarks import common
from sgd_phases import config_lib, datasets, train_lib

TARGET = 0.25
_MACS = 784 * 512 + 512 * 512 + 512 * 2
FWD_FLOPS_PER_EXAMPLE = 2 * _MACS                            # matmuls of one forward pass
TRAIN_FLOPS_PER_STEP = 2 * 64 * (3 * _MACS - 784 * 512)     # see benchmarks/roofline.py


def make_config(steps: int, seeds: int, num_points: int, train_eval_size: int,
                quick: bool = False) -> ml_collections.ConfigDict:
  """The benchmarked run: MLP 512x2, batch 64, SGD lr 0.05, a linear reference, T_0 rule."""
  root = datasets.shared_data_dir()
  if not quick and root is not None and (root / "mnist").is_dir():
    c = config_lib.base_config("mnist", "mlp", width=512, depth=2)
    c.dataset.data_dir = str(root / "mnist")
  else:
    c = config_lib.base_config("sinusoid_hd", "mlp", width=512, depth=2)
    c.dataset.dim = 784
    c.dataset.n_train, c.dataset.n_test = (60_000, 10_000) if not quick else (512, 256)
  c.optimizer.learning_rate = 0.05
  c.batch_size = 64
  c.num_steps = steps
  c.num_seeds = seeds
  c.eval.num_points = num_points
  c.eval.train_eval_size = train_eval_size
  c.references.linear = config_lib.reference_config("linear", num_steps=max(steps // 10, 10),
                                                    learning_rate=0.05)
  c.t0.reference = "linear"
  c.checkpoint_every = 0
  c.progress = False
  return c


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--steps", type=int, default=None, help="SGD steps of F (default 4000)")
  p.add_argument("--seeds", type=int, default=None, help="seeds (default 4)")
  p.add_argument("--num-points", type=int, default=100, help="evaluations of the full run")
  p.add_argument("--train-eval-size", type=int,
                 default=config_lib.base_config("mnist", "mlp").eval.train_eval_size)
  args = p.parse_args(argv)
  steps = args.steps or (40 if args.quick else 4000)
  seeds = args.seeds or (2 if args.quick else 4)
  rounds = args.rounds or (1 if args.quick else 3)
  tes = min(args.train_eval_size, 256) if args.quick else args.train_eval_size
  configs = {
      "full": make_config(steps, seeds, args.num_points, tes, args.quick),
      "full_test_only": make_config(steps, seeds, args.num_points, 1, args.quick),
      "no_eval": make_config(steps, seeds, 2, tes, args.quick),
  }
  if args.quick:  # smoke test: two runs, timed once each (no warm-up)
    del configs["full_test_only"]
  env = common.environment()
  results = {}

  shapes = {}
  # Data are read once (a few seconds from the TFDS cache), not once per timed run.
  load = train_lib.datasets_lib.get_dataset
  cache: dict[str, Any] = {}

  def cached_load(dc):
    key = dc.to_json()
    if key not in cache:
      cache[key] = load(dc)
    return cache[key]

  def runner(c, name):
    def run():
      a = train_lib.train(c, None).arrays
      shapes[name] = a["predictions"].shape  # [seeds, evaluations, n_test]
      return a["mi/linear/mu"]
    return run

  fns = {name: runner(c, name) for name, c in configs.items()}
  train_lib.datasets_lib.get_dataset = cached_load
  try:
    first = {name: common.time_once(fn) for name, fn in fns.items()}  # loads data, compiles
    times = ({n: [t] for n, t in first.items()} if args.quick else
             common.interleaved(fns, rounds, warmup=0, log=print))
  finally:
    train_lib.datasets_lib.get_dataset = load
  for name, ts in times.items():
    results[name] = dict(common.timing_summary(ts), first_call_s=first[name],
                         num_evaluations=int(shapes[name][1]))
  base = results["no_eval"]["median_s"]
  n_train = 512 if args.quick else 60_000
  rows = []
  for name in [n for n in ("full", "full_test_only") if n in results]:
    r = results[name]
    extra = r["median_s"] - base
    n_eval = r["num_evaluations"] - results["no_eval"]["num_evaluations"]
    step_s = base / (steps * seeds)  # upper bound: no_eval also holds 2 evaluations + reference
    per_eval_steps = extra / max(n_eval, 1) / (step_s * seeds)
    n_test, tes_r = shapes[name][2], configs[name].eval.train_eval_size
    eval_flops = n_eval * seeds * (n_test + min(tes_r, n_train)) * FWD_FLOPS_PER_EXAMPLE
    r.update(overhead=r["median_s"] / base - 1.0,
             meets_target=r["median_s"] / base - 1.0 <= TARGET,
             eval_cost_in_sgd_steps=per_eval_steps,
             break_even_steps_25pct=int(per_eval_steps * n_eval / TARGET),
             eval_flops_over_train_flops=eval_flops / (steps * seeds * TRAIN_FLOPS_PER_STEP),
             eval_gflops=eval_flops / max(extra, 1e-9) / 1e9,
             train_gflops_upper=steps * seeds * TRAIN_FLOPS_PER_STEP / base / 1e9)
    rows.append(dict(run=name, train_eval_size=configs[name].eval.train_eval_size, **r))
  rows.append(dict(run="no_eval", train_eval_size=tes, **results["no_eval"]))
  print(common.format_table(rows, ["run", "train_eval_size", "num_evaluations", "median_s",
                                   "overhead", "eval_flops_over_train_flops", "eval_gflops",
                                   "train_gflops_upper", "break_even_steps_25pct"]))
  c = configs["full"]
  payload = dict(benchmark="eval_overhead", env=env, load_average_end=common.load_average(),
                 dataset=c.dataset.name, steps=steps, seeds=seeds, batch=c.batch_size,
                 model="mlp 784-512-512-2", n_test=int(shapes["full"][2]), rounds=rounds,
                 quick=args.quick,
                 target_overhead=TARGET, rows=rows)
  path = common.write_json(common.out_path("eval_overhead", args.out, args.quick), payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
