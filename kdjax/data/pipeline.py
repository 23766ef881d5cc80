"""TensorFlow-free input pipeline: ``tfds`` array_record data sources feeding grain.

Training batches come from :func:`train_iterator`: an endless, per-epoch reshuffled,
per-process sharded, checkpointable grain iterator. Evaluation batches come from
:func:`eval_batches`: every example exactly once, the last batch padded and masked.

Every batch is a dict of numpy arrays::

    {"image": float32 [B, H, W, C] normalized, "label": int32 [B], "index": int64 [B]}

plus ``"mask": bool [B]`` for evaluation. ``index`` is the example's position in its split
(``-1`` for padding), so per-example teacher outputs can be looked up or cached by it.

Nothing here downloads unless asked (``download=True``); the embedded digits dataset is
prepared locally on first use.
"""

from collections.abc import Sequence
import dataclasses
import os
from typing import Any, Literal

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from kdjax.data import digits, notices

Augmentation = Literal["none", "flip", "crop_flip"]
AUGMENTATIONS: tuple[str, ...] = ("none", "flip", "crop_flip")
DATA_DIR_ENV = "KDJAX_DATA_DIR"
notices.install()  # in every process that reads data: input workers import this module
_RANDOM_ACCESS_FORMATS = (tfds.core.FileFormat.ARRAY_RECORD, tfds.core.FileFormat.PARQUET)


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What kdjax knows about a dataset before reading it."""
  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int  # Examples in the train split, as TFDS prepares it.
  mean: tuple[float, ...]  # Per channel, of pixels scaled to [0, 1].
  std: tuple[float, ...]
  crop_padding: int  # Zero padding on each side before the random crop of "crop_flip".


# CIFAR constants are the customary training-set statistics of the original release; digits'
# are those of its train split here.
_REGISTRY: dict[str, _Spec] = {
    "digits": _Spec(digits.NAME, 10, (8, 8, 1), 1437, (0.3054,), (0.3760,), crop_padding=1),
    "cifar10": _Spec("cifar10", 10, (32, 32, 3), 50_000, (0.4914, 0.4822, 0.4465),
                     (0.2470, 0.2435, 0.2616), crop_padding=4),
    "cifar100": _Spec("cifar100", 100, (32, 32, 3), 50_000, (0.5071, 0.4865, 0.4409),
                      (0.2673, 0.2564, 0.2762), crop_padding=4),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a supported dataset, as the pipeline serves it.

  Use it to size a model (``num_classes``, ``image_shape``) and a schedule (``num_train``
  examples per epoch) before reading any batch; get one from :func:`dataset_info`.

  Attributes:
    name: kdjax's name for the dataset (a key of the registry, e.g. ``"cifar10"``).
    tfds_name: the TFDS builder name it is read from.
    num_classes: number of classes.
    image_shape: ``(H, W, C)`` of one image.
    num_train: examples in the ``train`` split.
    num_test: examples in the ``test`` split.
    mean: per-channel mean of pixels scaled to [0, 1], subtracted by the pipeline.
    std: per-channel standard deviation the pipeline divides by.

  Example:
    >>> info = dataset_info("digits")
    >>> info.num_classes, info.image_shape, info.num_train, info.num_test
    (10, (8, 8, 1), 1437, 360)
    >>> steps_per_epoch = info.num_train // 32
    >>> steps_per_epoch
    44
  """
  name: str
  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_test: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


def default_data_dir() -> str:
  """Returns the data directory used when none is given.

  Set ``$KDJAX_DATA_DIR`` to point every kdjax reader at a shared prepared copy.

  Returns:
    ``$KDJAX_DATA_DIR`` as it is when set and not empty, else ``~/tensorflow_datasets``
    (TFDS's own default) with ``~`` expanded.

  Example:
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {DATA_DIR_ENV: "/data/tfds"}):
    ...   default_data_dir()
    '/data/tfds'
    >>> with mock.patch.dict(os.environ, {DATA_DIR_ENV: ""}):
    ...   default_data_dir() == os.path.expanduser("~/tensorflow_datasets")
    True
  """
  return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/tensorflow_datasets")


