"""Replacing an output folder is atomic at every moment (issue 18, item 7): a process SIGKILLed at any
point of staged_dir leaves the old or the new folder in place, never neither, and the next write of
that output removes (or, after the non-atomic fallback's two renames, puts back) what it left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.outputs import _exchange, recover, staged_dir
from tests.conftest import REPO

FILES = 50
WRITER = """
import os, sys
from pathlib import Path
import medseg.outputs as outputs
final, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "fallback":
    outputs._exchange = lambda a, b: False
if mode in ("fallback", "exchange"):  # killed at the one moment that matters, inside the swap
    real_rename, real_remove = Path.rename, outputs._remove
    def rename(self, target):
        real_rename(self, target)
        if mode == "fallback":
            os._exit(137)  # after the first rename: final is gone, its .old- copy beside it
        return Path(target)
    Path.rename = rename
    outputs._remove = lambda path: os._exit(137)  # after the exchange: the old folder under the temp name
version = 0
while True:
    version += 1
    with outputs.staged_dir(final) as tmp:
        for i in range({files}):
            (tmp / f"{{i}}.txt").write_text(str(version))
""".format(files=FILES)


def start(final: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(final), mode], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)


def complete(final: Path) -> bool:
    """`final` holds one whole version: every file, all of one version."""
    texts = {p.read_text() for p in final.iterdir()}
    return len(list(final.iterdir())) == FILES and len(texts) == 1


def old_folder(final: Path) -> None:
    final.mkdir()
    for i in range(FILES):
        (final / f"{i}.txt").write_text("0")


needs_exchange = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")


@needs_exchange
def test_exchange_is_available_here(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a")
    assert _exchange(a, b) and (b / "x").read_text() == "a" and not list(a.iterdir())


@needs_exchange
def test_sigkill_at_random_moments_never_leaves_the_output_missing(tmp_path):
    final = tmp_path / "out"
    old_folder(final)
    rng = np.random.default_rng(0)
    for _ in range(12):
        proc = start(final, "loop")
        time.sleep(float(rng.uniform(0.15, 0.6)))  # past the start-up, somewhere in the swap loop
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert final.is_dir() and complete(final)
        recover(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@needs_exchange
def test_killed_right_after_the_exchange(tmp_path):
    final = tmp_path / "out"
    old_folder(final)
    proc = start(final, "exchange")
    assert proc.wait(timeout=60) == 137, proc.stderr.read().decode()
    assert complete(final) and (final / "0.txt").read_text() == "1"  # the new folder, whole
    assert [p.name for p in tmp_path.iterdir() if p.name != "out"] == [f".out.tmp-{proc.pid}"]  # the old one
    with staged_dir(final) as tmp:  # the next write of that output tidies up
        (tmp / "0.txt").write_text("next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_killed_between_the_two_renames_of_the_fallback(tmp_path):
    final = tmp_path / "out"
    old_folder(final)
    proc = start(final, "fallback")
    assert proc.wait(timeout=60) == 137, proc.stderr.read().decode()
    assert not final.exists() and (tmp_path / f".out.old-{proc.pid}").is_dir()  # the moment that is not atomic
    with pytest.raises(RuntimeError):
        with staged_dir(final):  # the next run puts the old folder back first, then fails
            raise RuntimeError("this run fails too")
    assert complete(final) and (final / "0.txt").read_text() == "0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_running_process_keeps_its_temp_folder(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f".out.tmp-{sleeper.pid}").mkdir()
        (tmp_path / f".out.tmp-{os.getpid()}").mkdir()  # this process's own: maybe in use here
        recover(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".out.tmp-{sleeper.pid}", f".out.tmp-{os.getpid()}"])
    finally:
        sleeper.kill()
        sleeper.wait()
    recover(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".out.tmp-{os.getpid()}"]
