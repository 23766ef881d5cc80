"""Teacher-output cache: compute every example's teacher logits once, then train from them.

When augmentation is off, or deterministic per example (the TAKD/DGKD protocols), the
teacher's logits for an example never change, so a pass over the dataset replaces a
teacher forward in every step: a step built with ``teacher=None`` reads
``batch["teacher_logits"]`` and costs a student step alone. Never cache when teacher and
student must see the same random view (function matching, crop/flip/mixup augmentation).

Example:
  >>> from kdjax import models, objective
  >>> from kdjax.state import create_train_state
  >>> from kdjax.step import make_train_step
  >>> teacher, student = models.get("mlp", 10), models.get("mlp_tiny", 10)
  >>> images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
  >>> teacher_vars = teacher.init(jax.random.key(1), images, train=False)
  >>> # Batches carry each example's index, as kdjax.data's batches do.
  >>> batches = [{"image": images[i:i + 8], "index": np.arange(i, i + 8)} for i in (0, 8)]
  >>> cache = compute_teacher_logits(teacher, teacher_vars, batches, num_examples=16)
  >>> cache.shape
  (16, 10)
  >>> obj = objective.Objective((objective.term("kd", temperature=4.0),))
  >>> opt = optax.adam(1e-3)
  >>> state = create_train_state(student, student.init(jax.random.key(2), images, train=False),
  ...                            opt, jax.random.key(3))
  >>> step = jax.jit(make_train_step(student, obj, opt))  # no teacher: reads the cache
  >>> for batch in batches:
  ...   state, metrics = step(state, None, add_teacher_logits(batch, cache))
  >>> int(state.step)
  2
"""

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from kdjax import batch as batch_lib
from kdjax import losses
from kdjax import step as step_lib


def compute_teacher_logits(teacher: step_lib.Teacher,
                           teacher_vars: Any,
                           batches: Iterable[batch_lib.Batch],
                           num_examples: int,
                           *,
                           dtype: jnp.dtype | None = None) -> np.ndarray:
  """Runs the teacher(s) in eval mode over a dataset and stores the logits by example index.

  Use it once before a stage whose teachers see every example the same way each epoch (no
  random augmentation), then feed the batches through :func:`add_teacher_logits` to a step
  built with ``teacher=None``. Iterate the split once, e.g. with
  ``kdjax.data.eval_batches(..., split="train")``, whose padding is masked.

  Args:
    teacher: a teacher (network or Linen module) or a sequence of teacher and assistants,
      as for ``kdjax.step.make_train_step``.
    teacher_vars: its variables (a sequence of them for a sequence of teachers).
    batches: batches with ``"image"`` and ``"index"`` (the example's position in
      ``[0, num_examples)``); padding (``"mask"`` False, or index -1) is skipped. Host
      arrays, or batches placed on a device mesh with ``kdjax.parallel.shard_batch``, which
      splits the teachers' work over the devices; with several processes each passes its
      own examples and every process gets the logits of all of them.
    num_examples: the dataset size N.
    dtype: run the teachers in this dtype (e.g. ``jnp.bfloat16``); logits are float32.

  Returns:
    float32 ``[N, K]`` for one teacher, ``[N, n, K]`` for a sequence of n teachers.

  Raises:
    ValueError: on a ``num_examples`` that is not a positive integer, a batch without
      ``"image"`` or ``"index"`` (or whose arrays disagree on the batch size), an index
      ``>= N``, examples that no batch covered, or teacher variables that do not match the
      teachers.

  Example:
    >>> from kdjax import models
    >>> teacher = models.get("mlp_tiny", 10)
    >>> images = np.zeros((4, 8, 8, 1), np.float32)
    >>> teacher_vars = teacher.init(jax.random.key(0), images, train=False)
    >>> batches = [{"image": images, "index": np.array([0, 1, 2, 3])},
    ...            {"image": images, "index": np.array([4, 5, -1, -1])}]  # -1: padding
    >>> compute_teacher_logits(teacher, teacher_vars, batches, num_examples=6).shape  # [N, K]
    (6, 10)
    >>> compute_teacher_logits(teacher, teacher_vars, batches[:1], num_examples=6)
    Traceback (most recent call last):
    ...
    ValueError: 2 of 6 examples never appeared in the batches (first missing index: 4).
  """
  if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
    raise ValueError(f"num_examples={num_examples!r} must be a positive integer.")
  forward = jax.jit(step_lib.make_teacher_forward(teacher, dtype=dtype))
  single = not isinstance(teacher, Sequence)
  cache, seen = None, np.zeros(num_examples, bool)
  for batch in batches:
    if batch_lib.INDEX not in batch:
      raise ValueError(f"teacher-output caching needs batch[{batch_lib.INDEX!r}]; the batch "
                       f"has keys {sorted(batch)}.")
    batch_lib.batch_size(batch)
    logits = _host(forward(teacher_vars, {batch_lib.IMAGE: batch[batch_lib.IMAGE]})["logits"])
    logits = logits[0] if single else np.moveaxis(logits, 0, 1)
    index = _host(batch[batch_lib.INDEX])
    real = index >= 0
    if batch_lib.MASK in batch:
      real &= _host(batch[batch_lib.MASK]).astype(bool)
    if (index[real] >= num_examples).any():
      raise ValueError(f"example index {index[real].max()} is outside [0, {num_examples}).")
    if cache is None:
      cache = np.zeros((num_examples, *logits.shape[1:]), np.float32)
    cache[index[real]] = logits[real]
    seen[index[real]] = True
  if not seen.all():
    missing = np.flatnonzero(~seen)
    raise ValueError(f"{missing.size} of {num_examples} examples never appeared in the batches "
                     f"(first missing index: {missing[0]}).")
  return cache


