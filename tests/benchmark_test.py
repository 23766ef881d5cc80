"""The benchmark harness: which rounds count, the ratios, the table, and the timed steps."""

import types

import numpy as np
import pytest

from kdjax import benchmark, data, dispatch
from kdjax.benchmark import timing

_TINY = benchmark.Case("mlp_tiny -> mlp_tiny", ("mlp_tiny",), "mlp_tiny", "kd")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.dataset_info("digits", data_dir=directory)  # prepares the bundled digits
  return directory


def test_timing_summary_is_the_percentiles_in_milliseconds():
  summary = benchmark.Timing([0.004, 0.001, 0.005, 0.002, 0.003]).summary()
  assert summary == pytest.approx({"median_ms": 3.0, "q25_ms": 2.0, "q75_ms": 4.0,
                                   "min_ms": 1.0, "max_ms": 5.0, "rounds": 5})
  assert benchmark.Timing([]).summary() == {}


class _Rounds:
  """A clock that only steps move, and load meters that report a given load per round.

  A step called in round r (0 before the timed rounds) takes r + 1 seconds, so each kept
  time names the round it came from.
  """

  def __init__(self, loads):
    self.loads, self.round, self.now, self.calls = list(loads), 0, 0.0, []

  def step(self, name):
    def run():
      self.calls.append((self.round, name))
      self.now += self.round + 1
    return run

  def meter(self):
    self.round += 1
    load = self.loads[self.round - 1]
    return types.SimpleNamespace(foreign=lambda: load)


def test_time_interleaved_keeps_the_quiet_rounds_of_steps_run_in_turn(monkeypatch):
  rounds = _Rounds([0.5, 0.0, 0.1, 0.9, 0.0, 0.0])
  monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: rounds.now))
  timings, info = benchmark.time_interleaved(
      {"a": rounds.step("a"), "b": rounds.step("b")}, rounds=3, warmup=2,
      max_foreign_load=0.15, max_rounds=10, meter=rounds.meter)
  # Rounds 2, 3 and 5 are quiet: the third quiet round ends the run.
  assert info["rounds_run"] == 5 and info["clean"]
  assert info["foreign_load"] == [0.5, 0.0, 0.1, 0.9, 0.0]
  assert {name: t.times for name, t in timings.items()} == {"a": [3.0, 4.0, 6.0],
                                                           "b": [3.0, 4.0, 6.0]}
  assert info["first_call_s"] == {"a": 1.0, "b": 1.0}
  # First calls, 2 warm-up rounds, then 5 rounds, each calling a then b.
  assert rounds.calls == [(0, "a"), (0, "b")] * 3 + [(r, n) for r in range(1, 6) for n in "ab"]


def test_time_interleaved_keeps_every_round_when_too_few_are_quiet(monkeypatch):
  rounds = _Rounds([0.9, 0.0, 0.9, 0.9])
  monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: rounds.now))
  timings, info = benchmark.time_interleaved({"a": rounds.step("a")}, rounds=4, warmup=0,
                                             max_foreign_load=0.15, max_rounds=4,
                                             meter=rounds.meter)
  assert not info["clean"] and info["rounds_run"] == 4
  assert timings["a"].times == [2.0, 3.0, 4.0, 5.0]


def test_load_meter_reports_a_fraction():
  assert 0.0 <= benchmark.LoadMeter().foreign() <= 1.0


def test_case_ratios_from_medians():
  medians = {"teacher": 30.0, "student": 10.0, "kd": 44.0, "cached": 12.0, "sweep": 88.0,
             "naive": 20.0, "torch_kd": 88.0, "torch_teacher": 60.0, "torch_student": 5.0}
  ratios = benchmark.case_ratios(medians, 4, pipeline_images_per_s=1000.0, batch_size=128)
  assert ratios == pytest.approx({
      "kd / (teacher + student)": 44 / 40, "kd / torch_kd": 0.5, "cached / torch_kd": 12 / 88,
      "sweep / (4 × kd)": 0.5, "teacher / torch_teacher": 0.5, "student / torch_student": 2.0,
      "student / naive": 0.5,
      # The student step trains 128 images in 10 ms: 12,800 img/s.
      "pipeline img/s / student img/s": 1000 / 12800})


