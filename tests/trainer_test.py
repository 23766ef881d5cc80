"""End-to-end tests of the trainer and the training binary on the bundled digits data.

Tiny models and a few steps: these check the plumbing (stages, teachers, checkpoints,
resume, reports, refusals), not accuracy. Tests run on 8 virtual CPU devices, so the
trainer takes its device-mesh path.
"""

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types

import digits_runs
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import two_processes

from configs import base
from kdjax import checkpoints, dispatch, metric_writers, mixup, models, report, trainer
from kdjax.trainer import context as context_lib
from kdjax.trainer import loop as loop_lib
from kdjax.trainer import stage as stage_lib
from kdjax.trainer import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTIHOST_WORKER = os.path.join(REPO, "tests", "multihost_trainer_worker.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny_config(data_dir: str) -> ml_collections.ConfigDict:
  config = digits_runs.digits_config(
      data_dir, **{"dataset.eval_batch_size": 200, "num_seeds": 2, "eval_every_steps": 10,
                   "log_every_steps": 5, "checkpoint_every_steps": 10})
  adam = base.optimizer(name="adam", learning_rate=3e-3, weight_decay=0.0, schedule="cosine")
  config.stages.teacher = base.stage("mlp", "scratch", num_steps=30, num_seeds=1, optimizer=adam)
  config.stages.assistant = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=10,
                                       num_seeds=1, optimizer=adam)
  config.stages.dkp = base.stage("mlp_tiny", "dkp", ("teacher",), num_steps=10, optimizer=adam)
  config.stages.dkp.loss.variant = "tail"
  config.stages.annealing_1 = base.stage("mlp_tiny", "annealing", ("teacher",), num_steps=10,
                                         optimizer=adam)
  config.stages.annealing_2 = base.stage("mlp_tiny", "scratch", num_steps=10,
                                         init_from="annealing_1", optimizer=adam)
  config.stages.dgkd = base.stage("mlp_tiny", "dgkd", ("teacher", "assistant"), num_steps=10,
                                  optimizer=adam)
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = _tiny_config(data_dir)
  results = trainer.train_and_evaluate(config, workdir)
  return config, workdir, results


