"""Figure 5 of the paper: μ_Y(F_t;G_i) against a ladder of classifiers of increasing complexity.

F is a deep network trained by SGD on a binary task (classes 0–4 vs 5–9). The references are
G_0 = ``linear`` and G_i = a network with i layers (``cnn1`` … ``cnnk`` on images, ``mlp1`` …
``mlpk`` = MLPs with i hidden layers on the synthetic vector task), each trained per seed by the
engine on the true labels (default) or on F's final train-set predictions
(``references_trained_on="final_predictions"``, as in the CIFAR reproduction). The paper's claim:
each μ_Y(F_t;G_i) follows I(F_t;Y) early and then plateaus, the simpler G_i first. We report the
plateau step of every curve (``stats.plateau_index``: first evaluation within ``plateau_tol`` of
the curve's rise from its maximum, after a running median of ``plateau_smooth`` points), each
G_i's test accuracy, and whether the plateaus come in order of complexity: the means over seeds
(``plateaus_in_order``) and the fraction of (seed, i < j) pairs with plateau_i ≤ plateau_j (and
with plateau_i < plateau_j: on a coarse evaluation grid several rungs often tie).

Tasks (``get_config("<task>[,quick]")``):

============  ====================================  ===================  ========================
task          F                                     ladder               CPU runtime (2 cores)
============  ====================================  ===================  ========================
mnist         cnn6 (16 ch), SGD lr 0.05, 1000 steps linear, cnn1..cnn4   ~20 min (8 min CPU time)
fashion       cnn6 (16 ch), SGD lr 0.05, 1000 steps linear, cnn1..cnn4   ~20 min (not run)
sinusoid_hd   MLP 256×4, SGD lr 0.05, 20k steps     linear, mlp1..mlp3   ~5 min (4 min CPU time)
cifar10       vgg11, SGD lr 0.05 momentum 0.9, 20k  linear, cnn1..cnn4   GPU; not measured
============  ====================================  ===================  ========================

Runtimes: 5 seeds, wall clock on a 2-core CPU shared with other jobs (CPU time in brackets).

On MNIST / Fashion-MNIST F = cnn6 is the top of the same CNN family as the rungs (G_i ⊂ F), with
16 channels everywhere (``ladder_channels``) to fit a 2-core CPU budget; each rung is trained for
as many steps as F. On CIFAR-10 the rungs keep 32 channels and F is VGG-11.

The default task is ``mnist`` when the offline MNIST files exist (``datasets.shared_data_dir()``),
else ``sinusoid_hd`` (no download). ``k``, the reference budget and ``references_trained_on``
are config fields; the references are built from them in ``run`` (so ``--config.k=3`` works).

    python -m experiments.complexity_ladder --workdir=runs/ladder_mnist --config.num_seeds=5
    python -m experiments.complexity_ladder --workdir=/tmp/lq \\
        --config=experiments/complexity_ladder.py:sinusoid_hd,quick

Writes the engine's files, ``summary.json`` (with the soft measures against every rung and F as
a mixture of the rungs: ``soft``) and ``figures/complexity_ladder.png``,
``complexity_ladder_soft.png``, ``complexity_ladder_mixture.png``.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import cli, config_lib, io_lib, plotting, soft_scoring, stats

NAME = "complexity_ladder"
TASKS: dict[str, common.Task] = {
    "mnist": common.Task("mnist", "cnn6", 1_000, 0.05, dict(channels=16), ladder="cnn", k=4),
    "fashion": common.Task("fashion_mnist", "cnn6", 1_000, 0.05, dict(channels=16),
                           ladder="cnn", k=4),
    "sinusoid_hd": common.Task("sinusoid_hd", "mlp", 20_000, 0.05, dict(width=256, depth=4),
                               ladder="mlp", k=3),
    "cifar10": common.Task("cifar10", "vgg11", 20_000, 0.05, momentum=0.9, batch_size=128,
                           ladder="cnn", k=4),
}


def default_task() -> str:
  """``mnist`` when the offline MNIST files are present, else the synthetic ``sinusoid_hd``."""
  return "mnist" if common.offline_data_dir("mnist") else "sinusoid_hd"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Config of Figure 5: ``arg`` = "<task>[,quick]" (see the module docstring)."""
  task, quick = common.parse_task(arg, TASKS, default_task())
  t = TASKS[task]
  dataset, kw, lr, momentum, steps, family = (t.dataset, t.model_kwargs, t.learning_rate,
                                              t.momentum, t.num_steps, t.ladder)
  c = common.task_base_config(t)
  c.t0.reference = "linear"         # T_0 from the linear rung (as in Figure 4)
  c.experiment = NAME               # recorded in summary.json (make_figures dispatches on it)
  c.task = task                     # which row of TASKS this config came from
  c.quick = quick                   # shrunken settings for tests / smoke runs
  c.ladder = family                 # cnn: G_i = cnn{i}; mlp: G_i = MLP with i hidden layers
  c.k = t.k                         # rungs G_1..G_k (plus G_0 = linear)
  c.ladder_width = 256              # hidden width of the mlp rungs (ignored for cnn)
  c.ladder_channels = kw.get("channels", 32)  # conv channels of the cnn rungs (ignored for mlp)
  c.references_trained_on = "labels"  # labels | final_predictions (F_T's train predictions)
  c.reference_steps = steps if family == "cnn" else 10_000  # SGD steps of every rung
  c.linear_steps = 10_000           # SGD steps of G_0 = linear (cheap; converges slowly)
  c.reference_batch_size = 64
  c.reference_learning_rate = 0.05
  c.reference_momentum = momentum   # momentum of the rungs' SGD
  c.plateau_tol = 0.05              # plateau: first point within tol·rise of the curve's max
  c.plateau_smooth = 3              # running-median window before the plateau search
  if dataset in ("mnist", "fashion_mnist"):  # CPU budget: fewer, cheaper evaluations
    common.cpu_eval_budget(c)
  if quick:  # seconds on CPU
    common.quick_budget(c, 300, max(lr, 0.05))
    c.k = 2
    c.reference_steps = 150
    c.linear_steps = 150
    c.ladder_width = 32
    if dataset == "sinusoid_hd":
      c.dataset.n_train, c.dataset.n_test, c.dataset.dim = 2000, 1000, 10
      c.model_kwargs.width = 64
    else:
      c.dataset.train_size, c.dataset.test_size = 1000, 1000
  return c


