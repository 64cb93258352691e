"""Command lines of the export tools: the project's shared runner (``runtime/cli.py``), so that
every bad argument, model file or output path is one line on stderr and exit status 2."""
from runtime.cli import (ArgumentParser, UsageError, count, error_text, input_file, output_dir,  # noqa: F401
                         output_file, positive, run_tool, seconds)
