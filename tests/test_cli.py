"""The command line: every sequence field of every experiment can be set from it, and a run
ends with a short human summary (the JSON stays in summary.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments import linear_phase
from sgd_phases import cli

ROOT = Path(__file__).resolve().parents[1]
# A driver that parses the flags exactly as ``cli.main`` does and prints the resulting config.
_PRINT_CONFIG = """
from absl import app, flags
from sgd_phases import cli
app.run(lambda argv: print(flags.FLAGS.config.to_json()), flags_parser=cli.parse_flags)
"""
# The real entry point of every experiment, with a ``run`` that prints the config it is given:
# ``python -c _MAIN experiments/<name>.py --workdir=... --config...``.
_MAIN = """
import sys
from sgd_phases import cli
cli.main(sys.argv.pop(1), lambda config, workdir: print("CONFIG " + config.to_json()) or {})
"""
# A stand-in experiment for the sweep's command: it records the config of each point.
_RECORDING_EXPERIMENT = """
import json, os
from sgd_phases import config_lib, io_lib, workdir as workdir_lib
def get_config(arg=None):
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=8)
  c.references.linear = config_lib.reference_config("linear")
  return c
def run(config, workdir):
  io_lib.write_json(os.path.join(workdir, "summary.json"), {
      "config": json.loads(config.to_json()),
      "identity": workdir_lib.summary_identity(config)})
  return {}
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


def _popen(args, **kw):
  return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def test_one_parser_for_run_and_sweep_datasets_and_every_model_option(tmp_path):
  """Through ``cli.main`` and the sweep's main: the dataset switch with its own fields, any
  option a model accepts (in the file's model_kwargs or not, F's or a reference's), a model
  switch bringing that model's options, and one error naming a field the model lacks."""
  np.savez(tmp_path / "train.npz", x=np.zeros((8, 3), np.float32), y=np.arange(8) % 2)
  np.savez(tmp_path / "test.npz", x=np.zeros((4, 3), np.float32), y=np.arange(4) % 2)
  (tmp_path / "recording.py").write_text(_RECORDING_EXPERIMENT)
  lp, sp = "experiments/linear_phase.py", "experiments/sequence_phases.py"
  runs = {
      "npz": [lp, f"--config={lp}:quick", "--config.dataset.name=npz",
              f"--config.dataset.data_dir={tmp_path}", "--config.model_kwargs.channels=(8,16)",
              "--config.model=cnn", "--config.references.linear.model=mlp",
              "--config.references.linear.model_kwargs.width", "8"],
      "transformer": [sp, f"--config={sp}:quick", "--config.model_kwargs.layer_norm=False",
                      "--config.model_kwargs.mlp_ratio=2"],
      "bad": [sp, "--config.model_kwargs.layer_nrm=False"],
  }
  procs = {k: _popen(["-c", _MAIN, *a, f"--workdir={tmp_path / k}"]) for k, a in runs.items()}
  sweep = _popen(["-m", "experiments.sweep", f"--workdir={tmp_path / 'sw'}",
                  f"--config={tmp_path / 'recording.py'}", "--config.dataset.name=npz",
                  f"--config.dataset.data_dir={tmp_path}", "--config.model=transformer",
                  "--config.model_kwargs.num_layers=1", "--sweep.model_kwargs.layer_norm=1,0",
                  "--sweep.references.linear.model_kwargs.use_bias=False"])
  out = {k: p.communicate(timeout=300) for k, p in procs.items()}
  configs = {k: json.loads(o.split("CONFIG ", 1)[1].splitlines()[0])
             for k, (o, _) in out.items() if k != "bad"}
  npz = configs["npz"]
  assert (npz["dataset"]["name"], npz["dataset"]["data_dir"]) == ("npz", str(tmp_path))
  assert "width" in linear_phase.get_config("quick").model_kwargs  # mlp's, not cnn's: dropped
  assert (npz["model"], npz["model_kwargs"]) == ("cnn", {"channels": [8, 16]})
  assert npz["references"]["linear"]["model"] == "mlp"  # with mlp's own defaults plus width
  assert npz["references"]["linear"]["model_kwargs"] == {"width": 8}
  transformer = configs["transformer"]["model_kwargs"]
  assert transformer["layer_norm"] is False and transformer["mlp_ratio"] == 2
  assert procs["bad"].returncode == 1 and "CONFIG" not in out["bad"][0]
  assert ("--config.model_kwargs.layer_nrm: 'layer_nrm' is not an option of model "
          "'transformer'") in out["bad"][1] and "'layer_norm'" in out["bad"][1]
  assert not (tmp_path / "bad").exists()
  sweep_out, sweep_err = sweep.communicate(timeout=300)
  assert sweep.returncode == 0, sweep_err[-2000:]
  assert "2 done of 2 points" in sweep_out
  for layer_norm in (True, False):
    point = (f"model_kwargs.layer_norm={layer_norm},"
             "references.linear.model_kwargs.use_bias=False")
    c = json.loads((tmp_path / "sw" / point / "summary.json").read_text())["config"]
    assert (c["dataset"]["name"], c["dataset"]["data_dir"]) == ("npz", str(tmp_path))
    assert c["model_kwargs"] == {"num_layers": 1, "layer_norm": layer_norm}
    assert c["references"]["linear"]["model_kwargs"] == {"use_bias": False}


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
