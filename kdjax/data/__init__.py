"""Input pipelines: TFDS data sources read with grain, and the embedded digits dataset."""

from kdjax.data.pipeline import AUGMENTATIONS
from kdjax.data.pipeline import DATA_DIR_ENV
from kdjax.data.pipeline import Augmentation
from kdjax.data.pipeline import DatasetInfo
from kdjax.data.pipeline import dataset_info
from kdjax.data.pipeline import default_data_dir
from kdjax.data.pipeline import eval_batches
from kdjax.data.pipeline import supported_datasets
from kdjax.data.pipeline import train_iterator

__all__ = [
    "AUGMENTATIONS",
    "DATA_DIR_ENV",
    "Augmentation",
    "DatasetInfo",
    "dataset_info",
    "default_data_dir",
    "eval_batches",
    "supported_datasets",
    "train_iterator",
]
