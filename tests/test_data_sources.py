"""Data read from files: the text dataset's split, and (below) what every file-backed source
refuses or identifies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sgd_phases import config_lib, datasets, io_lib, train_lib
from sgd_phases.datasets import sequences


def _brute_force_text_split(text: str, length: int, test_fraction: float):
  """The text dataset's tokens as first written: per-character dictionary lookups, the test
  text filtered one character at a time."""
  cut = int(len(text) * (1 - test_fraction))
  vocab = "".join(sorted(set(text[:cut])))
  index = {c: i for i, c in enumerate(vocab)}
  test_text = "".join(c for c in text[cut:] if c in set(vocab))

  def windows(s):
    m = len(s) // length
    return np.array([index[c] for c in s[:m * length]], dtype=np.int32).reshape(m, length)

  return windows(text[:cut]), windows(test_text), vocab


def test_text_split_matches_a_per_character_implementation(tmp_path):
  rng = np.random.default_rng(0)
  # Astral and non-Latin characters, and test-only characters ("XYZ") that must be dropped.
  train_chars = list("abc de\u00e9\u4e2d\U0001F600\n")
  text = "".join(rng.choice(train_chars, 3000)) + "".join(rng.choice(train_chars + list("XYZ"),
                                                                     1000))
  (tmp_path / "t.txt").write_text(text, encoding="utf-8")
  train, test, vocab = _brute_force_text_split(text, 16, 0.25)
  ds = datasets.get_dataset({"name": "text", "path": str(tmp_path / "t.txt"), "length": 16,
                             "test_fraction": 0.25, "train_size": 10_000, "test_size": 10_000})
  assert ds.meta["vocab"] == vocab and ds.num_classes == len(vocab) == 10
  np.testing.assert_array_equal(ds.x_train, train[:, :-1])
  np.testing.assert_array_equal(ds.y_train, train[:, 1:])
  np.testing.assert_array_equal(ds.x_test, test[:, :-1])
  np.testing.assert_array_equal(ds.y_test, test[:, 1:])
  assert len(test) == (1000 - sum(c in "XYZ" for c in text[3000:])) // 16


def test_in_vocab_equals_per_character_filter():
  rng = np.random.default_rng(1)
  text = "".join(rng.choice(list("ab\u00e9\u4e2d\U0001F600\x00z "), 5000))
  for vocab in ("ab", "\U0001F600\x00", "z \u4e2d", "q"):
    assert sequences.in_vocab(text, vocab) == "".join(c for c in text if c in set(vocab))
  assert sequences.in_vocab("", "ab") == ""


# ----------------------------------------------------------------------------- text files
def _text_run_config(path: Path):
  c = config_lib.base_config("text", "transformer", num_layers=1, num_heads=1, d_model=8,
                             mlp=False)
  c.t0.reference = ""
  c.dataset.update(path=str(path), length=8, train_size=64, test_size=8)
  c.num_seeds, c.num_steps, c.batch_size, c.progress = 1, 4, 16, False
  c.eval.num_points = 2
  c.null.num_permutations = 0  # the run's identity is under test, not its statistics
  return c


def _finished_run(config, workdir: Path) -> np.ndarray:
  """A finished run of ``config`` (its pinned config.json and a results.npz) without training:
  what a workdir holds after ``train`` returned; the marker array stands for its numbers."""
  marker = np.arange(3.0)
  workdir.mkdir()
  io_lib.write_json(workdir / "config.json",
                    config_lib.to_dict(datasets.with_data(config, None)))
  io_lib.write_npz(workdir / "results.npz", {"marker": marker})
  return marker


def _refused_after_change(config, workdir: Path, change) -> None:
  """``train`` returns the finished run while the data is unchanged; after ``change()`` it
  refuses the workdir naming ``dataset.fingerprint`` (it used to return the old numbers)."""
  marker = _finished_run(config, workdir)
  np.testing.assert_array_equal(train_lib.train(config, str(workdir)).arrays["marker"], marker)
  stored = json.loads((workdir / "config.json").read_text())["dataset"]["fingerprint"]
  change()
  with pytest.raises(ValueError, match=r"(?s)different config.*dataset\.fingerprint: "
                                       rf"'{stored}' -> '[0-9a-f]{{16}}'"):
    train_lib.train(config, str(workdir))
  with pytest.raises(ValueError, match=rf"^fingerprint='{stored}': the data read from "):
    datasets.get_dataset({**config_lib.to_dict(config)["dataset"], "fingerprint": stored})


def test_a_rewritten_text_file_is_another_run(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("the cat sat on the mat. " * 60)
  c = _text_run_config(path)
  pinned = datasets.pin(c.dataset)["fingerprint"]
  assert pinned == hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # the file's bytes
  _refused_after_change(c, tmp_path / "run",
                        lambda: path.write_text("a dog ate the hat! " * 75))


@pytest.mark.parametrize("content, match", [
    (None, r"^path='.*': is a folder"),
    (b"caf\xe9 au lait, " * 20, r"^path='.*': not UTF-8 text \(byte 3"),
])
def test_text_path_that_is_no_utf8_file_names_path(tmp_path, content, match):
  path = tmp_path / "t.txt"
  if content is None:
    path.mkdir()
  else:
    path.write_bytes(content)
  for call in (datasets.get_dataset, datasets.pin):
    with pytest.raises(ValueError, match=match):
      call({"name": "text", "path": str(path)})
