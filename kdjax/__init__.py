"""kdjax: knowledge distillation for JAX and Flax.

Layers, importing only downward: pure math (``losses``, ``schedules``, ``transforms``,
``initializers``, ``models``); pure step builders (``objective``, ``state``, ``networks``,
``heads``, ``step``, ``sweep``, ``parallel``, ``teacher_cache``, ``mixup``,
``finite_guard``), and ``evaluation``, the host loop averaging an eval step over batches;
the impure training layer (the ``trainer`` package, with ``data``, ``checkpoints``,
``multihost``, ``methods``, ``optimizers``, ``metric_writers``, ``summary``, and ``config``,
the schema of a run's config), imported on demand: ``from kdjax import trainer``; above it,
``report`` (the results tables, from the trainer's files) with ``claims`` (the papers'
claims judged on a table's seeds); beside it, ``benchmark`` (the speed harness of
``launch/benchmark.py``).
"""

from kdjax import (
    batch,
    evaluation,
    heads,
    initializers,
    losses,
    models,
    networks,
    objective,
    parallel,
    schedules,
    state,
    step,
    sweep,
    teacher_cache,
    transforms,
)

__version__ = "0.1.0"

__all__ = [
    "batch",
    "evaluation",
    "heads",
    "initializers",
    "losses",
    "models",
    "networks",
    "objective",
    "parallel",
    "schedules",
    "state",
    "step",
    "sweep",
    "teacher_cache",
    "transforms",
]
