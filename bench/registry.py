"""Name -> factory registries, timm style: `@register` to add, `create(name)` to build.

Plugins are discovered by folder (benchopt style): the first lookup in a registry
imports every module of its plugin packages once (`bench/datasets/`,
`bench/models/`, `methods/`, `baselines/`), and their decorators fill it. So this
module imports no plugin, and nobody has to import one to fill a registry.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any

from bench.errors import BenchError


class Registry:
    def __init__(self, kind: str, plugin_packages: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._plugin_packages = plugin_packages
        self._discovered = not plugin_packages

    def register(self, target: Any = None) -> Any:
        """Decorator, bare (`@reg.register`) or called (`@reg.register()`, `@reg.register("name")`).

        The key is the given name, else the object's `name` attribute, else its `__name__`.
        """
        if callable(target):  # used bare: `target` is the object itself
            return self._add(target, None)
        if target is not None and not isinstance(target, str):
            raise TypeError(f"{self.kind} names are strings, got {type(target).__name__}")
        return lambda obj: self._add(obj, target)

    def _add(self, obj: Any, name: str | None) -> Any:
        if isinstance(obj, type) and name is None and "name" not in vars(obj) and hasattr(obj, "name"):
            # an inherited `name` would register it under its base class's name
            raise TypeError(f"{obj.__name__}: set `name = ...` on the class, or register it with a name")
        key = name or getattr(obj, "name", None) or obj.__name__
        if isinstance(obj, type) and getattr(obj, "name", key) != key:
            if "name" in vars(obj):
                raise TypeError(f"{obj.__name__} is registered as {key!r} but its name is {obj.name!r}")
            obj.name = key  # the class logs under the name it is registered as
        if key in self._entries and self._entries[key] is not obj:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[key] = obj
        return obj

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


DATASETS = Registry("dataset", plugin_packages=("bench.datasets",))
MODELS = Registry("model", plugin_packages=("bench.models",))
METHODS = Registry("method", plugin_packages=("baselines", "methods"))


def list_datasets() -> list[str]:
    return DATASETS.names()


def list_models() -> list[str]:
    return MODELS.names()


def list_methods() -> list[str]:
    return METHODS.names()