class TestEndToEnd:

  def test_every_stage_reports_accuracies_per_seed(self, finished_run):
    config, _, results = finished_run
    assert [r["stage"] for r in results] == list(config.stages)
    for r in results:
      seeds = config.stages[r["stage"]].num_seeds or config.num_seeds
      assert len(r["last_accuracy"]) == len(r["best_accuracy"]) == seeds
      assert all(0.0 <= a <= 1.0 for a in r["last_accuracy"] + r["best_accuracy"])
      assert all(b >= a for a, b in zip(r["last_accuracy"], r["best_accuracy"], strict=True))
    # The teacher trained for real: far above chance (10 %) on the test split.
    assert results[0]["last_accuracy"][0] > 0.5

  def test_teachers_are_checked_and_cached(self, finished_run):
    _, _, results = finished_run
    by_stage = {r["stage"]: r for r in results}
    teacher_accuracy = by_stage["teacher"]["last_accuracy"][0]
    # The sanity check re-evaluates the export of the teacher stage that is read: the last.
    assert by_stage["dkp"]["teacher_accuracy"]["teacher"] == pytest.approx(
        by_stage["teacher"]["last_accuracy"][0], abs=1e-6)
    assert teacher_accuracy <= by_stage["teacher"]["best_accuracy"][0]
    assert set(by_stage["dgkd"]["teacher_accuracy"]) == {"teacher", "assistant"}
    assert by_stage["dkp"]["teacher_cache"]  # augmentation is off: logits precomputed

  def test_summary_plot_metrics_and_exports_are_written(self, finished_run):
    config, workdir, _ = finished_run
    text = open(os.path.join(workdir, "summary.md")).read()
    for name in config.stages:
      assert f"| {name} |" in text
    with open(os.path.join(workdir, "accuracy.png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in
               open(os.path.join(workdir, "stages", "dkp", "metrics.jsonl"))]
    train = [r for r in records if r["split"] == "train"]
    assert {"loss", "loss/kd", "kd/temperature", "learning_rate", "agreement",
            "images_per_second"} <= set(train[0])
    assert glob.glob(os.path.join(workdir, "stages", "dkp", "events.out.tfevents.*"))
    for seed in range(2):
      provenance = checkpoints.read_provenance(
          trainer.export_dir(workdir, "dkp", seed, "last"))
      assert provenance["model"] == "mlp_tiny" and provenance["dataset"] == "digits"

  def test_results_record_protocol_and_cost(self, finished_run):
    _, _, results = finished_run
    by_stage = {r["stage"]: r for r in results}
    teacher = by_stage["teacher"]
    # digits: 1437 training examples, 10 classes; 30 steps of 32 images.
    assert teacher["dataset"] == {"name": "digits", "num_classes": 10, "num_train": 1437,
                                  "num_test": 360, "batch_size": 32, "augmentation": "none"}
    assert teacher["epochs"] == pytest.approx(30 * 32 / 1437)
    assert by_stage["annealing_2"]["init_from"] == "annealing_1"
    for r in results:
      cost = r["cost"]
      assert cost["runs"] == 1
      assert cost["train_seconds"] > 0 and cost["eval_seconds"] > 0
      assert cost["setup_seconds"] > 0 and cost["checkpoint_seconds"] > 0  # saves, exports
      assert cost["hardware"] == [{"backend": "cpu", "device_kind": jax.devices()[0].device_kind,
                                   "device_count": 8, "process_count": 1,
                                   "host_cpu_count": os.cpu_count()}]

  def test_the_report_reads_its_stages_as_finished_runs_of_its_config(self, finished_run):
    config, workdir, results = finished_run
    spec = {"title": "T", "rows": [{"stage": name, "label": name} for name in config.stages]}
    table = report.Table("t.py", spec, trainer.validate(config), (workdir,))
    rows = report.table_rows(table)
    assert [(row["status"], row["stale"]) for row in rows] == [("finished", [])] * len(rows)
    assert [row["result"]["last_accuracy"] for row in rows] == [
        r["last_accuracy"] for r in results]
    # Every column of the markdown table comes from what the trainer wrote: epochs,
    # augmentation, wall time (a duration, e.g. "12 s") and hardware.
    lines = [line for line in report.table_markdown(table)[0].splitlines()
             if line.startswith("| ")][1:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [row[0] for row in cells] == list(config.stages)
    for row in cells:
      assert row[-4] == "none"
      assert re.fullmatch(r"\d+(\.\d)? (s|min|h)", row[-2]), row
      assert row[-1] == f"cpu: 8× {jax.devices()[0].device_kind}, {os.cpu_count()} host CPUs"

  def test_a_second_config_in_the_workdir_keeps_the_first_configs_stages(self, finished_run,
                                                                         tmp_path):
    config, workdir, _ = finished_run
    shared = str(tmp_path / "shared")
    shutil.copytree(workdir, shared)
    second = _tiny_config(config.dataset.data_dir)
    second.stages = base.stages()
    second.stages.teacher = config.stages.teacher  # reused, as the README recommends
    second.stages.kd_t2 = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=5)
    second.stages.kd_t2.loss.temperature = 2.0
    trainer.train_and_evaluate(second, shared)
    rows = [line.split("|")[1].strip() for line in
            open(os.path.join(shared, "summary.md")).read().splitlines()
            if line.startswith("| ")][1:]
    # This run's stages in its order, then the other finished stages by name.
    assert rows == ["teacher", "kd_t2", "annealing_1", "annealing_2", "assistant", "dgkd",
                    "dkp"]

  def test_annealing_stage_two_starts_from_each_seeds_stage_one(self, finished_run):
    config, workdir, _ = finished_run
    hashes = [checkpoints.read_provenance(trainer.export_dir(workdir, "annealing_1", i, "last"))[
        "parameter_hash"] for i in range(2)]
    assert hashes[0] != hashes[1]
    with open(os.path.join(trainer.stage_dir(workdir, "annealing_2"),
                           trainer.STAGE_CONFIG_FILE)) as f:
      assert json.load(f)["inputs"]["init_from"] == hashes

  def test_rerun_reuses_complete_stages(self, finished_run):
    config, workdir, results = finished_run
    again = trainer.train_and_evaluate(config, workdir)
    assert again == json.loads(json.dumps(results))


def test_every_other_method_trains(tmp_path, data_dir):
  """One short stage of each method the fixture run does not cover, with augmentation on."""
  config = _tiny_config(data_dir)
  config.num_seeds = 1
  config.dataset.augmentation = "crop_flip"
  config.stages = base.stages()
  config.stages.teacher = base.stage("resnet8", "scratch", num_steps=4)
  for method in ("fitnets", "attention"):
    config.stages[method] = base.stage("resnet8", method, ("teacher",), num_steps=4)
  config.stages.attention.loss.features = ("stage2", "stage3")
  for method in ("dkd", "ensemble", "logits_matching", "function_matching"):
    config.stages[method] = base.stage("mlp_tiny", method, ("teacher",), num_steps=4)
  config.stages.dkd.loss.warmup_epochs = 2
  config.stages.function_matching.mixup = 1.0
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert [r["stage"] for r in results] == list(config.stages)
  assert not any(r["teacher_cache"] for r in results)  # augmentation on: online teachers

  def train_records(stage):
    path = os.path.join(trainer.stage_dir(str(tmp_path), stage), "metrics.jsonl")
    return [r for r in map(json.loads, open(path)) if r["split"] == "train"]

  # Mixed images have no labels: the function-matching student is scored against its
  # teacher only, while the unmixed stages still report training accuracy.
  assert all("accuracy" not in r and "agreement" in r for r in train_records("function_matching"))
  assert all("accuracy" in r for r in train_records("dkd"))
  records = [json.loads(line) for line in
             open(os.path.join(trainer.stage_dir(str(tmp_path), "fitnets"), "metrics.jsonl"))]
  assert "loss/hint" in records[0]
  # The hint regressor trains with the student but is not exported: the export loads into
  # the plain resnet8's variable structure.
  loaded = checkpoints.load_network(
      trainer.export_dir(str(tmp_path), "fitnets"),
      context_lib.abstract_variables(models.get("resnet8", 10), np.zeros((1, 8, 8, 1))),
      {"model": "resnet8"})
  assert "hint_regressor" not in loaded["params"]


def _one_student_config(data_dir: str, *, log: int, evaluate: int,
                        checkpoint: int) -> ml_collections.ConfigDict:
  """One seed of one 20-step MLP student trained from scratch, with these intervals."""
  config = _tiny_config(data_dir)
  config.update({"num_seeds": 1, "log_every_steps": log, "eval_every_steps": evaluate,
                 "checkpoint_every_steps": checkpoint})
  config.stages = base.stages()
  config.stages.student = base.stage("mlp_tiny", "scratch", num_steps=20)
  return config


def test_images_per_second_counts_training_steps_only(tmp_path, data_dir, monkeypatch):
  """On a fake clock a step takes 1 s, an evaluation 100 s and a checkpoint 50 s."""
  clock = types.SimpleNamespace(now=0.0)
  monkeypatch.setattr(loop_lib, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))

  def taking(seconds, fn):
    def timed(*args, **kwargs):
      clock.now += seconds
      return fn(*args, **kwargs)
    return timed

  build = stage_lib.build_stage

  def build_slow_stage(context, name):
    stage = build(context, name)
    return stage._replace(train_program=taking(1.0, stage.train_program))

  monkeypatch.setattr(stage_lib, "build_stage", build_slow_stage)
  monkeypatch.setattr(context_lib.RunContext, "evaluate",
                      taking(100.0, context_lib.RunContext.evaluate))
  monkeypatch.setattr(checkpoints.RunCheckpoints, "save",
                      taking(50.0, checkpoints.RunCheckpoints.save))
  trainer.train_and_evaluate(_one_student_config(data_dir, log=5, evaluate=5, checkpoint=10),
                             str(tmp_path))
  records = metric_writers.read_jsonl(
      os.path.join(trainer.stage_dir(str(tmp_path), "student"), trainer.METRICS_FILE))
  # 32 images per 1-second step in every window (the first step, which compiles, left out).
  assert [(r["step"], r["images_per_second"]) for r in records if r["split"] == "train"] == [
      (5, 32.0), (10, 32.0), (15, 32.0), (20, 32.0)]


