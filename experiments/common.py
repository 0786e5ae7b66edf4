"""What the experiment modules share (experiments import only this module, never each other):
the summary header, how a run begins and is finished, task parsing, offline data, the CPU
budgets, and the linear-phase headline that several experiments report.

Every experiment's ``run(config, workdir, *, dataset=None, trained_f=None)`` takes its config
and workdir and, where it accepts them, ``dataset`` (arrays from ``datasets.from_arrays`` in
place of the config's own data) and ``trained_f`` (F's outputs trained elsewhere, handed to
``train_lib.train``: the sweep's nested programs; None trains F here); it returns the summary.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from sgd_phases import analysis, cli, datasets, io_lib, stats

LINEAR_LR = 0.05  # learning rate of L (softmax regression; inputs in [0, 1] or unit variance)


@dataclasses.dataclass(frozen=True)
class Task:
  """One named task of an experiment: the data, F, and how F is trained (by keyword, e.g.
  ``Task(dataset="mnist", model="mlp", model_kwargs={"width": 512, "depth": 2},
  learning_rate=0.05, num_steps=10_000)``). ``reference_steps``: SGD steps of the references;
  ``ladder``/``k``: the complexity ladder's family and number of rungs; ``dataset_overrides``:
  dataset fields set on top of the dataset's defaults."""
  dataset: str
  model: str
  num_steps: int
  learning_rate: float
  model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  momentum: float = 0.0
  batch_size: int = 64
  reference_steps: int = 10_000
  dataset_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  ladder: str = ""
  k: int = 0


def task_base_config(task: Task) -> ml_collections.ConfigDict:
  """The engine config of ``task`` (5 seeds; offline MNIST / Fashion-MNIST where present)."""
  from sgd_phases import config_lib  # local import: keeps experiment modules light to import

  c = config_lib.base_config(task.dataset, task.model, **task.model_kwargs)
  for field, value in task.dataset_overrides.items():
    c.dataset[field] = value
  if task.dataset in ("mnist", "fashion_mnist"):
    c.dataset.data_dir = offline_data_dir(task.dataset)
  c.optimizer.learning_rate = task.learning_rate
  c.optimizer.momentum = task.momentum
  c.batch_size = task.batch_size
  c.num_steps = task.num_steps
  c.num_seeds = 5
  return c


def add_linear_reference(c: ml_collections.ConfigDict, num_steps: int = 10_000) -> None:
  """The paper's L (``references.linear``: a linear classifier trained per seed by SGD on the
  training labels) and T_0 defined against it, in place."""
  from sgd_phases import config_lib  # local import: keeps experiment modules light to import
  c.references.linear = config_lib.reference_config(
      "linear", trained_on="labels", num_steps=num_steps, batch_size=64, learning_rate=LINEAR_LR)
  c.t0.reference = "linear"


HEADER_FIELDS = ("experiment", "task", "quick")  # kept in an engine run's config.json


def engine_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The engine config of one run of a multi-run experiment: the engine's fields
  (``config_lib.ENGINE_FIELDS``) and the header fields, without the experiment's own ones --
  one rule for every experiment, no per-module lists."""
  from sgd_phases import config_lib  # local import: keeps experiment modules light to import
  return config_lib.engine_part(config, keep=HEADER_FIELDS)


# An experiment's engine runs: config -> the engine configs its ``run`` trains (``engine_runs``)
Runs = Callable[[ml_collections.ConfigDict], list[ml_collections.ConfigDict]]


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The engine configs a one-run experiment trains: its engine part (``engine_config``), or
  none for a config without the engine's fields. An experiment whose runs differ (one per
  width, noise rate, ...) or that has fields of its own to check defines its own
  ``engine_runs(config)``, raising one ValueError naming a bad field; ``check`` validates what
  it returns."""
  from sgd_phases import config_lib  # local import: keeps experiment modules light to import
  return [engine_config(config)] if config_lib.identity(config) is not None else []


def check(config: ml_collections.ConfigDict, runs: Runs = engine_runs) -> None:
  """Everything knowable about ``config`` before anything is written: ``runs(config)`` (the
  experiment's own fields) and every engine config it returns (``config_lib.validate``). One
  ValueError naming the field."""
  from sgd_phases import config_lib  # local import: keeps experiment modules light to import
  for c in runs(config):
    config_lib.validate(c)


