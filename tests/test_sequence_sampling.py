"""Training sequences sampled on device: the same laws as the numpy generators (closed forms
and two-sample statistics, not bit equality), fresh per step and per seed, memory independent
of the number of steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgd_phases import config_lib, datasets, engine, train_lib
from sgd_phases.datasets import sequence_sampling as ss
from sgd_phases.datasets import sequences

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run

ROOT = Path(__file__).resolve().parents[1]


def _z(counts: np.ndarray, p: np.ndarray) -> np.ndarray:
  """Binomial z-scores of transition counts [..., k] against the probabilities p [..., k]."""
  n = counts.sum(axis=-1, keepdims=True)
  return (counts - n * p) / np.sqrt(n * p * (1 - p) + 1e-12)


def _two_sample_z(a: np.ndarray, b: np.ndarray) -> float:
  """z of the difference of the means of two independent samples."""
  return float((a.mean() - b.mean()) / np.sqrt(a.var() / a.size + b.var() / b.size))


@pytest.mark.parametrize("alpha", [1.0, 0.3])  # 1: the exponential path; else jax's gammas
def test_icl_markov_chains_are_dirichlet_rows_with_their_stationary_law(alpha):
  k = 5
  p, pi = map(np.asarray, ss.icl_markov_chains(jax.random.key(0), 4000, k, alpha))
  assert p.shape == (4000, k, k) and pi.shape == (4000, k)
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
  rows = p.reshape(-1, k)
  var = (1 / k) * (1 - 1 / k) / (k * alpha + 1)  # Dirichlet(alpha 1_k) moments
  np.testing.assert_allclose(rows.mean(axis=0), 1 / k, atol=5 * np.sqrt(var / len(rows)))
  np.testing.assert_allclose(rows.var(axis=0), var, rtol=0.05)
  np.testing.assert_allclose(pi, sequences.stationary_distribution(p.astype(np.float64)),
                             atol=5e-4)


def test_stationary_falls_back_on_a_reducible_chain_like_numpy():
  red = np.array([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]])  # two closed classes
  two = np.array([[0.8, 0.2, 0], [0.7, 0.3, 0], [0.2, 0.3, 0.5]])  # irreducible part + transient
  batch = np.stack([red, two])
  pi = np.asarray(ss.stationary(jnp.asarray(batch, jnp.float32)))
  np.testing.assert_allclose(pi, sequences.stationary_distribution(batch), atol=1e-5)
  np.testing.assert_allclose(np.einsum("bi,bij->bj", pi, batch), pi, atol=1e-5)
  np.testing.assert_allclose(pi[1], [0.7 / 0.9, 0.2 / 0.9, 0], atol=1e-5)  # closed form


def test_chain_tokens_start_stationary_and_follow_each_sequence_chain():
  m, k = 20000, 3
  _, p = sequences.icl_markov(m, 1, k, alpha=0.3, rng=11, return_transitions=True)
  pi = sequences.stationary_distribution(p)
  x = np.asarray(ss.chain_tokens(jax.random.key(1), jnp.asarray(p, jnp.float32),
                                 jnp.asarray(pi, jnp.float32), 2))
  # S = sum_m pi_m[x0_m] against its law when x0_m ~ pi_m (as tests/test_sequences.py)
  s = pi[np.arange(m), x[:, 0]].sum()
  var = ((pi**3).sum(axis=1) - (pi**2).sum(axis=1) ** 2).sum()
  assert abs(s - (pi**2).sum()) / np.sqrt(var) < 4
  uniform = np.random.default_rng(0).integers(0, k, m)
  assert abs(pi[np.arange(m), uniform].sum() - (pi**2).sum()) / np.sqrt(var) > 8
  # the step x0 -> x1 follows each sequence's own P: u_m = P_m[x0, x1] has a known mean
  u = p[np.arange(m), x[:, 0], x[:, 1]]
  mean = (pi[:, :, None] * p**2).sum(axis=(1, 2))
  var_u = (pi[:, :, None] * p**3).sum(axis=(1, 2)) - mean**2
  assert abs(u.sum() - mean.sum()) / np.sqrt(var_u.sum()) < 4
  wrong = np.roll(p, 1, axis=0)[np.arange(m), x[:, 0], x[:, 1]]  # another sequence's chain
  assert abs(wrong.sum() - mean.sum()) / np.sqrt(var_u.sum()) > 8


def test_one_long_chain_matches_its_transition_matrix():
  k = 4
  _, p = sequences.icl_markov(1, 1, k, alpha=1.0, rng=7, return_transitions=True)
  pi = sequences.stationary_distribution(p)
  x = np.asarray(ss.chain_tokens(jax.random.key(2), jnp.asarray(p, jnp.float32),
                                 jnp.asarray(pi, jnp.float32), 20000))[0]
  counts = np.zeros((k, k))
  np.add.at(counts, (x[:-1], x[1:]), 1)
  assert counts.sum(axis=1).min() > 500
  assert np.abs(_z(counts, p[0])).max() < 5
  assert np.abs(_z(counts, np.roll(p[0], 1, axis=0))).max() > 10


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_icl_markov_sampler_has_the_numpy_generator_law(alpha):
  """Statistics of whole sequences, device sampler against numpy generator (two samples)."""
  m, t, k = 20000, 8, 3
  dev = np.asarray(ss.Sampler("icl_markov", k, t, alpha).tokens(jax.random.key(3), m, {}))
  ref = sequences.icl_markov(m, t, k, alpha, rng=4)
  assert dev.shape == (m, t) and dev.dtype == np.int32 and 0 <= dev.min() and dev.max() < k
  stats = {
      "repeat": lambda x: (x[:, 1] == x[:, 0]).astype(float),
      "distinct": lambda x: np.array([len(set(r)) for r in x], float),
      "last_is_first": lambda x: (x[:, -1] == x[:, 0]).astype(float),
  }
  for name, f in stats.items():
    assert abs(_two_sample_z(f(dev), f(ref))) < 5, name
  # a sampler that ignored the per-sequence chain (i.i.d. uniform tokens) is rejected
  iid = np.random.default_rng(0).integers(0, k, (m, t))
  assert abs(_two_sample_z(stats["repeat"](iid), stats["repeat"](ref))) > 10
  first = np.bincount(dev[:, 0], minlength=k)  # uniform by symmetry of the prior
  assert np.abs(_z(first, np.full(k, 1 / k))).max() < 5


def test_markov_source_sampler_follows_the_table_and_starts_uniform():
  k, order = 3, 2
  table = sequences.markov_source_transitions(k, order, alpha=1.0, rng=5)
  sampler = ss.Sampler("markov_source", k, 200, table=table)
  arrays = {n: jnp.asarray(v) for n, v in sampler.arrays().items()}
  x = np.asarray(sampler.tokens(jax.random.key(6), 2000, arrays))
  assert x.shape == (2000, 200) and 0 <= x.min() and x.max() < k
  counts = np.zeros((k, k, k))
  np.add.at(counts, (x[:, :-2], x[:, 1:-1], x[:, 2:]), 1)
  assert np.abs(_z(counts, table)).max() < 5
  assert np.abs(_z(counts, table.transpose(1, 0, 2))).max() > 10  # context order matters
  first = np.zeros((k, k))
  np.add.at(first, (x[:, 0], x[:, 1]), 1)
  assert np.abs(_z(first.ravel(), np.full(k * k, 1 / k**2))).max() < 5
  short = ss.Sampler("markov_source", k, 2, table=table)  # length <= order: all uniform
  assert short.tokens(jax.random.key(0), 5, arrays).shape == (5, 2)
  x_in, y = sampler.batch(jax.random.key(6), 2000, arrays)
  np.testing.assert_array_equal(np.asarray(x_in), x[:, :-1])
  np.testing.assert_array_equal(np.asarray(y), x[:, 1:])


def test_sampler_fields_are_checked():
  with pytest.raises(ValueError, match=r"^kind="):
    ss.Sampler("text", 3, 10)
  with pytest.raises(ValueError, match=r"^table:"):
    ss.Sampler("markov_source", 3, 10)


# --------------------------------------------------------------------------- the dataset side
def test_dataset_modes_share_the_test_set_and_only_device_mode_has_a_sampler():
  base = {"name": "icl_markov", "length": 12, "test_size": 20, "seed": 3}
  dev = datasets.get_dataset({**base, "train_size": 50})
  pre = datasets.get_dataset({**base, "train_size": 50, "train_sampling": "pregenerated"})
  more = datasets.get_dataset({**base, "train_size": 70})
  for other in (pre, more):  # the test set is independent of train_size and of the mode
    np.testing.assert_array_equal(dev.x_test, other.x_test)
    np.testing.assert_array_equal(dev.y_test, other.y_test)
  np.testing.assert_array_equal(dev.x_train, pre.x_train)
  assert len(more.x_train) == 70
  assert isinstance(dev.meta["train_sampler"], ss.Sampler) and "train_sampler" not in pre.meta
  assert dev.meta["train_sampler"].length == 12
  big = datasets.get_dataset({**base, "train_size": 10**9})  # = num_steps x batch: not stored
  assert len(big.x_train) == sequences.HOST_TRAIN_SEQUENCES
  src = datasets.get_dataset({"name": "markov_source", "train_size": 10, "test_size": 5})
  np.testing.assert_array_equal(src.meta["train_sampler"].table, src.meta["transitions"])
  with pytest.raises(ValueError, match=r"^train_sampling='disk' must be one of"):
    datasets.get_dataset({**base, "train_sampling": "disk"})


def _tiny_seq_config(**kw):
  c = tiny_run.sequence_config(40)
  c.checkpoint_every, c.null.num_permutations = 0, 0
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_epochs_refused_and_batch_not_bounded_by_the_host_sequences(tmp_path):
  c = _tiny_seq_config(num_epochs=2.0)
  with pytest.raises(ValueError, match=r"^config\.num_epochs: fresh training sequences"):
    train_lib.train(c, tmp_path / "a")
  assert not (tmp_path / "a" / "config.json").exists()
  c = _tiny_seq_config(batch_size=100)  # > the 64 host training sequences: accepted
  assert train_lib.plan(c).trainer.batch_size == 100
  c.dataset.train_sampling = "pregenerated"
  with pytest.raises(ValueError, match=r"^config\.batch_size: 100 is larger than the 64"):
    train_lib.plan(c)


class _Recording(ss.Sampler):
  """A sampler that reports every batch it draws to the host."""

  def batch(self, key, batch, arrays):
    x, y = super().batch(key, batch, arrays)
    jax.debug.callback(lambda b: SEEN.append(np.asarray(b).tobytes()), x)
    return x, y


SEEN: list[bytes] = []


def test_fresh_batches_every_step_and_a_seed_alone_equals_it_in_a_batch():
  ds = datasets.get_dataset({"name": "icl_markov", "length": 16, "train_size": 64,
                             "test_size": 16})
  smp = ds.meta["train_sampler"]
  rec = _Recording("icl_markov", smp.k, smp.length, smp.alpha)
  opt = config_lib.optimizer_config("adam", learning_rate=1e-2)
  kw = {"num_layers": 1, "d_model": 8, "mlp": False, "layer_norm": False, "max_len": 16}
  data = engine.EvalData.create(ds, 64)
  at = np.array([0, 20, 50])

  def trainer(sampler):
    return engine.make_trainer("transformer", kw, opt, "cross_entropy", 8, 50, 3,
                               sampler=sampler)

  def run(tr, ids, labels=ds.y_train):
    out = engine.run_seeds(tr, data, labels, engine.SeedSet(0, ids), at,
                           engine.RunOptions(strategy="map"))
    return np.asarray(out["predictions"])

  SEEN.clear()
  run(trainer(rec), np.array([0, 1]))
  assert len(SEEN) == 100 and len(set(SEEN)) == 100  # 2 seeds x 50 steps, no batch repeated
  tr = trainer(smp)
  batch = run(tr, np.arange(3))
  np.testing.assert_array_equal(run(tr, np.array([2]))[0], batch[2])
  # the stored training set is not what was trained on: its labels are never read
  np.testing.assert_array_equal(run(tr, np.arange(3), np.zeros_like(ds.y_train)), batch)


def _peak_rss_mb(tmp_path: Path, num_steps: int) -> float:
  """Peak resident memory (MB) of a tiny device-sampled run of ``num_steps`` in its own
  process (``os.wait4``: this child's own rusage)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), TINY_RUN_TASK="icl_markov")
  proc = subprocess.Popen([sys.executable, "tests/tiny_run.py", str(tmp_path / str(num_steps)),
                           str(num_steps)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  _, status, usage = os.wait4(proc.pid, 0)
  assert status == 0, proc.stderr.read().decode()[-2000:]
  assert (tmp_path / str(num_steps) / "results.npz").exists()
  return usage.ru_maxrss / 1024


def test_peak_memory_does_not_grow_with_the_number_of_steps(tmp_path):
  """1,000 vs 60,000 steps of batch 8: a stored set of fresh sequences would hold 480,000
  sequences (x, y, device copies, per-seed labels: ~180 MB more); sampled on device, the
  peak is the same within the peak's run-to-run spread (up to ~50 MB measured for one config:
  hence the margin). (200,000 steps at the published settings, measured once: README.)"""
  short, long = _peak_rss_mb(tmp_path, 1000), _peak_rss_mb(tmp_path, 60_000)
  assert long < short + 60, (short, long)


def test_train_evaluation_subset_counts_positions_for_sequences():
  """eval.train_eval_size counts scored examples: 2,000 positions of T = 100 sequences are
  the first ceil(2000 / 99) = 21 sequences (not 2,000 sequences, 10x a 200-sequence test set);
  classification data: 2,000 examples."""
  seq = datasets.get_dataset({"name": "icl_markov", "length": 100, "train_size": 500,
                              "test_size": 4})
  data = engine.EvalData.create(seq, 2000)
  assert data.x_tr.shape == (21, 99) and data.y_tr_clean.shape == (21, 99)
  np.testing.assert_array_equal(np.asarray(data.x_tr), seq.x_train[:21])
  ball = datasets.get_dataset({"name": "ball2d_sinusoid", "n_train": 3000, "n_test": 10})
  assert engine.EvalData.create(ball, 2000).x_tr.shape == (2000, 2)
