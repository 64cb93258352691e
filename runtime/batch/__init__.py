"""Offline segmentation of whole recordings on a Ray cluster: ``python -m runtime.batch``
(``__main__.py``, the command line), the job (``job.py``: shards, workers, the index) and
the frame preparation its CPU tasks run (``prepare.py``)."""
