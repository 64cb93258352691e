"""How every command-line tool of the project runs: one-line errors, exit codes, outputs
checked before any work. Imports nothing beyond the standard library.

A new tool: build its parser with ``ArgumentParser`` (``count`` / ``seconds`` / ``positive`` for numbers),
check each output with ``output_file`` / ``output_dir`` at the start of its body, and end with
``if __name__ == "__main__": sys.exit(run_tool(body, parse_args))``, ``body(args) -> int``.

Exit status: 0 done; 1 the tool's own verdict (a check beyond tolerance, frames that failed);
2 a usage error: bad arguments, a missing or unreadable input, a model of the wrong kind, an
output that cannot be written (``ValueError``, ``OSError``, ``UsageError``: one line
``error: ...`` on stderr, never a traceback); 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM, raised in the main thread as ``Terminated`` so that ``finally`` blocks and atomic
writes clean up as on Ctrl-C); 70 an unexpected exception, which is a bug: one line naming it.
``MMSEG_DEBUG=1`` in the environment prints the traceback of every error as well.

Output paths, one policy for every tool: missing parent folders are created; an output under
a file, a folder where a file goes or a file where a folder goes, and a folder that cannot be
written are refused before any work. An existing output is refused unless the tool's rule
says otherwise (``replace=True``: exports replace an earlier file only after their check,
benchmark results and demo pictures are re-measured into the same files; a resumable folder).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

DEBUG_ENV = "MMSEG_DEBUG"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 70, 130, 143
# What a user's mistake or environment raises: reported in one line, exit status 2.
EXPECTED = (ValueError, OSError, MemoryError, ModuleNotFoundError)


class UsageError(ValueError):
    """A bad command line, input, model or output: reported in one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a tool ends as on Ctrl-C (exit status 143)."""

    exit_code = EXIT_TERMINATED


def interrupt_code(e: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return getattr(e, "exit_code", EXIT_INTERRUPTED)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line: raised as ``UsageError``, printed by ``run_tool``."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


# ---- numbers -----------------------------------------------------------------------------------

def _number(text: str, kind, low, strict: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or (value <= low if strict else value < low):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def count(text: str) -> int:
    """argparse type: an integer >= 1 (frames, runs, workers, batch sizes)."""
    return _number(text, int, 1, False, "an integer >= 1")


def natural(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, 0, False, "an integer >= 0")


def seconds(text: str) -> float:
    """argparse type: a finite time >= 0 (seconds, milliseconds: the flag's unit)."""
    return _number(text, float, 0.0, False, "a number >= 0")


def positive(text: str) -> float:
    """argparse type: a finite number > 0 (rates, scales, depth units)."""
    return _number(text, float, 0.0, True, "a number > 0")


# ---- output paths ------------------------------------------------------------------------------

def _check_parent(path: Path) -> None:
    """The nearest existing ancestor must be a writable folder; missing folders are then created."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            raise UsageError(f"{path}: {parent} is a broken link")
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot write into {parent} (permission denied)")
    path.parent.mkdir(parents=True, exist_ok=True)


def output_file(path, replace: bool = False, flag: str | None = None) -> Path:
    """Check a file a tool will write, before any work: not a folder, not under a file, its
    folder writable (missing folders are created); an existing file is refused unless
    ``replace`` (the tool's rule) or, with ``flag``, the user passed that flag."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; the output is a file (give a file name)")
    _check_parent(path)
    if not replace and (path.exists() or path.is_symlink()):
        how = f" (or pass {flag})" if flag else ""
        raise UsageError(f"{path}: exists already; remove it or choose another name{how}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{path}: exists and cannot be replaced (permission denied)")
    return path


def output_dir(path, exist_ok: bool = True, flag: str | None = None) -> Path:
    """Check a folder a tool will write into, before any work: not a file, not under a file,
    writable; created when missing. ``exist_ok=False``: an existing folder is refused (unless
    ``flag`` was passed, which the tool handles)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: is a file; the output is a folder")
    if path.is_dir():
        if not exist_ok:
            how = f" (or pass {flag})" if flag else ""
            raise UsageError(f"{path}: exists already; remove it or choose another name{how}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{path}: cannot write into it (permission denied)")
        return path
    _check_parent(path)  # its parents are made; the folder itself by the tool as it writes
    return path


PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_result_outputs(json_path=None, plot_path=None) -> None:
    """A benchmark's ``--json`` / ``--plot``: checked before the first measurement, so that a
    run's results are never lost at its end. Earlier results under the same names are
    replaced (the documented commands re-measure into benchmarks/results)."""
    if json_path is not None:
        output_file(json_path, replace=True)
    if plot_path is not None:
        if Path(plot_path).suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"{plot_path}: a plot is written as {', '.join(PLOT_FORMATS)} (by its name's ending)")
        output_file(plot_path, replace=True)


def input_file(path, what: str = "input") -> Path:
    """An input that must be a readable file: one line when it is missing, a folder or unreadable."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file ({what})")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; expected a file ({what})")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: cannot be read (permission denied)")
    return path


