"""Labelled multi-modal data sets as they are published: their layouts, class lists and ignore labels.

    frames = open_dataset("data/MFNet", "mfnet", split="test")      # or format="auto"
    for f in frames:           # Sample(name, rgb, aux, labels, sources) or Skipped(name, sources, reason)
        ...

Every reader yields the colour frame as OpenCV decodes it (H x W x 3 uint8, BGR), the
auxiliary frame in the values ``runtime.preprocess`` documents (thermal uint8, depth float32
metres with 0 for holes, HHA H x W x 3 uint8, SAR as stored) and the labels as H x W uint8
class indices 0..K-1 of the data set's class list, with ``IGNORE`` (255) wherever the data set
marks a pixel as belonging to no class. A frame that cannot be read (a missing or corrupt
file, label values outside the class list) is yielded as ``Skipped`` with the reason, never
dropped. A folder that does not have the layout raises ``LayoutError`` with one line saying
what was expected and what was found.

The layouts, checked against the data sets' own releases and loaders (read, not copied):

mfnet (RGB-T, 9 classes, nothing ignored): ``DIR/images/NAME.png`` (4 channels: colour +
    thermal), ``DIR/labels/NAME.png`` (uint8 0-8), ``DIR/{train,val,test,test_day,test_night}.txt``
    (one NAME a line): the MFNet release as RTFNet redistributes it (yuxiangsun/RTFNet,
    util/MF_dataset.py). Class 0 "unlabeled" is a class like the others: RTFNet's evaluation
    (test.py, util/util.py: "must consider the unlabeled") counts it in the mean IoU.
pst900 (RGB-T, 5 classes, nothing ignored): ``DIR/{train,test}/{rgb,thermal,labels}/NAME.png``;
    thermal/ is FLIR's 8-bit AGC image (thermal_raw/ 16-bit and depth/ are not used), labels
    uint8 0-4 (ShreyasSkandanS/pst900_thermal_rgb: README.md, toolkit/utilities.py,
    pstnet/code/pst_data_definition.py, which lists the frames from labels/). Background is a
    class (PSTNet's IoU counts it).
nyuv2 (RGB-D, 40 classes, 0 = void ignored), two layouts of the 795 / 654 split:
    ESANet's (TUI-NICR/ESANet, src/datasets/nyuv2/: prepare_dataset.py, nyuv2.py):
    ``DIR/{train,test}.txt`` (ids), ``DIR/{train,test}/rgb/ID.png``, ``.../depth/ID.png`` (uint16
    millimetres, filled), ``.../labels_40/ID.png`` (uint8, 0 void, 1-40);
    CMX's (huaaaliu/RGBX_Semantic_Segmentation: README.md, config.py, dataloader/RGBXDataset.py,
    which maps label 0 to its ignore value 255 by ``gt - 1``): ``DIR/RGB/NAME.jpg``,
    ``DIR/HHA/NAME.jpg`` (or ``DIR/Depth/NAME.png``), ``DIR/Label/NAME.png``, ``DIR/{train,test}.txt``.
sunrgbd (RGB-D, 37 classes, 0 = void ignored), ESANet's layout (src/datasets/sunrgbd/:
    prepare_dataset.py, pytorch_dataset.py, sunrgbd.py): ``DIR/{train,test}_{rgb,depth,label}.txt``
    list paths relative to DIR of ``.../image/*.jpg``, ``.../depth_bfx/*.png`` and
    ``.../label/label.npy`` (uint8, 0 void, 1-37). Depth PNGs hold the SUN RGB-D toolbox's
    encoding: millimetres rotated left by 3 bits in 16 (its read3dPoints.m / depthRead.m undo
    it with ``bitor(bitshift(d, -3), bitshift(d, 13)) / 1000`` metres; done here the same way).
    The CMX layout above (5285 / 5050 frames) is read too.
whu-os (RGB-SAR, WHU-OPT-SAR, 7 classes, 0 = background ignored): the release
    (AmberHen/WHU-OPT-SAR-dataset, README.md: "0->background, 10->farmland, 20->city,
    30->village, 40->water, 50->forest, 60->road, 70->others"; 100 GF-1 optical (RGB + NIR)
    and GF-3 SAR images of 5556 x 3704 pixels; "The division of the dataset.txt": 80 train, 20
    test): ``DIR/{optical,sar,lbl}/NAME.tif``, evaluated as 256 x 256 tiles (what the published
    models train and test on; edge strips narrower than a tile are not evaluated); or the
    tiled layout ``DIR/{train,val,test}/{opt,sar,lbl}/NAME.tif`` (yisun98/SOLC, README.md,
    dataset.py), whose labels may already be converted to 0-7 (tools/.../convert_label.py).
    Optical images give their first three bands as colour (OpenCV decodes TIFFs as BGR), NIR
    is not used.
folder (any modality, the model's classes): ``DIR/rgb/``, ``DIR/aux/``, ``DIR/labels/``, files
    paired by name stem; labels one-channel PNGs of class indices, ``ignore_index`` (default
    255) marks unlabelled pixels.

Labels stored as palette PNGs are read as their indices (Pillow); OpenCV alone would decode
them to colours.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .metrics import IGNORE

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FORMATS = ("mfnet", "pst900", "nyuv2", "sunrgbd", "whu-os", "folder")

# ---- class lists (one place; sources in the module docstring) -----------------------------------

# yuxiangsun/RTFNet util/util.py: "0:unlabeled, 1:car, 2:person, 3:bike, 4:curve, 5:car_stop, ..."
MFNET_CLASSES = ("unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump")
# PST900 label indices 0-4 (its README); names in the order of the PST900 paper's classes, as public
# loaders list them (e.g. the DELIVER / semseg "PST" dataset class).
PST900_CLASSES = ("background", "fire_extinguisher", "backpack", "hand_drill", "survivor")
# TUI-NICR/ESANet src/datasets/nyuv2/nyuv2.py CLASS_NAMES_40 without 'void' (CMX's config.py: the same 40).
NYUV2_40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop")
# TUI-NICR/ESANet src/datasets/sunrgbd/sunrgbd.py CLASS_NAMES_ENGLISH without 'void'.
SUNRGBD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "fridge", "tv", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag")
# AmberHen/WHU-OPT-SAR-dataset README.md: label values 10..70; 0 (background) is ignored.
WHU_OS_CLASSES = ("farmland", "city", "village", "water", "forest", "road", "others")
# "The division of the dataset.txt" of the WHU-OPT-SAR release: its 20 test images.
WHU_OS_TEST = (
    "NH49E001014", "NH49E001017", "NH49E002012", "NH49E002016", "NH49E003014", "NH49E003024", "NH49E004011",
    "NH49E005011", "NH49E005019", "NH49E006019", "NH49E007014", "NH49E008013", "NH49E009017", "NH49E010020",
    "NH49E011024", "NH49E012020", "NH49E013010", "NH50E007002", "NH50E011005", "NH50E014003")
WHU_OS_TILE = 256


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is: its auxiliary modalities, classes and what it ignores."""

    name: str
    title: str
    modalities: tuple  # the auxiliary modalities its layouts provide
    classes: tuple | None  # None: the model's (folder layout)
    ignored: str  # what no metric counts, in words


