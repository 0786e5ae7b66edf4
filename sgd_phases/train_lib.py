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
   T_0 (undefined, i.e. −1 predictions and NaN measures, for seeds that never reach it); in a
   checkpointed run each in ``REFERENCE_SEGMENTS`` checkpointed segments (SIGTERM stops it
   within one, the rerun resumes it);
4. ``score``: every information measure and the conditional-independence null, on device;
5. ``results.npz`` and ``metrics.jsonl`` written atomically by one process.

A workdir holds one run (``sgd_phases.workdir``, the one owner of run identity, resume,
re-scoring, overwrite and caches): the same run is resumed from its checkpoints, a finished one
is returned (re-scored from its stored predictions when only scoring options changed), another
one is refused naming the differing fields unless ``overwrite`` (which removes every artifact
of the old run); a diverged attempt (``failed.json``) never blocks its corrected rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from etils import epath

from sgd_phases import (cluster, config_lib, engine, eval_lib, io_lib, mutual_info, preemption,
                        scoring, sharding, surrogates)
from sgd_phases import datasets as datasets_lib
from sgd_phases import results as results_lib
from sgd_phases import workdir as workdir_lib
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
  sampler = ds.meta.get("train_sampler")  # fresh batches drawn on device (synthetic sequences)
  tr = engine.make_trainer(*args, sampler=sampler)
  strategy = engine.resolve_strategy(config.seed_strategy, src.model,
                                     num_params=engine.num_params(tr, ds.x_train[0]))
  if strategy == "unroll":
    tr = engine.make_trainer(*args, unroll=True, sampler=sampler)
  return tr, strategy