def test_the_trainer_keeps_a_few_steps_in_flight(tmp_path, data_dir, monkeypatch):
  """Never the 32 steps ahead at which XLA:CPU deadlocks with split batches (kdjax.dispatch)."""
  in_flight = []
  push = dispatch.DispatchWindow.push

  def recorded(window, outputs):
    push(window, outputs)
    in_flight.append(window.in_flight)

  monkeypatch.setattr(dispatch.DispatchWindow, "push", recorded)
  trainer.train_and_evaluate(_one_student_config(data_dir, log=20, evaluate=20, checkpoint=20),
                             str(tmp_path))
  assert len(in_flight) == 20  # every step
  assert max(in_flight) == dispatch.DEFAULT_DEPTH


def test_sparse_kd_trains_from_a_sparse_cache_and_as_kd_when_it_keeps_every_class(
    tmp_path, data_dir, finished_run, capsys):
  _, workdir, _ = finished_run
  config = _tiny_config(data_dir)
  config.num_seeds = 1
  config.teacher_dirs.external = ml_collections.ConfigDict(
      {"directory": trainer.export_dir(workdir, "teacher"), "model": "mlp"})
  adam = base.optimizer(name="adam", learning_rate=3e-3, weight_decay=0.0)
  config.stages = base.stages()
  config.stages.kd = base.stage("mlp_tiny", "kd", ("external",), num_steps=10, optimizer=adam)
  for name, top_k in (("all", 10), ("top3", 3)):
    config.stages[name] = base.stage("mlp_tiny", "sparse_kd", ("external",), num_steps=10,
                                     optimizer=adam, loss={"top_k": top_k})
  results = {r["stage"]: r for r in trainer.train_and_evaluate(config, str(tmp_path))}
  assert all(r["teacher_cache"] for r in results.values())
  assert "stage top3: kept the teachers' top 3 of 10 logits per example" in capsys.readouterr().out

  def train_records(stage):
    path = os.path.join(trainer.stage_dir(str(tmp_path), stage), "metrics.jsonl")
    return [r for r in map(json.loads, open(path)) if r["split"] == "train"]

  losses = {name: np.array([r["loss"] for r in train_records(name)]) for name in results}
  # k = K: the top-k targets are the teacher's distribution, and the stage is the KD stage.
  np.testing.assert_allclose(losses["all"], losses["kd"], rtol=1e-4)
  assert abs(results["all"]["last_accuracy"][0] - results["kd"]["last_accuracy"][0]) <= 2 / 360
  assert "loss/sparse_kd" in train_records("top3")[0]
  assert np.abs(losses["top3"] / losses["kd"] - 1).max() > 1e-3


