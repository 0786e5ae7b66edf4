"""Nested (point × seed) programs of a sweep: the F of many grid points trained as one.

    groups = nested.nested_groups(configs)          # indices of configs one program can train
    outs = nested.train_f_nested([configs[i] for i in groups[0]])  # per config: run_seeds' outputs

Pending points whose F differs only in ``VECTORIZABLE`` fields (learning rate and weight decay
with a constant schedule, via ``optax.inject_hyperparams`` in each seed's optimizer state;
label-noise rate, via per-seed training labels) are trained as one compiled program over a
(point × seed) axis by :func:`train_f_nested` on ``engine.run_seeds``; each point's
``run(config, workdir, trained_f=...)`` hands its share to ``train_lib.train``, which then
trains only the references. Points with the same F share it. ``sgd_phases.sweep``'s
``vectorize``: ``auto`` nests where the engine vmaps seeds (:func:`auto_nests`,
``engine.resolve_strategy``; where ``benchmarks/sweep_bench.py`` measured it faster), ``on``
wherever possible, ``off`` never. A nested program that fails (e.g. one learning rate diverges)
is retried point by point (:func:`nest`), so each point still succeeds or fails on its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from sgd_phases import engine, eval_lib, sharding, steps, train_lib
from sgd_phases import workdir as workdir_lib
from sgd_phases import datasets as datasets_lib

VECTORIZABLE = ("optimizer.learning_rate", "optimizer.weight_decay", "dataset.label_noise")


def _f_dict(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """F's defining fields (``config_lib.F_FIELDS``) as a dict; None for a non-training config
  and for one recording surrogate test sets (``eval.surrogates``: never nested or shared)."""
  if "eval" in config and config.eval.get("surrogates"):
    return None
  try:
    return workdir_lib.identity(config, "f")
  except ValueError:  # its data or model cannot be pinned: not nested, the point fails alone
    return None


def f_key(config: ml_collections.ConfigDict) -> str | None:
  """Identity of F's training run (two configs with equal keys train the same F)."""
  d = _f_dict(config)
  return None if d is None else json.dumps(d, sort_keys=True)


def _group_key(config: ml_collections.ConfigDict) -> str | None:
  d = _f_dict(config)
  if d is None:
    return None
  for path in VECTORIZABLE:
    head, leaf = path.split(".")
    d[head] = {k: v for k, v in d[head].items() if k != leaf}
  return json.dumps([d, train_lib.needed_train_predictions(config)], sort_keys=True)


