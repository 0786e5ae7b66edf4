"""Shared helpers of the benchmarks: environment record, interleaved timing, data, JSON, tables.

    from benchmarks import common
    parser = common.parser(__doc__)                      # --quick, --rounds, --out
    args = parser.parse_args()
    times = common.interleaved({"a": fn_a, "b": fn_b}, rounds=3)   # name -> [seconds]
    ds, source = common.mnist_binary(synthetic=args.quick)          # MNIST 0-4 vs 5-9
    common.write_json(common.out_path("train_throughput", args.out),
                      {"env": common.environment(), "rows": rows})  # atomic

Timing rules used by every benchmark: each callable is warmed up (compiled) once, then the
callables are run round-robin (A, B, C, A, B, C, ...) so background load hits all of them
alike, and the median over rounds is reported. Every callable must block until its work is done
(``jax.block_until_ready`` is applied to whatever it returns).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# PyTorch's OpenMP threads busy-wait by default; on a shared, oversubscribed CPU that made its
# per-step latency 10-20x worse (8 vs 143 steps/s for the MNIST MLP at load ~8), which would
# flatter the JAX numbers. Passive waiting unless the user chose otherwise (set before torch
# is imported; recorded in ``environment()``).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from sgd_phases import io_lib  # pylint: disable=wrong-import-position

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Models with a PyTorch twin in ``benchmarks.torch_baselines`` (listed here: no torch import).
TORCH_MODELS = ("mlp", "paper_cnn") + tuple(f"cnn{k}" for k in range(1, 7))


def load_average() -> list[float]:
  """1, 5 and 15 minute load averages of this machine (``os.getloadavg``)."""
  return [round(v, 2) for v in os.getloadavg()]


def _version(module: str) -> str | None:
  try:
    return __import__(module).__version__
  except Exception:  # pylint: disable=broad-except  # not installed
    return None


def _torch_threads() -> int | None:
  try:
    import torch  # pylint: disable=import-outside-toplevel
    return torch.get_num_threads()
  except ImportError:
    return None


def cpu_fingerprint() -> str:
  """Short hash of the host CPU's SIMD feature flags (Linux /proc/cpuinfo; "unknown" elsewhere).

  XLA's CPU code depends on them: the same jax version can round differently on another CPU."""
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:
    return "unknown"
  line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
  flags = sorted(f for f in line.split(":", 1)[-1].split()
                 if any(s in f for s in ("sse", "avx", "fma", "amx")))
  return hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]


def environment() -> dict[str, Any]:
  """Backend, device kind, CPU count, library versions, date and load: stored with results."""
  dev = jax.devices()[0]
  return dict(
      backend=jax.default_backend(),
      device_kind=dev.device_kind,
      num_devices=jax.device_count(),
      cpu_count=os.cpu_count(),
      machine=platform.machine(),
      processor=platform.processor(),
      cpu_fingerprint=cpu_fingerprint(),
      python=platform.python_version(),
      jax=jax.__version__,
      jaxlib=_version("jaxlib"),
      flax=_version("flax"),
      optax=_version("optax"),
      numpy=np.__version__,
      torch=_version("torch"),
      xla_flags=os.environ.get("XLA_FLAGS", ""),
      omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
      torch_threads=_torch_threads(),
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      load_average=load_average(),
  )


def parser(doc: str | None) -> argparse.ArgumentParser:
  """Argument parser with the flags every benchmark takes."""
  p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
  p.add_argument("--rounds", type=int, default=None, help="timed rounds (median reported)")
  p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/...)")
  return p


def out_path(name: str, out: str | None = None, quick: bool = False) -> Path:
  """``out`` or benchmarks/results/<name>_<backend>[_quick].json."""
  if out:
    return Path(out)
  return RESULTS_DIR / f"{name}_{jax.default_backend()}{'_quick' if quick else ''}.json"


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
  """Writes ``obj`` as JSON atomically (temporary file + os.replace); returns the path."""
  io_lib.write_json(path, obj)
  return Path(path)


def time_once(fn: Callable[[], Any]) -> float:
  """Wall time of one call of ``fn`` (its result is waited for)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def interleaved(fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
  """Times every callable ``rounds`` times, round-robin, after ``warmup`` untimed calls each.

  Returns name -> list of seconds (in round order). ``rounds`` must be >= 1.
  """
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}")
  for name, fn in fns.items():
    for _ in range(warmup):
      t = time_once(fn)
      if log:
        log(f"  warm-up {name}: {t:.2f} s")
  times: dict[str, list[float]] = {name: [] for name in fns}
  for r in range(rounds):
    for name, fn in fns.items():
      times[name].append(time_once(fn))
    if log:
      log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.2f}s" for n, v in times.items()))
  return times


def timing_summary(seconds: Sequence[float]) -> dict[str, Any]:
  """Median, min, max and every sample of a list of times."""
  return dict(median_s=float(statistics.median(seconds)), min_s=float(min(seconds)),
              max_s=float(max(seconds)), samples_s=[float(s) for s in seconds])


def mnist_binary(n_train: int | None = None, n_test: int | None = None,
                 synthetic: bool = False, seed: int = 0):
  """MNIST 0-4 vs 5-9 ([n, 28, 28, 1] float32 in [0, 1], 2 classes) and where it came from.

  Real data comes from the offline IDX files (``datasets.shared_data_dir()``); without them, or
  with ``synthetic=True``, random images of the same shape and dtype with a learnable label
  (mean brightness above the median) are returned, which time exactly like the real ones.
  Returns ``(dataset, source)`` with source "mnist" or "synthetic".
  """
  from sgd_phases import datasets  # local import: pulls in tfds

  root = datasets.shared_data_dir()
  if not synthetic and root is not None and (root / "mnist").is_dir():
    cfg = datasets.default_config("mnist")
    cfg.data_dir = str(root / "mnist")
    cfg.train_size, cfg.test_size = n_train, n_test
    return datasets.get_dataset(cfg), "mnist"
  rng = np.random.default_rng(seed)
  n_train, n_test = n_train or 60_000, n_test or 10_000
  x = rng.random((n_train + n_test, 28, 28, 1), dtype=np.float32)
  m = x.mean(axis=(1, 2, 3))
  y = (m > np.median(m)).astype(np.int32)
  ds = datasets.Dataset(x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:],
                        y_test=y[n_train:], y_train_clean=y[:n_train], y_test_clean=y[n_train:],
                        num_classes=2, name="synthetic_mnist_shape")
  return ds, "synthetic"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """Plain-text table of ``columns`` (floats with 3 significant digits)."""
  def fmt(v: Any) -> str:
    if isinstance(v, float):
      return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)

  cells = [[fmt(r.get(c)) for c in columns] for r in rows]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
  line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
  return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])
