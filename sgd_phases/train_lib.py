"""A run, end to end: ``train(config, workdir) -> Results``.

    from sgd_phases import config_lib, train_lib
    config = config_lib.base_config("ball2d_sinusoid", "mlp")
    config.references.linear = config_lib.reference_config("linear")
    results = train_lib.train(config, "/tmp/run")      # writes results.npz, config.json, ...
    results.measures("linear")["mu"]                   # [seeds, evals] μ_Y(F_t; L) in bits

``train`` is five named steps, each a function of explicit arguments:

1. ``plan(config)``: load the data, check the config against it, build F's trainer (nothing is
   written before this succeeds);
2. ``train_f``: F for every seed by ``engine.run_seeds`` (or F's outputs handed in as
   ``trained_f``, e.g. by ``sgd_phases.sweep``'s nested programs);
3. ``train_references``: every reference per seed, then T_0, then the references defined at
   T_0 (undefined, i.e. −1 predictions and NaN measures, for seeds that never reach it);
4. ``score``: every information measure and the conditional-independence null, on device;
5. ``results.npz`` and ``metrics.jsonl`` written atomically by one process.

A workdir holds one run (``run_identity``): the same run is resumed from its checkpoints, a
finished one is returned (re-scored from its stored predictions when only scoring options
changed), another one is refused unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from etils import epath

from sgd_phases import (config_lib, engine, eval_lib, io_lib, mutual_info, scoring, sharding,
                        stats, surrogates)
from sgd_phases import datasets as datasets_lib
from sgd_phases.models import layers
from sgd_phases.results import Results

# F's outputs trained elsewhere: ``trained_f(config, train_predictions)`` returns what
# ``engine.run_seeds`` would for this config (arrays [S, E, ...]) or None (train it here).
TrainedF = Callable[[ml_collections.ConfigDict, str], Mapping[str, Any] | None]
_T0_DEFINED = ("predictions_at_T0", "snapshot_at_T0")  # references that need T_0 first


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a run trains on and how, derived from its config and data (step 1 of ``train``)."""
  ds: datasets_lib.Dataset
  data: engine.EvalData
  eval_at: np.ndarray          # [E] evaluation steps (0 ... last)
  seed_ids: np.ndarray         # [S]
  trainer: Any                 # F's steps.Trainer
  strategy: str                # F's resolved seed strategy
  train_predictions: str       # which train-set predictions of F the references need
  probe: np.ndarray | None     # [G², 2] probe inputs, or None
  # eval.surrogates: kind -> (inputs, labels), recorded after the probe grid in x_probe
  surrogates: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)


def trainer_for(config: ml_collections.ConfigDict, net: ml_collections.ConfigDict | None,
                num_steps: int, ds: datasets_lib.Dataset) -> tuple[Any, str]:
  """(trainer, resolved seed strategy) of F (``net`` None) or of one reference ``net``."""
  src = config if net is None else net
  args = (src.model, src.model_kwargs, src.optimizer, src.loss, src.batch_size, num_steps,
          ds.num_classes, config.eval.batch_size)
  tr = engine.make_trainer(*args)
  strategy = engine.resolve_strategy(config.seed_strategy, src.model,
                                     num_params=engine.num_params(tr, ds.x_train[0]))
  return (engine.make_trainer(*args, unroll=True) if strategy == "unroll" else tr), strategy


