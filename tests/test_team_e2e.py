"""Past one machine, end to end on a tiny phantom: remote storage (a local folder, and WebDAV served
by wsgidav on 127.0.0.1), experiments pushed to a bare git remote and pulled in another clone, the
model registry (`dvc artifacts get`), DDP started by the train stage inside `dvc repro` (gloo, 2
processes) and two queued experiments run two at a time with linked (not copied) data."""
from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import yaml

from medseg.model_card import load_checkpoint
from tests.test_pipeline_e2e import MODELS, copy_repo, run, smaller_params

EPOCHS = 2


@pytest.fixture(scope="module")
def team_repo(tmp_path_factory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("team")
    dest, env = copy_repo(root / "repo", smaller_params(EPOCHS))
    run(["dvc", "repro"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "results"], dest, env)
    return dest, env, root


def clone(source: Path | str, dest: Path, env: dict) -> Path:
    run(["git", "clone", "-q", str(source), str(dest)], dest.parent, env)
    return dest


def assert_nothing_to_run(repo: Path, env: dict) -> None:
    assert "up to date" in run(["dvc", "status"], repo, env).stdout
    output = run(["dvc", "repro"], repo, env).stdout
    assert "Running stage" not in output, output[-2000:]


def predicts(repo: Path, env: dict, tmp: Path) -> None:
    source = tmp / "in"
    source.mkdir()
    shutil.copy(next((repo / "data/slices/images").glob("*.png")), source / "slice.png")
    run([sys.executable, "-m", "stages.predict", "--model", "data/models/unet/best.pt", "--source", str(source),
         "--out", str(tmp / "out")], repo, env)
    mask = next((tmp / "out").rglob("*mask*.png"))
    assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape == (32, 32)


@pytest.mark.e2e
def test_push_to_a_shared_folder_and_pull_in_a_fresh_clone(team_repo, tmp_path):
    dest, env, root = team_repo
    run(["dvc", "remote", "add", "-d", "shared", str(root / "store")], dest, env)
    run(["git", "commit", "-qam", "shared remote"], dest, env)
    run(["dvc", "push", "--run-cache"], dest, env)
    other = clone(dest, tmp_path / "clone", env)
    run(["dvc", "pull"], other, env)
    assert_nothing_to_run(other, env)
    predicts(other, env, tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webdav(tmp_path):
    """A real WebDAV server (wsgidav on cheroot) on 127.0.0.1, anonymous, serving a temporary folder."""
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    folder, port = tmp_path / "dav", free_port()
    folder.mkdir()
    app = WsgiDAVApp({"host": "127.0.0.1", "port": port, "provider_mapping": {"/": str(folder)},
                      "simple_dc": {"user_mapping": {"*": True}}, "verbose": 0, "logging": {"enable": False}})
    server = wsgi.Server(("127.0.0.1", port), app)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"webdav://127.0.0.1:{port}/", folder
    server.stop()
    thread.join(timeout=10)


@pytest.mark.e2e
def test_push_to_webdav_and_pull_in_a_fresh_clone(team_repo, webdav, tmp_path):
    dest, env, _ = team_repo
    url, folder = webdav
    run(["dvc", "remote", "add", "dav", url], dest, env)
    run(["git", "commit", "-qam", "webdav remote"], dest, env)
    run(["dvc", "push", "-r", "dav", "--run-cache"], dest, env)
    assert sum(1 for p in folder.rglob("*") if p.is_file()) > 100  # the objects went over HTTP
    other = clone(dest, tmp_path / "clone", env)
    run(["dvc", "pull", "-r", "dav"], other, env)
    assert_nothing_to_run(other, env)
    predicts(other, env, tmp_path)


@pytest.mark.e2e
def test_a_model_from_the_registry(team_repo, tmp_path):
    dest, env, _ = team_repo  # the shared folder remote of the first test is the default
    listed = yaml.safe_load((dest / "dvc.yaml").read_text())["artifacts"]
    assert set(listed) == set(MODELS) and all(a["type"] == "model" for a in listed.values())
    run(["git", "tag", "-a", "deeplab@v1.0.0", "-m", "deeplab for the phantom"], dest, env)  # a registered version
    run(["dvc", "artifacts", "get", str(dest), "deeplab", "-o", str(tmp_path / "deeplab")], tmp_path, env)
    best = load_checkpoint(tmp_path / "deeplab/best.pt")
    assert best["model"] == "deeplab" and "threshold_source" in best
    run(["dvc", "get", str(dest), "data/models/unet", "-o", str(tmp_path / "unet")], tmp_path, env)  # no version needed
    assert load_checkpoint(tmp_path / "unet/best.pt")["model"] == "unet"


@pytest.mark.e2e
def test_experiments_travel_through_a_bare_git_remote(team_repo, tmp_path):
    dest, env, _ = team_repo
    bare = tmp_path / "team.git"
    run(["git", "init", "-q", "--bare", str(bare)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(bare)], dest, env)
    run(["git", "push", "-q", "origin", "HEAD"], dest, env)
    output = run(["dvc", "exp", "run", "-n", "no-min-area", "-S", "evaluate.min_area=0"], dest, env).stdout
    assert "Running stage 'evaluate'" in output and "Running stage 'train_unet'" not in output
    run(["dvc", "exp", "push", "origin", "no-min-area"], dest, env)
    other = clone(bare, tmp_path / "clone", env)
    run(["dvc", "exp", "pull", "origin", "no-min-area"], other, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], other, env).stdout)
    experiments = [e for commit in shown for e in (commit.get("experiments") or [])]
    found = [e for e in experiments if e.get("name") == "no-min-area"]
    assert found, json.dumps(shown)[:2000]
    data = found[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["evaluate"]["min_area"] == 0
    assert set(data["metrics"]) == {f"results/evaluate/{m}/headline.json" for m in ("unet", "attn_unet", "deeplab",
                                                                                  "upernet")}
    run(["git", "checkout", "-q", "--", "."], dest, env)  # back to the committed params for the next tests
    run(["dvc", "checkout", "-q"], dest, env)


@pytest.mark.e2e
def test_two_queued_experiments_run_two_at_a_time(team_repo):
    dest, env, _ = team_repo
    assert "hardlink" in (dest / ".dvc/config").read_text()  # queued workspaces link data/slices, no copy
    for area in (4, 10):
        run(["dvc", "exp", "run", "--queue", "-n", f"area-{area}", "-S", f"evaluate.min_area={area}"], dest, env)
    run(["dvc", "queue", "start", "-j", "2"], dest, env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], dest, env).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env).stdout)
    experiments = {e.get("name"): e for commit in shown for e in (commit.get("experiments") or [])}
    for area in (4, 10):
        data = experiments[f"area-{area}"]["revs"][0]["data"]
        assert data["params"]["params.yaml"]["data"]["evaluate"]["min_area"] == area
        headline = data["metrics"]["results/evaluate/unet/headline.json"]["data"]
        assert headline["dice_ci_low"] <= headline["dice"] <= headline["dice_ci_high"]


@pytest.mark.e2e
def test_ddp_through_torchrun_inside_dvc_repro(team_repo):
    """Runs last: it retrains U-Net (one epoch) as 2 gloo processes; the other models share the
    launch path (one train stage script), so one model keeps the test inside the CI budget."""
    dest, env, _ = team_repo
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"].update(processes=2, epochs=1)  # one epoch: the launch path is what is tested
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    output = run(["dvc", "repro", "train_unet"], dest, env)
    text = output.stdout + output.stderr
    assert "starting 2 DDP processes" in text and "rank 1 of 2" in text
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    assert lock["stages"]["train_unet"]["params"]["params.yaml"]["train"]["processes"] == 2
    assert "up to date" in run(["dvc", "status", "train_unet"], dest, env).stdout
    assert load_checkpoint(dest / "data/models/unet/best.pt")["compute"]["epochs"] == 1
