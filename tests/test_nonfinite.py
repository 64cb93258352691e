"""A broken model or an absurd input never becomes a silent all-zero label map."""
import numpy as np
import onnx
import pytest
import torch

from factories import tiny_gopt
from export import parity
from export.onnx import parse_args, run
from export.progress import Progress
from export.simcmf_onnx import export_simcmf
from models import save_gopt
from runtime import NonFiniteOutputError, Segmenter
from runtime.metadata import META_KEY, ModelInfo
from runtime.backends.torch_backend import gopt_backend, simcmf_backends
from test_simcmf import tiny_model


def poison(model):
    """One NaN weight in the model's last layer with parameters."""
    *_, last = [p for p in model.parameters() if p.ndim >= 2]
    with torch.no_grad():
        last.view(-1)[0] = float("nan")
    return model


@pytest.fixture(scope="module")
def broken_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("nonfinite")
    save_gopt(poison(tiny_gopt()), d / "nan.pt")
    assert run(parse_args([str(d / "nan.pt"), "-o", str(d / "nan.onnx"), "--no-check"])) == 0
    return d


def frame(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 256, (h, w), dtype=np.uint8)


def test_nan_weights_in_an_onnx_file_raise(broken_onnx, onnx_backend):
    seg = Segmenter(broken_onnx / "nan.onnx", backend=onnx_backend)
    assert seg.info.nonfinite_label == 255  # flagged inside the graph: labels alone tell
    with pytest.raises(NonFiniteOutputError, match=r"nan.onnx: the model's logits are NaN or infinite .* from "
                                                   r"finite inputs") as e:
        seg.run(*frame())
    assert "\n" not in str(e.value)
    with pytest.raises(NonFiniteOutputError, match=r"frame 0 of the batch"):
        seg.run_batch([frame(), frame(seed=1)])


def test_files_without_the_flag_are_checked_through_their_logits(broken_onnx, tmp_path, onnx_backend):
    """Files exported before the in-graph flag: the runtime fetches the logits to check them."""
    model = onnx.load(str(broken_onnx / "nan.onnx"))
    props = {p.key: p for p in model.metadata_props}
    info = ModelInfo.from_json(props[META_KEY].value)
    info.nonfinite_label = None
    props[META_KEY].value = info.to_json()
    onnx.save(model, str(tmp_path / "old.onnx"))
    seg = Segmenter(tmp_path / "old.onnx", backend=onnx_backend)
    assert seg.info.nonfinite_label is None
    with pytest.raises(NonFiniteOutputError, match="old.onnx: the model's logits are NaN"):
        seg.run(*frame())


def test_nan_weights_in_a_checkpoint_raise():
    seg = Segmenter.from_backends({"gopt": gopt_backend(poison(tiny_gopt()), torch.device("cpu"))}, "nan.pt")
    with pytest.raises(NonFiniteOutputError, match="nan.pt: the model's logits are NaN"):
        seg.run(*frame(), return_logits=True)
    with pytest.raises(NonFiniteOutputError, match="nan.pt: the model's logits are NaN"):
        seg.run(*frame())


def test_simcmf_nan_weights_raise():
    model = tiny_model(modality="rgbt")
    with torch.no_grad():
        model.image_encoder.neck[0].weight.view(-1)[0] = float("nan")
    seg = Segmenter.from_backends(simcmf_backends(model, torch.device("cpu")), "nan.pth")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    with pytest.raises(NonFiniteOutputError, match="nan.pth: the model's image embeddings are NaN"):
        seg.run(image, points=[(5, 5)])


def test_huge_thermal_values_are_refused_with_their_scale():
    seg = Segmenter.from_backends({"gopt": gopt_backend(tiny_gopt(), torch.device("cpu"))})
    rgb, _ = frame()
    with pytest.raises(ValueError, match=r"thermal values reach 1e\+20.*0-255") as e:
        seg.run(rgb, np.full((48, 64), 1e20, np.float32))
    assert "\n" not in str(e.value)


def test_parity_never_passes_with_nan():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    ours = ref.copy()
    ours[0, 1, 2, 2] = np.nan
    p = parity.compare("logits", ours, ref, (ours.argmax(1), ref.argmax(1)))
    assert not parity.FP32.passes(p) and not parity.FP16.passes(p)
    assert "labels agree" not in p.line() and "NaN or infinite at 1 of 48 values" in p.line(), p.line()
    p = parity.compare("logits", ours, ours)  # the PyTorch reference itself is broken
    assert not parity.FP16.passes(p) and "the PyTorch reference too" in p.line()


def test_export_check_fails_on_nan_weights(broken_onnx, capsys):
    out = broken_onnx / "checked.onnx"
    assert run(parse_args([str(broken_onnx / "nan.pt"), "-o", str(out)])) == 1
    text = capsys.readouterr()
    assert "labels agree" not in text.out and "the checkpoint itself is broken" in text.out
    assert "within tolerance" not in text.out and "beyond tolerance" in text.err


def test_flagged_graph_is_still_tensorrt_friendly(broken_onnx):
    from export import graph
    from export.trt_ops import TRT10_SUPPORTED_OPS

    assert graph.op_types(onnx.load(str(broken_onnx / "nan.onnx"))) <= TRT10_SUPPORTED_OPS