def supported_datasets() -> tuple[str, ...]:
  """Returns the dataset names :func:`train_iterator` and :func:`eval_batches` accept.

  Use it to validate a config or list choices; :func:`dataset_info` accepts them too.

  Returns:
    kdjax's names; each dataset's TFDS builder name is accepted too.

  Example:
    >>> supported_datasets()
    ('digits', 'cifar10', 'cifar100')
  """
  return tuple(_REGISTRY)


def image_shape(name: str) -> tuple[int, int, int]:
  """Returns ``(H, W, C)`` of a supported dataset's images, without reading any file.

  For decisions taken before anything else starts, such as how many virtual CPU devices
  to split batches over (``kdjax.performance.configure``).

  Args:
    name: ``"digits"``, ``"cifar10"`` or ``"cifar100"`` (or its TFDS builder name).

  Returns:
    ``(H, W, C)`` of one image, as the pipeline serves it.

  Raises:
    ValueError: if ``name`` is unknown.

  Example:
    >>> image_shape("cifar10"), image_shape("kdjax_digits")
    ((32, 32, 3), (8, 8, 1))
  """
  return _resolve(name)[1].image_shape


def num_classes(name: str) -> int:
  """Returns the number of classes K of a supported dataset, without reading any file.

  For checks taken before anything is read, such as a config's class-dependent values
  (``kdjax.trainer.validate``).

  Args:
    name: ``"digits"``, ``"cifar10"`` or ``"cifar100"`` (or its TFDS builder name).

  Returns:
    K, the size of the dataset's label set.

  Raises:
    ValueError: if ``name`` is unknown.

  Example:
    >>> num_classes("cifar100"), num_classes("digits")
    (100, 10)
  """
  return _resolve(name)[1].num_classes


def num_train(name: str) -> int:
  """Returns the number of training examples of a supported dataset, without reading any file.

  For lengths given in epochs, resolved to steps before anything is read
  (``kdjax.trainer.validate``); :func:`dataset_info` reads the same count from the prepared
  copy.

  Args:
    name: ``"digits"``, ``"cifar10"`` or ``"cifar100"`` (or its TFDS builder name).

  Returns:
    The size of the dataset's ``train`` split.

  Raises:
    ValueError: if ``name`` is unknown.

  Example:
    >>> num_train("cifar10"), num_train("digits")
    (50000, 1437)
    >>> num_train("cifar10") // 128  # full batches in an epoch
    390
  """
  return _resolve(name)[1].num_train


def _resolve(name: str) -> tuple[str, _Spec]:
  """Looks ``name`` up by kdjax name or TFDS builder name."""
  for key, spec in _REGISTRY.items():
    if name in (key, spec.tfds_name):
      return key, spec
  raise ValueError(f"Unknown dataset {name=}; supported: {', '.join(_REGISTRY)}.")


def _builder(name: str, data_dir: str | os.PathLike | None,
             download: bool) -> tuple[str, _Spec, tfds.core.DatasetBuilder]:
  """Returns a prepared, random-access TFDS builder for ``name``.

  Raises:
    ValueError: if ``name`` is unknown or the data was prepared in a sequential format.
    FileNotFoundError: if the dataset is not prepared in ``data_dir`` and not downloaded.
  """
  key, spec = _resolve(name)
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  if spec.tfds_name == digits.NAME:
    return key, spec, digits.prepare(data_dir)
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
          f"Dataset {key!r} is not prepared in {data_dir=} (looked for {builder.data_path}). "
          f"Point data_dir at a prepared copy, pass download=True on a machine with network "
          f"access (preparing {spec.tfds_name} needs TensorFlow), or run "
          f"`tfds build {spec.tfds_name} --data_dir={data_dir} --file_format=array_record`.")
    builder.download_and_prepare(file_format="array_record")
  if builder.info.file_format not in _RANDOM_ACCESS_FORMATS:
    raise ValueError(
        f"Dataset {key!r} in {data_dir=} was prepared as {builder.info.file_format.value}; "
        f"random access needs array_record: rebuild it with file_format='array_record'.")
  return key, spec, builder


