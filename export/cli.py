"""Command lines of the export tools: every bad argument or model file is one line on stderr
and exit status 2, never a traceback."""
from __future__ import annotations

import argparse


class UsageError(ValueError):
    """A bad command line or model file: reported in one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (raised, then printed by the tool's ``run``)."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")
