"""Is the early phase the kernel regime? F against its own linearisation, time-paired.

F_lin(x; θ) = F(x; θ₀) + ∇_θF(x; θ₀)·(θ − θ₀) is the first-order Taylor expansion of F around
*this seed's* initialisation (``sgd_phases.models.linearized``, one ``jax.jvp`` per forward
pass). It is trained by the same SGD on the same data order from the same θ₀ (the same
``engine.SeedSet``) and evaluated at the same steps, so at every evaluation t there is a pair
(F_t, F_lin,t). Against this *time-paired* reference (not one fixed L) we record, per seed and
evaluation: μ_Y(F_t; F_lin,t), I(F_t;Y), I(F_lin,t;Y), acc(F_lin,t) and the agreement of the
two networks' test predictions; ``F_lin``'s predictions [S, E, N] are stored beside F's in
``<width dir>/linearized.npz``.

"Explained by its linearisation until": the departure step, the first evaluation where
μ_Y(F_t;F_lin,t) < 0.9·I(F_t;Y) (``stats.departure_index``, as the linear phase's departure
from L), compared per seed with T_0 (acc(F_t) ≥ acc(L), L the paper's linear classifier), for
each width in ``config.widths``. The wall time of F_lin's training against F's measures the
JVP's cost.

Tasks (``get_config("<task>[,quick]")``): ``mnist_mlp`` (0–4 vs 5–9, MLP with 2 hidden layers,
SGD lr 0.05, batch 64, 3,000 steps, widths 64, 256, 1024, 5 seeds; the default with the
offline data), ``fashion_mlp``, ``sinusoid_hd`` (synthetic); ``quick``: seconds.

    python -m experiments.kernel_regime --workdir=runs/kernel_mnist \\
        --config=experiments/kernel_regime.py:mnist_mlp
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import cli, io_lib, mutual_info, plotting, stats

NAME = "kernel_regime"
LIN_FILE = "linearized.npz"
_MLP = {"width": 256, "depth": 2}
TASKS: dict[str, common.Task] = {
    "mnist_mlp": common.Task("mnist", "mlp", 3_000, 0.05, _MLP),
    "fashion_mlp": common.Task("fashion_mnist", "mlp", 3_000, 0.05, _MLP),
    "sinusoid_hd": common.Task("sinusoid_hd", "mlp", 5_000, 0.05, _MLP),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Config: ``arg`` = "<task>[,quick]" (see the module docstring)."""
  task, quick = common.parse_task(arg, TASKS, common.mnist_or_synthetic())
  c = common.task_base_config(TASKS[task])
  common.add_linear_reference(c)
  c.eval.num_points = 60
  c.null.num_permutations = 0      # this experiment's headlines are against F_lin, not L
  c.experiment = NAME               # recorded in summary.json (make_figures dispatches on it)
  c.task = task                     # which row of TASKS this config came from
  c.quick = quick                   # shrunken settings for tests / smoke runs
  c.widths = (64, 256, 1024)        # hidden width of F (and so of F_lin), one run each
  c.min_bits = 0.05                 # departure only where I(F_t;Y) > min_bits (as linear_phase)
  if quick:  # seconds on CPU
    common.quick_budget(c, 300, 0.1)
    c.references.linear.num_steps = 150
    c.eval.num_points = 15
    c.widths = (16, 64)
    common.quick_data(c, n_train=1000)
  return c


