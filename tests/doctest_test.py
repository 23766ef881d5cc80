"""Runs the ``Example:`` sections of kdjax's docstrings as doctests, one test per module.

Every docstring example is API documentation a user will paste into a Colab cell, so it must
run as written. The examples see ``jax``, ``jnp``, ``np`` and ``optax`` (plus the module's
own globals); anything else they import themselves.
"""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kdjax
from kdjax import data as kdjax_data

_OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_EXTRA_GLOBS = {"jax": jax, "jnp": jnp, "np": np, "optax": optax}


def _module_names() -> list[str]:
  names = [kdjax.__name__]
  names += [m.name for m in pkgutil.walk_packages(kdjax.__path__, prefix=f"{kdjax.__name__}.")]
  return sorted(names)


MODULES = _module_names()


def _doctests(module_name: str) -> list[doctest.DocTest]:
  module = importlib.import_module(module_name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  # The module's globals first, so an example sees the names its module defines; the
  # conventional aliases on top.
  tests = finder.find(module, module_name, globs={**vars(module), **_EXTRA_GLOBS})
  # DocTestFinder also walks objects imported into the module from elsewhere only when
  # their __module__ matches, so each docstring is collected exactly once, by its home module.
  return sorted((t for t in tests if t.examples), key=lambda t: t.name)


def test_every_module_is_collected():
  assert "kdjax.losses.hinton" in MODULES
  assert "kdjax.data.pipeline" in MODULES
  assert len(MODULES) > 30


def test_public_api_has_examples():
  """The examples this suite runs really exist: a regression guard against silent skips."""
  names = {t.name for m in MODULES for t in _doctests(m)}
  for expected in ("kdjax.losses.hinton.kd", "kdjax.schedules.annealing_phi",
                   "kdjax.transforms.pruning.dkp", "kdjax.step.make_train_step",
                   "kdjax.sweep"):
    assert expected in names, f"no runnable example in {expected}"


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
  # Examples that touch data write under a temporary directory, never the home directory.
  monkeypatch.setenv(kdjax_data.DATA_DIR_ENV, str(tmp_path / "tensorflow_datasets"))
  tests = _doctests(module_name)
  if not tests:
    pytest.skip(f"{module_name} has no docstring examples")
  runner = doctest.DocTestRunner(optionflags=_OPTIONFLAGS)
  reports = []
  for test in tests:
    out = []
    result = runner.run(test, out=out.append, clear_globs=True)
    if result.failed:
      reports.append("".join(out))
  assert not reports, "\n".join(reports)
