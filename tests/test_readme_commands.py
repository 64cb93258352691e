"""Every command the README shows, as a reader meets them, read from the README's text
(``tests/readme_commands.py``), so that a changed or new line is checked as it is written.

- A usage line (``[--flag]``, placeholders such as MODEL or OUT, ``a|b``): every ``--flag`` it
  names is one the tool's ``--help`` lists.
- A concrete command of this project: run in a fresh folder, in the README's order (a command
  may use what an earlier one wrote), with the same flags, on tiny models where the README's
  ViT-B would take minutes: the sandbox holds tiny versions of the files the README names
  (``PROVISIONS``), and the demo checkpoint commands write the tiny architecture (``EXTRA``).
  Numbers that only set how long a benchmark measures are shortened (``SHORTER``). It must
  exit 0, or, where this machine lacks what the command needs (TensorRT, a Triton server),
  end with the one-line error a user without it sees (``EXPECTED``); never a traceback.
- Anything else (installation, CMake, Docker, ROS 2, a Ray cluster, GPU loops, ViT-B SimCMF)
  is listed in ``NOT_RUN`` with the reason. A README command that fits none of these fails
  the test: decide how it is checked when you add it.
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

from readme_commands import ROOT, Command, readme_commands

pytestmark = pytest.mark.slow

# (pattern, why it is not run here)
NOT_RUN = [
    (r"^(python3 -m venv|\. |source |pip install)", "sets up the environment (CI installs the project itself)"),
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


# The files the README's commands name and no earlier command writes: tiny stand-ins, in order.
PROVISIONS = {
    "checkpoints/gopt_demo_rgbt.pt": lambda p, s: _tiny_checkpoint(p, "thermal"),
    "checkpoints/gopt_demo_rgbd.pt": lambda p, s: _tiny_checkpoint(p, "depth"),
    "checkpoints/simcmf_rgbt_lora_untrained.encoder.onnx": _tiny_simcmf,
    "gopt.pt": lambda p, s: shutil.copy(s / "checkpoints" / "gopt_demo_rgbt.pt", p),
    "gopt_rgbt.onnx": lambda p, s: _tiny_export(p, s, "--dynamic-batch", "--no-check"),
    "gopt_demo_rgbt.onnx": lambda p, s: _tiny_export(p, s, "--dynamic-batch", "--no-check"),
    "drives": _frame_folders,
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A fresh folder as a user's checkout has it (data/, tests/, build/ linked), with PROVISIONS."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("data", "tests", "build"):
        if (ROOT / name).exists():
            (root / name).symlink_to(ROOT / name)
    for name, make in PROVISIONS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make(root / name, root)
    return root


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
        return [f"README line {command.line}: a usage line of no project tool: {command.text}"]
    listed = set(re.findall(r"--[a-z0-9][a-z0-9-]*", help_text(module)))
    shown = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", command.text))
    return [f"README line {command.line}: {module} has no {flag}" for flag in sorted(shown - listed)]


def run_command(command: Command, sandbox: Path) -> list[str]:
    code, says = expected(command)
    t0 = time.perf_counter()
    r = subprocess.run(argv_of(command), cwd=sandbox, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"{time.perf_counter() - t0:6.1f} s  exit {r.returncode}  {command.text}")
    problems = []
    if r.returncode != code:
        problems.append(f"README line {command.line}: `{command.text}` exited {r.returncode}, expected {code}:\n"
                        f"{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    if "Traceback" in r.stderr:
        problems.append(f"README line {command.line}: `{command.text}` printed a traceback:\n{r.stderr[-2000:]}")
    if says is not None:
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        if len(errors) != 1 or not re.search(says, errors[0]):
            problems.append(f"README line {command.line}: `{command.text}` should end with one error line "
                            f"saying /{says}/, got: {errors}")
    return problems


def test_every_readme_command(sandbox):
    """Run or check every README command (module docstring); report what was not run and why."""
    problems, skipped = [], []
    commands = readme_commands()
    assert len(commands) > 30  # the parser found the README's blocks
    for command in commands:
        why = not_run_reason(command)
        if command.tool() is None and re.search(SHELL, command.text):
            problems += run_command(command, sandbox)
        elif command.synopsis and command.tool() is not None:
            problems += check_flags(command)
        elif why is not None:
            skipped.append(f"not run (README line {command.line}): {command.text[:90]}: {why}")
        elif command.tool() is not None or command.text.startswith("python -c "):
            problems += run_command(command, sandbox)
        else:
            problems.append(f"README line {command.line}: `{command.text}` is neither run nor listed in NOT_RUN")
    print("\n".join(skipped))
    assert not problems, "\n\n".join(problems)


def test_the_parser_reads_blocks_continuations_and_inline_commands():
    text = ("Run `python demo.py --modality depth` first.\n\n```bash\npython -m runtime MODEL --rgb A \\\n"
            "    [--aux B]   # a comment\npython3 -m venv .venv && python demo.py\n```\n")
    got = [(c.text, c.line, c.synopsis, c.tool()) for c in readme_commands(text)]
    assert got == [("python demo.py --modality depth", 1, False, "demo"),
                   ("python -m runtime MODEL --rgb A [--aux B]", 4, True, "runtime.__main__"),
                   ("python3 -m venv .venv", 6, False, "venv"), ("python demo.py", 6, False, "demo")]
