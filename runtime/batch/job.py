"""Offline segmentation of recorded frames with Ray Data, on one machine or a cluster.

``python -m runtime.batch`` (``__main__.py``) runs it; ``segment_recording`` is the same job
from Python, on the Ray cluster the caller is connected to. The pipeline (``ray.data``):

1. the driver lists the recording and cuts it into shards by file (an image pair, an MFNet
   4-channel PNG, a pair of videos, a bag); frames whose label map already exists are left out;
2. CPU tasks open each shard with the sources of ``runtime.sources.streams``, decode its frames and
   preprocess them (``Segmenter.prepare``, through ``runtime.batch.prepare.frame_preparer``); a frame
   that cannot be read or preprocessed becomes a "skipped" row with the reason;
3. ``map_batches`` with ``SegmentFrames``, a callable class holding one ``Segmenter`` per actor
   (a GPU each on a GPU cluster), runs inference and writes ``labels/NAME.png`` atomically;
4. the driver collects one row per frame into ``OUT/index.parquet``.

Actors reserve little CPU (a GPU actor 0.25 CPU; CPU actors together leave at least one CPU
free) so that the reading tasks always find room: with whole-CPU actors on a 2-CPU machine
the read task waits for a CPU forever. A worker that dies is restarted by Ray and its batch
retried; a label file written before the death is not written again, so nothing is lost
and nothing is written twice. A second run skips every frame whose label map exists
(``--overwrite`` redoes them).

Every input appears in the index: ``segmented``, ``skipped`` (why), ``unpaired`` (a file,
video or bag message without a partner, and why) or ``exists``. Two inputs that would write
one label map (``a.png`` and ``a.tiff``) are refused before Ray starts. Ctrl-C or SIGTERM
stops the job and still writes the index of the frames done (exit status 130 / 143; the
same command resumes).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cli import interrupt_code, signals_deferred
from ..files import atomic_path, write_image_atomic
from ..sources.streams import IMAGE_EXTS, FolderPair, _natural_key, check_unique_names, list_images, open_source

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm")
INDEX_COLUMNS = ("frame", "source_index", "rgb_file", "aux_file", "timestamp_ms", "status", "reason",
                 "decode_ms", "preprocess_ms", "infer_ms", "batch_frames", "latency_ms")
GPU_WORKER_CPUS = 0.25


def _install_hint() -> str:
    return "Ray Data is needed: pip install 'mmseg-deploy[fleet]' (or pip install 'ray[data]==2.60.0')"


# ---- the model's description, without loading it -----------------------------------------------


def model_info(path):
    """The metadata of an exported GoPT model (ONNX file or TensorRT engine + sidecar), read
    without opening a session, so that a CPU-only driver can plan a GPU cluster's job."""
    from ..backends.factory import backend_kind
    from ..metadata import read_onnx_info, warn_if_unverified

    kind = backend_kind(path)
    if kind == "torch":
        raise ValueError(f"{path}: the batch job runs exported models; export the checkpoint first "
                         "(python -m export.onnx CKPT)")
    if kind == "onnxruntime":
        info = read_onnx_info(path)
    else:
        from ..backends.trt_backend import read_sidecar

        info = read_sidecar(path).model
    if info.kind != "gopt":
        raise ValueError(f"{path}: a {info.kind} model; the batch job segments GoPT (rgb + aux) frames")
    warn_if_unverified(path)
    return info


# ---- shards ----------------------------------------------------------------------------------


@dataclass
class Shard:
    """One unit of reading: the files a reading task opens. ``name`` and ``timestamp`` are
    set for single-frame shards (the frame's output name is known before reading)."""

    rgb: str | None
    aux: str | None = None
    bag: str | None = None
    name: str | None = None
    timestamp: float | None = None
    prefix: str = ""  # prepended to the names of a multi-frame shard's frames (one of several bags)

    def files(self) -> tuple[str, str]:
        if self.bag:
            return self.bag, self.bag
        return self.rgb, self.aux or self.rgb


class Shards(list):
    """The shards of a recording, and the inputs left out because they have no partner
    (``unpaired``: (name, file, reason)), which the index lists."""

    def __init__(self, shards=(), unpaired=()):
        super().__init__(shards)
        self.unpaired = list(unpaired)


