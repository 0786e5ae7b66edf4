"""What a run is, and what may be reused from disk: the one owner of run identity, resume,
re-scoring, overwrite and every cache.

    config = workdir.pin(config)                  # every content fingerprint filled in
    ident = workdir.identity(config, "run")       # the fields that make the trained networks
    done = workdir.check(config, wd)              # Results of the same finished run, or None
    arrays = workdir.cached_npz(wd / "x.npz", ident, compute, what="F_lin")

One identity mechanism. :func:`pin` is the one place a fingerprint is filled in: the dataset's
content fingerprint (``datasets.with_data``, i.e. ``datasets.pin``) and every user model's
source fingerprint (``model_fingerprint``, ``sgd_phases.models.fingerprint``). :func:`identity`
is the one function every identity comes from: the fields of the pinned config that a kind of
reuse depends on --

* ``run`` (``config_lib.RUN_FIELDS``): a run's workdir (``config.json``), its reference caches,
  an experiment's F_lin, the processes of one job (``cluster.check_same_run``);
* ``f`` (``config_lib.F_FIELDS``): F alone, the key under which a sweep shares one trained F
  between points (``sweep.f_key``);
* ``experiment`` (every field but the operational ones): an experiment's summary.json, reused
  by a sweep point.

A live config (``ConfigDict``) is pinned before its fields are taken, so a config as written
(e.g. a sweep point: an npz folder without its fingerprint yet) and the config its run recorded
have equal identities; a stored one (a dict from config.json or a summary's ``identity``) was
recorded pinned and is taken as it is, so changed data or model code shows up as a differing
``dataset.fingerprint`` / ``model_fingerprint``, never as a stale match.

The rule, for every artifact that something later reuses (a run's ``results.npz``, a reference
cache, an experiment's F_lin, a sweep point's ``summary.json``): it records the identity of the
config that produced it, and on reuse an identity that differs is *recomputed* (caches, sweep
points) or *refused naming the differing fields* (a run with training progress, unless
``overwrite``), never returned.

States of a run's workdir (:func:`check`):

* empty, or a config but no training progress (no checkpoint past the untrained step 0, no
  reference cache, no results), or the progress of a failed attempt (``failed.json``, written
  when training diverged): a fresh start -- a failed attempt never blocks its corrected rerun;
* the same run, unfinished: resumed from its checkpoints;
* the same run, finished: returned; re-scored from its stored predictions when only scoring
  options changed (``config_lib.SCORING_FIELDS``), never retrained;
* another run with progress: refused, naming the fields, unless ``overwrite``, which removes
  every artifact of the old run (checkpoints, references, results, F_lin, summaries, figures).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np
from etils import epath

from sgd_phases import config_lib, io_lib, scoring
from sgd_phases.results import Results

# Fields that change how a job runs, never what it computes: left out of every identity.
OPERATIONAL_FIELDS = ("progress", "checkpoint_every", "overwrite", "distributed",
                      "seeds_per_chunk", "seed_lanes")
FAILED_FILE = "failed.json"     # a failed (diverged) attempt: its progress blocks nothing
IDENTITY_KEY = "__identity__"   # the identity of a cached .npz, stored as a JSON string
SUMMARY_IDENTITY = "identity"   # the identity of an experiment's summary.json
OWNER_FILE = "owner.json"       # which command's run a workdir holds (:func:`claim`)


def pin(config: ml_collections.ConfigDict, data: Any = None) -> ml_collections.ConfigDict:
  """A copy of ``config`` with every content fingerprint filled in: the one place they are.

  The dataset's (``datasets.with_data``, which also puts ``data`` -- arrays from
  ``datasets.from_arrays`` -- in place of the config's dataset; a fingerprint given in the config
  must match the data) and every user model's (``models.fingerprint``: F's ``model_fingerprint``
  and each trained reference's ``references.<name>.model_fingerprint``; absent for built-in
  models). Idempotent; a config without a ``dataset`` or ``model`` is copied as it is."""
  from sgd_phases import datasets, models  # local import: datasets pulls in tfds
  if "dataset" in config or data is not None:
    c = datasets.with_data(config, data)
  else:
    c = config.copy_and_resolve_references()
  locked = c.is_locked
  c.unlock()
  nets = [("model", c)] if "model" in c else []
  nets += [(f"references.{k}.model", r) for k, r in c.get("references", {}).items()
           if r.get("trained_on") not in config_lib.UNTRAINED]
  for field, net in nets:
    try:
      fp = models.fingerprint(net.model)
    except ValueError as e:
      raise ValueError(f"config.{field}: {e}") from e.__cause__
    if fp is not None:
      net.model_fingerprint = fp
    elif "model_fingerprint" in net:
      del net["model_fingerprint"]
  if locked:
    c.lock()
  return c


IDENTITIES = ("run", "f", "experiment")


def identity(config: ml_collections.ConfigDict | Mapping[str, Any], kind: str = "run"
             ) -> dict[str, Any] | None:
  """The identity of ``config`` (module doc): its ``kind`` fields after :func:`pin`.

  ``run``: ``config_lib.RUN_FIELDS`` (plus ``bias_correction`` where T_0 is defined by μ,
  ``t0.rule = mu_ratio``: then it decides which step "F at T_0" is); ``f``:
  ``config_lib.F_FIELDS``, what F's training depends on; ``experiment``: every field but the
  operational ones, what an experiment's summary depends on. None (run, f) for a config that is
  not a training one. A ``ConfigDict`` is pinned first; a mapping is a stored config
  (config.json, a summary's identity), recorded pinned, and taken as it is."""
  if kind not in IDENTITIES:
    raise ValueError(f"kind={kind!r} is not one of {IDENTITIES}")
  if isinstance(config, ml_collections.ConfigDict):
    config = pin(config)
  d = _as_dict(config)
  if kind == "experiment":
    return {k: v for k, v in d.items() if k not in OPERATIONAL_FIELDS}
  ident = config_lib.identity(d, config_lib.RUN_FIELDS if kind == "run" else config_lib.F_FIELDS)
  if kind == "run" and ident is not None and d.get("t0", {}).get("rule") == "mu_ratio":
    ident["bias_correction"] = d.get("bias_correction")
  return ident


def run_identity(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any] | None:
  """``identity(config, "run")``: what makes the trained networks and what they record."""
  return identity(config, "run")


def experiment_identity(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """``identity(config, "experiment")``: what an experiment's summary depends on (a sweep
  point's summary.json is reused only when this matches)."""
  return identity(config, "experiment")


def fingerprint(identity: Any) -> str:
  """A short stable hash of an identity (canonical JSON)."""
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: Any, new: Any) -> list[str]:
  """'field: old -> new' for every differing field of two identities (dicts)."""
  if isinstance(old, dict) and isinstance(new, dict):
    return config_lib.diff(old, new)
  return [] if old == new else [f"identity: {old!r} -> {new!r}"]


def _as_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  if isinstance(config, ml_collections.ConfigDict):
    return config_lib.to_dict(config)
  return json.loads(json.dumps(dict(config)))  # tuples -> lists, as in a stored config


# ----------------------------------------------------------------------------- caches
def cached_npz(path: io_lib.PathLike, identity: Any, compute: Callable[[], dict[str, Any]],
               what: str) -> dict[str, np.ndarray]:
  """The arrays at ``path`` if they were computed for ``identity``; else ``compute()``,
  written there with the identity (a cache from another config, or from before identities
  were recorded, is recomputed with a log line naming the difference, never returned)."""
  path = io_lib.path(path)
  if path.exists():
    stored = io_lib.read_npz(path)
    old = stored.pop(IDENTITY_KEY, None)
    old = None if old is None else json.loads(str(old))
    changed = differences(old, identity) if old is not None else ["no identity recorded"]
    if not changed:
      return stored
    logging.warning("%s cache %s came from another config (%s); recomputing", what,
                    os.fspath(path), "; ".join(changed[:5]))
  out = {k: np.asarray(v) for k, v in compute().items()}
  if io_lib.is_writer():  # multi-host: one writer
    io_lib.write_npz(path, {**out, IDENTITY_KEY: np.array(json.dumps(identity, sort_keys=True))})
  return out


def summary_differences(path: io_lib.PathLike, config: ml_collections.ConfigDict
                        ) -> list[str] | None:
  """None when the summary.json at ``path`` is missing; else the fields in which the config
  that wrote it differs from ``config`` (empty: the summary is this config's)."""
  path = io_lib.path(path)
  if not path.exists():
    return None
  stored = io_lib.read_json(path).get(SUMMARY_IDENTITY)
  if stored is None:
    return ["no identity recorded (written before identities were)"]
  return differences(stored.get("config"), experiment_identity(config))


def summary_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The ``identity`` entry of an experiment's summary.json."""
  ident = experiment_identity(config)
  return {"config": ident, "fingerprint": fingerprint(ident)}


# ----------------------------------------------------------------------------- ownership
def owner(workdir: io_lib.PathLike) -> tuple[str, str] | None:
  """(command, evidence) of the run ``workdir`` holds, or None when it holds none (missing,
  empty, or nothing but an owner record: a command that stopped on bad input).

  ``owner.json``'s command; for a workdir written before owners were recorded, what its files
  say: ``config.json`` (a training run: its experiment, else ``train``), ``summary.json``
  (its experiment; ``sweep:<module>`` for a sweep), ``results.npz`` alone (``score``)."""
  wd = io_lib.path(workdir, "workdir")
  if not wd.exists() or not wd.is_dir():
    return None
  names = {p.name for p in wd.iterdir()} - {OWNER_FILE}
  if not names:
    return None
  if (wd / OWNER_FILE).exists():
    return str(io_lib.read_json(wd / OWNER_FILE)["command"]), OWNER_FILE
  if io_lib.CONFIG_FILE in names:
    return str(io_lib.read_json(wd / io_lib.CONFIG_FILE).get("experiment") or "train"), \
        io_lib.CONFIG_FILE
  if "summary.json" in names:
    s = io_lib.read_json(wd / "summary.json")
    name = s.get("experiment") or "an unknown command"
    return (f"sweep:{s.get('module')}" if name == "sweep" else str(name)), "summary.json"
  if io_lib.RESULTS_FILE in names:
    return "score", io_lib.RESULTS_FILE
  return None


def run_command(config: ml_collections.ConfigDict) -> str:
  """The command a training run belongs to: its experiment (the header field ``experiment``),
  else ``train`` (``train_lib.train`` called directly)."""
  return str(config.get("experiment") or "train")


def describe(command: str) -> str:
  """A command's name in words (error messages)."""
  if command == "train":
    return "a training run (train_lib.train)"
  if command == "score":
    return "the output of python -m sgd_phases.score"
  if command.startswith("sweep:"):
    return f"a sweep of {command[len('sweep:'):]}"
  return f"a run of experiment {command!r}"


def check_owner(workdir: io_lib.PathLike, command: str) -> None:
  """Refuses, naming what it found and writing nothing, a ``workdir`` that holds another
  command's run (:func:`owner`): every command writes only into its own workdir."""
  found = owner(workdir)
  if found is not None and found[0] != command:
    raise ValueError(f"workdir {os.fspath(io_lib.path(workdir))!r} holds {describe(found[0])} "
                     f"(found {found[1]}); {describe(command)} is not written into another "
                     "command's workdir: use another workdir (nothing was changed)")


def claim(workdir: io_lib.PathLike, command: str) -> epath.Path:
  """:func:`check_owner`, then records ``command`` as the owner (``owner.json``, once) before
  the command's first write; returns the workdir (created, checked writable)."""
  check_owner(workdir, command)
  wd = io_lib.check_writable(workdir)
  if io_lib.is_writer() and not (wd / OWNER_FILE).exists():
    io_lib.write_json(wd / OWNER_FILE, {"command": command})
  return wd


# ----------------------------------------------------------------------------- a run
def _untrained_checkpoints(ckpt_dir: epath.Path) -> bool:
  """True when every chunk's checkpoints hold only evaluation 0 (the untrained states)."""
  for chunk in ckpt_dir.iterdir():
    if not chunk.is_dir():
      return False
    steps = [p.name for p in chunk.iterdir() if p.name.isdigit()]
    if any(int(s) > 0 for s in steps):
      return False
  return True


def progress(workdir: epath.Path) -> list[str]:
  """What in ``workdir`` is training progress worth protecting: checkpoints past the untrained
  step 0, reference caches, results. Empty when the last attempt failed (``failed.json``)."""
  if (workdir / FAILED_FILE).exists():
    return []
  out = []
  ckpt = workdir / "checkpoints"
  if ckpt.exists() and any(True for _ in ckpt.iterdir()) and not _untrained_checkpoints(ckpt):
    out.append("checkpoints")
  refs = workdir / "references"
  if refs.exists() and any(True for _ in refs.iterdir()):
    out.append("references")
  if (workdir / io_lib.RESULTS_FILE).exists():
    out.append(io_lib.RESULTS_FILE)
  return out


def clear(workdir: epath.Path) -> None:
  """Removes every artifact of the run in ``workdir`` (the workdir and its owner stay)."""
  if io_lib.is_writer() and workdir.exists():
    for p in list(workdir.iterdir()):
      if p.name == OWNER_FILE:
        continue
      if p.is_dir():
        p.rmtree(missing_ok=True)
      else:
        p.unlink(missing_ok=True)
  io_lib.barrier("workdir cleared")  # before anyone writes there again (collective checkpoints)


def mark_failed(workdir: epath.Path | None, config: ml_collections.ConfigDict,
                error: BaseException) -> None:
  """Records that training in ``workdir`` failed (e.g. diverged): its progress then never
  blocks a corrected rerun (:func:`progress`)."""
  if workdir is None or not io_lib.is_writer():
    return
  io_lib.write_json(workdir / FAILED_FILE, {"error": f"{type(error).__name__}: {error}",
                                            "run": fingerprint(run_identity(config))})


def check(config: ml_collections.ConfigDict, workdir: epath.Path) -> Results | None:
  """Decides what ``workdir`` holds for ``config`` (module doc); returns the Results of the
  same finished run (re-scored when scoring options changed), else None after
  clearing what must not be reused. Writes nothing but config.json / results.npz updates of a
  re-scored run and the removals of a fresh start or an overwrite."""
  io_lib.check_writable(workdir)
  path = workdir / io_lib.CONFIG_FILE
  if not path.exists():
    return None
  config = pin(config)
  old, new = io_lib.read_json(path), config_lib.to_dict(config)
  changed = differences(run_identity(old) or old, run_identity(new) or new)
  failed = (workdir / FAILED_FILE).exists()
  if not changed and failed and io_lib.is_writer():  # the same config again: resume from
    (workdir / FAILED_FILE).unlink(missing_ok=True)   # its last good checkpoint
  elif changed:
    kept = progress(workdir)
    if kept and not config.overwrite:
      raise ValueError(f"workdir {os.fspath(workdir)!r} holds a run with a different config "
                       f"({', '.join(kept)} on disk):\n  " + "\n  ".join(changed)
                       + "\nuse a new workdir or --config.overwrite=True")
    if kept:
      logging.warning("overwriting the run in %s (config changed: %s)", os.fspath(workdir),
                      changed)
    else:
      logging.info("%s holds %s; starting afresh", os.fspath(workdir),
                   "a failed attempt" if failed else "a config but no training progress")
    clear(workdir)
    return None
  if not (workdir / io_lib.RESULTS_FILE).exists():
    return None  # the same run, unfinished: resumed from its checkpoints
  logging.info("%s already holds the finished run; not retraining", os.fspath(workdir))
  results = Results(io_lib.read_npz(workdir / io_lib.RESULTS_FILE), workdir)
  scoring_changed = [f for f in config_lib.SCORING_FIELDS if old.get(f) != new.get(f)]
  if scoring_changed:
    logging.info("re-scoring the stored predictions (%s changed)", scoring_changed)
    results = scoring.rescore(config, results)
  if old != new and io_lib.is_writer():  # multi-host: one writer
    if scoring_changed:
      io_lib.write_npz(workdir / io_lib.RESULTS_FILE, results.arrays)
    io_lib.write_json(path, new)
  io_lib.barrier("finished run checked")  # every process then reads the same results.npz
  return results