SPECS = {
    "mfnet": DatasetSpec("mfnet", "MFNet (RGB-T)", ("thermal",), MFNET_CLASSES,
                         "nothing (class 0 'unlabeled' is counted)"),
    "pst900": DatasetSpec("pst900", "PST900 (RGB-T)", ("thermal",), PST900_CLASSES,
                          "nothing (class 0 'background' is counted)"),
    "nyuv2": DatasetSpec("nyuv2", "NYUDv2, 40 classes (RGB-D)", ("depth", "hha"), NYUV2_40_CLASSES,
                         "label 0 (void)"),
    "sunrgbd": DatasetSpec("sunrgbd", "SUN RGB-D, 37 classes (RGB-D)", ("depth", "hha"), SUNRGBD_CLASSES,
                           "label 0 (void)"),
    "whu-os": DatasetSpec("whu-os", "WHU-OPT-SAR (RGB-SAR)", ("sar",), WHU_OS_CLASSES, "label 0 (background)"),
    "folder": DatasetSpec("folder", "folder of rgb/, aux/, labels/", ("thermal", "depth", "hha", "sar"), None,
                          "the ignore index (default 255)"),
}

EXPECTED = {
    "mfnet": "DIR/images/, DIR/labels/ and DIR/SPLIT.txt (MFNet as RTFNet distributes it)",
    "pst900": "DIR/SPLIT/rgb/, DIR/SPLIT/thermal/ and DIR/SPLIT/labels/ (PST900)",
    "nyuv2": "DIR/SPLIT.txt with DIR/SPLIT/rgb/, depth/, labels_40/ (ESANet) or DIR/RGB/, DIR/HHA/ or DIR/Depth/, "
             "DIR/Label/ (CMX)",
    "sunrgbd": "DIR/SPLIT_rgb.txt, DIR/SPLIT_depth.txt, DIR/SPLIT_label.txt (ESANet) or DIR/RGB/, DIR/HHA/ or "
               "DIR/Depth/, DIR/Label/ with DIR/SPLIT.txt (CMX)",
    "whu-os": "DIR/optical/, DIR/sar/, DIR/lbl/ (the release) or DIR/SPLIT/opt/, sar/, lbl/ (256 x 256 tiles)",
    "folder": "DIR/rgb/, DIR/aux/ and DIR/labels/ with files paired by name",
}


