"""Tests for kdjax.parallel: pmap and mesh forms equal the single-device step."""

import pathlib

import chex
import jax
import kd_testlib as lib
import numpy as np
import pytest
import two_processes

from kdjax import heads, models, parallel
from kdjax import step as step_lib
from kdjax.objective import Objective, term
from kdjax.state import create_train_state

NUM_STEPS = 3
TEACHER = lib.TinyConvNet(width=6)
WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")


def _objective():
  return Objective((
      term("ce", 0.1), term("kd", 0.9, temperature=4.0),
      term("hint", 10.0, student_feature="regressed", teacher_feature="stage2"),
      term("attention", 100.0, student_features=("stage1", "stage2"))))


def _train(wrap, axis_name=None):
  """Trains with a student (and regressor) whose BatchNorm syncs over ``axis_name``."""
  student = lib.TinyConvNet(width=3, bn_axis_name=axis_name)
  aux = {"regressed": heads.AuxHead(heads.ConvRegressor(12, bn_axis_name=axis_name), "stage2")}
  opt = lib.optimizer()
  batch = lib.make_batch(0, masked=3)
  state = create_train_state(student, lib.init(student, 1), opt, jax.random.key(0),
                             aux_heads=aux, sample_inputs=batch["image"])
  teacher_vars = lib.init(TEACHER, 0)
  train_step = wrap(step_lib.make_train_step(student, _objective(), opt, teacher=TEACHER,
                                             aux_heads=aux, axis_name=axis_name))
  eval_step = wrap(step_lib.make_eval_step(student, teacher=TEACHER, axis_name=axis_name))
  for i in range(NUM_STEPS):
    # Masking 3 of 16 leaves the last devices with fewer real examples than the others.
    state, metrics = train_step(state, teacher_vars, lib.make_batch(i, masked=3))
  eval_metrics = eval_step(state, teacher_vars, lib.make_batch(7, masked=5))
  return state, metrics, eval_metrics


@pytest.fixture(scope="module")
def single_device():
  return _train(lambda step: jax.jit(step))


def _forms():
  mesh = parallel.data_mesh()
  return {
      "pmap": (lambda step: parallel.pmap_step(step, donate_state=False), parallel.PMAP_AXIS),
      "mesh": (lambda step: parallel.mesh_step(step, mesh, donate_state=False), None),
  }


@pytest.mark.parametrize("form", ["pmap", "mesh"])
def test_parallel_forms_equal_the_single_device_step(single_device, form):
  assert jax.device_count() == 8
  wrap, axis_name = _forms()[form]
  state, metrics, eval_metrics = _train(wrap, axis_name)
  expected_state, expected_metrics, expected_eval = single_device
  tolerance = {"rtol": 2e-4, "atol": 2e-6}
  chex.assert_trees_all_close(state.params, expected_state.params, **tolerance)
  chex.assert_trees_all_close(state.model_state, expected_state.model_state, **tolerance)
  chex.assert_trees_all_close(state.aux_params, expected_state.aux_params, **tolerance)
  chex.assert_trees_all_close(state.aux_state, expected_state.aux_state, **tolerance)
  chex.assert_trees_all_close(metrics, expected_metrics, **tolerance)
  chex.assert_trees_all_close(eval_metrics, expected_eval, **tolerance)
  assert int(state.step) == NUM_STEPS


def test_pmap_without_synchronised_batchnorm_averages_running_statistics():
  # A model whose BatchNorm has no axis name normalises per device; the step then keeps the
  # cross-device mean of the per-device running statistics.
  student = lib.TinyConvNet(width=3)
  student_vars = lib.init(student, 1)
  opt = lib.optimizer()
  state = create_train_state(student, student_vars, opt, jax.random.key(0))
  train_step = step_lib.make_train_step(student, lib.hinton_objective(), opt, teacher=TEACHER,
                                        axis_name=parallel.PMAP_AXIS)
  batch = lib.make_batch(0)
  new_state, _ = parallel.pmap_step(train_step)(state, lib.init(TEACHER, 0), batch)

  @jax.jit
  def device_stats(images):
    _, updated = student.apply(student_vars, images, train=True, mutable=["batch_stats"])
    return updated["batch_stats"]

  per_device = [device_stats(images) for images in np.split(batch["image"], 8)]
  expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *per_device)
  chex.assert_trees_all_close(new_state.model_state["batch_stats"], expected, rtol=1e-5,
                              atol=1e-7)


def test_batch_not_divisible_by_devices_raises_before_compiling():
  opt = lib.optimizer()
  student = lib.TinyConvNet(width=3)
  state = create_train_state(student, lib.init(student, 1), opt, jax.random.key(0))
  train_step = step_lib.make_train_step(student, lib.hinton_objective(), opt, teacher=TEACHER)
  batch = lib.make_batch(0, size=12)
  mesh = parallel.data_mesh()
  with pytest.raises(ValueError, match="batch size 12 is not divisible by 8 devices"):
    parallel.pmap_step(train_step)(state, lib.init(TEACHER, 0), batch)
  with pytest.raises(ValueError, match="batch size 12 is not divisible by the mesh's 8 'data'"):
    parallel.mesh_step(train_step, mesh)(state, lib.init(TEACHER, 0), batch)
  with pytest.raises(ValueError, match="batch size 12 is not divisible by this process's 8"):
    parallel.shard_batch(batch, mesh)


def test_two_processes_end_where_one_process_with_eight_devices_ends(tmp_path):
  output = tmp_path / "params.npz"
  two_processes.run(WORKER, str(output))

  expected = lib.distill_on_mesh(num_steps=3)
  got = np.load(output)
  assert sorted(got.files) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_zoo_model_with_bn_axis_name_gives_single_device_numbers_under_pmap():
  """kdjax.models' synchronised BatchNorm: pmap over 8 devices == one device, global batch."""
  student = models.get("resnet8", lib.NUM_CLASSES)
  synced = models.get("resnet8", lib.NUM_CLASSES, bn_axis_name=parallel.PMAP_AXIS)
  opt = lib.optimizer()
  state = create_train_state(student, lib.init(student, 1), opt, jax.random.key(0))
  single = jax.jit(step_lib.make_train_step(student, lib.hinton_objective(), opt,
                                            teacher=TEACHER))
  pmapped = parallel.pmap_step(step_lib.make_train_step(
      synced, lib.hinton_objective(), opt, teacher=TEACHER, axis_name=parallel.PMAP_AXIS),
      donate_state=False)
  expected, state_pmap = state, state
  teacher_vars = lib.init(TEACHER, 0)
  for i in range(2):
    expected, _ = single(expected, teacher_vars, lib.make_batch(i))
    state_pmap, _ = pmapped(state_pmap, teacher_vars, lib.make_batch(i))
  tolerance = {"rtol": 2e-4, "atol": 2e-6}
  chex.assert_trees_all_close(state_pmap.params, expected.params, **tolerance)
  chex.assert_trees_all_close(state_pmap.model_state, expected.model_state, **tolerance)
