"""Theorem 1 (simplified model): SGD on the square loss interpolates noisy labels and keeps
the concept, provided the initialisation is benign.

Data (``theorem1`` dataset): x(0) = ±1 carries the clean label, x(1..d−1) ~ N(0, 1/d) are
near-orthogonal noise coordinates with d ≥ n, so a linear model can fit all n noisy labels.
Model: ``linear`` without bias, loss ``squared``, plain SGD. With two logits z = Wᵀx and
targets onehot(y), the update of d = w₁ − w₀ is −η(d·x − ỹ)x with ỹ = 2y − 1 ∈ {±1}: exactly
SGD on ½(d·x − ỹ)², the square loss of the ±1 margin (the prediction is sign(d·x); w₁ + w₀
evolves separately and never changes it). Conditions of the theorem on w_0 (here d at init):
w_0(1) ≥ −n^0.99 (first coordinate, ``init_first``) and |w_0(i)| ≤ 1 − 2p − ε for i > 1
(``init_scale`` s draws every kernel entry from U[−s, s], so |d(i)| ≤ 2s). Why they matter:
SGD on least squares moves w only inside the span of the training inputs, so it converges to
the interpolator closest to w_0. Init mass on noise directions outside that span stays and
adds test noise of size ~RMS(w_0(i)); and with near-orthonormal noise vectors that
interpolator has d(0) ≈ (σ²·w_0(1) + s·n(1 − 2p)) / (σ² + n·s²) (s = signal, σ = noise_std),
i.e. a fraction ~1/n of a negative w_0(1) survives: −n^0.99 still costs ~n^−0.01 ≈ 0.94 at
n = 500, so that condition is only asymptotic (``predicted_final_w_first`` in the summary). Each
(noise rate p, init variant) is one engine run in ``workdir/p{p}_{init}/``; the summary records
whether the sampled initialisations actually satisfied the conditions.

    python -m experiments.theorem1 --workdir=/tmp/thm1              # ~2-4 min on a 2-core CPU
    python -m experiments.theorem1 --workdir=/tmp/thm1q --config=experiments/theorem1.py:quick
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from experiments import common
from sgd_phases import cli, config_lib, engine, io_lib, plotting, stats, steps, train_lib

NAME = "theorem1"


def _init(init_scale: float, init_first: float | None = None) -> ml_collections.ConfigDict:
  first = config_dict.placeholder(float) if init_first is None else float(init_first)
  return ml_collections.ConfigDict({"init_scale": float(init_scale), "init_first": first})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config (CPU, a few minutes: 16 short runs); ``arg="quick"``: seconds."""
  quick = "quick" in cli.parse_arg(arg)
  c = config_lib.base_config("theorem1", "linear", use_bias=False)
  c.experiment = NAME               # experiment name (recorded in summary.json)
  c.quick = quick                   # shrunken settings for tests / smoke runs
  c.dataset.n_train = 500           # n
  c.dataset.dim = 2000              # d >= n: the noise coordinates can interpolate any labels
  c.dataset.n_test = 5000           # clean test labels
  c.loss = "squared"                # = square loss of the ±1 margin d·x (module docstring)
  c.optimizer.learning_rate = 0.5   # plain SGD; η·(largest batch-Hessian eigenvalue) < 2
  c.batch_size = 25                 # batch 1-10 also interpolate but make the curves jumpy
  c.num_steps = 6000                # 300 epochs: train accuracy on the noisy labels -> 100%
  c.num_seeds = 4                   # init and data order (the dataset itself is fixed)
  c.eval.num_points = 40            # log-spaced evaluations
  c.t0.reference = ""               # no reference classifier, no T_0
  c.checkpoint_every = 0            # short runs: no checkpoints
  c.progress = False                # 16 runs: no progress bars
  c.noise_rates = (0.0, 0.1, 0.2, 0.3)  # label noise p, one engine run per (p, init)
  c.epsilon = 0.05                  # ε in |w_0(i)| <= 1 - 2p - ε (only for the report)
  # Initialisations: name -> (init_scale s: kernel ~ U[-s, s]; init_first: d(0) at init).
  c.inits = ml_collections.ConfigDict({
      "small": _init(0.01),                               # satisfies both conditions
      "first_at_bound": _init(0.01, init_first=-469.0),   # w_0(1) = -n^0.99 (n = 500): just ok
      "first_neg": _init(0.01, init_first=-2000.0),       # w_0(1) = -4n < -n^0.99: violates
      "large": _init(1.0),                                # |w_0(i)| up to 2 > 1 - 2p: violates
  })
  if quick:
    c.dataset.n_train, c.dataset.dim, c.dataset.n_test = 100, 400, 1000
    c.num_steps, c.num_seeds, c.eval.num_points, c.batch_size = 1000, 2, 12, 10
    c.noise_rates = (0.2,)
    c.inits = ml_collections.ConfigDict({"small": _init(0.01), "large": _init(1.0)})
  return c


