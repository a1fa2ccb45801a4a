#!/usr/bin/env python3
"""A stand-in for IBM LSF's commands, enough for snakemake-executor-plugin-lsf to run a workflow.

LSF has no open scheduler to install, so the LSF profile is tested against this: one script,
run under the names ``bsub``, ``bjobs``, ``bkill``, ``badmin``, ``lsid`` and ``lsclusters`` by
the wrappers :func:`install` writes. ``bsub`` records its exact command line (one JSON line per
submission in ``$FAKE_LSF_STATE/bsub.jsonl``) and runs the job's command in the background on
this machine, with ``CUDA_VISIBLE_DEVICES`` set when ``-gpu num=N`` was asked for, as LSF does
on a GPU host. ``bjobs`` reports RUN, DONE or EXIT from the job's exit status; ``badmin showconf
mbd`` and ``lsclusters`` describe a cluster whose files live under ``$FAKE_LSF_STATE``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

CLUSTER = "fakecluster"
DEFAULT_QUEUE = "normal"


def state_dir() -> Path:
    """Where jobs, logs and the fake cluster's configuration live (``$FAKE_LSF_STATE``)."""
    path = Path(os.environ["FAKE_LSF_STATE"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def bsub_options(argv: list[str]) -> tuple[dict[str, list[str]], str]:
    """``-flag value`` pairs (repeatable flags such as ``-R`` keep every value) and the command."""
    options: dict[str, list[str]] = {}
    *flags, command = argv
    if len(flags) % 2:
        sys.exit(f"fake bsub: expected -flag value pairs before the command, got {flags}")
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        options.setdefault(flag, []).append(value)
    return options, command


def gpu_count(options: dict[str, list[str]]) -> int:
    """N of ``-gpu num=N[:…]``, 0 without ``-gpu``."""
    for value in options.get("-gpu", []):
        match = re.match(r"num=(\d+)", value)
        if match:
            return int(match.group(1))
    return 0


def bsub(argv: list[str]) -> None:
    """Record the submission, start the command in the background, print LSF's answer."""
    state = state_dir()
    options, command = bsub_options(argv)
    job_id = str(len(list((state / "jobs").glob("*.json"))) + 1001)
    queue = options.get("-q", [DEFAULT_QUEUE])[0]
    record = {"jobid": job_id, "argv": argv, "options": options}
    with open(state / "bsub.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    env = {**os.environ, "LSB_JOBID": job_id, "LSB_QUEUE": queue}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if gpus := gpu_count(options):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
    rc_file = state / "jobs" / f"{job_id}.rc"
    wrapped = f"{command}; echo $? > {shlex.quote(str(rc_file))}.tmp; mv {rc_file}.tmp {rc_file}"
    log = options.get("-o", [os.devnull])[0]
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["sh", "-c", wrapped], cwd=options.get("-cwd", [os.getcwd()])[0], env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    meta = {"name": options.get("-J", [""])[0], "pid": process.pid, "queue": queue}
    (state / "jobs" / f"{job_id}.json").write_text(json.dumps(meta))
    print(f"Job <{job_id}> is submitted to queue <{queue}>.")


def job_status(state: Path, job_id: str) -> str:
    """RUN while the command runs, then DONE (exit 0) or EXIT."""
    rc_file = state / "jobs" / f"{job_id}.rc"
    if not rc_file.exists():
        return "RUN"
    return "DONE" if rc_file.read_text().strip() == "0" else "EXIT"


def bjobs(argv: list[str]) -> None:
    """``bjobs -noheader -o 'jobid stat' -aJ '<pattern>'``: every job whose name matches."""
    state = state_dir()
    pattern = argv[argv.index("-aJ") + 1] if "-aJ" in argv else "*"
    for meta_file in sorted((state / "jobs").glob("*.json")):
        meta = json.loads(meta_file.read_text())
        if fnmatch.fnmatchcase(meta["name"], pattern):
            print(meta_file.stem, job_status(state, meta_file.stem))


def bkill(argv: list[str]) -> None:
    """Kill the named jobs' process groups, as LSF kills a job's processes."""
    state = state_dir()
    for job_id in argv:
        meta_file = state / "jobs" / f"{job_id}.json"
        if meta_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(json.loads(meta_file.read_text())["pid"], signal.SIGTERM)


def badmin(argv: list[str]) -> None:
    """``badmin showconf mbd``: a header line, then ``KEY = value`` lines the plugin reads."""
    state = state_dir()
    conf = state / "conf"
    params = conf / "lsbatch" / CLUSTER / "configdir" / "lsb.params"
    params.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(f"Begin Parameters\nDEFAULT_QUEUE = {DEFAULT_QUEUE}\nEnd Parameters\n")
    events = state / "share" / CLUSTER / "logdir" / "lsb.events"
    events.parent.mkdir(parents=True, exist_ok=True)
    events.touch()
    print("MBD configuration at Tue Dec  1 00:00:00 2026")
    print(f"LSB_SHAREDIR = {state / 'share'}")
    print(f"LSF_CONFDIR = {conf}")
    print("LSF_UNIT_FOR_LIMITS = MB")


def lsclusters(argv: list[str]) -> None:
    """A header, then one cluster."""
    print("CLUSTER_NAME   STATUS   MASTER_HOST   ADMIN   HOSTS  SERVERS")
    print(f"{CLUSTER}    ok       localhost     root    1      1")


def lsid(argv: list[str]) -> None:
    """Version and cluster name, as LSF prints them."""
    print("IBM Spectrum LSF Standard 10.1.0.14 (fake, for latentmech's tests)")
    print(f"My cluster name is {CLUSTER}")
    print("My master name is localhost")


COMMANDS = {f.__name__: f for f in (bsub, bjobs, bkill, badmin, lsclusters, lsid)}


def install(bin_dir: Path, state: Path) -> dict[str, str]:
    """Put the fake commands in ``bin_dir``; the environment that puts them first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        wrapper = bin_dir / name
        script = f'exec {sys.executable} {Path(__file__).resolve()} {name} "$@"'
        wrapper.write_text(f"#!/bin/sh\n{script}\n")
        wrapper.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"PATH": path, "FAKE_LSF_STATE": str(state)}


if __name__ == "__main__":
    COMMANDS[sys.argv[1]](sys.argv[2:])
