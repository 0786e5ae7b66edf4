"""Configs shared by every experiment: defaults, reference classifiers, validation.

    config = config_lib.base_config(dataset="ball2d_sinusoid", model="mlp")
    config.references.linear = config_lib.reference_config(model="linear")
    config_lib.validate(config)   # one ValueError naming the bad field, before any compute

A training config has these fields (all commented below); experiments start from
``base_config`` and override what they need.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import ml_collections
from ml_collections import config_dict

from sgd_phases import stats, steps

SEED_STRATEGIES = ("auto",) + steps.SEED_STRATEGIES
LOSSES = ("cross_entropy", "squared")
TRAINED_ON = ("labels", "final_predictions", "predictions_at_T0", "snapshot_at_T0",
              "closed_form")
UNTRAINED = ("snapshot_at_T0", "closed_form")  # references that no SGD trains
T0_RULES = stats.T0_RULES
EVAL_SCHEDULES = ("log", "every")

# What a run *is*: the fields that change the trained networks and what they record.
# F_FIELDS decide F's training (sgd_phases.sweep shares one trained F between configs equal on
# them); RUN_FIELDS add the references and T_0 (which decides what "F at T_0" references are).
# Every other field is an analysis or operational option (bias_correction, null, the
# experiments' summary options, progress, checkpoint_every, ...): a finished run is re-scored
# from its stored predictions when only those change (train_lib.train), never retrained.
# ``model_fingerprint`` (and ``references.<name>.model_fingerprint``): a user model's source
# hash, filled in by ``workdir.pin`` (sgd_phases.models.fingerprint); absent for built-in models.
F_FIELDS = ("dataset", "model", "model_kwargs", "model_fingerprint", "loss", "optimizer",
            "batch_size", "num_steps", "num_epochs", "seed", "num_seeds", "eval")
RUN_FIELDS = F_FIELDS + ("seed_strategy", "references", "t0")
SCORING_FIELDS = ("bias_correction", "null", "soft")  # re-scored without training
PROBABILITY_DTYPES = ("float32", "float16")
# Fields added to a run's identity after runs were recorded: a stored config without them had
# their default (identity fills it in, so those runs stay the same runs).
LATER_DEFAULTS = {"eval": {"store_probabilities": False, "probabilities_dtype": "float32"}}
# Every field of ``base_config``: what the engine reads. An experiment's own fields (widths,
# noise_rates, ...) sit beside them in its config; ``engine_part`` leaves them out.
ENGINE_FIELDS = RUN_FIELDS + ("seeds_per_chunk", "seed_lanes", "bias_correction", "null", "soft",
                              "checkpoint_every", "overwrite", "progress", "distributed")


def optimizer_config(name: str = "sgd", learning_rate: float = 0.1, momentum: float = 0.0,
                     weight_decay: float = 0.0, schedule: str = "constant",
                     nesterov: bool = False, warmup_steps: int = 0) -> ml_collections.ConfigDict:
  """Optimizer fields (see ``sgd_phases.optim``)."""
  return ml_collections.ConfigDict(dict(
      name=name,                    # sgd | adam | adamw
      learning_rate=learning_rate,  # peak learning rate
      momentum=momentum,            # SGD momentum (0 = plain SGD, the paper's setting)
      nesterov=nesterov,            # Nesterov momentum (SGD only)
      weight_decay=weight_decay,    # decoupled L2 added to the gradient (adamw: its own)
      schedule=schedule,            # constant | cosine | warmup_cosine | step
      warmup_steps=warmup_steps,    # warmup_cosine only
  ))


def surrogate_config(kinds: tuple[str, ...] = ("gaussian", "first_moment"), size: int = 10_000,
                     seed: int = 0) -> ml_collections.ConfigDict:
  """``eval.surrogates``: which surrogate test sets (``sgd_phases.surrogates.KINDS``), how many
  inputs each, and the numpy seed of the (fixed per run) draw."""
  return ml_collections.ConfigDict(dict(kinds=tuple(kinds), size=size, seed=seed))


def reference_config(model: str = "linear", trained_on: str = "labels", num_steps: int = 1000,
                     batch_size: int = 64, learning_rate: float = 0.1,
                     **model_kwargs: Any) -> ml_collections.ConfigDict:
  """A reference classifier L: trained by the same engine, per seed."""
  return ml_collections.ConfigDict(dict(
      model=model,                  # registry name (sgd_phases.models); ignored for snapshot_at_T0
      model_kwargs=dict(model_kwargs),
      # labels: the (noisy) training labels; final_predictions: F_T's predictions on the train
      # set; predictions_at_T0: F_T0's; snapshot_at_T0: no training, L := F at step T_0;
      # closed_form: no training, a closed-form next-token predictor named by ``model``
      # (sgd_phases.sequence_references.CLOSED_FORM; sequence datasets).
      trained_on=trained_on,
      num_steps=num_steps,          # SGD steps for L
      batch_size=batch_size,
      loss="cross_entropy",
      optimizer=optimizer_config(learning_rate=learning_rate),
  ))


def base_config(dataset: str = "ball2d_sinusoid", model: str = "mlp",
                **model_kwargs: Any) -> ml_collections.ConfigDict:
  """The default training config (small, CPU-friendly)."""
  from sgd_phases import datasets  # local import: datasets pulls in tfds

  c = ml_collections.ConfigDict()
  c.dataset = datasets.default_config(dataset)  # see sgd_phases.datasets.default_config
  c.model = model                   # F's architecture (sgd_phases.models registry name)
  c.model_kwargs = ml_collections.ConfigDict(dict(model_kwargs), type_safe=False)
  c.loss = "cross_entropy"          # cross_entropy | squared (0.5·||logits − onehot||²)
  c.optimizer = optimizer_config()
  c.batch_size = 64
  c.num_steps = 2000                # SGD steps of F (num_epochs overrides it when set)
  c.num_epochs = config_dict.placeholder(float)
  c.seed = 0                        # seed i uses fold_in(key(seed), i): init and data order
  c.num_seeds = 4
  c.seeds_per_chunk = 0             # seeds per compiled program (0 = all at once)
  c.seed_lanes = 0                  # at most this many groups of seeds train side by side on
                                    # CPU threads (map strategy, one device; same results):
                                    # 0 = one per usable core, 1 = none (sgd_phases.lanes)
  c.seed_strategy = "auto"          # vmap | map (sequential inside jit) | unroll (no loops in
                                    # the programs; Python drives the steps) | auto (per backend)
  c.eval = ml_collections.ConfigDict(dict(
      schedule="log",               # log: ~num_points log-spaced steps + 0 + last; every: every n
      num_points=100,
      every=0,                      # used when schedule == "every"
      batch_size=2000,              # test examples per forward pass
      # train examples (the first ones: a fixed subset) for train accuracy/loss at each
      # evaluation; 2000 (s.e. of an accuracy <= 1.1 points) keeps the evaluations cheap
      # (benchmarks/eval_overhead.py); experiments that need every example set it higher.
      # Sequence data count positions, as their test set does (2000: ~21 sequences of T=100)
      train_eval_size=2000,
      probe_grid=0,                 # >0: also record predictions on a G×G grid (2-D inputs)
      # F's probabilities [S, E, N, K] are recorded on device for the soft measures (config.soft);
      # True also stores them in results.npz as `probabilities` (analysis elsewhere, re-scoring
      # the soft measures under other options)
      store_probabilities=False,
      probabilities_dtype="float32",  # float32 | float16 (half the memory; clipped at 2^-24)
      # optional, not set here (a run's identity): surrogates=surrogate_config(...), test sets
      # matching only the class-conditional moments, recorded like the probe grid
  ))
  c.references = ml_collections.ConfigDict()   # name -> reference_config(...)
  c.t0 = ml_collections.ConfigDict(dict(
      rule="acc_reaches_reference",  # or mu_ratio (last step with μ ≥ (1−δ)·I(F;Y))
      reference="linear",           # which reference defines T_0 ("" = none)
      delta=0.1,                    # for mu_ratio
  ))
  c.bias_correction = config_dict.placeholder(str)  # None | miller_madow
  c.null = ml_collections.ConfigDict(dict(
      # draws of the conditional-independence null of every μ_Y(F_t;L): L permuted within each
      # class of Y (mutual_info.conditional_null), stored as null/<ref>/mu [P, S, E]; 0 = none
      num_permutations=100,
  ))
  c.soft = ml_collections.ConfigDict(dict(
      # F's predictive distribution against each reference's (sgd_phases.soft_measures): KL both
      # ways, JS, cross-entropies, and F as a mixture of the references: soft/<ref>/...
      enabled=True,                 # False: no probability buffer on device, no soft measures
      # the references of the mixture fit, in order (the uniform distribution is always added);
      # () = every reference with a distribution
      mixture=(),
  ))
  c.checkpoint_every = 10           # save a checkpoint every n evaluations (0 = never)
  c.overwrite = False               # replace a workdir that holds a different config
  c.progress = True                 # tqdm progress bar
  c.distributed = ml_collections.ConfigDict(dict(  # multi-process jobs (one process per host)
      enabled=False,                # call jax.distributed.initialize() before anything else
      # unset (None) = auto-detection, as on a Cloud TPU VM or under Slurm / Open MPI
      coordinator_address=config_dict.placeholder(str),   # "host:port" of process 0
      num_processes=config_dict.placeholder(int),
      process_id=config_dict.placeholder(int),
      heartbeat_timeout_s=100,      # a peer silent this long fails the job (no hang)
      initialization_timeout_s=120,  # a peer that never joins fails the job after this long
  ))
  return c


def _require(cond: bool, field: str, msg: str) -> None:
  if not cond:
    raise ValueError(f"config.{field}: {msg}")


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks types and ranges; raises one ValueError naming the field. No compute."""
  for f in ("batch_size", "num_steps", "num_seeds"):
    _require(_is_int(config[f]) and config[f] >= 1, f, f"must be a positive int, got {config[f]!r}")
  _require(_is_int(config.seed) and config.seed >= 0, "seed", "must be a non-negative int")
  _require(_is_int(config.seeds_per_chunk) and config.seeds_per_chunk >= 0, "seeds_per_chunk",
           "must be an int >= 0")
  _require(_is_int(config.get("seed_lanes", 0)) and config.get("seed_lanes", 0) >= 0,
           "seed_lanes", "must be an int >= 0 (0 = one lane per core)")
  _require(config.seed_strategy in SEED_STRATEGIES, "seed_strategy", f"not in {SEED_STRATEGIES}")
  _require(config.loss in LOSSES, "loss", f"{config.loss!r} not in {LOSSES}")
  _check_model(config.model, "model", config.get("model_kwargs"))
  if config.get("num_epochs") is not None:
    _require(config.num_epochs > 0, "num_epochs", "must be > 0")
  _validate_optimizer(config.optimizer, "optimizer")
  ev = config.eval
  _require(ev.schedule in EVAL_SCHEDULES, "eval.schedule", f"not in {EVAL_SCHEDULES}")
  _require(_is_int(ev.num_points) and ev.num_points >= 2, "eval.num_points", "must be an int >= 2")
  _require(_is_int(ev.every) and ev.every >= 0, "eval.every", "must be an int >= 0")
  _require(ev.schedule != "every" or ev.every >= 1, "eval.every", "must be >= 1 for 'every'")
  _require(_is_int(ev.batch_size) and ev.batch_size >= 1, "eval.batch_size", "must be >= 1")
  _require(_is_int(ev.train_eval_size) and ev.train_eval_size >= 1, "eval.train_eval_size",
           "must be >= 1")
  _require(_is_int(ev.probe_grid) and 0 <= ev.probe_grid <= 1024, "eval.probe_grid",
           "must be an int in [0, 1024]")
  sur = ev.get("surrogates")
  if sur:  # optional: surrogate test sets (sgd_phases.surrogates)
    from sgd_phases import surrogates
    _require(len(sur.kinds) >= 1 and all(k in surrogates.KINDS for k in sur.kinds),
             "eval.surrogates.kinds", f"must be a non-empty subset of {surrogates.KINDS}")
    _require(_is_int(sur.size) and sur.size >= 2, "eval.surrogates.size", "must be an int >= 2")
    _require(_is_int(sur.seed), "eval.surrogates.seed", "must be an int")
  for name, ref in config.references.items():
    field = f"references.{name}"
    _require(ref.trained_on in TRAINED_ON, f"{field}.trained_on", f"not in {TRAINED_ON}")
    if ref.trained_on == "closed_form":
      from sgd_phases import sequence_references
      sequence_references.check_closed_form(ref.model, dict(ref.model_kwargs), field)
    elif ref.trained_on != "snapshot_at_T0":
      _check_model(ref.model, f"{field}.model", ref.get("model_kwargs"))
      _require(_is_int(ref.num_steps) and ref.num_steps >= 1, f"{field}.num_steps", "must be >= 1")
      _require(_is_int(ref.batch_size) and ref.batch_size >= 1, f"{field}.batch_size", "must be >= 1")
      _require(ref.loss in LOSSES, f"{field}.loss", f"not in {LOSSES}")
      _validate_optimizer(ref.optimizer, f"{field}.optimizer")
    if ref.trained_on in ("predictions_at_T0", "snapshot_at_T0"):
      _require(bool(config.t0.reference) and config.t0.reference in config.references
               and config.references[config.t0.reference].trained_on in (
                   "labels", "final_predictions", "closed_form"),
               f"{field}.trained_on", "needs config.t0.reference naming a reference trained on "
               "labels or final_predictions, or a closed-form one")
  _validate_soft(config)
  _require(config.t0.rule in T0_RULES, "t0.rule", f"{config.t0.rule!r} not in {T0_RULES}")
  _require(not config.t0.reference or config.t0.reference in config.references, "t0.reference",
           f"{config.t0.reference!r} is not a configured reference {list(config.references)}")
  _require(0.0 <= config.t0.delta < 1.0, "t0.delta", "must be in [0, 1)")
  _require(config.get("bias_correction") in (None, "miller_madow"), "bias_correction",
           "must be None or 'miller_madow'")
  _require(_is_int(config.checkpoint_every) and config.checkpoint_every >= 0, "checkpoint_every",
           "must be an int >= 0")
  _require(_is_int(config.null.num_permutations) and config.null.num_permutations >= 0,
           "null.num_permutations", "must be an int >= 0")
  d = config.distributed
  _require(isinstance(d.enabled, bool), "distributed.enabled", "must be a bool")
  _require(d.num_processes is None or (_is_int(d.num_processes) and d.num_processes >= 1),
           "distributed.num_processes", "must be None or an int >= 1")
  _require(d.process_id is None or (_is_int(d.process_id) and d.process_id >= 0 and (
      d.num_processes is None or d.process_id < d.num_processes)), "distributed.process_id",
           "must be None or an int in [0, num_processes)")
  _require(_is_int(d.heartbeat_timeout_s) and d.heartbeat_timeout_s >= 1,
           "distributed.heartbeat_timeout_s", "must be an int >= 1")
  _require(_is_int(d.get("initialization_timeout_s", 120)) and
           d.get("initialization_timeout_s", 120) >= 1,
           "distributed.initialization_timeout_s", "must be an int >= 1")


