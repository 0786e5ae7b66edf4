"""Does F first learn low-order statistics? Accuracy on moment-matched surrogate test sets.

Belrose et al. (ICML 2024, "Neural Networks Learn Statistics of Increasing Complexity") report
that early in training networks classify maximum-entropy surrogates that match only the
class-conditional mean and covariance of the data nearly as well as real data, and lose that
ability later. Here every evaluation of F also records its predictions on two fixed surrogate
test sets built from the training set (``sgd_phases.surrogates``, on device like the test set):
``gaussian`` (N(μ_c, Σ_c) per class c, clipped to the input range) and ``first_moment``
(N(μ_c, σ_c² I)). L, the linear classifier of the paper, is scored on them too, so
μ_Y(F_t;L) is also measured on the surrogates.

Per surrogate, with 95% CIs over seeds: the peak surrogate accuracy and its step, where that
step sits relative to T_0 (the paper's end of the linear phase, acc(F_t) ≥ acc(L) on the real
test set): the per-seed ratio peak step / T_0 and how many seeds peak before T_0, the accuracy
at T_0 and at the end, the drop from the peak (paired per seed), the real test accuracy at the
surrogate peak, and μ/I(F;Y) on the surrogate at T_0 (read it with L's own accuracy on the
surrogate, ``acc_l``: where L is at chance there, μ is ~0 whatever F does).

Tasks (``get_config("<task>[,quick]")``): ``mnist_mlp`` and ``fashion_mlp`` (0–4 vs 5–9, MLP
512×2, SGD lr 0.05, 10k steps, 5 seeds; the linear_phase settings) with 10,000 inputs per
surrogate; ``sinusoid_hd`` (synthetic, default without the offline data); ``quick``: seconds.

    python -m experiments.low_order_statistics --workdir=runs/los_mnist \\
        --config=experiments/low_order_statistics.py:mnist_mlp
    python -m experiments.low_order_statistics --workdir=/tmp/losq \\
        --config=experiments/low_order_statistics.py:quick

Writes the engine's files (``surrogate/<kind>/...`` arrays in results.npz), ``summary.json`` and
``figures/low_order_statistics.png``.
"""

from __future__ import annotations

import functools
from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import cli, config_lib, io_lib, plotting, stats
from sgd_phases import results as results_lib

