"""Tests for kdjax.data on the embedded digits dataset: offline, prepared once per session."""

import concurrent.futures
import inspect
import itertools
import logging
import os
import re

from absl import flags
from absl import logging as absl_logging
import grain
import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds
from tensorflow_datasets.core.features import image_feature

from kdjax import config, data
from kdjax.data import digits

NUM_TRAIN = 1437
NUM_TEST = 360


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  path = tmp_path_factory.mktemp("tensorflow_datasets")
  digits.prepare(path)
  return str(path)


def _source(data_dir: str, split: str) -> list[dict]:
  source = tfds.data_source(digits.NAME, split=split, data_dir=data_dir, download=False)
  return [source[i] for i in range(len(source))]


def _train(data_dir: str, **kwargs) -> grain.DatasetIterator:
  kwargs = {"batch_size": 32, "seed": 0, "augmentation": "crop_flip", "process_index": 0,
            "process_count": 1, **kwargs}
  return data.train_iterator("digits", data_dir=data_dir, **kwargs)


def _take(iterator, n: int) -> list[dict[str, np.ndarray]]:
  return list(itertools.islice(iterator, n))


def _assert_batches_equal(expected: list[dict], actual: list[dict]) -> None:
  assert len(expected) == len(actual)
  for want, got in zip(expected, actual, strict=True):
    assert want.keys() == got.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], got[key], err_msg=key)


# Preparation.


def test_prepare_offline_gives_stratified_splits_of_uint8_images(data_dir):
  train, test = _source(data_dir, "train"), _source(data_dir, "test")
  assert (len(train), len(test)) == (NUM_TRAIN, NUM_TEST)
  class_sizes = np.bincount(sk_datasets.load_digits().target)
  for split in (train, test):
    counts = np.bincount([example["label"] for example in split], minlength=10)
    assert len(counts) == 10
    # Stratified: every class in proportion to its size, to within one example.
    np.testing.assert_allclose(counts, class_sizes * len(split) / class_sizes.sum(), atol=1)
  images = np.stack([example["image"] for example in train + test])
  assert images.shape == (NUM_TRAIN + NUM_TEST, 8, 8, 1) and images.dtype == np.uint8
  assert images.min() == 0 and images.max() == 255
  ids = [example["id"] for example in train + test]
  assert len(set(ids)) == NUM_TRAIN + NUM_TEST


def test_prepare_is_idempotent(data_dir, monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("prepared twice")

  monkeypatch.setattr(digits.KdjaxDigits, "download_and_prepare", fail)
  builder = digits.prepare(data_dir)
  assert builder.info.splits["train"].num_examples == NUM_TRAIN


def test_concurrent_prepares_build_once(tmp_path):
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    builders = list(pool.map(digits.prepare, [tmp_path, tmp_path]))
  assert all(b.info.splits["test"].num_examples == NUM_TEST for b in builders)
  assert [p.name for p in (tmp_path / digits.NAME).iterdir()] == ["1.0.0"]


def test_dataset_info_and_normalization_constants(data_dir):
  info = data.dataset_info("digits", data_dir=data_dir)
  assert info == data.dataset_info(digits.NAME, data_dir=data_dir)
  assert (info.name, info.num_classes, info.image_shape) == ("digits", 10, (8, 8, 1))
  assert (info.num_train, info.num_test) == (NUM_TRAIN, NUM_TEST)
  assert data.num_train("digits") == data.num_train(digits.NAME) == NUM_TRAIN
  pixels = np.stack([example["image"] for example in _source(data_dir, "train")]) / 255
  np.testing.assert_allclose(info.mean, [pixels.mean()], atol=1e-3)
  np.testing.assert_allclose(info.std, [pixels.std()], atol=1e-3)
  assert set(data.supported_datasets()) == {"digits", "cifar10", "cifar100"}


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  monkeypatch.delenv(data.DATA_DIR_ENV)
  assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


# Training batches.


def test_train_batches_have_fixed_shapes_and_normalized_images(data_dir):
  batches = _take(_train(data_dir, batch_size=100, augmentation="none"), 14)
  for batch in batches:
    assert batch["image"].shape == (100, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (100,) and batch["label"].dtype == np.int32
    assert batch["index"].shape == (100,) and np.issubdtype(batch["index"].dtype, np.integer)
    assert 0 <= batch["label"].min() and batch["label"].max() < 10
    assert 0 <= batch["index"].min() and batch["index"].max() < NUM_TRAIN
  images = np.concatenate([batch["image"] for batch in batches])
  assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05


def test_labels_and_images_follow_the_index(data_dir):
  train = _source(data_dir, "train")
  info = data.dataset_info("digits", data_dir=data_dir)
  batch = next(_train(data_dir, augmentation="none"))
  for index, label, image in zip(batch["index"], batch["label"], batch["image"], strict=True):
    assert label == train[index]["label"]
    expected = (train[index]["image"] / 255 - info.mean[0]) / info.std[0]
    np.testing.assert_allclose(image, expected, atol=1e-5)


@pytest.mark.parametrize("augmentation", data.AUGMENTATIONS)
def test_same_seed_same_batches_other_seed_other_batches(data_dir, augmentation):
  first = _take(_train(data_dir, seed=7, augmentation=augmentation), 5)
  _assert_batches_equal(first, _take(_train(data_dir, seed=7, augmentation=augmentation), 5))
  other = _take(_train(data_dir, seed=8, augmentation=augmentation), 5)
  assert not np.array_equal(first[0]["index"], other[0]["index"])


def test_each_epoch_is_a_new_permutation_of_the_split(data_dir):
  batch_size = NUM_TRAIN // 3  # 479: three batches per epoch, nothing dropped.
  batches = _take(_train(data_dir, batch_size=batch_size, augmentation="none"), 6)
  epochs = [np.concatenate([b["index"] for b in batches[i:i + 3]]) for i in (0, 3)]
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_TRAIN))
  assert not np.array_equal(epochs[0], epochs[1])


