"""Tests of kdjax.trainer.cost: a stage's wall seconds, split by what they were spent on."""

import pytest

from kdjax.trainer import cost


class _Clock:
  """A ``time.perf_counter`` that moves only when a test moves it (by dyadic seconds)."""

  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


@pytest.fixture
def clock(monkeypatch):
  fake = _Clock()
  monkeypatch.setattr(cost.time, "perf_counter", fake)
  return fake


def _one_run(clock: _Clock) -> cost.Stopwatch:
  """3 s of setup, then 10 s training, 2 s evaluating, 0.5 s saving, 4 s training."""
  started = clock.now
  clock.now += 3.0
  watch = cost.Stopwatch(started)
  clock.now += 10.0
  with watch.timing("eval_seconds"):
    clock.now += 2.0
  with watch.timing("checkpoint_seconds"):
    clock.now += 0.5
  clock.now += 4.0
  return watch


def test_the_seconds_of_a_run_add_up_to_its_wall_time(clock):
  spent = _one_run(clock).charged(cost.nothing_spent())
  assert spent == {"setup_seconds": 3.0, "train_seconds": 14.0, "eval_seconds": 2.0,
                   "checkpoint_seconds": 0.5, "runs": 1, "hardware": [cost.hardware()]}


def test_a_resumed_stage_sums_its_runs_and_lists_each_machine_once(clock):
  other_machine = {**cost.hardware(), "device_count": 1}
  earlier = {"setup_seconds": 1.0, "train_seconds": 20.0, "eval_seconds": 5.0,
             "checkpoint_seconds": 2.0, "runs": 2,
             "hardware": [cost.hardware(), other_machine]}
  spent = _one_run(clock).charged(earlier)
  assert spent == {"setup_seconds": 4.0, "train_seconds": 34.0, "eval_seconds": 7.0,
                   "checkpoint_seconds": 2.5, "runs": 3,
                   "hardware": [cost.hardware(), other_machine]}


def test_a_kind_the_earlier_runs_did_not_time_apart_counts_zero_there(clock):
  earlier = {"setup_seconds": 1.0, "train_seconds": 20.0, "eval_seconds": 5.0, "runs": 1,
             "hardware": []}
  spent = _one_run(clock).charged(earlier)
  assert spent["checkpoint_seconds"] == 0.5 and spent["train_seconds"] == 34.0


def test_a_block_that_raises_is_still_timed(clock):
  watch = cost.Stopwatch(clock.now)
  with pytest.raises(KeyboardInterrupt), watch.timing("checkpoint_seconds"):
    clock.now += 1.5
    raise KeyboardInterrupt
  spent = watch.charged(cost.nothing_spent())
  assert spent["checkpoint_seconds"] == 1.5 and spent["train_seconds"] == 0.0
