"""Checkpoints of a training stage (orbax) and exported networks with a provenance record.

Two kinds of files, kept apart on purpose:

* *run checkpoints* (``RunCheckpoints``): everything needed to resume a stage exactly —
  the student train state and the input iterator's state — managed by an orbax
  ``CheckpointManager`` (atomic renames, so a crash mid-save leaves the previous one intact);
* *exports* (``export_network`` / ``load_network``): a trained network's variables with a
  ``provenance.json`` (model name, class count, dataset, a hash of the parameters) that is
  checked whenever the network is loaded as a teacher.

Crash safety: a process killed at any moment leaves either the previous complete checkpoint
or export, or the new one, never a half-written file that passes for complete. Orbax writes
each checkpoint to ``<step>.orbax-checkpoint-tmp`` and renames it when complete; leftovers of
a killed save are removed when the next ``RunCheckpoints`` opens the directory. Old
checkpoints are retired the same way: renamed into ``<directory>/deleted`` (orbax's
``todelete_subdir``), then removed from there, so an interrupted removal leaves nothing a
resumed run has to read past. An export
removes its ``provenance.json`` first and writes it back last, so a half-written export
reads as missing. A checkpoint damaged after it was written (a truncated or corrupted file)
is detected on restore — it fails to load, or its state does not hash to the value saved
with it — and ``restore_latest`` falls back to the newest readable one, moving the
unreadable ones aside, to ``<directory>.unreadable/``, for inspection.
"""

from collections.abc import Callable
import glob
import hashlib
import json
import os
import shutil
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from kdjax import multihost

PROVENANCE_FILE = "provenance.json"
UNREADABLE_SUFFIX = ".unreadable"
DELETED_DIR = "deleted"  # where old checkpoints are renamed before they are removed
_VARIABLES_DIR = "variables"
_ORBAX_TMP = "*.orbax-checkpoint-tmp*"
_STATE_HASH = "state_sha256"
_DATA = "data"


class UnreadableCheckpointsError(RuntimeError):
  """Every checkpoint of a directory failed to restore.

  Raised by :meth:`RunCheckpoints.restore_latest` when the directory holds checkpoints but
  none of them loads and hashes to the value saved with it. Nothing is moved aside then:
  catch it to report the damage; move the directory away to train the stage from scratch.

  Example:
    >>> import shutil, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> checkpoints = RunCheckpoints(directory)
    >>> checkpoints.save(1, {"w": np.zeros(3)}, {})
    >>> shutil.rmtree(os.path.join(directory, "1", "state"))  # damage the only checkpoint
    >>> checkpoints.restore_latest({"w": np.zeros(3)})
    Traceback (most recent call last):
    ...
    kdjax.checkpoints.UnreadableCheckpointsError: no readable checkpoint among steps [1] in ...
  """


