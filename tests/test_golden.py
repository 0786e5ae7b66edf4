"""The engine's numbers do not drift: a fixed CPU run against golden values recorded before
the engine was reshaped (tests/golden_cpu.json).

Bit-identity is promised for the same jax version on the same kind of CPU: XLA's float
rounding may change between versions, and its CPU code depends on the host's vector instructions
(measured: the same code and jax 0.10.2 give another sha256 on an AVX-512/AMX Xeon than on the
machine the first values came from). There the sha256 of every result array must match; on
another jax version or CPU the test still checks the end-of-run numbers to float tolerance.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks import common
from sgd_phases import config_lib, train_lib

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402

GOLDEN = json.loads((Path(__file__).parent / "golden_cpu.json").read_text())


def golden_config():
  c = tiny_run.config(120)
  c.checkpoint_every = 0
  c.null.num_permutations = 8
  c.references.f_t0 = config_lib.reference_config("linear", "snapshot_at_T0")
  return c


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="golden values are CPU values")
def test_quick_run_matches_golden_values():
  a = train_lib.train(golden_config(), None).arrays
  assert sorted(k for k in a if k.startswith(("predictions", "mi/", "null/", "ref/", "t0_",
                                               "test_", "train_"))) == GOLDEN["keys"]
  np.testing.assert_allclose(a["test_acc"][:, -1], GOLDEN["test_acc_end"], atol=1e-6)
  np.testing.assert_allclose(a["mi/linear/mu"][:, -1], GOLDEN["mu_end"], atol=1e-5)
  expected = GOLDEN["sha256_by_cpu"].get(common.cpu_fingerprint())
  if jax.__version__ == GOLDEN["jax"] and expected is not None:
    h = hashlib.sha256()
    for k in GOLDEN["keys"]:
      h.update(k.encode())
      h.update(np.ascontiguousarray(a[k]).tobytes())
    assert h.hexdigest() == expected
