"""Processors by name: the built-in ones, command processors from config.yaml, and any
registered by other packages under the ``mediamirror.processors`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from mediamirror.config import Settings
from mediamirror.errors import ConfigError
from mediamirror.processing.processors.base import Dataset, Processor
from mediamirror.processing.processors.command import CommandProcessor
from mediamirror.processing.processors.images import ImagesProcessor
from mediamirror.processing.processors.pyramid import PyramidProcessor
from mediamirror.processing.processors.video import VideoProcessor
from mediamirror.profiles import Profile

# Keyed by id() but holding the settings object too: an id is reused once its object is
# garbage-collected, and a bare id would hand another configuration's processors out.
_CACHE: dict[int, tuple[Settings, dict[str, Processor]]] = {}


def _build(settings: Settings) -> dict[str, Processor]:
    found: dict[str, Processor] = {
        "video": VideoProcessor(
            settings.transcode_preset, settings.transcode_crf, settings.transcode_vfr_fps
        ),
        "pyramid": PyramidProcessor(settings.pyramid_max_dimension),
        "images": ImagesProcessor(),
    }
    for ep in entry_points(group="mediamirror.processors"):
        found[ep.name] = ep.load()()
    configured: Any = settings.sections.get("processors", {}) or {}
    for name, conf in dict(configured).items():
        conf = dict(conf or {})
        found[name] = _python(name, conf) if "python" in conf else CommandProcessor(name, conf)
    return found


def _python(name: str, conf: dict[str, Any]) -> Processor:
    """A processor class named ``module:Class`` in config.yaml, built as Class(name, conf)."""
    import importlib

    target = str(conf["python"])
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"processor {name!r}: cannot import {target!r}: {exc}") from exc
    proc: Processor = cls(name, conf)
    return proc


def registry(settings: Settings) -> dict[str, Processor]:
    """Processors by name for these settings (built once per settings object)."""
    cached = _CACHE.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _CACHE[id(settings)] = (settings, _build(settings))
    return cached[1]


def for_dataset(
    settings: Settings,
    dataset: Dataset,
    *,
    auto_only: bool = True,
    profile: Profile | None = None,
) -> list[Processor]:
    """The processors that apply to a dataset's type and that ``profile`` (the profile
    of the dataset's source; None: every processor) lets run."""
    return [
        p
        for p in registry(settings).values()
        if dataset.type in p.dataset_types
        and (p.auto or not auto_only)
        and (profile is None or profile.allows(p.name))
    ]
