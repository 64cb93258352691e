"""Progress lines for the slow steps of export and engine builds: ``runtime.progress``."""
from runtime.progress import Progress, elapsed

__all__ = ["Progress", "elapsed"]
