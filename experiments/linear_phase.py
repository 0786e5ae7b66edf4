"""Figure 4 of the paper: the linear phase, I(F_t;Y) and μ_Y(F_t;L) over training.

F is a network trained by SGD on a binary task; L is a linear classifier (softmax regression on
the raw inputs) trained on the same true labels, once per seed. Early in training μ_Y(F_t;L) ≈
I(F_t;Y): almost all of what F knows about Y is what L knows. T_0 (end of the linear phase) is
the first evaluation where acc(F_t) ≥ acc(L); we report μ_Y(F_T0;L)/I(F_T0;Y) with a 95% CI
over seeds (``analysis.headline``), the step where μ first drops below 0.9·I(F_t;Y), and the
smallest ratio seen before T_0.

Tasks (``get_config("<task>[,quick]")``; binary tasks are classes 0–4 vs 5–9):

========================  ==========================================  ============================
task                      F                                           CPU runtime (2 cores, 5 seeds)
========================  ==========================================  ============================
sinusoid_hd (default)     MLP 256×2 on the 50-d sinusoid (synthetic)  ~4 min (1.5 min CPU time)
mnist_mlp / fashion_mlp   MLP 512×2, lr 0.05, batch 64, 10k steps    ~11 min (5.5 min CPU time)
mnist_cnn                 paper_cnn, SGD lr 0.05, batch 64, 1k steps  ~13 min (7.5 min CPU time)
fashion_cnn               paper_cnn, same, 4000 steps                 ~20 min (19 min CPU time)
cifar10_vgg               vgg11, SGD lr 0.05 momentum 0.9, batch 128  GPU; not measured (no GPU)
cifar10_resnet            resnet20, same optimizer, 20k steps         GPU; not measured (no GPU)
========================  ==========================================  ============================

Runtimes are wall clock on a 2-core CPU shared with other jobs (CPU time in brackets).
The reproduction hint for the MNIST CNN (plain SGD, lr 0.001, batch 64, 50 epochs) learns far
too slowly for a CPU budget; we use lr 0.05, which reaches ~97% test accuracy on MNIST 0–4 vs
5–9 within 1000 steps (~1 epoch; measured on 1 seed: 51% at step 52, 93% at 373, 97.5% at 1000).
On Fashion-MNIST the same network is still below the linear classifier (89.4% vs 91.2%) after
1000 steps, so T_0 is never reached there; ``fashion_cnn`` therefore trains for 4000 steps.
On a GPU use e.g. ``--config.num_steps=47000`` (50 epochs). paper_cnn runs are evaluated 30 times
on a balanced 5000-example test subset (``cpu_eval_budget``). MNIST / Fashion-MNIST are read from
``datasets.shared_data_dir()`` when that folder exists (offline IDX files), else through the
normal TFDS download. CIFAR-10 needs TFDS (download) and is meant for a GPU/TPU (the engine has
no data augmentation); it is tested on mock data only.

    python -m experiments.linear_phase --workdir=runs/linear_phase_sinusoid
    python -m experiments.linear_phase --workdir=runs/lp_mnist_mlp \\
        --config=experiments/linear_phase.py:mnist_mlp --config.num_seeds=5
    python -m experiments.linear_phase --workdir=/tmp/lpq --config=experiments/linear_phase.py:quick

Writes the engine's files (results.npz, config.json, ...), ``summary.json`` and
``figures/linear_phase.png`` (``make_figures(workdir)`` redraws it from results.npz).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import analysis, cli, config_lib, datasets, io_lib, plotting, stats

NAME = "linear_phase"
DEFAULT_TASK = "sinusoid_hd"
# task -> (dataset, model, model kwargs, learning rate, momentum, batch size, F steps, L steps)
TASKS: dict[str, tuple[str, str, dict[str, Any], float, float, int, int, int]] = {
    "sinusoid_hd": ("sinusoid_hd", "mlp", dict(width=256, depth=2), 0.05, 0.0, 64, 20_000, 10_000),
    "mnist_mlp": ("mnist", "mlp", dict(width=512, depth=2), 0.05, 0.0, 64, 10_000, 10_000),
    "fashion_mlp": ("fashion_mnist", "mlp", dict(width=512, depth=2), 0.05, 0.0, 64, 10_000,
                    10_000),
    "mnist_cnn": ("mnist", "paper_cnn", {}, 0.05, 0.0, 64, 1_000, 10_000),
    "fashion_cnn": ("fashion_mnist", "paper_cnn", {}, 0.05, 0.0, 64, 4_000, 10_000),
    "cifar10_vgg": ("cifar10", "vgg11", {}, 0.05, 0.9, 128, 20_000, 20_000),
    "cifar10_resnet": ("cifar10", "resnet20", {}, 0.05, 0.9, 128, 20_000, 20_000),
}
LINEAR_LR = 0.05  # learning rate of L (softmax regression; inputs in [0, 1] or unit variance)


def offline_data_dir(dataset: str) -> str | None:
  """The shared IDX folder for mnist / fashion_mnist if present, else None (TFDS download)."""
  root = datasets.shared_data_dir()
  if dataset in ("mnist", "fashion_mnist") and root is not None and (root / dataset).is_dir():
    return str(root / dataset)
  return None


def parse_task(arg: str | None, tasks: Any, default: str) -> tuple[str, bool]:
  """``"mnist_mlp,quick"`` -> ("mnist_mlp", True); one ValueError naming a bad task."""
  parts = cli.parse_arg(arg)
  quick = "quick" in parts
  names = sorted(parts - {"quick"})
  if len(names) > 1 or (names and names[0] not in tasks):
    raise ValueError(f"config arg {arg!r}: task must be one of {sorted(tasks)} (plus ',quick')")
  return (names[0] if names else default), quick


def cpu_eval_budget(c: ml_collections.ConfigDict) -> None:
  """CNNs on a 2-core CPU: 30 evaluations on a balanced 5000-example test subset (MI bias at
  K = 2 is ~1e-4 bits) and 1000 train examples for train accuracy."""
  c.dataset.test_size = 5000
  c.eval.num_points = 30
  c.eval.train_eval_size = 1000


def task_config(task: str, quick: bool) -> ml_collections.ConfigDict:
  """The training config of one task of Figure 4, with the linear reference L."""
  if task not in TASKS:
    raise ValueError(f"task={task!r} is not one of {sorted(TASKS)}")
  dataset, model, kw, lr, momentum, batch, steps, l_steps = TASKS[task]
  c = config_lib.base_config(dataset, model, **kw)
  if dataset in ("mnist", "fashion_mnist"):
    c.dataset.data_dir = offline_data_dir(dataset)
  c.optimizer.learning_rate = lr
  c.optimizer.momentum = momentum
  c.batch_size = batch
  c.num_steps = steps
  c.num_seeds = 5
  c.references.linear = config_lib.reference_config(
      "linear", trained_on="labels", num_steps=l_steps, batch_size=64, learning_rate=LINEAR_LR)
  c.t0.reference = "linear"
  if model == "paper_cnn":  # CPU budget: fewer, cheaper evaluations on a 5000-example test set
    cpu_eval_budget(c)
  if quick:  # seconds on CPU: small data, few steps, two seeds
    common.quick_budget(c, 600, max(lr, 0.1))
    c.references.linear.num_steps = 150
    if dataset == "sinusoid_hd":  # 10-d: an MLP beats L within a few hundred steps
      c.dataset.n_train, c.dataset.n_test, c.dataset.dim = 2000, 1000, 10
      c.optimizer.learning_rate = 0.2
    else:
      c.dataset.train_size, c.dataset.test_size = 1000, 1000
    if model == "mlp":
      c.model_kwargs.width = 64
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Config of Figure 4 for one task: ``arg`` = "<task>[,quick]" (see the module docstring)."""
  task, quick = parse_task(arg, TASKS, DEFAULT_TASK)
  c = task_config(task, quick)
  c.experiment = NAME               # recorded in summary.json (make_figures dispatches on it)
  c.task = task                     # which row of TASKS this config came from
  c.quick = quick                   # shrunken settings for tests / smoke runs
  c.min_bits = 0.05                 # ratios μ/I before T_0 only where I(F_t;Y) > min_bits
  return c


