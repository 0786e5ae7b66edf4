"""Benchmark: achieved FLOP/s of the MLP training step vs this machine's matmul peak.

    python -m benchmarks.roofline                     # MLP 784-512-512-2, batch 64, 1/4/16 seeds
    python -m benchmarks.roofline --seeds 16 --rounds 5
    python -m benchmarks.roofline --quick             # tiny, seconds (smoke test)

Peak: a jitted ``jnp.dot`` of two 2048x2048 float32 matrices (2·2048³ FLOP), median of rounds,
timed in the same process and interleaved with the training measurements (and ``torch.mm`` for
reference when torch is installed). Training: ``engine.run_seeds`` (strategy auto) for T
steps of S seeds with a single final evaluation on 256 test examples, after a warm-up call.
FLOPs per seed-step are counted two ways:
  analytic   forward 2·B·Σ d_in·d_out; backward 2·B·Σ d_in·d_out (weight gradients) plus
             2·B·Σ d_in·d_out without the first layer (input gradients): matmuls only;
  xla        ``jit(vmap(steps.train_step)).lower(...).compile().cost_analysis()["flops"]`` / S:
             everything XLA counts (matmuls, bias, ReLU, softmax, SGD update).
Achieved = S·T·FLOPs / median time (end to end: the loop, batch gathers, permutations, SGD
update and the final evaluation are all in the time). Target: >= 50% of peak at 16 seeds.
Writes benchmarks/results/roofline_<backend>.json (atomic; ``--quick``: ..._quick.json).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common, train_throughput
from sgd_phases import engine, steps

TARGET = 0.5


def mlp_layer_dims(in_features: int = 784, width: int = 512, depth: int = 2,
                   num_classes: int = 2) -> list[tuple[int, int]]:
  dims = [in_features] + [width] * depth + [num_classes]
  return list(zip(dims[:-1], dims[1:]))


def analytic_flops(batch: int, layers: list[tuple[int, int]]) -> float:
  """Matmul FLOPs of one SGD step of one seed (forward + both backward products)."""
  macs = sum(a * b for a, b in layers)
  first = layers[0][0] * layers[0][1]
  return 2.0 * batch * (macs + macs + (macs - first))


def xla_flops(tr: steps.Trainer, seeds: int, x_shape: tuple[int, ...]) -> float | None:
  """XLA's cost-analysis FLOPs of one vmapped SGD step, per seed (None if unavailable)."""
  ik, _ = engine.seed_keys(0, np.arange(seeds))
  x0 = jnp.zeros(x_shape, jnp.float32)
  states = jax.vmap(lambda k: steps.create_state(tr, k, x0))(ik)
  xb = jnp.zeros((seeds, tr.batch_size) + x_shape, jnp.float32)
  yb = jnp.zeros((seeds, tr.batch_size), jnp.int32)
  step = jax.jit(jax.vmap(functools.partial(steps.train_step, tr)))
  cost = step.lower(states, xb, yb).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"]) / seeds


