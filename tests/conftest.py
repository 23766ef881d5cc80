"""Test-session setup: 8 virtual CPU devices, JAX's persistent compilation cache, and
temporary files kept under pytest's own temporary directory.

The first two must be configured before JAX initialises its backends, hence here, at import
time.
"""

import os
import tempfile

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)
_cache_dir = os.environ.get("KDJAX_TEST_COMPILATION_CACHE")
if _cache_dir:
  jax.config.update("jax_compilation_cache_dir", _cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_under_pytest(tmp_path_factory):
  """Points ``tempfile`` (and the binaries tests start) at a folder pytest prunes.

  Docstring examples make folders with ``tempfile.mkdtemp()``, and TFDS leaves an empty
  one for every builder it creates before the data is prepared; without this they would
  pile up in the machine's temporary directory, one run after another.
  """
  directory = str(tmp_path_factory.mktemp("tempfile"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tempfile, "tempdir", directory)
    patch.setenv("TMPDIR", directory)
    yield
