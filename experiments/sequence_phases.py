"""Increasing complexity in sequence models: a transformer against closed-form predictors.

The paper's question for next-token prediction: how much of what a transformer F_t knows about
the next token is explained by a simpler predictor L, μ_Y(F_t;L)/I(F_t;Y), beside the null
F ⟂ L | Y. Every (sequence, position) pair of the held-out sequences is one test example; the
references are computed in closed form (``sgd_phases.sequence_references``), the same for
every seed.

Tasks (``--config=experiments/sequence_phases.py:<task>[,quick]``):

  icl_markov     every sequence from its own 3-state Markov chain (Dirichlet(1) rows), T = 100,
                 at Edelman et al. (2024)'s settings (``PUBLISHED``): references in-context
                 unigram, in-context bigram, Bayes
  icl_markov_small  the same task at this project's earlier CPU-sized settings (``SMALL``:
                 T = 64, d_model 32, LayerNorm, Adam 3e-3, batch 32, 3,000 steps)
  markov_source  one fixed order-2 source over 3 states: the n-gram ladder G_1..G_3 (fitted
                 on the training sequences; G_1 is constant, G_3 has Bayes' order) and Bayes
  text           a text file (``--config.dataset.path=``) or a public-domain corpus that a
                 package ships (``--config.dataset.corpus=kjv``: the King James Bible,
                 ``sgd_phases.datasets.corpora``), character level: n-grams 1..3 and the
                 in-context unigram / bigram

F: a 2-layer attention-only transformer (one head, learned positions; ``PUBLISHED`` for
icl_markov, ``SMALL`` for the other tasks), Adam, fresh training sequences every step (``train_size = num_steps × batch_size``; icl_markov and
markov_source draw them on device inside the training step, ``dataset.train_sampling="device"``,
text stores them). Summary, per
reference, over seeds: its accuracy, the step where μ/I is highest (with that peak beside the
per-draw peak of the null), the steps it leads (highest μ/I of all references), μ/I at the end
beside its null, and agreement P(F_T = L); per ladder pair, the step where the higher-order
predictor overtakes the lower one for good; the soft measures (``soft``: KL both ways and JS to
each predictor's smoothed distribution, F as a mixture of ``MIXTURES[task]`` and the uniform
distribution). Figures: μ_Y(F_t;G_i) per reference with null bands (the paper's Figure 5
layout), ``sequence_phases_soft.png`` (KL/JS panels) and ``sequence_phases_mixture.png``.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import cli, io_lib, plotting, soft_scoring, stats

NAME = "sequence_phases"
_ICL_REFS = {"unigram": ("in_context_unigram", {}), "bigram": ("in_context_bigram", {}),
             "bayes": ("bayes", {})}
# task -> (dataset, dataset fields, references name -> (closed-form kind, kwargs), ladders)
TASKS: dict[str, tuple[str, dict[str, Any], dict[str, tuple[str, dict]], list[list[str]]]] = {
    "icl_markov": ("icl_markov", {"k": 3, "length": 100}, _ICL_REFS, [["unigram", "bigram"]]),
    "icl_markov_small": ("icl_markov", {"k": 3, "length": 64}, _ICL_REFS,
                         [["unigram", "bigram"]]),
    "markov_source": ("markov_source", {"k": 3, "order": 2, "length": 64},
                      {**{f"ngram{n}": ("ngram", {"order": n}) for n in (1, 2, 3)},
                       "bayes": ("bayes", {})}, [["ngram2", "ngram3"]]),
    "text": ("text", {"length": 64},
             {**{f"ngram{n}": ("ngram", {"order": n}) for n in (1, 2, 3)},
              "unigram": ("in_context_unigram", {}), "bigram": ("in_context_bigram", {})},
             [["ngram2", "ngram3"], ["unigram", "bigram"]]),
}
# (ngram1, the most frequent training token, is a constant predictor: μ_Y(F;ngram1) = 0 at
# every step, so it is drawn and summarised but has no overtaking step.)
DEFAULT_TASK = "icl_markov"
# F and its training. PUBLISHED: Edelman et al. (2024)'s ICL Markov-chain settings (2-layer
# attention-only transformer, one head, d_model 16, no LayerNorm, bias-free as their code,
# N(0, 0.02²) init, learned positions over the T = 100 tokens; Adam 1e-3, batch 64, 8,000 steps;
# 40 log-spaced evaluations on 200 held-out sequences). SMALL: this project's earlier CPU-sized
# settings (d_model 32, LayerNorm, biases, Adam 3e-3, batch 32, 3,000 steps, T = 64).
PUBLISHED = {"model_kwargs": {"num_layers": 2, "num_heads": 1, "d_model": 16, "mlp": False,
                              "layer_norm": False, "use_bias": False, "init_scale": 0.02},
             "learning_rate": 1e-3, "batch_size": 64, "num_steps": 8000, "num_points": 40,
             "test_size": 200}
SMALL = {"model_kwargs": {"num_layers": 2, "num_heads": 1, "d_model": 32, "mlp": False},
         "learning_rate": 3e-3, "batch_size": 32, "num_steps": 3000, "num_points": 25,
         "test_size": 128}
SETTINGS = {"icl_markov": PUBLISHED}  # every other task: SMALL
MIN_BITS = 0.01  # default min_bits (the figures use it: config.json holds the engine's fields)
# task -> the references F is fitted as a mixture of (soft.mixture; the uniform one is added).
# Bayes is left out where it (nearly) equals another candidate: icl_markov's posterior
# predictive is the add-one bigram wherever x_t has a successor; the source's is the 3-gram's
# limit.
MIXTURES = {"icl_markov": ("unigram", "bigram"), "icl_markov_small": ("unigram", "bigram"),
            "markov_source": ("ngram1", "ngram2", "ngram3"), "text": ()}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg`` = "<task>[,quick]" (module docstring)."""
  from sgd_phases import config_lib  # local import: keeps `get_config` light for config_flags

  task, quick = common.parse_task(arg, TASKS, DEFAULT_TASK)
  dataset, fields, refs, _ = TASKS[task]
  s = SETTINGS.get(task, SMALL)
  c = config_lib.base_config(dataset, "transformer", **s["model_kwargs"])
  c.dataset.update(fields)
  if s is PUBLISHED:  # learned positions for exactly the sequence length (derived: follows flags)
    # (an expression, not the bare reference: setting an alias would set the length too)
    c.model_kwargs.max_len = c.dataset.get_ref("length") + 0
  c.optimizer = config_lib.optimizer_config("adam", learning_rate=s["learning_rate"])
  c.num_seeds, c.batch_size, c.num_steps = 5, s["batch_size"], s["num_steps"]
  c.eval.num_points = s["num_points"]
  c.dataset.test_size = s["test_size"]  # × (length − 1) test positions
  for name, (kind, kw) in refs.items():
    c.references[name] = config_lib.reference_config(kind, trained_on="closed_form", **kw)
  c.t0.reference = ""  # no T_0: the references are not trained
  c.soft.mixture = MIXTURES[task]
  c.experiment = NAME
  c.task = task
  c.quick = quick
  c.min_bits = MIN_BITS  # ratios μ/I only where I(F_t;Y) > min_bits
  if quick:  # seconds on CPU
    c.num_seeds, c.num_steps = 2, 200
    c.dataset.length, c.dataset.test_size = 24, 32
    c.eval.num_points, c.checkpoint_every = 10, 0
  # fresh sequences every step (drawn on device, or stored: text, train_sampling=pregenerated):
  # a derived field (ml_collections FieldReference), so that --config.num_steps /
  # --config.batch_size move it too; --config.dataset.train_size overrides it
  c.dataset.train_size = c.get_ref("num_steps") * c.get_ref("batch_size")
  return c


