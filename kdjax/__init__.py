"""kdjax: knowledge distillation for JAX and Flax."""

from kdjax import initializers
from kdjax import losses
from kdjax import models
from kdjax import schedules
from kdjax import transforms

__version__ = "0.1.0"

__all__ = ["initializers", "losses", "models", "schedules", "transforms"]
