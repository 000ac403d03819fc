"""benchmarks/bigbigan_mnist.py on synthetic runs: merged curves, finals, mean and std over
seeds, the checks, the figure, --report_only, and the pinned launching of (fake) trainers.

No network is built or trained: the runs are metrics.jsonl files written here, and the
"trainer" is a one-line Python child.
"""

import json
import math
import os
import pathlib
import sys

from absl import flags
import pytest

from conftest import REPO, load_script


bench = load_script("bigbigan_mnist")

# Seed 0: training-loss lines apart from the evaluations (one at the final step, one after
# it), a step logged in two evaluation lines (the later value wins), and the reconstruction
# agreement at the last evaluation only.
SEED_0 = [
    {"step": 0, "loss_d": 1.4},
    {"step": 0, "linear_accuracy": 0.50, "linear_accuracy_random_init": 0.90,
     "knn_1_accuracy_cosine": 0.60, "knn_1_accuracy_cosine_random_init": 0.85,
     "knn_1_accuracy_cosine_pixels": 0.97},
    {"step": 100, "loss_d": 0.9},
    {"step": 100, "linear_accuracy": 0.97, "knn_1_accuracy_cosine": 0.96},
    {"step": 100, "linear_accuracy": 0.98},
    {"step": 200, "linear_accuracy": 0.99, "knn_1_accuracy_cosine": 0.98,
     "reconstruction_label_agreement": 0.90},
    {"step": 200, "loss_d": 0.8},
    {"step": 250, "loss_d": 0.7},
]
# Seed 1: the learned 1-NN missing at step 0.
SEED_1 = [
    {"step": 0, "loss_d": 1.3},
    {"step": 0, "linear_accuracy": 0.40, "linear_accuracy_random_init": 0.92,
     "knn_1_accuracy_cosine_random_init": 0.86, "knn_1_accuracy_cosine_pixels": 0.97},
    {"step": 100, "linear_accuracy": 0.975, "knn_1_accuracy_cosine": 0.95},
    {"step": 200, "linear_accuracy": 0.985, "knn_1_accuracy_cosine": 0.976,
     "reconstruction_label_agreement": 0.86},
]


def _write_runs(workdir: pathlib.Path) -> None:
  for seed, records in enumerate((SEED_0, SEED_1)):
    run = workdir / f"seed_{seed}"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _finals(workdir: pathlib.Path) -> dict:
  return {seed: bench.final_values(bench.read_curves(str(workdir / f"seed_{seed}")))
          for seed in (0, 1)}


def test_read_curves_merges_lines_per_step(tmp_path):
  _write_runs(tmp_path)
  curves = bench.read_curves(str(tmp_path / "seed_0"))
  assert list(curves) == [0, 100, 200, 250]
  assert curves[100] == {"loss_d": 0.9, "linear_accuracy": 0.98, "knn_1_accuracy_cosine": 0.96}
  assert curves[200] == {"linear_accuracy": 0.99, "knn_1_accuracy_cosine": 0.98,
                         "reconstruction_label_agreement": 0.90, "loss_d": 0.8}
  # A missing key leaves its step out of that curve.
  seed_1 = bench.read_curves(str(tmp_path / "seed_1"))
  assert bench.curve(seed_1, "knn_1_accuracy_cosine") == ([100, 200], [0.95, 0.976])
  assert bench.curve(seed_1, "linear_accuracy") == ([0, 100, 200], [0.40, 0.975, 0.985])
  assert bench.read_curves(str(tmp_path / "seed_9")) == {}


def test_final_values_and_error_ratio(tmp_path):
  _write_runs(tmp_path)
  finals = _finals(tmp_path)
  # The final step is the last one with a probe accuracy, not the last training line's.
  assert finals[0]["step"] == 200 and finals[1]["step"] == 200
  assert finals[0]["linear_accuracy"] == 0.99
  # Logged once, at step 0: still the run's final value.
  assert finals[1]["linear_accuracy_random_init"] == 0.92
  assert finals[1]["knn_1_accuracy_cosine_pixels"] == 0.97
  assert finals[1]["reconstruction_label_agreement"] == 0.86
  assert finals[0][bench.ERROR_RATIO] == pytest.approx((1 - 0.99) / (1 - 0.90))  # 0.1
  assert finals[1][bench.ERROR_RATIO] == pytest.approx((1 - 0.985) / (1 - 0.92))  # 0.1875


