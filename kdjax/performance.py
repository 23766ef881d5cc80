"""Startup settings that make kdjax fast on CPU hosts, applied once before JAX starts.

Call :func:`configure` at program start, before anything asks JAX for a device (the
trainer's launcher and ``launch/benchmark.py`` do). Once JAX's backends are running it can
no longer change the device count (it still turns on the compilation cache), and it never
overrides a setting the user made (``XLA_FLAGS`` or ``jax.config``); it returns what it
applied so that runs can log it.

**What it sets, and why** (measured with ``launch/benchmark.py`` on a shared 2-core AMD EPYC
VM, jax/jaxlib 0.10.2, batch 128, CIFAR shapes; ratios from one process, see
``docs/benchmarks.md``):

* **Virtual CPU devices** (``jax_num_cpu_devices``, by default 8 for batch 128: 16
  examples per device). The step then runs through ``kdjax.parallel.mesh_step`` with the
  batch split over the devices and the state replicated: the same program, with global
  BatchNorm statistics, so the numbers equal the single-device step's to float rounding.
  On one device at batch 128, XLA:CPU spends about 30–40 % of a ResNet train step in
  ``transpose_copy`` fusions: the weight gradient of every convolution is computed as a
  convolution over a ``[C, H, W, B]`` copy of the activations (batch innermost), and XLA
  recomputes the BatchNorm/ReLU of each activation *inside* that transpose, reading 8 MB
  tensors with a large stride. With 16 examples per device those copies fit in cache: the
  transpose time falls from 58 to 24 ms per ResNet-8 step (CPU time, all devices), and the
  student step from 1.0 to 0.61–0.67 of the single-device time (teacher forward 0.66–0.90,
  fused KD step 0.76). 2 devices gave 0.85, 4 gave 0.76, 16 gave 0.80–0.84, 32 gave
  1.14–1.23: 8 (16 examples each) is the optimum, so the default is the largest power of
  two ≤ ``max_devices`` that divides every batch size and leaves each device at least 16
  images' worth of 32 × 32 pixels. Small images stay on one device: 8 × 8 digits at batch
  64 ran a ResNet-8 step 1.55× slower on four devices than on one.
* **XLA:CPU's memory-optimised scheduler** (``--xla_cpu_scheduler_type=
  CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`` in ``$XLA_FLAGS``) when batches are split: the
  fused resnet56 → resnet8 KD step took 0.89–0.94 of its time with the default scheduler
  (same process, 8 devices), which brings it to the teacher forward plus the student step
  (1.00 instead of 1.05–1.11 in those runs). Not set on one device, where it slowed the
  student step (1.075).
* **Patience at collectives** when batches are split
  (``--xla_cpu_collective_call_{warn_stuck,terminate}_timeout_seconds``, 600 and 1200):
  XLA:CPU's defaults (20 and 40 s) abort the process when one virtual device's thread is
  late at a cross-device reduction, which a loaded host causes (a run at low priority
  beside a test suite was killed at its first step); kdjax waits 20 minutes instead. Not
  longer: on a host at load 20, a resnet20 run's step once never finished, one device never
  joining the reduction while every XLA thread waited (no CPU used for 12 minutes), a
  deadlock rather than lateness. XLA then ends the process with its "may be stuck" message,
  and rerunning the same command resumes from the last checkpoint. That fits what XLA:CPU
  does when a loop dispatches 32 steps ahead of a batch split over 8 devices on a pool of
  fewer than 16 threads (``kdjax.dispatch`` says why; thread dumps of later hangs showed
  it): host loops keep a few steps in flight (``kdjax.dispatch.DispatchWindow``, which the
  trainer uses; use it in a loop of your own).

What was measured and is **not** set (it did not help on that machine): XLA:CPU flags
``--xla_cpu_use_onednn``, ``--xla_cpu_experimental_onednn_custom_call``,
``--xla_cpu_use_xnnpack=false``, ``--xla_cpu_experimental_xnn_graph_fusion_mode=…GREEDY``,
``--xla_cpu_enable_fast_math``, ``--xla_cpu_use_fusion_emitters=false`` (all within ±7 %
of the default for a ResNet-8 train step); YNNPACK convolutions off
(``--xla_cpu_experimental_ynn_fusion_type=reduce``): 0.77 for a ResNet-56 forward and 0.90
for a ResNet-8 step on one device, but 1.10 and 1.01 with 8 devices, so it only helps the
configuration this module replaces. ``xla_cpu_use_thunk_runtime`` is deprecated (always
on) in jax 0.10. Also measured and not set: an NCHW model (train step 1.10 of NHWC); a
bfloat16 teacher (forward 0.97–1.02 of float32 on this CPU, and it moves the soft targets:
T²·KL 2.8e-3 at T = 4); no donation (1.02); fewer host round-trips (0.98–0.99).

**Compilation cache**: ``compilation_cache_dir`` turns on JAX's persistent compilation
cache (a second process compiled the fused KD step in 1.5 s instead of 4.1 s); the training
binary keeps it in ``config.compilation_cache_dir`` (``~/.cache/kdjax/jax`` by default).

Accelerator hosts: the settings only concern JAX's CPU backend; with a GPU or TPU as the
default backend, the virtual CPU devices exist but are unused.
"""

