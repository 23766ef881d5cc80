"""One of two JAX processes on loopback, for parallel_test's multi-process test.

Usage: python tests/multihost_worker.py PROCESS_ID PORT OUTPUT_NPZ
"""

import sys

import jax
import kd_testlib
import numpy as np


def main(process_id: int, port: int, output: str) -> None:
  jax.config.update("jax_num_cpu_devices", 4)
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=process_id)
  result = kd_testlib.distill_on_mesh(num_steps=3)
  if process_id == 0:
    np.savez(output, **result)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
