import os

# Triton kernels run in the interpreter on machines without a CUDA GPU. The variable must
# be set before any kernel module is imported.
try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