def _videos(folder: Path) -> list[Path]:
    videos = sorted((p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS), key=_natural_key)
    check_unique_names(videos)
    return videos


def _bags(path: Path) -> list[Path]:
    """A bag (a ROS 1 ``.bag`` file, or a rosbag2 folder with ``metadata.yaml``), or a folder of them."""
    if path.is_file() or (path / "metadata.yaml").exists():
        return [path]
    bags = [p for p in sorted(path.iterdir(), key=_natural_key)
            if p.suffix in (".bag", ".mcap") or (p.is_dir() and (p / "metadata.yaml").exists())]
    if not bags:
        raise ValueError(f"{path}: no bags (.bag files or rosbag2 folders with metadata.yaml)")
    check_unique_names(bags)
    return bags


def check_bag_support() -> None:
    if "bag" not in inspect.signature(open_source).parameters:
        raise ValueError("reading bags needs runtime.sources.streams bag sources (open_source(bag=...)), "
                         "which this version of the project does not have; convert the bag to image folders")


def list_shards(rgb=None, aux=None, bag=None, match: str = "name") -> Shards:
    """The recording cut into shards by file, with the inputs that have no partner."""
    if bag is not None:
        if rgb is not None or aux is not None:
            raise ValueError("pass either --bag (with topics) or --rgb [--aux], not both")
        check_bag_support()
        path = Path(bag)
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        bags = _bags(path)
        # frames of several bags are named after their bag too: two recordings may share stamps
        return Shards(Shard(None, bag=str(p), prefix=f"{p.stem}_" if len(bags) > 1 else "") for p in bags)
    if rgb is None:
        raise ValueError("no frames to read: pass --rgb (and --aux) or --bag")
    rgb, aux = Path(rgb), None if aux is None else Path(aux)
    for p in (rgb, aux):
        if p is not None and not p.exists():
            raise ValueError(f"{p}: no such file or folder")
    if rgb.is_dir() and aux is not None and aux.is_dir() and not any(
            p.suffix.lower() in IMAGE_EXTS for p in rgb.iterdir()):
        return _video_shards(rgb, aux)
    if rgb.is_dir() and aux is not None and aux.is_dir():
        folders = FolderPair(rgb, aux, match=match)
        where = {p.name: p for p in list_images(rgb) + list_images(aux)}
        return Shards((Shard(str(r), str(a), name=r.stem, timestamp=t) for r, a, t in folders.pairs),
                      ((u.name, str(where.get(u.name, u.name)), u.reason) for u in folders.unmatched))
    if rgb.is_dir() and aux is None:
        images = list_images(rgb)
        check_unique_names(images)
        return Shards(Shard(str(p), name=p.stem) for p in images)
    if rgb.suffix.lower() in IMAGE_EXTS:
        return Shards([Shard(str(rgb), None if aux is None else str(aux), name=rgb.stem)])
    if aux is None:
        raise ValueError(f"{rgb}: a video needs its auxiliary video (--aux)")
    return Shards([Shard(str(rgb), str(aux))])


def _video_shards(rgb: Path, aux: Path) -> Shards:
    rgb_videos, aux_videos = _videos(rgb), {p.stem: p for p in _videos(aux)}
    if not rgb_videos:
        raise ValueError(f"{rgb}: no image or video files")
    shards = [Shard(str(p), str(aux_videos[p.stem])) for p in rgb_videos if p.stem in aux_videos]
    if not shards:
        raise ValueError(f"no video of {rgb} has a partner of the same name in {aux}")
    paired = {p.stem for p in rgb_videos}
    lone = [(p.name, str(p), f"no video of the same name in {aux}") for p in rgb_videos if p.stem not in aux_videos]
    lone += [(p.name, str(p), f"no video of the same name in {rgb}") for s, p in aux_videos.items() if s not in paired]
    return Shards(shards, lone)


def open_shard(shard: Shard, modality: str, resize_aux: bool, rgb_topic=None, aux_topic=None):
    """The ``runtime.sources.streams`` source for one shard."""
    if shard.bag is None:
        return open_source(shard.rgb, shard.aux, modality=modality, resize_aux=resize_aux)
    check_bag_support()
    return open_source(bag=shard.bag, rgb_topic=rgb_topic, aux_topic=aux_topic, modality=modality,
                       resize_aux=resize_aux)


