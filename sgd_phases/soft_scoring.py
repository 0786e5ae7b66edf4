"""A run's soft measures: F's probabilities against every reference's, stored beside μ.

    out = soft_scoring.score(arrays, f_probabilities, mixture=("unigram", "bigram"))
    # {"soft/unigram/kl_ref_f": [S, E], ..., "soft/mixture/weights": [S, E, R + 1], ...}

Inputs are a run's arrays (``sgd_phases.results`` keys): ``y_test``, ``reference_names``, each
reference's distributions ``soft/<r>/probabilities`` ([N, K] closed form, [S, N, K] trained
or F at T_0; NaN rows: undefined for that seed) and optionally ``num_positions`` (sequence
data), and F's probabilities [S, E, N, K] (on device during training: no [S, E, N, K] array
leaves the device). The measures are :mod:`sgd_phases.soft_measures`' (definitions, smoothing,
clipping and the mixture fit are documented there); a reference undefined for a seed gets NaN
measures and NaN mixture weights for that seed.

:func:`rescore` decides what a re-scoring does with them (``scoring.score_run``): recompute
from F's probabilities when they are at hand (stored with ``eval.store_probabilities``), keep
the stored ones when ``config.soft`` is what produced them, refuse naming the field otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from sgd_phases import sharding, soft_measures
from sgd_phases import results as results_lib
from sgd_phases.results import position_key, soft_key


def distributions(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """name -> stored distributions of every reference that has them (run order)."""
  names = [str(r) for r in arrays["reference_names"]]
  return {r: arrays[soft_key(r, "probabilities")] for r in names
          if soft_key(r, "probabilities") in arrays}


def _defined(p: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """(distributions with undefined seeds' NaN rows made uniform, defined mask [S] or None)."""
  p = np.asarray(p, np.float32)
  if p.ndim == 2:
    return p, None
  bad = np.isnan(p).any(axis=tuple(range(1, p.ndim)))
  return np.where(bad.reshape((-1,) + (1,) * (p.ndim - 1)), 1.0 / p.shape[-1], p), ~bad


def _mask(x: Any, defined: np.ndarray | None) -> np.ndarray:
  """Host copy of ``x`` [S, ...] with NaN for the seeds where ``defined`` is False."""
  x = np.asarray(sharding.to_host(x), np.float64)
  if defined is None or defined.all():
    return x
  return np.where(defined.reshape((-1,) + (1,) * (x.ndim - 1)), x, np.nan)


def score(arrays: Mapping[str, np.ndarray], probabilities: Any, *,
          mixture: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """Every soft measure of F's ``probabilities`` [S, E, N, K] (module doc). ``mixture``: the
  references of the mixture fit, in that order (default: every one with distributions)."""
  pf = sharding.to_device(probabilities)
  s = pf.shape[0]
  floor = soft_measures.floor_for(pf.dtype)
  y = sharding.to_device(arrays["y_test"])
  positions = int(arrays["num_positions"]) if "num_positions" in arrays else None
  refs = {name: _defined(p) for name, p in distributions(arrays).items()}
  names = list(mixture) or list(refs)
  missing = [n for n in names if n not in refs]
  if missing:
    raise ValueError(f"soft.mixture: {missing} have no distributions in this run "
                     f"(references with distributions: {list(refs)})")
  out: dict[str, np.ndarray] = {}

  def put(name: str, measures: Mapping[str, Any], defined: np.ndarray | None) -> None:
    for field, v in measures.items():
      pos, _, base = field.rpartition("/")
      key = position_key(name, base) if pos else soft_key(name, base)
      out[key] = _mask(v, defined).astype(np.float32)

  put(results_lib.SOFT_F, soft_measures.cross_entropy(pf, y, num_positions=positions,
                                                      floor=floor), None)
  for name, (p, defined) in refs.items():
    p_dev = sharding.to_device(p)
    put(name, soft_measures.divergences(pf, p_dev, num_positions=positions, floor=floor),
        defined)
    ce = soft_measures.cross_entropy(p_dev, y, num_positions=positions)
    if p.ndim == 2:  # one distribution for every seed: [S] and [S, P] like the others
      ce = {k: jnp.broadcast_to(v, (s,) + v.shape) for k, v in ce.items()}
    put(name, ce, defined)
  if names:
    fit = soft_measures.mixture(pf, [sharding.to_device(refs[n][0]) for n in names], floor=floor)
    defined = np.ones(s, bool)
    for n in names:
      defined &= np.ones(s, bool) if refs[n][1] is None else refs[n][1]
    put(results_lib.SOFT_MIXTURE, fit, defined)
    out[soft_key(results_lib.SOFT_MIXTURE, "names")] = np.array(
        names + [results_lib.SOFT_UNIFORM], dtype=str)
  return out


def _wanted(soft_config: Any) -> dict[str, Any]:
  """The scoring options the soft measures depend on, as recorded in ``run/soft``."""
  if soft_config is None:
    return {"enabled": False, "mixture": []}
  return {"enabled": bool(soft_config.enabled), "mixture": [str(n) for n in soft_config.mixture]}


def rescore(soft_config: Any, old: Mapping[str, np.ndarray], new: dict[str, np.ndarray],
            probabilities: Any = None) -> None:
  """Adds the soft measures to ``new`` (a run's arrays without scores) under ``soft_config``
  (``config.soft``): computed from F's ``probabilities`` (default: the stored ones), else the
  ``old`` ones when the same options made them; one ValueError naming ``config.soft`` when
  they would have to be recomputed and cannot. Records the options in ``run/soft``."""
  record = results_lib.run_key("soft")
  wanted = _wanted(soft_config)
  pf = new.get("probabilities") if probabilities is None else probabilities
  if not wanted["enabled"]:
    new[record] = np.array(json.dumps(wanted))
    return
  if pf is not None:
    new.update(score(new, pf, mixture=wanted["mixture"]))
    new[record] = np.array(json.dumps(wanted))
    return
  if record not in old:  # scored before soft measures existed, or F given without them
    logging.warning("no soft measures: this run has no probabilities of F (scored before soft "
                    "measures existed, or F's predictions came without them)")
    return
  made = json.loads(str(old[record]))
  if made != wanted:
    raise ValueError(
        f"config.soft: {wanted} differs from the options this run's soft measures were made "
        f"with ({made}), and F's probabilities were not stored (eval.store_probabilities=False)"
        ": they cannot be recomputed; keep config.soft as it was or rerun with "
        "--config.overwrite=True")
  new.update({k: v for k, v in old.items() if results_lib.is_soft_score_key(k)})
  new[record] = old[record]


# ----------------------------------------------------------------------------- summaries
def _argext(x: np.ndarray, largest: bool) -> np.ndarray:
  """Per seed, the evaluation of the smallest (or largest) finite value, −1 if none."""
  v = np.where(np.isfinite(x), x if largest else -x, -np.inf)
  return np.where(np.isfinite(v).any(axis=1), np.argmax(v, axis=1), -1)


def summarize(results: results_lib.Results, names: Sequence[str] | None = None
              ) -> dict[str, Any] | None:
  """The soft measures of a run for its summary.json (None when it has none), means with 95%
  intervals over seeds (``stats.summarize``: t intervals for bits, bootstrap for steps and
  weights): F's cross-entropy at the end; per reference (``names``, default all) its own
  cross-entropy, KL both ways and JS at the end, and the smallest KL(p_ref || p_F) and JS over
  the evaluations with their steps (where F comes closest to the reference); per mixture
  component its weight at the end, its largest weight and that step, and the first step where
  it has the largest weight of all (the order in which the predictors explain F)."""
  from sgd_phases import stats  # pylint: disable=g-import-not-at-top
  f = results.soft(results_lib.SOFT_F)
  if not f:
    return None
  steps = results.steps
  out: dict[str, Any] = {"f_ce_end": stats.summarize(f["ce"][:, -1]), "references": {}}
  for name in names or results.reference_names:
    m = results.soft(name)
    if "kl_ref_f" not in m:
      continue
    entry = {"ce": stats.summarize(m["ce"])} if "ce" in m and m["ce"].ndim == 1 else {}
    for field in ("kl_ref_f", "kl_f_ref", "js"):
      entry[f"{field}_end"] = stats.summarize(m[field][:, -1])
    for field in ("kl_ref_f", "js"):
      at = _argext(m[field], largest=False)
      entry[f"{field}_min"] = stats.summarize(stats.at_index(m[field], at))
      entry[f"{field}_min_step"] = stats.summarize(stats.step_at(steps, at), bounded=True)
    out["references"][name] = entry
  mix = results.mixture()
  if mix is not None:
    comps, w, residual = mix
    top = np.where(np.isfinite(w).all(-1), np.argmax(np.nan_to_num(w, nan=-1.0), -1), -1)
    out["mixture"] = {"names": comps,
                      "residual_kl_end": stats.summarize(residual[:, -1]), "components": {}}
    for r, name in enumerate(comps):
      peak = _argext(w[..., r], largest=True)
      leads = top == r
      out["mixture"]["components"][name] = {
          "weight_end": stats.summarize(w[:, -1, r], bounded=True),
          "weight_peak": stats.summarize(stats.at_index(w[..., r], peak), bounded=True),
          "peak_step": stats.summarize(stats.step_at(steps, peak), bounded=True),
          "leads_from_step": stats.summarize(stats.step_at(
              steps, np.where(leads.any(1), np.argmax(leads, 1), -1)), bounded=True)}
  return out


def figures(workdir: Any, results: results_lib.Results, name: str, title: str,
            names: Sequence[str] | None = None) -> list[str]:
  """``figures/<name>_soft.png`` (KL both ways and JS to each reference of ``names``, default
  all) and ``figures/<name>_mixture.png`` (the mixture weights over steps, stacked, and the
  residual KL); none for a run without soft measures."""
  from sgd_phases import io_lib, plotting  # pylint: disable=g-import-not-at-top
  soft = {r: m for r in names or results.reference_names if "kl_ref_f" in (m := results.soft(r))}
  if not soft:
    return []
  folder = io_lib.path(workdir) / "figures"
  out = [plotting.save_figure(plotting.plot_soft(results.steps, soft, title=title),
                              folder / f"{name}_soft.png")]
  mix = results.mixture()
  if mix is not None:
    out.append(plotting.save_figure(plotting.plot_mixture(results.steps, *mix, title=title),
                                    folder / f"{name}_mixture.png"))
  return out
