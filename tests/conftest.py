import os

import pytest

# Triton kernels run in the interpreter on machines without a CUDA GPU. The variable must
# be set before any kernel module is imported.
try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_gopt_models(tmp_path_factory):
    """A folder with the tiny GoPTs exported once per test session (tests/factories.py)."""
    from factories import export_tiny_gopts

    return export_tiny_gopts(tmp_path_factory.mktemp("tiny_gopts"))
