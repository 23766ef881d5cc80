"""Fault-injection tests: crashes, preemption, corruption, numerical failure and bad input.

The training binary runs tests/reliability_config.py (two tiny stages on digits) in
subprocesses that the tests kill with SIGKILL, stop with SIGTERM or SIGINT, or whose
checkpoints they damage, at moments found by watching the workdir (a checkpoint or export
being written, a metric line logged, a stage starting). Each interrupted run is started
again with the same command until it completes, and must then match an uninterrupted run
bit for bit: result.json (curves included, its cost left out), every export's parameter
hash, metrics.jsonl (less its timings) and summary.md. The uninterrupted reference runs in
the background while the interrupted runs go on, and every subprocess shares one
compilation cache.
"""

import concurrent.futures
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import digits_runs
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import base
from kdjax import (
    checkpoints,
    data,
    losses,
    metric_writers,
    models,
    objective,
    optimizers,
    trainer,
)
from kdjax import state as state_lib
from kdjax import step as step_lib
from kdjax.trainer import context as context_lib
from kdjax.trainer import preemption
from kdjax.trainer import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "reliability_config.py")
SEEDS = {"teacher": 1, "kd": 2}  # the stages of the config, with their seed counts
TIMEOUT = 240  # seconds a launch may take before the test gives up on it
_TMP = "*.orbax-checkpoint-tmp*"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.dataset_info("digits", data_dir=directory)  # prepared once, before any subprocess
  return directory