def setting_name(p: float, init: str) -> str:
  """Subfolder of one (noise rate, init) run, e.g. ``p0.2_small``."""
  return f"p{p:g}_{init}"


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One engine run per (noise rate, init) (``training_config``); bad ``noise_rates`` or
  ``inits`` are refused."""
  rates = list(config.noise_rates)
  if not rates or any(not 0.0 <= float(p) < 0.5 for p in rates):
    raise ValueError(f"config.noise_rates must be a non-empty list in [0, 0.5), got {rates}")
  if not config.inits:
    raise ValueError("config.inits must name at least one initialisation")
  for name, init in config.inits.items():
    if not float(init.init_scale) >= 0:
      raise ValueError(f"config.inits.{name}.init_scale must be >= 0, got {init.init_scale}")
  return [training_config(config, p, init) for p in rates for init in config.inits]


def training_config(config: ml_collections.ConfigDict, p: float,
                    init: str) -> ml_collections.ConfigDict:
  """The engine's config for one (p, init): experiment-only fields removed."""
  c = common.engine_config(config)
  c.dataset.label_noise = float(p)
  spec = config.inits[init]
  c.model_kwargs.init_scale = float(spec.init_scale)
  if spec.get("init_first") is not None:
    c.model_kwargs.init_first = float(spec.init_first)
  return c


def initial_weights(tcfg: ml_collections.ConfigDict, x_example: np.ndarray) -> np.ndarray:
  """[S, dim] the engine's initial d = w₁ − w₀ for every seed (same keys as train_lib)."""
  tr = engine.make_trainer(tcfg.model, tcfg.model_kwargs, tcfg.optimizer, tcfg.loss,
                              tcfg.batch_size, tcfg.num_steps, 2)
  init_keys, _ = engine.seed_keys(tcfg.seed, np.arange(tcfg.num_seeds))
  create = jax.vmap(lambda k: steps.create_state(tr, k, x_example).params)
  kernel = np.asarray(jax.tree.leaves(create(init_keys))[0])  # [S, dim, 2]
  return kernel[..., 1] - kernel[..., 0]


def conditions(d0: np.ndarray, n: int, p: float, eps: float) -> dict[str, Any]:
  """Whether the initial weights d0 [S, dim] satisfy the two conditions of Theorem 1."""
  first_ok = bool(np.all(d0[:, 0] >= -float(n) ** 0.99))
  max_rest = float(np.abs(d0[:, 1:]).max())
  rest_ok = max_rest <= 1.0 - 2.0 * p - eps
  return {"w0_first_min": float(d0[:, 0].min()), "w0_rest_max_abs": max_rest,
          "bound_rest": 1.0 - 2.0 * p - eps, "bound_first": -float(n) ** 0.99,
          "first_ok": first_ok, "rest_ok": bool(rest_ok), "satisfied": first_ok and rest_ok}