def rung_names(config: ml_collections.ConfigDict) -> list[str]:
  """Reference names in complexity order: linear, then cnn1..cnnk or mlp1..mlpk."""
  if config.ladder not in ("cnn", "mlp"):
    raise ValueError(f"config.ladder: {config.ladder!r} not in ('cnn', 'mlp')")
  if not isinstance(config.k, int) or not 1 <= config.k <= 6:
    raise ValueError(f"config.k: must be an int in [1, 6], got {config.k!r}")
  return ["linear"] + [f"{config.ladder}{i}" for i in range(1, config.k + 1)]


def complexity_order(names: list[str]) -> list[str]:
  """``linear`` first, then rungs by their layer count (ConfigDict keys come back sorted)."""
  def key(name: str) -> tuple[int, str]:
    digits = name.lstrip("abcdefghijklmnopqrstuvwxyz_")
    return (0 if name == "linear" else 1 + int(digits) if digits.isdigit() else 99, name)
  return sorted(names, key=key)


def training_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``references`` built from the ladder fields."""
  c = config.copy_and_resolve_references()
  c.unlock()
  c.references = ml_collections.ConfigDict()
  for name in rung_names(config):
    model, kw = name, {}
    if name.startswith("mlp"):
      model, kw = "mlp", dict(width=config.ladder_width, depth=int(name[3:]))
    elif name != "linear":
      kw = dict(channels=config.ladder_channels)
    ref = config_lib.reference_config(
        model, trained_on=config.references_trained_on,
        num_steps=config.linear_steps if name == "linear" else config.reference_steps,
        batch_size=config.reference_batch_size, learning_rate=config.reference_learning_rate,
        **kw)
    ref.optimizer.momentum = config.reference_momentum if name != "linear" else 0.0
    c.references[name] = ref
  return c


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The one engine run (``training_config``; a bad ``ladder`` or ``k`` is refused)."""
  return [training_config(config)]


