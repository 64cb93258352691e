"""Serving GoPT from a Triton Inference Server: the Python-backend models that
``python -m export.triton_repo`` puts into a model repository, and a client example."""
