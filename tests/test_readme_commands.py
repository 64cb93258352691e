"""Every command the README and the pages of docs/ show, as a reader meets them, read from
their text (``tests/readme_commands.py``), so that a changed or new line is checked as it is
written. Each page is run from top to bottom in a fresh folder holding what the README's
set-up command leaves (the demo checkpoint, its ONNX export, demo_out/): ``python demo.py``
runs once, for all pages.

- A usage line (``[--flag]``, placeholders such as MODEL or OUT, ``a|b``): every ``--flag`` it
  names is one the tool's ``--help`` lists.
- A concrete command of this project: run in the page's folder, in the page's order (a command
  may use what an earlier one on the page wrote), with the same flags, on tiny models where
  the pages' ViT-B would take minutes: the folder holds tiny versions of the files the page's
  commands name and none of them writes (``PROVISIONS``), and the demo checkpoint commands
  write the tiny architecture (``EXTRA``).
  Numbers that only set how long a benchmark measures are shortened (``SHORTER``). It must
  exit 0, or, where this machine lacks what the command needs (TensorRT, a Triton server),
  end with the one-line error a user without it sees (``EXPECTED``); never a traceback.
- Anything else (installation, CMake, Docker, ROS 2, a Ray cluster, GPU loops, ViT-B SimCMF)
  is listed in ``NOT_RUN`` with the reason. A command that fits none of these fails the
  test: decide how it is checked when you add it.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from readme_commands import ROOT, Command, page_commands, page_name, pages, readme_commands

pytestmark = pytest.mark.slow

# (pattern, why it is not run here)
NOT_RUN = [
    (r"^(python3 -m venv|\. |source |pip install)", "sets up the environment (CI installs the project itself)"),
    (r"import tensorrt", "needs TensorRT (JetPack's, on a Jetson)"),
    (r"^(python -m pytest|pytest)", "the test suite itself"),
    (r"^cmake ", "CI builds the native libraries with CMake (.ci/run; tests/test_native.py)"),
    (r"^(trtexec|docker|tritonserver)", "needs TensorRT or NVIDIA's Triton container and a GPU"),
    (r"^(ros2 |colcon |mkdir -p ~/ws|cd ~/ws|ln -s )", "needs a ROS 2 installation (tests/test_ros2_package.py)"),
    (r"^ray |--address auto", "needs a Ray cluster (tests/test_batch.py runs a local Ray)"),
    (r"^for n in ", "a GPU benchmark over a TensorRT engine"),
    (r"simcmf_rgbt_lora_untrained\.pth|models\.demo_simcmf",
     "the ViT-B SimCMF pair: minutes and 0.4 GB (tests/test_simcmf.py and test_export_simcmf.py cover it tiny)"),
    (r"^python -m kernels\.aot ", "compiles dozens of kernels (tests/test_aot.py compiles the CI subset)"),
]
# file handling around the tools (folders, copies, lists): run by bash in the sandbox
SHELL = r"^(mkdir -p|cp|ls|for f in) "
# (pattern, exit status, what the one error line says) where this machine lacks what the command needs
EXPECTED = [
    (r"^python -m export\.tensorrt ", 2, r"TensorRT|plugin|CUDA GPU"),
    (r"^python -m serving\.triton_client", 2, r"cannot reach the server"),
]
# flags that set only how long a benchmark measures: shortened for CI, the code paths are the same
SHORTER = {"--duration-s": "1", "--min-time-s": "0", "--warmup-s": "0.2", "--min-iters": "2", "--frames": "8",
           "--repeats": "1"}
# arguments added to a tool's commands here: the demo checkpoints in their tiny architecture
# (same classes and statistics), over the tiny files the sandbox already holds
EXTRA = {"models.demo_checkpoint": ["--tiny", "--overwrite"]}


def not_run_reason(command: Command) -> str | None:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, command.text)), None)


def expected(command: Command) -> tuple[int, str | None]:
    for pattern, code, says in EXPECTED:
        if re.search(pattern, command.text) and not (code == 2 and "tensorrt" in pattern and have_tensorrt()):
            return code, says
    return 0, None


def have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


# ---- the sandbox --------------------------------------------------------------------------------


def _tiny_checkpoint(path: Path, modality: str) -> None:
    from models.demo_checkpoint import write_demo_checkpoint

    with contextlib.redirect_stdout(io.StringIO()):
        write_demo_checkpoint(str(path), modality, tiny=True)


def _tiny_export(path: Path, sandbox: Path, *flags) -> None:
    from export.onnx import parse_args, run

    with contextlib.redirect_stdout(io.StringIO()):
        assert run(parse_args([str(sandbox / "checkpoints" / "gopt_demo_rgbt.pt"), "-o", str(path), *flags])) == 0


def _tiny_simcmf(path: Path, sandbox: Path) -> None:
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    with contextlib.redirect_stdout(io.StringIO()):
        export_simcmf(tiny_model(modality="rgbt"), Path(str(path).removesuffix(".encoder.onnx")), 1,
                      progress=Progress(2))


def _frame_folders(path: Path, sandbox: Path) -> None:
    import cv2

    rgb, thermal = path / "rgb", path / "thermal"
    rgb.mkdir(parents=True), thermal.mkdir()
    for i, name in enumerate(("mfnet_01234N.png", "mfnet_01477D.png")):
        frame = cv2.imread(str(ROOT / "data" / "samples" / name), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(rgb / f"frame_{i:04d}.png"), frame[..., :3])
        cv2.imwrite(str(thermal / f"frame_{i:04d}.png"), frame[..., 3])


# Files the pages' commands name that the set-up command does not write: tiny stand-ins, made in a
# page's folder when one of its commands names them (or matches the pattern beside the name) and
# the file is not there yet. Python examples name the reader's own files: nothing is made for them.
PROVISIONS = {
    "checkpoints/gopt_demo_rgbd.pt": (r"gopt_demo_rgbd|--modality depth", lambda p, s: _tiny_checkpoint(p, "depth")),
    "checkpoints/simcmf_rgbt_lora_untrained.encoder.onnx": (None, _tiny_simcmf),
    "gopt_rgbt.onnx": (None, lambda p, s: _tiny_export(p, s, "--dynamic-batch", "--no-check")),
    "gopt_demo_rgbt.onnx": (None, lambda p, s: _tiny_export(p, s, "--dynamic-batch", "--no-check")),
    "drives": (None, _frame_folders),
}
# The runnable part of the README's set-up command: run once, for the state every page starts from.
SETUP = "python demo.py"


@pytest.fixture(scope="module")
def setup_state(tmp_path_factory):
    """What the README's set-up command leaves in a checkout (data/, tests/, build/ linked): the
    demo checkpoint in its tiny architecture, then ``python demo.py`` run on it (its ONNX export,
    demo_out/)."""
    root = tmp_path_factory.mktemp("setup")
    for name in ("data", "tests", "build"):
        if (ROOT / name).exists():
            (root / name).symlink_to(ROOT / name)
    (root / "checkpoints").mkdir()
    _tiny_checkpoint(root / "checkpoints" / "gopt_demo_rgbt.pt", "thermal")
    problems = run_command(Command(SETUP, 1), root)
    assert not problems, "\n".join(problems)
    return root


def page_sandbox(setup_state: Path, folder: Path, commands: list[Command]) -> Path:
    """A fresh copy of the set-up state for one page, with the PROVISIONS its commands name."""
    shutil.copytree(setup_state, folder, symlinks=True)
    text = "\n".join(c.text for c in commands)
    for name, (pattern, make) in PROVISIONS.items():
        named = re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w.])", text) or (pattern and re.search(pattern, text))
        written = re.search(rf"-o {re.escape(name)}(?!\S)", text)  # a command of the page writes it
        if named and not written and not (folder / name).exists():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            make(folder / name, folder)
    return folder


def argv_of(command: Command) -> list[str]:
    """The command's words as run here: this Python, scripts from the checkout, SHORTER values,
    EXTRA; a SHELL command as bash runs it."""
    if command.tool() is None and re.search(SHELL, command.text):
        return ["bash", "-c", command.text]
    words = [w for w in command.words() if w != "time"]
    words[0] = sys.executable
    if words[1].endswith(".py"):
        words[1] = str(ROOT / words[1])
    for i, w in enumerate(words[:-1]):
        if w in SHORTER:
            words[i + 1] = SHORTER[w]
    return words + EXTRA.get(command.tool(), [])


# ---- the test -----------------------------------------------------------------------------------


def help_text(module: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    return out.getvalue()


def check_flags(command: Command) -> list[str]:
    module = command.tool()
    if module is None:
        return [f"{command.where}: a usage line of no project tool: {command.text}"]
    listed = set(re.findall(r"--[a-z0-9][a-z0-9-]*", help_text(module)))
    shown = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", command.text))
    return [f"{command.where}: {module} has no {flag}" for flag in sorted(shown - listed)]


def run_command(command: Command, sandbox: Path) -> list[str]:
    code, says = expected(command)
    t0 = time.perf_counter()
    r = subprocess.run(argv_of(command), cwd=sandbox, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"{time.perf_counter() - t0:6.1f} s  exit {r.returncode}  {command.text}")
    problems = []
    if r.returncode != code:
        problems.append(f"{command.where}: `{command.text}` exited {r.returncode}, expected {code}:\n"
                        f"{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    if "Traceback" in r.stderr:
        problems.append(f"{command.where}: `{command.text}` printed a traceback:\n{r.stderr[-2000:]}")
    if says is not None:
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        if len(errors) != 1 or not re.search(says, errors[0]):
            problems.append(f"{command.where}: `{command.text}` should end with one error line "
                            f"saying /{says}/, got: {errors}")
    return problems


def check_page(commands: list[Command], sandbox: Path) -> tuple[list[str], list[str]]:
    """Run or check a page's commands in order (module docstring): (problems, what was not run and why)."""
    problems, skipped = [], []
    for command in commands:
        why = not_run_reason(command)
        if command.text == SETUP:
            skipped.append(f"not run again ({command.where}): {SETUP}: the set-up state every page starts from")
        elif command.synopsis and command.tool() is not None:
            problems += check_flags(command)
        elif why is not None:
            skipped.append(f"not run ({command.where}): {command.text[:90]}: {why}")
        elif command.tool() is None and re.search(SHELL, command.text):
            problems += run_command(command, sandbox)
        elif command.tool() is not None or command.text.startswith("python -c "):
            problems += run_command(command, sandbox)
        else:
            problems.append(f"{command.where}: `{command.text}` is neither run nor listed in NOT_RUN")
    return problems, skipped