def num_train_steps(config: ml_collections.ConfigDict, n_train: int) -> int:
  """``num_steps``, or ``num_epochs`` × (batches per epoch) when num_epochs is set."""
  if config.get("num_epochs") is None:
    return int(config.num_steps)
  return max(1, int(round(config.num_epochs * (n_train // config.batch_size))))


def plan(config: ml_collections.ConfigDict) -> Plan:
  """Step 1: data, evaluation steps and F's trainer; raises on any bad input, writes nothing."""
  ds = datasets_lib.get_dataset(config.dataset)
  config_lib.validate_for_data(config, ds.x_train.shape, ds.num_classes)
  probe = engine.probe_grid(config.eval.probe_grid) if config.eval.probe_grid else None
  num_steps = num_train_steps(config, len(ds.y_train))
  eval_at = eval_lib.eval_steps(num_steps, config.eval.schedule, config.eval.num_points,
                                config.eval.every)
  tr, strategy = trainer_for(config, None, num_steps, ds)
  sur = config.eval.get("surrogates")
  sets = {k: surrogates.sample(k, ds.x_train, ds.y_train, ds.num_classes, sur.size, sur.seed)
          for k in (sur.kinds if sur else ())}
  extra = ([] if probe is None else [probe]) + [x for x, _ in sets.values()]
  x_probe = np.concatenate(extra) if extra else None
  return Plan(ds=ds, data=engine.EvalData.create(ds, config.eval.train_eval_size, x_probe),
              eval_at=eval_at, seed_ids=np.arange(config.num_seeds), trainer=tr,
              strategy=strategy, probe=probe, train_predictions=needed_train_predictions(config),
              surrogates=sets)


def needed_train_predictions(config: ml_collections.ConfigDict) -> str:
  """Which train-set predictions of F the references need: "all" (every evaluation, for
  references fit to F_T0), "final" (F_T's) or "none"."""
  need = {r.trained_on for r in config.references.values()}
  return ("all" if "predictions_at_T0" in need else
          "final" if "final_predictions" in need else "none")


def resolved_choices(config: ml_collections.ConfigDict, p: Plan) -> dict[str, np.ndarray]:
  """``resolved/<choice>`` entries: what the run's ``auto`` settings became on this machine."""
  conv = getattr(p.trainer.model, "conv_impl", None)
  n = len(p.ds.y_test)
  mi_method = mutual_info.resolve_method(p.ds.num_classes, n, (len(p.seed_ids), len(p.eval_at)),
                                         (len(p.seed_ids), 1, n))
  return {f"resolved/{k}": np.array(str(v)) for k, v in dict(
      seed_strategy=p.strategy, conv_impl="none" if conv is None else
      layers.resolve_conv_impl(conv), mi_method=mi_method, backend=jax.default_backend(),
      device_count=jax.device_count(), process_count=jax.process_count()).items()}


def train_f(config: ml_collections.ConfigDict, p: Plan, workdir: epath.Path | None,
            writer: io_lib.MetricWriter | None = None) -> dict[str, jax.Array]:
  """Step 2: F for every seed (checkpointed under ``workdir/checkpoints``)."""
  return engine.run_seeds(p.trainer, p.data, p.ds.y_train, engine.SeedSet(config.seed, p.seed_ids),
                          p.eval_at, engine.RunOptions(
                              strategy=p.strategy, seeds_per_chunk=config.seeds_per_chunk,
                              ckpt_dir=None if workdir is None else workdir / "checkpoints",
                              checkpoint_every=config.checkpoint_every,
                              progress=config.progress, desc="F", writer=writer,
                              train_predictions=p.train_predictions))


def _reference_labels(ref, f_out, t0_index) -> np.ndarray | None:
  if ref.trained_on == "final_predictions":
    tp = f_out["train_predictions"]  # [S, n] or, when recorded at every evaluation, [S, E, n]
    return tp if tp.ndim == 2 else tp[:, -1]
  if ref.trained_on == "predictions_at_T0":
    tp = f_out["train_predictions"]  # [S, E, n]
    return tp[np.arange(tp.shape[0]), t0_index]
  return None


def train_reference(config: ml_collections.ConfigDict, name: str, data: engine.EvalData,
                    ds: datasets_lib.Dataset, seed_ids: np.ndarray,
                    labels: np.ndarray | None = None, workdir: epath.Path | None = None
                    ) -> dict[str, np.ndarray]:
  """Trains reference ``config.references[name]`` for every seed; test predictions [S, N].

  ``labels``: [S, n] per-seed targets (F's predictions), default: the training labels. With a
  ``workdir`` the result is cached in ``references/<name>.npz`` (reused on resume).
  """
  ref = config.references[name]
  cache = None if workdir is None else workdir / "references" / f"{name}.npz"
  if cache is not None and cache.exists():
    return io_lib.read_npz(cache)
  tr, strategy = trainer_for(config, ref, ref.num_steps, ds)
  out = engine.run_seeds(tr, data, ds.y_train if labels is None else labels,
                         engine.SeedSet(config.seed, seed_ids, salt=f"reference/{name}"),
                         np.array([0, ref.num_steps]), engine.RunOptions(
                             strategy=strategy, seeds_per_chunk=config.seeds_per_chunk,
                             progress=config.progress, desc=f"ref:{name}"))
  res = {k: sharding.to_host(out[k])[:, -1] for k in ("predictions", "test_acc", "train_acc",
                                                       "probe_predictions") if k in out}
  if cache is not None:
    io_lib.write_npz(cache, res)
  return res


def train_references(config: ml_collections.ConfigDict, p: Plan, f_out: dict[str, np.ndarray],
                     workdir: epath.Path | None
                     ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
  """Step 3: every reference's test predictions and accuracy per seed, and T_0 per seed."""
  refs = config.references
  out = {name: train_reference(config, name, p.data, p.ds, p.seed_ids,
                               _reference_labels(ref, f_out, None), workdir)
         for name, ref in refs.items() if ref.trained_on not in _T0_DEFINED}
  t0 = _t0(config, f_out, out, p.ds)
  late = [name for name, ref in refs.items() if ref.trained_on in _T0_DEFINED]
  reached = t0 >= 0
  if late and not reached.all():
    logging.warning("T_0 never reached by seeds %s: their T_0-dependent references %s are "
                    "undefined (predictions -1, measures NaN)",
                    [int(i) for i in p.seed_ids[~reached]], late)
  rows = np.arange(len(p.seed_ids))  # positions, whatever the seed ids are
  at_t0 = np.where(reached, t0, len(p.eval_at) - 1)  # stand-in index, masked out below
  for name in late:
    if refs[name].trained_on == "snapshot_at_T0":
      o = {k: f_out[k][rows, at_t0].copy() for k in ("predictions", "test_acc",
                                                     "probe_predictions") if k in f_out}
    else:
      o = {k: np.array(v) for k, v in train_reference(
          config, name, p.data, p.ds, p.seed_ids, _reference_labels(refs[name], f_out, at_t0),
          workdir).items()}
    o["predictions"][~reached] = scoring.UNDEFINED
    if "probe_predictions" in o:
      o["probe_predictions"][~reached] = scoring.UNDEFINED
    o["test_acc"] = np.where(reached, o["test_acc"], np.nan)
    out[name] = o
  return {name: out[name] for name in refs}, t0


def _t0(config, f_out, ref_out, ds) -> np.ndarray:
  """T_0 per seed (index into steps, −1 if never) by ``config.t0.rule``."""
  name = config.t0.reference
  if not name or name not in ref_out:
    return np.full(f_out["test_acc"].shape[0], -1, np.int64)
  kw = {}
  if config.t0.rule == "mu_ratio":
    m = scoring.measures(f_out["predictions"], ref_out[name]["predictions"], ds.y_test,
                         ds.num_classes, config.bias_correction)
    kw = dict(mu=m["mu"], i_fy=m["i_fy"], delta=config.t0.delta)
  return np.asarray(stats.t0_index(f_out["test_acc"], ref_out[name]["test_acc"],
                                   rule=config.t0.rule, **kw), np.int64)


def score_reference(config: ml_collections.ConfigDict, name: str, predictions: Any,
                    ref_predictions: np.ndarray, y_test: np.ndarray, num_classes: int
                    ) -> dict[str, np.ndarray]:
  """``mi/<name>/<field>`` [S, E] and, with ``config.null.num_permutations`` > 0, the
  conditional-independence null ``null/<name>/mu`` [P, S, E] of F's predictions against one
  reference (rows of −1 = undefined for that seed: NaN)."""
  bc = config.get("bias_correction")
  out = {f"mi/{name}/{f}": v for f, v in scoring.measures(
      predictions, ref_predictions, y_test, num_classes, bc).items()}
  p = int(config.null.num_permutations)
  if p > 0:
    out[f"null/{name}/mu"] = scoring.null_mu(predictions, ref_predictions, y_test, num_classes,
                                             scoring.null_key(config.seed, name), p, bc)
  return out


def score(config: ml_collections.ConfigDict, p: Plan, f_dev: Mapping[str, Any],
          f_out: Mapping[str, np.ndarray], refs: dict[str, dict[str, np.ndarray]],
          t0: np.ndarray) -> dict[str, np.ndarray]:
  """Step 4: the arrays of ``results.npz`` (README: results format). The measures are computed
  on device from F's device predictions ``f_dev``; ``f_out`` are their host copies."""
  arrays: dict[str, np.ndarray] = {
      "steps": p.eval_at, "seed_ids": p.seed_ids, "y_test": p.ds.y_test.astype(np.int32),
      "num_classes": np.int64(p.ds.num_classes), "predictions": f_out["predictions"],
      **{k: f_out[k] for k in engine.BUFFER_KEYS}, **resolved_choices(config, p)}
  grid = 0 if p.probe is None else len(p.probe)
  if p.probe is not None:
    arrays["probe_inputs"] = p.probe
    arrays["probe_predictions"] = f_out["probe_predictions"][..., :grid]
  arrays["reference_names"] = np.array(list(refs), dtype=str)
  for name, out in refs.items():
    arrays[f"ref/{name}/predictions"] = out["predictions"]
    arrays[f"ref/{name}/test_acc"] = out["test_acc"]
    arrays.update(score_reference(config, name, f_dev["predictions"], out["predictions"],
                                  p.ds.y_test, p.ds.num_classes))
  arrays.update(_score_surrogates(p, f_out, refs, grid, config.get("bias_correction")))
  arrays["t0_index"] = t0
  arrays["t0_step"] = np.where(t0 >= 0, p.eval_at[np.maximum(t0, 0)], -1)
  arrays["t0_reference"] = np.array(config.t0.reference or "")
  return arrays


def _score_surrogates(p: Plan, f_out: Mapping[str, np.ndarray],
                      refs: dict[str, dict[str, np.ndarray]], start: int,
                      bias_correction: str | None) -> dict[str, np.ndarray]:
  """``surrogate/<kind>/{inputs,labels,predictions,acc}`` and ``surrogate/<kind>/mi/<ref>/*``:
  F's and every reference's predictions on each surrogate test set (``eval.surrogates``)."""
  out: dict[str, np.ndarray] = {}
  for kind, (x, y) in p.surrogates.items():
    cut = slice(start, start + len(y))
    start += len(y)
    f = f_out["probe_predictions"][..., cut]
    pre = f"surrogate/{kind}"
    out.update({f"{pre}/inputs": x, f"{pre}/labels": y, f"{pre}/predictions": f,
                f"{pre}/acc": (f == y).mean(axis=-1)})
    for name, r in refs.items():
      out[f"{pre}/ref/{name}/predictions"] = r["probe_predictions"][..., cut]
    out.update(score_surrogate(out, kind, list(refs), p.ds.num_classes, bias_correction))
  return out


def score_surrogate(arrays: Mapping[str, np.ndarray], kind: str, names: list[str],
                    num_classes: int, bias_correction: str | None) -> dict[str, np.ndarray]:
  """``surrogate/<kind>/mi/<ref>/<field>`` [S, E] from the stored surrogate predictions."""
  pre = f"surrogate/{kind}"
  return {f"{pre}/mi/{name}/{k}": v for name in names for k, v in scoring.measures(
      arrays[f"{pre}/predictions"], arrays[f"{pre}/ref/{name}/predictions"],
      arrays[f"{pre}/labels"], num_classes, bias_correction).items()}


def init_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins the multi-process job of ``config.distributed`` (once per process), then checks that
  every process was started with the same run: a peer with another config is refused before
  any training. CPU collectives go through gloo (set before the backend starts)."""
  d = config.distributed
  if not d.enabled:
    return
  if not jax.distributed.is_initialized():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {k: d[k] for k in ("coordinator_address", "num_processes", "process_id")
              if d[k] is not None}
    jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=d.heartbeat_timeout_s)
  from jax.experimental import multihost_utils
  digest = zlib.crc32(json.dumps(run_identity(config), sort_keys=True).encode()) & 0x7FFFFFFF
  multihost_utils.assert_equal(np.array([digest], np.int32),
                               f"config: process {jax.process_index()} was started with a "
                               "different run config from its peers")


def train(config: ml_collections.ConfigDict, workdir: io_lib.PathLike | None, *,
          trained_f: TrainedF | None = None) -> Results:
  """Trains F and the references for every seed and scores every evaluation (module doc).

  ``trained_f``: where F was already trained (``sgd_phases.sweep``'s nested programs), asked
  for this config's outputs before F is trained here.
  """
  config_lib.validate(config)
  init_distributed(config)
  workdir = io_lib.path(workdir) if workdir is not None else None
  if workdir is not None:
    done = _check_workdir(config, workdir)
    if done is not None:
      return done
  p = plan(config)  # everything that can fail on bad input, before config.json is written
  writer = io_lib.MetricWriter(workdir, enabled=workdir is not None and jax.process_index() == 0)
  if workdir is not None and jax.process_index() == 0:  # multi-host: one writer
    io_lib.write_json(workdir / io_lib.CONFIG_FILE, config_lib.to_dict(config))
    writer.write_hparams(config_lib.to_dict(config))
  f_dev = None if trained_f is None else trained_f(config, p.train_predictions)
  if f_dev is None:
    f_dev = train_f(config, p, workdir, writer)
  f_host = {k: sharding.to_host(v) for k, v in f_dev.items()}  # gathered for results.npz
  refs, t0 = train_references(config, p, f_host, workdir)
  results = Results(score(config, p, f_dev, f_host, refs, t0), workdir)
  if workdir is not None and jax.process_index() == 0:
    _write_metrics(writer, results)
    io_lib.write_npz(workdir / io_lib.RESULTS_FILE, results.arrays)
  writer.close()
  return results


def run_identity(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any] | None:
  """``config_lib.identity`` of a run, plus ``bias_correction`` where T_0 is defined by μ
  (``t0.rule = mu_ratio``: then it decides which step "F at T_0" is)."""
  d = config_lib.to_dict(config) if isinstance(config, ml_collections.ConfigDict) else config
  ident = config_lib.identity(d)
  if ident is not None and d.get("t0", {}).get("rule") == "mu_ratio":
    ident["bias_correction"] = d.get("bias_correction")
  return ident


def _check_workdir(config: ml_collections.ConfigDict, workdir: epath.Path) -> Results | None:
  """Refuses a workdir holding another run; returns the results of a finished same run.

  "Same run" is :func:`run_identity`. A finished run whose other fields differ (scoring options
  such as ``bias_correction`` or ``null``, or an experiment's analysis options) is re-scored
  from its stored predictions (:func:`rescore`, seconds) and its config.json updated: never
  refused, never retrained. Writes nothing else. A workdir whose run differs but that holds no
  training progress (no checkpoint, reference or results file: e.g. a run that failed on bad
  input) is treated as fresh, so the corrected rerun is never blocked by its failed attempt.
  """
  io_lib.check_writable(workdir)
  path = workdir / io_lib.CONFIG_FILE
  if not path.exists():
    return None
  old, new = io_lib.read_json(path), config_lib.to_dict(config)
  changed = config_lib.diff(run_identity(old) or old, run_identity(new) or new)
  progress = [sub for sub in ("checkpoints", "references", io_lib.RESULTS_FILE)
              if (workdir / sub).exists() and any((workdir / sub).iterdir()
                                                   if (workdir / sub).is_dir() else [True])]
  if changed and not progress:
    logging.info("%s holds a config but no training progress; starting afresh", workdir)
  elif changed and not config.overwrite:
    raise ValueError(f"workdir {os.fspath(workdir)!r} holds a run with a different config:\n  "
                     + "\n  ".join(changed) + "\nuse a new workdir or --config.overwrite=True")
  elif changed:
    logging.warning("overwriting the run in %s (config changed: %s)", workdir, changed)
    for sub in ("checkpoints", "references", "tensorboard"):
      (workdir / sub).rmtree(missing_ok=True)
    (workdir / io_lib.RESULTS_FILE).unlink(missing_ok=True)
  elif (workdir / io_lib.RESULTS_FILE).exists():
    logging.info("%s already holds the finished run; not retraining", workdir)
    results = Results(io_lib.read_npz(workdir / io_lib.RESULTS_FILE), workdir)
    scoring_changed = [f for f in config_lib.SCORING_FIELDS if old.get(f) != new.get(f)]
    if scoring_changed:
      logging.info("re-scoring the stored predictions (%s changed)", scoring_changed)
      results = rescore(config, results)
    if old != new and jax.process_index() == 0:  # multi-host: one writer
      if scoring_changed:
        io_lib.write_npz(workdir / io_lib.RESULTS_FILE, results.arrays)
      io_lib.write_json(path, new)
    return results
  return None


def rescore(config: ml_collections.ConfigDict, results: Results) -> Results:
  """Every reference's measures and null recomputed from the stored predictions under
  ``config``'s scoring options (``config_lib.SCORING_FIELDS``); nothing is trained."""
  a = {k: v for k, v in results.arrays.items()
       if not k.startswith(("mi/", "null/")) and "/mi/" not in k}
  for name in results.reference_names:
    a.update(score_reference(config, name, a["predictions"], a[f"ref/{name}/predictions"],
                             a["y_test"], int(a["num_classes"])))
  for kind in {k.split("/")[1] for k in a if k.startswith("surrogate/")}:
    a.update(score_surrogate(a, kind, results.reference_names, int(a["num_classes"]),
                             config.get("bias_correction")))
  return Results(a, results.workdir)


def _write_metrics(writer: io_lib.MetricWriter, results: Results) -> None:
  """metrics.jsonl: one row per evaluation, means over seeds (rewritten whole at the end)."""
  writer.reset()
  a = results.arrays
  for k, step in enumerate(a["steps"]):
    row = {n: float(np.mean(a[n][:, k])) for n in engine.BUFFER_KEYS}
    for r in results.reference_names:
      for f in ("i_fy", "mu", "i_fy_given_l"):
        row[f"{r}/{f}"] = float(np.mean(a[f"mi/{r}/{f}"][:, k]))
    writer.write_scalars(int(step), row)
