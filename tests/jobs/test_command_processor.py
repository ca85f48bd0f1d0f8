"""Command processors from config.yaml (the PREMIERE pipeline): a real script run per
dataset, its output in the job log, its files uploaded as a result set under
``results/<dataset path>/``, a re-run that replaces the result set only once the new one
is complete, and no ``${VAR}`` secret in the job log or the metadata."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Lab, MediaKit

pytestmark = pytest.mark.timeout(150)

DATASET = "/src/v/Video clip.mp4"
RESULTS = "results/src/v/Video clip.mp4/"

SCRIPT = """\
import argparse, pathlib, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--names", nargs="+", default=[])
parser.add_argument("--gate")
parser.add_argument("--fail", type=int, default=0)
parser.add_argument("--tag", default="")
parser.add_argument("--token")
args = parser.parse_args()
source = pathlib.Path(args.input)
print("reading", source.name, source.stat().st_size, "bytes", flush=True)
if args.token:
    import os
    print("argv:", *sys.argv[1:], flush=True)
    print("env:", os.environ.get("MM_CMD_API_TOKEN"), os.environ.get("MM_CMD_DB_PASSWORD"))
if args.gate:
    print("waiting for the gate", flush=True)
    while not pathlib.Path(args.gate).exists():
        time.sleep(0.05)
out = pathlib.Path(args.out)
for name in args.names:
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(f"{name} of {source.name}{args.tag}\\n")
print("wrote", len(args.names), "files", flush=True)
if args.fail:
    print("model weights missing", args.token or "", file=sys.stderr, flush=True)
    sys.exit(args.fail)
"""


def configure(lab: Lab, **processors: str) -> None:
    """One command processor per name, each with its default --names."""
    script = lab.root / "analyse.py"
    script.write_text(SCRIPT)
    command = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} "
        "--input {input} --out {output_dir} {args}"
    )
    lab.configure(
        processors={
            name: {"command": command, "applies_to": ["video"], "args": f"--names {names}"}
            for name, names in processors.items()
        }
    )


def results(lab: Lab, store: Path | None = None) -> dict[str, str]:
    """The dataset's current result files (each processor's set, found the way readers
    find it: through ``results.<name>`` in the metadata), with their contents. Also checks
    that the store holds nothing else under the dataset's results (replaced sets are gone)."""
    root = store or lab.outputs
    entries = (dict(lab.dataset(DATASET).meta).get("results") or {}).values()
    current = {e["prefix"] + k: k for e in entries for k in e["keys"]}
    stored = {
        p.relative_to(root).as_posix()
        for p in (root / RESULTS).rglob("*")
        if p.is_file() and not p.name.endswith(".part")
    }
    assert stored == set(current), (stored, current)
    return {name: (root / key).read_text() for key, name in current.items()}


def one_job(lab: Lab, **where: Any) -> Any:
    [job] = lab.jobs(**where)
    return job


