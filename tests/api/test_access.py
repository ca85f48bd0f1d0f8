"""Access control: tokens (hashed, roles, revocation), the session cookie and one-time
login links, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.services import Services
from mediamirror.web import iiif, login
from mediamirror.web.api import browse, jobs, sources, system
from mediamirror.web.app import create_app
from mediamirror.web.models import TOKENS

from .support import Deployment, InProcessServer, assert_error

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

#: Endpoints that need no token: liveness, and getting or dropping a session.
PUBLIC = {("GET", "/api/v1/health"), ("POST", "/api/v1/session"), ("DELETE", "/api/v1/session")}
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
#: Ids nothing has: a change that slipped past the role check would answer 404, not harm.
MISSING = {"folder_id": 987654, "job_id": 987654, "item_id": 987654, "name": "no-such-source"}


def routes() -> Iterator[tuple[str, str]]:
    """(method, path template) of every endpoint of the API, IIIF and login routers."""
    for prefix, module in (
        ("/api/v1", system),
        ("/api/v1", sources),
        ("/api/v1", browse),
        ("/api/v1", jobs),
        ("", iiif),
        ("", login),
    ):
        for route in module.router.routes:
            for method in sorted(getattr(route, "methods", set()) - {"HEAD"}):
                yield method, prefix + getattr(route, "path", "")


def protected() -> list[tuple[str, str]]:
    return [r for r in routes() if r not in PUBLIC and not r[1].startswith("/login/")]


def fill(template: str, dep: Deployment, *, missing: bool) -> str:
    """A concrete URL: real ids for reads (so a viewer gets an answer), absent ones for
    changes."""
    real = {
        "folder_id": dep.folder_id("/sample/large/Large image slide.tif"),
        "job_id": 1,
        "item_id": 1,
        "name": "sample",
    }
    values = {**real, **(MISSING if missing else {})}
    values.update(region="full", size="128,", rotation="0", quality="default", fmt="jpg")
    return template.format(**values)


def call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    if method in CHANGES and method != "DELETE":
        kwargs.setdefault("json", {"name": "x", "url": "file:///nonexistent", "token": "x"})
    return client.request(method, url, **kwargs)


def cookie_of(response: httpx.Response) -> tuple[str, set[str]]:
    """(value, lower-cased attributes) of the ``mm_session`` Set-Cookie header."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith("mm_session=")]
    assert len(headers) == 1, response.headers
    first, *attrs = (part.strip() for part in headers[0].split(";"))
    return first.split("=", 1)[1].strip('"'), {a.lower() for a in attrs}


def test_the_route_table_is_what_these_tests_walk() -> None:
    found = set(routes())
    assert ("GET", "/api/v1/folders/{folder_id}") in found
    assert ("POST", "/api/v1/sources/{name}/sync") in found
    assert ("GET", "/iiif/3/{folder_id}/info.json") in found
    assert len(protected()) >= 25, protected()