def width_config(config: ml_collections.ConfigDict, width: int) -> ml_collections.ConfigDict:
  """The engine config of one width (``common.engine_config``: the engine's fields)."""
  c = common.engine_config(config)
  c.model_kwargs.width = int(width)
  return c


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One engine run per width (``width_config``); F_lin needs no weight decay."""
  _check_no_weight_decay(config)
  return [width_config(config, w) for w in config.widths]


def _check_no_weight_decay(config: ml_collections.ConfigDict) -> None:
  if config.optimizer.weight_decay:
    raise ValueError("optimizer.weight_decay: must be 0 (it would move θ₀ of F_lin)")


def train_linearized(config: ml_collections.ConfigDict, workdir: str,
                     f_run_seconds: float = float("nan")) -> dict[str, np.ndarray]:
  """F_lin of every seed, time-paired with F (same θ₀, data order, steps): its test
  predictions [S, E, N], test accuracy [S, E] and training seconds, with ``f_run_seconds``
  (F's run, NaN if not timed) kept beside them for the cost comparison. Cached in LIN_FILE
  with the run's identity (``sgd_phases.workdir.cached_npz``): a cache from another config of
  F is retrained, never paired with this F."""
  from sgd_phases import engine, train_lib
  from sgd_phases import workdir as workdir_lib
  from sgd_phases.models.linearized import Linearized

  def compute() -> dict[str, np.ndarray]:
    _check_no_weight_decay(config)
    p = train_lib.plan(config)
    tr = dataclasses.replace(p.trainer, model=Linearized(p.trainer.model))
    start = time.perf_counter()
    out = engine.run_seeds(tr, p.data, p.ds.y_train, engine.SeedSet(config.seed, p.seed_ids),
                           p.eval_at, engine.RunOptions(strategy=p.strategy,
                                                        progress=config.progress, desc="F_lin"))
    res = {"predictions": np.asarray(out["predictions"]), "test_acc": np.asarray(out["test_acc"])}
    res["train_seconds"] = np.float64(time.perf_counter() - start)
    res["f_run_seconds"] = np.float64(f_run_seconds)
    return res

  ident = {"run": workdir_lib.run_identity(config), "artifact": "F_lin"}
  return workdir_lib.cached_npz(io_lib.path(workdir) / LIN_FILE, ident, compute, what="F_lin")


def paired_measures(f: np.ndarray, f_lin: np.ndarray, y: np.ndarray, k: int
                    ) -> dict[str, np.ndarray]:
  """μ_Y(F_t;F_lin,t), I(F_t;Y), I(F_lin,t;Y) [S, E] (bits) and the agreement [S, E]."""
  m = mutual_info.information_measures(f, f_lin, y, k)
  return {"mu": np.asarray(m.mu), "i_fy": np.asarray(m.i_fy), "i_lin_y": np.asarray(m.i_ly),
          "agreement": (f == f_lin).mean(axis=-1)}


def width_summary(steps: np.ndarray, t0: np.ndarray, m: dict[str, np.ndarray],
                  lin_acc: np.ndarray, min_bits: float) -> dict[str, Any]:
  """Headlines of one width from per-seed curves [S, E] and T_0 indices [S] (−1: never)."""
  dep = np.asarray(stats.departure_index(m["mu"], m["i_fy"], delta=0.1, floor=min_bits))
  dep_step, t0_step = stats.step_at(steps, dep), stats.step_at(steps, t0)
  ratio = stats.ratio(dep_step, t0_step)
  ratio_mu = stats.ratio(m["mu"], m["i_fy"])
  return {
      "departure_step": stats.summarize(dep_step, bounded=True),
      "never_departs": int(np.sum(dep < 0)),
      "t0_step": stats.summarize(t0_step, bounded=True),
      "departure_over_t0": stats.summarize(ratio, bounded=True),
      "mu_over_i_at_t0": stats.summarize(stats.at_index(ratio_mu, t0), bounded=True),
      "mu_over_i_end": stats.summarize(ratio_mu[:, -1], bounded=True),
      "agreement_at_t0": stats.summarize(stats.at_index(m["agreement"], t0), bounded=True),
      "agreement_end": stats.summarize(m["agreement"][:, -1], bounded=True),
      "lin_acc_end": stats.summarize(lin_acc[:, -1], bounded=True),
  }


def run(config: ml_collections.ConfigDict, workdir: str, *,
        dataset: Any = None) -> dict[str, Any]:
  """F (and L) per width through the engine, then F_lin time-paired; summary.json + figure."""
  config, started = common.begin(config, workdir, dataset, runs=engine_runs)  # checked, claimed
  from sgd_phases import train_lib
  rows = {}
  for w in config.widths:
    wdir = io_lib.path(workdir) / f"width{int(w)}"
    wc = width_config(config, w)
    fresh = not (wdir / io_lib.RESULTS_FILE).exists()  # time F only when it is trained here
    start = time.perf_counter()
    res = train_lib.train(wc, wdir)
    f_seconds = time.perf_counter() - start if fresh else float("nan")
    lin = train_linearized(wc, str(wdir), f_seconds)
    a = res.arrays
    m = paired_measures(a["predictions"], lin["predictions"], a["y_test"], int(a["num_classes"]))
    rows[str(int(w))] = {**width_summary(a["steps"], a["t0_index"], m, lin["test_acc"],
                                         float(config.min_bits)),
                         "test_acc_end": stats.summarize(a["test_acc"][:, -1], bounded=True),
                         "f_lin_train_seconds": float(lin["train_seconds"]),
                         "f_run_seconds_incl_references": float(lin.get("f_run_seconds",
                                                                         np.nan))}
  summary = {**common.header(NAME, config, res), "widths": [int(w) for w in config.widths],
             "by_width": rows}
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """``figures/kernel_regime.png``: μ_Y(F_t;F_lin,t)/I(F_t;Y) and the agreement of F_t with
  F_lin,t per width (95% CI over seeds), mean T_0 per width dashed."""
  from sgd_phases import analysis
  s = io_lib.read_json(io_lib.path(workdir) / "summary.json")
  curves = {}
  for w in s["widths"]:
    wdir = io_lib.path(workdir) / f"width{w}"
    a = analysis.load(wdir).arrays
    lin = io_lib.read_npz(wdir / LIN_FILE)
    m = paired_measures(a["predictions"], lin["predictions"], a["y_test"], int(a["num_classes"]))
    curves[f"width {w}"] = (a["steps"], m["mu"] / np.where(m["i_fy"] > 0, m["i_fy"], np.nan),
                            m["agreement"], a["t0_step"])
  fig = plotting.plot_kernel_regime(curves, title=f"{s['task']}: F vs its linearisation")
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"{NAME}.png")]


if __name__ == "__main__":
  cli.main(__file__, run)