def begin(config: ml_collections.ConfigDict, workdir: io_lib.PathLike, dataset: Any = None, *,
          runs: Runs = engine_runs) -> tuple[ml_collections.ConfigDict, float]:
  """The start of every experiment's ``run``: checks ``config`` (:func:`check` with the
  experiment's ``runs``), claims ``workdir`` for this experiment (``workdir.claim``: a workdir
  holding another command's or experiment's run is refused, naming it, with nothing changed)
  and returns ``config`` on ``dataset`` with its data's and user models' fingerprints filled in
  (``workdir.pin``), and the start time (``time.time()``) that :func:`finish` records. A bad
  field is refused before the workdir is touched."""
  started = time.time()
  from sgd_phases import workdir as workdir_lib
  check(config, runs)
  config = workdir_lib.pin(config, dataset)
  workdir_lib.claim(workdir, workdir_lib.run_command(config))
  return config, started


def load_run(workdir: io_lib.PathLike) -> tuple[Any, dict[str, Any]]:
  """A finished run's files for ``make_figures``: its results (``analysis.load``) and its
  config.json."""
  return analysis.load(workdir), io_lib.read_json(io_lib.path(workdir) / io_lib.CONFIG_FILE)


def mnist_or_synthetic(task: str = "mnist_mlp", fallback: str = "sinusoid_hd") -> str:
  """``task`` when the offline MNIST files are present, else the synthetic ``fallback``."""
  return task if offline_data_dir("mnist") else fallback


def header(name: str, config: ml_collections.ConfigDict, results: Any) -> dict[str, Any]:
  """First fields of a summary.json: experiment, task, data, model, seeds, steps, quick, and
  the resolved ``auto`` choices."""
  return {
      "experiment": name, "task": config.task, "dataset": config.dataset.name,
      "model": config.model, "num_seeds": int(config.num_seeds), "quick": bool(config.quick),
      "num_steps": int(results.arrays["steps"][-1]),
      "resolved": results.resolved,  # what the run's ``auto`` choices became
  }


def quick_budget(c: ml_collections.ConfigDict, num_steps: int, learning_rate: float) -> None:
  """The ``quick`` variant shared by the experiments (seconds on CPU): two seeds, batch 32,
  ``num_steps`` steps at ``learning_rate``, 12 evaluations, 512 train examples evaluated, no
  checkpoints."""
  c.num_seeds = 2
  c.num_steps = num_steps
  c.batch_size = 32
  c.optimizer.learning_rate = learning_rate
  c.eval.num_points = 12
  c.eval.train_eval_size = 512
  c.checkpoint_every = 0


def finish(workdir: io_lib.PathLike, summary: dict[str, Any],
           make_figures: Callable[[str], list[str]], *, config: ml_collections.ConfigDict,
           started: float) -> dict[str, Any]:
  """Writes ``summary.json`` atomically, draws the figures; returns the summary + their paths.

  The summary records what produced it: ``identity`` (the experiment config without its
  operational fields, and its fingerprint: a sweep reuses a point's summary only when it
  matches), ``command`` (the command line, or None when called from Python) and
  ``wall_time_s`` (this call, from ``started`` = ``time.time()`` at its start; a resumed or
  reloaded run counts only what this call did). In a multi-process job only process 0 writes
  (the others return the summary, no figures), and every process returns once summary.json is
  written."""
  from sgd_phases import workdir as workdir_lib
  workdir_lib.claim(workdir, workdir_lib.run_command(config))  # begin's claim, or this one
  summary = {**summary, "identity": workdir_lib.summary_identity(config),
             "command": cli.command(), "wall_time_s": round(time.time() - started, 1)}
  io_lib.write_json(io_lib.path(workdir) / "summary.json", summary)  # process 0 only
  io_lib.barrier("summary written")  # e.g. a sweep reads it next, on every process
  return {**summary, "figures": make_figures(str(workdir)) if io_lib.is_writer() else []}


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


