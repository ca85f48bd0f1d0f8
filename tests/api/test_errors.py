"""Bad input never makes a 500: wrong types, negative offsets, huge limits and ids, unknown
ids, malformed bodies, unknown routes and methods. Every error has the one JSON shape."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Deployment, assert_error

pytestmark = pytest.mark.timeout(120)
HUGE = str(2**70)
#: The largest catalog id (INTEGER columns: 32-bit on PostgreSQL).
MAX = str(2**31 - 1)

#: (method, path, query, JSON body or raw bytes, expected status)
CASES: list[tuple[str, str, dict[str, Any] | None, Any, int]] = [
    ("GET", "/api/v1/folders", {"offset": "-1"}, None, 400),
    ("GET", "/api/v1/folders", {"offset": "abc"}, None, 400),
    ("GET", "/api/v1/folders", {"offset": HUGE}, None, 400),
    ("GET", "/api/v1/folders", {"limit": "0"}, None, 400),
    ("GET", "/api/v1/folders", {"limit": "100000"}, None, 400),
    ("GET", "/api/v1/folders", {"limit": "1.5"}, None, 400),
    ("GET", "/api/v1/folders", {"sort": "size"}, None, 400),
    ("GET", "/api/v1/folders/abc", None, None, 400),
    ("GET", "/api/v1/folders/1.5", None, None, 400),
    ("GET", f"/api/v1/folders/{HUGE}", None, None, 400),
    ("GET", f"/api/v1/folders/{MAX}", None, None, 404),
    ("GET", f"/api/v1/folders/{2**31}", None, None, 400),
    ("GET", f"/api/v1/folders/{-(2**31)}", None, None, 404),
    ("GET", f"/api/v1/folders/{-(2**31) - 1}", None, None, 400),
    ("GET", f"/api/v1/jobs/{-(2**70)}/log", None, None, 400),
    ("GET", f"/api/v1/items/{2**63}", None, None, 400),
    ("GET", f"/iiif/3/{2**31}/info.json", None, None, 400),
    ("GET", f"/iiif/3/{MAX}/full/max/0/default.jpg", None, None, 404),
    ("GET", "/api/v1/folders/-1", None, None, 404),
    ("GET", "/api/v1/folders/0/children", {"offset": "-5"}, None, 400),
    ("GET", "/api/v1/folders/987654/children", None, None, 404),
    ("GET", "/api/v1/folders/987654/items", {"limit": "5000"}, None, 400),
    ("GET", "/api/v1/folders/987654/items", {"include_deleted": "perhaps"}, None, 400),
    ("GET", f"/api/v1/datasets/{HUGE}", None, None, 400),
    ("GET", f"/api/v1/datasets/{MAX}/video", None, None, 404),
    ("GET", "/api/v1/datasets/987654/frames", None, None, 404),
    ("GET", "/api/v1/datasets/987654/poster", None, None, 404),
    ("GET", f"/api/v1/items/{HUGE}/content", None, None, 400),
    ("GET", "/api/v1/items/-3", None, None, 404),
    ("GET", "/api/v1/jobs", {"offset": "-1"}, None, 400),
    ("GET", "/api/v1/jobs", {"offset": HUGE}, None, 400),
    ("GET", "/api/v1/jobs", {"offset": MAX}, None, 200),
    ("GET", "/api/v1/jobs", {"limit": "100000"}, None, 400),
    ("GET", "/api/v1/jobs", {"state": "stuck"}, None, 400),
    ("GET", f"/api/v1/jobs/{HUGE}", None, None, 400),
    ("GET", f"/api/v1/jobs/{MAX}/log", None, None, 404),
    ("POST", f"/api/v1/jobs/{HUGE}/retry", None, None, 400),
    ("POST", "/api/v1/jobs/abc/cancel", None, None, 400),
    ("GET", "/api/v1/sources/no-such-source", None, None, 404),
    ("GET", "/api/v1/sources/%ff%fe", None, None, 404),
    ("GET", "/api/v1/sources/sample/runs", {"limit": "abc"}, None, 400),
    ("POST", "/api/v1/sources", None, b'{"name": "x", "url": ', 400),
    ("POST", "/api/v1/sources", None, b"\xff\xfe not json", 400),
    ("POST", "/api/v1/sources", None, b"[1, 2, 3]", 400),
    ("POST", "/api/v1/sources", None, b'"just a string"', 400),
    ("POST", "/api/v1/sources", None, {"name": ["x"], "url": {"a": 1}}, 400),
    ("POST", "/api/v1/sources", None, {"name": "x", "url": "file:///", "check": "maybe"}, 400),
    ("POST", "/api/v1/session", None, b"{", 400),
    ("POST", "/api/v1/session", None, {"token": None}, 400),
    ("POST", "/api/v1/session", None, {}, 400),
    ("POST", "/api/v1/folders/1/postprocess", None, b"{oops", 400),
    ("POST", "/api/v1/folders/1/postprocess", None, {"limit": -3}, 400),
    ("POST", "/api/v1/folders/1/postprocess", None, {"limit": 10**30}, 200),
    ("POST", "/api/v1/folders/1/reprocess", None, None, 400),
    ("POST", "/api/v1/folders/1/reprocess", None, {"dry_run": "later"}, 400),
    ("POST", "/api/v1/folders/1/reprocess", None, {"prefix": 5}, 400),
    ("POST", "/api/v1/dive_rpc/batch_postprocess/1", {"limit": "-1"}, None, 400),
    ("POST", "/api/v1/dive_rpc/batch_postprocess/1", {"skipTranscoding": "x"}, None, 400),
    ("GET", "/api/v1/no-such-endpoint", None, None, 404),
    ("PUT", "/api/v1/folders", None, None, 405),
    ("DELETE", "/api/v1/jobs/1", None, None, 405),
    ("GET", "/iiif/3/abc/info.json", None, None, 400),
    ("GET", "/iiif/3/1/full/max/0", None, None, 404),
]


@pytest.mark.postgres
@pytest.mark.parametrize(("method", "path", "query", "body", "status"), CASES)
def test_bad_input_is_a_4xx_with_one_error_line(
    any_api: Deployment,
    method: str,
    path: str,
    query: dict[str, Any] | None,
    body: Any,
    status: int,
) -> None:
    kwargs: dict[str, Any] = {"params": query}
    if isinstance(body, bytes):
        kwargs.update(content=body, headers={"Content-Type": "application/json"})
    elif body is not None:
        kwargs["json"] = body

    response = any_api.admin.request(method, path, **kwargs)

    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, status)


@pytest.mark.postgres
def test_values_the_database_refuses_are_400s(any_api: Deployment) -> None:
    """NUL characters, strings longer than their column: SQLite stores them, PostgreSQL
    refuses them, and the refusal is the client's 400, never a 500."""
    dep = any_api
    strict = dep.backend == "postgresql"
    for path, params in (
        ("/api/v1/sources/a%00b", None),
        ("/api/v1/jobs", {"processor": "video\x00"}),
    ):
        response = dep.viewer.get(path, params=params)
        if strict or response.status_code >= 400:
            assert_error(response, 400 if strict else response.status_code)
    bodies = [
        {"name": "nul-mount", "url": "file:///tmp", "mount": "/nul\x00mount"},
        {"name": "long-region", "url": "s3://b", "region": "r" * 100},
        {"name": "long-profile", "url": "s3://b", "profile": "p" * 300},
    ]
    for body in bodies:
        response = dep.admin.post("/api/v1/sources", json={**body, "check": False})
        if response.status_code == 201 and not strict:
            assert dep.admin.delete(f"/api/v1/sources/{body['name']}").status_code == 200
        else:
            assert_error(response, 400)


def test_a_malformed_body_says_so(api: Deployment) -> None:
    response = api.admin.post(
        "/api/v1/sources", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )

    assert_error(response, 400, "not valid JSON")


def test_openapi_and_docs_answer(api: Deployment) -> None:
    spec = api.anon.get("/api/openapi.json")
    docs = api.anon.get("/api/docs")

    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/api/v1/health",
        "/api/v1/sources",
        "/api/v1/folders/{folder_id}/children",
        "/api/v1/datasets/{folder_id}/video",
        "/api/v1/jobs/{job_id}/retry",
        "/api/v1/dive_rpc/batch_postprocess/{folder_id}",
        "/iiif/3/{folder_id}/info.json",
    ):
        assert path in paths, path
    assert spec.json()["info"]["title"] == "mediamirror"
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower() and "/api/openapi.json" in docs.text
