"""GoPT exported with --uint8-input (preprocessing inside the graph) against the float export:
the same labels on the real frames, the runtime feeding each kind of file what it takes."""
import cv2
import numpy as np
import onnx
import pytest

import factories

from export import graph
from export.onnx import SAMPLES, export_gopt, parse_args, run
from export.progress import Progress
from export.frame_input import default_frame_input
from models import save_gopt
from runtime import Segmenter
from runtime.metadata import read_onnx_info
from simulated.environment import trt_env  # noqa: F401  (the fixture)

SIZE = (96, 128)  # the real frames are downscaled to this before they reach the runtime


def real_pairs(modality):
    """The bundled real frame pairs of a modality, downscaled to the model's size (INTER_AREA)."""
    def small(x):
        interpolation = cv2.INTER_NEAREST if x.dtype == np.uint16 else cv2.INTER_AREA
        return cv2.resize(x, SIZE[::-1], interpolation=interpolation)

    if modality == "thermal":
        frames = [cv2.imread(str(SAMPLES / f), cv2.IMREAD_UNCHANGED) for f in ("mfnet_01234N.png", "mfnet_01477D.png")]
        return [(small(f[..., :3]), small(f[..., 3])) for f in frames]
    bgr = cv2.imread(str(SAMPLES / "esanet_rgb.png"), cv2.IMREAD_COLOR)
    depth = cv2.imread(str(SAMPLES / "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
    assert (depth == 0).any()  # the real frame has holes
    return [(small(bgr), small(depth))]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    out = {}
    thermal = factories.tiny_gopt(0, img_size=SIZE, class_names=list("abcde"))
    depth = factories.tiny_gopt(1, img_size=SIZE, class_names=list("abcde"), modality="depth",
                                aux_mean=[2.8], aux_std=[1.4])
    exports = {
        "thermal": (thermal, None),
        "thermal_frames": (thermal, default_frame_input("thermal")),
        "thermal_rgb16": (thermal, default_frame_input("thermal", "rgb", "uint16")),
        "depth": (depth, None),
        "depth_frames": (depth, default_frame_input("depth", depth_units=0.001)),
    }
    for name, (model, frame_input) in exports.items():
        out[name] = d / f"{name}.onnx"
        export_gopt(model, out[name], frame_input=frame_input, progress=Progress(1))
    out["thermal_pt"] = d / "thermal.pt"
    save_gopt(thermal, out["thermal_pt"])
    return out


def run_both(float_path, frames_path, pairs, to_frames=lambda rgb, aux: (rgb, aux), backend=None, **frames_kw):
    """Labels and logits of both files on the same frames, through the runtime (``backend`` runs both)."""
    with Segmenter(float_path, device="cpu", backend=backend) as a, \
            Segmenter(frames_path, device="cpu", backend=backend, **frames_kw) as b:
        out = []
        for rgb, aux in pairs:
            la, ga = a.run(rgb, aux, return_logits=True)
            lb, gb = b.run(*to_frames(rgb, aux), return_logits=True)
            out.append(((la == lb).mean(), float(np.abs(ga - gb).max())))
        return out


def test_thermal_frames_export_agrees_with_the_float_export(models, onnx_backend):
    results = run_both(models["thermal"], models["thermal_frames"], real_pairs("thermal"), backend=onnx_backend)
    for agreement, max_abs in results:
        print(f"uint8-input vs float export, real thermal frame: labels {100 * agreement:.3f}%, logits max-abs "
              f"{max_abs:.2g}")
        assert agreement == 1.0 and max_abs <= 1e-5


def test_rgb_order_and_16_bit_thermal(models):
    """Frames given in RGB order and 16-bit thermal (x 257: the same temperatures) agree too."""
    results = run_both(models["thermal"], models["thermal_rgb16"], real_pairs("thermal"),
                       lambda rgb, aux: (rgb[..., ::-1].copy(), aux.astype(np.uint16) * 257), color_order="rgb")
    assert all(agreement == 1.0 and max_abs <= 1e-5 for agreement, max_abs in results)
    # a BGR frame handed to it as BGR is swapped on the CPU to the graph's RGB order
    results = run_both(models["thermal"], models["thermal_rgb16"], real_pairs("thermal"),
                       lambda rgb, aux: (rgb, aux.astype(np.uint16) * 257))
    assert all(agreement == 1.0 for agreement, _ in results)


def test_depth_frames_with_holes(models, onnx_backend):
    results = run_both(models["depth"], models["depth_frames"], real_pairs("depth"), backend=onnx_backend)
    assert all(agreement == 1.0 and max_abs <= 1e-5 for agreement, max_abs in results)


def test_frames_of_another_size_are_resized_outside_the_graph(models):
    """Full-size frames: the runtime resizes them (RGB identically; thermal in uint8 here, in
    float32 for the float model, so the logits may differ slightly)."""
    frame = cv2.imread(str(SAMPLES / "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    (agreement, max_abs), = run_both(models["thermal"], models["thermal_frames"], [(frame[..., :3], frame[..., 3])])
    assert agreement >= 0.99, agreement
    with Segmenter(models["depth_frames"], device="cpu") as seg:
        bgr = cv2.imread(str(SAMPLES / "esanet_rgb.png"), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(SAMPLES / "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
        assert seg.run(bgr, depth).shape == depth.shape


def test_metadata_and_graph(models):
    info = read_onnx_info(models["thermal_frames"])
    assert info.frame_input == {"color_order": "bgr", "aux_dtype": "uint8"}
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("rgb", [1, *SIZE, 3], "uint8"), ("aux", [1, *SIZE, 1], "uint8")]
    info = read_onnx_info(models["depth_frames"])
    assert info.frame_input == {"color_order": "bgr", "aux_dtype": "uint16", "depth_units": 0.001}
    assert info.input("aux").shape == [1, *SIZE, 1, 2]  # the uint16 frame's bytes: TensorRT has no uint16
    assert read_onnx_info(models["thermal"]).frame_input is None
    model = onnx.load(str(models["depth_frames"]))
    assert graph.tensorrt_problems(model) == []
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types == {"rgb": onnx.TensorProto.UINT8, "aux": onnx.TensorProto.UINT8}


def test_wrong_frames_are_one_line_errors(models):
    (rgb, aux), _ = real_pairs("thermal")
    with Segmenter(models["thermal_frames"], device="cpu") as seg:
        with pytest.raises(ValueError, match="thermal must be uint8 for this model .* got uint16"):
            seg.run(rgb, aux.astype(np.uint16))
        with pytest.raises(ValueError, match="thermal must be uint8 .* got float32"):
            seg.run(rgb, aux.astype(np.float32))
        with pytest.raises(ValueError, match="rgb must be uint8"):
            seg.run(rgb.astype(np.float32), aux)
        with pytest.raises(ValueError, match=r"rgb (must be (an )?H x W x 3|is a one-channel)"):
            seg.run(rgb[..., 0], aux)
    with pytest.raises(ValueError, match="0.001 metres per count; depth_units=0.0001"):
        Segmenter(models["depth_frames"], device="cpu", depth_units=0.0001)
    assert Segmenter(models["depth_frames"], device="cpu").depth_units == 0.001


def test_cli(models, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert run(parse_args([str(models["thermal_pt"]), "--uint8-input", "--color-order", "rgb", "-o", str(out)])) == 0
    assert "labels agree 100.000%" in capsys.readouterr().out
    assert read_onnx_info(out).frame_input["color_order"] == "rgb"
    with pytest.raises(ValueError, match="depth frames are uint16"):
        default_frame_input("depth", aux_dtype="uint8")


def test_raw_frame_engines(models, trt_env, tmp_path):
    """uint8 frames (and 16-bit thermal as its bytes) into a TensorRT engine: the same labels as
    ONNX Runtime on the same file (simulated TensorRT: the same graph; on a GPU: 99%)."""
    from export.tensorrt import run as build

    cases = [("thermal_rgb16", real_pairs("thermal"), lambda rgb, aux: (rgb[..., ::-1].copy(),
                                                                          aux.astype(np.uint16) * 257)),
             ("depth_frames", real_pairs("depth"), lambda rgb, aux: (rgb, aux))]
    for name, pairs, to_frames in cases:
        engine = tmp_path / f"{name}.engine"
        assert build([str(models[name]), "-o", str(engine)]) == 0
        kw = {"color_order": "rgb"} if name == "thermal_rgb16" else {}
        with Segmenter(models[name], device="cpu", **kw) as onnx_seg, Segmenter(engine, **kw) as trt_seg:
            for rgb, aux in pairs:
                frames = to_frames(rgb, aux)
                agreement = (trt_seg.run(*frames) == onnx_seg.run(*frames)).mean()
                assert agreement >= (1.0 if trt_env.simulated else 0.99), (name, agreement)


@pytest.mark.parametrize("name", ["thermal_frames", "thermal_rgb16", "depth_frames"])
def test_the_check_judges_network_and_preprocessing_apart(models, name):
    """The raw-frame export's check: the network on random frames drawn as the float check's
    inputs (normalised values within the float check's range, not uniform noise 8 standard
    deviations out), and the in-graph preprocessing alone against runtime/preprocess.py over the
    sensors' whole range, exactly."""
    from export.onnx import check_gopt, gopt_model_like_frames, gopt_random_inputs, preprocess_frames

    model = factories.tiny_gopt(1 if name.startswith("depth") else 0, img_size=SIZE, class_names=list("abcde"),
                                **({"modality": "depth", "aux_mean": [2.8], "aux_std": [1.4]}
                                   if name.startswith("depth") else {}))
    info = read_onnx_info(models[name])
    rgb, aux = gopt_model_like_frames(model.config, info.frame_input, 2, seed=1)
    x, a = preprocess_frames(model.config, rgb, aux, info.frame_input)
    fx, fa = gopt_random_inputs(model.config, 2, seed=1)
    assert np.abs(a).max() <= np.abs(fa).max() + 1.5 and np.abs(x).max() <= np.abs(fx).max() + 1.5
    results = check_gopt(model, models[name], info, 1, Progress(3))
    names = [r.name for r in results]
    assert names[-1] == "preprocessing, full sensor range" and names[0].startswith("random")
    assert results[-1].max_abs == 0.0 and results[-1].max_abs_limit is not None