class LayoutError(ValueError):
    """A folder without the expected layout (one line: what was expected, what was found)."""


@dataclass
class Sample:
    name: str
    rgb: np.ndarray  # H x W x 3 uint8, BGR
    aux: np.ndarray  # thermal uint8, depth float32 metres, HHA H x W x 3 uint8, SAR as stored
    labels: np.ndarray  # H x W uint8 class indices, IGNORE where no class
    sources: tuple = ()


@dataclass
class Skipped:
    name: str
    sources: tuple
    reason: str

    def line(self) -> str:
        return f"skipped {self.name} ({', '.join(self.sources) or self.name}): {self.reason}"


@dataclass
class Item:
    """One entry of a split: a frame, or (WHU-OPT-SAR release) a large image read as tiles."""

    name: str
    paths: dict  # "rgb", "aux", "labels" -> Path


@dataclass
class LabelledFrames:
    """One split of a data set: its items, read one at a time by ``read`` (item -> frames)."""

    spec: DatasetSpec
    root: Path
    split: str
    layout: str  # which published layout, in words
    items: list
    read: Callable  # Item -> Iterator[Sample | Skipped]
    modality: str
    classes: tuple
    notes: list = field(default_factory=list)  # what a user should know about this reading

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample | Skipped]:
        for item in self.items:
            yield from self.read(item)


# ---- reading files ------------------------------------------------------------------------------

def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"no file {path.name} in {path.parent}")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"{path.name}: not a readable image")
    return img


def read_label_file(path: Path) -> np.ndarray:
    """A label map as stored: .npy, or an image (palette PNGs as their indices)."""
    if not path.is_file():
        raise ValueError(f"no label file {path.name} in {path.parent}")
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path.name}: not a readable .npy label map ({e})") from None
    elif _is_palette_png(path):
        try:
            from PIL import Image
        except ImportError:
            raise ValueError(f"{path.name} is a palette PNG; reading its class indices needs Pillow "
                             "(pip install pillow)") from None
        with Image.open(path) as im:
            raw = np.asarray(im)
    else:
        raw = read_image(path)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise ValueError(f"{path.name}: labels must be one channel of class indices, got shape {raw.shape} "
                         "(a colour-coded label picture?)")
    if raw.dtype.kind not in "ui":
        raise ValueError(f"{path.name}: labels must be integers, got {raw.dtype}")
    return raw


def _is_palette_png(path: Path) -> bool:
    if path.suffix.lower() != ".png":
        return False
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] == 3  # IHDR colour type 3


def _values(raw: np.ndarray, allowed: str) -> str:
    bad = np.unique(raw)[:10].tolist()
    return f"label values {bad} are not {allowed}"


def labels_identity(raw: np.ndarray, K: int, ignore: int | None = None) -> np.ndarray:
    """Class indices stored as they are (0..K-1), ``ignore`` mapped to IGNORE."""
    out = raw.astype(np.int64)
    if ignore is not None:
        out[raw == ignore] = IGNORE
    bad = (out != IGNORE) & ((out < 0) | (out >= K))
    if bad.any():
        raise ValueError(_values(raw[bad], f"classes 0-{K - 1}" + (f" or the ignore value {ignore}"
                                                                   if ignore is not None else "")))
    return out.astype(np.uint8)


