"""`python -m runtime` as a user runs it, in a process where importing torch fails."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TORCH = "import sys, runpy; sys.modules['torch'] = None; sys.argv[0] = 'runtime'; " \
           "runpy.run_module('runtime', run_name='__main__')"


def cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
