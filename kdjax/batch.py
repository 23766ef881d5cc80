"""The batch a train or eval step reads: a flat dict of arrays with a leading batch axis.

Keys, as ``kdjax.data`` produces them::

    {"image": float [B, ...], "label": int [B], "index": int [B], "mask": bool [B]}

plus, for training from a teacher-output cache, ``"teacher_logits"``: float ``[B, K]`` for
one teacher or ``[B, n, K]`` for a teacher and its assistants, and from a sparse cache
(``kdjax.teacher_cache.SparseCache``) ``"teacher_temperature"``: float ``[B]``, the
temperature its targets were kept at. Only ``"image"`` is always
required; ``"label"`` only by objectives with supervised terms; ``"mask"`` (False marks
padding) is optional everywhere and honoured by every reduction.
"""

from collections.abc import Mapping

import jax
import numpy as np

IMAGE = "image"
LABEL = "label"
MASK = "mask"
INDEX = "index"
TEACHER_LOGITS = "teacher_logits"
TEACHER_TEMPERATURE = "teacher_temperature"

Batch = Mapping[str, jax.typing.ArrayLike]


def batch_size(batch: Batch) -> int:
  """Returns the common leading dimension of every array in ``batch``.

  Use it to read the size of a batch (padding included) before sharding or reshaping it;
  it also validates the batch's layout.

  Args:
    batch: a flat dict of arrays ``{"image": [B, ...], "label": [B], ...}``; every entry
      needs a leading batch axis ``B``.

  Returns:
    ``B``, a Python ``int``.

  Raises:
    ValueError: if ``batch`` has no ``"image"`` (an empty batch included), holds a scalar,
      or its arrays disagree on the batch size.

  Example:
    >>> batch_size({"image": np.zeros((4, 8, 8, 1)), "label": np.zeros(4, np.int32)})
    4
    >>> batch_size({"image": np.zeros((4, 8, 8, 1)), "label": np.zeros(3, np.int32)})
    Traceback (most recent call last):
    ...
    ValueError: batch entries disagree on the batch size: {'image': 4, 'label': 3}.
  """
  if IMAGE not in batch:
    raise ValueError(f"the batch needs an {IMAGE!r} entry; it has keys {sorted(batch)}.")
  sizes = {}
  for key, value in batch.items():
    shape = np.shape(value)
    if not shape:
      raise ValueError(f"batch[{key!r}] is a scalar; every entry needs a leading batch axis.")
    sizes[key] = shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(f"batch entries disagree on the batch size: {sizes}.")
  return sizes[IMAGE]


def check_divisible(batch: Batch, num_shards: int, what: str) -> int:
  """Returns the batch size after checking it splits evenly into ``num_shards``.

  Use it before reshaping a batch to ``[num_shards, B / num_shards, ...]`` for ``pmap`` or a
  sharded ``jit``, so that a bad batch size fails with a readable message.

  Args:
    batch: the batch, a flat dict of arrays with a leading batch axis ``[B, ...]``.
    num_shards: the number of equal parts (devices) it must split into, a positive int.
    what: what the parts are, for the error message (e.g. ``"8 local devices"``).

  Returns:
    ``B``, a Python ``int`` divisible by ``num_shards``.

  Raises:
    ValueError: naming the batch size and ``what`` when it does not divide, or (from
      ``batch_size``) when the batch itself is malformed.

  Example:
    >>> batch = {"image": np.zeros((6, 8, 8, 1))}
    >>> check_divisible(batch, 3, "3 devices")
    6
    >>> check_divisible(batch, 4, "4 devices")
    Traceback (most recent call last):
    ...
    ValueError: batch size 6 is not divisible by 4 devices; use a multiple of 4.
  """
  size = batch_size(batch)
  if size % num_shards:
    raise ValueError(
        f"batch size {size} is not divisible by {what}; use a multiple of {num_shards}.")
  return size