def early_ratio_min(mu: np.ndarray, i_fy: np.ndarray, t0: np.ndarray, min_bits: float
                    ) -> np.ndarray:
  """Per seed: min of μ/I(F_t;Y) over evaluations t ≤ T_0 with I > min_bits (NaN if none)."""
  e = np.arange(mu.shape[1])[None, :]
  ok = (e <= t0[:, None]) & (i_fy > min_bits) & (t0[:, None] >= 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    ratio = np.where(ok, mu / np.where(ok, i_fy, 1.0), np.inf)
  out = ratio.min(axis=1)
  return np.where(np.isfinite(out), out, np.nan)


def summarize_run(results: Any, reference: str, min_bits: float) -> dict[str, Any]:
  """Headline numbers of a run against ``reference`` (the fields of ``analysis.headline``
  and a few more; means with 95% CIs over seeds)."""
  a = results.arrays
  m = results.measures(reference)
  t0 = a["t0_index"]
  dep = np.asarray(stats.departure_index(m["mu"], m["i_fy"], delta=0.1, floor=min_bits))
  return {
      "t0_found": int((t0 >= 0).sum()),
      **analysis.headline(results, reference),
      "mu_over_i_min_before_t0": stats.summarize(early_ratio_min(m["mu"], m["i_fy"], t0, min_bits)),
      "departure_step": stats.summarize(np.where(dep >= 0, a["steps"][np.maximum(dep, 0)], np.nan)),
      "i_fy_at_t0": stats.summarize(stats.at_index(m["i_fy"], t0)),
      "test_acc_at_t0": stats.summarize(stats.at_index(a["test_acc"], t0)),
  }


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains F and L for every seed, writes summary.json and the figure; returns the summary."""
  from sgd_phases import train_lib  # local import: keeps `get_config` light for config_flags

  results = train_lib.train(config, workdir)
  summary: dict[str, Any] = {
      **common.header(NAME, config, results),
      **summarize_run(results, "linear", float(config.min_bits)),
  }
  return common.finish(workdir, summary, make_figures)


def make_figures(workdir: str) -> list[str]:
  """Redraws ``figures/linear_phase.png`` from ``results.npz`` (and config.json for the title)."""
  res = analysis.load(workdir)
  a = res.arrays
  m = res.measures("linear")
  cfg = io_lib.read_json(Path(workdir) / io_lib.CONFIG_FILE)
  title = f"{cfg.get('task', cfg['dataset']['name'])}: {cfg['model']}, {len(a['seed_ids'])} seeds"
  fig = plotting.plot_linear_phase(a["steps"], m["i_fy"], m["mu"], m["i_ly"][:, -1],
                                   a["test_acc"], a["ref/linear/test_acc"],
                                   t0_steps=a["t0_step"], title=title, mu_null=res.null("linear"))
  return [plotting.save_figure(fig, Path(workdir) / "figures" / f"{NAME}.png")]


if __name__ == "__main__":
  cli.main(__file__, run)