class RunCheckpoints:
  """Orbax-managed checkpoints of one stage: the train state and the data iterator's state.

  Use it to make a training stage resumable: save the student's ``TrainState`` with the
  input iterator's ``get_state()`` every so often, and on start-up ``restore_latest`` to
  continue exactly where a killed run stopped. Saves are synchronous and atomic; leftovers
  of a killed save are removed when the directory is opened. For a finished network that
  later stages load as a teacher, use :func:`export_network` instead.

  Args:
    directory: where the checkpoints live (created if missing).
    max_to_keep: how many of the newest checkpoints to keep; at least 2, so that a latest
      checkpoint found damaged on restore always leaves an older one to resume from.

  Raises:
    ValueError: if ``max_to_keep`` is not an integer >= 2.

  Example:
    >>> import tempfile
    >>> checkpoints = RunCheckpoints(tempfile.mkdtemp())  # max_to_keep=2
    >>> state = {"w": np.arange(3.0)}  # e.g. a kdjax TrainState
    >>> for step in (10, 20, 30):
    ...   checkpoints.save(step, state, {"epoch": step // 10})
    >>> checkpoints.steps()
    [20, 30]
    >>> step, restored, data_state = checkpoints.restore_latest(state)
    >>> step, restored["w"].tolist(), data_state
    (30, [0.0, 1.0, 2.0], {'epoch': 3})
    >>> checkpoints.close()
    >>> RunCheckpoints(tempfile.mkdtemp(), max_to_keep=1)
    Traceback (most recent call last):
    ...
    ValueError: max_to_keep=1 must be an integer >= 2: ...
  """

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 2:
      raise ValueError(f"{max_to_keep=} must be an integer >= 2: the previous checkpoint is "
                       f"the fallback when the latest one turns out to be unreadable.")
    self._directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True, todelete_subdir=DELETED_DIR),
        item_names=("state", "data"))
    self._remove_deleted()

  @property
  def unreadable_directory(self) -> str:
    """Where ``restore_latest`` moves checkpoints it could not read: ``<directory>.unreadable``.

    Example:
      >>> import tempfile
      >>> directory = tempfile.mkdtemp()
      >>> RunCheckpoints(directory).unreadable_directory == directory + ".unreadable"
      True
    """
    return self._directory + UNREADABLE_SUFFIX

  def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
    """Saves ``state`` and the JSON-serialisable ``data_state`` at ``step`` (synchronously).

    A hash of ``state`` is saved with it and checked on restore: not every byte of a
    checkpoint is checksummed by the storage format, and a damaged state must not resume.
    When more than ``max_to_keep`` checkpoints exist afterwards, the oldest go.

    Args:
      step: the training step the state is at (the checkpoint's name).
      state: a pytree of arrays, e.g. a ``kdjax.state.TrainState`` (PRNG keys allowed).
      data_state: JSON-serialisable extra state, e.g. the data iterator's ``get_state()``.

    Raises:
      ValueError: (orbax's ``StepAlreadyExistsError``) if a checkpoint of ``step`` exists.

    Example:
      >>> import tempfile
      >>> checkpoints = RunCheckpoints(tempfile.mkdtemp())
      >>> checkpoints.save(5, {"w": np.ones(2)}, {"epoch": 0})
      >>> checkpoints.latest_step()
      5
      >>> checkpoints.save(5, {"w": np.ones(2)}, {"epoch": 0})
      Traceback (most recent call last):
      ...
      orbax.checkpoint.checkpoint_manager.StepAlreadyExistsError: Checkpoint for step 5 ...
    """
    record = {_STATE_HASH: _state_hash(state), _DATA: data_state}
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(record)),
        force=True)
    self._manager.wait_until_finished()
    self._remove_deleted()

  def _remove_deleted(self) -> None:
    """Removes the checkpoints that orbax retired (renamed, atomically) into ``deleted/``."""
    if jax.process_index() == 0:
      shutil.rmtree(os.path.join(self._directory, DELETED_DIR), ignore_errors=True)

  def steps(self) -> list[int]:
    """Returns the steps of the checkpoints in the directory, oldest first.

    Example:
      >>> import tempfile
      >>> checkpoints = RunCheckpoints(tempfile.mkdtemp(), max_to_keep=3)
      >>> for step in (1, 2):
      ...   checkpoints.save(step, {"w": np.zeros(1)}, {})
      >>> checkpoints.steps()
      [1, 2]
    """
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """Returns the newest checkpoint's step, or ``None`` when there is none.

    Example:
      >>> import tempfile
      >>> checkpoints = RunCheckpoints(tempfile.mkdtemp())
      >>> print(checkpoints.latest_step())  # a fresh directory: train from scratch
      None
      >>> checkpoints.save(7, {"w": np.zeros(1)}, {})
      >>> checkpoints.latest_step()
      7
    """
    steps = self.steps()
    return steps[-1] if steps else None

  def restore_latest(
      self, template: Any, *, on_unreadable: Callable[[int, Exception], None] | None = None
  ) -> tuple[int, Any, dict[str, Any]] | None:
    """Restores the newest readable checkpoint, falling back to older ones.

    Call it when a stage starts: ``None`` means start from scratch. A checkpoint is
    unreadable when it fails to load or its state does not hash to the value saved with it
    (a template of other dtypes than the saved state makes every checkpoint fail that check).
    Checkpoints newer than the one restored were unreadable: they are moved to
    ``unreadable_directory`` (never deleted), so that the resumed run can save those steps
    again. When none is readable, nothing is moved.

    Args:
      template: a pytree with the structure, shapes and dtypes of the saved state.
      on_unreadable: called with the step and the error of each unreadable checkpoint, to
        report it (each is also logged as a warning).

    Returns:
      ``(step, state, data_state)``, or ``None`` when the directory holds no checkpoint.

    Raises:
      UnreadableCheckpointsError: if checkpoints exist but none of them can be read.

    Example:
      >>> import shutil, tempfile
      >>> directory = tempfile.mkdtemp()
      >>> checkpoints = RunCheckpoints(directory)
      >>> for step in (1, 2):
      ...   checkpoints.save(step, {"w": np.full(2, step)}, {"epoch": step})
      >>> shutil.rmtree(os.path.join(directory, "2", "state"))  # damage the newest
      >>> step, state, data_state = checkpoints.restore_latest({"w": np.zeros(2, int)})
      >>> step, state["w"].tolist(), data_state, checkpoints.steps()
      (1, [1, 1], {'epoch': 1}, [1])
      >>> os.listdir(checkpoints.unreadable_directory)  # set aside, not deleted
      ['2']
    """
    steps = self.steps()
    unreadable = []
    for step in reversed(steps):
      try:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                    data=ocp.args.JsonRestore()))
        if _state_hash(restored["state"]) != restored["data"][_STATE_HASH]:
          raise ValueError(f"the restored state does not hash to the {_STATE_HASH} saved "
                           f"with it")
      except Exception as error:  # pylint: disable=broad-except
        # Orbax raises many types for truncated or corrupted files; all mean "unreadable".
        logging.warning("checkpoint at step %d is unreadable (%s: %s); trying an older one.",
                        step, type(error).__name__, error)
        if on_unreadable is not None:
          on_unreadable(step, error)
        unreadable.append(step)
        continue
      if unreadable:
        if jax.process_index() == 0:  # with several processes, the first moves them
          for bad in unreadable:
            self._set_aside(bad)
        multihost.sync_processes("kdjax restore_latest: set aside")
        self._manager.reload()
      return step, restored["state"], restored["data"][_DATA]
    if steps:
      raise UnreadableCheckpointsError(
          f"no readable checkpoint among steps {steps} in {self._directory}; move that "
          f"directory away to train the stage from scratch.")
    return None

  def _set_aside(self, step: int) -> None:
    os.makedirs(self.unreadable_directory, exist_ok=True)
    target = os.path.join(self.unreadable_directory, str(step))
    suffix = 0
    while os.path.exists(target):
      suffix += 1
      target = os.path.join(self.unreadable_directory, f"{step}.{suffix}")
    os.replace(os.path.join(self._directory, str(step)), target)

  def close(self) -> None:
    """Releases the underlying orbax ``CheckpointManager``; call it when the stage ends.

    Example:
      >>> import tempfile
      >>> checkpoints = RunCheckpoints(tempfile.mkdtemp())
      >>> checkpoints.save(1, {"w": np.zeros(1)}, {})
      >>> checkpoints.close()
    """
    self._manager.close()