def _validate_soft(config: ml_collections.ConfigDict) -> None:
  """``eval.store_probabilities``, ``eval.probabilities_dtype`` and ``soft``."""
  from sgd_phases import results, soft_measures
  ev, soft = config.eval, config.get("soft")
  _require(isinstance(ev.get("store_probabilities", False), bool), "eval.store_probabilities",
           "must be a bool")
  _require(ev.get("probabilities_dtype", "float32") in PROBABILITY_DTYPES,
           "eval.probabilities_dtype", f"not in {PROBABILITY_DTYPES}")
  if soft is None:
    return
  _require(isinstance(soft.enabled, bool), "soft.enabled", "must be a bool")
  names = list(soft.mixture) if isinstance(soft.mixture, (list, tuple)) else None
  _require(names is not None and all(n in config.references for n in names)
           and len(set(names)) == len(names), "soft.mixture",
           f"must list distinct configured references {list(config.references)}, got "
           f"{soft.mixture!r}")
  _require(len(names or config.references) < soft_measures.MAX_COMPONENTS, "soft.mixture",
           f"at most {soft_measures.MAX_COMPONENTS - 1} references (the fit solves a problem "
           "per face of the simplex)")
  if soft.enabled:
    for name in config.references:
      _require(name not in results.SOFT_RESERVED, f"references.{name}",
               f"{name!r} is reserved by the soft measures' keys {results.SOFT_RESERVED}")