def matmul_fns(n: int, dtypes: tuple[str, ...] = ("float32",)) -> dict[str, Any]:
  """Callables doing one n x n matmul per dtype: jnp.dot (jitted) and torch.mm if available.

  Names: "jnp.dot" / "torch.mm" for float32 (the peak the fractions use), "jnp.dot[bfloat16]"
  etc. for the other dtypes. torch runs on the GPU when JAX does and torch sees one.
  """
  fns: dict[str, Any] = {}
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    torch = None
  on_gpu = jax.default_backend() == "gpu" and torch is not None and torch.cuda.is_available()
  for dtype in dtypes:
    tag = "" if dtype == "float32" else f"[{dtype}]"
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    fns[f"jnp.dot{tag}"] = lambda a=a, b=b, dot=dot: dot(a, b).block_until_ready()
    if torch is not None:
      ta, tb = (torch.from_numpy(np.array(x, np.float32)).to(getattr(torch, dtype)) for x in (a, b))
      if on_gpu:
        ta, tb = ta.cuda(), tb.cuda()

        def mm(ta=ta, tb=tb):
          out = torch.mm(ta, tb)
          torch.cuda.synchronize()
          return out
      else:
        mm = lambda ta=ta, tb=tb: torch.mm(ta, tb)  # noqa: E731
      fns[f"torch.mm{tag}"] = mm
  return fns


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = common.parser(__doc__)
  p.add_argument("--seeds", default=None, help="comma-separated seed counts (default 1,4,16)")
  p.add_argument("--steps", type=int, default=None, help="steps per measurement")
  p.add_argument("--matmul-size", type=int, default=None, help="peak matmul size (2048)")
  p.add_argument("--dtypes", default="float32",
                 help="comma-separated matmul dtypes for the peak (e.g. float32,bfloat16)")
  args = p.parse_args(argv)
  seed_counts = [int(s) for s in (args.seeds or ("2" if args.quick else "1,4,16")).split(",")]
  rounds = args.rounds or (1 if args.quick else 5)
  n = args.matmul_size or (256 if args.quick else 2048)
  ds, source = common.mnist_binary(*((512, 256) if args.quick else (None, None)),
                                   synthetic=args.quick)
  data = engine.EvalData.create(train_throughput.subset_test(ds, 256), 256)
  layers = mlp_layer_dims()
  fl_analytic = analytic_flops(train_throughput.BATCH, layers)
  env = common.environment()
  fns: dict[str, Any] = {f"matmul:{k}": f
                         for k, f in matmul_fns(n, tuple(args.dtypes.split(","))).items()}
  cells = {}
  for s in seed_counts:
    t = args.steps or (4 if args.quick else max(100, 4800 // s))
    tr = train_throughput.make_trainer("mlp", t)
    strategy = engine.resolve_strategy(
        "auto", "mlp", num_params=engine.num_params(tr, ds.x_train[0]))
    fns[f"train:{s}"] = train_throughput.engine_fn(tr, data, ds.y_train, s, t, strategy)
    cells[s] = dict(steps=t, strategy=strategy, xla_flops_per_seed_step=xla_flops(
        tr, s, tuple(ds.x_train.shape[1:])))
  times = common.interleaved(fns, rounds, warmup=1, log=print)
  peaks = {k.split(":", 1)[1]: 2.0 * n**3 / common.timing_summary(v)["median_s"] / 1e9
           for k, v in times.items() if k.startswith("matmul:")}
  peaks_best = {k.split(":", 1)[1]: 2.0 * n**3 / min(v) / 1e9
                for k, v in times.items() if k.startswith("matmul:")}
  peak = peaks["jnp.dot"]
  rows = []
  for s, cell in cells.items():
    summ = common.timing_summary(times[f"train:{s}"])
    work = s * cell["steps"]
    gflops = work * fl_analytic / summ["median_s"] / 1e9
    xf = cell["xla_flops_per_seed_step"]
    rows.append(dict(seeds=s, **cell, **summ, analytic_flops_per_seed_step=fl_analytic,
                     achieved_gflops_analytic=gflops, fraction_of_peak_analytic=gflops / peak,
                     achieved_gflops_xla=None if xf is None else work * xf / summ["median_s"] / 1e9,
                     fraction_of_peak_xla=None if xf is None else
                     work * xf / summ["median_s"] / 1e9 / peak,
                     seed_steps_per_s=work / summ["median_s"]))
  print(f"peak GFLOP/s ({n}x{n} float32): " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()))
  print(common.format_table(rows, ["seeds", "steps", "strategy", "median_s", "seed_steps_per_s",
                                   "achieved_gflops_analytic", "fraction_of_peak_analytic",
                                   "fraction_of_peak_xla"]))
  payload = dict(benchmark="roofline", env=env, load_average_end=common.load_average(),
                 data_source=source, model="mlp 784-512-512-2", batch=train_throughput.BATCH,
                 matmul_size=n, peak_gflops=peaks, peak_gflops_best=peaks_best,
                 peak_samples_s={
                     k: v for k, v in times.items() if k.startswith("matmul:")},
                 target_fraction=TARGET, rounds=rounds, quick=args.quick, rows=rows)
  path = common.write_json(common.out_path("roofline", args.out, args.quick), payload)
  print(f"wrote {path}")
  return payload


if __name__ == "__main__":
  main()