def test_summary_mean_and_sample_std(tmp_path):
  _write_runs(tmp_path)
  summary = bench.summarise(_finals(tmp_path))
  # Two seeds a and b: mean (a + b) / 2, std with ddof=1 |a - b| / sqrt(2).
  assert summary["mean"]["linear_accuracy"] == pytest.approx(0.9875)
  assert summary["std"]["linear_accuracy"] == pytest.approx(0.005 / math.sqrt(2))
  assert summary["mean"]["knn_1_accuracy_cosine"] == pytest.approx(0.978)
  assert summary["std"]["knn_1_accuracy_cosine"] == pytest.approx(0.004 / math.sqrt(2))
  assert summary["mean"][bench.ERROR_RATIO] == pytest.approx((0.1 + 0.1875) / 2)
  assert summary["std"][bench.ERROR_RATIO] == pytest.approx(0.0875 / math.sqrt(2))
  assert summary["std"]["knn_1_accuracy_cosine_pixels"] == 0
  assert summary["count"]["linear_accuracy"] == 2
  # One seed: a mean, no spread.
  single = bench.summarise({0: _finals(tmp_path)[0]})
  assert single["mean"]["linear_accuracy"] == 0.99 and single["std"]["linear_accuracy"] is None


def test_table(tmp_path):
  _write_runs(tmp_path)
  finals = _finals(tmp_path)
  table = bench.format_table(finals, bench.summarise(finals)).splitlines()
  assert table[0] == "| metric | seed 0 | seed 1 | mean ± std |"
  assert table[1] == "| --- | --- | --- | --- |"
  assert "| linear probe, learned (EMA) | 99.00% | 98.50% | 98.75 ± 0.35% |" in table
  assert "| probe error ratio learned / random | 0.100 | 0.188 | 0.144 ± 0.062 |" in table
  assert "| 1-NN cosine, raw pixels | 97.00% | 97.00% | 97.00 ± 0.00% |" in table
  # No run has FID: its rows are left out.
  assert len(table) == 2 + len([kind for _, _, kind in bench.ROWS if kind != "number"])


def test_checks_pass_and_fail(tmp_path):
  _write_runs(tmp_path)
  finals = _finals(tmp_path)
  passing = bench.checks(finals, bench.summarise(finals))
  assert [passed for passed, _ in passing] == [True] * 4
  lines = bench.format_checks(passing).splitlines()
  assert lines[0] == "PASS  mean linear probe (learned) 98.75% >= 98.00%"
  assert all(line.startswith("PASS  ") for line in lines)

  # Seed 1's random encoder nearly as good (error ratio 0.75), the learned 1-NN below
  # pixels, the probe mean under 98%, and no reconstruction agreement anywhere.
  failing = {seed: dict(f) for seed, f in finals.items()}
  failing[1]["linear_accuracy"] = 0.965
  failing[1]["linear_accuracy_random_init"] = 0.98
  failing[1][bench.ERROR_RATIO] = (1 - 0.965) / (1 - 0.98)
  failing[1]["knn_1_accuracy_cosine"] = 0.90
  for f in failing.values():
    del f["reconstruction_label_agreement"]
  lines = bench.format_checks(bench.checks(failing, bench.summarise(failing))).splitlines()
  assert lines == [
      "FAIL  mean linear probe (learned) 97.75% >= 98.00%",
      "FAIL  every seed's probe error ratio learned / random <= 0.5 (largest 1.750)",
      "FAIL  mean 1-NN cosine learned 94.00% > raw pixels 97.00%",
      "FAIL  mean reconstruction label agreement n/a >= 80.00%",
  ]