def dataset_info(name: str, *, data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> DatasetInfo:
  """Returns the :class:`DatasetInfo` of a supported dataset, preparing digits if needed.

  Use it before training to size the model and the schedule; it reads only metadata (CIFAR
  must already be prepared in ``data_dir`` unless ``download`` is on).

  Args:
    name: ``"digits"``, ``"cifar10"`` or ``"cifar100"`` (or its TFDS builder name).
    data_dir: TFDS data directory; :func:`default_data_dir` when ``None``.
    download: whether TFDS may download and prepare a missing dataset (digits is always
      prepared locally, without network).

  Returns:
    The dataset's static facts, split sizes read from the prepared copy.

  Raises:
    ValueError: if ``name`` is unknown, or the dataset was prepared in a format without
      random access (not array_record).
    FileNotFoundError: if the dataset is missing from ``data_dir`` and ``download`` is off.

  Example:
    >>> info = dataset_info("kdjax_digits")  # the TFDS name works too
    >>> info.name, info.num_train + info.num_test
    ('digits', 1797)
    >>> dataset_info("mnist")
    Traceback (most recent call last):
    ...
    ValueError: Unknown dataset name='mnist'; supported: digits, cifar10, cifar100.
  """
  key, spec, builder = _builder(name, data_dir, download)
  splits = builder.info.splits
  return DatasetInfo(name=key, tfds_name=spec.tfds_name, num_classes=spec.num_classes,
                     image_shape=spec.image_shape, num_train=splits["train"].num_examples,
                     num_test=splits["test"].num_examples, mean=spec.mean, std=spec.std)


class _DrawAugmentation(grain.transforms.RandomMap):
  """Draws one example's crop offsets and flip from grain's per-example generator.

  The pipeline shuffles example indices, not examples: this turns an index into the
  parameters :class:`_ReadBatch` applies after a batched read. Both draws are made whatever
  is enabled, so the random stream depends only on the seed and the stream position.
  """

  def __init__(self, *, crop_padding: int, flip: bool):
    self._crop_padding = crop_padding
    self._flip = flip

  def random_map(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    top, left = rng.integers(0, 2 * self._crop_padding + 1, size=2)
    flip = bool(rng.integers(2)) and self._flip
    return {"index": np.int64(index), "top": top, "left": left, "flip": np.bool_(flip)}


class _ReadBatch(grain.transforms.Map):
  """Reads, decodes, crops, flips and normalizes a batch of examples given by index.

  One batched read per batch: array_record reads a batch of records many times faster than
  one record at a time, and grain (0.2.18) reads a batch of a ``MapDataset.source`` one
  element at a time.
  """

  def __init__(self, source: Sequence[dict[str, Any]], *, crop_padding: int,
               mean: Sequence[float], std: Sequence[float]):
    self._source = source
    self._crop_padding = crop_padding
    std = np.asarray(std, np.float32)
    self._scale = 1.0 / (255.0 * std)
    self._offset = np.asarray(mean, np.float32) / std

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns uint8 images [N, H, W, C] and int32 labels [N] of split ``indices``."""
    examples = self._source.__getitems__(indices.tolist())
    return (np.stack([example["image"] for example in examples]),
            np.array([example["label"] for example in examples], np.int32))

  def normalize(self, images: np.ndarray) -> np.ndarray:
    """Returns float32 ``(images / 255 - mean) / std``."""
    return images.astype(np.float32) * self._scale - self._offset

  def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    images, labels = self.read(batch["index"])
    _, height, width, _ = images.shape
    pad = self._crop_padding
    # One gather crops the zero-padded images and flips the chosen ones.
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = batch["top"][:, None] + np.arange(height)
    cols = np.where(batch["flip"][:, None], np.arange(width)[::-1], np.arange(width))
    cols = cols + batch["left"][:, None]
    examples = np.arange(len(images))[:, None, None]
    images = padded[examples, rows[:, :, None], cols[:, None, :]]
    return {"image": self.normalize(images), "label": labels, "index": batch["index"]}


class _ReadEvalBatch(grain.transforms.Map):
  """Reads one process's batch of evaluation examples by position, padding past the end."""

  def __init__(self, reader: _ReadBatch, *, num_examples: int, process_index: int,
               process_count: int, image_shape: tuple[int, int, int]):
    self._reader = reader
    self._num_examples = num_examples
    self._process_index = process_index
    self._process_count = process_count
    self._image_shape = image_shape

  def map(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    index = self._process_index + positions.astype(np.int64) * self._process_count
    mask = index < self._num_examples
    images = np.zeros((len(index), *self._image_shape), np.uint8)
    labels = np.zeros(len(index), np.int32)
    if mask.any():
      images[mask], labels[mask] = self._reader.read(index[mask])
    return {"image": self._reader.normalize(images), "label": labels,
            "index": np.where(mask, index, -1), "mask": mask}


def _split_source(builder: tfds.core.DatasetBuilder, key: str,
                  split: str) -> Sequence[dict[str, Any]]:
  """Opens ``split`` for random access.

  Raises:
    ValueError: if the split does not exist or holds no examples.
  """
  try:
    num_examples = builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(
        f"Dataset {key!r} has no {split=}; splits: {', '.join(builder.info.splits)}.") from e
  if num_examples == 0:
    raise ValueError(f"{split=} of dataset {key!r} is empty.")
  return builder.as_data_source(split=split)


def _check_positive(**values: int) -> None:
  """Raises ValueError naming the first of ``values`` that is not a positive integer."""
  for name, value in values.items():
    if not isinstance(value, int | np.integer) or value <= 0:
      raise ValueError(f"{name}={value!r} must be a positive integer.")


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """Fills in JAX's process index and count and validates them."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  _check_positive(process_count=process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"{process_index=} must be in [0, {process_count=}).")
  return process_index, process_count


def train_iterator(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int,
    seed: int,
    augmentation: Augmentation,
    split: str = "train",
    download: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 1,
    prefetch_batches: int = 4,
    worker_count: int = 0,
) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of this process's training batches.

  Each epoch is a fresh permutation of the whole split (derived from ``seed`` and the
  epoch), cut into ``process_count`` equal strided shards; this process batches its shard,
  dropping the remainder, so an epoch never spills into the next and every process yields
  the same number of batches per epoch. Augmentation draws from a generator seeded by the
  example's position in the stream, so the stream is a pure function of ``seed``:
  ``iterator.get_state()`` after k batches, restored into a new iterator with
  ``set_state``, continues with exactly the batches the original would have produced.

  Args:
    name: ``"digits"``, ``"cifar10"`` or ``"cifar100"`` (or its TFDS builder name).
    data_dir: TFDS data directory; :func:`default_data_dir` when ``None``.
    batch_size: examples per batch on this process.
    seed: shuffle and augmentation seed in [0, 2**32); the same on every process.
    augmentation: ``"none"``, ``"flip"`` (horizontal, p=1/2) or ``"crop_flip"`` (zero-pad
      by 4 pixels for CIFAR, 1 for digits, random crop back to size, then flip).
    split: TFDS split expression, e.g. ``"train"`` or ``"train[:90%]"``.
    download: whether TFDS may download and prepare a missing dataset (digits is always
      prepared locally, without network).
    process_index: this process's shard; ``jax.process_index()`` when ``None``.
    process_count: number of shards; ``jax.process_count()`` when ``None``.
    num_threads: grain threads decoding and augmenting batches; decoding holds the GIL, so
      more than one thread rarely helps.
    prefetch_batches: batches grain keeps ready ahead of the consumer (per worker).
    worker_count: grain worker processes (``mp_prefetch``); 0 decodes in this process.
      Workers need absl flags parsed (an absl app does). The batches are the same for any
      count, but a state restores only into an iterator with the same ``worker_count``.

  Returns:
    A ``grain.DatasetIterator`` over dicts ``{"image": float32 [B, H, W, C],
    "label": int32 [B], "index": int64 [B]}`` with ``get_state``/``set_state``.

  Raises:
    ValueError: for an unknown dataset, split or augmentation, an empty split, a seed
      out of range, non-positive sizes, a negative ``worker_count``, a ``process_index``
      outside ``[0, process_count)``, data prepared without random access, or a shard
      smaller than one batch.
    FileNotFoundError: if the dataset is missing from ``data_dir`` and ``download`` is off.

  Example:
    >>> # The bundled digits are prepared in default_data_dir() on first use.
    >>> it = train_iterator("digits", batch_size=32, seed=0, augmentation="crop_flip")
    >>> batch = next(it)
    >>> batch["image"].shape, batch["label"].shape, batch["index"].shape
    ((32, 8, 8, 1), (32,), (32,))
    >>> checkpoint = it.get_state()
    >>> upcoming = next(it)["index"]
    >>> it.set_state(checkpoint)  # a restored iterator resumes at the same batch
    >>> bool((next(it)["index"] == upcoming).all())
    True
  """
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"Unknown {augmentation=}; choose from {', '.join(AUGMENTATIONS)}.")
  _check_positive(batch_size=batch_size)
  if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
    raise ValueError(f"{seed=} must be an integer in [0, 2**32).")
  if worker_count < 0:
    raise ValueError(f"{worker_count=} must be >= 0.")
  process_index, process_count = _process(process_index, process_count)
  key, spec, builder = _builder(name, data_dir, download)
  source = _split_source(builder, key, split)
  per_process = len(source) // process_count
  if per_process < batch_size:
    raise ValueError(
        f"{batch_size=} exceeds the {per_process} examples per process of {key!r} {split=} "
        f"over {process_count=}.")

  crop_padding = spec.crop_padding if augmentation == "crop_flip" else 0
  reader = _ReadBatch(source, crop_padding=crop_padding, mean=spec.mean, std=spec.std)
  ds = grain.MapDataset.range(len(source)).seed(int(seed)).shuffle()
  # Augmentation parameters are drawn before sharding, so each example's generator is keyed
  # by its global stream position and no two processes augment alike.
  ds = ds.random_map(_DrawAugmentation(crop_padding=crop_padding, flip=augmentation != "none"))
  # Slices are epoch-aware: index k of a later epoch maps into that epoch's permutation.
  ds = ds[:per_process * process_count][process_index::process_count]
  ds = ds.batch(batch_size, drop_remainder=True).map(reader).repeat()
  read_options = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=prefetch_batches)
  iter_ds = ds.to_iter_dataset(read_options)
  if worker_count:
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=prefetch_batches))
  return iter(iter_ds)


