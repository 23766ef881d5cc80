"""kdjax: knowledge distillation for JAX and Flax.

Layers, importing only downward: pure math (``losses``, ``schedules``, ``transforms``,
``initializers``, ``models``); pure step builders (``objective``, ``state``, ``networks``,
``heads``, ``step``, ``sweep``, ``parallel``, ``teacher_cache``, ``mixup``,
``finite_guard``); ``evaluation``, the host loop averaging an eval step over batches, and
``dispatch``, the window of steps a host loop keeps in flight;
the methods by name (``recipe``, what a method is made of, and the ``methods`` package,
one module per method beside its loss), pure builders of a stage's step ingredients;
the impure training layer (the ``trainer`` package, with ``data``, ``checkpoints``,
``multihost``, ``optimizers``, ``metric_writers``, ``summary``, and ``config``, the schema
of a run's config), imported on demand: ``from kdjax import trainer``; above it,
``report`` (the results tables, from the trainer's files) with ``claims`` (the papers'
claims judged on a table's seeds); beside it, ``benchmark`` (the speed harness of
``launch/benchmark.py``).
"""

from kdjax import (
    batch,
    dispatch,
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
    "dispatch",
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
