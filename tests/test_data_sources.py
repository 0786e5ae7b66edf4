"""Data read from files: the text dataset's split, and (below) what every file-backed source
refuses or identifies."""

from __future__ import annotations

import numpy as np

from sgd_phases import datasets
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