def labels_void_first(raw: np.ndarray, K: int) -> np.ndarray:
    """0 = void -> IGNORE; 1..K -> 0..K-1 (NYUDv2, SUN RGB-D)."""
    if raw.size and (raw.min() < 0 or raw.max() > K):
        raise ValueError(_values(raw[(raw < 0) | (raw > K)], f"0 (void) or classes 1-{K}"))
    out = raw.astype(np.int64) - 1
    out[raw == 0] = IGNORE
    return out.astype(np.uint8)


def labels_whu(raw: np.ndarray) -> np.ndarray:
    """WHU-OPT-SAR: 0 background -> IGNORE; 10, 20, ..., 70 (the release) or 1..7 (tiles converted
    as SOLC does) -> classes 0..6."""
    K = len(WHU_OS_CLASSES)
    values = np.unique(raw)
    if np.isin(values, np.arange(0, 10 * K + 1, 10)).all():
        out = raw.astype(np.int64) // 10 - 1
    elif np.isin(values, np.arange(0, K + 1)).all():
        out = raw.astype(np.int64) - 1
    else:
        raise ValueError(_values(values[~np.isin(values, np.arange(0, 10 * K + 1, 10))],
                                 "0 (background) and 10-70 (the release) or 0-7 (converted tiles)"))
    out[raw == 0] = IGNORE
    return out.astype(np.uint8)


def depth_mm(raw: np.ndarray, name: str) -> np.ndarray:
    """uint16 millimetres -> float32 metres (0 stays 0: a hole)."""
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{name}: depth must be a one-channel uint16 PNG in millimetres, got {raw.dtype} "
                         f"{raw.shape} (8-bit depth pictures carry no metric depth)")
    return raw.astype(np.float32) / 1000.0


def depth_sunrgbd(raw: np.ndarray, name: str) -> np.ndarray:
    """SUN RGB-D toolbox encoding (millimetres rotated left by 3 of 16 bits) -> float32 metres."""
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{name}: SUN RGB-D depth must be a one-channel uint16 PNG, got {raw.dtype} {raw.shape}")
    mm = (raw >> np.uint16(3)) | (raw << np.uint16(13))
    return mm.astype(np.float32) / 1000.0


def grey(img: np.ndarray) -> np.ndarray:
    """A one-channel sensor image decoded with three identical channels -> H x W."""
    if img.ndim == 3 and img.shape[2] >= 3 and (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all():
        return np.ascontiguousarray(img[..., 0])
    return img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img


def _sources(item: Item) -> tuple:
    """The item's files as FOLDER/NAME (several folders hold files of one name)."""
    return tuple(f"{p.parent.name}/{p.name}" for p in dict.fromkeys(item.paths.values()))


def _frame(item: Item, read: Callable[[], tuple]) -> Iterator[Sample | Skipped]:
    """One Sample from ``read() -> (rgb, aux, labels)``, or Skipped with the reason."""
    sources = _sources(item)
    try:
        rgb, aux, labels = read()
        if rgb.shape[:2] != labels.shape:
            raise ValueError(f"the colour frame is {rgb.shape[1]}x{rgb.shape[0]} but its labels are "
                             f"{labels.shape[1]}x{labels.shape[0]} (W x H)")
    except (ValueError, OSError, cv2.error) as e:
        yield Skipped(item.name, sources, " ".join(str(e).split()))
        return
    yield Sample(item.name, rgb, aux, labels, sources)


def _colour(path: Path) -> np.ndarray:
    img = read_image(path)
    if img.ndim == 2 or img.shape[2] == 1:
        raise ValueError(f"{path.name}: a one-channel image where a colour frame was expected")
    if img.dtype != np.uint8:
        raise ValueError(f"{path.name}: colour frames must be 8-bit, got {img.dtype}")
    return np.ascontiguousarray(img[..., :3])


# ---- layouts ------------------------------------------------------------------------------------

def _listing(root: Path) -> str:
    if not root.is_dir():
        return "no such folder" if not root.exists() else "a file, not a folder"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    if not entries:
        return "an empty folder"
    return ", ".join(entries[:10]) + (f", ... ({len(entries)} entries)" if len(entries) > 10 else "")


def _split_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS
            and not p.name.startswith(".")} if folder.is_dir() else {}


