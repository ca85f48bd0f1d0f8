"""Command processors from config.yaml (the PREMIERE pipeline): a real script run per
dataset, its output in the job log, its files uploaded to ``results/<dataset path>/``, and
a re-run that replaces the result set only once the new one is complete."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

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
args = parser.parse_args()
source = pathlib.Path(args.input)
print("reading", source.name, source.stat().st_size, "bytes", flush=True)
if args.gate:
    print("waiting for the gate", flush=True)
    while not pathlib.Path(args.gate).exists():
        time.sleep(0.05)
out = pathlib.Path(args.out)
for name in args.names:
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(f"{name} of {source.name}\\n")
print("wrote", len(args.names), "files", flush=True)
if args.fail:
    print("model weights missing", file=sys.stderr, flush=True)
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


def results(lab: Lab) -> dict[str, str]:
    """The result files of the dataset in the output store, with their contents."""
    root = lab.outputs / RESULTS
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
    assert meta["results"]["analyse"] == {
        "prefix": RESULTS,
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
    assert (elsewhere / RESULTS / "r.json").read_text() == "r.json of clip.mp4\n"
    assert results(lab) == {}
