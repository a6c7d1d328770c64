"""Name -> factory registries, timm style: `@register` to add, `create(name)` to build.

Plugins are discovered by folder (benchopt style): every module in `methods/`
and `baselines/` is imported once, and its decorators fill the registry.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable

from bench.errors import BenchError


class Registry:
    def __init__(self, kind: str, plugin_packages: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._plugin_packages = plugin_packages
        self._discovered = not plugin_packages

    def register(self, name: str | None = None) -> Callable:
        def deco(obj):
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return deco

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for pkg_name in self._plugin_packages:
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{pkg_name}.{info.name}")

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        self._discover()
        if name not in self._entries:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            near = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise BenchError(
                f"unknown {self.kind} {name!r}{near}; known {self.kind}s: {', '.join(self.names())}"
            )
        return self._entries[name]

    def create(self, name: str, *args, **kwargs) -> Any:
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries


DATASETS = Registry("dataset")
MODELS = Registry("model")
METHODS = Registry("method", plugin_packages=("baselines", "methods"))

register_dataset = DATASETS.register
register_model = MODELS.register
register_method = METHODS.register


def list_datasets() -> list[str]:
    import bench.data  # noqa: F401  (fills the registry)

    return DATASETS.names()


def list_models() -> list[str]:
    import bench.models  # noqa: F401

    return MODELS.names()


def list_methods() -> list[str]:
    return METHODS.names()