def test_health_needs_no_token(any_api: Deployment) -> None:
    response = any_api.anon.get("/api/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["version"]
    assert body["jobs"]["success"] >= 5


@pytest.mark.parametrize("who", ["none", "wrong", "unprefixed", "revoked", "revoked-cookie"])
def test_every_endpoint_needs_a_valid_token(any_api: Deployment, who: str) -> None:
    dep = any_api
    wrong = "mm_" + secrets.token_urlsafe(32)
    client = {
        "none": dep.anon,
        "wrong": dep.client(wrong),
        "unprefixed": dep.client(secrets.token_urlsafe(32)),
        "revoked": dep.client(dep.revoked_token),
        "revoked-cookie": dep.client(cookies={"mm_session": dep.revoked_token}),
    }[who]
    for method, template in protected():
        response = call(client, method, fill(template, dep, missing=method in CHANGES))
        assert_error(response, 401, "token")


def test_a_viewer_reads_everything_and_changes_nothing(any_api: Deployment) -> None:
    dep = any_api
    for method, template in protected():
        if method in CHANGES:
            response = call(dep.viewer, method, fill(template, dep, missing=True))
            assert_error(response, 403, "admin")
        else:
            response = call(dep.viewer, method, fill(template, dep, missing=False))
            assert response.status_code < 400 or response.status_code == 404, (
                method,
                template,
                response.text,
            )
    assert dep.viewer.get("/api/v1/sources/sample").status_code == 200


def test_an_admin_passes_the_role_check_of_every_change(any_api: Deployment) -> None:
    """Past the check, the absent targets answer 404 (or 400/409 for a bad body)."""
    dep = any_api
    for method, template in protected():
        if method in CHANGES:
            response = call(dep.admin, method, fill(template, dep, missing=True))
            assert response.status_code in {201, 400, 404, 409, 502}, (template, response.text)
            assert response.status_code not in {401, 403}


def test_whoami_names_the_token_and_its_role(any_api: Deployment) -> None:
    assert any_api.admin.get("/api/v1/session").json() == {"name": "t-admin", "role": "admin"}
    assert any_api.viewer.get("/api/v1/session").json() == {"name": "t-viewer", "role": "viewer"}


def test_tokens_are_stored_hashed(any_api: Deployment) -> None:
    dep = any_api
    values = [dep.admin_token, dep.viewer_token, dep.revoked_token]
    assert all(v.startswith("mm_") and len(v) >= 40 for v in values)
    with dep.catalog.read() as conn:
        stored = [tuple(str(c) for c in row) for row in conn.execute(select(TOKENS)).all()]
    hashes = {row[3] for row in stored}
    listed = {t["name"]: t for t in json.loads(dep.token_listing)}
    assert listed["t-gone"]["revoked"] is True and listed["t-admin"]["revoked"] is False
    assert not any(v in dep.token_listing for v in values)
    assert {hashlib.sha256(v.encode()).hexdigest() for v in values} <= hashes
    assert not any(v in cell for v in values for row in stored for cell in row)
    if dep.backend == "sqlite":
        files = sorted(dep.root.glob("catalog.db*"))
        raw = b"".join(p.read_bytes() for p in files)
        assert hashlib.sha256(dep.admin_token.encode()).hexdigest().encode() in raw
        for value in values:
            assert value.encode() not in raw, f"a token value is in {files}"
            assert value[3:].encode() not in raw


def test_session_cookie_is_http_only_secure_strict_and_signs_in(any_api: Deployment) -> None:
    dep = any_api
    response = dep.anon.post("/api/v1/session", json={"token": f"  {dep.viewer_token}\n"})

    assert response.status_code == 200, response.text
    assert response.json() == {"name": "t-viewer", "role": "viewer"}
    value, attrs = cookie_of(response)
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attrs, attrs
    assert value == dep.viewer_token
    # httpx (like a browser on plain HTTP to another host) keeps Secure cookies for HTTPS,
    # so the cookie is sent by hand, as a browser on 127.0.0.1 does.
    # A browser sends its page's Origin with every change (cross-site ones are refused).
    browser = dep.client(headers={"Cookie": f"mm_session={value}", "Origin": dep.url})
    assert browser.get("/api/v1/session").json()["role"] == "viewer"
    assert browser.get("/api/v1/folders").status_code == 200
    assert_error(browser.post(f"/api/v1/jobs/{MISSING['job_id']}/retry"), 403)

    admin = dep.anon.post("/api/v1/session", json={"token": dep.admin_token})
    admin_browser = dep.client(
        headers={"Cookie": f"mm_session={cookie_of(admin)[0]}", "Origin": dep.url}
    )
    assert_error(admin_browser.post(f"/api/v1/jobs/{MISSING['job_id']}/retry"), 404)


@pytest.mark.parametrize("token", ["revoked", "mm_unknown", "", "x" * 300])
def test_session_refuses_bad_tokens(any_api: Deployment, token: str) -> None:
    value = any_api.revoked_token if token == "revoked" else token
    response = any_api.anon.post("/api/v1/session", json={"token": value})

    assert_error(response, 401)
    assert "set-cookie" not in response.headers


def test_logout_clears_the_cookie(any_api: Deployment) -> None:
    response = any_api.anon.delete("/api/v1/session")

    assert response.status_code == 200
    assert response.json() == {"status": "logged out"}
    value, attrs = cookie_of(response)
    assert value == ""
    assert "max-age=0" in attrs or any(a.startswith("expires=thu, 01 jan 1970") for a in attrs)


def test_login_link_works_once(any_api: Deployment) -> None:
    """``/login/<code>``: the first use sets an admin session (303 to the UI), the second
    does not. Codes live in the serving process, so the app runs in this one."""
    dep = any_api
    env = dep.cli.environ()
    catalog = Catalog(dep.catalog.url)
    app = create_app(Services(catalog, load_settings(env=env), env), worker=False)
    try:
        with InProcessServer(app).running() as server, httpx.Client(base_url=server.url) as web:
            code = login.new_code()
            first = web.get(f"/login/{code}")
            assert first.status_code == 303, first.text
            assert first.headers["location"] == "/"
            value, attrs = cookie_of(first)
            assert {"httponly", "secure", "samesite=strict", "path=/"} <= attrs, attrs
            assert value.startswith("mm_")

            # A used (or expired, or unknown) code signs nobody in: the browser that
            # follows it is sent to the sign-in page, without a cookie.
            for used in (code, login.new_code(ttl=-1), "not-a-code"):
                again = web.get(f"/login/{used}")
                assert again.status_code == 303, again.text
                assert again.headers["location"].startswith("/ui/sign-in"), again.headers
                assert "set-cookie" not in again.headers

            session = {"Cookie": f"mm_session={value}"}
            assert web.get("/api/v1/session", headers=session).json()["role"] == "admin"
            # The session is a token of the catalog: the other server honours it too.
            assert dep.client(headers=session).get("/api/v1/session").status_code == 200

            # Signing out of a login-link session revokes its token, everywhere.
            assert web.delete("/api/v1/session", headers=session).status_code == 200
            assert web.get("/api/v1/session", headers=session).status_code == 401
            assert dep.client(headers=session).get("/api/v1/session").status_code == 401
    finally:
        catalog.close()