class _Binary:
  """Launches ``python -m launch.train`` on the reliability config, its output to a file."""

  def __init__(self, data_dir: str, cache_dir: str, logs_dir: str):
    self._flags = [f"--config.dataset.data_dir={data_dir}",
                   f"--config.compilation_cache_dir={cache_dir}"]
    self._logs_dir = logs_dir

  def start(self, workdir: str, *overrides: str,
            config: str | None = CONFIG) -> tuple[subprocess.Popen, str]:
    """Starts the binary; ``config`` ``None`` leaves ``--config`` out."""
    descriptor, log = tempfile.mkstemp(suffix=".log", dir=self._logs_dir)  # thread-safe
    with os.fdopen(descriptor, "w") as out:
      process = subprocess.Popen(
          [sys.executable, "-m", "launch.train", *([f"--config={config}"] if config else []),
           *self._flags, f"--workdir={workdir}", *overrides],
          cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    return process, log

  def run(self, workdir: str, *overrides: str, until=None,
          signum: int = signal.SIGKILL) -> tuple[int, str]:
    """Runs to the end, or sends ``signum`` as soon as ``until(launch_time)`` holds.

    Returns:
      The exit code (``-signum`` when the signal killed it) and the output.
    """
    launched = time.time()
    process, log = self.start(workdir, *overrides)
    deadline = time.monotonic() + TIMEOUT
    while until is not None and process.poll() is None and time.monotonic() < deadline:
      if until(launched):
        process.send_signal(signum)
        break
      time.sleep(0.001)
    returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    with open(log) as f:
      return returncode, f.read()


@pytest.fixture(scope="module")
def binary(data_dir, tmp_path_factory):
  return _Binary(data_dir, str(tmp_path_factory.mktemp("jax_cache")),
                 str(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="module")
def reference(binary, tmp_path_factory):
  """The uninterrupted run, started at once in the background; call it for its workdir."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  process, log = binary.start(workdir)

  def finished() -> str:
    assert process.wait(timeout=TIMEOUT) == 0, open(log).read()
    return workdir

  yield finished
  if process.poll() is None:
    process.kill()
    process.wait()


# -- what the tests watch for ---------------------------------------------------------------


def _fresh(pattern: str):
  """Holds once a path matching ``pattern`` was written since the launch (leftovers of a
  killed launch are older)."""
  def written(launched: float) -> bool:
    for path in glob.glob(pattern):
      try:
        if os.stat(path).st_mtime >= launched:
          return True
      except FileNotFoundError:  # renamed or removed between glob and stat
        continue
    return False
  return written


def _logged(workdir: str, stage: str, step: int):
  """Holds once this launch logged metrics at ``step`` or later in ``stage``."""
  path = os.path.join(trainer.stage_dir(workdir, stage), trainer.METRICS_FILE)

  def logged(launched: float) -> bool:
    if not os.path.exists(path) or os.stat(path).st_mtime < launched:
      return False
    records = metric_writers.read_jsonl(path)
    return bool(records) and records[-1]["step"] >= step
  return logged


def _checkpoint_steps(workdir: str, stage: str) -> list[int]:
  directory = os.path.join(trainer.stage_dir(workdir, stage), "checkpoints")
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def _outcome(workdir: str) -> dict[str, object]:
  """Everything a run leaves that must not depend on interruptions."""
  out = {"summary": open(os.path.join(workdir, "summary.md")).read()}
  for stage, num_seeds in SEEDS.items():
    directory = trainer.stage_dir(workdir, stage)
    result = json.load(open(os.path.join(directory, trainer.RESULT_FILE)))
    out[f"{stage}/result"] = {k: v for k, v in result.items() if k != "cost"}  # timings
    out[f"{stage}/metrics"] = [
        {k: v for k, v in r.items() if k != "images_per_second"}
        for r in metric_writers.read_jsonl(os.path.join(directory, trainer.METRICS_FILE))]
    for seed in range(num_seeds):
      for kind in ("best", "last"):
        out[f"{stage}/{seed}/{kind}"] = checkpoints.read_provenance(
            trainer.export_dir(workdir, stage, seed, kind))
  return out


def _assert_same_outcome(workdir: str, reference_workdir: str) -> None:
  got, want = _outcome(workdir), _outcome(reference_workdir)
  assert got.keys() == want.keys()
  for key in want:
    assert got[key] == want[key], key
  assert not glob.glob(os.path.join(workdir, "**", _TMP), recursive=True)


# -- crashes, preemption, corruption -------------------------------------------------------


def _kill_at_six_moments(binary: _Binary, workdir: str) -> list[str]:
  """SIGKILLs a run at six moments, restarting it each time, then lets it finish.

  Returns:
    A line per kill: the moment, and whether it left a half-written checkpoint behind.
  """
  stage = lambda name: trainer.stage_dir(workdir, name)
  kill_points = [
      ("teacher: during a checkpoint save", _fresh(f"{stage('teacher')}/checkpoints/{_TMP}")),
      ("teacher: between two checkpoints", _logged(workdir, "teacher", 13)),
      ("teacher: during an export", _fresh(f"{stage('teacher')}/export/*/*/{_TMP}")),
      ("kd: while loading and caching its teacher", _fresh(f"{stage('kd')}/stage_config.json")),
      ("kd: during a checkpoint save", _fresh(f"{stage('kd')}/checkpoints/{_TMP}")),
      ("kd: after an export of the last network, before result.json",
       _fresh(f"{stage('kd')}/export/seed0/last/{checkpoints.PROVENANCE_FILE}")),
  ]
  report = []
  for moment, condition in kill_points:
    returncode, output = binary.run(workdir, until=condition)
    assert returncode == -signal.SIGKILL, f"{moment}: the run was not killed:\n{output}"
    assert not os.path.exists(os.path.join(workdir, "summary.md")), moment
    leftovers = glob.glob(os.path.join(workdir, "stages", "*", "checkpoints", _TMP))
    report.append(f"{moment}: killed{', a checkpoint half-written' if leftovers else ''}")
  assert any(line.endswith("half-written") for line in report), report
  returncode, output = binary.run(workdir)
  assert returncode == 0, output
  assert "stage teacher: complete, reusing" in output
  return report


def _preempt_twice_and_corrupt(binary: _Binary, workdir: str) -> list[str]:
  """SIGTERMs a run in its first stage, SIGINTs it in its second, truncates its latest
  checkpoint, then lets it finish.

  Returns:
    A line per interruption.
  """
  returncode, output = binary.run(workdir, until=_logged(workdir, "teacher", 7),
                                  signum=signal.SIGTERM)
  assert returncode == 128 + signal.SIGTERM, output
  stopped = [line for line in output.splitlines() if line.startswith("stopped:")]
  assert len(stopped) == 1 and "Traceback" not in output, output
  step = int(stopped[0].split(" at step ")[1].split()[0])
  assert (f"SIGTERM received: stopped stage 'teacher' at step {step} of 30; its checkpoint "
          f"at step {step} is saved") in stopped[0]
  assert _checkpoint_steps(workdir, "teacher")[-1] == step
  report = [f"teacher: SIGTERM, exit code {returncode}, checkpoint at step {step}"]

  returncode, output = binary.run(workdir, until=_logged(workdir, "kd", 12),
                                  signum=signal.SIGINT)
  assert returncode == 128 + signal.SIGINT, output
  assert "stopped: SIGINT received: stopped stage 'kd'" in output
  steps = _checkpoint_steps(workdir, "kd")
  assert len(steps) == 2 and steps[-1] >= 12
  report.append(f"kd: SIGINT, exit code {returncode}, checkpoint at step {steps[-1]}")

  # Truncates every file of the latest checkpoint: the resumed run falls back to the other.
  checkpoint_dir = os.path.join(trainer.stage_dir(workdir, "kd"), "checkpoints")
  for root, _, files in os.walk(os.path.join(checkpoint_dir, str(steps[-1]))):
    for name in files:
      path = os.path.join(root, name)
      os.truncate(path, os.path.getsize(path) // 2)
  returncode, output = binary.run(workdir)
  assert returncode == 0, output
  assert f"stage kd: the checkpoint at step {steps[-1]} is unreadable" in output
  assert f"stage kd: resumed from the checkpoint at step {steps[0]}" in output
  assert os.listdir(checkpoint_dir + checkpoints.UNREADABLE_SUFFIX) == [str(steps[-1])]
  report.append(f"kd: checkpoint at step {steps[-1]} truncated, resumed from step {steps[0]}")
  return report


@pytest.fixture(scope="module")
def interrupted(binary, reference, tmp_path_factory):
  """Both fault campaigns, run side by side (and beside the reference run) on 2 cores."""
  campaigns = {"killed": _kill_at_six_moments, "preempted": _preempt_twice_and_corrupt}
  with concurrent.futures.ThreadPoolExecutor(len(campaigns)) as pool:
    workdirs = {name: str(tmp_path_factory.mktemp(name)) for name in campaigns}
    futures = {name: pool.submit(run, binary, workdirs[name]) for name, run in campaigns.items()}
    concurrent.futures.wait(futures.values())
  return {name: (workdirs[name], futures[name]) for name in campaigns}


@pytest.mark.parametrize("campaign", ["killed", "preempted"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(interrupted, reference, campaign,
                                                             capsys):
  workdir, future = interrupted[campaign]
  report = future.result()  # re-raises what failed in the campaign
  _assert_same_outcome(workdir, reference())
  with capsys.disabled():  # what was tried, for the CI log
    print("\n" + "\n".join(f"  {campaign}: {line}" for line in report))


def test_checkpoint_with_readable_but_wrong_state_is_refused(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), max_to_keep=3)
  state = {"w": jnp.arange(6.0), "rng": jax.random.key(0)}
  for step in (1, 2, 3):
    ckpts.save(step, {"w": state["w"] * step, "rng": state["rng"]}, {"i": step})
  # Files that load without error but hold other values: step 1's arrays in step 3.
  shutil.rmtree(tmp_path / "ckpt" / "3" / "state")
  shutil.copytree(tmp_path / "ckpt" / "1" / "state", tmp_path / "ckpt" / "3" / "state")
  errors = []
  step, restored, record = checkpoints.RunCheckpoints(str(tmp_path / "ckpt")).restore_latest(
      state, on_unreadable=lambda s, e: errors.append((s, str(e))))
  assert errors == [(3, "the restored state does not hash to the state_sha256 saved with it")]
  assert (step, record) == (2, {"i": 2})
  np.testing.assert_array_equal(restored["w"], state["w"] * 2)


def test_unreadable_checkpoint_is_set_aside_and_its_step_saved_again(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"))
  ckpts.save(1, {"w": jnp.ones(3)}, {"i": 1})
  ckpts.save(2, {"w": jnp.ones(3) * 2}, {"i": 2})
  for path in glob.glob(str(tmp_path / "ckpt" / "2" / "**" / "*"), recursive=True):
    if os.path.isfile(path):
      os.truncate(path, 0)
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"))
  step, _, record = ckpts.restore_latest({"w": jnp.zeros(3)})
  assert (step, record) == (1, {"i": 1})
  assert os.listdir(ckpts.unreadable_directory) == ["2"]
  ckpts.save(2, {"w": jnp.ones(3) * 2}, {"i": 2})  # the resumed run reaches step 2 again
  assert ckpts.steps() == [1, 2]


def test_killed_export_reads_as_missing_and_is_redone(tmp_path):
  variables = {"params": {"w": jnp.ones(3)}}
  directory = str(tmp_path / "export")
  checkpoints.export_network(directory, variables, {"model": "mlp"})
  # What a kill during the next export leaves: no record, a half-written variables dir.
  os.remove(os.path.join(directory, checkpoints.PROVENANCE_FILE))
  os.makedirs(os.path.join(directory, "variables.orbax-checkpoint-tmp"))
  with pytest.raises(FileNotFoundError, match="no exported network"):
    checkpoints.load_network(directory, variables, {"model": "mlp"})
  checkpoints.export_network(directory, variables, {"model": "mlp"})
  assert not glob.glob(os.path.join(directory, _TMP))
  checkpoints.load_network(directory, variables, {"model": "mlp"})


def test_a_removal_of_an_old_checkpoint_cut_short_leaves_no_half_deleted_step(tmp_path,
                                                                              monkeypatch):
  """A second Ctrl-C while the oldest checkpoint is being removed after a save."""
  def interrupted_removal(path, *args, **kwargs):
    del args, kwargs
    for root, _, files in os.walk(str(path)):
      if files:
        os.remove(os.path.join(root, files[0]))
        break
    raise KeyboardInterrupt("second SIGINT")

  directory = str(tmp_path / "checkpoints")
  ckpts = checkpoints.RunCheckpoints(directory)
  for step in (1, 2):
    ckpts.save(step, {"w": np.full(2, step)}, {})
  with monkeypatch.context() as patch:
    patch.setattr(shutil, "rmtree", interrupted_removal)
    patch.setattr(epath.Path, "rmtree", interrupted_removal)
    with pytest.raises(KeyboardInterrupt):
      ckpts.save(3, {"w": np.full(2, 3)}, {})
  reopened = checkpoints.RunCheckpoints(directory)
  assert sorted(os.listdir(directory)) == ["2", "3"]
  step, state, _ = reopened.restore_latest({"w": np.zeros(2, int)})
  assert (step, state["w"].tolist()) == (3, [3, 3])


def test_the_first_signal_is_acknowledged_at_once(capfd):
  with preemption.StopRequests():
    os.kill(os.getpid(), signal.SIGINT)
    assert capfd.readouterr().err == (
        "\nSIGINT received: stopping after the current step or evaluation, with a checkpoint "
        "saved. Press Ctrl-C again to stop at once.\n")


def test_a_killed_runs_stage_lock_does_not_block_the_next_run(tmp_path):
  """kill -9 of the holder releases its lock, though a child it forked lives on."""
  directory = str(tmp_path / "stage")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import os, time\nfrom kdjax.trainer import workdir\n"
       f"with workdir.StageLock({directory!r}):\n"
       "  child = os.fork()\n"  # without exec: it shares the holder's open files
       "  if child == 0:\n    time.sleep(600)\n    os._exit(0)\n"
       "  print(child, flush=True)\n  time.sleep(600)"],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  child = None
  try:
    child = int(holder.stdout.readline())
    with pytest.raises(trainer.StageBusyError, match=f"process {holder.pid} on "):
      workdir_lib.StageLock(directory).__enter__()
    holder.kill()
    holder.wait()
    os.kill(child, 0)  # the forked child is still alive
    with workdir_lib.StageLock(directory):  # the operating system released the killed lock
      pass
  finally:
    holder.kill()
    holder.wait()
    if child is not None:
      os.kill(child, signal.SIGKILL)


def test_metrics_are_cut_back_to_the_step_training_resumes_from(tmp_path):
  path = tmp_path / trainer.METRICS_FILE
  lines = [json.dumps({"step": s, "split": "train", "loss": 1.0}) + "\n" for s in (5, 10, 15)]
  path.write_text("".join(lines) + '{"step": 16, "spl')  # the last line cut by a kill
  workdir_lib.rewind_metrics(str(tmp_path), 10)
  assert path.read_text() == "".join(lines[:2])


# -- numerical failure ---------------------------------------------------------------------


def _export_teacher(directory: str, scale: float) -> None:
  """Exports an mlp_tiny teacher for digits with its variables multiplied by ``scale``."""
  module = models.get("mlp_tiny", 10)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  checkpoints.export_network(directory, jax.tree.map(lambda x: x * scale, variables),
                             {"model": "mlp_tiny", "num_classes": 10, "dataset": "digits"})


def _external_teacher_config(data_dir: str, teacher_dir: str) -> ml_collections.ConfigDict:
  """One 6-step KD stage from the export in ``teacher_dir``, logged every 2 steps."""
  config = digits_runs.digits_config(
      data_dir, **{"dataset.eval_batch_size": 360, "num_seeds": 1, "eval_every_steps": 6,
                   "log_every_steps": 2, "checkpoint_every_steps": 3})
  config.teacher_dirs.external = ml_collections.ConfigDict(
      {"directory": teacher_dir, "model": "mlp_tiny"})
  config.stages.kd = base.stage("mlp_tiny", "kd", ("external",), num_steps=6,
                                cache_teacher=False)
  return config


@pytest.fixture(scope="module")
def overflowing_teacher(tmp_path_factory):
  """Finite parameters (×1e30) whose logits overflow to ±inf on every input."""
  directory = str(tmp_path_factory.mktemp("overflowing_teacher"))
  _export_teacher(directory, 1e30)
  return directory


def test_nonfinite_teacher_outputs_stop_training_naming_step_and_terms(
    data_dir, overflowing_teacher, tmp_path):
  config = _external_teacher_config(data_dir, overflowing_teacher)
  with pytest.raises(FloatingPointError) as error:
    trainer.train_and_evaluate(config, str(tmp_path))
  # Found at the step-2 log, named as step 1: the flags are recorded on the device.
  assert str(error.value) == (
      "stage kd: non-finite values at step 1 in teacher_logits, loss, loss/kd, grad_norm, "
      "student_variables (seed 0); training stopped and no checkpoint was written. Set "
      "config.nonfinite='skip' to skip such steps instead.")
  assert _checkpoint_steps(str(tmp_path), "kd") == []


def test_nonfinite_steps_are_skipped_and_counted_when_asked(data_dir, overflowing_teacher,
                                                            tmp_path):
  config = _external_teacher_config(data_dir, overflowing_teacher)
  config.nonfinite = "skip"
  result, = trainer.train_and_evaluate(config, str(tmp_path))
  assert result["nonfinite_steps"] == [6]
  records = metric_writers.read_jsonl(
      os.path.join(trainer.stage_dir(str(tmp_path), "kd"), trainer.METRICS_FILE))
  assert [r["nonfinite_steps"] for r in records if r["split"] == "train"] == [2, 4, 6]
  # Every update was skipped: the student leaves as it started.
  module = models.get("mlp_tiny", 10)
  initial = module.init(jax.random.fold_in(jax.random.key(config.seed), 1),
                        jnp.zeros((1, 8, 8, 1)), train=False)
  exported = checkpoints.read_provenance(trainer.export_dir(str(tmp_path), "kd", 0, "last"))
  assert exported["parameter_hash"] == checkpoints.parameter_hash(initial)


def test_nonfinite_cached_teacher_logits_are_refused_before_training(
    data_dir, overflowing_teacher, tmp_path):
  config = _external_teacher_config(data_dir, overflowing_teacher)
  config.stages.kd.cache_teacher = True
  with pytest.raises(ValueError, match=r"stage kd: the logits of its teachers \(external\) are "
                     r"not finite on 1437 of 1437 training examples \(the first: example 0\)"):
    trainer.train_and_evaluate(config, str(tmp_path))


# -- bad input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary_failures(binary, tmp_path_factory):
  """The binary's failing launches, started side by side: name -> (exit code, output, workdir)."""
  root = tmp_path_factory.mktemp("failures")
  (root / "a_file").write_text("")
  overflow = ["--config.stages.teacher.optimizer.name=sgd",
              "--config.stages.teacher.optimizer.learning_rate=300",
              "--config.stages.teacher.optimizer.schedule=constant",
              "--config.log_every_steps=5"]
  launches = {
      "misspelled config key": ("a", ["--config.stages.kd.loss.temprature=2.0"], CONFIG),
      "missing config file": ("b", [], os.path.join("configs", "no_such_config.py")),
      "unwritable workdir": (os.path.join("a_file", "run"), [], CONFIG),
      "temperature <= 0 (binary)": ("c", ["--config.stages.kd.loss.temperature=-1"], CONFIG),
      "gradient overflow": ("d", overflow, CONFIG),
      "positional config path": ("e", [CONFIG], None),
      "--distributed without a coordinator": ("f", ["--distributed"], CONFIG),
  }
  started = {name: (binary.start(str(root / workdir), *overrides, config=config),
                    str(root / workdir))
             for name, (workdir, overrides, config) in launches.items()}
  finished = {}
  for name, ((process, log), workdir) in started.items():
    returncode = process.wait(timeout=TIMEOUT)
    finished[name] = (returncode, open(log).read(), workdir)
  return finished


def test_gradient_overflow_stops_the_binary_and_spares_the_checkpoints(binary_failures):
  returncode, output, workdir = binary_failures["gradient overflow"]
  assert returncode == 1 and "Traceback" not in output, output
  last = output.strip().splitlines()[-1]
  match = re.fullmatch(
      r"error: stage teacher: non-finite values at step (\d+) in (.*) \(seed 0\); training "
      r"stopped and the last checkpoint, at step (\d+), predates it and is intact\. Set "
      r"config\.nonfinite='skip' to skip such steps instead\.", last)
  assert match, last
  bad_step, terms, kept = int(match[1]), match[2].split(", "), int(match[3])
  assert "grad_norm" in terms
  steps = _checkpoint_steps(workdir, "teacher")
  assert steps[-1] == kept < bad_step
  checkpoint_dir = os.path.join(trainer.stage_dir(workdir, "teacher"), "checkpoints")
  for step in steps:
    state = ocp.StandardCheckpointer().restore(os.path.join(checkpoint_dir, str(step), "state"))
    assert not context_lib.nonfinite_leaves(state["params"]), step
  for provenance in glob.glob(os.path.join(trainer.stage_dir(workdir, "teacher"), "export", "*",
                                           "*", checkpoints.PROVENANCE_FILE)):
    assert json.load(open(provenance))["step"] < bad_step


def _tiny_config(data_dir: str, **edits) -> ml_collections.ConfigDict:
  config = digits_runs.digits_config(data_dir)
  config.stages.teacher = base.stage("mlp", "scratch", num_steps=5)
  config.stages.kd = base.stage("mlp_tiny", "dkp", ("teacher",), num_steps=5)
  return digits_runs.override(config, **edits)


def _validate(**edits):
  return lambda data_dir, tmp_path: trainer.validate(_tiny_config(data_dir, **edits))


def _train(**edits):
  return lambda data_dir, tmp_path: trainer.train_and_evaluate(
      _tiny_config(data_dir, **edits), str(tmp_path / "run"))


def _external_teacher(model: str, scale: float = 1.0, **provenance):
  """Trains a KD stage from an mlp_tiny export declared as ``model``, with ``provenance``."""
  def run(data_dir, tmp_path):
    _export_teacher(str(tmp_path / "teacher"), scale)
    if provenance:
      record = checkpoints.read_provenance(str(tmp_path / "teacher"))
      record.update(provenance)
      (tmp_path / "teacher" / checkpoints.PROVENANCE_FILE).write_text(json.dumps(record))
    config = _tiny_config(data_dir)
    config.teacher_dirs.external = ml_collections.ConfigDict(
        {"directory": str(tmp_path / "teacher"), "model": model})
    config.stages = base.stages()
    config.stages.kd = base.stage("mlp_tiny", "kd", ("external",), num_steps=5)
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  return run


def _teacher_with_other_class_count(data_dir, tmp_path):
  del data_dir, tmp_path
  module = models.get("mlp_tiny", 10)
  obj = objective.Objective((objective.term("kd", 1.0, temperature=4.0),))
  state = state_lib.create_train_state(
      module, module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False),
      optax.sgd(0.1), jax.random.key(1))
  step_lib.make_train_step(module, obj, optax.sgd(0.1))(
      state, None, {"image": np.zeros((4, 8, 8, 1), np.float32),
                    "label": np.zeros(4, np.int32),
                    "teacher_logits": np.zeros((4, 5), np.float32)})


def _missing_teacher_export(data_dir, tmp_path):
  config = _tiny_config(data_dir)
  config.teacher_dirs.external = ml_collections.ConfigDict(
      {"directory": str(tmp_path / "nowhere"), "model": "mlp"})
  config.stages = base.stages()
  config.stages.kd = base.stage("mlp_tiny", "kd", ("external",), num_steps=5)
  trainer.train_and_evaluate(config, str(tmp_path / "run"))


def _stage_named(name: str):
  def run(data_dir, tmp_path):
    del tmp_path
    config = _tiny_config(data_dir)
    config.stages[name] = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=5)
    trainer.validate(config)
  return run


