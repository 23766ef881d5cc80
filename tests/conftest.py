"""Test-session setup: 8 virtual CPU devices and JAX's persistent compilation cache.

Both must be configured before JAX initialises its backends, hence here, at import time.
"""

import os

import jax

jax.config.update("jax_num_cpu_devices", 8)
_cache_dir = os.environ.get("KDJAX_TEST_COMPILATION_CACHE")
if _cache_dir:
  jax.config.update("jax_compilation_cache_dir", _cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
