"""Outputs are whole or absent: a killed `python -m runtime`, a failed or interrupted export,
and the folders the README's commands write stay out of version control."""
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from factories import tiny_gopt
from export import onnx as export_onnx
from models import save_gopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "samples", "mfnet_01234N.png")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_gopt_models):
    return tiny_gopt_models / "thermal.onnx"


@pytest.fixture(scope="module")
def many_frames(tmp_path_factory):
    """120 MFNet 4-channel frames at 1280x960: large PNGs, so a kill lands in the middle of a write."""
    folder = tmp_path_factory.mktemp("frames")
    img = cv2.resize(cv2.imread(SAMPLE, cv2.IMREAD_UNCHANGED), (1280, 960))
    noise = np.random.default_rng(0).integers(0, 40, img.shape, dtype=np.uint8)  # slow to compress
    for i in range(120):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), np.roll(img + noise, 9 * i, axis=1), [cv2.IMWRITE_PNG_COMPRESSION, 0])
    return folder


def start_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "runtime", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_frames(proc, n):
    seen = 0
    for line in proc.stdout:
        if line.startswith("frame "):
            seen += 1
            if seen >= n:
                return
    pytest.fail("the stream ended before the signal: " + proc.stderr.read()[-2000:])


def test_sigkill_mid_stream_leaves_only_complete_images(tmp_path, tiny_onnx, many_frames):
    out = tmp_path / "out"
    proc = start_cli(tiny_onnx, "--rgb", many_frames, "--out", out)
    wait_for_frames(proc, 6)
    time.sleep(0.37)  # somewhere inside a later frame's PNG writes
    proc.kill()
    proc.wait(30)
    proc.stdout.close(), proc.stderr.close()
    finals = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(finals) >= 2
    for p in finals:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        # the label map is the frame's size; the overlay adds its legend beside the frame
        assert img is not None and img.shape[0] == 960 and img.shape[1] >= 1280, f"{p.name} is truncated"
    # what the kill interrupted is a hidden temporary, never a final name
    assert all(re.match(r"\..+\.tmp\.png$", p.name) for p in out.iterdir() if p.name.startswith("."))


def test_sigterm_prints_the_summary_and_exits_143(tmp_path, tiny_onnx, many_frames):
    proc = start_cli(tiny_onnx, "--rgb", many_frames, "--out", tmp_path / "out")
    wait_for_frames(proc, 3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert re.search(r"^frames \d+, ", stdout, re.M), stdout[-2000:]
    assert "wrote " in stdout


def export_args(tmp_path, *extra):
    ckpt = tmp_path / "m.pt"
    save_gopt(tiny_gopt(), ckpt)
    return export_onnx.parse_args([str(ckpt), "-o", str(tmp_path / "m.onnx"), *extra])


def test_export_is_renamed_only_after_its_check(tmp_path, capsys):
    assert export_onnx.run(export_args(tmp_path)) == 0
    assert (tmp_path / "m.onnx").is_file() and not (tmp_path / "m.unverified.onnx").exists()
    assert "checked: " in capsys.readouterr().out


def test_failed_check_keeps_the_unverified_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_onnx.parity.FP32, "passes", lambda r: False)
    assert export_onnx.run(export_args(tmp_path)) == 1
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.unverified.onnx").is_file()
    assert "kept as " in capsys.readouterr().err


def test_interrupted_check_leaves_no_final_name(tmp_path, monkeypatch):
    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_onnx, "check_gopt", killed)
    with pytest.raises(KeyboardInterrupt):
        export_onnx.run(export_args(tmp_path))
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.unverified.onnx").is_file()


def test_no_check_says_unchecked(tmp_path, capsys):
    assert export_onnx.run(export_args(tmp_path, "--no-check")) == 0
    assert (tmp_path / "m.onnx").is_file()
    assert "unchecked (--no-check)" in capsys.readouterr().out


def readme_output_folders():
    """The top-level folders the commands of the README and docs/ write into (--out, -o,
    --output-dir, ...): their commands as tests/readme_commands.py reads them
    (tests/test_readme_commands.py runs them), and their Python examples."""
    from readme_commands import FENCED, page_commands, pages

    texts = [page.read_text() for page in pages()]
    python = [b.group(2) for text in texts for b in FENCED.finditer(text) if b.group(1) == "python"]
    blocks = "\n".join([c.text for page in pages() for c in page_commands(page)] + python)
    found = set(re.findall(r"(?:--out|-o|--output|--output-dir|--work-dir|--json|--plot)[ =]([\w./-]+)", blocks))
    found |= set(re.findall(r"[\"'](\w+)/[\w.-]+\.(?:pt|pth|onnx|engine|plan)[\"']", blocks))
    found |= {"demo_out", "checkpoints"}  # demo.py's defaults
    folders = set()
    for path in found:
        if path.startswith("/"):  # outside the checkout (/tmp/...)
            continue
        top = path.strip("./").split("/")[0]
        if top and top.isidentifier() and top.upper() != top:  # not placeholders such as OUT / DIR
            folders.add(top)
    return folders


def test_gitignore_covers_the_folders_the_readme_writes():
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split())
    tracked_tops = {p.split("/")[0] for p in tracked}
    folders = readme_output_folders()
    assert {"checkpoints", "demo_out", "overlays"} <= folders
    missing = []
    for folder in sorted(folders):
        probe = f"{folder}/probe.bin" if folder not in tracked_tops else None
        if probe and subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode != 0:
            missing.append(folder)
    assert not missing, f".gitignore does not cover {missing}"


def test_simcmf_unverified_files_name_their_final_companions(tmp_path):
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from runtime.metadata import read_onnx_info
    from test_simcmf import tiny_model

    _, paths = export_simcmf(tiny_model(modality="rgbt"), tmp_path / "s", 1, progress=Progress(2), unverified=True)
    assert [p.name for p in paths] == ["s.encoder.unverified.onnx", "s.decoder.unverified.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.decoder.unverified.onnx", "s.encoder.unverified.onnx"]
    assert read_onnx_info(paths[0]).companion == "s.decoder.onnx"  # right once promoted