def _check_model(name: Any, field: str, kwargs: Any = None) -> None:
  """A registered model or an importable ``package.module:ClassName`` whose keyword arguments
  include every key of ``kwargs`` (its ``model_kwargs``); else one ValueError naming the field
  and the real cause (an import error inside the module, a missing ``num_classes`` field, an
  option the model does not take, ...)."""
  from sgd_phases import models
  try:
    models.resolve(name)
  except ValueError as e:
    raise ValueError(f"config.{field}: {e}") from e.__cause__
  try:
    models.check_kwargs(name, kwargs or ())
  except ValueError as e:
    raise ValueError(f"config.{field}_kwargs: {e}") from None


def validate_for_data(config: ml_collections.ConfigDict, x_train_shape: tuple[int, ...],
                      num_classes: int, fresh_batches: bool = False) -> None:
  """Checks against the loaded data, before any compute or write: batch sizes that fit the
  ``[n, ...]`` training inputs, the probe grid's 2-D inputs, and every model's arguments.
  ``fresh_batches``: every batch is drawn fresh (a dataset's device sampler): no stored
  training set bounds the batch size, and there are no epochs."""
  from sgd_phases import models

  n = x_train_shape[0]
  nets = {"": config} | {f"references.{k}.": r for k, r in config.references.items()
                         if r.trained_on not in UNTRAINED}
  for prefix, net in nets.items():
    try:
      models.get_model(net.model, num_classes, **net.model_kwargs)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.{prefix}model_kwargs: {e}") from None
  if fresh_batches:
    _require(config.get("num_epochs") is None, "num_epochs",
             "fresh training sequences every step (dataset.train_sampling='device') have no "
             "epochs; set num_steps")
  _require(fresh_batches or config.batch_size <= n, "batch_size",
           f"{config.batch_size} is larger than the {n} training examples")
  for name, ref in config.references.items():
    if ref.trained_on not in UNTRAINED and not fresh_batches:
      _require(ref.batch_size <= n, f"references.{name}.batch_size",
               f"{ref.batch_size} is larger than the {n} training examples")
  _require(not config.eval.probe_grid or tuple(x_train_shape[1:]) == (2,), "eval.probe_grid",
           f"needs 2-D inputs; the dataset's inputs have shape {tuple(x_train_shape[1:])}")


