"""What a run produced, and the one reader of a run's ``results.npz``.

    res = results.load("/tmp/run")          # Results (also sgd_phases.analysis.load)
    res.steps                                # [E] evaluation steps
    res.measures("linear")["mu"]             # [S, E] μ_Y(F_t; L) in bits
    res.null("linear")                       # [P, S, E] draws under F ⟂ L | Y, or None
    res.resolved                             # {"seed_strategy": "map", "backend": "cpu", ...}

The arrays (README: results format): ``steps``, ``seed_ids``, ``y_test``, ``num_classes``,
``predictions`` [S, E, N], the metric buffers [S, E], ``reference_names``, and per reference
``ref/<r>/predictions`` [S, N] (−1 rows: undefined for that seed), ``ref/<r>/test_acc``,
``mi/<r>/<field>`` [S, E] and ``null/<r>/mu`` [P, S, E]; ``t0_index``, ``t0_step``; for sequence
data ``num_positions`` (P = T − 1 − skip scored positions per test sequence; ``predictions`` is
sequence-major, positions last) and ``position/<r>/{mu,i_fy}`` [S, E, P]; and
``resolved/<choice>``: what the run's ``auto`` settings resolved to; ``run/seed`` and
``run/bias_correction``: the scoring inputs of the stored null (so ``analysis.add_null`` draws
the same permutations); the soft measures ``soft/<r>/<field>``, ``soft/f/ce``,
``soft/mixture/*`` (per position ``position/<r>/<field>``), the references' distributions
``soft/<r>/probabilities``, ``run/soft`` (the options that made them) and
(``eval.store_probabilities``) F's ``probabilities`` [S, E, N, K]. Every key is built by the functions below, nowhere else.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from etils import epath

from sgd_phases import io_lib, mutual_info


POSITION_FIELDS = ("mu", "i_fy")  # InfoMeasures fields recorded per sequence position


# ------------------------------------------------------------------ the keys of results.npz
def mi_key(reference: str, field: str) -> str:
  """``mi/<reference>/<field>``: an InfoMeasures field [S, E] against one reference."""
  return f"mi/{reference}/{field}"


def null_key(reference: str) -> str:
  """``null/<reference>/mu``: the conditional null's draws [P, S, E]."""
  return f"null/{reference}/mu"


def position_key(reference: str, field: str) -> str:
  """``position/<reference>/<field>``: ``mu`` or ``i_fy`` [S, E, P] at each sequence position,
  or a soft measure (``SOFT_FIELDS``; ``position/f/ce`` for F, [S, P] for a reference's ``ce``)."""
  return f"position/{reference}/{field}"


def ref_key(reference: str, what: str) -> str:
  """``ref/<reference>/<what>`` (``predictions`` [S, N], ``test_acc`` [S])."""
  return f"ref/{reference}/{what}"


def surrogate_key(kind: str, *parts: str) -> str:
  """``surrogate/<kind>/<parts...>`` (e.g. ``surrogate_key("gaussian", "mi", "linear", "mu")``)."""
  return "/".join(("surrogate", kind) + parts)


# soft measures (sgd_phases.soft_scoring): F's distribution against each reference's
SOFT_FIELDS = ("kl_ref_f", "kl_f_ref", "js", "ce")  # bits per example
SOFT_F = "f"              # soft/f/ce: F's own cross-entropy
SOFT_MIXTURE = "mixture"  # soft/mixture/{weights,names,residual_kl}
SOFT_UNIFORM = "uniform"  # the mixture's last component
SOFT_RESERVED = (SOFT_F, SOFT_MIXTURE, SOFT_UNIFORM)  # not reference names


def soft_key(name: str, field: str) -> str:
  """``soft/<name>/<field>``: a soft measure [S, E] of F against reference ``name``
  (``SOFT_FIELDS``; ``ce`` of a reference is [S]), ``soft/f/ce`` [S, E],
  ``soft/mixture/{weights [S, E, R + 1], names [R + 1], residual_kl [S, E]}``, or a
  reference's distributions ``soft/<name>/probabilities`` ([N, K] or [S, N, K])."""
  return f"soft/{name}/{field}"


def is_soft_score_key(key: str) -> bool:
  """True for the soft measures scoring writes (not the references' distributions)."""
  parts = key.split("/")
  if len(parts) != 3:
    return False
  if parts[0] == "soft":
    return parts[2] != "probabilities"
  return parts[0] == "position" and parts[2] in SOFT_FIELDS


def resolved_key(choice: str) -> str:
  """``resolved/<choice>``: what one ``auto`` setting became."""
  return f"resolved/{choice}"


