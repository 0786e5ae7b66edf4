"""Benchmark: the MI kernels at vocabulary-size K: time and peak memory of every method.

    python -m benchmarks.mi_large_k            # K = 10 and 128, N = 10^5, f [5, 25, N]
    python -m benchmarks.mi_large_k --quick    # tiny sizes, seconds (smoke test)

Data as in ``benchmarks.mi_bench.make_data``: y [N], l [S, 1, N], f [S, E, N] (S = 5 seeds,
E = 25 evaluations). For every K and method of ``mutual_info.information_measures`` ("auto",
"scatter", "onehot", "sorted"):

  * compiled memory: XLA ``memory_analysis()`` of the jitted call (temp, argument and output
    bytes; what the call allocates beyond its inputs is ``temp``);
  * peak RSS of one call in a fresh subprocess, above its RSS just before the call (VmHWM reset
    through /proc/self/clear_refs; Linux only, else null);
  * time per call: median of ``--rounds`` interleaved rounds (``common.interleaved``: one
    warm-up call each, then round-robin), all methods in one process on the same data;
  * max |difference| of every InfoMeasures field from "scatter" (must be < 1e-4 bits).

Methods whose compiled temp exceeds ``--max-temp-gib`` are compiled and reported, not run.
The conditional null (``conditional_null``, P = ``--permutations`` draws, output [P, S, E]) is
compiled per method (memory) and timed once per runnable method. ``crossover``: "scatter" vs
"sorted" (median of interleaved rounds) over a (N, K) grid around K³ ≈ 10 N, the measurements
behind ``auto``'s rule (``mi_counts`` module docstring). The JSON records the command.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.mi_bench import make_data
from sgd_phases import mutual_info

METHODS = ("auto", "scatter", "onehot", "sorted")
_TOL = 1e-4
_GIB = 2**30


def _data(k: int, n: int, seeds: int, evals: int, seed: int = 0):
  f, l, y = make_data(np.random.default_rng(seed), seeds, evals, n, k)
  return tuple(jnp.asarray(x) for x in (f, l, y))


def _measures_fn(k: int, method: str):
  return jax.jit(functools.partial(mutual_info.information_measures, num_classes=k,
                                   method=method))


def _null_fn(k: int, method: str, permutations: int):
  return jax.jit(functools.partial(mutual_info.conditional_null, num_classes=k,
                                   num_permutations=permutations, method=method))


def _memory(compiled) -> dict[str, int]:
  m = compiled.memory_analysis()
  return dict(temp_bytes=int(m.temp_size_in_bytes), argument_bytes=int(m.argument_size_in_bytes),
              output_bytes=int(m.output_size_in_bytes))


def _status_kib(field: str) -> int | None:
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith(field + ":"):
        return int(line.split()[1])
  except OSError:
    pass
  return None


def worker(k: int, n: int, seeds: int, evals: int, method: str) -> dict[str, Any]:
  """One call in this process: its peak RSS above the RSS before it (compiled, data ready)."""
  args = _data(k, n, seeds, evals)
  compiled = _measures_fn(k, method).lower(*args).compile()
  before = _status_kib("VmRSS")
  try:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
  except OSError:
    return dict(rss_before_bytes=None, peak_rss_above_bytes=None)
  jax.block_until_ready(compiled(*args))
  peak = _status_kib("VmHWM")
  if before is None or peak is None:
    return dict(rss_before_bytes=None, peak_rss_above_bytes=None)
  return dict(rss_before_bytes=before * 1024, peak_rss_above_bytes=(peak - before) * 1024)


def _rss_in_subprocess(k, n, seeds, evals, method) -> dict[str, Any]:
  cmd = [sys.executable, "-m", "benchmarks.mi_large_k", "--worker",
         json.dumps(dict(k=k, n=n, seeds=seeds, evals=evals, method=method))]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                       cwd=Path(__file__).resolve().parent.parent)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _max_err(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(z, np.float64))))
             for x, z in zip(a, b))


def bench_k(k: int, n: int, seeds: int, evals: int, rounds: int, permutations: int,
            max_temp: float, rss: bool, log) -> list[dict[str, Any]]:
  args = _data(k, n, seeds, evals)
  lead, ly_shape = (seeds, evals), (seeds, 1, n)
  rows, runnable = [], {}
  for method in METHODS:
    compiled = _measures_fn(k, method).lower(*args).compile()
    mem = _memory(compiled)
    row = dict(K=k, N=n, lead=list(lead), method=method, **mem,
               resolved=(mutual_info.resolve_method(k, n, lead, ly_shape)
                         if method == "auto" else method),
               run=mem["temp_bytes"] <= max_temp)
    if row["run"]:
      runnable[method] = functools.partial(compiled, *args)
    else:
      row["skipped"] = f"compiled temp {mem['temp_bytes'] / _GIB:.1f} GiB > --max-temp-gib"
    log(f"K={k} {method}: temp {mem['temp_bytes'] / 2**20:.1f} MiB"
        + ("" if row["run"] else " (not run)"))
    rows.append(row)
  times = common.interleaved(runnable, rounds=rounds, log=log)
  ref = runnable["scatter"]()
  for row in rows:
    if not row["run"]:
      continue
    row.update(common.timing_summary(times[row["method"]]))
    row["max_err_bits_vs_scatter"] = _max_err(runnable[row["method"]](), ref)
    if row["max_err_bits_vs_scatter"] > _TOL:
      raise SystemExit(f"K={k} {row['method']} differs from scatter by "
                       f"{row['max_err_bits_vs_scatter']:.2e} bits")
    if rss:
      row.update(_rss_in_subprocess(k, n, seeds, evals, row["method"]))
  key = jax.random.key(0)
  for row in rows:
    compiled = _null_fn(k, row["method"], permutations).lower(*args, key=key).compile()
    mem = _memory(compiled)
    row["null"] = dict(permutations=permutations, temp_bytes=mem["temp_bytes"],
                       run=mem["temp_bytes"] <= max_temp and row["method"] != "auto")
    if row["null"]["run"]:  # "auto" is one of the others ("resolved")
      row["null"]["seconds"] = common.time_once(functools.partial(compiled, *args, key=key))
      log(f"K={k} null {row['method']}: {row['null']['seconds']:.2f} s")
  return rows


def bench_crossover(grid: tuple[tuple[int, tuple[int, ...]], ...], seeds: int, evals: int,
                    rounds: int, log) -> list[dict[str, Any]]:
  """scatter vs sorted at every (N, K) of ``grid`` (pairs of N and Ks), f [seeds, evals, N]."""
  rows = []
  for n, ks in grid:
    for k in ks:
      args = _data(k, n, seeds, evals)
      fns = {m: functools.partial(_measures_fn(k, m).lower(*args).compile(), *args)
             for m in ("scatter", "sorted")}
      med = {m: common.timing_summary(t)["median_s"]
             for m, t in common.interleaved(fns, rounds=rounds).items()}
      rows.append(dict(N=n, K=k, K3_over_N=k**3 / n, scatter_s=med["scatter"],
                       sorted_s=med["sorted"], sorted_over_scatter=med["sorted"] / med["scatter"],
                       auto=mutual_info.resolve_method(k, n, (seeds, evals), (seeds, 1, n))))
      log(f"N={n} K={k} K³/N={k**3 / n:.1f}: scatter {med['scatter']:.3f} s, sorted "
          f"{med['sorted']:.3f} s (x{rows[-1]['sorted_over_scatter']:.2f}), auto "
          f"{rows[-1]['auto']}")
  return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = common.parser(__doc__)
  parser.add_argument("--ks", default="10,128", help="comma-separated K values")
  parser.add_argument("--n", type=int, default=100_000, help="examples N")
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--evals", type=int, default=25)
  parser.add_argument("--permutations", type=int, default=20, help="null draws P")
  parser.add_argument("--max-temp-gib", type=float, default=4.0,
                      help="compile but do not run methods whose temp exceeds this")
  parser.add_argument("--no-rss", action="store_true", help="skip the per-method subprocesses")
  parser.add_argument("--no-crossover", action="store_true", help="skip the (N, K) grid")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(**json.loads(args.worker))))
    return {}
  if args.quick:
    ks, n, seeds, evals, perms = (5, 40), 2_000, 2, 3, 2
    grid = ((1_000, (16, 24)),)
  else:
    ks = tuple(int(v) for v in args.ks.split(","))
    n, seeds, evals, perms = args.n, args.seeds, args.evals, args.permutations
    grid = ((10_000, (32, 40, 48, 56, 64)), (100_000, (64, 80, 96, 112, 128)))
  rounds = args.rounds or (3 if args.quick else 5)
  env = common.environment()
  log = lambda s: print(s, flush=True)  # noqa: E731
  rows = []
  for k in ks:
    rows += bench_k(k, n, seeds, evals, rounds, perms, args.max_temp_gib * _GIB,
                    not args.no_rss, log)
  crossover = [] if args.no_crossover else bench_crossover(grid, seeds, evals, rounds, log)
  table = common.format_table(
      [dict(r, temp_MiB=r["temp_bytes"] / 2**20, median_ms=r.get("median_s", float("nan")) * 1e3,
            rss_MiB=(r.get("peak_rss_above_bytes") or float("nan")) / 2**20,
            null_s=r["null"].get("seconds"), null_temp_MiB=r["null"]["temp_bytes"] / 2**20)
       for r in rows],
      ["K", "method", "resolved", "temp_MiB", "rss_MiB", "median_ms", "null_s", "null_temp_MiB"])
  print(table)
  env["load_average_at_end"] = common.load_average()
  payload = dict(
      command=" ".join(["python -m benchmarks.mi_large_k",
                        *(sys.argv[1:] if argv is None else argv)]),
      env=env, shape=dict(f=[seeds, evals, n], l=[seeds, 1, n], y=[n]), rounds=rounds,
      tolerance_bits=_TOL, max_temp_gib=args.max_temp_gib, rows=rows, crossover=crossover,
      table=table)
  out = common.out_path("mi_large_k", args.out, args.quick)
  common.write_json(out, payload)
  print(f"wrote {out}")
  return payload


if __name__ == "__main__":
  main()
