"""Scoring a run's stored predictions: information measures and the conditional null.

    m = scoring.measures(predictions, ref_predictions, y_test, num_classes)   # {field: [S, E]}
    null = scoring.null_mu(predictions, ref_predictions, y_test, num_classes,
                           key, num_permutations=100)                         # [P, S, E]

Both take F's hard test predictions ``[S, E, N]`` (seeds × evaluations) and a reference's
``[S, N]`` (one per seed), ``[N]`` (shared) or ``[S, E, N]`` (time-paired). A reference row of
−1 means *undefined* for that seed (e.g. "F at T_0" for a seed that never reached T_0): its
measures and null draws are NaN, never a number computed from a stand-in.

This module owns scoring: a run's scores (:func:`score_run`, used by training, re-scoring and
``analysis``), T_0 (:func:`t0_indices`) and the null's keys; ``sgd_phases.results`` owns the
names of the arrays they are stored under.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sgd_phases import mutual_info, sharding, soft_scoring, stats
from sgd_phases import results as results_lib

UNDEFINED = -1  # a reference prediction row of −1s: no reference for this seed


def _prepare(ref_predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """(ref [S, 1, N], [S, E, N] (time-paired) or [N] with undefined seeds zeroed, defined mask
  [S] or None)."""
  ref = np.asarray(ref_predictions)
  if ref.ndim == 1:
    return ref, None
  if ref.ndim == 3:  # one reference per seed and evaluation (e.g. F_lin,t beside F_t)
    defined = ~(ref == UNDEFINED).any(axis=(-2, -1))
    return np.where(defined[:, None, None], ref, 0), defined
  defined = ~(ref == UNDEFINED).any(axis=-1)
  return np.where(defined[:, None], ref, 0)[:, None, :], defined


def _mask(x: np.ndarray, defined: np.ndarray | None, after: int = 1) -> np.ndarray:
  """NaN where the reference is undefined, on the seed axis (followed by ``after`` axes)."""
  if defined is None or defined.all():
    return x
  return np.where(defined.reshape(defined.shape + (1,) * after), x, np.nan)


def measures(predictions: np.ndarray | jax.Array, ref_predictions: np.ndarray,
             y_test: np.ndarray, num_classes: int, bias_correction: str | None = None
             ) -> dict[str, np.ndarray]:
  """Every :class:`~sgd_phases.mutual_info.InfoMeasures` field [S, E] of F against one L."""
  ref, defined = _prepare(ref_predictions)
  put = sharding.to_device
  m = mutual_info.information_measures(put(predictions), put(ref), put(y_test), num_classes,
                                       bias_correction=bias_correction)
  return {f: _mask(sharding.to_host(getattr(m, f)), defined)
          for f in mutual_info.InfoMeasures._fields}


def position_measures(predictions: np.ndarray | jax.Array, ref_predictions: np.ndarray,
                      y_test: np.ndarray, num_classes: int, num_positions: int,
                      bias_correction: str | None = None) -> dict[str, np.ndarray]:
  """μ_Y(F_t;L) and I(F_t;Y) [S, E, P] at each of the P scored positions of the test
  sequences: the examples (sequence-major, positions last: N = M·P) regrouped as [.., P, M], and
  the MI kernels batched over positions (on device). Reference rows of −1: NaN."""
  ref, defined = _prepare(ref_predictions)

  def by_position(x: Any) -> Any:  # [..., M·P] -> [..., P, M] (host arrays stay on the host)
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.swapaxes(xp.reshape(x, x.shape[:-1] + (-1, num_positions)), -1, -2)

  m = mutual_info.information_measures(by_position(predictions), by_position(ref),
                                       by_position(y_test), num_classes,
                                       bias_correction=bias_correction)
  return {f: _mask(sharding.to_host(getattr(m, f)), defined, after=2)
          for f in results_lib.POSITION_FIELDS}


def null_mu(predictions: np.ndarray | jax.Array, ref_predictions: np.ndarray,
            y_test: np.ndarray, num_classes: int, key: jax.Array, num_permutations: int,
            bias_correction: str | None = None) -> np.ndarray:
  """float32 [P, S, E]: μ_Y(F_t;L) with L permuted within each class of Y (F ⟂ L | Y).

  See :func:`sgd_phases.mutual_info.conditional_null`; every seed gets its own permutations.
  """
  ref, defined = _prepare(ref_predictions)
  put = sharding.to_device
  null = mutual_info.conditional_null(put(predictions), put(ref), put(y_test), num_classes, key,
                                      num_permutations, bias_correction=bias_correction)
  return _mask(sharding.to_host(null).astype(np.float32), defined)


def null_key(seed: int, reference: str) -> jax.Array:
  """The PRNG key of reference ``reference``'s null draws in a run with ``config.seed``."""
  return _null_key(int(seed), np.uint32(zlib.crc32(reference.encode()) & 0x7FFFFFFF))


@functools.partial(jax.jit, static_argnums=0)  # one small program for every reference
def _null_key(seed: int, salt: jax.Array) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x6E756C6C), salt)


