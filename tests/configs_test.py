"""The CIFAR configs follow their papers' official protocols (ported in ``official_ports``)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import official_ports as ports
import pytest

from configs import (
    base,
    cifar10_dgkd,
    cifar10_dkd,
    cifar10_function_matching,
    cifar10_takd,
    cifar100_mdistiller,
    cifar100_resnet8,
    cifar100_sparse_kd,
    results_cifar10,
    results_cifar10_teacher,
)
from kdjax import methods, optimizers, trainer
from kdjax.trainer import workdir

CIFAR_TRAIN = 50_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _learning_rates_at_epoch_starts(stage, steps_per_epoch, num_epochs):
  schedule = optimizers.learning_rate_schedule(stage.optimizer, stage.num_steps)
  steps = jnp.arange(num_epochs) * steps_per_epoch
  return np.asarray(jax.vmap(schedule)(steps))


@pytest.mark.parametrize("pair", list(cifar100_mdistiller.PAIRS))
def test_cifar100_mdistiller_pairs_follow_mdistillers_recipe(pair):
  config = trainer.validate(cifar100_mdistiller.get_config(pair))
  teacher, student, beta = cifar100_mdistiller.PAIRS[pair]
  assert config.dataset.name == "cifar100" and config.dataset.augmentation == "crop_flip"
  assert config.dataset.batch_size == 64
  steps_per_epoch = CIFAR_TRAIN // 64
  assert config.eval_every_steps == steps_per_epoch  # the best epoch is reported
  assert list(config.stages) == [f"teacher_{teacher}", f"kd_{student}", f"dkd_{student}"]
  for stage in config.stages.values():
    assert stage.num_steps == 240 * steps_per_epoch
    assert stage.optimizer.weight_decay == 5e-4 and stage.optimizer.momentum == 0.9
    rates = _learning_rates_at_epoch_starts(stage, steps_per_epoch, 240)
    expected = [ports.mdistiller_learning_rate(epoch) for epoch in range(1, 241)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
  kd = config.stages[f"kd_{student}"].loss
  assert (kd.temperature, kd.ce_weight, kd.kd_weight, kd.class_reduction) == (4.0, 0.1, 0.9,
                                                                              "sum")
  dkd = config.stages[f"dkd_{student}"]
  assert (dkd.loss.alpha, dkd.loss.beta, dkd.loss.temperature) == (1.0, beta, 4.0)
  recipe = methods.get("dkd").build(dkd.loss, dkd.num_steps, {}, steps_per_epoch)
  ce, dkd_term = recipe.objective.terms
  assert ce.weight == 1.0
  weights = np.asarray(jax.vmap(dkd_term.weight)(jnp.arange(0, 25 * steps_per_epoch, 97)))
  epochs = np.arange(0, 25 * steps_per_epoch, 97) // steps_per_epoch + 1
  np.testing.assert_allclose(weights, np.minimum(epochs / 20, 1.0), rtol=1e-6)


def test_cifar100_mdistiller_betas_are_the_yaml_files():
  # configs/cifar100/dkd/{res56_res20,res32x4_res8x4,wrn40_2_wrn_16_2}.yaml and cfg.py's 8.0.
  assert {pair: beta for pair, (_, _, beta) in cifar100_mdistiller.PAIRS.items()} == {
      "res56_res20": 2.0, "res32x4_res8x4": 8.0, "wrn40_2_wrn_16_2": 6.0}


@pytest.mark.parametrize("lr_schedule", ["intended", "effective"])
@pytest.mark.parametrize("module", [cifar10_takd, cifar100_resnet8])
def test_takd_protocol(module, lr_schedule):
  config = trainer.validate(module.get_config(lr_schedule))
  assert config.dataset.augmentation == "none" and config.dataset.batch_size == 128
  steps_per_epoch = CIFAR_TRAIN // 128
  assert config.eval_every_steps == steps_per_epoch
  for name, stage in config.stages.items():
    assert stage.num_steps == 160 * steps_per_epoch, name
    assert stage.optimizer.weight_decay == 1e-4 and stage.optimizer.momentum == 0.9
    rates = _learning_rates_at_epoch_starts(stage, steps_per_epoch, 160)
    if lr_schedule == "effective":
      expected = [ports.takd_learning_rate(epoch, 160) for epoch in range(160)]
    else:  # what the code means: DGKD's corrected copy of the same function
      expected = [0.1 if e < 80 else 0.01 if e < 120 else 0.001 for e in range(160)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
  takd = config.stages.takd_resnet8.loss
  assert takd.temperature in ports.TAKD_SEARCH_SPACE["T_student"]["_value"]
  low, high, step = ports.TAKD_SEARCH_SPACE["lambda_student"]["_value"]
  assert low <= takd.kd_weight <= high and round(takd.kd_weight / step, 9).is_integer()
  assert takd.ce_weight == pytest.approx(1 - takd.kd_weight)
  assert takd.class_reduction == "mean"  # nn.KLDivLoss()
  assert config.stages.takd_resnet8.teachers == ("ta_resnet20",)
  assert config.stages.ta_resnet20.teachers == ("teacher_resnet110",)


def test_takd_lr_schedules_are_the_two_readings_of_the_official_function():
  rates = [ports.takd_learning_rate(e, 160) for e in (0, 79, 80, 119, 120, 159)]
  np.testing.assert_allclose(rates, [0.01, 0.01, 0.01, 0.01, 0.001, 0.001])
  assert "--epochs 160" in ports.TAKD_TRIAL_COMMAND
  with pytest.raises(ValueError, match="unknown lr_schedule 'fixed'"):
    cifar10_takd.get_config("fixed")


def test_cifar100_resnet8_stages():
  config = cifar100_resnet8.get_config()
  assert config.dataset.name == "cifar100"
  assert [(s.model, s.method) for s in config.stages.values()] == [
      ("resnet110", "scratch"), ("resnet20", "kd"), ("resnet8", "scratch"), ("resnet8", "kd"),
      ("resnet8", "kd"), ("resnet8", "dkp"), ("resnet8", "annealing"), ("resnet8", "scratch")]
  assert config.stages.annealing_2_resnet8.init_from == "annealing_1_resnet8"


def test_cifar100_sparse_kd_keeps_10_classes_and_shares_the_protocols_stages():
  config = trainer.validate(cifar100_sparse_kd.get_config())
  assert config.dataset.name == "cifar100"
  sparse = config.stages.sparse_kd_resnet8
  assert (sparse.model, sparse.method, sparse.loss.top_k) == ("resnet8", "sparse_kd", 10)
  assert methods.get("sparse_kd").build(sparse.loss, sparse.num_steps, {}, 1).sparse_cache == (
      10, 4.0)
  # The teacher and KD stages are those of cifar100_resnet8.py: in its workdir, reused.
  protocol = trainer.validate(cifar100_resnet8.get_config())
  for name in ("teacher_resnet110", "kd_resnet8"):
    assert workdir.stage_record(config, name) == workdir.stage_record(protocol, name)
  assert sparse.optimizer == protocol.stages.kd_resnet8.optimizer


def test_dgkd_config_is_the_official_defaults():
  config = trainer.validate(cifar10_dgkd.get_config())
  official = ports.DGKD_DEFAULTS
  assert config.dataset.augmentation == "none" and not official["crop"]
  assert config.dataset.batch_size == official["batch_size"]
  student = config.stages.dgkd_resnet8
  assert student.num_steps == official["epochs"] * (CIFAR_TRAIN // 128)
  assert student.loss.temperature == official["T"]
  assert student.loss.kd_weight == official["lamb"] and student.loss.ce_weight == 0.0
  assert student.loss.mode == "code" and student.loss.drop_num == official["drop_num"]
  assert student.optimizer.learning_rate == official["learning_rate"]
  assert student.optimizer.weight_decay == official["weight_decay"]


def test_cifar10_dkd_is_mdistillers_recipe_and_evaluates_every_epoch():
  config = trainer.validate(cifar10_dkd.get_config())
  assert config.eval_every_steps == CIFAR_TRAIN // 64
  assert config.checkpoint_every_steps == 5 * (CIFAR_TRAIN // 64)
  assert config.stages.dkd_resnet20.loss.warmup_epochs == 20


# The lengths these configs resolved to when they still gave them in steps (computed by running
# them at the commit before epochs): runs of them must keep their stage records and cadence.
_RESULTS_STEPS = {"scratch": 3900, "kd": 3900, "ta_resnet14": 3900, "takd": 3900,
                  "annealing_1": 3900, "annealing_2": 1950, "continuation": 3900, "dkd": 3900,
                  "kd_std": 3900}
_PINNED = {
    (results_cifar10, "cifar10"): {
        **_RESULTS_STEPS, "dgkd_code": 3900, "dgkd_paper": 3900, "ctkd": 3900, "dist": 3900,
        **{f"dkp_{v}_g{g}": 3900 for v in ("uniform", "mean", "tail") for g in ("025", "050")}},
    (results_cifar10, "cifar100"): {**_RESULTS_STEPS, "dkp_uniform_g000": 3900,
                                    "dkp_uniform_g050": 3900},
    (results_cifar10_teacher, "cifar10"): {"teacher": 7800},
    (results_cifar10_teacher, "cifar100"): {"teacher": 7800},
}


@pytest.mark.parametrize("module, dataset", list(_PINNED), ids=lambda v: getattr(v, "__name__", v))
def test_results_configs_resolve_to_the_steps_their_runs_recorded(module, dataset):
  config = trainer.validate(module.get_config(dataset))
  assert {name: stage.num_steps for name, stage in config.stages.items()} == _PINNED[
      module, dataset]
  assert (config.eval_every_steps, config.checkpoint_every_steps,
          config.log_every_steps) == (390, 390, 100)
  assert trainer.steps_per_epoch(config.dataset) == 390  # DKD's warm-up epoch
  for name in config.stages:  # the record holds the steps, as a stage given in steps did
    record = workdir.stage_record(config, name)["stage"]
    assert "num_epochs" not in record and "warmup_epochs" not in record["optimizer"]


def test_epochs_follow_the_batch_size():
  """A larger batch trains the same epochs in fewer steps, with the same cadence in epochs."""
  config = results_cifar10_teacher.get_config()
  config.dataset.batch_size = 256
  resolved = trainer.validate(config)
  assert resolved.stages.teacher.num_steps == 20 * (CIFAR_TRAIN // 256) == 3900
  assert resolved.eval_every_steps == resolved.checkpoint_every_steps == 195
  warmup = trainer.validate(cifar10_function_matching.get_config()).stages[
      "function_matching_resnet8"].optimizer
  assert warmup.warmup_steps == 5 * (CIFAR_TRAIN // 128)
  assert config.stages.teacher.num_steps == 0  # the config itself is left as it was


@pytest.mark.parametrize("num_epochs, expected_steps", [(1, 44), (2.5, 110), (0.02, 1)])
def test_epochs_resolve_to_rounded_multiples_of_full_batches(num_epochs, expected_steps):
  config = base.get_config()  # digits: 1437 training examples
  config.dataset.batch_size = 32  # 44 full batches; the last 29 examples of an epoch dropped
  config.stages.kd.num_steps, config.stages.kd.num_epochs = 0, num_epochs
  config.eval_every_steps, config.eval_every_epochs = 0, num_epochs
  resolved = trainer.validate(config)
  assert resolved.stages.kd.num_steps == resolved.eval_every_steps == expected_steps
  assert resolved.stages.teacher.num_steps == 1000  # given in steps: unchanged
  assert list(resolved.stages) == ["teacher", "kd"]


def test_results_budget_uses_the_measured_resnet8_step():
  # The budget in the CIFAR tables' notes rests on the step time the committed scratch
  # stage took here: train seconds over steps times seeds.
  path = os.path.join(REPO, "docs", "results", "runs", "cifar10", "stages", "scratch",
                      "result.json")
  with open(path) as f:
    result = json.load(f)
  measured = result["cost"]["train_seconds"] / (result["num_steps"] * len(result["seeds"]))
  assert results_cifar10.RESNET8_STEP_SECONDS == pytest.approx(measured, rel=0.01)
