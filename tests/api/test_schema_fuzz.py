"""Property-based fuzzing of every operation in ``/api/openapi.json`` with Schemathesis:
whatever it sends, the answer is never a 500, and every error has the one JSON shape.

It runs as an admin, then as a viewer (whose every change must be refused), against an
in-process server on a *copy* of the SQLite deployment's catalog and outputs, so the
changes it makes (retrying and cancelling jobs, queueing post-processing) never reach the
catalog the other API tests read. Creating a source is left out for the admin: a random
``s3://`` URL would be listed on the internet; ``test_sources`` covers that body.
Skipped when Schemathesis is not installed (it is an optional dev dependency).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .support import Deployment, serve_copy

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the optional import)

pytestmark = pytest.mark.timeout(180)
#: The operations of the API, IIIF and notifications included; not the push endpoints.
OURS = (
    r"^/(api/v1/(health|session|sources|folders|datasets|items|jobs|dive_rpc|notifications)"
    r"|iiif/)"
)
#: Examples per operation: a few seconds in all.
EXAMPLES = 20


@dataclass
class Target:
    url: str
    token: str


@pytest.fixture(scope="module")
def fuzz_target(api: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with serve_copy(api, tmp_path_factory.mktemp("api-fuzz")) as (url, _):
        yield Target(url, api.admin_token)


def check(case: Any, target: Target) -> Any:
    """One generated request: never a 500; an error has the one JSON shape. Returns the
    response."""
    headers = {"Authorization": f"Bearer {target.token}"}
    response = case.call(base_url=target.url, headers=headers, timeout=30)
    where = f"{case.method} {response.request.url}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.content!r}"
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert set(body) == {"error", "status"}, (where, body)
        assert body["status"] == response.status_code, (where, body)
        assert body["error"] and "\n" not in body["error"], (where, body)
    return response


def operations(target: Target, *, sources_post: bool = False) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{target.url}/api/openapi.json")
    schema = schema.include(path_regex=OURS)
    if not sources_post:
        schema = schema.exclude(method="POST", path="/api/v1/sources")
        # The connection check lists whatever random URL it is given: never a real host.
        schema = schema.exclude(method="POST", path="/api/v1/sources/check")
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 25, [op.label for op in found]
    return found


def drive(operation: Any, examples: int, test: Any) -> None:
    # Schemathesis' own pytest integration (from_fixture) does not run on pytest 9 yet,
    # so each operation's Hypothesis strategy is driven here.
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def fuzz(case: Any) -> None:
        test(case)

    fuzz()


def test_no_input_makes_a_server_error(fuzz_target: Target) -> None:
    for operation in operations(fuzz_target):
        drive(operation, EXAMPLES, lambda case: check(case, fuzz_target))


#: A viewer's change is refused whatever it sends: by role (403), or earlier because the
#: request is malformed (400), names nothing (404) or uses a method that does not exist.
VIEWER_REFUSALS = {400, 401, 403, 404, 405, 422}
#: Signing in and out changes only the caller's own cookie, never the catalog.
OWN_SESSION = "/api/v1/session"


def test_a_viewer_changes_nothing_whatever_it_sends(fuzz_target: Target, api: Deployment) -> None:
    """Every operation as a viewer, creating sources included (a viewer's is refused
    before any URL is opened): never a 500, and no write ever succeeds."""
    viewer = Target(fuzz_target.url, api.viewer_token)
    writes: list[str] = []

    def as_viewer(case: Any) -> None:
        response = check(case, viewer)
        if case.method.upper() in {"GET", "HEAD", "OPTIONS"} or case.path == OWN_SESSION:
            return
        if response.status_code not in VIEWER_REFUSALS:
            writes.append(f"{case.method} {response.request.url} -> {response.status_code}")

    for operation in operations(viewer, sources_post=True):
        examples = EXAMPLES if operation.method.upper() != "GET" else 5
        drive(operation, examples, as_viewer)
    assert writes == []
