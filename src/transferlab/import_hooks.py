"""Run code around the first import of a heavy module, without importing it now.

``import transferlab`` must stay fast (TensorFlow and Keras take seconds to load), yet
two things must happen when they do load: TensorFlow's start-up noise is filtered, and
the Keras objects saved models name are registered.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable


class FirstImport(importlib.abc.MetaPathFinder):
    """Calls ``wrap(load, module)`` instead of ``load(module)`` the first time ``name`` loads."""

    def __init__(self, name: str, wrap: Callable):
        self.name, self.wrap = name, wrap

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # once is enough; the real finders do the finding
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module
        spec.loader.exec_module = lambda module: self.wrap(load, module)
        return spec


def on_first_import(name: str, wrap: Callable) -> None:
    """Arrange ``wrap(load, module)`` for the first import of ``name`` (once per wrap)."""
    waiting = [f for f in sys.meta_path if isinstance(f, FirstImport)]
    if not any(f.name == name and f.wrap is wrap for f in waiting):
        sys.meta_path.insert(0, FirstImport(name, wrap))
