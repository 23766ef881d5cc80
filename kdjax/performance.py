"""Startup settings that make kdjax fast without tuning (placeholder while measuring)."""

from typing import Any

import jax


def configure_devices_only(num_cpu_devices: int | None) -> dict[str, Any]:
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", num_cpu_devices)
  return {"num_cpu_devices": num_cpu_devices}


def configure(num_cpu_devices: int | None = None) -> dict[str, Any]:
  return configure_devices_only(num_cpu_devices)
