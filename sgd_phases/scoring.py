"""Scoring a run's stored predictions: information measures and the conditional null.

    m = scoring.measures(predictions, ref_predictions, y_test, num_classes)   # {field: [S, E]}
    null = scoring.null_mu(predictions, ref_predictions, y_test, num_classes,
                           key, num_permutations=100)                         # [P, S, E]

Both take F's hard test predictions ``[S, E, N]`` (seeds × evaluations) and a reference's
``[S, N]`` (one per seed) or ``[N]`` (shared). A reference row of −1 means *undefined* for that
seed (e.g. "F at T_0" for a seed that never reached T_0): its measures and null draws are NaN,
never a number computed from a stand-in.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

from sgd_phases import mutual_info, sharding

UNDEFINED = -1  # a reference prediction row of −1s: no reference for this seed


def _prepare(ref_predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """(ref [S, 1, N] or [N] with undefined rows zeroed, defined mask [S] or None)."""
  ref = np.asarray(ref_predictions)
  if ref.ndim == 1:
    return ref, None
  defined = ~(ref == UNDEFINED).any(axis=-1)
  return np.where(defined[:, None], ref, 0)[:, None, :], defined


def _mask(x: np.ndarray, defined: np.ndarray | None) -> np.ndarray:
  """NaN on the seed axis (the one before the last) where the reference is undefined."""
  if defined is None or defined.all():
    return x
  return np.where(defined[:, None], x, np.nan)


def measures(predictions: np.ndarray | jax.Array, ref_predictions: np.ndarray,
             y_test: np.ndarray, num_classes: int, bias_correction: str | None = None
             ) -> dict[str, np.ndarray]:
  """Every :class:`~sgd_phases.mutual_info.InfoMeasures` field [S, E] of F against one L."""
  ref, defined = _prepare(ref_predictions)
  m = mutual_info.information_measures(jnp.asarray(predictions), jnp.asarray(ref),
                                       jnp.asarray(y_test), num_classes,
                                       bias_correction=bias_correction)
  return {f: _mask(sharding.to_host(getattr(m, f)), defined)
          for f in mutual_info.InfoMeasures._fields}


def null_mu(predictions: np.ndarray | jax.Array, ref_predictions: np.ndarray,
            y_test: np.ndarray, num_classes: int, key: jax.Array, num_permutations: int,
            bias_correction: str | None = None) -> np.ndarray:
  """float32 [P, S, E]: μ_Y(F_t;L) with L permuted within each class of Y (F ⟂ L | Y).

  See :func:`sgd_phases.mutual_info.conditional_null`; every seed gets its own permutations.
  """
  ref, defined = _prepare(ref_predictions)
  null = mutual_info.conditional_null(jnp.asarray(predictions), jnp.asarray(ref),
                                      jnp.asarray(y_test), num_classes, key, num_permutations,
                                      bias_correction=bias_correction)
  return _mask(sharding.to_host(null).astype(np.float32), defined)


def null_key(seed: int, reference: str) -> jax.Array:
  """The PRNG key of reference ``reference``'s null draws in a run with ``config.seed``."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x6E756C6C),
                            zlib.crc32(reference.encode()) & 0x7FFFFFFF)