from collections.abc import Sequence
import math
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from kdjax import data

_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"
# XLA:CPU's memory-optimised op scheduler, for batches split over virtual devices: in one
# process, a fused resnet56 → resnet8 KD step took 0.89–0.94 of its time with the default
# scheduler on 8 devices (teacher forward 0.98–1.01, student step 0.96–0.98); on 1 device it
# made the student step 1.075× as long, so it is set only when batches are split.
_SPLIT_BATCH_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
# Virtual devices meet at every cross-device reduction (BatchNorm statistics, gradients).
# XLA:CPU aborts the whole process when one device's thread is 40 s late at such a meeting,
# which happens on a loaded host (a training run at a low priority beside a test suite on 2
# cores was killed at its first step). A late thread is starvation, not a deadlock: wait
# for it (warn after 10 minutes, give up after 2 hours).
_SPLIT_BATCH_PATIENCE = ("--xla_cpu_collective_call_warn_stuck_timeout_seconds=600",
                         "--xla_cpu_collective_call_terminate_timeout_seconds=1200")
_SPLIT_BATCH_FLAGS = (_SPLIT_BATCH_SCHEDULER, *_SPLIT_BATCH_PATIENCE)
_ADDED_FLAGS: set[str] = set()  # what configure() appended to $XLA_FLAGS in this process


# 16 CIFAR images (32 × 32) per device was the optimum: a first-stage activation of 1 MiB.
_MIN_PIXELS_PER_DEVICE = 16 * 32 * 32