def test_epochs_drop_their_remainder_instead_of_spilling(data_dir):
  batch_size = 700  # Two batches per epoch; 37 examples of each epoch are dropped.
  batches = _take(_train(data_dir, batch_size=batch_size, augmentation="none"), 4)
  for i in (0, 2):
    epoch = np.concatenate([batches[i]["index"], batches[i + 1]["index"]])
    assert len(np.unique(epoch)) == 2 * batch_size


@pytest.mark.parametrize("augmentation", ["flip", "crop_flip"])
def test_augmented_images_are_flips_and_shifts_of_the_originals(data_dir, augmentation):
  train = _source(data_dir, "train")
  info = data.dataset_info("digits", data_dir=data_dir)
  pad = 1 if augmentation == "crop_flip" else 0
  batch = next(_train(data_dir, batch_size=200, augmentation=augmentation))
  flipped = 0
  for index, image in zip(batch["index"], batch["image"], strict=True):
    padded = np.pad(train[index]["image"], ((pad, pad), (pad, pad), (0, 0)))
    candidates = {(top, left, flip): padded[top:top + 8, left:left + 8][:, ::-1 if flip else 1]
                  for top in range(2 * pad + 1) for left in range(2 * pad + 1)
                  for flip in (False, True)}
    pixels = np.round((image * info.std[0] + info.mean[0]) * 255)
    matches = [key for key, c in candidates.items() if np.array_equal(c, pixels)]
    assert matches, index
    flipped += all(flip for _, _, flip in matches)
  assert 60 < flipped < 140  # About half of 200, allowing for symmetric digits.


@pytest.mark.parametrize("consumed", [5, 40])  # Mid-epoch; and across the epoch boundary.
def test_restored_iterator_continues_with_identical_batches(data_dir, consumed):
  original = _train(data_dir, seed=3, augmentation="crop_flip")
  _take(original, consumed)
  state = original.get_state()
  expected = _take(original, 10)
  restored = _train(data_dir, seed=3, augmentation="crop_flip")
  restored.set_state(state)
  _assert_batches_equal(expected, _take(restored, 10))


def test_worker_processes_give_the_same_batches_and_restore(data_dir):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags.
  expected = _take(_train(data_dir, seed=5), 12)
  workers = _train(data_dir, seed=5, worker_count=2)
  _assert_batches_equal(expected[:4], _take(workers, 4))
  state = workers.get_state()
  workers.close()
  restored = _train(data_dir, seed=5, worker_count=2)
  restored.set_state(state)
  _assert_batches_equal(expected[4:], _take(restored, 8))
  restored.close()


def test_processes_get_disjoint_equal_shards_of_each_epoch(data_dir):
  per_process = NUM_TRAIN // 2  # 718: one example of each epoch is left out.
  shards = [
      _take(_train(data_dir, batch_size=per_process // 2, augmentation="none",
                   process_index=i, process_count=2), 4) for i in range(2)
  ]
  for epoch in (0, 1):
    indices = [np.concatenate([b["index"] for b in shard[2 * epoch:2 * epoch + 2]])
               for shard in shards]
    assert all(len(np.unique(i)) == per_process for i in indices)
    assert not set(indices[0]) & set(indices[1])
    assert len(set(indices[0]) | set(indices[1])) == 2 * per_process