def _order(names: list[str], task: str | None) -> list[str]:
  """Reference names in the task's complexity order (others last)."""
  order = list(TASKS.get(task, (None, None, {}))[2])
  return sorted(names, key=lambda n: order.index(n) if n in order else 99)


def overtake_index(mu_lo: np.ndarray, mu_hi: np.ndarray) -> np.ndarray:
  """Per seed, the first evaluation from which μ(higher) > μ(lower) at every later one
  (−1 when it never stays ahead)."""
  ahead = mu_hi > mu_lo                                   # [S, E]
  stays = np.flip(np.cumprod(np.flip(ahead, 1), 1), 1).astype(bool)  # ahead from here on
  return np.where(stays.any(1), np.argmax(stays, 1), -1)


def summarize(results: Any, ladders: list[list[str]], min_bits: float) -> dict[str, Any]:
  """Per reference and per ladder pair (module docstring); means and 95% CIs over seeds."""
  a = results.arrays
  steps, names = a["steps"], list(results.reference_names)
  i_fy = results.measures(names[0])["i_fy"]
  ratios = {n: stats.ratio(results.measures(n)["mu"], i_fy, min_bits) for n in names}
  stacked = np.stack([np.nan_to_num(ratios[n], nan=-np.inf) for n in names])  # [R, S, E]
  leader = np.where(np.isfinite(stacked.max(0)), stacked.argmax(0), -1)     # [S, E]
  out: dict[str, Any] = {"i_fy_end": stats.summarize(i_fy[:, -1]),
                         "test_acc_end": stats.summarize(a["test_acc"][:, -1], bounded=True),
                         "references": {}}
  for r, name in enumerate(names):
    mu, ratio = results.measures(name)["mu"], ratios[name]
    peak = np.where(np.isfinite(ratio).any(1), np.nanargmax(np.nan_to_num(ratio, nan=-np.inf),
                                                             1), -1)
    leads = leader == r
    first = np.where(leads.any(1), np.argmax(leads, 1), -1)
    last = np.where(leads.any(1), leads.shape[1] - 1 - np.argmax(np.flip(leads, 1), 1), -1)
    pred = results.reference(name)                                      # [S, N]
    entry = {
        "acc": float(np.mean(results.reference(name, "test_acc"))),
        "peak_step": stats.summarize(stats.step_at(steps, peak), bounded=True),
        "leads_from_step": stats.summarize(stats.step_at(steps, first), bounded=True),
        "leads_until_step": stats.summarize(stats.step_at(steps, last), bounded=True),
        "mu_end": stats.summarize(mu[:, -1]),
        "agreement_end": stats.summarize(np.mean(a["predictions"][:, -1] == pred, -1),
                                         bounded=True),
    }
    null = results.null(name)
    if null is not None:  # the peak's null: the per-draw peak of μ₀(t)/I(t)
      entry["peak_ratio_vs_null"] = stats.ratio_versus_null(
          stats.at_index(ratio, peak),
          stats.selected_null(stats.ratio(null, i_fy[None], min_bits), "max"))
      entry["ratio_end_vs_null"] = stats.ratio_versus_null(
          mu[:, -1], null[:, :, -1], i_fy[:, -1], floor=min_bits)
    out["references"][name] = entry
  out["overtakes"] = {
      f"{lo}->{hi}": stats.summarize(stats.step_at(steps, overtake_index(
          results.measures(lo)["mu"], results.measures(hi)["mu"])), bounded=True)
      for ladder in ladders for lo, hi in zip(ladder, ladder[1:]) if {lo, hi} <= set(names)}
  return out


