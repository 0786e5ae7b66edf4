"""Fixtures shared by several test modules."""

import pytest

from sgd_phases.datasets import tfds_images


@pytest.fixture
def mock_tfds(monkeypatch):
  """``tfds.testing.mock_data`` with its batched read fixed.

  In tfds 4.9.10 mock_data installs ``__getitems__`` on a MagicMock as a plain attribute, so it
  is called without ``self`` and fails; single-item reads work. We swap in a version that does not
  need ``self`` (only the unserialised path is used by data sources).
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  def getitems(*args, generator, serialized=False):
    assert not serialized
    return [generator[k] for k in args[-1]]

  monkeypatch.setattr(mocking, "_getitems", getitems)
  tfds_images.clear_cache()
  yield tfds
  tfds_images.clear_cache()
