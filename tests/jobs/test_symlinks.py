"""Symbolic links never lead mediamirror out of where it may read: a command's result
files are collected without following links (and their keys made safe), and a local
source never lists, serves or processes a file a link leads to outside its directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from mediamirror.catalog.models import ITEMS
from mediamirror.errors import NotFoundError, StoreError
from mediamirror.stores.local import LocalStore

from .conftest import Lab, MediaKit

pytestmark = pytest.mark.timeout(150)

SECRET = "secret outside the output folder\n"

LINKS = """\
import os, sys
from pathlib import Path
secret, out = Path(sys.argv[1]), Path(sys.argv[2])
(out / "pose.json").write_text("{}")
(out / "line\\nbreak.txt").write_text("odd name")
os.symlink(secret, out / "leak.txt")                 # a link to a file elsewhere
os.symlink(secret.parent, out / "linked")            # a link to a folder elsewhere
(out / "sub").mkdir()
os.symlink("../pose.json", out / "sub" / "alias.json")  # even one inside the folder
os.mkfifo(out / "pipe")                               # would block an upload for good
print("results written", flush=True)
"""


def test_command_results_never_follow_symbolic_links(sqlite_lab: Lab, media: MediaKit) -> None:
    lab = sqlite_lab
    secret = lab.root / "private" / "passwd"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    script = lab.root / "links.py"
    script.write_text(LINKS)
    command = f"{sys.executable} {script} {secret} {{output_dir}}"
    lab.configure(processors={"links": {"command": command, "applies_to": ["video"]}})
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "links")

    assert lab.worker().stdout.strip() == "worker ran 1 job(s): 1 success"

    (job,) = lab.jobs(processor="links")
    entry = dict(lab.dataset("/src/v/Video clip.mp4").meta)["results"]["links"]
    # Only the two regular files; the odd name is made safe (one key, no line break).
    assert entry["keys"] == ["line%0Abreak.txt", "pose.json"], entry
    assert entry["files"] == 2
    stored = [f for f in lab.output_files() if f.startswith(entry["prefix"])]
    assert sorted(f[len(entry["prefix"]) :] for f in stored) == entry["keys"]
    for name in stored:
        assert SECRET not in (lab.outputs / name).read_text(errors="replace")
    for skipped in ("leak.txt", "linked", "sub/alias.json"):
        assert f"skipped result '{skipped}': a symbolic link, never followed" in job.log_tail
    assert "skipped result 'pipe': not a regular file" in job.log_tail


def test_local_source_never_lists_or_reads_a_file_behind_a_link_out_of_it(
    sqlite_lab: Lab, media: MediaKit
) -> None:
    """A link to a file outside the source directory is not an object of the source: the
    sync leaves it out (no item, dataset or job), and naming it reads nothing. A link to
    a file inside the directory is that file under a second name."""
    lab = sqlite_lab
    inside = lab.put("v/clip.mp4", media["h264-faststart"])
    outside = lab.root / "elsewhere" / "private.mp4"
    outside.parent.mkdir()
    outside.write_bytes(media["h264-moov-end"].read_bytes())
    (lab.media / "w").mkdir()
    os.symlink(outside, lab.media / "w" / "leak.mp4")
    os.symlink(inside, lab.media / "w" / "alias.mp4")
    lab.add_local_source()

    lab.run("sync", "src", "-q")

    with lab.catalog.read() as conn:
        keys = sorted(r.key for r in conn.execute(select(ITEMS.c.key)))
    assert keys == ["v/clip.mp4", "w/alias.mp4"]
    assert set(lab.datasets()) == {"/src/v/Video clip.mp4", "/src/w/Video alias.mp4"}
    assert lab.worker().stdout.strip() == "worker ran 2 job(s): 2 success"

    store = LocalStore(lab.media)
    with pytest.raises(NotFoundError):
        store.head("w/leak.mp4")
    with pytest.raises(StoreError):
        store.read_range("w/leak.mp4", 0, 16)
    with pytest.raises(StoreError):
        store.download("w/leak.mp4", lab.root / "copy.mp4")
    assert not (lab.root / "copy.mp4").exists()
    assert store.head("w/alias.mp4").size == inside.stat().st_size
    assert Path(store.local_path("w/alias.mp4")) == inside.resolve()
