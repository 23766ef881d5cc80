"""kdjax: knowledge distillation for JAX and Flax.

Layers, importing only downward: pure math (``losses``, ``schedules``, ``transforms``,
``initializers``, ``models``); pure step builders (``objective``, ``state``, ``networks``,
``heads``, ``step``, ``sweep``, ``parallel``, ``teacher_cache``); the impure loop
(``trainer``, with ``data``, ``checkpoints``, ``methods``, ``optimizers``,
``metric_writers``, ``summary``), imported on demand: ``from kdjax import trainer``.
"""

from kdjax import batch
from kdjax import heads
from kdjax import initializers
from kdjax import losses
from kdjax import models
from kdjax import networks
from kdjax import objective
from kdjax import parallel
from kdjax import schedules
from kdjax import state
from kdjax import step
from kdjax import sweep
from kdjax import teacher_cache
from kdjax import transforms

__version__ = "0.1.0"

__all__ = [
    "batch",
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