# ---- reading and preprocessing (CPU tasks) -----------------------------------------------------


def _row(shard: Shard, name: str, index: int, timestamp, status: str, reason: str, empty, x=None, a=None,
         size=(0, 0), start=0.0, decode_ms=math.nan, preprocess_ms=math.nan) -> dict:
    rgb_file, aux_file = shard.files()
    return {"frame": name, "source_index": index, "rgb_file": rgb_file, "aux_file": aux_file,
            "timestamp_ms": math.nan if timestamp is None else float(timestamp), "status": status,
            "reason": reason, "height": int(size[0]), "width": int(size[1]), "start": start,
            "decode_ms": decode_ms, "preprocess_ms": preprocess_ms,
            "x": empty[0] if x is None else x[0], "a": empty[1] if a is None else a[0]}


def read_shard(item: dict, **options):
    """``flat_map`` function: a shard's frames, decoded and preprocessed, one row each."""
    yield from ShardReader(**options)(item)


class ShardReader:
    """Decodes and preprocesses the frames of one shard; a frame that fails becomes a skipped row."""

    def __init__(self, info, out: str, overwrite: bool, color_order: str = "bgr", depth_units: float | None = None,
                 resize_aux: bool = False, rgb_topic=None, aux_topic=None):
        from .prepare import frame_preparer

        self.preparer = frame_preparer(info, color_order, resize_aux, depth_units)
        self.modality, self.labels, self.overwrite = info.config["modality"], Path(out) / "labels", overwrite
        self.resize_aux, self.topics = resize_aux, (rgb_topic, aux_topic)
        # placeholders of the model inputs' shapes and dtypes for rows without a frame
        self.empty = tuple(np.zeros([1 if isinstance(d, str) else d for d in info.input(n).shape[1:]],
                                    info.input(n).dtype) for n in ("rgb", "aux"))

    def __call__(self, item: dict):
        shard = Shard(**item)
        try:
            source = open_shard(shard, self.modality, self.resize_aux, *self.topics)
        except (ValueError, OSError) as e:
            yield _row(shard, shard.name or Path(shard.files()[0]).stem, 0, shard.timestamp, "skipped",
                       f"cannot open: {e}", self.empty)
            return
        try:
            yield from self._frames(shard, source)
            for u in getattr(source, "unmatched", []):  # a video's tail, bag messages without a partner
                yield _row(shard, f"{shard.prefix}{u.name}", -1, None, "unpaired", u.reason, self.empty)
        finally:
            source.close()

    def _frames(self, shard: Shard, source):
        frames, index = iter(source), 0  # index: the position of the next frame in the source
        while True:
            start = time.time()
            try:
                frame = next(frames)
            except StopIteration:
                return
            except (ValueError, OSError) as e:  # a broken file, or a stream that ends in a corrupt frame
                name = shard.name or f"{Path(shard.files()[0]).stem}_{index:06d}"
                yield _row(shard, name, index, None, "skipped", f"cannot read: {e}", self.empty)
                return
            decoded = time.time()
            name, index = shard.name or f"{shard.prefix}{frame.name}", frame.index + 1
            timestamp = frame.timestamp if shard.timestamp is None else shard.timestamp
            if not self.overwrite and (self.labels / f"{name}.png").exists():
                continue
            try:
                prepared = self.preparer.prepare(frame.rgb, frame.aux)
            except ValueError as e:
                yield _row(shard, name, frame.index, timestamp, "skipped", f"bad frame: {e}", self.empty)
                continue
            yield _row(shard, name, frame.index, timestamp, "ok", "", self.empty, prepared.rgb, prepared.aux, prepared.size,
                       start, 1e3 * (decoded - start), 1e3 * (time.time() - decoded))


# ---- inference and writing (actors) ------------------------------------------------------------