def num_train_steps(config: ml_collections.ConfigDict, n_train: int) -> int:
  """``num_steps``, or ``num_epochs`` × (batches per epoch) when num_epochs is set."""
  if config.get("num_epochs") is None:
    return int(config.num_steps)
  return max(1, int(round(config.num_epochs * (n_train // config.batch_size))))


def plan(config: ml_collections.ConfigDict) -> Plan:
  """Step 1: data, evaluation steps and F's trainer; raises on any bad input, writes nothing."""
  ds = datasets_lib.get_dataset(config.dataset)
  fresh = ds.meta.get("train_sampler") is not None
  config_lib.validate_for_data(config, ds.x_train.shape, ds.num_classes, fresh_batches=fresh)
  if ds.y_train.ndim > 1:  # sequences: F's train predictions are per position, not per example
    for name, ref in config.references.items():
      if ref.trained_on in ("final_predictions", "predictions_at_T0"):
        raise ValueError(f"config.references.{name}.trained_on: {ref.trained_on!r} is not "
                         f"supported for the sequence dataset {ds.name!r} (use closed_form, "
                         "labels or snapshot_at_T0)")
  config_lib.validate_outputs(config, ds)
  probe = engine.probe_grid(config.eval.probe_grid) if config.eval.probe_grid else None
  num_steps = num_train_steps(config, len(ds.y_train))
  eval_at = eval_lib.eval_steps(num_steps, config.eval.schedule, config.eval.num_points,
                                config.eval.every)
  tr, strategy = trainer_for(config, None, num_steps, ds)
  sur = config.eval.get("surrogates")
  # the class moments of the *clean* labels (with label noise, y_train would mix the classes)
  sets = {k: surrogates.sample(k, ds.x_train, ds.y_train_clean, ds.num_classes, sur.size,
                               sur.seed) for k in (sur.kinds if sur else ())}
  extra = ([] if probe is None else [probe]) + [x for x, _ in sets.values()]
  x_probe = np.concatenate(extra) if extra else None
  return Plan(ds=ds, data=engine.EvalData.create(ds, config.eval.train_eval_size, x_probe),
              eval_at=eval_at, seed_ids=np.arange(config.num_seeds), trainer=tr,
              strategy=strategy, probe=probe, train_predictions=needed_train_predictions(config),
              surrogates=sets)


def probabilities_dtype(config: ml_collections.ConfigDict) -> str:
  """The dtype of F's test probabilities recorded on device at every evaluation (for the soft
  measures, or to store them), "" for none (``engine.RunOptions.probabilities``)."""
  soft = config.get("soft")
  wanted = (soft is not None and soft.enabled) or config.eval.get("store_probabilities", False)
  return config.eval.get("probabilities_dtype", "float32") if wanted else ""


def _soft(config: ml_collections.ConfigDict) -> bool:
  return config.get("soft") is not None and bool(config.soft.enabled)


def needed_train_predictions(config: ml_collections.ConfigDict) -> str:
  """Which train-set predictions of F the references need: "all" (every evaluation, for
  references fit to F_T0), "final" (F_T's) or "none"."""
  need = {r.trained_on for r in config.references.values()}
  return ("all" if "predictions_at_T0" in need else
          "final" if "final_predictions" in need else "none")


def resolved_choices(config: ml_collections.ConfigDict, p: Plan) -> dict[str, np.ndarray]:
  """``resolved/<choice>`` entries: what the run's ``auto`` settings became on this machine."""
  conv = getattr(p.trainer.model, "conv_impl", None)
  n = p.ds.y_test.size
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
                              lanes=config.get("seed_lanes", 0),
                              ckpt_dir=None if workdir is None else workdir / "checkpoints",
                              checkpoint_every=config.checkpoint_every,
                              progress=config.progress, desc="F", writer=writer,
                              train_predictions=p.train_predictions,
                              probabilities=probabilities_dtype(config)))


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
  ``workdir`` the result is cached in ``references/<name>.npz`` (reused on resume). With the
  soft measures on (``config.soft.enabled``) also its test ``probabilities``: [N, K] for a
  closed form (``sequence_distributions``), else [S, N, K], its softmax at the end.
  """
  ref = config.references[name]
  soft = _soft(config)
  if ref.trained_on == "closed_form":  # no training: the same predictions for every seed
    from sgd_phases import sequence_references  # pylint: disable=g-import-not-at-top
    pred = sequence_references.closed_form(ref.model, dict(ref.model_kwargs), ds)
    acc = np.float32(np.mean(pred == ds.y_test_flat))
    s = len(seed_ids)
    out = {"predictions": np.broadcast_to(pred, (s, pred.size)).copy(),
           "test_acc": np.full(s, acc, np.float32)}
    if soft:
      out["probabilities"] = sequence_references.closed_form(ref.model, dict(ref.model_kwargs),
                                                             ds, probabilities=True)
    return out

  # in a checkpointed run (a workdir, checkpoint_every > 0) L trains in REFERENCE_SEGMENTS
  # segments, checkpointed like F's evaluations: SIGTERM stops it within one segment and the
  # rerun resumes it (the same SGD steps: its predictions equal an uninterrupted run's)
  ckpt = (None if workdir is None or not config.checkpoint_every
          else workdir / "references" / "checkpoints" / name)

  def compute() -> dict[str, np.ndarray]:
    tr, strategy = trainer_for(config, ref, ref.num_steps, ds)
    out = engine.run_seeds(tr, data, ds.y_train if labels is None else labels,
                           engine.SeedSet(config.seed, seed_ids, salt=f"reference/{name}"),
                           reference_segments(ref.num_steps, ckpt is not None),
                           engine.RunOptions(
                               strategy=strategy, seeds_per_chunk=config.seeds_per_chunk,
                               lanes=config.get("seed_lanes", 0),
                               ckpt_dir=ckpt, checkpoint_every=config.checkpoint_every,
                               progress=config.progress, desc=f"ref:{name}",
                               probabilities="float32" if soft else ""))
    return {k: sharding.to_host(out[k])[:, -1] for k in ("predictions", "test_acc",
                                                         "train_acc", "probe_predictions",
                                                         "probabilities")
            if k in out}

  if workdir is None:
    return compute()
  # the run's identity names F (whose predictions some references learn) and every reference
  ident = {"run": workdir_lib.run_identity(config), "reference": name,
           "seed_ids": [int(i) for i in seed_ids], "probabilities": soft}
  out = workdir_lib.cached_npz(workdir / "references" / f"{name}.npz", ident, compute,
                               what=f"reference {name!r}")
  if ckpt is not None:  # cached: its checkpoints are spent (removed once every process is done)
    io_lib.barrier(f"reference {name} cached")
    if io_lib.is_writer():
      ckpt.rmtree(missing_ok=True)
      if ckpt.parent.exists() and not any(True for _ in ckpt.parent.iterdir()):
        ckpt.parent.rmdir()
  return out


REFERENCE_SEGMENTS = 16  # a checkpointed reference's segments (its evaluations minus one)


def reference_segments(num_steps: int, segmented: bool) -> np.ndarray:
  """The evaluation steps of a reference: [0, num_steps], or ``REFERENCE_SEGMENTS`` equal
  segments when it is checkpointed (where a preemption can stop it)."""
  if not segmented:
    return np.array([0, num_steps])
  return np.unique(np.linspace(0, num_steps, REFERENCE_SEGMENTS + 1).round().astype(np.int64))


def train_references(config: ml_collections.ConfigDict, p: Plan, f_out: dict[str, np.ndarray],
                     workdir: epath.Path | None, f_probabilities: Any = None
                     ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
  """Step 3: every reference's test predictions and accuracy per seed (and probabilities, see
  ``train_reference``), and T_0 per seed. ``f_probabilities``: F's recorded probabilities
  [S, E, N, K] (on device), where "F at T_0" takes its own (NaN for undefined seeds)."""
  refs = config.references
  out = {name: train_reference(config, name, p.data, p.ds, p.seed_ids,
                               _reference_labels(ref, f_out, None), workdir)
         for name, ref in refs.items() if ref.trained_on not in _T0_DEFINED}
  t0 = scoring.t0_indices(config, f_out["test_acc"], f_out["predictions"], out, p.ds.y_test_flat,
                          p.ds.num_classes)
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
      if f_probabilities is not None and _soft(config):
        o["probabilities"] = np.asarray(sharding.to_host(f_probabilities[rows, at_t0]),
                                        np.float32)
    else:
      o = {k: np.array(v) for k, v in train_reference(
          config, name, p.data, p.ds, p.seed_ids, _reference_labels(refs[name], f_out, at_t0),
          workdir).items()}
    o["predictions"][~reached] = scoring.UNDEFINED
    if "probe_predictions" in o:
      o["probe_predictions"][~reached] = scoring.UNDEFINED
    if "probabilities" in o:  # NaN rows: undefined (soft measures NaN for those seeds)
      o["probabilities"] = np.where(reached[:, None, None], o["probabilities"], np.nan)
    o["test_acc"] = np.where(reached, o["test_acc"], np.nan)
    out[name] = o
  return {name: out[name] for name in refs}, t0


def score(config: ml_collections.ConfigDict, p: Plan, f_dev: Mapping[str, Any],
          f_out: Mapping[str, np.ndarray], refs: dict[str, dict[str, np.ndarray]],
          t0: np.ndarray) -> dict[str, np.ndarray]:
  """Step 4: the arrays of ``results.npz`` (README: results format): what was recorded, then
  every score by ``scoring.score_run``, on device from F's device predictions ``f_dev``
  (``f_out`` are their host copies)."""
  arrays: dict[str, np.ndarray] = {
      "steps": p.eval_at, "seed_ids": p.seed_ids, "y_test": p.ds.y_test_flat.astype(np.int32),
      "num_classes": np.int64(p.ds.num_classes), "predictions": f_out["predictions"],
      **{k: f_out[k] for k in engine.BUFFER_KEYS}, **resolved_choices(config, p)}
  if p.ds.y_test.ndim == 2:  # sequences [M, P]: scored per position too (scoring.score_run)
    arrays["num_positions"] = np.int64(p.ds.y_test.shape[1])
  grid = 0 if p.probe is None else len(p.probe)
  if p.probe is not None:
    arrays["probe_inputs"] = p.probe
    arrays["probe_predictions"] = f_out["probe_predictions"][..., :grid]
  arrays["reference_names"] = np.array(list(refs), dtype=str)
  for name, out in refs.items():
    arrays[results_lib.ref_key(name, "predictions")] = out["predictions"]
    arrays[results_lib.ref_key(name, "test_acc")] = out["test_acc"]
    if "probabilities" in out:
      arrays[results_lib.soft_key(name, "probabilities")] = out["probabilities"]
  if config.eval.get("store_probabilities", False) and "probabilities" in f_dev:
    arrays["probabilities"] = sharding.to_host(f_dev["probabilities"])
  start = grid
  for kind, (x, y) in p.surrogates.items():  # recorded after the probe grid in x_probe
    cut = slice(start, start + len(y))
    start += len(y)
    f = f_out["probe_predictions"][..., cut]
    key = functools.partial(results_lib.surrogate_key, kind)
    arrays.update({key("inputs"): x, key("labels"): y, key("predictions"): f,
                   key("acc"): (f == y).mean(axis=-1)})
    for name, r in refs.items():
      arrays[key("ref", name, "predictions")] = r["probe_predictions"][..., cut]
  arrays.update(scoring.t0_arrays(config, p.eval_at, t0))
  return scoring.score_run(config, arrays, f_dev["predictions"], f_dev.get("probabilities"))


def init_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins the multi-process job of ``config.distributed`` (once per process), then checks that
  every process was started with the same run: a peer with another config is refused before
  any training, naming the differing fields (``sgd_phases.cluster``)."""
  if not config.distributed.enabled:
    return
  cluster.join(config)
  cluster.check_same_run(config)


def train(config: ml_collections.ConfigDict, workdir: io_lib.PathLike | None, *,
          dataset: datasets_lib.InMemoryData | None = None,
          trained_f: TrainedF | None = None) -> Results:
  """Trains F and the references for every seed and scores every evaluation (module doc).

  ``dataset``: arrays from ``datasets.from_arrays`` to train on instead of
  ``config.dataset``'s (whose common fields, e.g. label_noise, still apply; see
  ``datasets.with_data``). ``trained_f``: where F was already trained
  (``sgd_phases.sweep``'s nested programs), asked for this config's outputs before F is
  trained here.
  """
  config = workdir_lib.pin(config, dataset)  # a copy: its data's and models' fingerprints in
  config_lib.validate(config)
  init_distributed(config)
  workdir = io_lib.path(workdir, "workdir") if workdir is not None else None
  if workdir is not None:
    workdir_lib.check_owner(workdir, workdir_lib.run_command(config))  # before any write
    cluster.check_shared_workdir(workdir)
    done = workdir_lib.check(config, workdir)
    if done is not None:
      return done
  # SIGTERM stops the run at the next evaluation or stage where it can resume from there (a
  # workdir with checkpoints); with nothing to resume from, SIGTERM ends it as usual
  resumable = workdir is not None and bool(config.checkpoint_every)
  with preemption.watch() if resumable else contextlib.nullcontext():
    return _train(config, workdir, trained_f, resumable)


def _train(config: ml_collections.ConfigDict, workdir: Any, trained_f: TrainedF | None,
           resumable: bool) -> Results:
  p = plan(config)  # everything that can fail on bad input, before config.json is written
  if workdir is not None:  # the first write: the workdir is this command's from now on
    workdir_lib.claim(workdir, workdir_lib.run_command(config))
  writer = io_lib.MetricWriter(workdir, enabled=workdir is not None and io_lib.is_writer())
  if workdir is not None and io_lib.is_writer():  # multi-host: one writer
    io_lib.write_json(workdir / io_lib.CONFIG_FILE, config_lib.to_dict(config))
    writer.write_hparams(config_lib.to_dict(config))
  try:  # the writer is closed (its rows flushed) however the run ends
    f_dev = None if trained_f is None else trained_f(config, p.train_predictions)
    if f_dev is None:
      try:
        f_dev = train_f(config, p, workdir, writer)
      except FloatingPointError as e:  # diverged: this attempt must not block the corrected one
        workdir_lib.mark_failed(workdir, config, e)
        raise
    # gathered for results.npz; F's probabilities [S, E, N, K] stay on device (soft measures)
    f_host = {k: sharding.to_host(v) for k, v in f_dev.items() if k != "probabilities"}
    if resumable:
      preemption.stop_if_requested("F's training")
    refs, t0 = train_references(config, p, f_host, workdir, f_dev.get("probabilities"))
    if resumable:
      preemption.stop_if_requested("the references")
    results = Results(score(config, p, f_dev, f_host, refs, t0), workdir)
    if workdir is not None and io_lib.is_writer():
      _write_metrics(writer, results)
      io_lib.write_npz(workdir / io_lib.RESULTS_FILE, results.arrays)
  finally:
    writer.close()
  if workdir is not None:  # every process may read results.npz next: only once it is written
    io_lib.barrier("results written")
  return results


def _write_metrics(writer: io_lib.MetricWriter, results: Results) -> None:
  """metrics.jsonl: one row per evaluation, means over seeds (rewritten whole at the end)."""
  writer.reset()
  a = results.arrays
  for k, step in enumerate(a["steps"]):
    row = {n: float(np.mean(a[n][:, k])) for n in engine.BUFFER_KEYS}
    for r in results.reference_names:
      for f in ("i_fy", "mu", "i_fy_given_l"):
        row[f"{r}/{f}"] = float(np.mean(a[results_lib.mi_key(r, f)][:, k]))
      for f, v in results.soft(r).items():
        if v.ndim == 2:
          row[f"{r}/{f}"] = float(np.mean(v[:, k]))
    writer.write_scalars(int(step), row)