def early_ratio_min(mu: np.ndarray, i_fy: np.ndarray, t0: np.ndarray, min_bits: float
                    ) -> np.ndarray:
  """Per seed: min of μ/I(F_t;Y) over evaluations t ≤ T_0 with I > min_bits (NaN if none)."""
  e = np.arange(mu.shape[1])[None, :]
  ratio = stats.ratio(mu, i_fy, min_bits)
  out = np.where((e <= t0[:, None]) & np.isfinite(ratio), ratio, np.inf).min(axis=1)
  return np.where(np.isfinite(out), out, np.nan)


def summarize_linear_phase(results: Any, reference: str, min_bits: float) -> dict[str, Any]:
  """Headline numbers of a run against ``reference`` (the fields of ``analysis.headline``
  and a few more; means with 95% CIs over seeds)."""
  a = results.arrays
  m = results.measures(reference)
  t0 = a["t0_index"]
  dep = np.asarray(stats.departure_index(m["mu"], m["i_fy"], delta=0.1, floor=min_bits))
  return {
      "t0_found": int((t0 >= 0).sum()),
      **analysis.headline(results, reference),
      "mu_over_i_min_before_t0": stats.summarize(
          early_ratio_min(m["mu"], m["i_fy"], t0, min_bits), bounded=True),
      "departure_step": stats.summarize(stats.step_at(a["steps"], dep), bounded=True),
      "i_fy_at_t0": stats.summarize(stats.at_index(m["i_fy"], t0)),
      "test_acc_at_t0": stats.summarize(stats.at_index(a["test_acc"], t0), bounded=True),
  }


def soft_summary(results: Any, names: list[str] | None = None) -> dict[str, Any]:
  """``{"soft": ...}``: the soft measures beside μ (``soft_scoring.summarize``), or nothing for
  a run without them."""
  from sgd_phases import soft_scoring  # local import: keeps experiment modules light to import
  soft = soft_scoring.summarize(results, names)
  return {} if soft is None else {"soft": soft}


# --------------------------------------------------------------- retention (retention, _map)
_RETENTION_MLP = {"width": 512, "depth": 2}
RETENTION_TASKS: dict[str, Task] = {
    "mnist": Task("mnist", "mlp", 8_000, 0.1, _RETENTION_MLP,
                  dataset_overrides={"train_size": 4000}),
    "fashion": Task("fashion_mnist", "mlp", 8_000, 0.1, _RETENTION_MLP,
                    dataset_overrides={"train_size": 4000}),
    "sinusoid_hd": Task("sinusoid_hd", "mlp", 15_000, 0.1, _RETENTION_MLP,
                        dataset_overrides={"n_train": 2000, "dim": 20}),
}


def retention_default_task() -> str:
  """``mnist`` when the offline MNIST files are present, else ``sinusoid_hd``."""
  return mnist_or_synthetic("mnist")


def retention_base_config(task: str, name: str, quick: bool):
  """A retention run of ``RETENTION_TASKS[task]``: train accuracy over every training example,
  references ``linear`` (L on the same, possibly noisy, labels) and ``f_t0`` (F at T_0)."""
  from sgd_phases import config_lib  # local import: keeps experiment modules light to import
  c = task_base_config(RETENTION_TASKS[task])
  c.eval.train_eval_size = 10_000   # >= the train set: train accuracy over every example
  add_linear_reference(c)
  c.references.f_t0 = config_lib.reference_config("linear", trained_on="snapshot_at_T0")
  c.experiment = name               # recorded in summary.json (make_figures dispatches on it)
  c.task = task                     # which row of TASKS this config came from
  c.quick = quick                   # shrunken settings for tests / smoke runs
  return c


def quick_data(c, n_train: int = 300, n_test: int = 1000, dim: int = 10) -> None:
  """Shrinks ``c.dataset`` in place for a quick run: ``n_train``/``n_test`` points (and ``dim``
  for the synthetic sinusoid_hd), or ``train_size``/``test_size`` examples of real data."""
  if c.dataset.name == "sinusoid_hd":
    c.dataset.n_train, c.dataset.n_test, c.dataset.dim = n_train, n_test, dim
  else:
    c.dataset.train_size, c.dataset.test_size = n_train, n_test