class SegmentFrames:
    """``map_batches`` callable class: one ``Segmenter`` per actor. Each batch of prepared
    frames is segmented in one call and every label map written to ``labels/NAME.png``. A
    label file already written in this run (by an attempt of this batch that died) is not
    written again; one from an earlier run is replaced only with ``overwrite``."""

    def __init__(self, model: str, out: str, overwrite: bool, run_started: float, device: str | None = None,
                 threads: int | None = None):
        from ..segmenter import Segmenter

        options = {"threads": threads} if threads and model.lower().endswith(".onnx") else {}
        self.segmenter = Segmenter(model, device=device, **options)
        self.labels = Path(out) / "labels"
        self.overwrite, self.run_started = overwrite, run_started

    def _written(self, path: Path) -> bool:
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return False
        return mtime >= self.run_started or not self.overwrite

    def __call__(self, batch: dict) -> dict:
        from ..segmenter import Prepared

        n = len(batch["frame"])
        ok = [i for i in range(n) if batch["status"][i] == "ok"]
        t0 = time.time()
        labels = self.segmenter.run_prepared([
            Prepared(batch["x"][i][None], batch["a"][i][None], (int(batch["height"][i]), int(batch["width"][i])))
            for i in ok])
        infer_ms = 1e3 * (time.time() - t0)
        latency = np.full(n, math.nan)
        infer = np.full(n, math.nan)
        for i, lab in zip(ok, labels):
            path = self.labels / f"{batch['frame'][i]}.png"
            if not self._written(path):
                write_image_atomic(path, lab)
            infer[i] = infer_ms
            latency[i] = 1e3 * (time.time() - batch["start"][i])
        status = np.array(["segmented" if s == "ok" else s for s in batch["status"]], dtype=object)
        return {"frame": batch["frame"], "source_index": batch["source_index"], "rgb_file": batch["rgb_file"],
                "aux_file": batch["aux_file"], "timestamp_ms": batch["timestamp_ms"], "status": status,
                "reason": batch["reason"], "decode_ms": batch["decode_ms"], "preprocess_ms": batch["preprocess_ms"],
                "infer_ms": infer, "batch_frames": np.full(n, len(ok)), "latency_ms": latency}


# ---- resources -----------------------------------------------------------------------------


