"""Property-based fuzzing of every operation in ``/api/openapi.json`` with Schemathesis:
whatever it sends, the answer is never a 500, and every error has the one JSON shape.

It runs as an admin against an in-process server on a *copy* of the SQLite deployment's
catalog and outputs, so the changes it makes (retrying and cancelling jobs, queueing
post-processing) never reach the catalog the other API tests read. Creating a source is
left out: a random ``s3://`` URL would be listed on the internet; ``test_sources`` covers
that body. Skipped when Schemathesis is not installed (it is an optional dev dependency).
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
#: The operations of the API, IIIF included; not the push endpoints of other packages.
OURS = r"^/(api/v1/(health|session|sources|folders|datasets|items|jobs|dive_rpc)|iiif/)"
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


def check(case: Any, target: Target) -> None:
    """One generated request: never a 500; an error has the one JSON shape."""
    headers = {"Authorization": f"Bearer {target.token}"}
    response = case.call(base_url=target.url, headers=headers, timeout=30)
    where = f"{case.method} {response.request.url}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.content!r}"
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert set(body) == {"error", "status"}, (where, body)
        assert body["status"] == response.status_code, (where, body)
        assert body["error"] and "\n" not in body["error"], (where, body)


def test_no_input_makes_a_server_error(fuzz_target: Target) -> None:
    # Schemathesis' own pytest integration (from_fixture) does not run on pytest 9 yet,
    # so each operation's Hypothesis strategy is driven here.
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/api/openapi.json")
    schema = schema.include(path_regex=OURS).exclude(method="POST", path="/api/v1/sources")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            check(case, fuzz_target)

        fuzz()