def nested_groups(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
  """Indices of configs that one nested program can train (distinct F per group, in order).

  Configs with the same F (``f_key``) appear once; configs differing only in ``VECTORIZABLE``
  fields share a group, except that learning rate / weight decay may only differ under a
  constant schedule. Configs without the training fields are left out.
  """
  groups: dict[str, list[int]] = {}
  seen: set[str] = set()
  for i, c in enumerate(configs):
    key, g = f_key(c), _group_key(c)
    if key is None or key in seen:
      continue
    seen.add(key)
    varies_opt = False
    if g in groups:
      o0, o = configs[groups[g][0]].optimizer, c.optimizer
      varies_opt = (o0.learning_rate, o0.weight_decay) != (o.learning_rate, o.weight_decay)
    if varies_opt and c.optimizer.schedule != "constant":
      g = f"{g}#{i}"  # a schedule ties the learning rate into its shape: train apart
    groups.setdefault(g, []).append(i)
  return list(groups.values())


def auto_nests(config: ml_collections.ConfigDict, backend: str | None = None,
               ds: datasets_lib.Dataset | None = None) -> bool:
  """``vectorize=auto``: nest where the engine vmaps seeds (benchmarks/sweep_bench.py measured
  the nested program faster there); not where it maps them (convolutions, and dense models of
  ``engine.CPU_MAP_MIN_PARAMS`` or more parameters, on CPU). ``ds``: the dataset, to count
  the model's parameters (default: loaded from ``config.dataset``)."""
  ds = ds if ds is not None else datasets_lib.get_dataset(config.dataset)
  tr = engine.make_trainer(config.model, config.model_kwargs, config.optimizer, config.loss,
                              config.batch_size, 1, ds.num_classes)
  return engine.resolve_strategy(config.seed_strategy, config.model, backend,
                                    engine.num_params(tr, ds.x_train[0])) == "vmap"


def _nested_trainer(c0: ml_collections.ConfigDict, ds: datasets_lib.Dataset, num_steps: int,
                    hparams: Sequence[str]) -> steps.Trainer:
  """The engine's trainer, with ``hparams`` injected into the optimizer state."""
  tr = engine.make_trainer(c0.model, c0.model_kwargs, c0.optimizer, c0.loss, c0.batch_size,
                           num_steps, ds.num_classes, c0.eval.batch_size,
                           sampler=ds.meta.get("train_sampler"))
  if not hparams:
    return tr
  o = c0.optimizer
  decay = "weight_decay" in hparams or o.weight_decay > 0

  def factory(learning_rate, weight_decay):
    if o.name == "adamw":
      return optax.adamw(learning_rate, weight_decay=weight_decay)
    tx = (optax.sgd(learning_rate, momentum=o.momentum or None, nesterov=bool(o.nesterov))
          if o.name == "sgd" else optax.adam(learning_rate))
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if decay else tx

  tx = optax.inject_hyperparams(factory)(learning_rate=o.learning_rate,
                                         weight_decay=o.weight_decay)
  return dataclasses.replace(tr, tx=tx)


def train_f_nested(configs: Sequence[ml_collections.ConfigDict],
                   ckpt_dir: epath.Path | None = None,
                   first_ds: datasets_lib.Dataset | None = None) -> list[dict[str, np.ndarray]]:
  """Trains F of every config as ONE program over a (config × seed) axis.

  Configs must differ only in ``VECTORIZABLE`` fields (``nested_groups``). Entry (p, i) uses
  seed i's keys, so each config's share equals what ``train_lib.train`` computes for it up to
  float rounding. Returns, per config, ``run_seeds``' outputs [num_seeds, ...] (numpy).
  ``first_ds``: ``configs[0]``'s dataset if already loaded (not read again).
  """
  c0 = configs[0]
  groups = nested_groups(configs)
  if len(groups) != 1 or len(groups[0]) != len(configs):
    raise ValueError("configs: differ in fields other than "
                     f"{VECTORIZABLE} (or repeat one F); cannot train them as one program")
  dss = [first_ds if i == 0 and first_ds is not None else datasets_lib.get_dataset(c.dataset)
         for i, c in enumerate(configs)]
  for c, ds in zip(configs[1:], dss[1:]):
    for a in ("x_train", "x_test", "y_test", "y_train_clean"):
      if not np.array_equal(getattr(ds, a), getattr(dss[0], a)):
        raise ValueError(f"configs: dataset {c.dataset.to_dict()} changes {a}, not only the "
                         "training labels; cannot train them as one program")
  probe = engine.probe_grid(c0.eval.probe_grid) if c0.eval.probe_grid else None
  data = engine.EvalData.create(dss[0], c0.eval.train_eval_size, probe)
  num_steps = train_lib.num_train_steps(c0, len(dss[0].y_train))
  eval_at = eval_lib.eval_steps(num_steps, c0.eval.schedule, c0.eval.num_points, c0.eval.every)
  s, p = int(c0.num_seeds), len(configs)
  per_point = {h: np.array([c.optimizer[h] for c in configs], np.float32)
               for h in ("learning_rate", "weight_decay")}
  hparams = [h for h, v in per_point.items() if np.unique(v).size > 1]
  tr = _nested_trainer(c0, dss[0], num_steps, hparams)
  per_entry = {h: np.repeat(per_point[h], s) for h in hparams}

  def set_hparams(states: Any, rows: np.ndarray) -> Any:
    opt = states.opt_state
    hp = dict(opt.hyperparams, **{h: jnp.asarray(v[rows]) for h, v in per_entry.items()})
    return states.replace(opt_state=opt._replace(hyperparams=hp))

  strategy = engine.resolve_strategy(c0.seed_strategy, c0.model,
                                     num_params=engine.num_params(tr, dss[0].x_train[0]))
  out = engine.run_seeds(
      tr, data, np.repeat(np.stack([ds.y_train for ds in dss]), s, axis=0),
      engine.SeedSet(c0.seed, np.tile(np.arange(s), p)), eval_at,
      engine.RunOptions(strategy=strategy, seeds_per_chunk=c0.seeds_per_chunk,
                        lanes=c0.get("seed_lanes", 0),
                        ckpt_dir=ckpt_dir,
                        checkpoint_every=c0.checkpoint_every if ckpt_dir is not None else 0,
                        progress=c0.progress, desc=f"F x{p}",
                        train_predictions=train_lib.needed_train_predictions(c0),
                        probabilities=train_lib.probabilities_dtype(c0)),
      init_transform=set_hparams if hparams else None)
  out = {k: sharding.to_host(v) for k, v in out.items()}  # (gathered in a multi-process job)
  return [{k: v[i * s:(i + 1) * s] for k, v in out.items()} for i in range(p)]


class Nested(NamedTuple):
  """One point's F from a nested program: its folder under ``_nested/``, which train-set
  predictions it recorded, and its outputs."""
  tag: str
  mode: str
  outputs: dict[str, np.ndarray]


def nest(configs: list[ml_collections.ConfigDict], root: epath.Path, vectorize: str
         ) -> dict[str, Nested]:
  """f_key -> its nested F, for every group of ``configs`` worth nesting (``vectorize``: "auto"
  or "on"); checkpoints under ``root/_nested/<tag>``. A group whose program fails is left out
  (its points then train one by one)."""
  found: dict[str, Nested] = {}
  for group in nested_groups(configs):
    members = [configs[i] for i in group]
    shared = sum(f_key(c) == f_key(members[0]) for c in configs) > 1
    if not (len(group) > 1 or shared):
      continue
    first_ds = datasets_lib.get_dataset(members[0].dataset) if vectorize == "auto" else None
    if first_ds is not None and not auto_nests(members[0], ds=first_ds):
      continue
    tag = zlib.crc32("|".join(f_key(c) for c in members).encode())
    try:
      outs = train_f_nested(members, root / "_nested" / f"{tag:08x}", first_ds)
    except Exception:  # e.g. one learning rate diverges: let each point fail on its own
      logging.exception("nested training of %d points failed; training them one by one",
                        len(members))
      continue
    mode = train_lib.needed_train_predictions(members[0])
    found.update({f_key(c): Nested(f"{tag:08x}", mode, o) for c, o in zip(members, outs)})
  return found
