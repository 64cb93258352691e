"""What an exported model carries about itself, so that a runtime needs nothing else.

One JSON document is stored under the ONNX ``metadata_props`` key ``mmseg_deploy`` (and
copied into a TensorRT engine's sidecar JSON): the model kind, its configuration
(input size, normalisation, modality, class names), the graph's inputs and outputs with
their dynamic axes, the precision, and the versions that exported it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

META_KEY = "mmseg_deploy"
SCHEMA = "mmseg-deploy/1"
KINDS = ("gopt", "simcmf_encoder", "simcmf_decoder")
DTYPES = ("float32", "float16", "bfloat16", "uint8", "int8", "uint16", "int32", "int64", "bool")
# field -> the JSON types it may hold (None: null allowed)
FIELD_TYPES = {"config": (dict,), "precision": (str,), "variant": (str,), "companion": (str, None),
               "nonfinite_label": (int, None), "versions": (dict,), "frame_input": (dict, None),
               "quantization": (dict, None), "schema": (str,), "plugins": (list,)}


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, corrupt, or without this project's metadata."""


class UnverifiedModelWarning(UserWarning):
    """A model that has not passed its export check: ``NAME.unverified.onnx`` (the check
    failed, or was interrupted), or an engine built from one."""


def unverified_reason(path) -> str | None:
    """Why ``path`` has not passed its export check, or None. Exports keep the ``.unverified``
    name until ONNX Runtime agrees with PyTorch (``runtime/files.py``); an engine's sidecar
    names the ONNX file it was built from."""
    name = Path(path).name
    if ".unverified." in name:
        return (f"{name} has not passed its export check (the check failed or did not finish): its outputs may "
                "not match PyTorch; run `python -m export.onnx CKPT --check-only` (or export.quantize again)")
    if Path(path).suffix.lower() in (".engine", ".plan"):
        try:
            source = json.loads(Path(f"{path}.json").read_text())["onnx"]["file"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # the engine's own checks report a missing or damaged sidecar
        if isinstance(source, str) and ".unverified." in source:
            return f"{name} was built from {source}, which has not passed its export check"
    return None


_warned: set = set()


def warn_if_unverified(path) -> None:
    """An ``UnverifiedModelWarning`` (one line from a command-line tool) for an unchecked
    model, once per file and process."""
    import warnings

    reason = unverified_reason(path)
    key = str(Path(path).resolve())
    if reason and key not in _warned:
        _warned.add(key)
        warnings.warn(reason, UnverifiedModelWarning, stacklevel=3)


@dataclass
class TensorSpec:
    name: str
    shape: list  # ints for fixed axes, names ("batch", "num_points") for dynamic ones
    dtype: str  # numpy dtype name: "float32", "float16", "uint8", "int64"

    def check(self) -> "TensorSpec":
        """ModelFileError unless this is a tensor as metadata describes one (a name, sizes >= 0
        and axis names, a numpy dtype name)."""
        if not isinstance(self.name, str) or not self.name:
            raise ModelFileError(f"a tensor's name is {self.name!r:.60}, not a name")
        if not isinstance(self.shape, list) or not all(
                (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (isinstance(d, str) and d)
                for d in self.shape):
            raise ModelFileError(f"tensor {self.name!r}: shape {self.shape!r:.60} is not a list of sizes and axis "
                                 "names")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ModelFileError(f"tensor {self.name!r}: dtype {self.dtype!r:.60} is not one of {DTYPES}")
        return self

    def dynamic_axes(self) -> dict[int, str]:
        return {i: s for i, s in enumerate(self.shape) if isinstance(s, str)}


@dataclass
class ModelInfo:
    kind: str
    config: dict
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str = "fp32"
    variant: str = ""
    companion: str | None = None  # SimCMF: the file name of the other graph of the pair
    # GoPT: the label the graph writes where a pixel's logits are NaN / infinite (None: files
    # that do not flag them; the runtime then fetches the logits to check them).
    nonfinite_label: int | None = None
    versions: dict = field(default_factory=dict)
    # GoPT exported with --uint8-input: the graph takes raw frames and preprocesses them itself
    # ({"color_order": "bgr", "aux_dtype": "uint8" | "uint16", "depth_units": 0.001}); None: it
    # takes normalised float32 tensors.
    frame_input: dict | None = None
    # Q/DQ models (python -m export.quantize): how they were quantized and calibrated.
    quantization: dict | None = None
    schema: str = SCHEMA
    # Custom nodes the graph needs (runtime.backends.plugin_ops): TensorRT plugins of namespace "gopt"
    # from libgopt_trt_plugins.so, onnxruntime-extensions ops in ONNX Runtime. Empty: standard ONNX only.
    plugins: list = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ModelFileError(f"unknown model kind {self.kind!r}; expected one of {KINDS}")
        for name, types in FIELD_TYPES.items():
            value = getattr(self, name)
            if not (value is None and None in types) and (
                    not isinstance(value, tuple(t for t in types if t)) or isinstance(value, bool)):
                raise ModelFileError(f"metadata field {name!r} is {type(value).__name__} {value!r:.60}, expected "
                                     + " or ".join("null" if t is None else t.__name__ for t in types))
        if not all(isinstance(p, str) for p in self.plugins):
            raise ModelFileError(f"metadata field 'plugins' must list names, got {self.plugins!r:.60}")
        self.inputs, self.outputs = self._specs("inputs", self.inputs), self._specs("outputs", self.outputs)

    @staticmethod
    def _specs(name: str, specs) -> list:
        if not isinstance(specs, list) or not specs:
            raise ModelFileError(f"metadata field {name!r} must list the graph's tensors, got {specs!r:.60}")
        out = []
        for t in specs:
            if isinstance(t, TensorSpec):
                out.append(t.check())
            elif isinstance(t, dict) and sorted(t) == ["dtype", "name", "shape"]:
                out.append(TensorSpec(**t).check())
            else:
                raise ModelFileError(f"metadata field {name!r}: {t!r:.60} is not a tensor (name, shape, dtype)")
        return out

    @property
    def untrained(self) -> bool:
        return bool(self.config.get("untrained", False))

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelInfo":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ModelFileError(f"{source}: its {META_KEY} metadata is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ModelFileError(f"{source}: its {META_KEY} metadata is a JSON {type(d).__name__}, not an object")
        if d.get("schema") != SCHEMA:
            raise ModelFileError(f"{source}: metadata schema {d.get('schema')!r:.60}, this runtime reads {SCHEMA!r}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ModelFileError(f"{source}: malformed {META_KEY} metadata ({e})") from None
        except ModelFileError as e:
            raise ModelFileError(f"{source}: {e}") from None


def gopt_model_info(config: dict, batch: int | str, precision: str = "fp32", versions: dict | None = None,
                    nonfinite_label: int | None = None, frame_input: dict | None = None) -> ModelInfo:
    """The GoPT graph's description: rgb + aux in, logits + uint8 labels out (``nonfinite_label``
    where the graph flags pixels with non-finite logits). Inputs are normalised float32
    [B, C, H, W], or with ``frame_input`` the camera's frames: ``rgb`` uint8 [B, H, W, 3] and
    ``aux`` uint8 [B, H, W, C_m], or for 16-bit sensors the frames' little-endian bytes
    [B, H, W, C_m, 2] (TensorRT has no 16-bit integer type)."""
    H, W = config["img_size"]
    K = config["num_classes"]
    C = config["aux_channels"]
    if frame_input is None:
        inputs = [TensorSpec("rgb", [batch, 3, H, W], "float32"), TensorSpec("aux", [batch, C, H, W], "float32")]
    else:
        aux_shape = [batch, H, W, C] + ([2] if frame_input["aux_dtype"] == "uint16" else [])
        inputs = [TensorSpec("rgb", [batch, H, W, 3], "uint8"), TensorSpec("aux", aux_shape, "uint8")]
    return ModelInfo(
        kind="gopt", config=dict(config), precision=precision, versions=dict(versions or {}),
        nonfinite_label=nonfinite_label,
        variant=f"GoPT D={config['embed_dim']} depth={config['depth']} RGB-{config['modality']} K={K}",
        frame_input=dict(frame_input) if frame_input else None, inputs=inputs,
        outputs=[TensorSpec("logits", [batch, K, H, W], "float32"), TensorSpec("labels", [batch, H, W], "uint8")])


def simcmf_model_infos(config: dict, batch: int | str, precision: str = "fp32", versions: dict | None = None,
                       encoder_name: str | None = None, decoder_name: str | None = None):
    """SimCMF's two graphs: the encoder (x -> embeddings) and the decoder (embeddings and the
    user's clicks -> low-res logits, IoU); N clicks is a dynamic axis."""
    S, C = config["img_size"], config["in_chans"]
    g, low, E = S // config["patch_size"], S // 4, config["prompt_embed_dim"]
    common = dict(config=dict(config), precision=precision, variant=config.get("description") or "SimCMF",
                  versions=dict(versions or {}))
    encoder = ModelInfo(kind="simcmf_encoder", companion=decoder_name, **common,
                        inputs=[TensorSpec("x", [batch, C, S, S], "float32")],
                        outputs=[TensorSpec("embeddings", [batch, E, g, g], "float32")])
    decoder = ModelInfo(kind="simcmf_decoder", companion=encoder_name, **common,
                        inputs=[TensorSpec("embeddings", [batch, E, g, g], "float32"),
                                TensorSpec("point_coords", [batch, "num_points", 2], "float32"),
                                TensorSpec("point_labels", [batch, "num_points"], "int64")],
                        outputs=[TensorSpec("low_res_logits", [batch, 1, low, low], "float32"),
                                 TensorSpec("iou", [batch, 1], "float32")])
    return encoder, decoder


def info_from_metadata_map(props: dict, source: str) -> ModelInfo:
    if META_KEY not in props:
        raise ModelFileError(f"{source}: no {META_KEY!r} metadata; export the model with "
                             "`python -m export.onnx` so that it carries its configuration")
    return ModelInfo.from_json(props[META_KEY], source)


def read_onnx_info(path) -> ModelInfo:
    """The metadata of an ONNX file (the graph's weights are not needed for this)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    return info_from_metadata_map({p.key: p.value for p in model.metadata_props}, str(path))
