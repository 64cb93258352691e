"""A model file's metadata checked against its own graph, once, when it is loaded.

The runtime sizes, normalises and interprets everything from the metadata (``metadata.py``);
an edited or copied-over metadata block would otherwise fail at the first frame inside the
backend, or not at all (labels above the class count). Every backend calls ``check_model``
with the tensors its graph really has (ONNX Runtime: the session's inputs / outputs;
TensorRT: the engine's I/O tensors; PyTorch: the config the model was built from), and every
mismatch is one ``ModelFileError`` naming the field, what the metadata says and what the
graph has.
"""
from __future__ import annotations

from numbers import Real

from .metadata import ModelFileError, ModelInfo, TensorSpec

# ONNX Runtime's type strings as numpy dtype names.
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16",
             "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
             "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16"}


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _numbers(v, n: int, positive: bool = False) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == n and
            all(isinstance(x, Real) and not isinstance(x, bool) and (x > 0 or not positive) for x in v))


def _gopt_config_problems(cfg: dict) -> list[tuple[str, str]]:
    """(key, what it must be) for every required GoPT key that is missing or malformed."""
    C = cfg.get("aux_channels")
    rules = {
        "img_size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_positive_int, v)),
                     "[H, W], two positive integers"),
        "num_classes": (lambda v: _positive_int(v) and v <= 256, "an integer from 1 to 256"),
        "aux_channels": (_positive_int, "a positive integer"),
        "modality": (lambda v: isinstance(v, str) and v != "", "a modality name"),
        "rgb_mean": (lambda v: _numbers(v, 3), "3 numbers"),
        "rgb_std": (lambda v: _numbers(v, 3, positive=True), "3 positive numbers"),
        "aux_mean": (lambda v: _positive_int(C) and _numbers(v, C), f"{C} numbers (aux_channels)"),
        "aux_std": (lambda v: _positive_int(C) and _numbers(v, C, positive=True),
                    f"{C} positive numbers (aux_channels)"),
    }
    return [(k, want) for k, (ok, want) in rules.items() if k not in cfg or not ok(cfg[k])]


def _simcmf_config_problems(cfg: dict) -> list[tuple[str, str]]:
    C = cfg.get("in_chans")
    optional_numbers = (lambda positive: lambda v: v is None or (_positive_int(C) and _numbers(v, C, positive)))
    rules = {
        "img_size": (_positive_int, "a positive integer"),
        "in_chans": (_positive_int, "a positive integer"),
        "patch_size": (lambda v: _positive_int(v) and _positive_int(cfg.get("img_size")) and cfg["img_size"] % v == 0,
                       "a positive integer dividing img_size"),
        "prompt_embed_dim": (_positive_int, "a positive integer"),
        "pixel_mean": (optional_numbers(False), f"null or {C} numbers (in_chans)"),
        "pixel_std": (optional_numbers(True), f"null or {C} positive numbers (in_chans)"),
        "modality": (lambda v: v is None or isinstance(v, str), "null or a modality name"),
        "pixel_scale": (lambda v: v is None or isinstance(v, str), "null or a text"),
        "minmax_channels": (lambda v: v is None or (isinstance(v, (list, tuple)) and _positive_int(C) and
                                                    all(isinstance(c, int) and 0 <= c < C for c in v)),
                            f"null or channel indices below {C}"),
    }
    return [(k, want) for k, (ok, want) in rules.items() if k not in cfg or not ok(cfg[k])]


def check_config(info: ModelInfo, source: str) -> None:
    """Every config key the runtime reads is present and well formed."""
    cfg = info.config
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{source}: metadata config is a {type(cfg).__name__}, not an object")
    problems = _gopt_config_problems(cfg) if info.kind == "gopt" else _simcmf_config_problems(cfg)
    if problems:
        key, want = problems[0]
        found = "missing" if key not in cfg else f"{cfg[key]!r}"
        raise ModelFileError(f"{source}: metadata config.{key} must be {want}, found {found}")


