"""Per-source processing profiles: what a source's images become, which processors run
for its datasets, and where (and under which names) its derived files are written.

A profile is kept in the source's ``options`` under ``"profile"``, holding only the
values that differ from the defaults, so a source added before profiles existed has the
default profile: today's layout rules, every processor that applies, the installation's
output store with catalog names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mediamirror.errors import ConfigError

#: What raster images of a source become.
IMAGES_MODES = ("auto", "large-image", "sequence")
#: How derived files of a source are named in its output store.
OUTPUT_LAYOUTS = ("catalog", "mirror")


@dataclass(frozen=True)
class Profile:
    """One source's profile. ``processors`` None means every processor that applies."""

    images: str = "auto"
    processors: tuple[str, ...] | None = None
    output_url: str | None = None
    output_layout: str = "catalog"
    output_endpoint_url: str | None = None

    def allows(self, processor: str) -> bool:
        """Whether a processor runs for this source's datasets."""
        return self.processors is None or processor in self.processors

    def to_options(self) -> dict[str, Any]:
        """The values that differ from the defaults, for ``Source.options["profile"]``."""
        out: dict[str, Any] = {}
        if self.images != "auto":
            out["images"] = self.images
        if self.processors is not None:
            out["processors"] = list(self.processors)
        if self.output_url:
            out["output_url"] = self.output_url
        if self.output_layout != "catalog":
            out["output_layout"] = self.output_layout
        if self.output_endpoint_url:
            out["output_endpoint_url"] = self.output_endpoint_url
        return out

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> Profile:
        raw = (options or {}).get("profile") or {}
        processors = raw.get("processors")
        return cls(
            images=str(raw.get("images") or "auto"),
            processors=tuple(str(p) for p in processors) if processors is not None else None,
            output_url=raw.get("output_url") or None,
            output_layout=str(raw.get("output_layout") or "catalog"),
            output_endpoint_url=raw.get("output_endpoint_url") or None,
        )

    def describe(self) -> dict[str, Any]:
        """Every field, defaults included, as ``source show`` prints them."""
        return {
            "images": self.images,
            "processors": list(self.processors) if self.processors is not None else "all",
            "output": self.output_url or "(installation's output store)",
            "output_layout": self.output_layout,
            "output_endpoint_url": self.output_endpoint_url,
        }


def profile_of(source: Any) -> Profile:
    """The profile of a source row (anything with an ``options`` mapping)."""
    return Profile.from_options(getattr(source, "options", None))


def parse_processors(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"video,pose"`` or a list -> ("video", "pose"); ``None``, ``""`` or ``"all"`` ->
    None (every processor that applies)."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    if not cleaned or cleaned == ("all",):
        return None
    return cleaned


def validated(
    base: Profile | None = None,
    *,
    images: str | None = None,
    processors: str | Iterable[str] | None = None,
    output_url: str | None = None,
    output_layout: str | None = None,
    output_endpoint_url: str | None = None,
    known_processors: Iterable[str] | None = None,
) -> Profile:
    """``base`` (default: the default profile) with the given values changed, each checked
    with a one-line :class:`ConfigError`. ``output_url=""`` goes back to the installation's
    output store; ``processors="all"`` back to every processor."""
    profile = base or Profile()
    if images is not None:
        if images not in IMAGES_MODES:
            raise ConfigError(f"--images must be one of {', '.join(IMAGES_MODES)}, not {images!r}")
        profile = replace(profile, images=images)
    if processors is not None:
        chosen = parse_processors(processors)
        if chosen is not None and known_processors is not None:
            known = list(known_processors)
            unknown = [p for p in chosen if p not in known]
            if unknown:
                raise ConfigError(
                    f"unknown processor {unknown[0]!r} in --processors: choose from "
                    f"{', '.join(known)}"
                )
        profile = replace(profile, processors=chosen)
    if output_layout is not None:
        if output_layout not in OUTPUT_LAYOUTS:
            raise ConfigError(
                f"--output-layout must be one of {', '.join(OUTPUT_LAYOUTS)}, not {output_layout!r}"
            )
        profile = replace(profile, output_layout=output_layout)
    if output_url is not None:
        profile = replace(profile, output_url=output_url or None)
    if output_endpoint_url is not None:
        profile = replace(profile, output_endpoint_url=output_endpoint_url or None)
    return profile


__all__ = [
    "IMAGES_MODES",
    "OUTPUT_LAYOUTS",
    "Profile",
    "parse_processors",
    "profile_of",
    "validated",
]
