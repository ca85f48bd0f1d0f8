"""Paths derived from keys (``mediamirror.paths``): one safe relative path per key, never
outside its root, never shared by two keys, and plain keys unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mediamirror.errors import NotFoundError, StoreError
from mediamirror.paths import (
    is_safe,
    join_under,
    key_of,
    safe_parent,
    safe_relpath,
    safe_segment,
)
from mediamirror.stores.local import LocalStore

#: Keys built from the characters that matter: separators, dots, escapes, controls.
SEGMENT = st.text(alphabet=st.sampled_from(list("./%2eEAf\x00\x1f\x7fab é")), max_size=6)
KEYS = st.lists(SEGMENT, min_size=1, max_size=6).map("/".join) | st.text(max_size=30)


@given(KEYS)
@example("a/../sb/f.tif")
@example("../../../etc/passwd")
@example("/x//y/")
@example("%2E%2E/x")
def test_a_safe_path_has_no_empty_dot_or_control_segment(key: str) -> None:
    rel = safe_relpath(key)

    assert is_safe(rel)
    assert all(seg not in {"", ".", ".."} for seg in rel.split("/"))
    assert not any(ord(c) < 32 or ord(c) == 127 for c in rel)


@given(KEYS, KEYS)
@example("a/%2E%2E/b", "a/../b")
@example("%", "")
@example("x", "/x")
@example("a//b", "a/%/b")
@settings(max_examples=500)
def test_two_keys_never_share_a_path(a: str, b: str) -> None:
    if a != b:
        assert safe_relpath(a) != safe_relpath(b)


@given(KEYS)
@settings(max_examples=500)
def test_the_key_can_be_read_back_from_its_path(key: str) -> None:
    assert key_of(safe_relpath(key)) == key


@given(KEYS)
def test_a_joined_path_stays_inside_the_root(key: str) -> None:
    root = Path("/data/cache")

    path = join_under(root, safe_relpath(key) if key else "x")

    assert os.path.commonpath([root, os.path.normpath(path)]) == str(root)
    assert os.path.normpath(path) != str(root)


@pytest.mark.parametrize(
    "key", ["a/b/clip.mov", "videos/2024 day 1/clip (1).MOV", "100%.tif", "x%y", "émoji 🎞.mp4"]
)
def test_ordinary_keys_keep_their_names(key: str) -> None:
    assert safe_relpath(key) == key


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("a/../sb/f.tif", "a/%2E%2E/sb/f.tif"),
        ("./x", "%2E/x"),
        ("/x", "%/x"),
        ("a//b", "a/%/b"),
        ("a/", "a/%"),
        ("%2E", "%252E"),
        ("%", "%25"),
        ("nul\x00.tif", "nul%00.tif"),
    ],
)
def test_escapes_are_visible(key: str, path: str) -> None:
    assert safe_relpath(key) == path


def test_the_folder_of_a_key_under_an_empty_name_is_not_the_top() -> None:
    assert safe_parent("x.jpg") == ""
    assert safe_parent("/x.jpg") == "%"
    assert safe_parent("a/../b/x.jpg") == "a/%2E%2E/b"
    assert safe_segment("..") == "%2E%2E"


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "a//b", "/etc/passwd", "a/./b", "", "a\x00"])
def test_join_under_refuses_what_would_leave_the_root(tmp_path: Path, rel: str) -> None:
    with pytest.raises(StoreError):
        join_under(tmp_path, rel)


@pytest.mark.parametrize("key", ["a/../b.txt", "../outside.txt", "./b.txt", "a//b.txt", "/b.txt"])
def test_a_local_store_refuses_keys_that_name_another_place(tmp_path: Path, key: str) -> None:
    """``a/../b.txt`` would read ``b.txt``: a directory cannot hold such a key."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b.txt").write_text("b")
    (tmp_path / "outside.txt").write_text("outside")
    store = LocalStore(root)

    with pytest.raises(NotFoundError):
        store.head(key)
    with pytest.raises(StoreError):
        store.read_range(key, 0, 10)
    with pytest.raises(StoreError):
        store.put_file(key, root / "b.txt")
    assert sorted(p.name for p in tmp_path.rglob("*.txt")) == ["b.txt", "outside.txt"]


def test_a_local_store_refuses_a_symbolic_link_out_of_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(StoreError, match="outside"):
        LocalStore(root).read_range("link.txt", 0, 10)
