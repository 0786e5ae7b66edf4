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
mnist10_mlp               the same on all ten MNIST classes (K = 10;   ~8 min
                          L = softmax regression)
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
on a balanced 5000-example test subset (``common.cpu_eval_budget``). MNIST / Fashion-MNIST are
read from ``datasets.shared_data_dir()`` (offline IDX files) when that folder exists
(``common.offline_data_dir``), else through the normal TFDS download. CIFAR-10 needs TFDS
(download) and is meant for a GPU/TPU (the engine has no data augmentation); it is tested on
mock data only.

    python -m experiments.linear_phase --workdir=runs/linear_phase_sinusoid
    python -m experiments.linear_phase --workdir=runs/lp_mnist_mlp \\
        --config=experiments/linear_phase.py:mnist_mlp --config.num_seeds=5
    python -m experiments.linear_phase --workdir=/tmp/lpq --config=experiments/linear_phase.py:quick

Writes the engine's files (results.npz, config.json, ...), ``summary.json`` (with the soft
measures against L: ``soft``) and ``figures/linear_phase.png``, ``linear_phase_soft.png``,
``linear_phase_mixture.png`` (``make_figures(workdir)`` redraws them from results.npz).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from experiments import common
from sgd_phases import cli, io_lib, plotting, soft_scoring

NAME = "linear_phase"
DEFAULT_TASK = "sinusoid_hd"
_MLP = dict(width=512, depth=2)
TASKS: dict[str, common.Task] = {
    "sinusoid_hd": common.Task("sinusoid_hd", "mlp", 20_000, 0.05, dict(width=256, depth=2)),
    "mnist_mlp": common.Task("mnist", "mlp", 10_000, 0.05, _MLP),
    "mnist10_mlp": common.Task("mnist", "mlp", 10_000, 0.05, _MLP,
                               dataset_overrides={"classes": "all"}),
    "fashion_mlp": common.Task("fashion_mnist", "mlp", 10_000, 0.05, _MLP),
    "mnist_cnn": common.Task("mnist", "paper_cnn", 1_000, 0.05),
    "fashion_cnn": common.Task("fashion_mnist", "paper_cnn", 4_000, 0.05),
    "cifar10_vgg": common.Task("cifar10", "vgg11", 20_000, 0.05, momentum=0.9, batch_size=128,
                               reference_steps=20_000),
    "cifar10_resnet": common.Task("cifar10", "resnet20", 20_000, 0.05, momentum=0.9,
                                  batch_size=128, reference_steps=20_000),
}


def task_config(task: str, quick: bool) -> ml_collections.ConfigDict:
  """The training config of one task of Figure 4, with the linear reference L."""
  if task not in TASKS:
    raise ValueError(f"task={task!r} is not one of {sorted(TASKS)}")
  t = TASKS[task]
  dataset, model, lr = t.dataset, t.model, t.learning_rate
  c = common.task_base_config(t)
  common.add_linear_reference(c, t.reference_steps)
  if model == "paper_cnn":  # CPU budget: fewer, cheaper evaluations on a 5000-example test set
    common.cpu_eval_budget(c)
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
  task, quick = common.parse_task(arg, TASKS, DEFAULT_TASK)
  c = task_config(task, quick)
  c.experiment = NAME               # recorded in summary.json (make_figures dispatches on it)
  c.task = task                     # which row of TASKS this config came from
  c.quick = quick                   # shrunken settings for tests / smoke runs
  c.min_bits = 0.05                 # ratios μ/I before T_0 only where I(F_t;Y) > min_bits
  return c


def run(config: ml_collections.ConfigDict, workdir: str, *,
        dataset: Any = None, trained_f: Any = None) -> dict[str, Any]:
  """Trains F and L for every seed, writes summary.json and the figure; returns the summary."""
  config, started = common.begin(config, workdir, dataset)  # fingerprints pinned, workdir claimed
  from sgd_phases import train_lib  # local import: keeps `get_config` light for config_flags

  results = train_lib.train(config, workdir, trained_f=trained_f)
  summary: dict[str, Any] = {
      **common.header(NAME, config, results),
      **common.summarize_linear_phase(results, "linear", float(config.min_bits)),
      **common.soft_summary(results),
  }
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """Redraws ``figures/linear_phase.png`` from ``results.npz`` (and config.json for the title)."""
  res, cfg = common.load_run(workdir)
  a, m = res.arrays, res.measures("linear")
  title = f"{cfg.get('task', cfg['dataset']['name'])}: {cfg['model']}, {len(a['seed_ids'])} seeds"
  fig = plotting.plot_linear_phase(a["steps"], m["i_fy"], m["mu"], m["i_ly"][:, -1],
                                   a["test_acc"], res.reference("linear", "test_acc"),
                                   t0_steps=a["t0_step"], title=title, mu_null=res.null("linear"))
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"{NAME}.png"),
          *soft_scoring.figures(workdir, res, NAME, title)]


if __name__ == "__main__":
  cli.main(__file__, run)
