"""Datasets for RAB: one validated in-memory type, loaders, fixed preprocessing, splits.

The certified radius (eq. 14) is measured in the preprocessed feature space, so preprocessing is a
fixed function declared up front and never fitted on the training set being certified (see
:mod:`rab.data.preprocess`).
"""

from rab.data.build import from_arrays, to_channel_first
from rab.data.classes import CIFAR10_CLASSES, MNIST_CLASSES, select_classes
from rab.data.dataset import Dataset
from rab.data.facts import DataFacts
from rab.data.npz import load_npz
from rab.data.preprocess import PIXELS, RAW, Preprocessing, affine, fit_on_reference, pixels
from rab.data.split import seeded_split
from rab.data.tabular import SPAMBASE_CLASSES, load_csv, load_sklearn, load_spambase
from rab.data.vision import load_cifar10, load_image_folder, load_mnist

__all__ = [
    "CIFAR10_CLASSES",
    "MNIST_CLASSES",
    "PIXELS",
    "RAW",
    "SPAMBASE_CLASSES",
    "DataFacts",
    "Dataset",
    "Preprocessing",
    "affine",
    "fit_on_reference",
    "from_arrays",
    "load_cifar10",
    "load_csv",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "load_sklearn",
    "load_spambase",
    "pixels",
    "seeded_split",
    "select_classes",
    "to_channel_first",
]