def test_plot_writes_png(tmp_path):
  _write_runs(tmp_path)
  curves = {seed: bench.read_curves(str(tmp_path / f"seed_{seed}")) for seed in (0, 1)}
  path = tmp_path / "figures" / "learning.png"
  bench.plot(curves, str(path), "synthetic, 2 seeds")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_report_only_main(tmp_path, capsys):
  _write_runs(tmp_path)
  flag_values = flags.FlagValues()
  bench.define_flags(flag_values)
  figure = tmp_path / "docs" / "figure.png"
  argv = flag_values(["bigbigan_mnist.py", "--report_only", "--seeds=3",
                      f"--workdir={tmp_path}", f"--figure={figure}"])
  bench.main(argv, flag_values)
  out = capsys.readouterr().out
  print(out)  # The table, for a reader of `pytest -s`.
  assert "seed 2: no evaluation" in out  # Seeds 0..2 asked for; seed 2 never ran.
  assert "| linear probe, learned (EMA) | 99.00% | 98.50% | 98.75 ± 0.35% |" in out
  assert "PASS  mean reconstruction label agreement 88.00% >= 80.00%" in out
  assert "final step: seed 0 200, seed 1 200" in out
  assert "wall clock" not in out
  assert figure.stat().st_size > 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["passed"] and list(summary["finals"]) == ["0", "1"]
  assert summary["std"]["linear_accuracy"] == pytest.approx(0.005 / math.sqrt(2))


def test_core_groups():
  assert bench.core_groups([5, 4, 3, 2, 1, 0], 4) == [[0, 1], [2, 3], [4], [5]]
  assert bench.core_groups([1, 0], 3) == [[0, 1]] * 3
  assert bench.core_groups([7], 2) == [[7], [7]]