def test_command_results_log_rerun_and_failure(
    sqlite_lab: Lab, media: MediaKit, reaper: Any
) -> None:
    lab = sqlite_lab
    configure(lab, analyse="a.json b.txt")
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    assert lab.run("postprocess", "/src", "-r").stdout.strip() == (
        "queued 2 job(s) for 1 dataset(s)"
    )
    assert lab.worker().stdout.strip() == "worker ran 2 job(s): 2 success"
    first = one_job(lab, processor="analyse")
    log = lab.run("jobs", "log", str(first.id)).stdout
    size = media["h264-faststart"].stat().st_size
    assert f"reading clip.mp4 {size} bytes" in log and "wrote 2 files" in log
    assert "--names a.json b.txt" in log, "the command line is logged"
    assert results(lab) == {"a.json": "a.json of clip.mp4\n", "b.txt": "b.txt of clip.mp4\n"}
    meta = dict(lab.dataset(DATASET).meta)
    prefix = meta["results"]["analyse"]["prefix"]
    assert prefix.startswith(f"{RESULTS}analyse/{first.id}-"), prefix
    assert meta["results"]["analyse"] == {
        "prefix": prefix,
        "files": 2,
        "keys": ["a.json", "b.txt"],
        "args": "--names a.json b.txt",
        "job": first.id,
    }
    assert meta["annotate"] is True, "the video processor ran too"

    # A re-run with other arguments: while it runs, the old set stays whole.
    gate = lab.root / "gate"
    args = f"--names c.json sub/d.json --gate {gate}"
    lab.run("reprocess", "/src", "--processor", "analyse", "--args", args)
    rerun = next(j for j in lab.jobs(processor="analyse") if j.id != first.id)
    worker = reaper(lab.popen("worker", "--burst"))
    lab.wait_job(rerun.id, lambda j: "waiting for the gate" in j.log_tail, what="the gate")
    assert set(results(lab)) == {"a.json", "b.txt"}
    gate.touch()
    assert worker.wait(60) == 0
    assert lab.job(rerun.id).state == "success"
    assert set(results(lab)) == {"c.json", "sub/d.json"}
    assert not [f for f in lab.output_files() if ".staging" in f or f.endswith(".part")]
    assert dict(lab.dataset(DATASET).meta)["results"]["analyse"]["args"] == args

    # A failing command: a one-line error, and the previous result set is untouched.
    lab.run("reprocess", "/src", "--processor", "analyse", "--args", "--names e.json --fail 3")
    lab.worker()
    failed = max(lab.jobs(processor="analyse"), key=lambda j: j.id)
    assert failed.state == "error" and failed.attempts == 1
    assert failed.error == "command exited with status 3: model weights missing"
    assert set(results(lab)) == {"c.json", "sub/d.json"}
    meta = dict(lab.dataset(DATASET).meta)
    assert meta["processing"]["analyse"]["state"] == "error"
    assert meta["results"]["analyse"]["job"] == rerun.id


def test_two_command_processors_keep_each_others_results(sqlite_lab: Lab, media: MediaKit) -> None:
    lab = sqlite_lab
    configure(lab, pose="pose.json", detect="boxes.json")
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    lab.run("postprocess", "/src", "-r")
    assert lab.worker("--concurrency", "1").stdout.strip() == "worker ran 3 job(s): 3 success"
    assert set(results(lab)) == {"pose.json", "boxes.json"}
    assert set(dict(lab.dataset(DATASET).meta)["results"]) == {"pose", "detect"}
    # re-running one of them replaces only its own files
    lab.run("reprocess", "/src", "--processor", "pose", "--args", "--names pose2.json")
    lab.worker()
    assert set(results(lab)) == {"pose2.json", "boxes.json"}
    assert set(dict(lab.dataset(DATASET).meta)["results"]) == {"pose", "detect"}


def test_command_that_cannot_start_is_one_line(sqlite_lab: Lab, media: MediaKit) -> None:
    lab = sqlite_lab
    lab.configure(
        processors={"ghost": {"command": "/no/such/tool {input}", "applies_to": ["video"]}}
    )
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "ghost")
    lab.worker()
    job = one_job(lab, processor="ghost")
    assert job.error == "cannot start '/no/such/tool': No such file or directory"