def _teacher_dir_as_a_path(data_dir, tmp_path):
  config = _tiny_config(data_dir)
  config.teacher_dirs.external = str(tmp_path / "teacher")
  trainer.validate(config)


def _stage_held_by_another_run(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.StageLock(trainer.stage_dir(workdir, "teacher")):
    trainer.train_and_evaluate(_tiny_config(data_dir), workdir)


def _teacher_at_chance(data_dir, tmp_path):
  _export_teacher(str(tmp_path / "teacher"), 1.0)  # untrained
  config = _external_teacher_config(data_dir, str(tmp_path / "teacher"))
  config.min_teacher_accuracy_over_chance = 2.0
  trainer.train_and_evaluate(config, str(tmp_path / "run"))


def _provenance_not_json(data_dir, tmp_path):
  _export_teacher(str(tmp_path / "teacher"), 1.0)
  (tmp_path / "teacher" / checkpoints.PROVENANCE_FILE).write_text("")
  trainer.train_and_evaluate(_external_teacher_config(data_dir, str(tmp_path / "teacher")),
                             str(tmp_path / "run"))


def _claim_twice(data_dir, tmp_path):
  record = workdir_lib.stage_record(_tiny_config(data_dir), "kd")
  workdir_lib.claim_stage_dir(str(tmp_path / "kd"), record)
  record["stage"]["loss"]["temperature"] = 2.0
  workdir_lib.claim_stage_dir(str(tmp_path / "kd"), record)


def _record_of_another_format(data_dir, tmp_path):
  record = workdir_lib.stage_record(_tiny_config(data_dir), "kd")
  os.makedirs(tmp_path / "kd")
  (tmp_path / "kd" / trainer.STAGE_CONFIG_FILE).write_text(json.dumps({**record, "format": 2}))
  workdir_lib.claim_stage_dir(str(tmp_path / "kd"), record)


def _tampered_export(data_dir, tmp_path):
  del data_dir
  variables = {"params": {"w": jnp.ones(3)}}
  checkpoints.export_network(str(tmp_path / "net"), variables, {"model": "mlp"})
  record = checkpoints.read_provenance(str(tmp_path / "net"))
  record["parameter_hash"] = "0" * 64
  (tmp_path / "net" / checkpoints.PROVENANCE_FILE).write_text(json.dumps(record))
  checkpoints.load_network(str(tmp_path / "net"), variables, {"model": "mlp"})


def _state_and_step_of_other_optimizers(data_dir, tmp_path):
  del data_dir, tmp_path
  module = models.get("mlp_tiny", 10)
  state = state_lib.create_train_state(
      module, module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False),
      optax.adam(1e-3), jax.random.key(1))
  obj = objective.Objective((objective.term("ce"),))
  step_lib.make_train_step(module, obj, optax.sgd(0.1, momentum=0.9))(
      state, None, {"image": np.zeros((4, 8, 8, 1), np.float32), "label": np.zeros(4, np.int32)})