def summarize_ladder(results: Any, names: list[str], tol: float, smooth: int) -> dict[str, Any]:
  """Plateau steps, reference accuracies and the order check (means, 95% CIs over seeds)."""
  a = results.arrays
  steps = a["steps"]
  i_fy = results.measures(names[0])["i_fy"]
  plateau = {}
  rungs = []
  for name in names:
    mu = results.measures(name)["mu"]
    p = np.asarray(stats.plateau_index(mu, tol=tol, smooth=smooth))
    plateau[name] = stats.step_at(steps, p)
    rung = {"name": name,
            "test_acc": stats.summarize(results.reference(name, "test_acc"), bounded=True),
            "plateau_step": stats.summarize(plateau[name], bounded=True),
            "mu_end": stats.summarize(mu[:, -1]),
            "mu_max": stats.summarize(np.nanmax(mu, axis=1))}
    null = results.null(name)
    if null is not None:  # μ/I(F;Y) at the rung's plateau beside the F ⟂ G_i | Y null
      rung["plateau_mu_over_i_vs_null"] = stats.ratio_versus_null(
          stats.at_index(mu, p), stats.at_index(null, p), stats.at_index(i_fy, p))
    rungs.append(rung)
  p_i = np.asarray(stats.plateau_index(i_fy, tol=tol, smooth=smooth))
  means = [r["plateau_step"]["mean"] for r in rungs]
  ps = np.stack([plateau[n] for n in names], axis=1)  # [S, R]
  pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
  ordered = [ps[s, i] <= ps[s, j] for s in range(ps.shape[0]) for i, j in pairs]
  strict = [ps[s, i] < ps[s, j] for s in range(ps.shape[0]) for i, j in pairs]
  accs = [r["test_acc"]["mean"] for r in rungs]
  return {
      "rungs": rungs,
      "i_fy_plateau_step": stats.summarize(stats.step_at(steps, p_i), bounded=True),
      "plateau_step_means": dict(zip(names, means)),
      "plateaus_in_order": bool(np.all(np.diff(means) >= 0)),
      "pairwise_order_fraction": float(np.mean(ordered)) if ordered else float("nan"),
      # ties (same evaluation step) count above; this counts strictly earlier plateaus only
      "pairwise_strict_order_fraction": float(np.mean(strict)) if strict else float("nan"),
      "reference_acc_increasing": bool(np.all(np.diff(accs) >= 0)),
  }


def run(config: ml_collections.ConfigDict, workdir: str, *,
        dataset: Any = None, trained_f: Any = None) -> dict[str, Any]:
  """Trains F and every rung per seed; writes summary.json and the figure; returns the summary."""
  config, started = common.begin(config, workdir, dataset, runs=engine_runs)  # checked, claimed
  from sgd_phases import train_lib  # local import: keeps `get_config` light for config_flags

  names = rung_names(config)
  results = train_lib.train(training_config(config), workdir, trained_f=trained_f)
  summary: dict[str, Any] = {
      **common.header(NAME, config, results),
      "references_trained_on": config.references_trained_on,
      **summarize_ladder(results, names, float(config.plateau_tol), int(config.plateau_smooth)),
      "linear_phase": common.summarize_linear_phase(results, "linear", 0.05),
      **common.soft_summary(results, names),
  }
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """Redraws ``figures/complexity_ladder.png`` from results.npz and config.json."""
  res, cfg = common.load_run(workdir)
  a = res.arrays
  names = complexity_order(res.reference_names)
  mus, plateaus, nulls = {}, {}, {}
  for name in names:
    label = f"{name} (acc {np.mean(a[f'ref/{name}/test_acc']):.3f})"
    mus[label] = res.measures(name)["mu"]
    if res.null(name) is not None:
      nulls[label] = res.null(name)
    p = np.asarray(stats.plateau_index(mus[label], tol=cfg.get("plateau_tol", 0.05),
                                       smooth=cfg.get("plateau_smooth", 3)))
    plateaus[label] = stats.step_at(a["steps"], p, fill=-1)
  title = (f"{cfg.get('task', cfg['dataset']['name'])}: F={cfg['model']}, "
           f"{len(a['seed_ids'])} seeds, G_i on {cfg.get('references_trained_on', 'labels')}")
  fig = plotting.plot_ladder(a["steps"], res.measures(names[0])["i_fy"], mus,
                             plateau_steps=plateaus, title=title, nulls=nulls)
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"{NAME}.png"),
          *soft_scoring.figures(workdir, res, NAME, title, names)]


if __name__ == "__main__":
  cli.main(__file__, run)
