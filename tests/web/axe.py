"""axe-core accessibility checks for the Playwright tests (the axe-core build bundled by the
``axe-playwright-python`` package; nothing is downloaded)."""

from __future__ import annotations

from typing import Any

from axe_playwright_python.sync_playwright import Axe

#: Impacts that fail a test; "minor" and "moderate" findings are reported, not failed.
FAILING = ("serious", "critical")

_axe = Axe()


def violations(page: Any) -> list[dict[str, Any]]:
    """Every axe-core violation on the page as it is now (WCAG 2.x A and AA rules)."""
    options = {
        "resultTypes": ["violations"],
        "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    }
    found = _axe.run(page, options=options).response["violations"]
    return list(found)


def describe(found: list[dict[str, Any]]) -> str:
    lines = []
    for v in found:
        targets = [", ".join(map(str, n.get("target", []))) for n in v.get("nodes", [])[:5]]
        lines.append(f"{v['impact']}: {v['id']} ({v['help']}) at {'; '.join(targets)}")
    return "\n".join(lines)


def assert_accessible(page: Any, name: str) -> None:
    """Fail when the page has serious or critical violations; ``name`` says which page."""
    bad = [v for v in violations(page) if v.get("impact") in FAILING]
    assert not bad, f"accessibility violations on {name}:\n{describe(bad)}"