def test_a_later_stage_reads_the_export_its_earlier_export_names(tmp_path, data_dir):
  """The teacher's best export is replaced by its last network halved: the two differ."""
  config = _tiny_config(data_dir)
  config.num_seeds = 1
  config.stages = base.stages()
  config.stages.teacher = _tiny_config(data_dir).stages.teacher
  workdir = str(tmp_path)
  trainer.train_and_evaluate(config, workdir)
  last = trainer.export_dir(workdir, "teacher", 0, "last")
  template = models.get("mlp", 10).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)),
                                        train=False)
  provenance = checkpoints.read_provenance(last)
  variables = checkpoints.load_network(last, template, {"model": "mlp"})
  checkpoints.export_network(trainer.export_dir(workdir, "teacher", 0, "best"),
                             jax.tree.map(lambda x: x / 2, variables),
                             {k: v for k, v in provenance.items() if k != "parameter_hash"})

  config.stages.kd_last = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=5)
  config.stages.kd_best = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=5,
                                     earlier_export="best")
  trainer.train_and_evaluate(config, workdir)
  for kind in ("last", "best"):
    with open(os.path.join(trainer.stage_dir(workdir, f"kd_{kind}"),
                           trainer.STAGE_CONFIG_FILE)) as f:
      read = json.load(f)["inputs"]["teachers"]["teacher"]["parameter_hash"]
    assert read == checkpoints.read_provenance(
        trainer.export_dir(workdir, "teacher", 0, kind))["parameter_hash"]
    assert f"| kd_{kind} | mlp_tiny | kd | teacher ({kind}) | 1 |" in open(
        os.path.join(workdir, "summary.md")).read()
  assert read != provenance["parameter_hash"]