def _splits(names) -> str:
    return ", ".join(sorted(names)) or "none"


def _mfnet(root: Path, split: str, modality: str) -> LabelledFrames:
    splits = {p.stem for p in root.glob("*.txt")}
    if not ((root / "images").is_dir() and (root / "labels").is_dir() and splits):
        raise LayoutError(f"{root}: expected {EXPECTED['mfnet']}; found {_listing(root)}")
    if split not in splits:
        raise LayoutError(f"{root}: no {split}.txt; this MFNet folder has splits {_splits(splits)}")
    items = [Item(n, {"frame": root / "images" / f"{n}.png", "labels": root / "labels" / f"{n}.png"})
             for n in _split_names(root / f"{split}.txt")]

    def read(item):
        def load():
            img = read_image(item.paths["frame"])
            if img.ndim != 3 or img.shape[2] != 4 or img.dtype != np.uint8:
                raise ValueError(f"{item.paths['frame'].name}: expected a 4-channel uint8 PNG (colour + thermal), "
                                 f"got {img.dtype} {img.shape}")
            labels = labels_identity(read_label_file(item.paths["labels"]), len(MFNET_CLASSES))
            return np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3]), labels
        return _frame(item, load)

    return LabelledFrames(SPECS["mfnet"], root, split, "MFNet as RTFNet distributes it", items, read, modality,
                          MFNET_CLASSES)


def _split_folder(root: Path, split: str, subfolders: tuple[str, ...], name: str, title: str) -> Path:
    """``root/split`` of a layout whose splits are folders holding ``subfolders``; LayoutError
    naming what was expected and what is there."""
    splits = {p.name for p in root.iterdir() if all((p / d).is_dir() for d in subfolders)} \
        if root.is_dir() else set()
    if not splits:
        raise LayoutError(f"{root}: expected {EXPECTED[name]}; found {_listing(root)}")
    if split not in splits:
        raise LayoutError(f"{root}: no {split}/ split; this {title} folder has {_splits(splits)}")
    return root / split


def _pst900(root: Path, split: str, modality: str) -> LabelledFrames:
    d = _split_folder(root, split, ("rgb", "labels"), "pst900", "PST900")
    if not (d / "thermal").is_dir():
        raise LayoutError(f"{d}: expected rgb/, thermal/ and labels/; found {_listing(d)}")
    items = [Item(p.stem, {"rgb": d / "rgb" / p.name, "aux": d / "thermal" / p.name, "labels": p})
             for p in sorted((d / "labels").glob("*.png"))]  # PST900's own loader lists the labels

    def read(item):
        def load():
            thermal = grey(read_image(item.paths["aux"]))
            return (_colour(item.paths["rgb"]), thermal,
                    labels_identity(read_label_file(item.paths["labels"]), len(PST900_CLASSES)))
        return _frame(item, load)

    return LabelledFrames(SPECS["pst900"], root, split, "PST900 (thermal/: 8-bit AGC)", items, read, modality,
                          PST900_CLASSES)