def run(config: ml_collections.ConfigDict, workdir: str, *,
        trained_f: Any = None) -> dict[str, Any]:
  """Trains F for every seed, scores it against every closed-form reference; summary.json and
  the figure; returns the summary."""
  config, started = common.begin(config, workdir)  # fingerprints pinned, workdir claimed
  from sgd_phases import train_lib  # local import: keeps `get_config` light for config_flags

  results = train_lib.train(common.engine_config(config), workdir, trained_f=trained_f)
  ladders = TASKS[config.task][3]
  summary = {**common.header(NAME, config, results),
             **summarize(results, ladders, float(config.min_bits)),
             **common.soft_summary(results, _order(results.reference_names, config.task))}
  if "soft" in summary:
    summary["soft"]["kl_overtakes"] = soft_overtakes(results, ladders)
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def soft_overtakes(results: Any, ladders: list[list[str]]) -> dict[str, Any]:
  """Per ladder pair, the step from which the higher-order predictor's distribution is closer
  to F's than the lower one's for good (KL(p_ref || p_F) lower; ``overtake_index``)."""
  kl = {n: results.soft(n).get("kl_ref_f") for n in results.reference_names}
  return {f"{lo}->{hi}": stats.summarize(stats.step_at(results.steps, overtake_index(
      -kl[lo], -kl[hi])), bounded=True)
          for ladder in ladders for lo, hi in zip(ladder, ladder[1:])
          if kl.get(lo) is not None and kl.get(hi) is not None}