def worker_resources(workers: int, gpus_per_worker: float, cluster_cpus: float) -> dict:
    """What each ``SegmentFrames`` actor reserves. A GPU actor: its GPU(s) and a quarter CPU.
    CPU actors: together at most the cluster's CPUs less one (half of them on a 1-CPU
    machine), at most one CPU each, so that reading and preprocessing tasks always run."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if gpus_per_worker > 0:
        return {"num_cpus": GPU_WORKER_CPUS, "num_gpus": gpus_per_worker}
    if cluster_cpus <= 0:
        raise ValueError("the Ray cluster has no CPUs")
    spare = cluster_cpus - 1 if cluster_cpus >= 2 else cluster_cpus / 2
    return {"num_cpus": math.floor(1000 * min(1.0, spare / workers)) / 1000}


# ---- the index -----------------------------------------------------------------------------


def read_index(path: Path):
    import pandas as pd

    if not path.exists():
        return pd.DataFrame(columns=list(INDEX_COLUMNS))
    return pd.read_parquet(path)


def merge_index(previous, rows, labels: Path, started: float | None = None):
    """This run's rows, and for frames not in them whose label map exists, the row of the
    run that wrote it (or an "exists" row when there is none: written by an earlier run, or
    by this one before it was interrupted, ``started`` its start time)."""
    import pandas as pd

    new = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    done = set(new["frame"])
    kept = previous[~previous["frame"].isin(done) & previous["frame"].map(
        lambda f: (labels / f"{f}.png").exists())] if len(previous) else previous
    known = done | set(kept["frame"])
    extra = [{"frame": p.stem, "status": "exists", "reason": written_by(p, started)}
             for p in sorted(labels.glob("[!.]*.png")) if p.stem not in known]
    parts = [df for df in (kept, new, pd.DataFrame(extra, columns=list(INDEX_COLUMNS))) if len(df)]
    merged = pd.concat(parts, ignore_index=True) if parts else new
    return merged.sort_values("frame", key=lambda s: s.map(lambda f: _natural_key(Path(f)))).reset_index(drop=True)


def written_by(label_map: Path, started: float | None) -> str:
    if started is not None and label_map.stat().st_mtime >= started:
        return "label map written by this run before it was interrupted"
    return "label map from an earlier run"


def write_index(path: Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def remove_partial_files(labels: Path) -> int:
    """Temporary files of writers that were killed mid-write (never a finished label map)."""
    n = 0
    for p in labels.glob(".*.tmp*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


# ---- the job -------------------------------------------------------------------------------


@dataclass
class Report:
    frames: int  # rows in this run (segmented + skipped + unpaired)
    segmented: int
    skipped: int
    existing: int  # frames in the index from earlier runs (their label maps existed)
    seconds: float
    unpaired: int = 0  # inputs without a partner (files, videos, bag messages), listed in the index

    @property
    def fps(self) -> float:
        return self.segmented / self.seconds if self.seconds > 0 else 0.0


def segment_recording(model, out, rgb=None, aux=None, bag=None, rgb_topic=None, aux_topic=None, workers: int = 1,
                      gpus_per_worker: float = 0.0, batch_size: int = 8, overwrite: bool = False,
                      match: str = "name", color_order: str = "bgr", depth_units: float | None = None,
                      resize_aux: bool = False, threads: int | None = None) -> Report:
    """Run the pipeline on the Ray cluster this process is connected to (``ray.init`` first)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("connect to Ray first: ray.init() (local) or ray.init(address='auto')")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    model = str(Path(model).resolve())
    info = model_info(model)
    out = Path(out).resolve()
    labels = out / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    remove_partial_files(labels)
    shards = list_shards(rgb, aux, bag, match)
    todo = [s for s in shards if overwrite or s.name is None or not (labels / f"{s.name}.png").exists()]
    resources = worker_resources(workers, gpus_per_worker, ray.cluster_resources().get("CPU", 0.0))
    if threads is None and not gpus_per_worker:
        threads = max(1, int(resources["num_cpus"]))
    started = time.time()
    rows = [{"frame": name, "rgb_file": file, "aux_file": file, "status": "unpaired", "reason": reason}
            for name, file, reason in shards.unpaired]
    interrupted = None
    try:
        if todo:
            _run(info, model, out, todo, workers, gpus_per_worker, batch_size, overwrite, started, resources,
                 threads, dict(color_order=color_order, depth_units=depth_units, resize_aux=resize_aux,
                               rgb_topic=rgb_topic, aux_topic=aux_topic), rows)
    except KeyboardInterrupt as e:  # the index of the frames done is still written
        interrupted = e
    with signals_deferred() as deferred:
        report = _finish(out, labels, rows, started)
    if interrupted is not None or deferred.exit_code:
        stop = interrupted or KeyboardInterrupt()
        stop.exit_code, stop.report = interrupt_code(stop) if interrupted else deferred.exit_code, report
        raise stop
    return report


def _finish(out: Path, labels: Path, rows: list[dict], started: float) -> Report:
    """The index (this run's rows merged with earlier runs'), written atomically, and the report."""
    seconds = time.time() - started
    names = [r["frame"] for r in rows]
    if len(names) != len(set(names)):
        raise ValueError("two frames share one output name (one label map would overwrite the other): "
                         + ", ".join(sorted({n for n in names if names.count(n) > 1})[:5]))
    remove_partial_files(labels)  # a killed writer's temporary file (its frame was redone)
    index = merge_index(read_index(out / "index.parquet"), rows, labels, started)
    write_index(out / "index.parquet", index)
    segmented = sum(r["status"] == "segmented" for r in rows)
    unpaired = sum(r["status"] == "unpaired" for r in rows)
    return Report(len(rows), segmented, len(rows) - segmented - unpaired, len(index) - len(rows), seconds, unpaired)


def _run(info, model, out, shards, workers, gpus_per_worker, batch_size, overwrite, started, resources, threads,
         reader_options, rows: list[dict]) -> None:
    """The pipeline; each collected row is appended to ``rows`` as it comes (an interrupted
    run keeps what it has)."""
    import ray

    items = [vars(s) for s in shards]
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 1000))
    ds = ds.flat_map(read_shard, fn_kwargs=dict(info=info, out=str(out), overwrite=overwrite,
                                                **reader_options))
    ds = ds.map_batches(
        SegmentFrames, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs=dict(model=model, out=str(out), overwrite=overwrite, run_started=started,
                                   device="cuda" if gpus_per_worker else "cpu", threads=threads),
        **resources)  # Ray Data restarts a dead actor and retries its batch (max_restarts=-1 by default)
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        rows.extend(batch.to_dict("records"))