def test_child_environment_appends_one_core_flags():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "TFDS_DATA_DIR": "/d"}
  one = bench.child_environment(1, environ)
  assert one["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                              "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
  assert one["TFDS_DATA_DIR"] == "/d"
  assert bench.child_environment(2, environ) == environ
  assert bench.child_environment(1, {})["XLA_FLAGS"] == bench.ONE_CORE_XLA_FLAGS


def test_trainer_command():
  assert bench.trainer_command("c.py:mnist", "/w/seed_1", 1, ["a.b=2"]) == [
      sys.executable, "-m", "bigbigan.main", "--config=c.py:mnist", "--workdir=/w/seed_1",
      "--config.seed=1", "--config.a.b=2"]


# The pinning runs in preexec_fn, so Popen forks; Python warns of that once JAX (imported
# here by conftest, never by the script itself) has threads. The child only sets its
# affinity and execs.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_train_seeds_pins_and_reports_failures(tmp_path, capsys):
  """Fake trainers print their affinity and XLA_FLAGS; seed 1 fails."""
  cores = sorted(os.sched_getaffinity(0))[:2]
  child = ("import os, sys; print(sorted(os.sched_getaffinity(0)));"
           "print(os.environ.get('XLA_FLAGS', '')); sys.exit(int(sys.argv[1]) == 1)")
  results = bench.train_seeds([0, 1, 2], 2, str(tmp_path),
                              lambda run_dir, seed: [sys.executable, "-c", child, str(seed)],
                              poll_seconds=0.02, cores=cores)
  assert {seed: code for seed, (code, _) in results.items()} == {0: 0, 1: 1, 2: 0}
  groups = bench.core_groups(cores, 2)
  for seed in (0, 1, 2):
    affinity, xla_flags = (tmp_path / f"seed_{seed}" / "train.log").read_text().splitlines()
    assert json.loads(affinity) in groups
    # One core per run, or fewer (two runs sharing one core): single-threaded XLA.
    assert xla_flags.endswith(bench.ONE_CORE_XLA_FLAGS) == (len(cores) // 2 <= 1)
  out = capsys.readouterr().out
  assert "seed 1: finished in" in out and "exit code 1" in out
  assert "seed 1: last 20 lines of" in out


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_more_jobs_than_cores_share_them_single_threaded(tmp_path):
  cores = sorted(os.sched_getaffinity(0))[:2]
  child = ("import os; print(sorted(os.sched_getaffinity(0)));"
           "print(os.environ.get('XLA_FLAGS', ''))")
  bench.train_seeds([0, 1, 2], 3, str(tmp_path),
                    lambda run_dir, seed: [sys.executable, "-c", child],
                    poll_seconds=0.02, cores=cores)
  for seed in (0, 1, 2):
    affinity, xla_flags = (tmp_path / f"seed_{seed}" / "train.log").read_text().splitlines()
    assert json.loads(affinity) == cores
    assert xla_flags.endswith(bench.ONE_CORE_XLA_FLAGS)


def test_fid_rows_panel_and_overrides(tmp_path, monkeypatch, capsys):
  _write_runs(tmp_path)
  for seed, (fid, fid_random_init) in enumerate(((31.5, 402.25), (29.5, 398.75))):
    with open(tmp_path / f"seed_{seed}" / "metrics.jsonl", "a") as f:
      f.write(json.dumps({"step": 200, "fid": fid, "fid_random_init": fid_random_init}) + "\n")
  finals = _finals(tmp_path)
  table = bench.format_table(finals, bench.summarise(finals)).splitlines()
  assert "| FID, learned (EMA G) | 31.50 | 29.50 | 30.50 ± 1.41 |" in table
  assert "| FID, random init | 402.25 | 398.75 | 400.50 ± 2.47 |" in table
  path = tmp_path / "learning.png"
  curves = {seed: bench.read_curves(str(tmp_path / f"seed_{seed}")) for seed in (0, 1)}
  bench.plot(curves, str(path), "with FID")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  assert Image.open(path).size == (3 * 6 * 120, 4.5 * 120)  # Three panels.

  config = f"{REPO}/configs/bigbigan_base.py:mnist"
  assert bench.fid_overrides(config, "/w/default_1.pt", 0, ["total_steps=500"]) == [
      "inception_weights=/w/default_1.pt",
      "eval_metrics=('linear_probe','knn','reconstruction_labels','reports','fid')",
      "eval_every_steps_per_metric.fid=500"]
  assert bench.fid_overrides(config, "/w/default_1.pt", 1800)[-1] == (
      "eval_every_steps_per_metric.fid=1800")
  monkeypatch.setattr(bench.inception_weights, "installed_fid_helper_file", lambda: None)
  assert bench.fid_overrides(config, "", 0) == []
  assert "no FID" in capsys.readouterr().out


def test_run_minutes_sums_the_measured_intervals(tmp_path):
  # 200 iterations at 10/s, 300 at 5/s, then 200 whose clock ran through an evaluation
  # (0.1/s): those count at the median rate, 5/s.
  records = [{"step": 200, "steps_per_sec": 10.0}, {"step": 200, "linear_accuracy": 0.5},
             {"step": 500, "steps_per_sec": 5.0}, {"step": 700, "steps_per_sec": 0.1}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert bench.run_minutes(str(tmp_path)) == pytest.approx((20 + 60 + 40) / 60)


def test_run_minutes_counts_a_resumed_runs_repeated_iterations_once(tmp_path):
  # Stopped after 700 iterations, resumed from a checkpoint at 500: 500..700 again at 4/s.
  records = [{"step": 200, "steps_per_sec": 10.0}, {"step": 500, "steps_per_sec": 5.0},
             {"step": 700, "steps_per_sec": 5.0}, {"step": 700, "steps_per_sec": 4.0},
             {"step": 900, "steps_per_sec": 4.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert bench.run_minutes(str(tmp_path)) == pytest.approx((20 + 60 + 50 + 50) / 60)


ablation = load_script("mnist_cycle_ablation")


def test_ablation_rows_train_for_the_papers_time():
  seconds = {"paper": 0.10, "x1e-3": 0.125, "x1e-2_z2e-2": 0.15}
  assert ablation.steps_of("paper", seconds, 12_000) == 12_000
  assert ablation.steps_of("x1e-3", seconds, 12_000) == 9_600
  assert ablation.steps_of("x1e-2_z2e-2", seconds, 12_000) == 8_000  # 8,000.0, not 7,900
  overrides = ablation.run_overrides("x1e-2_z2e-2", 8_000, "/weights.pt", 2_000)
  assert overrides[:6] == ["cycle_x_weight=0.01", "cycle_z_weight=0.02", "total_steps=8000",
                           "eval_every_steps=8000", "checkpoint_every_steps=2000",
                           "eval_every_steps_per_metric.reconstruction_labels=8000"]
  assert "fid_random_init=False" in overrides and "fid_samples=2000" in overrides
  assert "eval_every_steps_per_metric.fid=8000" in overrides


def test_ablation_rows_share_the_reference_statistics(tmp_path):
  first, second = tmp_path / "paper" / "seed_0", tmp_path / "x1e-3" / "seed_0"
  first.mkdir(parents=True)
  (first / "fid_reference_abc.npz").write_bytes(b"statistics")
  (first / "metrics.jsonl").write_text("")
  ablation.share_reference_statistics([str(tmp_path / "missing"), str(first), str(second)],
                                      str(second))
  assert sorted(p.name for p in second.iterdir()) == ["fid_reference_abc.npz"]
  assert (second / "fid_reference_abc.npz").read_bytes() == b"statistics"
