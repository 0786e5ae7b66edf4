"""Benchmark: μ_Y(F;L) for [seeds × checkpoints × N] predictions, JAX kernel vs numpy vs sklearn.

    python -m benchmarks.mi_bench                # 8 seeds × 100 ckpts × 10,000, K = 2 and 10
    python -m benchmarks.mi_bench --quick        # smaller, for smoke tests (~10 s)
    python -m benchmarks.mi_bench --out /tmp/mi.json

Implementations, timed side by side in one process on the same data:
  * jax[auto|scatter|onehot]: ``mutual_info.information_measures`` (full InfoMeasures), jitted
    with ``num_classes`` static, after a warm-up call, ``block_until_ready``, median of repeats.
  * numpy: one ``np.bincount`` over flat indices f·K² + l·K + y plus per-pair offsets, then the
    same entropies in float64 (full InfoMeasures).
  * sklearn: ``mutual_info_score`` per (seed, checkpoint): I(F;Y) directly and
    I(F;Y|L) = Σ_l P(L=l)·I(F;Y | L=l) from per-class calls (nats → bits). When
    ``--sklearn-pairs`` is below the number of pairs it times a subset and extrapolates
    linearly (marked in the table and JSON).
All implementations are checked to agree to 1e-4 bits before anything is reported.
Also times single-pair scaling cases (K=10 and K=100 at N=10^6).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sklearn
from sklearn.metrics import mutual_info_score

from sgd_phases import mutual_info

_LN2 = math.log(2.0)
_TOL = 1e-4
_DEFAULT_OUT = Path(__file__).parent / "results" / "mi_bench_cpu.json"


def make_data(rng: np.random.Generator, seeds: int, ckpts: int, n: int, k: int):
  """y [N] uniform; l [S,1,N] right 70%; f [S,E,N] right w.p. ramping 1/K→0.9, else copies l
  half the time (shared mistakes) or guesses."""
  y = rng.integers(0, k, n, dtype=np.int32)
  l = np.where(rng.random((seeds, 1, n)) < 0.7, y, rng.integers(0, k, (seeds, 1, n)))
  acc = np.linspace(1.0 / k, 0.9, ckpts)[None, :, None]
  wrong = np.where(rng.random((seeds, ckpts, n)) < 0.5, l,
                   rng.integers(0, k, (seeds, ckpts, n)))
  f = np.where(rng.random((seeds, ckpts, n)) < acc, y, wrong)
  return f.astype(np.int32), l.astype(np.int32), y


def _entropy_np(c: np.ndarray, axes: tuple[int, ...], n: int) -> np.ndarray:
  p = c.astype(np.float64) / n
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=axes)


def numpy_measures(f: np.ndarray, l: np.ndarray, y: np.ndarray, k: int) -> dict[str, np.ndarray]:
  """Vectorised numpy reference: flat indices + per-pair offsets into one bincount."""
  lead, n = np.broadcast_shapes(f.shape[:-1], l.shape[:-1], y.shape[:-1]), f.shape[-1]
  pairs = math.prod(lead)
  idx = np.broadcast_to((f * k + l) * k + y, lead + (n,)).reshape(pairs, n)
  idx = idx + (np.arange(pairs) * k**3)[:, None]
  t = np.bincount(idx.ravel(), minlength=pairs * k**3).reshape(lead + (k, k, k))
  h = lambda c, d: _entropy_np(c, tuple(range(-d, 0)), n)  # noqa: E731
  t_fl, t_fy, t_ly = t.sum(-1), t.sum(-2), t.sum(-3)
  h_flj, h_fl, h_fy, h_ly = h(t, 3), h(t_fl, 2), h(t_fy, 2), h(t_ly, 2)
  h_f, h_l, h_y = h(t_fl.sum(-1), 1), h(t_fl.sum(-2), 1), h(t_ly.sum(-2), 1)
  i_fy, i_fy_given_l = h_f + h_y - h_fy, h_fl + h_ly - h_flj - h_l
  return {"i_fy": i_fy, "i_ly": h_l + h_y - h_ly, "i_fl": h_f + h_l - h_fl,
          "i_fy_given_l": i_fy_given_l, "i_fl_given_y": h_fy + h_ly - h_flj - h_y,
          "mu": i_fy - i_fy_given_l, "h_y": h_y,
          "acc_f": np.trace(t_fy, axis1=-2, axis2=-1) / n,
          "acc_l": np.trace(t_ly, axis1=-2, axis2=-1) / n}


def sklearn_measures(f, l, y, k, pairs):
  """Per-pair sklearn loop over the first ``pairs`` (seed, checkpoint) pairs (row-major)."""
  seeds, ckpts, _ = f.shape
  out = {"i_fy": [], "i_fy_given_l": []}
  for p in range(pairs):
    s, e = divmod(p, ckpts)
    fs, ls = f[s, e], l[s, 0]
    out["i_fy"].append(mutual_info_score(y, fs) / _LN2)
    cmi = 0.0
    for c in range(k):
      mask = ls == c
      if mask.any():
        cmi += mask.mean() * mutual_info_score(y[mask], fs[mask]) / _LN2
    out["i_fy_given_l"].append(cmi)
  out = {name: np.asarray(v) for name, v in out.items()}
  out["mu"] = out["i_fy"] - out["i_fy_given_l"]
  return out


def _time_interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, list[float], object]]:
  """Warm-up each fn, then ``repeats`` rounds of one timed call each (round-robin, so load
  changes on a shared machine hit every implementation alike); median per fn."""
  outs = {name: jax.block_until_ready(fn()) for name, fn in fns.items()}  # compiles
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      outs[name] = jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: (float(np.median(times[name])), times[name], outs[name]) for name in fns}


def _check(name: str, got: dict, ref: dict, pairs: int | None = None) -> float:
  err = 0.0
  for key in ("i_fy", "i_fy_given_l", "mu") if pairs else ref:
    a = np.asarray(got[key], np.float64).reshape(-1)[:pairs]
    b = np.asarray(ref[key], np.float64).reshape(-1)[:pairs]
    err = max(err, float(np.max(np.abs(a - b))))
  if err > _TOL:
    raise SystemExit(f"{name} disagrees with the JAX kernel by {err:.2e} bits (> {_TOL}).")
  return err


def bench_case(rng, seeds, ckpts, n, k, repeats, sklearn_pairs) -> list[dict]:
  f, l, y = make_data(rng, seeds, ckpts, n, k)
  fj, lj, yj = (jnp.asarray(x) for x in (f, l, y))
  fns = {}
  for method in ("auto", "scatter", "onehot"):
    jitted = jax.jit(functools.partial(mutual_info.information_measures, num_classes=k,
                                       method=method))
    fns[f"jax[{method}]"] = functools.partial(jitted, fj, lj, yj)
  fns["numpy_bincount"] = functools.partial(numpy_measures, f, l, y, k)
  timed = _time_interleaved(fns, repeats)
  ref = {key: np.asarray(v) for key, v in timed["jax[auto]"][2]._asdict().items()}
  rows = []
  for name, (sec, times, out) in timed.items():
    out = out if isinstance(out, dict) else {key: np.asarray(v) for key, v in out._asdict().items()}
    rows.append(dict(impl=name, K=k, seconds=sec, min_seconds=min(times), times=times,
                     max_err_bits=_check(name, out, ref)))
  pairs = min(sklearn_pairs, seeds * ckpts)
  t0 = time.perf_counter()
  out = sklearn_measures(f, l, y, k, pairs)
  measured = time.perf_counter() - t0
  rows.append(dict(impl="sklearn_loop", K=k, seconds=measured * seeds * ckpts / pairs,
                   times=[measured], pairs_timed=pairs, extrapolated=pairs < seeds * ckpts,
                   max_err_bits=_check("sklearn", out, ref, pairs)))
  t_sk = rows[-1]["seconds"]
  t_np = next(r["seconds"] for r in rows if r["impl"] == "numpy_bincount")
  for r in rows:
    r.update(speedup_vs_sklearn=t_sk / r["seconds"], ratio_vs_numpy=r["seconds"] / t_np,
             shape=[seeds, ckpts, n])
  return rows


def bench_scaling(rng, k: int, n: int, repeats: int) -> dict:
  """One (f, l, y) pair of N labels: time of the kernel and numpy, and table size."""
  y = rng.integers(0, k, n, dtype=np.int32)
  f = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n)).astype(np.int32)
  l = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n)).astype(np.int32)
  jitted = jax.jit(functools.partial(mutual_info.information_measures, num_classes=k))
  args = tuple(jnp.asarray(x) for x in (f, l, y))
  timed = _time_interleaved({"jax": functools.partial(jitted, *args),
                             "numpy": functools.partial(numpy_measures, f, l, y, k)}, repeats)
  (sec, times, out), (sec_np, _, ref) = timed["jax"], timed["numpy"]
  err = _check(f"scaling K={k}", {key: np.asarray(v) for key, v in out._asdict().items()}, ref)
  return dict(K=k, N=n, seconds=sec, times=times, numpy_seconds=sec_np, max_err_bits=err,
              table_bytes=4 * k**3, index_bytes=4 * n)


def environment() -> dict:
  dev = jax.devices()[0]
  return dict(backend=jax.default_backend(), device_kind=dev.device_kind,
              num_devices=jax.device_count(), jax=jax.__version__, numpy=np.__version__,
              sklearn=sklearn.__version__, cpu_count=os.cpu_count(),
              cpu=platform.processor() or platform.machine(), python=platform.python_version(),
              load_avg_at_start=list(os.getloadavg()),
              time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _write_json(path: Path, payload: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
  with os.fdopen(fd, "w") as fh:
    json.dump(payload, fh, indent=1)
  os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="2×20 pairs, 16 sklearn pairs")
  parser.add_argument("--out", type=Path, default=_DEFAULT_OUT, help="JSON output path")
  parser.add_argument("--repeats", type=int, default=7, help="timed repeats (median), ≥ 3")
  parser.add_argument("--sklearn-pairs", type=int, default=None,
                      help="pairs timed in the sklearn loop (default: all; 16 with --quick)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.repeats < 3:
    parser.error("--repeats must be >= 3")
  seeds, ckpts, n = (2, 20, 10_000) if args.quick else (8, 100, 10_000)
  sk_pairs = args.sklearn_pairs or (16 if args.quick else seeds * ckpts)
  rng = np.random.default_rng(args.seed)
  env = environment()
  rows = []
  for k in (2, 10):
    rows += bench_case(rng, seeds, ckpts, n, k, args.repeats, sk_pairs)
  scaling = [bench_scaling(rng, k, n_big, args.repeats)
             for k, n_big in ((10, 10**5 if args.quick else 10**6),
                              (100, 10**5 if args.quick else 10**6))]
  header = f"{'impl':<16}{'K':>4}{'seconds':>12}{'x vs sklearn':>14}{'/ numpy':>9}  note"
  lines = [f"backend={env['backend']} ({env['device_kind']}), jax {env['jax']}, numpy "
           f"{env['numpy']}, sklearn {env['sklearn']}, {env['cpu_count']} CPUs, load avg "
           f"{env['load_avg_at_start'][0]:.2f}; f [{seeds},{ckpts},{n}], l [{seeds},1,{n}], "
           f"y [{n}]", header]
  for r in rows:
    note = (f"extrapolated from {r['pairs_timed']} pairs" if r.get("extrapolated") else "")
    lines.append(f"{r['impl']:<16}{r['K']:>4}{r['seconds']:>12.4f}"
                 f"{r['speedup_vs_sklearn']:>14.1f}{r['ratio_vs_numpy']:>9.2f}  {note}")
  for s in scaling:
    lines.append(f"single pair K={s['K']:<3} N={s['N']:.0e}: jax {s['seconds'] * 1e3:.1f} ms, "
                 f"numpy {s['numpy_seconds'] * 1e3:.1f} ms, table {s['table_bytes'] / 1e6:.3g} MB")
  print("\n".join(lines))
  env["load_avg_at_end"] = list(os.getloadavg())
  payload = dict(environment=env, shape=[seeds, ckpts, n], quick=args.quick,
                 repeats=args.repeats, tolerance_bits=_TOL, rows=rows, scaling=scaling,
                 table="\n".join(lines))
  _write_json(args.out, payload)
  print(f"wrote {args.out}")
  return payload


if __name__ == "__main__":
  main()