def run(config: ml_collections.ConfigDict, workdir: str, *,
        trained_f: Any = None) -> dict[str, Any]:
  """One engine run per (p, init); summary.json with final accuracies and the figures."""
  config, started = common.begin(config, workdir, runs=engine_runs)  # checked, claimed
  wd = io_lib.path(workdir)
  settings = []
  for p in config.noise_rates:
    for init in config.inits:
      tcfg = training_config(config, p, init)
      name = setting_name(p, init)
      res = train_lib.train(tcfg, wd / name, trained_f=trained_f).arrays
      d0 = initial_weights(tcfg, np.zeros(tcfg.dataset.dim, np.float32))
      last = len(res["steps"]) - 1
      sig, var, n = tcfg.dataset.signal, tcfg.dataset.noise_std ** 2, tcfg.dataset.n_train
      settings.append({
          "name": name, "noise_rate": float(p), "init": init,
          "conditions": conditions(d0, n, float(p), config.epsilon),
          "predicted_final_w_first": float(np.mean(
              (var * d0[:, 0] + sig * n * (1 - 2 * p)) / (var + n * sig ** 2))),
          "train_acc_end": stats.summarize(res["train_acc"][:, last], bounded=True),
          "train_acc_clean_end": stats.summarize(res["train_acc_clean"][:, last], bounded=True),
          "test_acc_end": stats.summarize(res["test_acc"][:, last], bounded=True),
          "test_acc_max": stats.summarize(res["test_acc"].max(axis=1), bounded=True),
      })
  summary = {"experiment": NAME, "quick": bool(config.quick),
             "noise_rates": [float(p) for p in config.noise_rates],
             "inits": list(config.inits), "settings": settings}
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """One accuracy-vs-step figure per init (all p) and per p (all inits), from the files."""
  wd = io_lib.path(workdir)
  settings = io_lib.read_json(wd / "summary.json")["settings"]
  arrays = {s["name"]: io_lib.read_npz(wd / s["name"] / io_lib.RESULTS_FILE) for s in settings}
  out = []
  by_p = lambda s: f"p={s['noise_rate']:g}"
  groups = [(f"init_{i}", [s for s in settings if s["init"] == i], by_p)
            for i in dict.fromkeys(s["init"] for s in settings)]
  groups += [(f"p{p:g}", [s for s in settings if s["noise_rate"] == p], lambda s: s["init"])
             for p in dict.fromkeys(s["noise_rate"] for s in settings)]
  for fname, group, label in groups:
    st = arrays[group[0]["name"]]["steps"]
    if any(not np.array_equal(arrays[s["name"]]["steps"], st) for s in group):
      raise ValueError(f"workdir: runs {[s['name'] for s in group]} have different steps")
    fig = plotting.plot_theorem1(st, {label(s): arrays[s["name"]]["train_acc"] for s in group},
                                 {label(s): arrays[s["name"]]["test_acc"] for s in group})
    fig.axes[0].set_title(fname.replace("_", " "), fontsize=10)
    out.append(plotting.save_figure(fig, wd / "figures" / f"theorem1_{fname}.png"))
  fig = None  # final clean test accuracy vs p, one errorbar line per init
  for init in dict.fromkeys(s["init"] for s in settings):
    group = [s for s in settings if s["init"] == init]
    ps = [s["noise_rate"] for s in group]
    m, lo, hi = ([s["test_acc_end"][k] for s in group] for k in ("mean", "lo", "hi"))
    if fig is None:
      fig = plotting.plot_sweep(ps, m, lo, hi, xlabel="label noise p",
                                ylabel="final clean test accuracy")
      fig.axes[0].lines[0].set_label(init)
    else:
      yerr = np.nan_to_num(np.abs(np.array([m]) - np.array([lo, hi])))
      fig.axes[0].errorbar(ps, m, yerr=yerr, marker="o", markersize=4, capsize=3, label=init)
  fig.axes[0].axhline(0.5, color="gray", linestyle=":", linewidth=1, label="chance")
  fig.axes[0].legend(fontsize=7, frameon=False)
  out.append(plotting.save_figure(fig, wd / "figures" / "theorem1_final_test_acc.png"))
  return out


if __name__ == "__main__":
  cli.main(__file__, run)