def run_key(field: str) -> str:
  """``run/<field>``: a config value the stored scores depend on (``seed``,
  ``bias_correction``)."""
  return f"run/{field}"


def is_score_key(key: str) -> bool:
  """True for the keys that scoring writes (measures and null draws), i.e. what re-scoring
  replaces."""
  return (key.startswith(("mi/", "null/", "position/")) or (key.startswith("surrogate/") and
                                                            "/mi/" in key) or is_soft_score_key(key))


@dataclasses.dataclass(frozen=True)
class Results:
  """The arrays of one run's ``results.npz`` and the workdir they came from (if any)."""
  arrays: dict[str, np.ndarray]
  workdir: epath.Path | None = None

  @property
  def steps(self) -> np.ndarray:
    return self.arrays["steps"]

  @property
  def reference_names(self) -> list[str]:
    return [str(r) for r in self.arrays["reference_names"]]

  @property
  def resolved(self) -> dict[str, str]:
    """What the run's ``auto`` choices resolved to (seed strategy, MI kernel, conv, backend)."""
    return {k.split("/", 1)[1]: str(v) for k, v in self.arrays.items()
            if k.startswith("resolved/")}

  def _check(self, reference: str) -> None:
    if reference not in self.reference_names:
      raise ValueError(f"reference={reference!r} not in {self.reference_names}")

  def measures(self, reference: str) -> dict[str, np.ndarray]:
    """InfoMeasures fields -> [seeds, evals] arrays against one reference."""
    self._check(reference)
    return {f: self.arrays[mi_key(reference, f)] for f in mutual_info.InfoMeasures._fields}

  def null(self, reference: str) -> np.ndarray | None:
    """[P, S, E] draws of μ_Y(F_t;L) under F ⟂ L | Y for one reference, or None when the run
    has none (``config.null.num_permutations = 0``; ``analysis.add_null`` adds them)."""
    self._check(reference)
    return self.arrays.get(null_key(reference))

  def by_position(self, reference: str) -> dict[str, np.ndarray] | None:
    """``{"mu", "i_fy"}`` [S, E, P] at each position of the test sequences (sequence data),
    or None (other data, or a run scored before per-position curves were recorded)."""
    self._check(reference)
    keys = {f: position_key(reference, f) for f in POSITION_FIELDS}
    return {f: self.arrays[k] for f, k in keys.items()} if keys["mu"] in self.arrays else None

  def reference(self, reference: str, what: str = "predictions") -> np.ndarray:
    """A reference's stored ``predictions`` [S, N] or ``test_acc`` [S]."""
    self._check(reference)
    return self.arrays[ref_key(reference, what)]

  def soft(self, name: str) -> dict[str, np.ndarray]:
    """The soft measures stored for reference ``name`` (``SOFT_FIELDS`` present; empty for a
    run without them), or ``soft("f")``: {"ce": [S, E]}."""
    if name != SOFT_F:
      self._check(name)
    return {f: self.arrays[soft_key(name, f)] for f in SOFT_FIELDS
            if soft_key(name, f) in self.arrays}

  def mixture(self) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(component names, weights [S, E, R + 1], residual KL [S, E] in bits) of F as a mixture
    of its references and the uniform distribution, or None when the run has none."""
    key = soft_key(SOFT_MIXTURE, "weights")
    if key not in self.arrays:
      return None
    return ([str(n) for n in self.arrays[soft_key(SOFT_MIXTURE, "names")]], self.arrays[key],
            self.arrays[soft_key(SOFT_MIXTURE, "residual_kl")])

  def recorded(self, field: str, default=None):
    """A config value recorded with the scores (``run/<field>``), or ``default`` (runs
    written before it was recorded: then from the workdir's config.json when there is one)."""
    key = run_key(field)
    if key in self.arrays:
      v = self.arrays[key].item()
      return None if v == "" else v
    if self.workdir is not None and (self.workdir / io_lib.CONFIG_FILE).exists():
      return io_lib.read_json(self.workdir / io_lib.CONFIG_FILE).get(field, default)
    return default


def load(workdir: io_lib.PathLike) -> Results:
  """The Results of a finished run (``results.npz`` in ``workdir`` -- a folder or URI -- or
  the file itself)."""
  path = io_lib.path(workdir)
  path = path if path.name.endswith(".npz") else path / io_lib.RESULTS_FILE
  if not path.exists():
    raise ValueError(f"workdir: no results file at {path}")
  return Results(io_lib.read_npz(path), path.parent)
