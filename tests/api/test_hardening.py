"""HTTP hardening: stored bytes never run as a page of the app, every response carries
the security headers, bad numbers and URLs are 4xx (never 500), and a cookie-authenticated
change must come from the app's own origin.

The stored-content tests serve their own small local source (markup, SVG, media and text
objects, synced by the real sync engine) with an in-process uvicorn; the others use the
shared SQLite deployment and change nothing in it (every write they send is refused)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from helpers import assert_one_error_line
from mediamirror import tokens
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS
from mediamirror.config import load_settings
from mediamirror.services import Services
from mediamirror.sources import add_source, sync_source
from mediamirror.web.app import create_app

from .support import Deployment, InProcessServer, assert_error

pytestmark = pytest.mark.timeout(120)

#: What a bucket may hold that must never run on the app's origin.
UNSAFE = {
    "page.html": b"<script>document.title='owned'</script>",
    "vector.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "data.xml": b"<?xml version='1.0'?><x:script xmlns:x='http://www.w3.org/1999/xhtml'/>",
    "tool.js": b"alert(1)",
    "noext": b"<html><script>alert(1)</script></html>",
}
#: What a browser only displays: served inline, with its own type (text as plain text).
SAFE = {
    "clip.mp4": ("video/mp4", b"\x00\x00\x00\x18ftypmp42"),
    "tune.mp3": ("audio/mpeg", b"ID3"),
    "pic.png": ("image/png", b"\x89PNG\r\n\x1a\n"),
    "pic.jpg": ("image/jpeg", b"\xff\xd8\xff"),
    "notes.txt": ("text/plain; charset=utf-8", b"<script>alert(1)</script>"),
    "table.csv": ("text/plain; charset=utf-8", b"a,b\n<b>1</b>,2\n"),
    "doc.json": ("text/plain; charset=utf-8", b'{"html": "<script>alert(1)</script>"}'),
}


@dataclass
class Site:
    url: str
    token: str
    ids: dict[str, int]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("hardening")
    media = root / "bucket"
    media.mkdir()
    for name, body in UNSAFE.items():
        (media / name).write_bytes(body)
    for name, (_, body) in SAFE.items():
        (media / name).write_bytes(body)
    url = f"sqlite:///{root / 'catalog.db'}"
    env = {"MEDIAMIRROR_HOME": str(root / "home")}
    catalog = Catalog(url)
    settings = load_settings({"home": str(root / "home"), "database_url": url}, env=env)
    add_source(catalog, "site", f"file://{media}", env=env)
    sync_source(catalog, settings, "site", env)
    with catalog.read() as conn:
        ids = {r.name: r.id for r in conn.execute(select(ITEMS.c.id, ITEMS.c.name))}
    token = tokens.create(catalog, "viewer", "hardening")
    try:
        app = create_app(Services(catalog, settings, env), worker=False)
        with InProcessServer(app).running() as server:
            yield Site(server.url, token, ids)
    finally:
        catalog.close()


def content(site: Site, name: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.token}"}
    return httpx.get(f"{site.url}/api/v1/items/{site.ids[name]}/content", headers=headers)


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_stored_markup_is_an_attachment_never_a_page(site: Site, name: str) -> None:
    resp = content(site, name)

    assert resp.status_code == 200, resp.text
    assert resp.content == UNSAFE[name]
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"].startswith("attachment;")
    assert name in resp.headers["content-disposition"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in resp.headers["content-security-policy"]


@pytest.mark.parametrize("name", sorted(SAFE))
def test_media_and_text_are_shown_inline_with_a_safe_type(site: Site, name: str) -> None:
    resp = content(site, name)

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == SAFE[name][0]
    assert "attachment" not in resp.headers.get("content-disposition", "")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["accept-ranges"] == "bytes"  # video still plays with range requests


def test_every_response_carries_the_security_headers(api: Deployment) -> None:
    responses = [
        api.anon.get("/api/v1/health"),
        api.anon.get("/"),
        api.anon.get("/ui/jobs"),
        api.anon.get("/static/js/app.js"),
        api.anon.get("/api/openapi.json"),
        api.anon.get("/api/v1/jobs"),  # 401
        api.viewer.get("/api/v1/nowhere"),  # 404
        api.viewer.get("/api/v1/folders", params={"limit": "x"}),  # 400
        api.viewer.post("/api/v1/sources/sample/sync"),  # 403
        api.anon.post("/api/v1/bucket_notifications/s3"),  # 401 (push)
    ]
    for resp in responses:
        where = f"{resp.request.method} {resp.request.url} -> {resp.status_code}"
        headers = resp.headers
        assert headers["x-content-type-options"] == "nosniff", where
        assert headers["referrer-policy"] == "same-origin", where
        assert headers["x-frame-options"] == "DENY", where
        assert headers["cross-origin-opener-policy"] == "same-origin", where
        policy = headers["content-security-policy"]
        assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy, where
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy, where
    # The UI's page has no inline script or style left for the policy to forbid.
    page = api.anon.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), page
    assert "<style" not in page and " style=" not in page


def test_the_api_docs_page_allows_only_its_cdn_and_its_own_script(api: Deployment) -> None:
    resp = api.anon.get("/api/docs")

    assert resp.status_code == 200
    policy = resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    script_src = next(p for p in policy.split("; ") if p.startswith("script-src"))
    assert "'unsafe-inline'" not in script_src
    inline = re.findall(r"<script>(.*?)</script>", resp.text, flags=re.S)
    assert inline, resp.text
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src
    for src in re.findall(r'<script src="([^"]+)"', resp.text):
        assert src.startswith("https://cdn.jsdelivr.net/"), src


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/events", {"offset": HUGE}),
        ("/api/v1/events", {"limit": HUGE}),
        ("/api/v1/jobs", {"offset": HUGE}),
        ("/api/v1/folders", {"offset": HUGE}),
        (f"/api/v1/folders/{HUGE}", {}),
        (f"/api/v1/folders/{HUGE}/children", {}),
        ("/api/v1/folders/1/items", {"offset": HUGE}),
        (f"/api/v1/datasets/{HUGE}", {}),
        (f"/api/v1/items/{HUGE}/content", {}),
        (f"/api/v1/jobs/-{HUGE}", {}),
        ("/api/v1/events/refusals", {"source": "no\x00such"}),
    ],
)
def test_out_of_range_numbers_are_400_not_500(
    api: Deployment, path: str, params: dict[str, str]
) -> None:
    resp = api.viewer.get(path, params=params)

    assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text)
    assert_error(resp, resp.status_code)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": "s3://[bad/x"}, "is malformed"),
        ({"url": "s3://bucket/x", "endpoint_url": "http://[::1"}, "is malformed"),
        ({"url": "s3://bucket/x", "endpoint_url": "http://host:99999"}, "is malformed"),
        ({"url": "s3://bucket/x", "endpoint_url": "http:///nohost"}, "names no host"),
        ({"url": "file:///tmp/a%00b"}, "control character"),
        ({"url": "file:///tmp/a\x00b"}, "control character"),
        ({"url": "s3://bucket/a\x01b"}, "control character"),
    ],
)
def test_malformed_store_urls_are_400_with_one_line(
    api: Deployment, body: dict[str, str], fragment: str
) -> None:
    resp = api.admin.post("/api/v1/sources", json={"name": "bad", "check": False, **body})

    assert_error(resp, 400, fragment)
    assert api.viewer.get("/api/v1/sources/bad").status_code == 404


def test_the_cli_says_one_line_for_a_nul_in_a_file_url(api: Deployment, tmp_path: Path) -> None:
    result = api.cli.run("source", "add", "x", "file:///tmp/a%00b", ok=False)
    assert_one_error_line(result, "control character")
    result = api.cli.run("source", "add", "x", "s3://[bad/x", ok=False)
    assert_one_error_line(result, "is malformed")


# -- cross-site requests -----------------------------------------------------------------------


def cookie_client(api: Deployment, token: str, **headers: str) -> httpx.Client:
    return api.client(headers={"Cookie": f"mm_session={token}", **headers})


def test_cookie_changes_from_another_origin_are_refused(api: Deployment) -> None:
    evil = cookie_client(api, api.admin_token, Origin="http://127.0.0.1:1")
    for method, path in [
        ("POST", "/api/v1/sources/sample/sync"),
        ("POST", "/api/v1/jobs/1/retry"),
        ("POST", "/api/v1/jobs/1/cancel"),
        ("POST", f"/api/v1/folders/{api.folder_id('/sample')}/postprocess"),
        ("DELETE", "/api/v1/sources/sample"),
        ("DELETE", "/api/v1/session"),
    ]:
        assert_error(evil.request(method, path), 403, "cross-site request refused")
    # Neither Origin nor Referer: a browser always sends one of them with a change.
    bare = cookie_client(api, api.admin_token)
    assert_error(bare.post("/api/v1/sources/sample/sync"), 403, "cross-site")
    referer = cookie_client(api, api.admin_token, Referer="https://evil.example/page")
    assert_error(referer.delete("/api/v1/sources/sample"), 403, "cross-site")
    # Signing in from another origin's page is refused too (it would sign the user in as
    # someone else).
    login = api.anon.post(
        "/api/v1/session", json={"token": api.viewer_token}, headers={"Origin": "null"}
    )
    assert_error(login, 403, "cross-site")
    # Reading is not a change: allowed from anywhere the cookie is sent.
    assert evil.get("/api/v1/sources").status_code == 200
    assert api.viewer.get("/api/v1/sources/sample").status_code == 200


def test_same_origin_cookie_changes_and_token_changes_pass(api: Deployment) -> None:
    # A job id that does not exist: passing the origin check shows as a 404 and changes
    # nothing in the shared deployment.
    same = cookie_client(api, api.admin_token, Origin=api.url)
    assert_error(same.post("/api/v1/jobs/2147483647/retry"), 404)
    via_referer = cookie_client(api, api.admin_token, Referer=f"{api.url}/ui/jobs")
    assert_error(via_referer.post("/api/v1/jobs/2147483647/cancel"), 404)
    # An Authorization header is never sent by a browser on its own: no origin needed.
    token = api.client(api.admin_token, headers={"Origin": "https://evil.example"})
    assert_error(token.post("/api/v1/jobs/2147483647/retry"), 404)
    # A viewer's same-origin change is still only a viewer's.
    viewer = cookie_client(api, api.viewer_token, Origin=api.url)
    assert_error(viewer.post("/api/v1/jobs/2147483647/retry"), 403, "admin")