# ---- signals -----------------------------------------------------------------------------------

def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises ``Terminated`` in the main thread inside the block (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Deferred:
    """The signal that arrived inside ``signals_deferred``: its exit status, or None."""

    def __init__(self, say: bool = True):
        self.exit_code, self.say = None, say

    def __call__(self, signum, frame):
        code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        if self.exit_code is None and self.say:
            print(f"{'terminated' if code == EXIT_TERMINATED else 'interrupted'} while finishing the outputs: "
                  "they are completed first", file=sys.stderr, flush=True)
        self.exit_code = self.exit_code or code


@contextlib.contextmanager
def signals_deferred(say: bool = True):
    """Ctrl-C and SIGTERM are held while the block runs (closing a bag, writing an index), so
    that a second signal cannot discard the finished work; ``.exit_code`` says what came."""
    deferred = Deferred(say)
    if threading.current_thread() is not threading.main_thread():
        yield deferred
        return
    previous = {s: signal.signal(s, deferred) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield deferred
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_after():
    """Ctrl-C and SIGTERM wait until the block is done (one message written whole into an
    output bag), then interrupt as they would have."""
    with signals_deferred(say=False) as deferred:
        yield
    if deferred.exit_code == EXIT_TERMINATED:
        raise Terminated()
    if deferred.exit_code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt()


# ---- messages ----------------------------------------------------------------------------------

def error_text(e: BaseException) -> str:
    """An exception as one line: ``path: reason`` for OS errors, the message otherwise."""
    if isinstance(e, OSError) and e.strerror:
        names = [str(n) for n in (e.filename, e.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {e.strerror}" if names else e.strerror
    elif isinstance(e, MemoryError):
        text = f"out of memory{': ' + str(e) if str(e) else ''}"
    elif isinstance(e, ModuleNotFoundError):
        text = f"{e}: install it (pip install -e '.[torch,ros,fleet]' installs the project's optional packages)"
    else:
        text = str(e)
    text = " ".join(text.split())
    return text or type(e).__name__


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    text = " ".join(str(message).split())
    prefix = "" if category.__module__.startswith(("runtime", "export", "models")) else f"{category.__name__}: "
    print(f"warning: {prefix}{text}", file=file or sys.stderr, flush=True)


def bug_line(e: BaseException) -> str:
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return (f"error: unexpected {type(e).__name__}{at}: {error_text(e)} (a bug; {DEBUG_ENV}=1 prints the "
            "traceback)")


# ---- the runner --------------------------------------------------------------------------------

def run_tool(body, parse_args=None, argv=None) -> int:
    """Parse ``argv`` (``parse_args(argv)``, or give ``body`` the list itself), run
    ``body(args)`` and map what it raises to one line and an exit status (module docstring).
    Returns the exit status; ``body``'s return value (None: 0) when it ends normally."""
    show = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        with sigterm_as_interrupt():
            args = parse_args(argv) if parse_args is not None else argv
            code = body(args)
        return EXIT_OK if code is None else int(code)
    except KeyboardInterrupt as e:
        code = interrupt_code(e)
        if debug():
            traceback.print_exc()
        print("terminated" if code == EXIT_TERMINATED else "interrupted", file=sys.stderr)
        return code
    except EXPECTED as e:
        if debug():
            traceback.print_exc()
        print(f"error: {error_text(e)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - a bug: one line (the traceback with MMSEG_DEBUG=1)
        if debug():
            traceback.print_exc()
        print(bug_line(e), file=sys.stderr)
        return EXIT_BUG
    finally:
        warnings.showwarning = show
        sys.stdout.flush()