def recommended_cpu_devices(batch_sizes: Sequence[int] = (128,),
                            image_shape: Sequence[int] = (32, 32, 3),
                            *,
                            max_devices: int = 8,
                            min_pixels_per_device: int = _MIN_PIXELS_PER_DEVICE) -> int:
  r"""The number of virtual CPU devices to split batches of these sizes over.

  The largest power of two :math:`n \le` ``max_devices`` that divides every batch size and
  leaves each device at least ``min_pixels_per_device`` image pixels (examples × height ×
  width, of the smallest batch); 1 when none does. Splitting pays when the per-example
  activations of a batch outgrow the CPU's cache (CIFAR-sized images at batch 128), and
  costs synchronisation when they do not: the quickstart's 8 × 8 digits at batch 64 ran a
  ResNet-8 step in 12.1 ms on one device and 18.8 ms on four.

  Args:
    batch_sizes: every batch size a step of this process will see (train and eval; on
      several processes, each one's share of the global batch).
    image_shape: ``[H, W, C]`` of one input image; the channel count does not enter.
    max_devices: the most devices to use (8 was fastest on a 2-core CPU at batch 128).
    min_pixels_per_device: the fewest pixels (examples × H × W) per device; the default is
      16 images of 32 × 32, the measured optimum.

  Returns:
    The device count, >= 1.

  Raises:
    ValueError: if a batch size, an image dimension, ``max_devices`` or
      ``min_pixels_per_device`` is not a positive integer.

  Example:
    >>> recommended_cpu_devices((128,), (32, 32, 3))
    8
    >>> recommended_cpu_devices((128, 500), (32, 32, 3))  # 500 is not a multiple of 8
    4
    >>> recommended_cpu_devices((64,), (8, 8, 1))  # small images: one device is faster
    1
  """
  for name, value in (("max_devices", max_devices),
                      ("min_pixels_per_device", min_pixels_per_device),
                      *((f"batch_sizes[{i}]", b) for i, b in enumerate(batch_sizes)),
                      *((f"image_shape[{i}]", d) for i, d in enumerate(image_shape))):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer.")
  if not batch_sizes:
    raise ValueError("batch_sizes is empty; pass the train (and eval) batch sizes.")
  if len(image_shape) != 3:
    raise ValueError(f"image_shape={tuple(image_shape)} must be [H, W, C].")
  divisor = math.gcd(*batch_sizes)
  pixels = min(batch_sizes) * image_shape[0] * image_shape[1]
  n = 1
  while (2 * n <= max_devices and divisor % (2 * n) == 0
         and pixels // (2 * n) >= min_pixels_per_device):
    n *= 2
  return n


def _user_device_count() -> int | None:
  """The CPU device count the user already asked for, if any."""
  for flag in os.environ.get("XLA_FLAGS", "").split():
    if flag.lstrip("-").startswith(_DEVICE_COUNT_FLAG + "="):
      return int(flag.split("=", 1)[1])
  value = jax.config.jax_num_cpu_devices
  return None if value is None or value < 0 else int(value)


def enable_compilation_cache(directory: str | os.PathLike) -> str:
  """Keeps JAX's compiled programs in ``directory`` (``~`` expanded), unless one is set.

  A second run of the same program then reads it from disk instead of compiling it. Every
  program is cached, however quick to compile (the trainer's eval and teacher programs
  too). A directory the user already gave JAX (``jax_compilation_cache_dir`` or
  ``JAX_COMPILATION_CACHE_DIR``) is kept.

  Args:
    directory: where to keep the cache; ``""`` changes nothing.

  Returns:
    The cache directory in force (``""`` for none).

  Example:
    >>> import tempfile
    >>> previous = (jax.config.jax_compilation_cache_dir,
    ...             jax.config.jax_persistent_cache_min_compile_time_secs)
    >>> jax.config.update("jax_compilation_cache_dir", None)
    >>> cache = tempfile.mkdtemp()
    >>> enable_compilation_cache(cache) == cache == jax.config.jax_compilation_cache_dir
    True
    >>> enable_compilation_cache("~/elsewhere") == cache  # the first directory stays
    True
    >>> jax.config.update("jax_compilation_cache_dir", previous[0])  # as it was
    >>> jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
  """
  current = jax.config.jax_compilation_cache_dir
  if current or not directory:
    return current or ""
  directory = os.path.expanduser(os.fspath(directory))
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  return directory


def configure(*,
              batch_sizes: Sequence[int] = (128,),
              image_shape: Sequence[int] = (32, 32, 3),
              num_cpu_devices: int | None = None,
              compilation_cache_dir: str | os.PathLike = "") -> dict[str, Any]:
  """Applies kdjax's performance defaults; call before JAX initialises its backends.

  ``launch/train.py`` and ``launch/benchmark.py`` call it first thing in ``main``. In a
  notebook, call it right after ``import jax``, before anything touches a device. A loop of
  your own over batches it splits keeps a few steps in flight with
  ``kdjax.dispatch.DispatchWindow``: 32 steps ahead, XLA:CPU can deadlock.

  Args:
    batch_sizes: the global batch sizes the run will use (train and eval); with
      ``image_shape`` they choose the number of virtual CPU devices
      (``recommended_cpu_devices``).
    image_shape: ``[H, W, C]`` of the run's images.
    num_cpu_devices: an explicit number of virtual CPU devices (overrides the choice).
    compilation_cache_dir: where to keep JAX's persistent compilation cache
      (``enable_compilation_cache``); ``""``: no cache. Measured: the first call of a
      resnet56 → resnet8 fused KD step went from 4.1 s to 1.5 s in a second process (the
      whole benchmark process from 15.3 to 5.3 s).

  Returns:
    What is in force: ``{"num_cpu_devices": n, "source": ..., "compilation_cache_dir":
    ..., "xla_flags": [...]}``, where ``source`` is ``"kdjax"`` (set here), ``"user"`` (set
    by ``XLA_FLAGS`` or ``jax.config`` before), or ``"too late"`` (JAX's backends were
    already initialised; the device count did not change; a warning says so when it differs
    from the one wanted); ``xla_flags`` are kdjax's flags in ``$XLA_FLAGS`` (the
    memory-optimised scheduler and a patient wait for late devices at collectives, set
    only when ``source`` is ``"kdjax"`` and batches are split: a device count chosen by the
    user, or any of these options, is left alone).

  Raises:
    ValueError: on a non-positive ``num_cpu_devices``, bad batch sizes or image shape.

  Example:
    >>> applied = configure(num_cpu_devices=2)  # too late here: this session's devices are up
    >>> applied["source"], applied["num_cpu_devices"] == len(jax.devices("cpu"))
    ('too late', True)
  """
  if num_cpu_devices is not None and (isinstance(num_cpu_devices, bool) or
                                      not isinstance(num_cpu_devices, int) or
                                      num_cpu_devices < 1):
    raise ValueError(f"num_cpu_devices={num_cpu_devices!r} must be a positive integer.")
  wanted = num_cpu_devices or recommended_cpu_devices(batch_sizes, image_shape)
  cache = {"compilation_cache_dir": enable_compilation_cache(compilation_cache_dir)}
  user = _user_device_count()
  if user is not None and num_cpu_devices is None:
    return {"num_cpu_devices": user, "source": "user", "xla_flags": sorted(_ADDED_FLAGS),
            **cache}
  try:
    jax.config.update("jax_num_cpu_devices", wanted)
  except RuntimeError:  # JAX refuses once its backends are running
    current = len(jax.devices("cpu"))
    if current != wanted:
      logging.warning("kdjax.performance.configure() came after JAX initialised its "
                      "backends: %d CPU device(s) instead of %d. Call it at startup.",
                      current, wanted)
    return {"num_cpu_devices": current, "source": "too late", "xla_flags": sorted(_ADDED_FLAGS),
            **cache}
  # XLA reads $XLA_FLAGS when it first compiles, which has not happened yet (the backends
  # are not running). The flag applies to every CPU program of this process and its children.
  for flag in _SPLIT_BATCH_FLAGS:
    if wanted > 1:
      _add_xla_flag(flag)
    else:
      _remove_xla_flag(flag)  # set by an earlier call that split batches
  return {"num_cpu_devices": wanted, "source": "kdjax", "xla_flags": sorted(_ADDED_FLAGS),
          **cache}


def _add_xla_flag(flag: str) -> bool:
  """Appends ``flag`` to ``$XLA_FLAGS`` unless the user set that option; True if added."""
  name = flag.lstrip("-").split("=")[0]
  current = os.environ.get("XLA_FLAGS", "")
  if any(f.lstrip("-").split("=")[0] == name for f in current.split()):
    return False
  os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()
  _ADDED_FLAGS.add(flag)
  return True


def _remove_xla_flag(flag: str) -> None:
  """Takes ``flag`` back out of ``$XLA_FLAGS`` if ``_add_xla_flag`` put it there."""
  if flag in _ADDED_FLAGS:
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != flag]
    os.environ["XLA_FLAGS"] = " ".join(kept)
    _ADDED_FLAGS.discard(flag)