@pytest.mark.parametrize("page", pages(), ids=page_name)
def test_every_command_of_every_page(page, setup_state, tmp_path):
    """Run or check every command of one page, top to bottom, in a fresh copy of the set-up state."""
    commands = page_commands(page)
    problems, skipped = check_page(commands, page_sandbox(setup_state, tmp_path / "checkout", commands))
    print("\n".join(skipped))
    assert not problems, "\n\n".join(problems)


def test_the_pages_show_commands():
    """The parser finds the pages' blocks, and the README starts with the set-up command CI runs."""
    assert len([c for page in pages() for c in page_commands(page)]) > 60
    assert SETUP in [c.text for c in readme_commands()[:6]]
    assert {page_name(p) for p in pages()} >= {"README.md", "docs/export.md", "docs/jetson.md"}


def test_the_parser_reads_blocks_continuations_and_inline_commands():
    text = ("Run `python demo.py --modality depth` first.\n\n```bash\npython -m runtime MODEL --rgb A \\\n"
            "    [--aux B]   # a comment\npython3 -m venv .venv && python demo.py\n```\n")
    got = [(c.text, c.line, c.synopsis, c.tool()) for c in readme_commands(text)]
    assert got == [("python demo.py --modality depth", 1, False, "demo"),
                   ("python -m runtime MODEL --rgb A [--aux B]", 4, True, "runtime.__main__"),
                   ("python3 -m venv .venv", 6, False, "venv"), ("python demo.py", 6, False, "demo")]


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_resolve():
    """Every relative link of the README and docs/ names a file that exists and, with #, a heading of it."""
    broken = []
    for page in pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page_name(page)}: {target}: no such file")
            elif fragment and fragment not in {anchor(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}:
                broken.append(f"{page_name(page)}: {target}: no such heading")
    assert not broken, "\n".join(broken)