def test_format_table_prints_each_row_and_line():
  step = {"median_ms": 40.0, "q25_ms": 39.0, "q75_ms": 41.0, "min_ms": 38.0, "max_ms": 50.0}
  torch_step = {**step, "median_ms": 80.0}
  results = {
      "settings": {"num_students": 4, "batch_size": 128},
      "cases": {"resnet56 -> resnet8": {
          "steps": {"kd": step, "torch_kd": torch_step, "sweep": {**step, "median_ms": 100.0}},
          "ratios": {"kd / torch_kd": 0.5}, "rounds_kept": 5, "rounds_run": 9, "clean": False,
          "median_foreign_load": 0.25, "compile_s": {"kd": 2.5}}},
      "pipeline": {"images_per_s": 3000.4, "batches": 60, "foreign_load": 0.0,
                   "per_batch": {"median_ms": 42.66}},
      "end_to_end": {"case": "resnet56 -> resnet8", "pipeline_workers": 2,
                     "dispatch_depth": 4, "images_per_s": 700.2, "step_ms": 182.81, "steps": 50,
                     "foreign_load": 0.1},
  }
  assert benchmark.format_table(results).split("\n") == [
      "",
      "== resnet56 -> resnet8  (rounds: 5 of 9, NOISY: too few quiet rounds; median foreign "
      "load 25%; first call of (c) 2.5 s)",
      "step                                       JAX ms           IQR       min-max  torch ms "
      "JAX/torch",
      "(c) fused KD step                            40.0   39.0-41.0     38.0-50.0        80.0"
      "      0.50",
      "(e) 4 students, one teacher (sweep)         100.0   39.0-41.0     38.0-50.0            "
      "          ",
      "ratios: kd / torch_kd = 0.50",
      "",
      "(f) CIFAR-10 input pipeline (crop+flip, batch 128): 3000 img/s (median 42.7 ms/batch "
      "over 60 batches; foreign load 0%)",
      "",
      "end to end, resnet56 -> resnet8, real pipeline (crop+flip, 2 workers, at most 4 steps "
      "in flight): 700 img/s, 182.8 ms/step over 50 steps (foreign load 10%)",
  ]


def test_jax_steps_cached_and_sweep_start_from_the_fused_steps_loss():
  """The cached step reads the logits the fused one computes; the sweep's first student is
  the fused step's student: on the same batch, all three start from the same loss."""
  steps = benchmark.jax_steps(_TINY, ["teacher", "student", "kd", "cached", "sweep"],
                              batch_size=16, num_students=3, image_shape=(8, 8, 1))
  assert set(steps) == {"teacher", "student", "student_1dev", "kd", "cached", "sweep"}
  kd_loss = float(steps["kd"]()[1]["loss"])
  np.testing.assert_allclose(float(steps["cached"]()[1]["loss"]), kd_loss, rtol=1e-5)
  sweep_loss = np.asarray(steps["sweep"]()[1]["loss"])
  assert sweep_loss.shape == (3,)
  np.testing.assert_allclose(sweep_loss[0], kd_loss, rtol=1e-5)
  assert len(set(np.round(sweep_loss, 6))) == 3  # three students, three initializations
  assert float(steps["kd"]()[1]["loss"]) != kd_loss  # the step advances its own state


def test_end_to_end_runs_the_guarded_program_over_an_epoch(data_dir):
  result = benchmark.time_end_to_end(_TINY, data_dir, batch_size=32, steps=-1, workers=0,
                                     dataset="digits", augmentation="none")
  assert result["steps"] == data.num_train("digits") // 32
  assert np.isfinite(result["loss"]) and result["case"] == _TINY.name
  assert result["dispatch_depth"] == dispatch.DEFAULT_DEPTH


def test_pipeline_and_end_to_end_name_a_missing_dataset(tmp_path):
  with pytest.raises(FileNotFoundError, match="not prepared"):
    benchmark.time_pipeline(str(tmp_path), batch_size=32, num_batches=2, warmup=0)
  with pytest.raises(FileNotFoundError, match="not prepared"):
    benchmark.time_end_to_end(_TINY, str(tmp_path), batch_size=32, steps=2, workers=0)