def test_bad_command_config_is_one_clear_line(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.configure(processors={"bad": {"command": "tool {input} {outdir}"}})
    result = lab.run("reprocess", "/", ok=False)
    assert result.stderr.strip() == "error: processor 'bad': unknown placeholder {outdir}"


def test_results_store_setting_sends_results_elsewhere(
    sqlite_lab: Lab, media: MediaKit, tmp_path: Path
) -> None:
    lab = sqlite_lab
    configure(lab, analyse="r.json")
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    elsewhere = tmp_path / "results-store"
    lab.run("reprocess", "/src", "--processor", "analyse")
    lab.worker(MEDIAMIRROR_RESULTS_STORE=f"file://{elsewhere}")
    assert results(lab, elsewhere) == {"r.json": "r.json of clip.mp4\n"}
    assert not (lab.outputs / RESULTS).exists()


API_TOKEN = "tok-9c41e7d2a05b"
DB_PASSWORD = "pw-3f1e88c0d7"


def test_secrets_from_config_never_reach_the_job_log_or_metadata(
    sqlite_lab: Lab, media: MediaKit
) -> None:
    """``${VAR}`` in a processor's args reaches the command, not the catalog: the log
    shows the template, the metadata records it, and a value the command echoes (from its
    argv or its environment) is shown as the variable it came from."""
    lab = sqlite_lab
    configure(lab, analyse="r.json")
    conf = yaml.safe_load((lab.home / "config.yaml").read_text())
    conf["processors"]["analyse"]["args"] = "--names r.json --token ${MM_CMD_API_TOKEN}"
    (lab.home / "config.yaml").write_text(yaml.safe_dump(conf))
    lab.cli.env.update(MM_CMD_API_TOKEN=API_TOKEN, MM_CMD_DB_PASSWORD=DB_PASSWORD)
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "analyse")
    assert lab.worker().stdout.strip() == "worker ran 1 job(s): 1 success"
    job = one_job(lab, processor="analyse")
    assert "argv: --input" in job.log_tail, "the command got its arguments"
    assert "--names r.json --token ${MM_CMD_API_TOKEN}" in job.log_tail
    assert "env: ${MM_CMD_API_TOKEN} ${MM_CMD_DB_PASSWORD}" in job.log_tail
    assert "--token ${MM_CMD_API_TOKEN}" in lab.run("jobs", "log", str(job.id)).stdout
    meta = dict(lab.dataset(DATASET).meta)
    assert meta["results"]["analyse"]["args"] == "--names r.json --token ${MM_CMD_API_TOKEN}"

    # A failure whose last line echoes the secret: the error says so without it.
    args = f"--names r.json --fail 3 --token {API_TOKEN}"
    lab.run("reprocess", "/src", "--processor", "analyse", "--args", args)
    lab.worker()
    failed = max(lab.jobs(processor="analyse"), key=lambda j: j.id)
    assert failed.error == (
        "command exited with status 3: model weights missing ${MM_CMD_API_TOKEN}"
    )
    meta = dict(lab.dataset(DATASET).meta)
    for text in (str(meta), job.log_tail, failed.log_tail, failed.error, failed.message or ""):
        assert API_TOKEN not in text and DB_PASSWORD not in text, text


def test_result_set_failing_half_way_leaves_the_previous_set_whole(
    sqlite_lab: Lab, media: MediaKit, reaper: Any
) -> None:
    """The upload of a new set fails after its first file (a destination that is a
    directory): readers still get the old set, whole, and nothing of the new one."""
    lab = sqlite_lab
    configure(lab, analyse="a.json b.json z.json")
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "analyse")
    lab.worker()
    old = results(lab)
    assert old == {n: f"{n} of clip.mp4\n" for n in ("a.json", "b.json", "z.json")}

    gate = lab.root / "gate"
    args = f"--names a.json b2.json z.json --tag v2 --gate {gate}"
    lab.run("reprocess", "/src", "--processor", "analyse", "--args", args)
    rerun = max(lab.jobs(processor="analyse"), key=lambda j: j.id)
    worker = reaper(lab.popen("worker", "--burst", MEDIAMIRROR_JOB_MAX_ATTEMPTS="1"))
    job = lab.wait_job(rerun.id, lambda j: "waiting for the gate" in j.log_tail, what="the gate")
    # The second file's destination is a directory: wherever the new set goes (a prefix
    # of its own, as the log says, or over the current set), that upload fails.
    found = re.search(r"^result set: (.+)$", job.log_tail, re.M)
    for prefix in [RESULTS] + ([found.group(1)] if found else []):
        (lab.outputs / prefix / "b2.json").mkdir(parents=True)
    gate.touch()
    assert worker.wait(60) == 0
    assert lab.job(rerun.id).state == "error"
    assert results(lab) == old
    assert dict(lab.dataset(DATASET).meta)["results"]["analyse"]["args"] != args
