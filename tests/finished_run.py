"""A finished run in a workdir without training, and the check that changed data makes it
another run (tests/test_data_sources.py, tests/test_your_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sgd_phases import config_lib, datasets, io_lib, train_lib


def finished_run(config, workdir: Path) -> np.ndarray:
  """A finished run of ``config`` (its pinned config.json and a results.npz) without training:
  what a workdir holds after ``train`` returned; the marker array stands for its numbers."""
  marker = np.arange(3.0)
  workdir.mkdir()
  io_lib.write_json(workdir / "config.json",
                    config_lib.to_dict(datasets.with_data(config, None)))
  io_lib.write_npz(workdir / "results.npz", {"marker": marker})
  return marker


def refused_after_change(config, workdir: Path, change) -> None:
  """``train`` returns the finished run while the data is unchanged; after ``change()`` it
  refuses the workdir naming ``dataset.fingerprint`` (it used to return the old numbers)."""
  marker = finished_run(config, workdir)
  np.testing.assert_array_equal(train_lib.train(config, str(workdir)).arrays["marker"], marker)
  stored = json.loads((workdir / "config.json").read_text())["dataset"]["fingerprint"]
  change()
  with pytest.raises(ValueError, match=r"(?s)different config.*dataset\.fingerprint: "
                                       rf"'{stored}' -> '[0-9a-f]{{16}}'"):
    train_lib.train(config, str(workdir))
  with pytest.raises(ValueError, match=rf"^fingerprint='{stored}': the data read from "):
    datasets.get_dataset({**config_lib.to_dict(config)["dataset"], "fingerprint": stored})