def validate_outputs(config: ml_collections.ConfigDict, ds: Any) -> None:
  """What the data decide, checked before anything is trained or written: K fits the MI
  kernels where references are scored (``mutual_info.validate``, as scoring runs it), and
  every trained network (F and each reference trained by SGD) maps one input to logits of the
  labels' shape -- [K] per example, [T, K] per sequence of T tokens (``jax.eval_shape``: no
  compute). One ValueError naming the field. ``ds``: the loaded ``datasets.Dataset``."""
  import jax

  from sgd_phases import models, mutual_info

  y = ds.y_test_flat
  try:  # every reference is scored by the information measures
    if config.references:
      mutual_info.validate(y[None], y[None], y, ds.num_classes)
  except ValueError as e:
    raise ValueError(f"config.dataset: {ds.name!r} has K = {ds.num_classes} classes (symbols), "
                     f"more than the information measures accept: {e}") from None
  want = tuple(ds.y_train.shape[1:]) + (ds.num_classes,)
  nets = {"model": config} | {f"references.{k}.model": r for k, r in config.references.items()
                              if r.trained_on not in UNTRAINED}
  for field, net in nets.items():
    model = models.get_model(net.model, ds.num_classes, **net.model_kwargs)
    out = jax.eval_shape(lambda x, m=model: m.init_with_output(jax.random.key(0), x)[0],
                         ds.x_train[:1])
    if tuple(out.shape[1:]) != want:
      per = " (one per position: a sequence model, e.g. transformer)" if len(want) > 1 else ""
      raise ValueError(f"config.{field}: {net.model!r} maps an input "
                       f"{list(ds.x_train.shape[1:])} to logits {list(out.shape[1:])}; the "
                       f"labels of {ds.name!r} need {list(want)}{per}")


