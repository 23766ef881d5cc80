"""Tests of kdjax.checkpoints: resume state, fall back past corruption, checked exports."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import checkpoints


def _state(seed: float):
  return {"step": jnp.int32(seed), "params": {"w": jnp.full((3, 2), seed), "b": jnp.zeros(2)}}


def _assert_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_round_trip_of_state_and_data_state(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"))
  assert ckpts.restore_latest(_state(0)) is None
  ckpts.save(5, _state(5), {"iterator": {"index": 17}})
  ckpts.save(9, _state(9), {"iterator": {"index": 33}})
  step, state, data = checkpoints.RunCheckpoints(str(tmp_path / "ckpt")).restore_latest(_state(0))
  assert step == 9 and data == {"iterator": {"index": 33}}
  _assert_equal(state, _state(9))


def _corrupt_every_file(directory):
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")


def test_corrupted_latest_falls_back_to_previous(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"), max_to_keep=3)
  ckpts.save(1, _state(1), {"i": 1})
  ckpts.save(2, _state(2), {"i": 2})
  _corrupt_every_file(tmp_path / "ckpt" / "2")
  step, state, data = checkpoints.RunCheckpoints(str(tmp_path / "ckpt")).restore_latest(_state(0))
  assert step == 1 and data == {"i": 1}
  _assert_equal(state, _state(1))


def test_all_checkpoints_unreadable_is_an_error(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / "ckpt"))
  ckpts.save(1, _state(1), {"i": 1})
  _corrupt_every_file(tmp_path / "ckpt" / "1")
  with pytest.raises(RuntimeError, match=r"no readable checkpoint among steps \[1\]"):
    checkpoints.RunCheckpoints(str(tmp_path / "ckpt")).restore_latest(_state(0))


def test_export_and_load_with_provenance(tmp_path):
  variables = {"params": {"w": jnp.arange(6.0).reshape(3, 2)}}
  record = {"model": "mlp", "num_classes": 2, "dataset": "digits"}
  checkpoints.export_network(str(tmp_path / "net"), variables, record)
  loaded = checkpoints.load_network(str(tmp_path / "net"), variables, record)
  _assert_equal(loaded, variables)
  provenance = checkpoints.read_provenance(str(tmp_path / "net"))
  assert provenance["parameter_hash"] == checkpoints.parameter_hash(variables)


def test_provenance_that_is_not_json_leaves_the_earlier_export_intact(tmp_path):
  directory = str(tmp_path / "net")
  variables = {"params": {"w": jnp.ones(3)}}
  checkpoints.export_network(directory, variables, {"model": "mlp"})
  with pytest.raises(TypeError, match="not JSON serializable"):
    checkpoints.export_network(directory, {"params": {"w": jnp.zeros(3)}},
                               {"model": "mlp", "when": object()})
  loaded = checkpoints.load_network(directory, variables, {"model": "mlp"})
  np.testing.assert_array_equal(loaded["params"]["w"], np.ones(3))


def test_provenance_mismatch_names_the_field(tmp_path):
  variables = {"params": {"w": jnp.ones((2, 2))}}
  checkpoints.export_network(str(tmp_path / "net"), variables,
                             {"model": "resnet8", "num_classes": 10, "dataset": "cifar10"})
  with pytest.raises(ValueError, match="model: found 'resnet8', expected 'resnet56'"):
    checkpoints.load_network(str(tmp_path / "net"), variables,
                             {"model": "resnet56", "num_classes": 10, "dataset": "cifar10"})


def test_tampered_parameters_fail_the_integrity_check(tmp_path):
  variables = {"params": {"w": jnp.ones((2, 2))}}
  checkpoints.export_network(str(tmp_path / "net"), variables, {"model": "mlp"})
  path = tmp_path / "net" / checkpoints.PROVENANCE_FILE
  record = json.loads(path.read_text())
  record["parameter_hash"] = "0" * 64
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match="integrity check"):
    checkpoints.load_network(str(tmp_path / "net"), variables, {"model": "mlp"})


def test_missing_export_names_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="no exported network in .*nowhere"):
    checkpoints.read_provenance(str(tmp_path / "nowhere"))


def test_parameter_hash_sees_values_and_structure():
  a = {"params": {"w": jnp.ones((2, 2))}}
  h = checkpoints.parameter_hash
  assert h(a) == h({"params": {"w": np.ones((2, 2), np.float32)}})
  assert h(a) != h({"params": {"w": jnp.ones((2, 2)) * 2}})
  assert h(a) != h({"params": {"v": jnp.ones((2, 2))}})
