"""Accuracy on labelled frames: data set readers, a confusion-matrix accumulator and the
loop that runs models through the runtime's ``Segmenter`` over a data set.

    from evaluation import ConfusionMatrix, Entry, evaluate, open_dataset

Used by ``python -m benchmarks.accuracy`` and ``python -m export.quantize --eval``. Imports
without PyTorch (numpy and OpenCV only).
"""
from .datasets import FORMATS, SPECS, LabelledFrames, LayoutError, Sample, Skipped, open_dataset
from .evaluate import Entry, evaluate, predict
from .metrics import IGNORE, ConfusionMatrix

__all__ = ["ConfusionMatrix", "IGNORE", "Entry", "evaluate", "predict", "open_dataset", "LabelledFrames",
           "LayoutError", "Sample", "Skipped", "FORMATS", "SPECS"]