def _validate_optimizer(opt: ml_collections.ConfigDict, field: str) -> None:
  from sgd_phases import optim

  _require(opt.name in optim.OPTIMIZERS, f"{field}.name", f"{opt.name!r} not in {optim.OPTIMIZERS}")
  _require(opt.schedule in optim.SCHEDULES, f"{field}.schedule",
           f"{opt.schedule!r} not in {optim.SCHEDULES}")
  _require(isinstance(opt.learning_rate, (int, float)) and opt.learning_rate > 0,
           f"{field}.learning_rate", f"must be > 0, got {opt.learning_rate!r}")
  _require(0.0 <= opt.momentum < 1.0, f"{field}.momentum", "must be in [0, 1)")
  _require(opt.weight_decay >= 0.0, f"{field}.weight_decay", "must be >= 0")


def engine_part(config: ml_collections.ConfigDict, keep: Iterable[str] = ()
                ) -> ml_collections.ConfigDict:
  """An unlocked copy of ``config`` with only the engine's fields (``ENGINE_FIELDS``, those it
  has) and ``keep``: what ``train_lib.train`` gets from an experiment's config."""
  c = config.copy_and_resolve_references()
  c.unlock()
  for field in [f for f in c.keys() if f not in ENGINE_FIELDS and f not in tuple(keep)]:
    del c[field]
  return c


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """JSON-friendly nested dict (tuples become lists)."""
  return json.loads(config.to_json())


