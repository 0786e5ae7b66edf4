"""Re-scoring finished runs without retraining F.

    res = analysis.load("/tmp/run")                        # Results
    m = analysis.measures_against(res, my_predictions)     # μ of every F_t against a new L
    res = analysis.add_null(res, num_permutations=100)     # the F ⟂ L | Y null, every reference
    res2 = analysis.add_reference(res, config, "cnn2",     # train a new reference, per seed,
                                  config_lib.reference_config("cnn2"))  # and score it

``my_predictions`` is [N] (one classifier for every seed) or [S, N] (one per seed) hard test
predictions, e.g. from another run's ``ref/<name>/predictions`` or a scikit-learn model.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from sgd_phases import config_lib, engine, scoring, stats, train_lib
from sgd_phases import datasets as datasets_lib
from sgd_phases import results as results_lib
from sgd_phases.results import Results


load = results_lib.load  # the one results reader (sgd_phases.results.load)


def measures_against(results: Results, ref_predictions: np.ndarray,
                     bias_correction: str | None = None) -> dict[str, np.ndarray]:
  """Every information measure [S, E] of the stored F_t predictions against new ones."""
  a = results.arrays
  ref = np.asarray(ref_predictions)
  s, _, n = a["predictions"].shape
  if ref.shape not in ((n,), (s, n)):
    raise ValueError(f"ref_predictions: shape {ref.shape} must be [N]={n,} or [S, N]={(s, n)}")
  return scoring.measures(a["predictions"], ref, a["y_test"], int(a["num_classes"]),
                                    bias_correction)


def add_reference(results: Results, config: ml_collections.ConfigDict, name: str,
                  reference: ml_collections.ConfigDict) -> Results:
  """Trains a new reference (on the training labels) per seed and adds its measures.

  ``config`` is the run's config (``config.json`` as a ConfigDict). F is not retrained.
  """
  if reference.trained_on != "labels":
    raise ValueError("reference.trained_on: only 'labels' can be added after the fact (F's "
                     "train-set predictions are not stored)")
  config = ml_collections.ConfigDict(config.to_dict())
  config.references[name] = reference
  config_lib.validate(config)
  ds = datasets_lib.get_dataset(config.dataset)
  data = engine.EvalData.create(ds, config.eval.train_eval_size)
  out = train_lib.train_reference(config, name, data, ds, results.arrays["seed_ids"])
  arrays = dict(results.arrays)
  arrays["reference_names"] = np.array(list(results.reference_names) + [name], dtype=str)
  arrays[results_lib.ref_key(name, "predictions")] = out["predictions"]
  arrays[results_lib.ref_key(name, "test_acc")] = out["test_acc"]
  for f, v in measures_against(results, out["predictions"], config.bias_correction).items():
    arrays[results_lib.mi_key(name, f)] = v
  return Results(arrays, results.workdir)


_FROM_RUN: Any = object()  # default of add_null: the value the run recorded


def add_null(results: Results, num_permutations: int = 100, seed: Any = _FROM_RUN,
             bias_correction: Any = _FROM_RUN) -> Results:
  """The conditional-independence null ``null/<ref>/mu`` [P, S, E] of every reference, computed
  from the stored predictions (no retraining; seconds). ``seed`` and ``bias_correction``
  default to what the run recorded (``run/*`` in results.npz, or its config.json), so the
  draws equal the engine's; a run that recorded neither needs both passed."""
  seed = results.recorded("seed") if seed is _FROM_RUN else seed
  bc = results.recorded("bias_correction") if bias_correction is _FROM_RUN else bias_correction
  if seed is None:
    raise ValueError("seed: the run recorded no config.seed (no run/seed in results.npz, no "
                     "config.json beside it); pass seed= (and bias_correction=)")
  a = results.arrays
  arrays = dict(a)
  for name in results.reference_names:
    arrays[results_lib.null_key(name)] = scoring.null_mu(
        a["predictions"], a[results_lib.ref_key(name, "predictions")], a["y_test"],
        int(a["num_classes"]), scoring.null_key(int(seed), name), num_permutations, bc)
  return Results(arrays, results.workdir)


def headline(results: Results, reference: str) -> dict[str, dict[str, float]]:
  """The numbers of the README table (means with 95% CIs over seeds).

  With null draws in the run, ``*_vs_null`` entries give the two ratios of the paper's claims
  beside the conditional-independence null (``stats.ratio_versus_null``): μ/I(F;Y) at T_0 (the
  linear phase) and μ_∞/I(L;Y) at the end (retention of what L explains).
  """
  a = results.arrays
  m = results.measures(reference)
  t0 = a["t0_index"]
  last = len(a["steps"]) - 1
  end = np.full_like(t0, last)
  out = {
      "t0_step": stats.summarize(stats.step_at(a["steps"], t0), bounded=True),
      "mu_over_i_at_t0": stats.summarize(stats.ratio_at(m["mu"], m["i_fy"], t0), bounded=True),
      "mu_end_over_i_ly": stats.summarize(stats.ratio_at(m["mu"], m["i_ly"], end), bounded=True),
      "i_ly": stats.summarize(m["i_ly"][:, last]),
      "i_fy_end": stats.summarize(m["i_fy"][:, last]),
      "mu_end": stats.summarize(m["mu"][:, last]),
      "acc_l": stats.summarize(results.reference(reference, "test_acc"), bounded=True),
      "test_acc_end": stats.summarize(a["test_acc"][:, last], bounded=True),
  }
  if "train_acc" in a:  # absent for predictions scored without training (sgd_phases.score)
    out["train_acc_end"] = stats.summarize(a["train_acc"][:, last], bounded=True)
  null = results.null(reference)
  if null is not None:
    out["mu_over_i_at_t0_vs_null"] = stats.ratio_versus_null(
        stats.at_index(m["mu"], t0), stats.at_index(null, t0), stats.at_index(m["i_fy"], t0))
    out["mu_end_over_i_ly_vs_null"] = stats.ratio_versus_null(
        m["mu"][:, last], null[:, :, last], m["i_ly"][:, last])
  return out
