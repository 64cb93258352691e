"""Send a frame pair to a Triton Inference Server serving ``gopt`` and compare with ``Segmenter``.

    python -m serving.triton_client [--url localhost:8000] [--protocol http | grpc]
        [--frame data/samples/mfnet_01234N.png | --rgb RGB --aux AUX] [--compare MODEL.onnx]
        [--color-order rgb] [--out labels.png]

The repository's ensemble (``python -m export.triton_repo``) takes one uint8 ``rgb``
[H, W, 3] and ``aux`` [H, W] per request (sent with a batch axis of 1) and returns
``labels`` [H, W] uint8 at the frame's size. ``--compare`` runs ``Segmenter`` on the same
frames locally and prints the label agreement. Default ports: 8000 (HTTP), 8001 (gRPC).
Exit status: 0 received (and agreeing), 1 agreement below 99.9%, 2 bad arguments, a server
that cannot be reached or refuses the request (one line).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime.cli import ArgumentParser, input_file, output_file, run_tool

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "mfnet_01234N.png"


def client_module(protocol: str):
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError:
        raise ValueError("tritonclient is needed: pip install 'tritonclient[http,grpc]'") from None
    return module


def request_inputs(module, rgb: np.ndarray, aux: np.ndarray) -> list:
    """The ensemble's inputs for one frame pair, with the batch axis Triton adds."""
    inputs = []
    for name, x in (("rgb", rgb), ("aux", aux)):
        batch = np.ascontiguousarray(x)[None]
        t = module.InferInput(name, list(batch.shape), module_dtype(batch.dtype))
        t.set_data_from_numpy(batch)
        inputs.append(t)
    return inputs


def module_dtype(dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(np.dtype(dtype))


def segment_remote(url: str, protocol: str, rgb: np.ndarray, aux: np.ndarray, model: str = "gopt") -> np.ndarray:
    """``labels`` [H, W] uint8 from the server for one frame pair (rgb in the repository's colour order)."""
    from tritonclient.utils import InferenceServerException

    module = client_module(protocol)
    try:
        client = module.InferenceServerClient(url=url)
        if not client.is_model_ready(model):
            raise ValueError(f"{url}: model {model!r} is not ready (is the server up with this repository?)")
        result = client.infer(model, request_inputs(module, rgb, aux),
                              outputs=[module.InferRequestedOutput("labels")])
    except InferenceServerException as e:  # the server's or the connection's error, as the client reports it
        text = " ".join(str(e).split())
        if "UNAVAILABLE" in str(e.status()) or "UNAVAILABLE" in text:  # gRPC: nothing listens there
            raise ValueError(f"{url} ({protocol}): cannot reach the server ({text}); is tritonserver running "
                             "there?") from None
        raise ValueError(f"{url} ({protocol}): {text}") from None
    except OSError as e:
        raise ValueError(f"{url} ({protocol}): cannot reach the server ({e.strerror or e}); is tritonserver "
                         "running there?") from None
    return result.as_numpy("labels")[0]


def read_frames(args) -> tuple[np.ndarray, np.ndarray]:
    """(BGR, aux) as OpenCV decodes them: an MFNet 4-channel PNG, or an rgb + aux image pair."""
    if args.rgb:
        from runtime.sources.streams import ImagePair

        frame = next(iter(ImagePair(args.rgb, args.aux)))
        return frame.rgb, frame.aux
    from runtime.sources.streams import MFNetFrames

    frame = next(iter(MFNetFrames(args.frame)))
    return frame.rgb, frame.aux


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m serving.triton_client", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None, help="server address (default localhost:8000 for HTTP, :8001 for gRPC)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--model", default="gopt", help="the model to call (the ensemble)")
    p.add_argument("--frame", default=str(SAMPLE), help="an MFNet 4-channel PNG (BGR + thermal)")
    p.add_argument("--rgb", help="an RGB image (instead of --frame), with --aux")
    p.add_argument("--aux", help="its auxiliary image")
    p.add_argument("--color-order", choices=("rgb", "bgr"), default="rgb",
                   help="the colour order the repository was written for (export.triton_repo --color-order)")
    p.add_argument("--compare", help="an exported model to run locally with Segmenter on the same frames")
    p.add_argument("--out", help="write the server's label map here (PNG; replaces an earlier file)")
    args = p.parse_args(argv)
    if bool(args.rgb) != bool(args.aux):
        p.error("--rgb and --aux go together")
    for path in (args.rgb, args.aux) if args.rgb else (args.frame,):
        input_file(path, "a frame")
    if args.compare:
        input_file(args.compare, "a model to compare with")
    if args.out:
        if Path(args.out).suffix.lower() != ".png":
            p.error(f"--out {args.out}: the label map is written as a .png")
        output_file(args.out, replace=True)
    return args


def main(argv=None) -> int:
    return run_tool(client_command, parse_args, argv)


def client_command(args) -> int:
    local = None
    if args.compare:  # the local model is checked before the request
        from runtime import Segmenter

        local = Segmenter(args.compare)
        if local.kind != "gopt":
            raise ValueError(f"--compare {args.compare}: a SimCMF model; the repository serves GoPT label maps")
    url = args.url or ("localhost:8000" if args.protocol == "http" else "localhost:8001")
    bgr, aux = read_frames(args)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if args.color_order == "rgb" else bgr
    labels = segment_remote(url, args.protocol, rgb, aux, args.model)
    print(f"{url} ({args.protocol}): labels {labels.shape} {labels.dtype}, classes {np.unique(labels).tolist()}")
    if args.out:
        from runtime.files import write_image_atomic

        write_image_atomic(args.out, labels)
    if local is not None:
        ours = local.run(bgr, aux)
        agreement = float((ours == labels).mean())
        print(f"agreement with Segmenter({Path(args.compare).name}).run: {100 * agreement:.3f}% of pixels")
        return 0 if agreement >= 0.999 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