NAME = "low_order_statistics"
_MLP = {"width": 512, "depth": 2}
TASKS: dict[str, common.Task] = {
    "mnist_mlp": common.Task("mnist", "mlp", 10_000, 0.05, _MLP),
    "fashion_mlp": common.Task("fashion_mnist", "mlp", 10_000, 0.05, _MLP),
    "sinusoid_hd": common.Task("sinusoid_hd", "mlp", 20_000, 0.05, {"width": 256, "depth": 2}),
}
LABELS = {"gaussian": "Gaussian surrogate (μ_c, Σ_c)", "first_moment": "first moment (μ_c, σ_c²I)"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Config: ``arg`` = "<task>[,quick]" (see the module docstring)."""
  task, quick = common.parse_task(arg, TASKS, common.mnist_or_synthetic())
  c = common.task_base_config(TASKS[task])
  common.add_linear_reference(c)
  c.eval.surrogates = config_lib.surrogate_config(size=10_000, seed=0)
  c.experiment = NAME               # recorded in summary.json (make_figures dispatches on it)
  c.task = task                     # which row of TASKS this config came from
  c.quick = quick                   # shrunken settings for tests / smoke runs
  if quick:  # seconds on CPU
    common.quick_budget(c, 600, 0.1)
    c.references.linear.num_steps = 150
    c.model_kwargs.width = 64
    c.eval.surrogates.size = 1000
    common.quick_data(c, n_train=1000)
  return c


def surrogate_summary(steps: np.ndarray, acc: np.ndarray, test_acc: np.ndarray,
                      t0: np.ndarray, mu: np.ndarray, i_fy: np.ndarray) -> dict[str, Any]:
  """The headlines of one surrogate from per-seed curves [S, E] and T_0 indices [S] (−1: never)."""
  peak = np.argmax(acc, axis=1)
  rows = np.arange(len(peak))
  reached = t0 >= 0
  t0_step = stats.step_at(steps, t0)
  peak_step = steps[peak].astype(np.float64)
  ratio = stats.ratio(peak_step, t0_step)
  return {
      "acc_peak": stats.summarize(acc[rows, peak], bounded=True),
      "peak_step": stats.summarize(peak_step, bounded=True),
      "peak_step_over_t0": stats.summarize(ratio, bounded=True),
      "peaks_before_t0": int(np.sum(reached & (peak_step < t0_step))),
      "acc_at_t0": stats.summarize(stats.at_index(acc, t0), bounded=True),
      "acc_end": stats.summarize(acc[:, -1], bounded=True),
      "drop_from_peak": stats.summarize(acc[rows, peak] - acc[:, -1]),
      "test_acc_at_peak": stats.summarize(test_acc[rows, peak], bounded=True),
      "mu_over_i_at_t0": stats.summarize(stats.ratio_at(mu, i_fy, t0), bounded=True),
  }


def run(config: ml_collections.ConfigDict, workdir: str, *,
        dataset: Any = None, trained_f: Any = None) -> dict[str, Any]:
  """Trains F and L for every seed with the surrogate sets recorded; summary.json + figure."""
  config, started = common.begin(config, workdir, dataset)  # fingerprints pinned, workdir claimed
  from sgd_phases import train_lib  # local import: keeps `get_config` light for config_flags

  res = train_lib.train(config, workdir, trained_f=trained_f)
  a = res.arrays
  summary: dict[str, Any] = {
      **common.header(NAME, config, res),
      "t0_step": stats.summarize(np.where(a["t0_index"] >= 0, a["t0_step"], np.nan), bounded=True),
      "test_acc_end": stats.summarize(a["test_acc"][:, -1], bounded=True),
      "acc_l": stats.summarize(res.reference("linear", "test_acc"), bounded=True),
      "surrogate_size": int(config.eval.surrogates.size),
  }
  for kind in config.eval.surrogates.kinds:
    key = functools.partial(results_lib.surrogate_key, kind)
    summary[kind] = surrogate_summary(
        a["steps"], a[key("acc")], a["test_acc"], a["t0_index"],
        a[key("mi", "linear", "mu")], a[key("mi", "linear", "i_fy")])
    summary[kind]["acc_l"] = stats.summarize(  # L (trained to the end) on the surrogate
        (a[key("ref", "linear", "predictions")] == a[key("labels")]).mean(axis=-1),
        bounded=True)
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """Redraws ``figures/low_order_statistics.png`` from results.npz (and config.json)."""
  res, cfg = common.load_run(workdir)
  a = res.arrays
  kinds = list(cfg["eval"]["surrogates"]["kinds"])

  def ratio(m: dict[str, np.ndarray]) -> np.ndarray:  # μ/I(F;Y), undefined where I(F;Y) = 0
    return m["mu"] / np.where(m["i_fy"] > 0, m["i_fy"], np.nan)

  def surrogate(kind: str) -> dict[str, np.ndarray]:
    return {f: a[results_lib.surrogate_key(kind, "mi", "linear", f)] for f in ("mu", "i_fy")}

  title = f"{cfg.get('task', cfg['dataset']['name'])}: {cfg['model']}, {len(a['seed_ids'])} seeds"
  fig = plotting.plot_surrogates(
      a["steps"], {"test set": a["test_acc"],
                   **{LABELS.get(k, k): a[results_lib.surrogate_key(k, "acc")] for k in kinds}},
      {"test set": ratio(res.measures("linear")),
       **{LABELS.get(k, k): ratio(surrogate(k)) for k in kinds}},
      acc_l=res.reference("linear", "test_acc"), t0_steps=a["t0_step"], title=title)
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"{NAME}.png")]


if __name__ == "__main__":
  cli.main(__file__, run)
