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
the same permutations). Every key is built by the functions below, nowhere else.
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
  """``position/<reference>/<field>``: ``mu`` or ``i_fy`` [S, E, P] at each sequence position."""
  return f"position/{reference}/{field}"


def ref_key(reference: str, what: str) -> str:
  """``ref/<reference>/<what>`` (``predictions`` [S, N], ``test_acc`` [S])."""
  return f"ref/{reference}/{what}"


def surrogate_key(kind: str, *parts: str) -> str:
  """``surrogate/<kind>/<parts...>`` (e.g. ``surrogate_key("gaussian", "mi", "linear", "mu")``)."""
  return "/".join(("surrogate", kind) + parts)


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
  return key.startswith(("mi/", "null/", "position/")) or (key.startswith("surrogate/") and
                                                           "/mi/" in key)


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
