"""Figure 3: I(F;Y) = 1 − h(a) bits for unbiased binary F, Y with accuracy a = P[F = Y].

No training. For each accuracy a we build predictions that are *exactly* balanced with
symmetric errors (N/2 examples per class, round(a·N/2) of each class predicted correctly), so
the plug-in estimate of ``mutual_info.information_measures`` must sit on the curve 1 − h(a);
optionally also i.i.d. random draws (Y ~ Bernoulli(½), F = Y flipped w.p. 1 − a) that show the
finite-sample spread. Writes ``workdir/mi_vs_accuracy.npz``, ``summary.json`` and
``figures/mi_vs_accuracy.png``.

    python -m experiments.mi_vs_accuracy --workdir=/tmp/fig3          # ~5 s on CPU
    python -m experiments.mi_vs_accuracy --workdir=/tmp/fig3q \\
        --config=experiments/mi_vs_accuracy.py:quick
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import cli, io_lib, mutual_info, plotting

NAME = "mi_vs_accuracy"
POINTS_FILE = "mi_vs_accuracy.npz"
PAPER_TABLE = {0.5: 0.0, 0.6: 0.029, 0.7: 0.119, 0.8: 0.278, 0.9: 0.531, 0.95: 0.714,
               0.99: 0.919, 1.0: 1.0}  # Figure 3 values (paper.md), bits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config; ``arg="quick"`` uses fewer examples and random draws."""
  quick = "quick" in cli.parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.experiment = NAME             # experiment name (recorded in summary.json)
  c.quick = quick                 # shrunken settings for tests / smoke runs
  # Accuracies of the exactly balanced points (each a·num_examples/2 should be an integer).
  c.accuracies = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
  c.num_examples = 20_000 if quick else 200_000  # N of the exact points (even)
  c.num_random_draws = 3 if quick else 20        # random-draw points per accuracy (0 = none)
  c.random_num_examples = 2_000 if quick else 10_000  # N of each random draw (a test set size)
  c.curve_points = 201            # resolution of the drawn curve 1 − h(a) on [0.5, 1]
  c.seed = 0                      # numpy seed of the random draws
  return c


def binary_entropy(a: np.ndarray) -> np.ndarray:
  """h(a) = −a log2 a − (1−a) log2 (1−a) in bits (0 log 0 = 0), float64."""
  a = np.asarray(a, dtype=np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    t = lambda p: np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return t(a) + t(1.0 - a)


def exact_predictions(a: float, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(f, y) int32 [n]: n/2 per class, round(a·n/2) of each class correct (symmetric errors)."""
  half = n // 2
  correct = int(round(a * half))
  y = np.repeat(np.array([0, 1], np.int32), half)
  f = y.copy()
  for cls in (0, 1):  # the first (half − correct) examples of each class are wrong
    idx = np.flatnonzero(y == cls)[: half - correct]
    f[idx] = 1 - cls
  return f, y


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """No engine run (the points are built, not trained); bad fields are refused."""
  acc = np.asarray(config.accuracies, dtype=np.float64)
  if acc.ndim != 1 or acc.size == 0 or np.any(acc < 0.5) or np.any(acc > 1.0):
    raise ValueError(f"config.accuracies must be a non-empty list in [0.5, 1], got "
                     f"{list(config.accuracies)}")
  for f in ("num_examples", "random_num_examples", "curve_points"):
    if not isinstance(config[f], int) or config[f] < 2:
      raise ValueError(f"config.{f} must be an int >= 2, got {config[f]!r}")
  if config.num_examples % 2:
    raise ValueError(f"config.num_examples must be even, got {config.num_examples}")
  if not isinstance(config.num_random_draws, int) or config.num_random_draws < 0:
    raise ValueError(f"config.num_random_draws must be an int >= 0, got "
                     f"{config.num_random_draws!r}")
  return []


def _measure(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(I(F;Y), P[F=Y]) of rows f [..., N] against y [..., N] (L := Y; I(F;Y) ignores L)."""
  m = mutual_info.information_measures(f, y, y, 2)
  return np.asarray(m.i_fy, np.float64), np.asarray(m.acc_f, np.float64)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Measures the points, writes the npz, summary.json and the figure; returns the summary."""
  config, started = common.begin(config, workdir, runs=engine_runs)  # checked, claimed
  workdir_p = io_lib.path(workdir)
  acc = np.asarray(config.accuracies, dtype=np.float64)
  pairs = [exact_predictions(a, config.num_examples) for a in acc]
  mi, measured_acc = _measure(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
  half = config.num_examples // 2
  realised = np.round(acc * half) / half  # the exact accuracy of the constructed points
  theory = 1.0 - binary_entropy(realised)
  grid = np.linspace(0.5, 1.0, config.curve_points)
  arrays = {"accuracies": realised, "measured_acc": measured_acc, "measured_mi": mi,
            "theory_mi": theory, "acc_grid": grid, "curve": 1.0 - binary_entropy(grid)}
  if config.num_random_draws:
    rng = np.random.default_rng(config.seed)
    shape = (acc.size, config.num_random_draws, config.random_num_examples)
    y = rng.integers(0, 2, size=shape, dtype=np.int32)
    wrong = rng.random(shape) >= acc[:, None, None]
    f = np.where(wrong, 1 - y, y).astype(np.int32)
    arrays["random_mi"], arrays["random_acc"] = _measure(f, y)
  io_lib.write_npz(workdir_p / POINTS_FILE, arrays)
  err = np.abs(mi - theory)
  summary: dict[str, Any] = {
      "experiment": NAME,
      "max_abs_error_bits": float(err.max()),
      "table": [{"accuracy": float(a), "measured_acc": float(ma), "measured_mi": float(m),
                 "one_minus_h": float(t), "paper": PAPER_TABLE.get(round(float(a), 4))}
                for a, ma, m, t in zip(acc, measured_acc, mi, theory)],
      "num_examples": int(config.num_examples),
  }
  if "random_mi" in arrays:
    dev = arrays["random_mi"] - (1.0 - binary_entropy(acc))[:, None]
    summary["random_draws"] = {
        "num_draws": int(config.num_random_draws), "num_examples": int(config.random_num_examples),
        "mean_bias_bits": [float(v) for v in dev.mean(axis=1)],
        "std_bits": [float(v) for v in arrays["random_mi"].std(axis=1, ddof=1)]
        if config.num_random_draws > 1 else None}
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """``figures/mi_vs_accuracy.png`` from ``mi_vs_accuracy.npz`` (no recomputation)."""
  a = io_lib.read_npz(io_lib.path(workdir) / POINTS_FILE)
  fig = plotting.plot_mi_vs_accuracy(a["acc_grid"], a["curve"], a["measured_acc"],
                                     a["measured_mi"])
  if "random_mi" in a:
    ax = fig.axes[0]
    ax.scatter(a["random_acc"].ravel(), a["random_mi"].ravel(), s=5, color="tab:blue",
               alpha=0.4, zorder=2, label="random draws")
    ax.legend(fontsize=7, frameon=False)
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / "mi_vs_accuracy.png")]


if __name__ == "__main__":
  cli.main(__file__, run)
