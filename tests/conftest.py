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


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


# The backends that run .onnx files; backend tests run on each of them.
ONNX_BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not _openvino_installed(), reason="openvino is not installed (pip install -e '.[openvino]')"))]


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_tmp(tmp_path_factory):
    """The tests' caches (OpenVINO's compiled models), theirs and their subprocesses', go to a
    folder of this test session, not the user's ~/.cache."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.getbasetemp() / "xdg_cache")
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(params=ONNX_BACKENDS)
def onnx_backend(request):
    """Each backend that runs .onnx files."""
    return request.param