PINNED_FIELDS = ("model_fingerprint",)  # filled in by workdir.pin where they apply


def identity(config: ml_collections.ConfigDict | dict[str, Any],
             fields: Iterable[str] = RUN_FIELDS) -> dict[str, Any] | None:
  """The sub-config of ``fields`` (``RUN_FIELDS``; ``F_FIELDS`` for F alone) as a JSON-friendly
  dict, ``PINNED_FIELDS`` where present; None when ``config`` is not a training config (lacks
  another of them). ``workdir.identity`` takes every identity through this, after pinning."""
  d = to_dict(config) if isinstance(config, ml_collections.ConfigDict) else config
  fields = tuple(fields)
  if not all(f in d for f in fields if f not in PINNED_FIELDS):
    return None
  out = {f: d[f] for f in fields if f in d}
  for f, defaults in LATER_DEFAULTS.items():
    if f in out and isinstance(out[f], dict):
      out[f] = {**defaults, **out[f]}
  return out


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
  """Dotted paths whose values differ between two nested dicts, as 'path: a -> b'."""
  out = []
  for k in sorted(set(a) | set(b)):
    path = f"{prefix}{k}"
    va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
    if isinstance(va, dict) and isinstance(vb, dict):
      out += diff(va, vb, prefix=path + ".")
    elif va != vb:
      out.append(f"{path}: {va!r} -> {vb!r}")
  return out