def _cmx(root: Path, split: str, modality: str, spec: DatasetSpec) -> LabelledFrames:
    """The CMX (RGBX_Semantic_Segmentation) layout of NYUDv2 and SUN RGB-D."""
    aux_dir = root / ("HHA" if modality == "hha" else "Depth")
    if not (root / f"{split}.txt").is_file():
        raise LayoutError(f"{root}: no {split}.txt; this CMX-layout folder has splits "
                          f"{_splits(p.stem for p in root.glob('*.txt'))}")
    if not aux_dir.is_dir():
        raise LayoutError(f"{root}: a {modality} model needs {aux_dir.name}/ in the CMX layout; found {_listing(root)}")
    rgb, aux, lab = _stems(root / "RGB"), _stems(aux_dir), _stems(root / "Label")
    K = len(spec.classes)
    items = []
    for line in _split_names(root / f"{split}.txt"):
        n = Path(line.split()[0]).stem  # "NAME", or "RGB/NAME.jpg Label/NAME.png" as some copies list it
        items.append(Item(n, {"rgb": rgb.get(n, root / "RGB" / f"{n}.jpg"), "aux": aux.get(n, aux_dir / f"{n}.png"),
                              "labels": lab.get(n, root / "Label" / f"{n}.png")}))

    def read(item):
        def load():
            raw = read_image(item.paths["aux"])
            if modality == "hha":
                if raw.ndim != 3 or raw.shape[2] != 3 or raw.dtype != np.uint8:
                    raise ValueError(f"{item.paths['aux'].name}: HHA must be a 3-channel 8-bit image, got {raw.dtype} "
                                     f"{raw.shape}")
                aux_frame = raw  # as OpenCV decodes it (BGR order), as CMX trains on it
            else:
                aux_frame = depth_mm(raw, item.paths["aux"].name)
            return (_colour(item.paths["rgb"]), aux_frame,
                    labels_void_first(read_label_file(item.paths["labels"]), K))
        return _frame(item, load)

    notes = [] if modality == "hha" else [
        "Depth/ is read as uint16 millimetres: the CMX release does not document its depth unit"]
    return LabelledFrames(spec, root, split, f"{spec.title.split(',')[0]} in CMX's layout", items, read, modality,
                          spec.classes, notes)


def _nyuv2(root: Path, split: str, modality: str) -> LabelledFrames:
    spec = SPECS["nyuv2"]
    if (root / "Label").is_dir() and (root / "RGB").is_dir():
        return _cmx(root, split, modality, spec)
    splits = {p.stem for p in root.glob("*.txt") if (root / p.stem / "labels_40").is_dir()} if root.is_dir() else set()
    if not splits:
        raise LayoutError(f"{root}: expected {EXPECTED['nyuv2']}; found {_listing(root)}")
    if split not in splits:
        raise LayoutError(f"{root}: no {split} split; this NYUDv2 folder has {_splits(splits)}")
    if modality == "hha":
        raise LayoutError(f"{root}: ESANet's NYUDv2 layout has depth, no HHA images; this model takes HHA")
    d = root / split
    items = [Item(n, {"rgb": d / "rgb" / f"{n}.png", "aux": d / "depth" / f"{n}.png",
                      "labels": d / "labels_40" / f"{n}.png"}) for n in _split_names(root / f"{split}.txt")]

    def read(item):
        def load():
            return (_colour(item.paths["rgb"]), depth_mm(read_image(item.paths["aux"]), item.paths["aux"].name),
                    labels_void_first(read_label_file(item.paths["labels"]), len(NYUV2_40_CLASSES)))
        return _frame(item, load)

    return LabelledFrames(spec, root, split, "NYUDv2 in ESANet's layout (depth/: filled, millimetres)", items,
                          read, modality, NYUV2_40_CLASSES)


def _sunrgbd(root: Path, split: str, modality: str) -> LabelledFrames:
    spec = SPECS["sunrgbd"]
    if (root / "Label").is_dir() and (root / "RGB").is_dir():
        return _cmx(root, split, modality, spec)
    kinds = ("rgb", "depth", "label")
    splits = {s for s in ("train", "test") if all((root / f"{s}_{k}.txt").is_file() for k in kinds)}
    if not splits:
        raise LayoutError(f"{root}: expected {EXPECTED['sunrgbd']}; found {_listing(root)}")
    if split not in splits:
        raise LayoutError(f"{root}: no {split}_rgb.txt / _depth.txt / _label.txt; this SUN RGB-D folder has "
                          f"{_splits(splits)}")
    if modality == "hha":
        raise LayoutError(f"{root}: ESANet's SUN RGB-D layout has depth, no HHA images; this model takes HHA")
    lists = {k: _split_names(root / f"{split}_{k}.txt") for k in kinds}
    if len({len(v) for v in lists.values()}) != 1:
        raise LayoutError(f"{root}: {split}_rgb.txt, _depth.txt and _label.txt list "
                          f"{', '.join(str(len(v)) for v in lists.values())} files; they must pair line by line")
    items = []
    for rgb, depth, label in zip(*lists.values()):
        scene = str(Path(rgb).parent.parent).strip("/") or Path(rgb).stem  # .../SCENE/image/x.jpg
        items.append(Item(scene.replace("/", "_"), {"rgb": root / rgb, "aux": root / depth, "labels": root / label}))

    def read(item):
        def load():
            depth = depth_sunrgbd(read_image(item.paths["aux"]), item.paths["aux"].name)
            return (_colour(item.paths["rgb"]), depth,
                    labels_void_first(read_label_file(item.paths["labels"]), len(SUNRGBD_CLASSES)))
        return _frame(item, load)

    return LabelledFrames(spec, root, split, "SUN RGB-D in ESANet's layout (depth_bfx/, toolbox depth encoding)",
                          items, read, modality, SUNRGBD_CLASSES)