def _expected_dims(info: ModelInfo) -> dict[str, dict[int, int]]:
    """{tensor name: {axis: size}} that follow from the config, whatever the input layout."""
    cfg = info.config
    if info.kind == "gopt":
        (H, W), K = cfg["img_size"], cfg["num_classes"]
        dims = {"logits": {1: K, 2: H, 3: W}, "labels": {1: H, 2: W}}
        rgb = _find(info.inputs, "rgb")
        if rgb is not None and rgb.dtype.startswith("float"):  # normalised [B, C, H, W] inputs
            dims.update(rgb={1: 3, 2: H, 3: W}, aux={1: cfg["aux_channels"], 2: H, 3: W})
        return dims
    S, g = cfg["img_size"], cfg["img_size"] // cfg["patch_size"]
    E = cfg["prompt_embed_dim"]
    if info.kind == "simcmf_encoder":
        return {"x": {1: cfg["in_chans"], 2: S, 3: S}, "embeddings": {1: E, 2: g, 3: g}}
    return {"embeddings": {1: E, 2: g, 3: g}, "low_res_logits": {1: 1, 2: S // 4, 3: S // 4}}


def _config_field(info: ModelInfo, name: str, axis: int) -> str:
    if info.kind == "gopt":
        first = {"logits": "num_classes", "aux": "aux_channels", "rgb": "rgb channels (3)"}
        return first.get(name, "img_size") if axis == 1 and name != "labels" else "img_size"
    if name == "x":
        return "in_chans" if axis == 1 else "img_size"
    if name == "embeddings":
        return "prompt_embed_dim" if axis == 1 else "img_size / patch_size"
    return "img_size"


def check_specs_against_config(info: ModelInfo, source: str) -> None:
    """The metadata's tensor specs agree with its config (the class axis of the logits with
    num_classes, spatial axes with img_size, ...)."""
    for name, dims in _expected_dims(info).items():
        spec = _find(info.inputs + info.outputs, name)
        if spec is None:
            raise ModelFileError(f"{source}: metadata has no tensor {name!r}, a {info.kind} model needs it")
        for axis, want in dims.items():
            have = spec.shape[axis] if axis < len(spec.shape) else None
            if have != want:
                raise ModelFileError(f"{source}: metadata config.{_config_field(info, name, axis)} gives {name!r} "
                                     f"axis {axis} = {want}, but its tensor spec says {spec.shape}")


def _find(specs: list[TensorSpec], name: str) -> TensorSpec | None:
    return next((s for s in specs if s.name == name), None)


def _fixed(dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def check_graph(info: ModelInfo, inputs: list[TensorSpec], outputs: list[TensorSpec], source: str) -> None:
    """The graph's inputs / outputs are the metadata's: names, ranks, fixed axes, dtypes.
    Graph dims that are not non-negative ints (None, a symbol, -1) are dynamic."""
    for role, meta, graph in (("inputs", info.inputs, inputs), ("outputs", info.outputs, outputs)):
        if sorted(s.name for s in meta) != sorted(s.name for s in graph):
            raise ModelFileError(f"{source}: the graph's {role} are {[s.name for s in graph]}, its metadata says "
                                 f"{[s.name for s in meta]}: the metadata belongs to another model")
        for m in meta:
            g = _find(graph, m.name)
            if len(g.shape) != len(m.shape):
                raise ModelFileError(f"{source}: {m.name!r} has rank {len(g.shape)} {list(g.shape)} in the graph, "
                                     f"{len(m.shape)} {m.shape} in the metadata")
            for axis, (want, have) in enumerate(zip(m.shape, g.shape)):
                if _fixed(want) and _fixed(have) and want != have:
                    raise ModelFileError(f"{source}: {m.name!r} axis {axis} is {have} in the graph, {want} in the "
                                         f"metadata ({list(g.shape)} vs {m.shape})")
                if role == "inputs" and not _fixed(want) and _fixed(have):
                    raise ModelFileError(f"{source}: {m.name!r} axis {axis} is fixed at {have} in the graph, dynamic "
                                         f"({want!r}) in the metadata")
            if g.dtype != m.dtype:
                raise ModelFileError(f"{source}: {m.name!r} is {g.dtype} in the graph, {m.dtype} in the metadata")


def check_model(info: ModelInfo, source: str, inputs: list[TensorSpec] | None = None,
                outputs: list[TensorSpec] | None = None) -> None:
    """Config keys, specs against config, and (given the graph's tensors) specs against the graph."""
    check_config(info, source)
    check_specs_against_config(info, source)
    if inputs is not None:
        check_graph(info, inputs, outputs or [], source)


def ort_specs(args) -> list[TensorSpec]:
    """ONNX Runtime ``NodeArg``s (``session.get_inputs()``) as TensorSpecs."""
    return [TensorSpec(a.name, list(a.shape or []), ORT_TYPES.get(a.type, a.type)) for a in args]
