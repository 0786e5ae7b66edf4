"""The command line: every sequence field of every experiment can be set from it, and a run
ends with a short human summary (the JSON stays in summary.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sgd_phases import cli

ROOT = Path(__file__).resolve().parents[1]
# A driver that parses the flags exactly as ``cli.main`` does and prints the resulting config.
_PRINT_CONFIG = """
import sys
from absl import app, flags
from ml_collections import config_flags
config_flags.DEFINE_config_file("config", None, "", lock_config=True)
app.run(lambda argv: print(flags.FLAGS.config.to_json()))
"""
# experiment file: {field: (command-line text, expected value)}
SEQUENCE_FIELDS = {
    "kernel_regime": {"widths": ("(8,16)", [8, 16])},
    "mi_vs_accuracy": {"accuracies": ("(0.6,0.9)", [0.6, 0.9])},
    "retention": {"noise_rates": ("(0.0,0.3)", [0.0, 0.3])},
    "retention_map": {"noise_rates": ("(0.1,)", [0.1]), "map_values": ("(64,256)", [64, 256])},
    "synthetic_ball": {"snapshot_steps": ("(0,100)", [0, 100])},
    "theorem1": {"noise_rates": ("(0.1,0.3)", [0.1, 0.3])},
}


def test_every_sequence_field_is_settable_from_the_command_line():
  procs = {}
  for name, fields in SEQUENCE_FIELDS.items():
    args = [f"--config=experiments/{name}.py:quick"] + [
        f"--config.{f}={text}" for f, (text, _) in fields.items()]
    procs[name] = subprocess.Popen([sys.executable, "-c", _PRINT_CONFIG, *args], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for name, p in procs.items():
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, (name, err[-2000:])
    config = json.loads(out.strip().splitlines()[-1])
    for f, (_, expected) in SEQUENCE_FIELDS[name].items():
      assert config[f] == expected, (name, f, config[f])


def test_a_run_prints_a_short_summary(tmp_path):
  cmd = [sys.executable, "-m", "experiments.mi_vs_accuracy", f"--workdir={tmp_path}",
         "--config=experiments/mi_vs_accuracy.py:quick"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert len(lines) <= 25 and lines[0].startswith("mi_vs_accuracy")
  assert any(line.startswith("max_abs_error_bits: ") for line in lines)
  assert f"files: {tmp_path}/summary.json" in out.stdout
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["command"].startswith("python -m experiments.mi_vs_accuracy --workdir=")
  assert saved["wall_time_s"] >= 0
  full = subprocess.run(cmd + ["--print_json"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert json.loads(full.stdout)["max_abs_error_bits"] == saved["max_abs_error_bits"]


def test_human_summary_is_capped_and_names_the_files():
  summary = {"experiment": "x", "task": "t", "num_seeds": 3, "num_steps": 10,
             **{f"m{i}": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 3} for i in range(40)},
             "figures": ["w/figures/a.png"]}
  lines = cli.human_summary(summary, "w")
  assert len(lines) == 25 and lines[0] == "x (t, 3 seeds, 10 steps)"
  assert "m0: 0.5 [0.4, 0.6] (n=3)" in lines and "more values in summary.json" in lines[-3]
  assert lines[-2:] == ["files: w/summary.json (everything: --print_json)",
                        "figure: w/figures/a.png"]


def test_progress_in_a_log_file_is_not_a_line_per_refresh():
  code = ("import time\nimport numpy as np\nfrom sgd_phases import engine\n"
          "bar = engine._progress_bar(True, 1000, 0, 'F')\n"
          "for i in range(100):  # as the engine reports each evaluation\n"
          "  engine._report((i, 10 * i + 10, 10 * i, np.full(2, -1), {'test_acc': np.zeros(2)},"
          " np.arange(2)), bar, None, 'F')\n"
          "  time.sleep(0.02)\nbar.close()\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)  # stderr is a pipe, not a terminal
  assert out.returncode == 0, out.stderr[-2000:]
  assert 1 <= out.stderr.count("\r") + out.stderr.count("\n") <= 3, out.stderr