def parameter_hash(variables: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes: identifies a trained network.

  Use it to tell whether two sets of variables are the very same network: the hash ignores
  where the arrays live (host or device) but not a leaf's name, dtype, shape or any bit of
  its values. :func:`export_network` records it and :func:`load_network` checks it.

  Args:
    variables: a pytree of arrays (e.g. Flax variables); leaves go through ``np.asarray``.

  Returns:
    The hex digest, 64 characters.

  Example:
    >>> params = {"dense": {"kernel": np.ones((2, 3), np.float32)}}
    >>> digest = parameter_hash(params)
    >>> len(digest), digest == parameter_hash({"dense": {"kernel": jnp.ones((2, 3))}})
    (64, True)
    >>> digest == parameter_hash({"dense": {"kernel": np.ones((2, 3), np.float64)}})
    False
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    array = np.asarray(leaf)
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def _state_hash(state: Any) -> str:
  """``parameter_hash`` of a train state, whose PRNG keys are hashed through their data."""
  def raw(leaf):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key_data(leaf)
    return leaf
  return parameter_hash(jax.tree.map(raw, state))


def export_network(directory: str, variables: Any, provenance: dict[str, Any]) -> None:
  """Writes a network's variables and its provenance record to ``directory``.

  Use it when a stage has trained a network that later stages load as a teacher (with
  :func:`load_network`); resumable training state goes to :class:`RunCheckpoints`.
  Crash-safe: the provenance record marks a complete export, so it is removed before the
  variables are replaced and written back, atomically, after them. A process killed in
  between leaves an export that reads as missing, never one that loads the wrong values.
  With several JAX processes (multi-host), every process calls it with the same arguments:
  all take part in writing the variables, the first alone writes the record, and none
  returns before it is written.

  Args:
    directory: a new or existing directory; an earlier export there is replaced.
    variables: the Flax variables (``params`` and e.g. ``batch_stats``).
    provenance: JSON-serialisable facts about the network (``model``, ``num_classes``,
      ``dataset``, ...); the parameter hash is added as ``"parameter_hash"``.

  Raises:
    TypeError: if ``provenance`` is not JSON-serialisable (before anything is written: an
      earlier export stays as it was).

  Example:
    >>> import tempfile
    >>> from kdjax import models
    >>> network = models.get("mlp_tiny", 10)
    >>> variables = network.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    >>> directory = tempfile.mkdtemp()
    >>> export_network(directory, variables, {"model": "mlp_tiny", "num_classes": 10})
    >>> sorted(os.listdir(directory))
    ['provenance.json', 'variables']
  """
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  variables = jax.device_get(variables)
  record = {**provenance, "parameter_hash": parameter_hash(variables)}
  text = json.dumps(record, indent=2, sort_keys=True)  # a bad provenance fails everywhere
  final = os.path.join(directory, PROVENANCE_FILE)
  # With several processes (multi-host) all take part in orbax's save; the first alone
  # handles the record, and none returns before it is written.
  primary = jax.process_index() == 0
  if primary:
    if os.path.exists(final):
      os.remove(final)
    for leftover in glob.glob(os.path.join(directory, _ORBAX_TMP)):  # of a killed export
      shutil.rmtree(leftover)
  multihost.sync_processes("kdjax export_network: cleared")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, _VARIABLES_DIR), variables, force=True)
  checkpointer.wait_until_finished()
  if primary:
    tmp = final + ".tmp"
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, final)
  multihost.sync_processes("kdjax export_network: recorded")


