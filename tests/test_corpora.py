"""Real public-domain texts that a package ships (sgd_phases.datasets.corpora) as ``text`` data."""

from __future__ import annotations

import hashlib

import pytest

from sgd_phases import datasets
from sgd_phases.datasets import corpora


def test_kjv_is_the_whole_text_without_verse_numbers():
  text = corpora.text("kjv")
  lines = text.splitlines()
  assert len(text) == 4_139_393 and len(lines) == 24_408 and len(set(text)) == 63
  assert lines[0] == "In the beginning God created the heavens and the earth."
  assert lines[-1].endswith("The grace of our Lord Jesus Christ be with you all. Amen.")
  assert not any(c.isdigit() for c in text)  # "1:1 In the beginning": the numbers are gone


def test_text_dataset_from_a_corpus_is_identified_by_its_content():
  ds = datasets.get_dataset({"name": "text", "corpus": "kjv", "train_size": 8, "test_size": 4,
                             "length": 32})
  assert ds.x_train.shape == (8, 31) and ds.num_classes == 63
  assert ds.meta["vocab"] == "".join(sorted(set(corpora.text("kjv")[:3_725_453])))
  pinned = datasets.pin({"name": "text", "corpus": "kjv"})
  assert pinned["fingerprint"] == hashlib.sha256(corpora.text("kjv").encode()).hexdigest()[:16]


def test_bad_corpus_fields_are_one_clear_error(monkeypatch):
  with pytest.raises(ValueError, match=r"^corpus='bible': not one of \['kjv'\]"):
    datasets.get_dataset({"name": "text", "corpus": "bible"})
  with pytest.raises(ValueError, match=r"^corpus='kjv', path='a.txt': set one of them"):
    datasets.get_dataset({"name": "text", "corpus": "kjv", "path": "a.txt"})
  monkeypatch.setitem(corpora.CORPORA, "gone", ("no_such_module_xyz", "no-such==1"))
  with pytest.raises(ValueError, match=r"^corpus='gone': its package is not installed; pip"):
    datasets.get_dataset({"name": "text", "corpus": "gone"})
