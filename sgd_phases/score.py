"""Scoring predictions made elsewhere (PyTorch, Hugging Face, another JAX codebase).

    python -m sgd_phases.score --predictions=F.npz --workdir=OUT \\
        --reference linear=L.npz [--reference cnn=G.npz ...] [--num_permutations=100]

    from sgd_phases import score
    res = score.score_predictions(f, y, {"linear": l}, steps)       # Results, nothing written

``F.npz`` holds ``predictions`` (F's hard test predictions, [S, E, N] for S seeds and E
evaluations, or [E, N]), ``labels`` [N] and optionally ``steps`` [E] (default 0 … E−1) and
``probabilities`` ([S, E, N, K] or [E, N, K]: F's predictive distributions, for the soft
measures). Each reference file holds ``predictions``: [N] (one classifier), [S, N] (one per
seed) or [S, E, N] (time-paired, e.g. a linearisation trained beside F), and optionally its
``probabilities`` ([N, K], [S, N, K] or [S, E, N, K]). Out come the information
measures and the conditional-independence null of every reference (``sgd_phases.scoring``,
the engine's code), T_0 per seed against the first non-time-paired reference (first
evaluation where acc(F_t) ≥ acc(L)), in ``OUT/results.npz`` with the keys a training run
writes (``mi/<name>/mu``, ``null/<name>/mu``, ...; ``sgd_phases.results.load`` reads it),
``OUT/summary.json`` (``analysis.headline`` per reference) and ``OUT/figures/score_<name>.png``.
With probabilities, the soft measures too (KL both ways, JS, cross-entropies, F as a mixture of
the references: ``soft/...`` keys, ``summary["soft"]``, ``figures/score_soft.png`` and
``score_mixture.png``; ``--mixture=a,b`` picks the mixture's references).
``OUT`` is the score command's own folder: one holding a training run or an experiment's is
refused, nothing changed (``sgd_phases.workdir.claim``). Bad input (a missing file or array,
fractional steps, a reference holding −1 or a class ≥ K) is one error naming the flag or
argument, before anything is written.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from sgd_phases import analysis, io_lib, plotting, scoring, soft_scoring, stats
from sgd_phases import results as results_lib
from sgd_phases import workdir as workdir_lib

NAME = "score"


def _as_int(name: str, a: Any) -> np.ndarray:
  a = np.asarray(a)
  if a.dtype.kind not in "iu":
    raise ValueError(f"{name}: hard predictions must be integers, got dtype {a.dtype}")
  return a.astype(np.int32)


def _as_probabilities(name: str, p: Any, shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
  """float32 probabilities of one of ``shapes`` (each without K) whose rows are distributions
  (float16 or float32 kept as given; float64 stored as float32); one ValueError naming it."""
  a = np.asarray(p)
  if a.dtype.kind != "f" or a.ndim < 2 or a.shape[:-1] not in [tuple(x) for x in shapes]:
    raise ValueError(f"{name}: probabilities must be a float array of shape "
                     f"{' or '.join(str(list(x) + ['K']) for x in shapes)}, got {a.dtype} "
                     f"{list(a.shape)}")
  if not (np.isfinite(a).all() and (a >= 0).all() and np.allclose(
      a.sum(-1, dtype=np.float64), 1.0, atol=1e-3)):
    raise ValueError(f"{name}: probabilities must be finite, non-negative and sum to 1 over "
                     "the last axis (within 1e-3)")
  return a if a.dtype in (np.float16, np.float32) else a.astype(np.float32)


def _steps(steps: Any, e: int) -> np.ndarray:
  """``steps`` as E increasing integers (default 0 … E−1); fractional ones are refused, not
  truncated."""
  if steps is None:
    return np.arange(e)
  st = np.asarray(steps)
  if st.shape != (e,) or st.dtype.kind not in "iuf":
    raise ValueError(f"steps: need {e} increasing integers, got {st.dtype}{list(st.shape)}")
  whole = np.isfinite(st) & (st == np.round(st)) if st.dtype.kind == "f" else np.ones(e, bool)
  if not whole.all():
    raise ValueError(f"steps: must be integers (SGD steps), got {st[~whole][0]}")
  st = st.astype(np.int64)
  if np.any(np.diff(st) <= 0):
    raise ValueError(f"steps: need {e} increasing integers, got {st.tolist()}")
  return st


def score_predictions(predictions: Any, labels: Any, references: Mapping[str, Any],
                      steps: Sequence[int] | None = None, *, num_classes: int | None = None,
                      num_permutations: int = 100, seed: int = 0,
                      bias_correction: str | None = None, probabilities: Any = None,
                      reference_probabilities: Mapping[str, Any] | None = None,
                      mixture: Sequence[str] = ()) -> results_lib.Results:
  """Every measure and null of F's ``predictions`` ([S, E, N] or [E, N]) against each
  reference ([N], [S, N] or [S, E, N]), with T_0 against the first reference that is not
  time-paired; one ValueError naming the argument for inconsistent shapes.

  With F's ``probabilities`` ([S, E, N, K] or [E, N, K]) also the soft measures
  (``sgd_phases.soft_scoring``: F's cross-entropy, and KL/JS against each reference with
  ``reference_probabilities[name]``, [N, K], [S, N, K] or [S, E, N, K]; F as a mixture of
  ``mixture``, default every such reference, and the uniform distribution)."""
  f = _as_int("predictions", predictions)
  f = f[None] if f.ndim == 2 else f
  y = _as_int("labels", labels)
  if f.ndim != 3 or y.ndim != 1 or f.shape[-1] != y.shape[0]:
    raise ValueError(f"predictions: shape {np.shape(predictions)} must be [S, E, N] or [E, N] "
                     f"with N = len(labels) = {y.shape[0]}")
  s, e, n = f.shape
  st = _steps(steps, e)
  if not references:
    raise ValueError("references: need at least one reference's predictions")
  references = {name: _as_int(f"reference {name}", r) for name, r in references.items()}
  k = int(num_classes or max(int(f.max()), int(y.max()),
                             *(int(np.max(r)) for r in references.values())) + 1)
  if probabilities is not None:
    pf = _as_probabilities("probabilities", probabilities, [(s, e, n), (e, n)])
    pf = pf[None] if pf.ndim == 3 else pf
    if num_classes is None:
      k = max(k, pf.shape[-1])
    if pf.shape[-1] != k:
      raise ValueError(f"probabilities: {pf.shape[-1]} classes, but the predictions and labels "
                       f"need {k}")
  extra = dict(reference_probabilities or {})
  if set(extra) - set(references) or (extra and probabilities is None):
    raise ValueError(f"reference_probabilities: {sorted(extra)} need F's probabilities and a "
                     f"reference of the same name (references: {sorted(references)})")
  if f.min() < 0 or y.min() < 0 or f.max() >= k or y.max() >= k:
    raise ValueError(f"predictions/labels: classes must be in [0, {k})")
  for name, r in references.items():  # a -1 row would read as "undefined for this seed": NaN
    bad = (r < 0) | (r >= k)
    if bad.any():
      seed = (f"seed {int(np.argmax(bad.reshape(len(r), -1).any(-1)))}, " if r.ndim > 1
              else "")
      raise ValueError(f"reference {name}: {seed}predictions hold {int(r[bad][0])}; classes "
                       f"must be in [0, {k})")
  arrays: dict[str, Any] = {
      "steps": st, "seed_ids": np.arange(s), "y_test": y, "num_classes": np.int64(k),
      "predictions": f, "test_acc": (f == y).mean(axis=-1).astype(np.float32),
      "reference_names": np.array(list(references), dtype=str)}
  t0_name = ""
  for name, r in references.items():
    if r.shape not in ((n,), (s, n), (s, e, n)):
      raise ValueError(f"reference {name}: shape {r.shape} must be [N]={(n,)}, [S, N]={(s, n)} "
                       f"or [S, E, N]={(s, e, n)}")
    arrays[results_lib.ref_key(name, "predictions")] = r
    acc = (r == y).mean(axis=-1).astype(np.float32)
    arrays[results_lib.ref_key(name, "test_acc")] = np.broadcast_to(acc, (s,) + acc.shape[1:]
                                                                    if acc.ndim else (s,))
    if not t0_name and r.ndim < 3:
      t0_name = name
    if name in extra:
      rp = _as_probabilities(f"reference {name}", extra[name], [(n,), (s, n), (s, e, n)])
      if rp.shape[-1] != k:
        raise ValueError(f"reference {name}: probabilities over {rp.shape[-1]} classes, F's "
                         f"over {k}")
      arrays[results_lib.soft_key(name, "probabilities")] = rp
  if probabilities is not None:
    arrays["probabilities"] = pf
  config = ml_collections.ConfigDict(dict(
      seed=seed, null=dict(num_permutations=num_permutations), bias_correction=bias_correction,
      t0=dict(rule="acc_reaches_reference", reference=t0_name, delta=0.1),
      soft=dict(enabled=probabilities is not None, mixture=list(mixture))))
  refs = {name: {"predictions": arrays[results_lib.ref_key(name, "predictions")],
                 "test_acc": arrays[results_lib.ref_key(name, "test_acc")]}
          for name in references}
  t0 = scoring.t0_indices(config, arrays["test_acc"], f, refs, y, k)
  arrays.update(scoring.t0_arrays(config, st, t0))
  return results_lib.Results(scoring.score_run(config, arrays))


def write(results: results_lib.Results, workdir: io_lib.PathLike, started: float,
          command: str | None = None) -> dict[str, Any]:
  """results.npz, summary.json (headline per reference, beside the null) and the figures."""
  wd = workdir_lib.claim(workdir, NAME)  # never into another command's run
  io_lib.write_npz(wd / io_lib.RESULTS_FILE, results.arrays)
  a = results.arrays
  summary: dict[str, Any] = {
      "experiment": NAME, "num_seeds": int(a["predictions"].shape[0]),
      "num_steps": int(a["steps"][-1]), "num_classes": int(a["num_classes"]),
      "t0_reference": str(a["t0_reference"]),
      "t0_step": stats.summarize(stats.step_at(a["steps"], a["t0_index"]), bounded=True),
      "references": {r: _reference_summary(results, r) for r in results.reference_names},
      **({"soft": soft} if (soft := soft_scoring.summarize(results)) else {}),
      "command": command, "wall_time_s": round(time.time() - started, 1)}
  io_lib.write_json(wd / "summary.json", summary)
  summary["figures"] = make_figures(os.fspath(wd))
  return summary


def _reference_summary(results: results_lib.Results, name: str) -> dict[str, Any]:
  m, null = results.measures(name), results.null(name)
  last = len(results.steps) - 1
  out = {"mu_end": stats.summarize(m["mu"][:, last]),
         "i_fy_end": stats.summarize(m["i_fy"][:, last]),
         "mu_over_i_end": stats.summarize(stats.ratio_at(m["mu"], m["i_fy"],
                                                         np.full(len(m["mu"]), last)),
                                          bounded=True)}
  if null is not None:
    out["mu_end_vs_null"] = stats.versus_null(m["mu"][:, last], null[:, :, last])
  if results.reference(name).ndim < 3 and str(results.arrays["t0_reference"]) == name:
    out.update({k: v for k, v in analysis.headline(results, name).items()
                if k in ("mu_over_i_at_t0", "mu_over_i_at_t0_vs_null", "mu_end_over_i_ly",
                         "mu_end_over_i_ly_vs_null", "acc_l")})
  return out


def make_figures(workdir: str) -> list[str]:
  """``figures/score_<reference>.png``: I(F_t;Y), μ_Y(F_t;L) with its null band, accuracies."""
  res = results_lib.load(workdir)
  a, out = res.arrays, []
  for name in res.reference_names:
    m = res.measures(name)
    acc_l = res.reference(name, "test_acc")
    fig = plotting.plot_linear_phase(
        a["steps"], m["i_fy"], m["mu"], m["i_ly"], a["test_acc"],
        acc_l if acc_l.ndim == 1 else acc_l[:, -1], t0_steps=a["t0_step"],
        title=f"F against {name}", mu_null=res.null(name),
        logx=bool(a["steps"][0] >= 0 and len(a["steps"]) > 2))
    out.append(plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"score_{name}.png"))
  out += soft_scoring.figures(workdir, res, "score", "F against its references")
  return [os.fspath(p) for p in out]


def _read(flag: str, path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
  """The arrays of an input file; one ValueError naming the flag for a missing or unreadable
  file or a missing array."""
  if not io_lib.path(path).exists():
    raise ValueError(f"{flag}: no such file")
  try:
    arrays = io_lib.read_npz(path)
  except ValueError as e:
    raise ValueError(f"{flag}: {e}") from e
  missing = [k for k in keys if k not in arrays]
  if missing:
    raise ValueError(f"{flag}: no {missing[0]!r} array in the file (it holds {sorted(arrays)})")
  return arrays


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m sgd_phases.score`` (module doc)."""
  import argparse
  import shlex
  import sys
  parser = argparse.ArgumentParser(prog="python -m sgd_phases.score", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--predictions", required=True, help="F.npz: predictions, labels[, steps]")
  parser.add_argument("--workdir", required=True, help="output folder (or gs:// URI)")
  parser.add_argument("--reference", action="append", default=[], metavar="NAME=L.npz",
                      help="a reference classifier's predictions (repeatable)")
  parser.add_argument("--num_permutations", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--bias_correction", choices=["miller_madow"], default=None)
  parser.add_argument("--mixture", default="", help="comma-separated references of the "
                      "mixture fit (default: every reference with probabilities)")
  args = parser.parse_args(argv)
  started = time.time()
  try:
    workdir_lib.check_owner(args.workdir, NAME)  # before anything is read or written
    f = _read(f"--predictions={args.predictions}", args.predictions, ("predictions", "labels"))
    refs, ref_probs = {}, {}
    for spec in args.reference:
      name, sep, path = spec.partition("=")
      if not sep or not name or not path:
        raise ValueError(f"--reference={spec!r}: expected NAME=L.npz")
      arrays = _read(f"--reference {spec}", path, ("predictions",))
      refs[name] = arrays["predictions"]
      if "probabilities" in arrays and "probabilities" in f:
        ref_probs[name] = arrays["probabilities"]
    res = score_predictions(f["predictions"], f["labels"], refs, f.get("steps"),
                            num_permutations=args.num_permutations, seed=args.seed,
                            bias_correction=args.bias_correction,
                            probabilities=f.get("probabilities"),
                            reference_probabilities=ref_probs,
                            mixture=[m for m in args.mixture.split(",") if m])
  except ValueError as e:
    parser.error(str(e))
  command = shlex.join(["python", "-m", "sgd_phases.score"] + list(
      sys.argv[1:] if argv is None else argv))
  from sgd_phases import cli
  print("\n".join(cli.human_summary(write(res, args.workdir, started, command), args.workdir)))


if __name__ == "__main__":
  main()