def _weight_decay_mask_over_the_params(data_dir, tmp_path):
  del data_dir, tmp_path
  module = models.get("mlp_tiny", 10)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  mask = jax.tree.map(lambda x: x.ndim > 1, variables["params"])
  state_lib.create_train_state(
      module, variables, optax.chain(optax.masked(optax.add_decayed_weights(5e-4), mask),
                                     optax.sgd(0.1)), jax.random.key(1))


_BINARY = "binary"  # the case is one of the binary_failures launches, checked by its output

# case -> (how it is made, the exception, a regular expression its message must match).
BAD_INPUTS = {
    "student and teacher logits of different shapes": (
        lambda *_: losses.kd(jnp.zeros((4, 10)), jnp.zeros((4, 5))), ValueError,
        r"student_logits and teacher_logits must have the same shape; got \(4, 10\) and "
        r"\(4, 5\)"),
    "temperature <= 0 (loss function)": (
        lambda *_: losses.kd(jnp.zeros((4, 10)), jnp.zeros((4, 10)), temperature=0.0),
        ValueError, r"temperature=0.0 must be finite and > 0"),
    "temperature <= 0 (config)": (
        _validate(**{"stages.kd.loss.temperature": 0.0}), ValueError,
        r"stages.kd.loss: kd/temperature must lie in \(0.0, inf\); it is 0.0 at step 0"),
    "temperature <= 0 (binary)": (
        _BINARY, SystemExit,
        r"error: stages.kd.loss: kd/temperature must lie in \(0.0, inf\); it is -1.0 at step "
        r"0."),
    "gamma outside [0, 1]": (
        _validate(**{"stages.kd.loss.gamma": 1.5}), ValueError,
        r"stages.kd.loss: dkp/gamma must lie in \[0.0, 1.0\]; it is 1.5 at step 0"),
    "unknown DKP variant": (
        _validate(**{"stages.kd.loss.variant": "median"}), ValueError,
        r"stages.kd.loss: unknown DKP variant 'median'; valid: 'uniform', 'mean', 'tail'"),
    "Continuation-KD margin < 0": (
        _validate(**{"stages.kd.method": "continuation",
                     "stages.kd.loss.max_temperature": 2,
                     "stages.kd.loss.margin": -1.0}), ValueError,
        r"stages.kd.loss: continuation/margin must lie in \[0.0, inf\); it is -1.0 at step 0"),
    "logit standardization for a method without softmax terms": (
        _validate(**{"stages.kd.method": "annealing",
                     "stages.kd.loss.logit_standardization": True}), ValueError,
        r"stages.kd.loss: loss.logit_standardization=True has no effect on Annealing-KD's "
        r"logit regression"),
    "Continuation-KD ψ or Φ fraction outside (0, 1]": (
        _validate(**{"stages.kd.method": "continuation",
                     "stages.kd.loss.ramp_fraction": 0.0}), ValueError,
        r"stages.kd.loss: loss.ramp_fraction=0.0 must lie in \(0, 1\]"),
    "logit standardization with fewer than 2 classes": (
        lambda *_: losses.standardize_logits(jnp.zeros((2, 1))), ValueError,
        r"logit standardization needs K >= 2 classes; got logits of shape \(2, 1\)"),
    "Jensen–Shannon β outside [0, 1]": (
        _validate(**{"stages.kd.method": "divergence", "stages.kd.loss.divergence":
                     "jensen_shannon", "stages.kd.loss.beta": 1.5}), ValueError,
        r"stages.kd.loss: jensen_shannon/beta must lie in \[0.0, 1.0\]; it is 1.5 at step 0"),
    "unknown divergence": (
        _validate(**{"stages.kd.method": "divergence",
                     "stages.kd.loss.divergence": "hellinger"}), ValueError,
        r"stages.kd.loss: unknown loss.divergence 'hellinger'; valid: 'reverse_kl', "
        r"'jensen_shannon', 'total_variation'"),
    "DIST weight < 0": (
        _validate(**{"stages.kd.method": "dist", "stages.kd.loss.gamma": -2.0}),
        ValueError, r"stages.kd.loss: dist/gamma must lie in \[0.0, inf\); it is -2.0 at step 0"),
    "sparse teacher targets with k outside [1, K]": (
        lambda *_: losses.sparse_targets(jnp.zeros((4, 10)), 11), ValueError,
        r"k=11 must be an integer in \[1, K\] = \[1, 10\]"),
    "sparse KD with top_k outside [1, K]": (
        _validate(**{"stages.kd.method": "sparse_kd", "stages.kd.loss.top_k": 11}),
        ValueError, r"stages.kd.loss: k=11 must be an integer in \[1, K\] = "
        r"\[1, 10\]"),
    "sparse KD with top_k below 1": (
        _validate(**{"stages.kd.method": "sparse_kd", "stages.kd.loss.top_k": 0}),
        ValueError, r"stages.kd.loss: k=0 must be an integer in \[1, K\], K the number of "
        r"classes"),
    "CTKD temperature range that is empty": (
        _validate(**{"stages.kd.method": "ctkd", "stages.kd.loss.t_range": 0.0}),
        ValueError, r"stages.kd.loss: t_range=0.0 must be finite and > 0: the temperature "
        r"range \(1.0, 1.0\) is empty"),
    "CTKD reversal weight outside [0, 1]": (
        _validate(**{"stages.kd.method": "ctkd", "stages.kd.loss.lambda_max": -1.0}),
        ValueError, r"stages.kd.loss: loss.lambda_max=-1.0 must lie in \[0.0, 1.0\]"),
    "unknown method": (
        _validate(**{"stages.kd.method": "distil"}), ValueError,
        r"stages.kd.method: unknown method 'distil'"),
    "unknown model": (
        _validate(**{"stages.kd.model": "resnet9"}), ValueError,
        r"stages.kd.model='resnet9' is unknown; valid: .*resnet8"),
    "labels out of range": (
        lambda *_: losses.cross_entropy(jnp.zeros((2, 10)), jnp.array([3, 10])), ValueError,
        r"labels must lie in \[0, 10\); got values in \[3, 10\]"),
    "a schedule without num_steps": (
        lambda *_: objective.Objective((objective.term(
            "kd", temperature=optax.linear_schedule(4.0, -1.0, 10)),)), ValueError,
        r"kd/temperature is a schedule: pass num_steps, the number of training steps"),
    "a schedule leaving its range within num_steps": (
        lambda *_: objective.Objective((objective.term(
            "kd", temperature=optax.linear_schedule(4.0, -4.0, 8)),), num_steps=10),
        ValueError, r"kd/temperature must lie in \(0.0, inf\); it is 0.0 at step 4"),
    "a state built with another optimizer than the step's": (
        _state_and_step_of_other_optimizers, ValueError,
        r"state.opt_state holds \['ScaleByAdamState', 'EmptyState'\] but the step's optimizer "
        r"makes \['TraceState', 'EmptyState'\]: pass the same optimizer"),
    "a weight-decay mask built from the model's params": (
        _weight_decay_mask_over_the_params, ValueError,
        r"the optimizer's mask or labels are written for the student's params, .* wrap the "
        r"tree: \{'student': mask, 'aux': False\}"),
    "teacher and student class counts differ": (
        _teacher_with_other_class_count, ValueError,
        r"the teacher has 5 classes but the student has 10"),
    "teacher trained on another dataset": (
        _external_teacher("mlp_tiny", dataset="cifar10"), ValueError,
        r"dataset: found 'cifar10', expected 'digits'"),
    "teacher checkpoint of another architecture": (
        _external_teacher("resnet8"), ValueError, r"model: found 'mlp_tiny', expected 'resnet8'"),
    "teacher export tampered with": (
        _tampered_export, ValueError, r"fails its integrity check"),
    "teacher with NaN parameters": (
        _external_teacher("mlp_tiny", scale=float("nan")), ValueError,
        r"teacher 'external' in '.*teacher' has non-finite values in "
        r"\['batch_stats'\]\['bn0'\]\['mean'\], .*; it cannot teach"),
    "teacher that is neither a stage nor in teacher_dirs": (
        _validate(**{"stages.kd.teachers": ("ghost",)}), ValueError,
        r"stages.kd.teachers names 'ghost', which is neither an earlier stage \(\['teacher'\]\) "
        r"nor a key of config.teacher_dirs"),
    "missing teacher export": (
        _missing_teacher_export, FileNotFoundError,
        r"no exported network in '.*nowhere' \(missing provenance.json\); train it first, or "
        r"point to an export of a finished stage: WORKDIR/stages/NAME/export/seed0/last \(or "
        r"\.\.\./best\)\."),
    "teacher export whose provenance.json is not JSON": (
        _provenance_not_json, ValueError,
        r"stage kd: teacher 'external': .*teacher/provenance.json is not a provenance record "
        r"\(Expecting value: line 1 column 1 \(char 0\)\); export the network again, or "
        r"restore the file\."),
    "teacher below the accuracy threshold": (
        _teacher_at_chance, ValueError,
        r"stage kd: teacher 'external' has test accuracy 0\.\d{4} on digits, below "
        r"min_teacher_accuracy_over_chance=2 times chance \(0\.1000\): it would teach noise\. "
        r"Train it longer, or lower the threshold \(--config.min_teacher_accuracy_over_chance=1 "
        r"allows any better than chance, 0 turns the check off\)\."),
    "teacher_dirs entry given as a path": (
        _teacher_dir_as_a_path, ValueError,
        r"teacher_dirs.external='.*teacher' must name the export's directory and the model it "
        r"holds, as config.teacher_dirs.external = ml_collections.ConfigDict\(\{'directory': "
        r"'.*teacher', 'model': 'resnet56'\}\)"),
    "stage name with a path separator": (
        _stage_named("学生/kd"), ValueError,
        r"stage name '学生/kd' must be one path component \(the stage's directory is "
        r"WORKDIR/stages/NAME\): no '/', not empty, '\.' or '\.\.'\."),
    "absolute stage name": (
        _stage_named("/tmp/kd"), ValueError, r"stage name '/tmp/kd' must be one path component"),
    "empty workdir": (
        lambda data_dir, tmp_path: trainer.train_and_evaluate(_tiny_config(data_dir), ""),
        ValueError, r"workdir='' is empty \(an unset variable in --workdir=\$VAR\?\); name "
        r"the run's directory, e.g. --workdir=workdir/NAME."),
    "stage being trained by another run": (
        _stage_held_by_another_run, trainer.StageBusyError,
        r".*run/stages/teacher is being trained by another run \(process \d+ on .*, since "
        r".*\)\. Wait for it to finish \(the same command then reuses the stage\), or stop "
        r"it; nothing was changed\."),
    "positional config path": (
        _BINARY, SystemExit,
        r"error: --config is required, and '.*reliability_config.py' was given as a "
        r"positional argument; write --config=.*reliability_config.py."),
    "--distributed without a coordinator": (
        _BINARY, SystemExit,
        r"error: --distributed: coordinator_address should be defined\. \(JAX finds the "
        r"processes on TPU pods, SLURM and Open MPI; elsewhere pass --coordinator_address, "
        r"--num_processes and --process_id\)\."),
    "missing dataset": (
        lambda data_dir, tmp_path: trainer.train_and_evaluate(
            _tiny_config(str(tmp_path / "empty"), **{"dataset.name": "cifar10"}),
            str(tmp_path / "run")), FileNotFoundError,
        r"Dataset 'cifar10' is not prepared in data_dir='.*empty'"),
    "unknown dataset": (
        _validate(**{"dataset.name": "imagenet"}), ValueError,
        r"dataset.name: Unknown dataset name='imagenet'; supported: digits, cifar10, cifar100"),
    "empty split": (
        lambda data_dir, tmp_path: data.train_iterator(
            "digits", data_dir=data_dir, batch_size=8, seed=0, augmentation="none",
            split="train[:0]"), ValueError, r"split='train\[:0\]' of dataset 'digits' is empty"),
    "batch size the devices cannot split": (
        _train(**{"dataset.batch_size": 30}), ValueError,
        r"dataset.batch_size=30 is not divisible by the 8 devices"),
    "eval batch size the devices cannot split": (
        _train(**{"dataset.eval_batch_size": 100}), ValueError,
        r"dataset.eval_batch_size=100 is not divisible by the 8 devices"),
    "batch size above the training split": (
        _validate(**{"dataset.batch_size": 2048}), ValueError,
        r"dataset.batch_size=2048 exceeds the 1437 training examples of 'digits'"),
    "DKP top_k leaving no tail for the dataset's classes": (
        _validate(**{"stages.kd.method": "dkp", "stages.kd.loss.variant": "tail",
                     "stages.kd.loss.top_k": 9}), ValueError,
        r"stages.kd.loss: top_k=9 leaves no tail with K=10 classes"),
    "misspelled config key": (
        _BINARY, SystemExit,
        r"error: --config.stages.kd.loss.temprature: no such config field 'temprature' "
        r"Did you mean \"temperature\" instead of \"temprature\"\?"),
    "missing config file": (
        _BINARY, SystemExit,
        r"error: cannot load --config: Failed loading config file .* No such file or "
        r"directory: 'configs/no_such_config.py'"),
    "unwritable workdir": (
        _BINARY, SystemExit, r"error: workdir='.*a_file/run' is not a writable directory: "
        r"Not a directory."),
    "workdir holding a run with another config": (
        _claim_twice, ValueError, r"holds a run with a different config or different "
        r"teachers \(stage.loss.temperature: 4.0 → 2.0\)"),
    "workdir whose stage record has another format": (
        _record_of_another_format, ValueError, r"holds a stage recorded in format 2, and this "
        r"version of kdjax reads format 3. Use a new --workdir \(pass the old run's exports to "
        r"it with config.teacher_dirs\); nothing was changed."),
    "stage without a length": (
        _validate(**{"stages.kd.num_steps": 0}), ValueError,
        r"stages.kd.num_steps=0 and stages.kd.num_epochs=0: give the stage's length in one of "
        r"them."),
    "length given in steps and in epochs": (
        _validate(**{"stages.kd.num_epochs": 2.0}), ValueError,
        r"stages.kd.num_steps=5 and stages.kd.num_epochs=2 both give the stage's length: set "
        r"one of them to 0."),
    "negative step count": (
        _validate(**{"stages.kd.num_steps": -5}), ValueError,
        r"stages.kd.num_steps=-5 must be an integer >= 0 \(0: the stage's length is given in "
        r"num_epochs\)."),
    "negative or infinite epochs": (
        _validate(**{"eval_every_steps": 0, "eval_every_epochs": float("inf")}), ValueError,
        r"eval_every_epochs=inf must be a finite number >= 0 \(0: the evaluation interval is "
        r"given in eval_every_steps\)."),
    "epochs that come to less than one step": (
        _validate(**{"stages.kd.optimizer.warmup_epochs": 0.01}), ValueError,
        r"stages.kd.optimizer.warmup_epochs=0.01 is less than one step \(an epoch is 44 "
        r"steps\)."),
    "a warm-up in epochs given to kdjax.optimizers directly": (
        lambda data_dir, tmp_path: optimizers.optimizer(
            base.optimizer(warmup_epochs=5), num_steps=100), ValueError,
        r"optimizer.warmup_epochs=5.0 is in epochs: give warmup_steps, or pass the run config "
        r"through kdjax.trainer.validate, which resolves epochs into steps."),
    "loss field the stage's method does not read": (
        _validate(**{"stages.kd.loss.beta": 2.0, "stages.teacher.loss.temperature": -3.0}),
        ValueError, r"stages.teacher.loss sets temperature=-3.0, which method 'scratch' does "
        r"not read \(its fields: label_smoothing, logit_standardization\); remove them, or "
        r"choose the method that reads them."),
    "loss field of another method given to kdjax.config.stage": (
        lambda *_: base.stage("mlp_tiny", "dkd", ("teacher",), num_steps=5,
                              loss={"dkd_alpha": 2.0}), ValueError,
        r"loss field\(s\) \['dkd_alpha'\] are not read by method 'dkd'; its fields: "
        r"label_smoothing, temperature, logit_standardization, alpha, beta, warmup_epochs."),
    "every loss weight 0": (
        _validate(**{"stages.kd.loss.ce_weight": 0.0, "stages.kd.loss.kd_weight": 0.0}),
        ValueError, r"stages.kd.loss: every term of method 'dkp' has weight 0 \(ce, kd\), so "
        r"the stage would train nothing; give one of them a positive weight."),
    "wrong number of teachers": (
        _validate(**{"stages.kd.teachers": ()}), ValueError,
        r"stages.kd.teachers=\(\): method 'dkp' takes exactly one teacher"),
    "init_from a stage that is not earlier": (
        _validate(**{"stages.kd.init_from": "kd"}), ValueError,
        r"stages.kd.init_from='kd' must be an earlier stage; earlier: \['teacher'\]"),
    "learning rate of zero": (
        _validate(**{"stages.kd.optimizer.learning_rate": 0.0}), ValueError,
        r"stages.kd: optimizer.learning_rate=0.0 must be finite and > 0"),
    "mixup concentration <= 0": (
        _validate(**{"stages.kd.mixup": -1.0}), ValueError,
        r"stages.kd.mixup: mixup concentration=-1.0 must be a finite number > 0"),
    "mixup for a method that reads labels": (
        _validate(**{"stages.kd.mixup": 1.0, "stages.kd.loss.variant": "tail"}), ValueError,
        r"stages.kd.mixup=1.0: mixup blends images, so the labels no longer describe them, but "
        r"method 'dkp' reads labels \(in ce, output_tx\); use a label-free method "
        r"\(function_matching, annealing\)"),
    "seed out of range": (
        _validate(seed=-1), ValueError, r"seed=-1 must be an integer in \[0, 2\*\*32\)"),
    "unknown non-finite policy": (
        _validate(nonfinite="ignore"), ValueError,
        r"nonfinite='ignore' is unknown; valid: stop, skip"),
    "fewer than 2 checkpoints kept": (
        lambda data_dir, tmp_path: checkpoints.RunCheckpoints(str(tmp_path), max_to_keep=1),
        ValueError, r"max_to_keep=1 must be an integer >= 2"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_a_message_naming_it(case, data_dir, tmp_path, request):
  make, error, message = BAD_INPUTS[case]
  if make == _BINARY:
    returncode, output, _ = request.getfixturevalue("binary_failures")[case]
    assert returncode == 1 and "Traceback" not in output, output
    assert re.fullmatch(message, output.strip().splitlines()[-1]), output
    return
  with pytest.raises(error, match=message):
    make(data_dir, tmp_path)
