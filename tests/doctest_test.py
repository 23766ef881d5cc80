"""Runs the ``Example:`` sections of kdjax's docstrings as doctests, one test per module.

Docstring examples are API documentation that users paste into a Colab cell, so they must
run as written. Each example sees its module's globals plus ``jax``, ``jnp``, ``np`` and
``optax``; anything else it imports itself. Examples that read data find the bundled digits
under ``$KDJAX_DATA_DIR``, pointed at a temporary directory prepared once per session (so
TFDS's first-use messages do not end up in an example's output).
"""

import doctest
import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kdjax
from kdjax import data as kdjax_data

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
EXTRA_GLOBS = {"jax": jax, "jnp": jnp, "np": np, "optax": optax}


def module_names() -> list[str]:
  """kdjax and every module below it."""
  prefix = f"{kdjax.__name__}."
  return [kdjax.__name__] + sorted(m.name for m in pkgutil.walk_packages(kdjax.__path__, prefix))


def find_doctests(module_name: str) -> list[doctest.DocTest]:
  """The module's doctests with at least one example, in a stable order.

  ``DocTestFinder`` skips objects whose ``__module__`` is another module, so a function
  re-exported by a package (``kdjax.losses.kd``) is collected once, in its home module.
  """
  module = importlib.import_module(module_name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  tests = finder.find(module, module_name, globs={**vars(module), **EXTRA_GLOBS})
  return sorted((t for t in tests if t.examples), key=lambda t: t.name)


MODULES = module_names()
MODULES_WITH_EXAMPLES = [m for m in MODULES if find_doctests(m)]


def test_every_module_is_collected():
  assert {"kdjax.losses.hinton", "kdjax.data.pipeline", "kdjax.models.resnet",
          "kdjax.transforms.pruning", "kdjax.step"} <= set(MODULES)


def test_key_api_examples_are_collected():
  """A guard against examples silently dropping out (a lost ``>>>``, a renamed section)."""
  names = {t.name for m in MODULES_WITH_EXAMPLES for t in find_doctests(m)}
  for expected in ("kdjax.losses.hinton.kd", "kdjax.losses.pruning.dkp",
                   "kdjax.losses.matching.annealing", "kdjax.schedules.annealing_phi",
                   "kdjax.transforms.pruning.dkp", "kdjax.objective", "kdjax.step.make_train_step",
                   "kdjax.sweep", "kdjax.teacher_cache", "kdjax.data.pipeline.train_iterator",
                   "kdjax.data.pipeline.eval_batches", "kdjax.models", "kdjax.mixup.mix_batch",
                   "kdjax.parallel.mesh_step", "kdjax.checkpoints.load_network",
                   "kdjax.finite_guard", "kdjax.trainer.loop.train_and_evaluate",
                   "kdjax.trainer.stage.build_stage"):
    assert expected in names, f"no runnable docstring example in {expected}"


def test_every_public_function_and_class_has_an_example():
  """The API reference promise: each public name documents a short runnable example."""
  missing = []
  for module_name in MODULES:
    module = importlib.import_module(module_name)
    if any(part.startswith("_") for part in module_name.split(".")):
      continue
    for name, obj in vars(module).items():
      if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
        continue
      if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        continue
      doc = inspect.getdoc(obj) or ""
      if ">>>" not in doc and "Example: see" not in doc:
        missing.append(f"{module_name}.{name}")
  assert not missing, f"public names without an Example: {missing}"


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
  kdjax_data.dataset_info("digits", data_dir=data_dir)  # prepares it
  return data_dir


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples(module_name, digits_data_dir, monkeypatch):
  monkeypatch.setenv(kdjax_data.DATA_DIR_ENV, str(digits_data_dir))
  runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
  failures = []
  for test in find_doctests(module_name):
    report = []
    if runner.run(test, out=report.append, clear_globs=True).failed:
      failures.append("".join(report))
  assert not failures, "\n".join(failures)