def _host(x: Any) -> np.ndarray:
  """``x`` as a NumPy array; a global array spread over several processes is gathered whole."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


class SparseCache(NamedTuple):
  """A training cache of one teacher's sparse targets, for :func:`add_teacher_logits`.

  What a ``sparse_kd`` stage (``kdjax.methods``) trains from: k/K of the dense cache's
  logits, plus the class indices.

  Its targets hold at one temperature only, the one :func:`sparsify` kept the tail at: the
completed logits give the cached targets back at that temperature and at no other. So a
batch it fills carries that temperature (``"teacher_temperature"``), and a train step
refuses a per-student override of a term's temperature that must equal it
(``Objective.check_cache_overrides``; ``sparse_kd/temperature``).

  Attributes:
    targets: from :func:`sparsify`, ``[N, k]`` and ``[N]`` fields.
    num_classes: K, the width of the logits :func:`complete_logits` rebuilds.
    temperature: the T given to :func:`sparsify`.

  Example:
    >>> cache = np.random.default_rng(0).normal(size=(6, 100)).astype(np.float32)
    >>> sparse = SparseCache(sparsify(cache, k=10, temperature=4.0), num_classes=100,
    ...                      temperature=4.0)
    >>> batch = add_teacher_logits({"index": np.array([4, -1])}, sparse)
    >>> batch["teacher_logits"].shape, batch["teacher_temperature"].tolist()
    ((2, 100), [4.0, 4.0])
  """

  targets: losses.SparseTargets
  num_classes: int
  temperature: float


def add_teacher_logits(batch: batch_lib.Batch,
                       cache: np.ndarray | SparseCache) -> dict[str, Any]:
  """Returns ``batch`` with ``"teacher_logits"`` looked up by ``batch["index"]``.

  Apply it to every batch given to a step built with ``teacher=None``, which then reads the
  cached logits instead of running a teacher. Padding entries (index -1) get row 0; their
  mask keeps them out of every loss. A :class:`SparseCache` gives each example's
  :func:`complete_logits`, and its temperature as ``"teacher_temperature"`` ``[B]``.

  Args:
    batch: a batch with ``"index"`` ``[B]``; its other entries are kept.
    cache: from :func:`compute_teacher_logits`, ``[N, K]`` or ``[N, n, K]``; or a
      :class:`SparseCache` of one teacher.

  Returns:
    A new dict: ``batch`` plus ``"teacher_logits"`` ``[B, K]`` (or ``[B, n, K]``).

  Raises:
    ValueError: on a batch without ``"index"`` or an index beyond the cache.

  Example:
    >>> cache = np.arange(6.0).reshape(3, 2)  # N = 3 examples, K = 2 classes
    >>> batch = {"image": np.zeros((3, 8, 8, 1)), "index": np.array([2, 0, -1])}
    >>> add_teacher_logits(batch, cache)["teacher_logits"].tolist()
    [[4.0, 5.0], [0.0, 1.0], [0.0, 1.0]]
    >>> add_teacher_logits({**batch, "index": np.array([3, 0, 1])}, cache)
    Traceback (most recent call last):
    ...
    ValueError: example index 3 is beyond the cache of 3 examples.
  """
  if batch_lib.INDEX not in batch:
    raise ValueError(f"add_teacher_logits needs batch[{batch_lib.INDEX!r}]; the batch has keys "
                     f"{sorted(batch)}.")
  index = np.asarray(batch[batch_lib.INDEX])
  if isinstance(cache, SparseCache):
    logits = complete_logits(sparse_rows(cache.targets, index), cache.num_classes)
    temperature = np.full(index.shape, cache.temperature, np.float32)
    return {**batch, batch_lib.TEACHER_LOGITS: logits,
            batch_lib.TEACHER_TEMPERATURE: temperature}
  _check_index(index, len(cache))
  return {**batch, batch_lib.TEACHER_LOGITS: cache[np.maximum(index, 0)]}


def _check_index(index: np.ndarray, num_examples: int) -> None:
  """Refuses example indices below -1 (the padding index) or beyond the cache."""
  _check_padding(index)
  if index.size and index.max() >= num_examples:
    raise ValueError(f"example index {index.max()} is beyond the cache of {num_examples} "
                     f"examples.")


def _check_padding(index: np.ndarray) -> None:
  """Refuses example indices below -1 (the padding index)."""
  if index.size and index.min() < -1:
    raise ValueError(f"example index {index.min()} is negative; only padding, index -1, is.")


def sparsify(cache: np.ndarray, k: int, temperature: float) -> losses.SparseTargets:
  r"""Turns a dense cache of teacher logits into sparse targets: top-k plus a tail bucket.

  Keeps, per example, the teacher's k most probable classes and one logit for the remaining
  ones at temperature T (``kdjax.losses.sparse_targets``), in the smallest dtypes that hold
  them: class indices as uint8 when K <= 256 (uint16 up to 65536), logits as float32. A
  CIFAR-100 cache at k = 10 takes 10 bytes of indices and 44 of logits per example against
  400 for the dense logits: 13.5 %. Train from it with ``kdjax.losses.sparse_kd`` at the
  same T (a batch's rows from :func:`sparse_rows`), or through a step's sparse KD term
  (``kdjax.methods.SPARSE_KD_TERM``, :class:`SparseCache`); at k = K it gives dense KD to rounding.

  .. math::
     (S_i,\ t_{i,S_i},\ u_i),\qquad
     u_i = T \log \tfrac{1}{K-k} \textstyle\sum_{j \notin S_i} e^{t_{ij}/T}

  Args:
    cache: teacher logits ``[N, K]`` from :func:`compute_teacher_logits` (one teacher).
    k: classes kept per example, an integer in ``[1, K]``.
    temperature: T > 0; the sparse cache's tail logit holds for this temperature only.

  Returns:
    ``kdjax.losses.SparseTargets`` of NumPy arrays: ``indices`` ``[N, k]`` (uint8, uint16
    or int32), ``logits`` ``[N, k]`` and ``tail_logit`` ``[N]`` (float32).

  Raises:
    ValueError: on a cache that is not ``[N, K]``, ``k`` outside ``[1, K]`` or
      ``temperature <= 0``.

  Example:
    >>> cache = np.random.default_rng(0).normal(size=(6, 100)).astype(np.float32)
    >>> sparse = sparsify(cache, k=10, temperature=4.0)
    >>> sparse.indices.shape, sparse.indices.dtype, sparse.tail_logit.shape
    ((6, 10), dtype('uint8'), (6,))
    >>> sum(x.nbytes for x in sparse) / cache.nbytes
    0.135
    >>> sparsify(cache, k=101, temperature=4.0)
    Traceback (most recent call last):
    ...
    ValueError: k=101 must be an integer in [1, K] = [1, 100].
  """
  cache = np.asarray(cache)
  if cache.ndim != 2:
    raise ValueError(f"sparsify takes one teacher's logits [N, K]; got shape {cache.shape}.")
  num_classes = cache.shape[-1]
  losses.sparse.check_k(k, num_classes)
  targets = jax.jit(losses.sparse_targets, static_argnums=1)(
      jnp.asarray(cache, jnp.float32), k, temperature)
  index_dtype = next(d for d in (np.uint8, np.uint16, np.int32)
                     if num_classes - 1 <= np.iinfo(d).max)
  return losses.SparseTargets(np.asarray(targets.indices).astype(index_dtype),
                              np.asarray(targets.logits, np.float32),
                              np.asarray(targets.tail_logit, np.float32))


def sparse_rows(sparse: losses.SparseTargets, index: np.ndarray) -> losses.SparseTargets:
  """The sparse targets of the examples ``index`` (padding, index -1, gets row 0).

  Use it on each batch's ``"index"`` to feed ``kdjax.losses.sparse_kd``.

  Args:
    sparse: from :func:`sparsify`, ``[N, k]`` fields.
    index: example indices ``[B]``.

  Returns:
    ``SparseTargets`` with ``[B, k]`` and ``[B]`` fields.

  Raises:
    ValueError: on an index beyond the cache.

  Example:
    >>> sparse = sparsify(np.eye(3, dtype=np.float32) * 5, k=1, temperature=1.0)
    >>> sparse_rows(sparse, np.array([2, -1])).indices.tolist()
    [[2], [0]]
  """
  index = np.asarray(index)
  _check_index(index, len(sparse.indices))
  return losses.SparseTargets(*(field[np.maximum(index, 0)] for field in sparse))


def complete_logits(targets: losses.SparseTargets, num_classes: int) -> np.ndarray:
  r"""Dense logits carrying sparse targets: the kept classes' logits, the others' tail logit.

  .. math::
     \hat t_j = t_j \ (j \in S),\qquad \hat t_i = u \ (i \notin S)

  At the targets' temperature T, :math:`\mathrm{softmax}(\hat t/T)` gives the kept classes
  the teacher's probabilities and the other K − k classes the teacher's tail mass, spread
  evenly (:math:`u` is their soft mean, see ``kdjax.losses.SparseTargets``). So
  ``kdjax.losses.sparse_targets(complete_logits(targets, K), k, T)`` gives ``targets`` back
  (to rounding), and sparse KD's loss term (``kdjax.methods.SPARSE_KD_TERM``), which
  sparsifies the teacher logits it is given, trains from a sparse cache through the ordinary
  ``"teacher_logits"`` batch entry. At k = K these are the teacher's logits. Other losses
  would read the even tail as the teacher's: e.g. the step's ``kl_teacher_student`` metric
  does.

  Args:
    targets: ``[..., k]`` and ``[...]`` fields (e.g. :func:`sparse_rows`), class indices in
      ``[0, K)``.
    num_classes: K >= k.

  Returns:
    float32 logits ``[..., K]``.

  Raises:
    ValueError: on ``num_classes`` smaller than k.

  Example:
    >>> targets = sparsify(np.array([[3.0, 1.0, 2.0, 0.0]], np.float32), k=2, temperature=1.0)
    >>> [round(float(x), 4) for x in complete_logits(targets, 4)[0]]  # u = log((e¹ + e⁰) / 2)
    [3.0, 0.6201, 2.0, 0.6201]
  """
  indices = np.asarray(targets.indices)
  if num_classes < indices.shape[-1]:
    raise ValueError(f"num_classes={num_classes} is smaller than the k={indices.shape[-1]} "
                     f"classes the targets keep.")
  tail = np.asarray(targets.tail_logit, np.float32)[..., None]
  logits = np.repeat(tail, num_classes, axis=-1)
  np.put_along_axis(logits, indices.astype(np.intp), np.asarray(targets.logits, np.float32),
                    axis=-1)
  return logits
