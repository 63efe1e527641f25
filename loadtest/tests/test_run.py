"""The whole harness as a user runs it: real pods, real HAProxy, real h2load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench import RunRecord
from loadtest.procs import read_proc_stat
from loadtest.run import parse_variant, sanitize

from .conftest import require

RUN_PY = Path(__file__).resolve().parent.parent / "run.py"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and read_proc_stat(int(name)) is not None:
            found.append(int(name))
    return found


def _quick_run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`run.py --quick` with 0.3 s runs and no idle wait, writing to `out`; it must succeed."""
    argv = [sys.executable, str(RUN_PY), "--quick", *args, "--run-seconds", "0.3"]
    argv += ["--idle-wait", "0", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_quick_run_writes_results_and_leaves_no_process(tmp_path: Path) -> None:
    for tool in ("h2load", "nghttpd", "haproxy"):
        require(tool)
    out = tmp_path / "out"
    done = _quick_run(out, "--scenarios", "small,burst", "--targets", "direct,haproxy")
    results = (out / "RESULTS.md").read_text()
    assert "### `small`" in results
    assert "| haproxy | 1 |" in results
    assert "HAProxy has no scale-from-zero mode" in results
    assert "/tmp/" not in results
    assert str(Path.home()) not in results
    data = json.loads((out / "results.json").read_text())
    measured = [r for r in data["records"] if r["requests_per_s"]]
    assert {r["target"] for r in measured} == {"direct", "haproxy"}
    haproxy = next(r for r in measured if r["target"] == "haproxy")
    assert haproxy["failed"] == 0
    assert haproxy["proxy_cpu_us_per_request"] > 0
    assert (out / "latency-cdf-small.png").stat().st_size > 0
    assert "activator-loadtest-" in done.stderr
    assert _processes_mentioning("activator-loadtest-") == []


@pytest.mark.slow
def test_a_variant_runs_beside_the_activator_in_the_same_rounds(tmp_path: Path) -> None:
    for tool in ("h2load", "nghttpd", "activator"):
        require(tool)
    out = tmp_path / "out"
    _quick_run(
        out,
        "--scenarios",
        "small",
        "--targets",
        "activator",
        "--variant",
        "busy-poll=--busy-poll 5ms",
    )
    data = json.loads((out / "results.json").read_text())
    measured = {r["target"]: r for r in data["records"] if r["requests_per_s"]}
    assert set(measured) == {"activator", "activator+busy-poll"}
    assert all(r["failed"] == 0 for r in measured.values())
    assert "--busy-poll 5ms" in data["meta"]["targets"]["activator+busy-poll"]
    assert "--busy-poll" not in data["meta"]["targets"]["activator"]
    assert "| activator+busy-poll | 1 |" in (out / "RESULTS.md").read_text()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("busy-poll=--busy-poll 20ms", ("busy-poll", ["--busy-poll", "20ms"])),
        (
            "w2=--workers 2 --log-level 'warning'",
            ("w2", ["--workers", "2", "--log-level", "warning"]),
        ),
    ],
)
def test_parse_variant(text: str, parsed: tuple[str, list[str]]) -> None:
    assert parse_variant(text) == parsed


@pytest.mark.parametrize("text", ["--busy-poll 20ms", "Busy=--x", "=--x", "busy-poll=", "a b=--x"])
def test_parse_variant_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--variant"):
        parse_variant(text)


def test_sanitize_replaces_machine_paths(tmp_path: Path) -> None:
    record = RunRecord(
        scenario="small",
        target="haproxy",
        round=1,
        proxy_command=f"taskset -c 0 haproxy -f {tmp_path}/haproxy.cfg",
        h2load_command=f"{sys.executable} -c pass",
    )
    meta, (cleaned,) = sanitize(
        {"configs": {"x": f"root {tmp_path}/www;"}, "command": "run.py --out /elsewhere/out"},
        [record],
        tmp_path,
        Path("/elsewhere/out"),
    )
    assert cleaned.proxy_command == "taskset -c 0 haproxy -f $WORKDIR/haproxy.cfg"
    assert cleaned.h2load_command == "python3 -c pass"
    assert meta["configs"]["x"] == "root $WORKDIR/www;"
    assert meta["command"] == "run.py --out $OUT"
