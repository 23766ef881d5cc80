"""scikit-learn's handwritten digits as a TFDS dataset, prepared offline on first use.

The embedded default dataset: 1,797 greyscale images of 8×8 pixels (grey levels 0..16) in 10
classes, bundled with scikit-learn, so it needs neither network nor TensorFlow. Offering it
as a TFDS builder lets the one input pipeline (``tfds.data_source`` feeding grain) serve it
and CIFAR alike.

Preparation writes array_record files into ``data_dir`` once; later calls find them and
return at once. Images are yielded as PNG bytes because ``tfds.features.Image`` would call
TensorFlow to encode numpy arrays.
"""

from collections.abc import Iterator
import contextlib
import fcntl
import io
import os

import numpy as np
from PIL import Image
from sklearn import datasets as sk_datasets
from sklearn import model_selection
import tensorflow_datasets as tfds

NAME = "kdjax_digits"
NUM_TEST = 360
SPLIT_SEED = 0
_MAX_GREY_LEVEL = 16


def _to_png(pixels: np.ndarray) -> bytes:
  """Encodes an 8×8 image of grey levels 0..16 as a PNG of uint8 0..255."""
  scaled = np.round(pixels * (255 / _MAX_GREY_LEVEL)).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(scaled, mode="L").save(buffer, format="PNG")
  return buffer.getvalue()


class KdjaxDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits, with a fixed stratified train/test split.

  A TFDS builder named ``kdjax_digits``: 1,437 train and 360 test examples of
  ``{"id": str, "image": uint8 [8, 8, 1], "label": int in [0, 10)}``, the test split drawn
  stratified by class with seed 0. Prefer :func:`prepare` (locked, idempotent) over calling
  ``download_and_prepare`` on an instance; ``kdjax.data`` reads it as ``"digits"``.

  Example:
    >>> from kdjax.data import default_data_dir
    >>> builder = prepare(default_data_dir())  # a KdjaxDigits
    >>> builder.name, builder.info.features["label"].num_classes
    ('kdjax_digits', 10)
    >>> {name: split.num_examples for name, split in builder.info.splits.items()}
    {'train': 1437, 'test': 360}
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 1,437 train / 360 test, stratified, seed 0."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            "Optical recognition of handwritten digits (UCI), as bundled with "
            "scikit-learn: 8x8 images, grey levels 0..16 scaled to 0..255."
        ),
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(8, 8, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
    del dl_manager  # The data ships with scikit-learn.
    digits = sk_datasets.load_digits()
    indices = np.arange(len(digits.target))
    train, test = model_selection.train_test_split(
        indices, test_size=NUM_TEST, stratify=digits.target, random_state=SPLIT_SEED)
    return {
        "train": self._generate_examples(digits.images, digits.target, train),
        "test": self._generate_examples(digits.images, digits.target, test),
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    # ``disable_shuffling`` keeps the records in ``indices`` order, already shuffled and
    # stratified by the split above; the key orders them.
    for position, index in enumerate(indices):
      yield position, {
          "id": f"digits_{index:04d}",
          "image": _to_png(images[index]),
          "label": int(labels[index]),
      }


@contextlib.contextmanager
def _exclusive_lock(path: str) -> Iterator[None]:
  """Holds an exclusive advisory lock on ``path`` so concurrent preparations serialise."""
  with open(path, "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def prepare(data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """Prepares the digits dataset in ``data_dir`` unless it is already there.

  Needs no network (the data ships with scikit-learn). ``kdjax.data``'s functions call it for
  ``"digits"``; call it directly to read the records through TFDS. Idempotent and safe to
  call from several processes at once: an advisory file lock in ``data_dir`` serialises
  preparation, and the second caller finds the prepared copy.

  Args:
    data_dir: the TFDS data directory; created if missing.

  Returns:
    The prepared :class:`KdjaxDigits` builder, ready for ``as_data_source``.

  Raises:
    OSError: if ``data_dir`` cannot be created or written.

  Example:
    >>> from kdjax.data import default_data_dir
    >>> test = prepare(default_data_dir()).as_data_source("test")
    >>> len(test), test[0]["image"].shape, test[0]["image"].dtype
    (360, (8, 8, 1), dtype('uint8'))
  """
  data_dir = os.fspath(data_dir)
  os.makedirs(data_dir, exist_ok=True)
  builder = KdjaxDigits(data_dir=data_dir)
  if builder.is_prepared():
    return builder
  with _exclusive_lock(os.path.join(data_dir, f".{NAME}.lock")):
    builder = KdjaxDigits(data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare(file_format="array_record")
  # A fresh builder reads the split sizes from the files just written.
  return KdjaxDigits(data_dir=data_dir)
