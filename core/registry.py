"""Plugin discovery through pluggy and the ``vecguard`` entry point group.

A plugin module (ours or a third party's) implements one hook::

    from vecguard import Part, hookimpl

    @hookimpl
    def vecguard_parts():
        return [Part(kind="store", name="mystore", factory=build, extra=None)]

and registers the module under ``[project.entry-points.vecguard]``. The
factory receives the config table of its part (a dict) and the config's base
directory, and imports its heavy library only then.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from .errors import MissingExtraError, PluginError, PluginNotFoundError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vecguard"
KINDS = ("encoder", "store", "keyword", "fuser")

hookspec = pluggy.HookspecMarker("vecguard")
hookimpl = pluggy.HookimplMarker("vecguard")


@dataclass(frozen=True)
class Part:
    """One buildable part a plugin offers.

    ``factory(options, base_dir)`` returns an Encoder, VectorStore,
    KeywordIndex or Fuser according to ``kind``. ``extra`` names the
    ``vecguard[...]`` extra that installs what the factory imports.
    """

    kind: str
    name: str
    factory: Callable[[dict[str, Any], Path], Any]
    extra: str | None = None
    description: str = ""


class _HookSpecs:
    @hookspec
    def vecguard_parts(self) -> list[Part]:  # type: ignore[empty-body]
        """Return the parts this plugin offers."""


@dataclass(frozen=True)
class DiscoveredPart:
    part: Part
    plugin: str
    distribution: str


@dataclass(frozen=True)
class BrokenPlugin:
    entry_point: str
    distribution: str
    error: str


class Registry:
    """Everything discovered: parts by kind and name, and plugins that failed to load."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("vecguard")
        self._pm.add_hookspecs(_HookSpecs)
        self.parts: dict[tuple[str, str], DiscoveredPart] = {}
        self.broken: list[BrokenPlugin] = []

    @classmethod
    def discover(cls) -> Registry:
        registry = cls()
        registry.load_entry_points()
        return registry

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        # One entry point at a time, unlike pm.load_setuptools_entrypoints: a
        # plugin that fails to import is reported and skipped, never fatal.
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=group):
            distribution = ep.dist.name if ep.dist else "?"
            if ep.name in seen or self._pm.get_plugin(ep.name) is not None:
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
                self._pm.register(module, name=ep.name)
                parts = _call_one(self._pm, module)
            except Exception as exc:  # a broken third-party plugin must not take the rest down
                self.broken.append(
                    BrokenPlugin(f"{ep.name} = {ep.value}", distribution, f"{type(exc).__name__}: {exc}")
                )
                log.warning("vecguard plugin %r from %s failed to load: %s", ep.name, distribution, exc)
                if self._pm.get_plugin(ep.name) is not None:
                    self._pm.unregister(name=ep.name)
                continue
            for part in parts:
                self.add(part, plugin=ep.name, distribution=distribution)

    def add(self, part: Part, plugin: str = "<direct>", distribution: str = "<direct>") -> None:
        if part.kind not in KINDS:
            raise PluginError(
                f"plugin {plugin!r} offers a part of unknown kind {part.kind!r}; kinds are {', '.join(KINDS)}"
            )
        key = (part.kind, part.name)
        if key in self.parts:
            first = self.parts[key]
            log.warning(
                "%s %r is offered by both %s and %s; keeping the first",
                part.kind,
                part.name,
                first.distribution,
                distribution,
            )
            return
        self.parts[key] = DiscoveredPart(part, plugin, distribution)

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self.parts if k == kind)

    def build(self, kind: str, name: str, options: dict[str, Any], base_dir: Path) -> Any:
        found = self.parts.get((kind, name))
        if found is None:
            available = ", ".join(self.names(kind)) or "none"
            hint = ""
            broken = [b for b in self.broken if b.entry_point.split(" = ")[0] == name]
            if broken:
                hint = f"; plugin {name!r} is installed but failed to load: {broken[0].error}"
            raise PluginNotFoundError(f"no {kind} plugin named {name!r}; found: {available}{hint}")
        try:
            return found.part.factory(dict(options), base_dir)
        except ModuleNotFoundError as exc:
            if found.part.extra:
                raise MissingExtraError(
                    f"{kind} plugin {name!r} needs {exc.name!r}, which is not installed; "
                    f"fix: pip install 'vecguard[{found.part.extra}]'"
                ) from exc
            raise


def _call_one(pm: pluggy.PluginManager, module: Any) -> list[Part]:
    """Call vecguard_parts of just this module, validated by pluggy at register time."""
    impls = [impl for impl in pm.hook.vecguard_parts.get_hookimpls() if impl.plugin is module]
    parts: list[Part] = []
    for impl in impls:
        result = impl.function()
        for part in result or []:
            if not isinstance(part, Part):
                raise PluginError(f"vecguard_parts must return Part objects, got {type(part).__name__}")
            parts.append(part)
    return parts