def read_provenance(directory: str) -> dict[str, Any]:
  """Reads the provenance record of an export.

  Use it to see what an exported network is (model, class count, dataset, ...) without
  loading its variables; its presence is what marks an export as complete.

  Args:
    directory: an :func:`export_network` directory.

  Returns:
    The provenance given to :func:`export_network`, plus ``"parameter_hash"``.

  Raises:
    FileNotFoundError: naming the directory, if it holds no complete export.
    ValueError: naming the file, if its provenance record is not JSON.

  Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> export_network(directory, {"params": {"w": np.ones(2)}}, {"model": "toy"})
    >>> record = read_provenance(directory)
    >>> record["model"], record["parameter_hash"] == parameter_hash({"params": {"w": np.ones(2)}})
    ('toy', True)
    >>> read_provenance(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: no exported network in '...' (missing provenance.json); ...
  """
  path = os.path.join(os.path.abspath(directory), PROVENANCE_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no exported network in {directory!r} (missing {PROVENANCE_FILE}); train it first, "
        f"or point to an export of a finished stage: WORKDIR/stages/NAME/export/seed0/last "
        f"(or .../best).")
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path} is not a provenance record ({error}); export the network "
                       f"again, or restore the file.") from error


def load_network(directory: str, template: Any, expected: dict[str, Any]) -> Any:
  """Loads exported variables after checking their provenance.

  Use it to load a teacher (or an initialisation) exported by an earlier stage: it refuses a
  network of another model, class count or dataset, and one whose files were damaged or
  swapped since the export.

  Args:
    directory: an ``export_network`` directory.
    template: a pytree with the expected structure, shapes and dtypes of the variables.
    expected: provenance fields that must match (e.g. ``model``, ``num_classes``,
      ``dataset``).

  Returns:
    The variables.

  Raises:
    FileNotFoundError: if ``directory`` holds no export.
    ValueError: if a provenance field differs from ``expected``, or the loaded parameters do
      not hash to the recorded value (a corrupted or substituted file).

  Example:
    >>> import tempfile
    >>> from kdjax import models
    >>> network = models.get("mlp_tiny", 10)
    >>> variables = network.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    >>> directory = tempfile.mkdtemp()
    >>> export_network(directory, variables, {"model": "mlp_tiny", "num_classes": 10})
    >>> loaded = load_network(directory, variables, {"model": "mlp_tiny", "num_classes": 10})
    >>> parameter_hash(loaded) == parameter_hash(variables)
    True
    >>> load_network(directory, variables, {"model": "resnet8"})
    Traceback (most recent call last):
    ...
    ValueError: network in '...' does not match: model: found 'mlp_tiny', expected 'resnet8'.
  """
  record = read_provenance(directory)
  mismatched = {k: (record.get(k), v) for k, v in expected.items() if record.get(k) != v}
  if mismatched:
    details = "; ".join(f"{k}: found {found!r}, expected {want!r}"
                        for k, (found, want) in mismatched.items())
    raise ValueError(f"network in {directory!r} does not match: {details}.")
  variables = ocp.StandardCheckpointer().restore(
      os.path.join(os.path.abspath(directory), _VARIABLES_DIR), template)
  if parameter_hash(variables) != record["parameter_hash"]:
    raise ValueError(
        f"network in {directory!r} fails its integrity check: the parameters do not hash to "
        f"the value in {PROVENANCE_FILE}.")
  return variables