# --------------------------------------------------------------------- a run's scores
def score_reference(predictions: Any, ref_predictions: np.ndarray, y_test: np.ndarray,
                    num_classes: int, name: str, *, seed: int, num_permutations: int,
                    bias_correction: str | None, num_positions: int = 0
                    ) -> dict[str, np.ndarray]:
  """``mi/<name>/<field>`` [S, E], with ``num_positions`` (sequence data) the per-position
  ``position/<name>/{mu,i_fy}`` [S, E, P], and with ``num_permutations`` > 0 the conditional
  null ``null/<name>/mu`` [P, S, E] of F's predictions against one reference (rows of −1 =
  undefined for that seed: NaN). ``seed``: the run's ``config.seed`` (the null's key)."""
  out = {results_lib.mi_key(name, f): v for f, v in measures(
      predictions, ref_predictions, y_test, num_classes, bias_correction).items()}
  if num_positions:
    out.update({results_lib.position_key(name, f): v for f, v in position_measures(
        predictions, ref_predictions, y_test, num_classes, num_positions,
        bias_correction).items()})
  if num_permutations > 0:
    out[results_lib.null_key(name)] = null_mu(predictions, ref_predictions, y_test, num_classes,
                                              null_key(seed, name), num_permutations,
                                              bias_correction)
  return out


def score_surrogate(arrays: Mapping[str, np.ndarray], kind: str, names: list[str],
                    num_classes: int, bias_correction: str | None) -> dict[str, np.ndarray]:
  """``surrogate/<kind>/mi/<ref>/<field>`` [S, E] from the stored surrogate predictions."""
  key = functools.partial(results_lib.surrogate_key, kind)
  return {key("mi", name, f): v for name in names for f, v in measures(
      arrays[key("predictions")], arrays[key("ref", name, "predictions")], arrays[key("labels")],
      num_classes, bias_correction).items()}


def score_run(config: Any, arrays: Mapping[str, np.ndarray], predictions: Any = None,
              probabilities: Any = None) -> dict[str, np.ndarray]:
  """Every score of a run under ``config``'s scoring options (``bias_correction``, ``null``,
  ``soft``) from its recorded arrays (F's and the references' predictions, surrogate
  predictions, distributions): ``arrays`` with the scores (re)computed and ``run/seed``,
  ``run/bias_correction``, ``run/soft`` recorded. ``predictions``: F's predictions on device if
  at hand (default ``arrays["predictions"]``); ``probabilities``: F's probabilities [S, E, N, K]
  on device (default: ``arrays["probabilities"]`` when stored), for the soft measures
  (``soft_scoring.rescore``: without either, stored soft measures are kept or refused)."""
  bc = config.get("bias_correction")
  a = {k: v for k, v in arrays.items() if not results_lib.is_score_key(k)}
  names = [str(r) for r in a["reference_names"]]
  f = a["predictions"] if predictions is None else predictions
  k = int(a["num_classes"])
  for name in names:
    a.update(score_reference(f, a[results_lib.ref_key(name, "predictions")], a["y_test"], k,
                             name, seed=int(config.seed),
                             num_permutations=int(config.null.num_permutations),
                             bias_correction=bc, num_positions=int(a.get("num_positions", 0))))
  kinds = sorted({key.split("/")[1] for key in a if key.startswith("surrogate/")})
  for kind in kinds:
    a.update(score_surrogate(a, kind, names, k, bc))
  soft_scoring.rescore(config.get("soft"), arrays, a, probabilities)
  a[results_lib.run_key("seed")] = np.int64(config.seed)
  a[results_lib.run_key("bias_correction")] = np.array(bc or "")
  return a


def rescore(config: Any, results: results_lib.Results) -> results_lib.Results:
  """Every measure and null recomputed from the stored predictions under ``config``'s scoring
  options (``config_lib.SCORING_FIELDS``); nothing is trained."""
  return results_lib.Results(score_run(config, results.arrays), results.workdir)


def t0_indices(config: Any, test_acc: np.ndarray, predictions: np.ndarray,
               refs: Mapping[str, Mapping[str, np.ndarray]], y_test: np.ndarray,
               num_classes: int) -> np.ndarray:
  """T_0 per seed (index into the evaluations, −1 if never) by ``config.t0.rule`` against
  ``config.t0.reference`` (−1 everywhere when there is none)."""
  name = config.t0.reference
  if not name or name not in refs:
    return np.full(test_acc.shape[0], -1, np.int64)
  kw = {}
  if config.t0.rule == "mu_ratio":
    m = measures(predictions, refs[name]["predictions"], y_test, num_classes,
                 config.get("bias_correction"))
    kw = dict(mu=m["mu"], i_fy=m["i_fy"], delta=config.t0.delta)
  return np.asarray(stats.t0_index(test_acc, refs[name]["test_acc"], rule=config.t0.rule,
                                   **kw), np.int64)


def t0_arrays(config: Any, steps: np.ndarray, t0: np.ndarray) -> dict[str, np.ndarray]:
  """``t0_index`` [S] (−1: never), ``t0_step`` [S] (its training step, −1: never) and
  ``t0_reference`` (``config.t0.reference``, "" for none): T_0 as results.npz stores it."""
  t0 = np.asarray(t0, np.int64)
  return {"t0_index": t0, "t0_step": stats.step_at(steps, t0, fill=-1),
          "t0_reference": np.array(config.t0.reference or "")}
