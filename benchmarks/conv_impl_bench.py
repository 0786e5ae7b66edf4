"""Times conv_impl "lax" / "patches" / "shifted" (forward + backward) to justify "auto".

Usage (from the repository root)::

    python -m benchmarks.conv_impl_bench                       # paper_cnn, batch 64, 28x28x1
    python -m benchmarks.conv_impl_bench --models paper_cnn,cnn3,resnet20 --reps 9

For each model and implementation it jits the gradient of the mean softmax cross-entropy with
respect to the parameters (train mode; BatchNorm statistics updated) and times
  1seed   one parameter set, one batch;
  vmapN   ``jax.vmap`` over N seeds, each with its own parameters and its own batch;
  mapN    the same N seeds through ``jax.lax.map`` (a scan: one seed at a time, one body);
  loopN   the same N seeds as an unrolled Python loop inside one jit (sequential seeds);
  scanN   one seed, N SGD steps on N batches in ``jax.lax.scan`` (a training loop).
Variants are timed round-robin after a warm-up, so background load hits them alike; the table
shows the median over ``--reps`` rounds in calls/s (every N-mode call does N forward+backward
passes on N batches of ``--batch`` examples; 1seed does one). Writes
benchmarks/results/conv_impl_cpu.json (named after the backend) atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgd_phases import models

_IMAGE_SHAPES = {"resnet20": (32, 32, 3), "vgg11": (32, 32, 3)}
IMPLS = ("lax", "patches", "shifted")


def _make_grad_fn(model, num_seeds: int, mode: str) -> Callable:
  """Returns a jitted fn(variables, x, y) -> grads for one seed or N seeds (vmap, map, loop)."""

  def loss(params, rest, x, y):
    variables = {"params": params, **rest}
    if rest:
      logits, _ = model.apply(variables, x, train=True, mutable=list(rest))
    else:
      logits = model.apply(variables, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def grad_one(variables, x, y):
    rest = {k: v for k, v in variables.items() if k != "params"}
    return jax.grad(loss)(variables["params"], rest, x, y)

  if mode == "1seed":
    return jax.jit(grad_one)
  if mode == "vmap":
    return jax.jit(jax.vmap(grad_one))
  if mode == "map":
    return jax.jit(lambda v, x, y: jax.lax.map(lambda a: grad_one(*a), (v, x, y)))
  if mode == "scan":  # one seed, N plain-SGD steps on N batches, as a training loop would run

    def sgd_steps(variables, x, y):
      def body(v, batch):
        grads = grad_one(v, *batch)
        return {**v, "params": jax.tree.map(lambda p, g: p - 0.01 * g, v["params"], grads)}, None

      return jax.lax.scan(body, variables, (x, y))[0]

    return jax.jit(sgd_steps)

  def grad_loop(variables, x, y):
    outs = [
        grad_one(jax.tree.map(lambda a, i=i: a[i], variables), x[i], y[i])
        for i in range(num_seeds)
    ]
    return jax.tree.map(lambda *a: jnp.stack(a), *outs)

  return jax.jit(grad_loop)


def _time_once(fn: Callable, args: tuple) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def run(model_names: list[str], batch: int, num_seeds: int, reps: int) -> list[dict]:
  """Benchmarks every (model, conv_impl, mode); returns one row per combination."""
  key = jax.random.key(0)
  cases = []
  for name in model_names:
    shape = _IMAGE_SHAPES.get(name, (28, 28, 1))
    kx, ky, kp = jax.random.split(jax.random.fold_in(key, len(cases)), 3)
    x = jax.random.uniform(kx, (num_seeds, batch, *shape))
    y = jax.random.randint(ky, (num_seeds, batch), 0, 2)
    seed_keys = jax.random.split(kp, num_seeds)
    for impl in IMPLS:
      model = models.get_model(name, num_classes=2, conv_impl=impl)
      stacked = jax.vmap(model.init, in_axes=(0, None))(seed_keys, x[0])
      single = jax.tree.map(lambda a: a[0], stacked)
      for mode in ("1seed", "vmap", "map", "loop", "scan"):
        fn = _make_grad_fn(model, num_seeds, mode)
        args = {"1seed": (single, x[0], y[0]), "scan": (single, x, y)}.get(mode, (stacked, x, y))
        label = mode if mode == "1seed" else f"{mode}{num_seeds}"
        cases.append(
            {"model": name, "conv_impl": impl, "mode": label, "fn": fn, "args": args, "times": []}
        )
  for case in cases:  # warm-up: the first call includes compilation
    case["first_call_s"] = _time_once(case["fn"], case["args"])
    _time_once(case["fn"], case["args"])
  for _ in range(reps):
    for case in cases:
      case["times"].append(_time_once(case["fn"], case["args"]))
  rows = []
  for case in cases:
    median = float(np.median(case["times"]))
    rows.append(
        {
            "model": case["model"],
            "conv_impl": case["conv_impl"],
            "mode": case["mode"],
            "batch": batch,
            "median_s": median,
            "steps_per_s": 1.0 / median,
            "first_call_s": case["first_call_s"],
            "times_s": [float(t) for t in case["times"]],
        }
    )
  return rows


def _write_json_atomic(path: str, payload: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(payload, f, indent=2)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="paper_cnn", help="comma-separated registry names")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--reps", type=int, default=5, help="timed rounds (median is reported)")
  parser.add_argument(
      "--out", default=None, help="default: benchmarks/results/conv_impl_<backend>.json"
  )
  args = parser.parse_args()
  backend = jax.default_backend()
  load_before = os.getloadavg()
  rows = run(args.models.split(","), args.batch, args.seeds, args.reps)
  load_after = os.getloadavg()
  print(
      f"backend={backend} cpus={os.cpu_count()} "
      f"loadavg {load_before[0]:.1f} -> {load_after[0]:.1f}"
  )
  print("calls/s (median); in brackets: speed relative to lax (first-call times in the json)")
  print(f"{'model':<10} {'mode':<7}" + "".join(f"{impl:>18}" for impl in IMPLS))
  by_key = {(r["model"], r["mode"], r["conv_impl"]): r["steps_per_s"] for r in rows}
  for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in rows):
    base = by_key[(model, mode, "lax")]
    cells = [f"{by_key[(model, mode, i)]:>10.2f} ({by_key[(model, mode, i)] / base:.2f}x)"
             for i in IMPLS]
    print(f"{model:<10} {mode:<7}" + "".join(f"{c:>18}" for c in cells))
  payload = {
      "backend": backend,
      "device": str(jax.devices()[0]),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "jax_version": jax.__version__,
      "loadavg_before": load_before,
      "loadavg_after": load_after,
      "reps": args.reps,
      "seeds": args.seeds,
      "rows": rows,
  }
  out = args.out or os.path.join("benchmarks", "results", f"conv_impl_{backend}.json")
  _write_json_atomic(out, payload)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