def _whu_images(item: Item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    optical = read_image(item.paths["rgb"])
    if optical.ndim != 3 or optical.shape[2] < 3 or optical.dtype != np.uint8:
        raise ValueError(f"{item.paths['rgb'].name}: expected an 8-bit optical image of 3 or 4 bands (RGB + NIR), "
                         f"got {optical.dtype} {optical.shape}")
    sar = grey(read_image(item.paths["aux"]))
    if sar.ndim != 2:
        raise ValueError(f"{item.paths['aux'].name}: expected a one-band SAR image, got shape {sar.shape}")
    labels = labels_whu(read_label_file(item.paths["labels"]))
    if not (optical.shape[:2] == sar.shape == labels.shape):
        raise ValueError(f"optical {optical.shape[:2]}, SAR {sar.shape} and labels {labels.shape} differ in size")
    return np.ascontiguousarray(optical[..., :3]), sar, labels


def _whu_os(root: Path, split: str, modality: str) -> LabelledFrames:
    spec = SPECS["whu-os"]
    if all((root / d).is_dir() for d in ("optical", "sar", "lbl")):
        names = sorted(_stems(root / "lbl"))
        if not names:
            raise LayoutError(f"{root}/lbl: no label images")
        if split == "test":
            names = [n for n in names if n in WHU_OS_TEST]
        elif split == "train":
            names = [n for n in names if n not in WHU_OS_TEST]
        elif split != "all":
            raise LayoutError(f"{root}: the WHU-OPT-SAR release has splits train, test (its division file) and all; "
                              f"got {split}")
        opt, sar, lbl = _stems(root / "optical"), _stems(root / "sar"), _stems(root / "lbl")
        items = [Item(n, {"rgb": opt.get(n, root / "optical" / f"{n}.tif"), "aux": sar.get(n, root / "sar" / f"{n}.tif"),
                          "labels": lbl[n]}) for n in names]

        def read(item):
            sources = _sources(item)
            try:
                optical, sar_img, labels = _whu_images(item)
            except (ValueError, OSError, cv2.error) as e:
                yield Skipped(item.name, sources, " ".join(str(e).split()))
                return
            T = WHU_OS_TILE
            for r in range(optical.shape[0] // T):
                for c in range(optical.shape[1] // T):
                    win = np.s_[r * T:(r + 1) * T, c * T:(c + 1) * T]
                    yield Sample(f"{item.name}_r{r:02d}_c{c:02d}", np.ascontiguousarray(optical[win]),
                                 np.ascontiguousarray(sar_img[win]), np.ascontiguousarray(labels[win]), sources)

        return LabelledFrames(spec, root, split, f"WHU-OPT-SAR release, {WHU_OS_TILE} x {WHU_OS_TILE} tiles", items,
                              read, modality, WHU_OS_CLASSES,
                              [f"edge strips narrower than {WHU_OS_TILE} pixels are not evaluated"])
    d = _split_folder(root, split, ("opt", "sar", "lbl"), "whu-os", "WHU-OPT-SAR")
    opt, sar = _stems(d / "opt"), _stems(d / "sar")
    items = [Item(n, {"rgb": opt.get(n, d / "opt" / p.name), "aux": sar.get(n, d / "sar" / p.name), "labels": p})
             for n, p in _stems(d / "lbl").items()]

    def read(item):
        return _frame(item, lambda: _whu_images(item))

    return LabelledFrames(spec, root, split, "WHU-OPT-SAR tiles (SOLC's layout)", items, read, modality,
                          WHU_OS_CLASSES)


def _folder(root: Path, modality: str, classes: tuple, ignore_index: int | None) -> LabelledFrames:
    if not all((root / d).is_dir() for d in ("rgb", "aux", "labels")):
        raise LayoutError(f"{root}: expected {EXPECTED['folder']}; found {_listing(root)}")
    rgb, aux, lab = _stems(root / "rgb"), _stems(root / "aux"), _stems(root / "labels")
    lab.update({p.stem: p for p in (root / "labels").glob("*.npy")})
    if not rgb:
        raise LayoutError(f"{root}/rgb: no image files ({', '.join(IMAGE_EXTS)})")
    names = sorted(set(rgb) | set(lab), key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])
    items = [Item(n, {"rgb": rgb.get(n, root / "rgb" / f"{n}.png"), "aux": aux.get(n, root / "aux" / f"{n}.png"),
                      "labels": lab.get(n, root / "labels" / f"{n}.png")}) for n in names]
    K = len(classes)

    def read(item):
        def load():
            frame = read_image(item.paths["aux"])
            frame = frame if modality == "hha" else grey(frame)
            if modality == "depth" and frame.dtype == np.uint16:
                frame = depth_mm(frame, item.paths["aux"].name)
            return (_colour(item.paths["rgb"]), frame,
                    labels_identity(read_label_file(item.paths["labels"]), K, ignore_index))
        return _frame(item, load)

    notes = ["uint16 depth images are read as millimetres"] if modality == "depth" else []
    return LabelledFrames(SPECS["folder"], root, "all", "a folder of rgb/, aux/, labels/", items, read, modality,
                          tuple(classes), notes)


def detect_format(root: Path) -> str:
    """The data set layout of ``root``, or LayoutError listing the layouts this reads."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: {_listing(root)}")
    has = lambda *names: all((root / n).exists() for n in names)  # noqa: E731
    if has("images", "labels") and any(root.glob("*.txt")):
        return "mfnet"
    if any((p / "rgb").is_dir() and (p / "thermal").is_dir() and (p / "labels").is_dir() for p in root.iterdir()):
        return "pst900"
    if any((p / "labels_40").is_dir() for p in root.iterdir()):
        return "nyuv2"
    if has("test_rgb.txt", "test_label.txt") or has("train_rgb.txt", "train_label.txt"):
        return "sunrgbd"
    if has("optical", "sar", "lbl") or any(all((p / d).is_dir() for d in ("opt", "sar", "lbl")) for p in root.iterdir()):
        return "whu-os"
    if has("rgb", "aux", "labels"):
        return "folder"
    if has("RGB", "Label"):
        raise LayoutError(f"{root}: CMX's layout (RGB/, Label/) holds NYUDv2 or SUN RGB-D; say which with "
                          "--format nyuv2 or --format sunrgbd")
    raise LayoutError(f"{root}: no labelled layout this reads; found {_listing(root)}; expected one of: "
                      + "; ".join(f"{k}: {v}" for k, v in EXPECTED.items()))


def open_dataset(root, format: str = "auto", split: str = "test", modality: str = "thermal",
                 classes: tuple | None = None, ignore_index: int | None = IGNORE) -> LabelledFrames:
    """One split of the data set in ``root``. ``modality``: the model's auxiliary modality
    (the data set must provide it; NYUDv2 / SUN RGB-D: depth or HHA). ``classes``: the model's
    class names, required for the folder layout (whose labels use the model's classes)."""
    root = Path(root)
    if format == "auto":
        format = detect_format(root)
    if format not in SPECS:
        raise ValueError(f"unknown data set format {format!r}; expected auto or one of {', '.join(FORMATS)}")
    spec = SPECS[format]
    if modality not in spec.modalities:
        raise LayoutError(f"{spec.title} provides {' or '.join(spec.modalities)} frames; this model takes {modality}")
    if not root.is_dir():
        raise LayoutError(f"{root}: {_listing(root)}; expected {EXPECTED[format]}")
    if format == "folder":
        if not classes:
            raise ValueError("the folder layout needs the model's class names")
        return _folder(root, modality, tuple(classes), ignore_index)
    return {"mfnet": _mfnet, "pst900": _pst900, "nyuv2": _nyuv2, "sunrgbd": _sunrgbd, "whu-os": _whu_os}[format](
        root, split, modality)