def eval_batches(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    batch_size: int,
    download: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 1,
    prefetch_batches: int = 4,
) -> grain.IterDataset:
  """Returns this process's evaluation batches: every example once, padding masked.

  Process ``i`` of ``n`` takes examples ``i, i + n, i + 2n, ...`` in split order and pads
  them to a whole number of batches; all processes yield the same number of batches, so
  collectives over them stay in step. Sum metrics with ``where=batch["mask"]``.

  Args:
    name: ``"digits"``, ``"cifar10"`` or ``"cifar100"`` (or its TFDS builder name).
    data_dir: TFDS data directory; :func:`default_data_dir` when ``None``.
    split: TFDS split expression, e.g. ``"test"`` or ``"train[90%:]"``.
    batch_size: examples per batch on this process.
    download: whether TFDS may download and prepare a missing dataset (digits is always
      prepared locally, without network).
    process_index: this process's shard; ``jax.process_index()`` when ``None``.
    process_count: number of shards; ``jax.process_count()`` when ``None``.
    num_threads: grain threads decoding batches in parallel.
    prefetch_batches: batches grain keeps ready ahead of the consumer.

  Returns:
    A re-iterable ``grain.IterDataset`` of dicts ``{"image": float32 [B, H, W, C],
    "label": int32 [B], "index": int64 [B] (-1 for padding), "mask": bool [B]}``.

  Raises:
    ValueError: for an unknown dataset or split, an empty split, non-positive sizes, a
      ``process_index`` outside ``[0, process_count)``, or data prepared without random
      access.
    FileNotFoundError: if the dataset is missing from ``data_dir`` and ``download`` is off.

  Example:
    >>> batches = list(eval_batches("digits", batch_size=256))
    >>> [int(b["mask"].sum()) for b in batches]  # 360 test images; the last batch is padded
    [256, 104]
  """
  _check_positive(batch_size=batch_size)
  process_index, process_count = _process(process_index, process_count)
  key, spec, builder = _builder(name, data_dir, download)
  source = _split_source(builder, key, split)
  per_process = -(-len(source) // process_count)
  num_batches = -(-per_process // batch_size)
  reader = _ReadBatch(source, crop_padding=0, mean=spec.mean, std=spec.std)
  read_eval = _ReadEvalBatch(reader, num_examples=len(source), process_index=process_index,
                             process_count=process_count, image_shape=spec.image_shape)
  ds = grain.MapDataset.range(num_batches * batch_size).batch(batch_size).map(read_eval)
  read_options = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=prefetch_batches)
  return ds.to_iter_dataset(read_options)