class TestResume:

  @pytest.mark.parametrize("method", ["scratch", "function_matching"])
  def test_interrupted_stage_resumes_to_the_uninterrupted_result(self, tmp_path, data_dir,
                                                                 monkeypatch, method):
    """Function matching with mixup: the resumed run mixes every batch as the reference did."""
    config = _tiny_config(data_dir)
    config.num_seeds = 1
    config.stages = base.stages()
    sgd = base.optimizer(name="sgd", learning_rate=0.05)
    teachers = ()
    if method == "function_matching":
      config.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=10, optimizer=sgd)
      teachers = ("teacher",)
    config.stages.student = base.stage("mlp_tiny", method, teachers, num_steps=30,
                                       optimizer=sgd, mixup=1.0 if teachers else 0.0)
    reference = trainer.train_and_evaluate(config, str(tmp_path / "reference"))

    original = context_lib.RunContext.train_iterator

    class _Interrupting:
      """Stops the run after 25 batches of a stage (the student's; the teacher has 10)."""

      def __init__(self, inner):
        self.inner, self.batches = inner, 0

      def __next__(self):
        self.batches += 1
        if self.batches > 25:
          raise KeyboardInterrupt("simulated interruption")
        return next(self.inner)

      def get_state(self):
        return self.inner.get_state()

      def set_state(self, state):
        self.inner.set_state(state)

    monkeypatch.setattr(context_lib.RunContext, "train_iterator",
                        lambda self, workers: _Interrupting(original(self, workers)))
    saved_costs, save = [], checkpoints.RunCheckpoints.save

    def recording_save(self, step, state, data_state):
      saved_costs.append(json.loads(json.dumps(data_state["progress"]["cost"])))
      save(self, step, state, data_state)

    monkeypatch.setattr(checkpoints.RunCheckpoints, "save", recording_save)
    workdir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
      trainer.train_and_evaluate(config, workdir)
    monkeypatch.setattr(checkpoints.RunCheckpoints, "save", save)
    assert checkpoints.RunCheckpoints(
        os.path.join(trainer.stage_dir(workdir, "student"), "checkpoints")).steps()[-1] == 20
    monkeypatch.setattr(context_lib.RunContext, "train_iterator", original)
    first_run = saved_costs[-1]  # saved with the checkpoint at step 20

    resumed = trainer.train_and_evaluate(config, workdir)
    # The cost sums both runs: the first's, saved with its checkpoint, and the second's.
    cost = resumed[-1]["cost"]
    assert first_run["runs"] == 1 and cost["runs"] == 2
    for key in ("setup_seconds", "train_seconds", "eval_seconds", "checkpoint_seconds"):
      assert cost[key] > first_run[key] > 0
    assert resumed[-1]["last_accuracy"] == reference[-1]["last_accuracy"]
    assert resumed[-1]["curve"] == reference[-1]["curve"]
    same = checkpoints.read_provenance(trainer.export_dir(workdir, "student", 0, "last"))
    ref = checkpoints.read_provenance(
        trainer.export_dir(str(tmp_path / "reference"), "student", 0, "last"))
    assert same["parameter_hash"] == ref["parameter_hash"]  # bit for bit


def test_mixup_draws_one_view_per_step_and_key():
  seen = []

  def record(states, teacher_vars, batch):
    del teacher_vars
    seen.append(np.asarray(batch["image"]))
    return states, {}

  batch = {"image": np.arange(8, dtype=np.float32).reshape(8, 1), "label": np.arange(8)}

  def view(step, key=0):
    states = types.SimpleNamespace(step=jnp.full((2,), step))  # two students, one counter
    mixup.with_mixup(record, jax.random.key(key), concentration=1.0)(states, None, batch)
    return seen[-1]

  np.testing.assert_array_equal(view(5), view(5))
  assert not np.allclose(view(5), batch["image"])
  for other in (view(6), view(5, key=1)):
    assert not np.allclose(other, view(5))


