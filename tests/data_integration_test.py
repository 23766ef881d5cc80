"""kdjax.data on the real, prepared CIFAR copies in ``<repo>/../shared/data/tensorflow_datasets``.

Override the location with ``$KDJAX_SHARED_DATA``; the tests skip, saying where they looked,
when CIFAR-10 is not there.
"""

import os
import pathlib

import numpy as np
import pytest

from kdjax import data

pytestmark = pytest.mark.integration

_DEFAULT_SHARED_DATA = (pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
                        / "tensorflow_datasets")


@pytest.fixture(scope="module")
def shared_data_dir() -> str:
  path = pathlib.Path(os.environ.get("KDJAX_SHARED_DATA", _DEFAULT_SHARED_DATA)).resolve()
  if not (path / "cifar10").is_dir():
    pytest.skip(f"No prepared CIFAR-10 under {path} (set KDJAX_SHARED_DATA to a TFDS data_dir "
                "holding cifar10 in array_record format).")
  return str(path)


def test_cifar10_info(shared_data_dir):
  info = data.dataset_info("cifar10", data_dir=shared_data_dir)
  assert (info.num_classes, info.image_shape) == (10, (32, 32, 3))
  assert (info.num_train, info.num_test) == (50_000, 10_000)
  assert data.num_train("cifar10") == info.num_train  # the count read without the files


def test_cifar10_train_batches_are_normalized(shared_data_dir):
  it = data.train_iterator("cifar10", data_dir=shared_data_dir, batch_size=128, seed=0,
                           augmentation="none", process_index=0, process_count=1)
  batches = [next(it) for _ in range(8)]
  assert batches[0]["image"].shape == (128, 32, 32, 3)
  assert batches[0]["image"].dtype == np.float32 and batches[0]["label"].dtype == np.int32
  images = np.concatenate([batch["image"] for batch in batches])
  np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), 0, atol=0.1)
  np.testing.assert_allclose(images.std(axis=(0, 1, 2)), 1, atol=0.1)
  labels = np.concatenate([batch["label"] for batch in batches])
  assert len(np.unique(labels)) == 10


def test_cifar10_crop_flip_restores_mid_epoch(shared_data_dir):
  kwargs = {"data_dir": shared_data_dir, "batch_size": 128, "seed": 1,
            "augmentation": "crop_flip", "process_index": 0, "process_count": 1}
  original = data.train_iterator("cifar10", **kwargs)
  for _ in range(3):
    next(original)
  state = original.get_state()
  expected = [next(original) for _ in range(3)]
  restored = data.train_iterator("cifar10", **kwargs)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in want:
      np.testing.assert_array_equal(want[key], got[key], err_msg=key)


def test_cifar10_eval_covers_the_test_split_once(shared_data_dir):
  batches = list(data.eval_batches("cifar10", data_dir=shared_data_dir, batch_size=768,
                                   process_index=0, process_count=1))
  assert len(batches) == 14 and batches[-1]["image"].shape == (768, 32, 32, 3)
  mask = np.concatenate([batch["mask"] for batch in batches])
  index = np.concatenate([batch["index"] for batch in batches])[mask]
  labels = np.concatenate([batch["label"] for batch in batches])[mask]
  np.testing.assert_array_equal(np.sort(index), np.arange(10_000))
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1_000))


def test_cifar100_train_batch(shared_data_dir):
  if not (pathlib.Path(shared_data_dir) / "cifar100").is_dir():
    pytest.skip(f"No prepared CIFAR-100 under {shared_data_dir}.")
  assert data.dataset_info("cifar100", data_dir=shared_data_dir).num_classes == 100
  batch = next(data.train_iterator("cifar100", data_dir=shared_data_dir, batch_size=256,
                                   seed=0, augmentation="crop_flip", process_index=0,
                                   process_count=1))
  assert batch["image"].shape == (256, 32, 32, 3)
  assert 0 <= batch["label"].min() and batch["label"].max() < 100