# Evaluation batches.


def test_eval_covers_every_example_once_with_a_masked_padded_tail(data_dir):
  test = _source(data_dir, "test")
  batches = list(data.eval_batches("digits", data_dir=data_dir, batch_size=64,
                                   process_index=0, process_count=1))
  assert len(batches) == 6
  for batch in batches:
    assert batch["image"].shape == (64, 8, 8, 1) and batch["mask"].shape == (64,)
    assert batch["mask"].dtype == np.bool_
  assert batches[-1]["mask"].sum() == NUM_TEST - 5 * 64
  mask = np.concatenate([b["mask"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  label = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(np.sort(index[mask]), np.arange(NUM_TEST))
  assert (index[~mask] == -1).all()
  np.testing.assert_array_equal(label[mask], [test[i]["label"] for i in index[mask]])


def test_eval_batches_are_reiterable(data_dir):
  batches = data.eval_batches("digits", data_dir=data_dir, batch_size=100, process_index=0,
                              process_count=1)
  _assert_batches_equal(list(batches), list(batches))


@pytest.mark.parametrize("process_count", [2, 7])
def test_eval_shards_cover_the_split_in_equal_batch_counts(data_dir, process_count):
  shards = [list(data.eval_batches("digits", data_dir=data_dir, batch_size=16,
                                   process_index=i, process_count=process_count))
            for i in range(process_count)]
  assert len({len(shard) for shard in shards}) == 1
  index = np.concatenate([b["index"][b["mask"]] for shard in shards for b in shard])
  np.testing.assert_array_equal(np.sort(index), np.arange(NUM_TEST))


# Errors.


def test_unknown_dataset_lists_the_supported_ones(data_dir):
  with pytest.raises(ValueError, match="imagenet.*digits, cifar10, cifar100"):
    data.train_iterator("imagenet", data_dir=data_dir, batch_size=8, seed=0,
                        augmentation="none")


def test_missing_dataset_names_the_data_dir_and_how_to_prepare_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*download=True.*tfds build"):
    data.eval_batches("cifar10", data_dir=tmp_path, batch_size=8)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"augmentation": "mixup"}, "augmentation='mixup'"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": -3}, "batch_size=-3"),
    ({"batch_size": NUM_TRAIN + 1}, "batch_size=1438 exceeds"),
    ({"batch_size": 800, "process_count": 2}, "batch_size=800 exceeds"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 2**32}, "seed=4294967296"),
    ({"process_index": 2, "process_count": 2}, "process_index=2"),
    ({"process_count": 0}, "process_count=0"),
    ({"split": "train[:0]"}, "empty"),
    ({"split": "validation"}, "split='validation'"),
    ({"worker_count": -1}, "worker_count=-1"),
])
def test_bad_training_arguments_raise(data_dir, kwargs, message):
  with pytest.raises(ValueError, match=message):
    _train(data_dir, **kwargs)


def test_bad_eval_batch_size_raises(data_dir):
  with pytest.raises(ValueError, match="batch_size=0"):
    data.eval_batches("digits", data_dir=data_dir, batch_size=0)


def test_tfds_notices_about_kdjax_choices_stay_out_of_the_terminal(tmp_path, caplog):
  # Preparing digits and decoding its PNGs with Pillow made TFDS warn about a folder without
  # dataset_info.json and about OpenCV, into the progress bar of every run; others pass.
  with caplog.at_level(logging.WARNING):
    info = data.dataset_info("digits", data_dir=str(tmp_path))
    next(iter(data.eval_batches("digits", data_dir=str(tmp_path), batch_size=info.num_test)))
    # TFDS logs the OpenCV notice once per process: send it as TFDS does, whatever ran before.
    for message in ("OpenCV is not installed. We recommend using OpenCV ...",
                    "a TFDS warning about something else"):
      logging.getLogger("absl").handle(logging.LogRecord(
          "absl", logging.WARNING, image_feature.__file__, 1, message, None, None))
    absl_logging.warning("a warning of the user's own")
  messages = [r.getMessage() for r in caplog.records]
  assert not [m for m in messages if "OpenCV" in m or "dataset_info.json" in m], messages
  assert "a TFDS warning about something else" in messages
  assert "a warning of the user's own" in messages


def test_the_base_config_lists_exactly_the_supported_datasets():
  (comment,) = re.findall(r'^\s*"name": "digits",  # (.*)$', inspect.getsource(config), re.M)
  listed = [name.split()[0] for name in comment.split(";")[0].split("|")]
  assert tuple(listed) == data.supported_datasets(), comment
  assert "any TFDS" not in comment
