"""Statistics over seeds and evaluation points for the ``results.npz`` of a run.

numpy and scipy: confidence intervals, the end of the linear phase T_0, plateau and
departure indices of information curves, and headlines beside the conditional null.

Usage (``res = sgd_phases.results.load(workdir)``, the one reader of a run's results)::

    from sgd_phases import stats

    m = res.measures("linear")                         # {"i_fy": [S,E], "mu": [S,E], ...}
    t0 = stats.t0_index(m["acc_f"], res.reference("linear", "test_acc"))
    ratio = stats.ratio_at(m["mu"], m["i_fy"], t0)     # [S] μ/I at T_0
    stats.summarize(ratio)                             # {"mean", "lo", "hi", "std", "n"}
    mean, lo, hi = stats.mean_ci(m["i_fy"], axis=0)    # [E] each, 95% Student-t band

Intervals: ``summarize`` gives the Student-t interval of the mean for unbounded quantities (bits,
changes in bits, excesses without a ratio); ``summarize(..., bounded=True)`` the percentile
bootstrap of the mean (2000 resamples, a fixed generator: the same numbers on every rerun) for
step counts, accuracies and ratios, whose interval must not leave the possible range -- a
bootstrap mean lies between the smallest and the largest value, so it cannot (a t interval on 2
seeds gave "acc_end [0.794, 1.003]"). With few seeds the bootstrap interval is narrow (2 seeds:
their range); read it as a description of the seeds, not a guarantee of coverage.

A statistic chosen over the evaluations (a peak, a departure) gets a null by the same choice
applied to every null draw (``selected_null``): the null of max_t μ(t) is max_t of each draw's
μ₀(t), never the draws at the observed argmax (that null is too low).

NaN convention (all functions): NaN entries are dropped, i.e. statistics are computed over the
finite values only, per output element. Where fewer than two finite values remain the interval
is NaN (the mean is the single value, or NaN when none remain).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as scipy_stats

T0_RULES = ("acc_reaches_reference", "mu_ratio")
CI_METHODS = ("t", "bootstrap")


def t_quantile(q: float, df: float) -> float:
  """Quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``)."""
  q, df = float(q), float(df)
  if not 0.0 < q < 1.0:
    raise ValueError(f"q must be in (0, 1), got {q}")
  if not df > 0.0:
    raise ValueError(f"df must be > 0, got {df}")
  return float(scipy_stats.t.ppf(q, df))


# ----------------------------------------------------------------------------- intervals
def _as_columns(x: ArrayLike, axis: int) -> tuple[NDArray[np.float64], tuple[int, ...]]:
  arr = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0)
  return arr.reshape(arr.shape[0], -1), arr.shape[1:]


def mean_ci(
    x: ArrayLike,
    axis: int = 0,
    level: float = 0.95,
    method: str = "t",
    *,
    rng: np.random.Generator | None = None,
    num_resamples: int = 2000,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
  """Mean over ``axis`` (the seeds) with a ``level`` confidence interval.

  ``method="t"``: mean ± t_{(1+level)/2, n-1}·s/√n (s with ddof=1), identical to
  ``scipy.stats.t.interval``. ``method="bootstrap"``: percentile bootstrap of the mean with
  ``num_resamples`` resamples drawn from ``rng`` (required). NaNs are ignored per output
  element; with fewer than two finite values, ``lo`` and ``hi`` are NaN (not a zero width).
  Returns float64 arrays shaped like ``x`` without ``axis``.
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  if method not in CI_METHODS:
    raise ValueError(f"method must be one of {CI_METHODS}, got {method!r}")
  cols, out_shape = _as_columns(x, axis)
  finite = np.isfinite(cols)
  n = finite.sum(axis=0)
  filled = np.where(finite, cols, 0.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = filled.sum(axis=0) / n
    if method == "t":
      dev = np.where(finite, cols - mean, 0.0)
      sem = np.sqrt((dev**2).sum(axis=0) / (n - 1) / n)
      tq = np.full(n.shape, np.nan)
      for k in np.unique(n[n >= 2]):
        tq[n == k] = t_quantile(0.5 * (1.0 + level), float(k - 1))
      lo, hi = mean - tq * sem, mean + tq * sem
    else:
      if rng is None:
        raise ValueError("rng (np.random.Generator) is required for method='bootstrap'")
      if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
      lo, hi = _bootstrap(cols, n, level, rng, int(num_resamples))
  bad = n < 2
  lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
  return mean.reshape(out_shape), lo.reshape(out_shape), hi.reshape(out_shape)


def _bootstrap(cols: NDArray[np.float64], n: NDArray[np.int64], level: float,
               rng: np.random.Generator, num_resamples: int):
  """Percentile bootstrap per column, resampling that column's finite values."""
  s, m = cols.shape
  srt = np.sort(cols, axis=0)  # NaNs last: the first n[j] rows of column j are finite
  u = rng.random((num_resamples, s))  # shared uniforms, reproducible for a given rng
  pos = np.arange(s)[None, :, None]
  chunk = max(1, (1 << 22) // max(1, num_resamples * s))
  lo, hi = np.empty(m), np.empty(m)
  for start in range(0, m, chunk):
    sl = slice(start, min(m, start + chunk))
    nj = n[sl]
    idx = np.minimum((u[:, :, None] * nj[None, None, :]).astype(np.int64),
                     np.maximum(nj - 1, 0)[None, None, :])
    vals = srt[:, sl][idx, np.arange(nj.size)[None, None, :]]
    means = np.where(pos < nj[None, None, :], vals, 0.0).sum(axis=1) / nj
    q = np.percentile(means, [50.0 * (1.0 - level), 50.0 * (1.0 + level)], axis=0)
    lo[sl], hi[sl] = q[0], q[1]
  return lo, hi


BOOTSTRAP_SEED, BOOTSTRAP_RESAMPLES = 0, 2000


def summarize(values: ArrayLike, level: float = 0.95, *, bounded: bool = False
              ) -> dict[str, Any]:
  """{mean, lo, hi, std, n} of per-seed values as Python floats/int (NaNs dropped).

  ``lo``/``hi`` is the Student-t interval, or with ``bounded`` (steps, accuracies, ratios: a
  range the interval must stay in) the percentile bootstrap of the mean, then ``ci`` =
  "bootstrap" is added (module doc); ``std`` uses ddof=1. Undefined entries are
  ``float("nan")`` (``json.dumps`` writes them as ``NaN``); with no finite value at all (e.g. a
  T_0 no seed reached) every field is NaN and ``n`` is 0.
  """
  v = np.asarray(values, dtype=np.float64).ravel()
  v = v[np.isfinite(v)]
  if v.size == 0:
    nan = float("nan")
    return {"mean": nan, "lo": nan, "hi": nan, "std": nan, "n": 0}
  if bounded:
    mean, lo, hi = mean_ci(v, axis=0, level=level, method="bootstrap",
                           rng=np.random.default_rng(BOOTSTRAP_SEED),
                           num_resamples=BOOTSTRAP_RESAMPLES)
  else:
    mean, lo, hi = mean_ci(v, axis=0, level=level)
  std = float(np.std(v, ddof=1)) if v.size >= 2 else float("nan")
  out = {"mean": float(mean), "lo": float(lo), "hi": float(hi), "std": std, "n": int(v.size)}
  return {**out, "ci": "bootstrap"} if bounded else out


# ----------------------------------------------------------------------------- the null
def at_index(x: ArrayLike, index: ArrayLike) -> NDArray[np.float64]:
  """``x[..., s, index[s]]`` per seed: [..., S, E] -> [..., S] float64, NaN where index = −1
  (per-seed curves [S, E] and null draws [P, S, E] alike)."""
  arr = np.asarray(x, dtype=np.float64)
  idx = np.asarray(index, dtype=np.int64)
  if arr.ndim < 2 or idx.shape != arr.shape[-2:-1]:
    raise ValueError(f"index must have shape [S={arr.shape[-2] if arr.ndim >= 2 else '?'}] for "
                     f"x of shape {arr.shape}, got {idx.shape}")
  vals = np.take_along_axis(arr, np.broadcast_to(np.maximum(idx, 0)[:, None],
                                                 arr.shape[:-1] + (1,)), axis=-1)[..., 0]
  return np.where(idx >= 0, vals, np.nan)


def ratio(numerator: ArrayLike, denominator: ArrayLike, floor: float = 0.0
          ) -> NDArray[np.float64]:
  """numerator / denominator where denominator > ``floor``, NaN elsewhere (shapes broadcast):
  the one definition of a share such as μ/I(F;Y) (``floor``: e.g. ``min_bits``)."""
  num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
  ok = den > floor
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def step_at(steps: ArrayLike, index: ArrayLike, fill: float = np.nan) -> NDArray[Any]:
  """The training step of each evaluation ``index`` (e.g. T_0 per seed), ``fill`` where the
  index is −1 (never reached)."""
  idx, st = np.asarray(index, np.int64), np.asarray(steps)
  return np.where(idx >= 0, st[np.maximum(idx, 0)], fill)


def versus_null(observed: ArrayLike, null: ArrayLike, level: float = 0.95) -> dict[str, Any]:
  """A per-seed headline in its own unit (bits) beside its null: Student-t intervals and
  ``excess`` v − v₀ (a ratio: :func:`ratio_versus_null`). Seeds with a NaN input are dropped.

  ``observed``: [S] (e.g. μ at T_0); ``null``: [P, S] draws of the same quantity under the null
  (e.g. ``scoring.null_mu`` there). Returns ``{"value": summarize(v), "null": {...},
  "excess": summarize(v − v₀)}``, v₀ = the seed's null mean; ``null`` describes the *seed mean*
  under the null: its mean, its ``level`` range over draws (``lo``, ``hi``), the one-sided
  permutation p-value (1 + #{draws whose seed mean ≥ the observed one}) / (1 + P), and
  ``p_values``, the same per seed.
  """
  return _versus_null(observed, null, level, bounded=False)


def ratio_versus_null(observed: ArrayLike, null: ArrayLike,
                      denominator: ArrayLike | None = None, *, floor: float = 0.0,
                      level: float = 0.95) -> dict[str, Any]:
  """A ratio v ≤ 1 (μ/I(F;Y), μ/I(L;Y), ...) beside its null: :func:`versus_null`'s fields,
  with intervals that stay in range (``summarize(bounded=True)``) and ``excess`` the share of
  what is left above the null, (v − v₀)/(1 − v₀) per seed. With ``denominator`` [S],
  ``observed`` [S] and ``null`` [P, S] are numerators (μ and its draws: permuting L leaves I
  unchanged), divided by :func:`ratio` with ``floor``; else they are ratios already (e.g. the
  per-draw peak of μ₀(t)/I(t), :func:`selected_null`)."""
  obs, nul = np.asarray(observed, np.float64), np.asarray(null, np.float64)
  if denominator is not None:
    den = np.asarray(denominator, dtype=np.float64)
    if den.shape != obs.shape:
      raise ValueError(f"denominator must have shape {obs.shape}, got {den.shape}")
    obs, nul = ratio(obs, den, floor), ratio(nul, den, floor)
  return _versus_null(obs, nul, level, bounded=True)


def _versus_null(observed: ArrayLike, null: ArrayLike, level: float, bounded: bool
                 ) -> dict[str, Any]:
  obs, nul = np.asarray(observed, np.float64), np.asarray(null, np.float64)
  if obs.ndim != 1 or nul.ndim != 2 or nul.shape[1] != obs.shape[0]:
    raise ValueError(f"observed must be [S] and null [P, S]; got {obs.shape} and {nul.shape}")
  keep = np.isfinite(obs) & np.isfinite(nul).all(axis=0)
  obs, nul = obs[keep], nul[:, keep]
  if obs.size == 0 or nul.shape[0] == 0:
    return {"value": summarize(obs, bounded=bounded), "excess": summarize([]), "null": {
        "mean": np.nan, "lo": np.nan, "hi": np.nan, "p_value": np.nan, "p_values": [],
        "num_draws": nul.shape[0]}}
  seed_mean = nul.mean(axis=1)  # [P]
  lo, hi = np.percentile(seed_mean, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
  p_all = (1.0 + np.sum(seed_mean >= obs.mean())) / (1.0 + nul.shape[0])
  p_seed = (1.0 + np.sum(nul >= obs[None, :], axis=0)) / (1.0 + nul.shape[0])
  base = nul.mean(axis=0)  # [S]
  with np.errstate(invalid="ignore", divide="ignore"):
    excess = (obs - base) / (1.0 - base) if bounded else obs - base
  return {
      "value": summarize(obs, level, bounded=bounded),
      "null": {"mean": float(seed_mean.mean()), "lo": float(lo), "hi": float(hi),
               "p_value": float(p_all), "p_values": [float(p) for p in p_seed],
               "num_draws": int(nul.shape[0])},
      "excess": summarize(excess, level, bounded=bounded),
  }


def null_band(null: ArrayLike, level: float = 0.95
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
  """(mean, lo, hi) [E] of the seed mean under the null, from draws [P, S, E] (NaN seeds
  dropped per draw): the band a figure draws beside the measured mean curve."""
  nul = np.asarray(null, dtype=np.float64)
  if nul.ndim != 3:
    raise ValueError(f"null must be [P, S, E], got shape {nul.shape}")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN
    seed_mean = np.nanmean(nul, axis=1)  # [P, E]
    lo, hi = np.nanpercentile(seed_mean, [50.0 * (1.0 - level), 50.0 * (1.0 + level)], axis=0)
    return np.nanmean(seed_mean, axis=0), lo, hi


# ----------------------------------------------------------------------------- indices
def _rows(a: ArrayLike, name: str) -> NDArray[np.float64]:
  arr = np.asarray(a, dtype=np.float64)
  if arr.ndim not in (1, 2):
    raise ValueError(f"{name} must be [E] or [S, E], got shape {arr.shape}")
  return np.atleast_2d(arr)


def _first_true(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
  """Index of the first True per row, −1 where none."""
  return np.where(mask.any(axis=1), mask.argmax(axis=1), -1).astype(np.int64)


def _below(mu: ArrayLike, i_fy: ArrayLike, delta: float, floor: float
           ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
  """(valid, below) [S, E]: finite with I > floor; and valid with μ < (1−δ)·I(F;Y)."""
  mu_r, i_r = _rows(mu, "mu"), _rows(i_fy, "i_fy")
  if mu_r.shape != i_r.shape:
    raise ValueError(f"mu shape {np.shape(mu)} != i_fy shape {np.shape(i_fy)}")
  valid = np.isfinite(mu_r) & np.isfinite(i_r) & (i_r > floor)
  return valid, valid & (mu_r < (1.0 - delta) * i_r)


def departure_index(mu: ArrayLike, i_fy: ArrayLike, *, delta: float = 0.1,
                    floor: float = 1e-3) -> NDArray[np.int64] | int:
  """First evaluation where μ departs from the phase it was in: μ < (1−δ)·I(F;Y) after some
  earlier evaluation with μ ≥ (1−δ)·I(F;Y) (the phase), among points with finite values and
  I > floor. A curve that never enters the phase has no departure (a 10-class F at
  initialisation carries a little information that L does not explain: that is no departure).

  ``mu``/``i_fy``: [S, E] (returns [S]) or [E] (returns an int). −1 if μ never departs.
  """
  valid, below = _below(mu, i_fy, delta, floor)
  in_phase = valid & ~below
  entered = np.cumsum(in_phase, axis=1) > 0            # the phase was seen at or before e
  after_phase = np.zeros_like(entered)
  after_phase[:, 1:] = entered[:, :-1]                 # ... strictly before e
  out = _first_true(below & after_phase)
  return int(out[0]) if np.ndim(mu) == 1 else out


def selected_null(null: ArrayLike, select: str = "max", end: ArrayLike | None = None
                  ) -> NDArray[np.float64]:
  """The null of a statistic chosen over evaluations, by the same choice on every draw:
  ``select="max"``: max_t of each draw [P, S, E] -> [P, S] (the null of a peak);
  ``"max_minus_end"``: max_t − the value at evaluation index ``end`` [S] (the null of the
  loss from peak). NaN evaluations are skipped; an all-NaN seed gives NaN."""
  nul = np.asarray(null, np.float64)
  if nul.ndim != 3:
    raise ValueError(f"null must be [P, S, E], got shape {nul.shape}")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN seeds -> NaN
    peak = np.nanmax(nul, axis=2)
  if select == "max":
    return peak
  if select == "max_minus_end":
    if end is None:
      raise ValueError("end: the evaluation index [S] is required for 'max_minus_end'")
    return peak - at_index(nul, np.asarray(end))
  raise ValueError(f"select must be 'max' or 'max_minus_end', got {select!r}")


def t0_index(
    acc_f: ArrayLike,
    acc_l: ArrayLike,
    *,
    rule: str = "acc_reaches_reference",
    mu: ArrayLike | None = None,
    i_fy: ArrayLike | None = None,
    delta: float = 0.1,
    floor: float = 1e-3,
) -> NDArray[np.int64]:
  """T_0 (end of the linear phase) per seed, as an index into the eval steps; −1 if never.

  Rules:
    * ``"acc_reaches_reference"``: first evaluation e with acc_f[s, e] ≥ acc_l[s]
      (NaN never reaches).
    * ``"mu_ratio"``: restrict to *valid* evaluations (finite μ, I and I(F_s;Y) > ``floor``
      bits). T_0 is the last valid evaluation before the first valid one with
      μ_Y(F_s;L) < (1−δ)·I(F_s;Y), i.e. the last t with μ ≥ (1−δ)·I at every valid s ≤ t;
      the last valid evaluation if μ never departs; −1 if the first valid evaluation
      already departs or no evaluation is valid. Needs ``mu`` and ``i_fy`` ([S, E]).
  ``acc_f``: [S, E]; ``acc_l``: [S] or scalar.
  """
  acc = np.asarray(acc_f, dtype=np.float64)
  if acc.ndim != 2:
    raise ValueError(f"acc_f must be [S, E], got shape {acc.shape}")
  if rule == "acc_reaches_reference":
    ref = np.asarray(acc_l, dtype=np.float64)
    if ref.ndim > 1 or (ref.ndim == 1 and ref.shape[0] != acc.shape[0]):
      raise ValueError(f"acc_l must be [S={acc.shape[0]}] or scalar, got shape {ref.shape}")
    ref = np.broadcast_to(ref, acc.shape[:1])
    return _first_true(acc >= ref[:, None])
  if rule == "mu_ratio":
    for name, arr in (("mu", mu), ("i_fy", i_fy)):
      if arr is None:
        raise ValueError(f"{name} is required for rule='mu_ratio'")
      if np.shape(arr) != acc.shape:
        raise ValueError(f"{name} must have shape {acc.shape}, got {np.shape(arr)}")
    valid, below = _below(mu, i_fy, delta, floor)
    dep = _first_true(below)  # the first valid evaluation below the ratio
    e = np.arange(acc.shape[1])[None, :]
    limit = np.where(dep < 0, acc.shape[1], dep)[:, None]
    before = valid & (e < limit)
    return np.where(before.any(axis=1), acc.shape[1] - 1 - before[:, ::-1].argmax(axis=1),
                    -1).astype(np.int64)
  raise ValueError(f"unknown rule {rule!r}; expected one of {T0_RULES}")


def ratio_at(mu: ArrayLike, i_fy: ArrayLike, index: ArrayLike) -> NDArray[np.float64]:
  """μ/I(F;Y) at each seed's evaluation ``index`` ([S]); NaN where index = −1 or I ≤ 0."""
  mu_r, i_r = np.asarray(mu, np.float64), np.asarray(i_fy, np.float64)
  idx = np.asarray(index, dtype=np.int64)
  if mu_r.ndim != 2 or mu_r.shape != i_r.shape:
    raise ValueError(f"mu and i_fy must be equal [S, E], got {mu_r.shape} and {i_r.shape}")
  if idx.shape != mu_r.shape[:1]:
    raise ValueError(f"index must have shape [S={mu_r.shape[0]}], got {idx.shape}")
  if np.any(idx >= mu_r.shape[1]) or np.any(idx < -1):
    raise ValueError(f"index entries must be in [-1, {mu_r.shape[1] - 1}], got {idx}")
  return ratio(at_index(mu_r, idx), at_index(i_r, idx))


def _smooth(rows: NDArray[np.float64], window: int) -> NDArray[np.float64]:
  if window <= 1:
    return rows
  half = window // 2
  padded = np.pad(rows, ((0, 0), (half, window - 1 - half)), mode="edge")
  win = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows -> NaN
    return np.nanmedian(win, axis=-1)


def plateau_index(curve: ArrayLike, *, tol: float = 0.05,
                  smooth: int = 1) -> NDArray[np.int64] | int:
  """Evaluation index where a rising curve reaches its plateau.

  Rule (per row, NaNs ignored): optionally smooth with a centred running median of
  ``smooth`` points (use 3–5 for noisy curves), let ``top`` = max and ``bottom`` = min before
  the argmax; the plateau is the first index with curve ≥ top − tol·(top − bottom). Using the
  rise (not |max|) makes it offset-invariant; taking the *first* approach to the max makes it
  robust to a later decline. For A·(1 − e^{−t/τ}) this is t ≈ τ·ln(1/tol). A flat curve has
  its plateau at 0; an all-NaN row gives −1. ``curve``: [S, E] (returns [S]) or [E] (int).
  """
  if not 0.0 <= tol < 1.0:
    raise ValueError(f"tol must be in [0, 1), got {tol}")
  if smooth < 1:
    raise ValueError(f"smooth must be >= 1, got {smooth}")
  rows = _smooth(_rows(curve, "curve"), int(smooth))
  out = np.full(rows.shape[0], -1, dtype=np.int64)
  for s, row in enumerate(rows):
    finite = np.isfinite(row)
    if not finite.any():
      continue
    r = np.where(finite, row, -np.inf)
    top_at = int(np.argmax(r))
    bottom = float(np.min(np.where(finite, row, np.inf)[: top_at + 1]))
    thresh = r[top_at] - tol * (r[top_at] - bottom)
    out[s] = int(np.argmax(r >= thresh))
  return int(out[0]) if np.ndim(curve) == 1 else out
