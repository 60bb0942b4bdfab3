"""Serving runtimes: one module each registers its ``Runtime``s in ``RUNTIMES`` (base.py);
``auto.py`` is ``TAILOR_RUNTIME=auto``, the start-up measurement over the candidates. See
docs/architecture.md, "Adding a runtime"."""
from .base import (REFERENCE, RUNTIMES, Runtime, RuntimeOptions, auto_candidates, get_runtime,
                   open_runtime, register_runtime, selected_by)
from . import ort, pytorch  # noqa: F401,E402  (each module registers its runtimes)

__all__ = ["REFERENCE", "RUNTIMES", "Runtime", "RuntimeOptions", "auto_candidates", "get_runtime",
           "open_runtime", "register_runtime", "selected_by"]