class TestInputWorkers:

  def test_auto_is_in_process_on_cpu_and_in_notebooks_and_half_the_cores_elsewhere(
      self, monkeypatch):
    assert context_lib.input_workers(-1, workers_allowed=True) == 0  # CPU: the step limits
    monkeypatch.setattr(context_lib.jax, "default_backend", lambda: "gpu")
    assert context_lib.input_workers(-1, workers_allowed=True) == min(
        max(len(os.sched_getaffinity(0)) // 2, 1), 8)
    # A notebook: grain's workers need parsed flags.
    assert context_lib.input_workers(-1, workers_allowed=False) == 0

  def test_a_resumed_stage_keeps_its_checkpoints_count(self):
    assert context_lib.input_workers(-1, resumed_with=3, workers_allowed=True) == 3
    assert context_lib.input_workers(0, resumed_with=0, workers_allowed=True) == 0
    with pytest.raises(ValueError, match="dataset.worker_count=0, but the checkpoint to resume "
                                         "was saved with 2 workers"):
      context_lib.input_workers(0, resumed_with=2, workers_allowed=True)
    with pytest.raises(ValueError, match="dataset.worker_count=-1 means 3 grain worker "
                                         "processes here"):  # a binary's run, from a notebook
      context_lib.input_workers(-1, resumed_with=3, workers_allowed=False)

  def test_workers_where_they_are_not_allowed_are_refused(self):
    with pytest.raises(ValueError, match="dataset.worker_count=2 means 2 grain worker"):
      context_lib.input_workers(2, workers_allowed=False)


class TestStageRecord:

  def test_a_record_of_another_format_is_refused_and_left_alone(self, tmp_path, data_dir):
    record = workdir_lib.stage_record(_tiny_config(data_dir), "dkp")
    older = {k: v for k, v in record.items() if k != "format"}
    path = tmp_path / trainer.STAGE_CONFIG_FILE
    path.write_text(json.dumps(older))
    with pytest.raises(ValueError, match=r"holds a stage recorded in format 1, and this version "
                                         r"of kdjax reads format 3\. Use a new --workdir"):
      workdir_lib.claim_stage_dir(str(tmp_path), record)
    assert json.loads(path.read_text()) == older

  def test_inputs_are_compared_unless_the_stage_is_finished_and_they_are_gone(self, tmp_path,
                                                                             data_dir):
    inputs = {"teachers": {"teacher": {"model": "mlp", "parameter_hash": "a1"}}}
    record = workdir_lib.stage_record(_tiny_config(data_dir), "dkp", inputs)
    workdir_lib.claim_stage_dir(str(tmp_path), record)
    workdir_lib.claim_stage_dir(str(tmp_path), workdir_lib.stage_record(
        _tiny_config(data_dir), "dkp"))  # the teachers are gone: not compared
    record["inputs"]["teachers"]["teacher"]["parameter_hash"] = "b2"
    with pytest.raises(ValueError, match="inputs.teachers.teacher.parameter_hash: 'a1' → 'b2'"):
      workdir_lib.claim_stage_dir(str(tmp_path), record)


  def test_only_what_the_stage_reads_is_compared(self, tmp_path, data_dir):
    config = _tiny_config(data_dir)
    workdir_lib.claim_stage_dir(str(tmp_path), workdir_lib.stage_record(config, "assistant"))
    # Fields the stage does not read: another method's loss field, the evaluation batch.
    config.stages.assistant.loss.gamma = 0.9
    config.stages.assistant.loss.beta = 2.0
    config.dataset.eval_batch_size = 7
    workdir_lib.claim_stage_dir(str(tmp_path), workdir_lib.stage_record(config, "assistant"))
    config.stages.assistant.loss.temperature = 2.5
    with pytest.raises(ValueError, match=r"\(stage\.loss\.temperature: 4\.0 → 2\.5\)"):
      workdir_lib.claim_stage_dir(str(tmp_path), workdir_lib.stage_record(config, "assistant"))


class TestMultiProcess:

  def test_two_processes_train_checkpoint_cache_and_reuse_stages(self, tmp_path, data_dir):
    """The binary's multi-host path, as two processes of 2 devices each on loopback."""
    workdir, output = tmp_path / "run", tmp_path / "results.json"
    logs = two_processes.run(MULTIHOST_WORKER, data_dir, str(workdir), str(output),
                             timeout=420)
    results = [json.loads((tmp_path / f"results.json{i}").read_text()) for i in range(2)]
    timings = {}  # each process times itself; the first writes result.json
    for i, outcome in enumerate(results):
      for key in ("first", "again"):
        timings[i, key] = [stage.pop("cost") for stage in outcome[key]]
    assert [cost["runs"] for cost in timings[0, "again"]] == [1, 3]  # kd: resumed, reused
    # A signal that reached process 1 alone stopped both, at the same step, after a save.
    stopped = re.fullmatch(r"SIGTERM received: stopped stage 'kd' at step (\d+) of 100; its "
                           r"checkpoint at step \1 is saved. Run the same command again to "
                           r"resume.", results[1]["stopped"])
    assert stopped, results[1]["stopped"]
    assert results[0]["stopped"] == results[1]["stopped"]
    # Every process computes the same run. The last call reuses the teacher and restores
    # the student's final checkpoint (saved and read by both processes): equal results.
    assert results[0] == results[1]
    assert results[0]["again"] == results[0]["first"]
    teacher, kd = results[0]["first"]
    assert teacher["last_accuracy"][0] > 0.3  # chance is 0.1
    # Cached logits (compute_teacher_logits refuses a cache that misses an example).
    assert kd["teacher_cache"] and len(kd["last_accuracy"]) == 2
    for log in logs:
      resumed = re.findall(r"stage kd: resumed from the checkpoint at step (\d+)\b", log)
      assert resumed == [stopped[1], "100"]
      assert log.count("stage teacher: complete, reusing") == 2
    # The first process alone writes the metrics, rewound on resume: one line per step and
    # split, the train ones every 5 steps and the eval ones every 10.
    records = [(r["step"], r["split"]) for r in metric_writers.read_jsonl(
        os.path.join(trainer.stage_dir(str(workdir), "kd"), trainer.METRICS_FILE))]
    assert sorted(records) == sorted([(s, "train") for s in range(5, 101, 5)] +
                                     [(s, "eval") for s in range(10, 101, 10)])
    checkpoints_dir = os.path.join(trainer.stage_dir(str(workdir), "kd"), "checkpoints")
    assert checkpoints.RunCheckpoints(checkpoints_dir).steps()[-1] == 100
    assert checkpoints.read_provenance(trainer.export_dir(str(workdir), "kd", 1, "last"))


def test_the_teacher_accuracy_threshold_is_not_part_of_a_stage_record():
  config = base.get_config()
  record = workdir_lib.stage_record(config, "kd")
  config.min_teacher_accuracy_over_chance = 0.5  # lowered to resume past a weak teacher
  assert workdir_lib.stage_record(config, "kd") == record


class TestRefusals:

  def test_workdir_with_another_config_is_refused_and_left_alone(self, finished_run):
    config, workdir, _ = finished_run
    changed = ml_collections.ConfigDict(config.to_dict())
    changed.stages = base.stages()
    for name in config.stages:
      changed.stages[name] = ml_collections.ConfigDict(config.stages[name].to_dict())
    changed.stages.dkp.loss.gamma = 0.9
    before = sorted(glob.glob(os.path.join(workdir, "**"), recursive=True))
    with pytest.raises(ValueError, match=r"different config or different teachers "
                                         r"\(stage.loss.gamma: 0.5 → 0.9\)"):
      trainer.train_and_evaluate(changed, workdir)
    assert sorted(glob.glob(os.path.join(workdir, "**"), recursive=True)) == before

  def test_a_retrained_teacher_is_refused_not_reused(self, finished_run, tmp_path):
    """A finished student stage belongs to the teacher it learnt from, not to its name."""
    config, workdir, _ = finished_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    teacher = trainer.export_dir(copy, "teacher", kind="last")  # what the assistant read
    record = checkpoints.read_provenance(teacher)
    provenance = {k: v for k, v in record.items() if k != "parameter_hash"}
    variables = checkpoints.load_network(teacher, None, {})
    retrained = jax.tree.map(lambda x: x + 1.0, variables)
    checkpoints.export_network(teacher, retrained, provenance)
    before = sorted(glob.glob(os.path.join(copy, "stages", "assistant", "**"), recursive=True))
    with pytest.raises(ValueError, match=(
        rf"stages/assistant holds a run with a different config or different teachers "
        rf"\(inputs.teachers.teacher.parameter_hash: '{record['parameter_hash']}' → "
        rf"'{checkpoints.parameter_hash(retrained)}'\)")):
      trainer.train_and_evaluate(config, copy)
    after = sorted(glob.glob(os.path.join(copy, "stages", "assistant", "**"), recursive=True))
    assert after == before

  def test_missing_teacher_export_stops_before_training(self, tmp_path, data_dir):
    config = _tiny_config(data_dir)
    config.teacher_dirs.external = ml_collections.ConfigDict(
        {"directory": str(tmp_path / "nowhere"), "model": "mlp"})
    config.stages = base.stages()
    config.stages.kd = base.stage("mlp_tiny", "kd", ("external",), num_steps=5)
    with pytest.raises(FileNotFoundError, match="no exported network in .*nowhere"):
      trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(os.path.join(trainer.stage_dir(str(tmp_path / "run"), "kd"),
                                           "checkpoints"))

  def test_teacher_of_another_architecture_is_refused(self, tmp_path, data_dir, finished_run):
    _, workdir, _ = finished_run
    config = _tiny_config(data_dir)
    config.teacher_dirs.external = ml_collections.ConfigDict(
        {"directory": trainer.export_dir(workdir, "teacher"), "model": "resnet8"})
    config.stages = base.stages()
    config.stages.kd = base.stage("mlp_tiny", "kd", ("external",), num_steps=5)
    with pytest.raises(ValueError, match="model: found 'mlp', expected 'resnet8'"):
      trainer.train_and_evaluate(config, str(tmp_path / "run"))

  @pytest.mark.parametrize("edit, match", [
      (lambda c: setattr(c.stages.kd, "model", "resnet9"), r"stages.kd.model='resnet9'"),
      (lambda c: setattr(c.stages.kd, "method", "distil"), r"stages.kd.method: unknown method"),
      (lambda c: setattr(c.stages.kd, "teachers", ("ghost",)), r"names 'ghost'"),
      (lambda c: setattr(c.stages.kd, "teachers", ()), "takes exactly one teacher"),
      (lambda c: setattr(c.stages.kd, "num_steps", 0), r"stages.kd.num_steps=0 and"),
      (lambda c: setattr(c.stages.kd, "num_epochs", 1.5), r"stages.kd.num_steps=5 and"),
      (lambda c: (setattr(c, "checkpoint_every_steps", 0),
                  setattr(c, "checkpoint_every_epochs", -1.0)), r"checkpoint_every_epochs=-1"),
      (lambda c: setattr(c.stages.kd.loss, "gamma", 1.5), "gamma"),
      (lambda c: setattr(c.stages.kd.loss, "temperature", -1.0), "temperature"),
      (lambda c: setattr(c.stages.kd.optimizer, "name", "lamb"), "unknown optimizer.name 'lamb'"),
      (lambda c: setattr(c.stages.kd.optimizer, "learning_rate", 0.0), "learning_rate=0.0"),
      (lambda c: setattr(c.dataset, "augmentation", "mixup"), "augmentation='mixup'"),
      (lambda c: setattr(c.dataset, "batch_size", 0), "batch_size=0"),
      (lambda c: setattr(c.dataset, "worker_count", -2), r"worker_count=-2 .* -1 \(auto\)"),
      (lambda c: (setattr(c.stages.kd, "method", "fitnets"), setattr(c.stages.kd, "mixup", 1.0),
                  setattr(c.stages.kd, "loss", base.loss_config("fitnets"))),
       r"stages.kd.mixup=1.0: .* method 'fitnets' reads labels \(in ce\)"),
      (lambda c: setattr(c.stages.kd, "method", "fitnets"),  # DKP's own fields are left over
       r"stages.kd.loss sets form='transform', gamma=0.5, top_k=2, variant='uniform', which "
       r"method 'fitnets' does not read \(its fields: label_smoothing, logit_standardization, "
       r"weight, feature\)"),
      (lambda c: setattr(c.stages.kd, "init_from", "kd"), "init_from='kd'"),
  ])
  def test_invalid_config_values_name_the_field(self, data_dir, edit, match):
    config = _tiny_config(data_dir)
    config.stages = base.stages()
    config.stages.teacher = base.stage("mlp", "scratch", num_steps=5)
    config.stages.kd = base.stage("mlp_tiny", "dkp", ("teacher",), num_steps=5)
    edit(config)
    with pytest.raises(ValueError, match=match):
      trainer.validate(config)


@pytest.mark.parametrize("config_name, edit, num_processes, expected", [
    ("cifar10_kd", "", 1, "kdjax 8"),  # batch 128 of 32 × 32 images: 16 per device
    ("quickstart", "", 1, "kdjax 1"),  # 8 × 8 digits: one device is faster
    ("cifar10_kd", "config.dataset.batch_size = 0", 1, "None 1"),  # validate names the field
    ("cifar10_kd", "", 2, "kdjax 4"),  # two processes: 64 images each
    ("cifar10_kd", "", None, "kdjax 1"),  # a process count found later: one device each
    ("cifar10_kd", "", 3, "None 1"),  # 128 does not split over 3 processes: RunContext says so
])
def test_configure_run_before_jax_starts(config_name, edit, num_processes, expected,
                                                 tmp_path):
  code = f"""
import jax
from configs import {config_name} as c
from kdjax import performance
config = c.get_config()
config.compilation_cache_dir = {str(tmp_path)!r}
{edit}
applied = performance.configure_run(config, {num_processes})
print(applied and applied["source"], len(jax.devices("cpu")))
"""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=120, check=True)
  assert result.stdout.split("\n")[-2] == expected, result.stderr


def _load_config(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


_CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                       if not p.endswith("__init__.py"))


@pytest.mark.parametrize("path", _CONFIG_FILES, ids=os.path.basename)
def test_every_config_loads_and_validates(path):
  config = _load_config(path)
  trainer.validate(config)
  assert "python -m launch.train --config=configs/" in open(path).read()


def test_binary_trains_as_two_processes_with_distributed(tmp_path, data_dir):
  """``--distributed``: one command per process, one workdir, one set of results."""
  workdir = tmp_path / "run"
  logs = two_processes.run_commands(lambda i, port: [
      sys.executable, "-m", "launch.train", "--config=tests/reliability_config.py",
      f"--workdir={workdir}", "--distributed", f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2", f"--process_id={i}", f"--config.dataset.data_dir={data_dir}",
      "--config.compilation_cache_dir=", "--config.stages.teacher.num_steps=10",
      "--config.stages.kd.num_steps=10"], cwd=REPO, timeout=420)
  assert "| kd |" in logs[0] and "| kd |" not in logs[1]  # the first process reports
  with open(os.path.join(trainer.stage_dir(str(workdir), "kd"), trainer.RESULT_FILE)) as f:
    assert len(json.load(f)["last_accuracy"]) == 2  # the config's two seeds


@pytest.mark.parametrize("flag, message", [
    ("--config.stages.kd.loss.temprature=2.0", "temprature"),  # a misspelled config key
    ("--num_processes=2", "--num_processes and --process_id need --distributed"),
], ids=["misspelled config key", "process flags without --distributed"])
def test_binary_refuses_bad_flags_before_writing_anything(tmp_path, flag, message):
  result = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/quickstart.py",
       f"--workdir={tmp_path}", flag],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert message in result.stderr
  assert not os.listdir(tmp_path)