def make_figures(workdir: str) -> list[str]:
  """``figures/sequence_phases.png``: I(F_t;Y) and μ_Y(F_t;G_i) per reference, null bands;
  ``figures/sequence_phases_positions.png``: μ/I and I by position at four evaluations."""
  res, cfg = common.load_run(workdir)
  a = res.arrays
  mus, nulls = {}, {}
  names = _order(res.reference_names, cfg.get("task"))
  for name in names:
    label = f"{name} (acc {np.mean(a[f'ref/{name}/test_acc']):.3f})"
    mus[label] = res.measures(name)["mu"]
    if res.null(name) is not None:
      nulls[label] = res.null(name)
  title = (f"{cfg.get('task', cfg['dataset']['name'])}: transformer, "
           f"{len(a['seed_ids'])} seeds, k={a['num_classes']}")
  fig = plotting.plot_ladder(a["steps"], res.measures(res.reference_names[0])["i_fy"], mus,
                             title=title, nulls=nulls)
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"{NAME}.png"),
          *_position_figure(res, names, cfg, workdir),
          *soft_scoring.figures(workdir, res, NAME, title, names)]


def _position_figure(res: Any, order: list[str], cfg: dict[str, Any], workdir: str
                     ) -> list[str]:
  """``figures/sequence_phases_positions.png``: μ/I and I(F_t;Y) by position at four
  evaluations, log-spaced among those where F knows a fifth of what it knows at the end
  (pooled I(F_t;Y)). Positions are pooled in ~20 bins (μ/I = Σμ/ΣI per bin): per position,
  with M test sequences, μ and I are small and noisy (and the plug-in I has a bias ~K²/M)."""
  pos = {n: res.by_position(n) for n in res.reference_names}
  if any(p is None for p in pos.values()):  # a run scored before per-position curves
    return []
  i_pooled = np.nanmean(res.measures(res.reference_names[0])["i_fy"], 0)    # [E]
  ok = np.flatnonzero(i_pooled > max(MIN_BITS, 0.2 * i_pooled[-1]))
  if not ok.size:
    return []
  cols = sorted({int(ok[round(x)]) for x in np.linspace(0, len(ok) - 1, 4)})
  p = pos[res.reference_names[0]]["i_fy"].shape[-1]
  edges = np.unique(np.linspace(0, p, min(p, 20) + 1).round().astype(int))

  def binned(x: np.ndarray) -> np.ndarray:  # [S, C, P] -> [S, C, bins] (means per bin)
    return np.add.reduceat(x, edges[:-1], axis=-1) / np.diff(edges)

  i_fy = binned(pos[res.reference_names[0]]["i_fy"][:, cols])
  ratios = {n: stats.ratio(binned(pos[n]["mu"][:, cols]), i_fy, MIN_BITS)
            for n in sorted(pos, key=lambda n: order.index(n) if n in order else 99)}
  first = cfg["dataset"].get("skip_positions", 0) + 1  # the position of the first target
  centres = first + (edges[:-1] + edges[1:] - 1) / 2
  fig = plotting.plot_by_position(centres, [f"step {res.steps[k]}" for k in cols], i_fy,
                                  ratios, title=f"{cfg.get('task', '')}: ")
  return [plotting.save_figure(fig, io_lib.path(workdir) / "figures" / f"{NAME}_positions.png")]


if __name__ == "__main__":
  cli.main(__file__, run)
