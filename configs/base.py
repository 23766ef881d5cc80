"""Every field of a kdjax run, with its default: the schema in ``kdjax.config``.

The configs of this directory import this file (``from configs import base``), call
``base.get_config()`` and override a few fields; see ``kdjax/config.py`` for every field,
its default and its meaning. A config outside this repository imports the same schema as
``from kdjax import config as base``.

Run the defaults (a teacher and a KD student on the bundled digits data):

  python -m launch.train --config=configs/base.py --workdir=workdir/base
"""

from kdjax.config import get_config, loss_config, optimizer, stage, stages

__all__ = ["get_config", "loss_config", "optimizer", "stage", "stages"]