def configure_run(config: ml_collections.ConfigDict,
                  num_processes: int | None = 1) -> dict[str, Any] | None:
  """Applies ``configure`` for a run config; call before JAX starts.

  The number of virtual CPU devices follows each process's share of the run's train and
  eval batch sizes and its dataset's image shape; the compilation cache goes to
  ``config.compilation_cache_dir``. It must come before anything starts JAX's backends,
  which ``kdjax.trainer.validate`` and ``train_and_evaluate`` do: ``launch/train.py``
  calls it first thing.

  Args:
    config: the run config.
    num_processes: the number of JAX processes of the run; ``None`` when not known yet
      (multi-host with the count found by ``jax.distributed.initialize``): each process
      then keeps one CPU device, a split that fits any process count.

  Returns:
    What ``configure`` applied, or ``None`` (with a warning) when the batch sizes or the
    dataset name are invalid: ``kdjax.trainer.validate`` then refuses the config, naming
    the field.

  Example:
    >>> from configs import cifar10_kd
    >>> config = cifar10_kd.get_config()
    >>> config.compilation_cache_dir = ""  # none for this example
    >>> # JAX is already running here, so the device count stays as it is.
    >>> configure_run(config)["source"] in ("user", "too late")
    True
  """
  ds = config.dataset
  try:
    image_shape = data.image_shape(ds.name)
    if num_processes is None:  # one device per process fits any process count
      batch_sizes = (1,)
    elif ds.batch_size % num_processes or ds.eval_batch_size % num_processes:
      raise ValueError(f"the batch sizes ({ds.batch_size}, {ds.eval_batch_size}) do not "
                       f"split over {num_processes=}")
    else:
      batch_sizes = (ds.batch_size // num_processes, ds.eval_batch_size // num_processes)
    recommended_cpu_devices(batch_sizes, image_shape)  # checks the values
  except ValueError as error:
    logging.warning("kdjax's performance defaults are not applied: %s", error)
    return None
  return configure(batch_sizes=batch_sizes, image_shape=image_shape,
                   compilation_cache_dir=config.compilation_cache_dir)
