"""Binder: the tutorials run in an environment built from ``binder/`` alone, as a non-root user.

This is what repo2docker does on mybinder.org, without Docker: a fresh
virtual environment gets exactly what ``binder/requirements.txt`` lists
(``binder/runtime.txt`` picks the Python), ``binder/postBuild`` runs if
present, and the notebooks run as an ordinary user (``jovyan`` there), with
``binder/start`` around the command if present.  CI runs as root, so the test
makes a user for it; everything that user touches lives in one temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from users import non_root_user, python_for, reachable_dir, run_as

from procs import SESSION, SESSION_VAR, cluster_processes

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
#: Runs as the Binder user with the Binder environment's Python: execute every
#: tutorial with nbclient, as a reader who presses "Run all" would.
RUNNER = r"""
import json, os, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

results = []
for path in sorted(Path("notebooks").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    who = nbformat.v4.new_code_cell(
        "import os, sys, mxnb\n"
        "print('WHO', os.getuid(), sys.executable, mxnb.__file__)"
    )
    nb.cells.insert(0, who)
    t0 = time.monotonic()
    error = None
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except Exception as e:  # report, then go on with the next notebook
        error = f"{type(e).__name__}: {e}"[-3000:]
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    results.append({
        "name": path.name,
        "seconds": round(time.monotonic() - t0, 1),
        "error": error,
        "who": next((ln for ln in who.outputs[0].text.splitlines() if ln.startswith("WHO")), "")
        if who.outputs else "",
        "checked": "all checks passed" in text,
    })
print(json.dumps(results))
"""


@pytest.fixture
def binder_dir() -> Iterator[Path]:
    with reachable_dir("mxnb-binder-") as path:
        yield path


def _copy_repo(dest: Path) -> None:
    """The files a clone of the repository has (what Binder gets)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_binder_files_follow_repo2docker_rules():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    lines = [
        ln.strip()
        for ln in (BINDER / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    # with a binder/ folder, files at the root are ignored: the project itself must be listed
    assert any(ln == "." or ln.startswith(".[") for ln in lines), lines
    for script, rule in (("postBuild", "set -e"), ("start", 'exec "$@"')):
        path = BINDER / script
        if path.exists():
            assert os.access(path, os.X_OK), f"binder/{script} must be executable"
            assert rule in path.read_text(), f"binder/{script} needs {rule!r}"


def test_tutorials_run_in_the_binder_environment_as_a_non_root_user(binder_dir):
    prefix, user = non_root_user()
    assert user.pw_uid != 0
    work = binder_dir
    repo, home, tmp = work / "repo", work / "home", work / "tmp"
    repo.mkdir()
    home.mkdir()
    tmp.mkdir()
    _copy_repo(repo)
    (work / "run_tutorials.py").write_text(RUNNER)
    if prefix:
        for path in [work, *work.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    venv = work / "venv"
    env = {
        "HOME": str(home),
        "USER": user.pw_name,
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # a Binder container's /tmp is the user's alone; this machine's may hold
        # root's /tmp/mlx (MLX's CPU compile cache), which the user cannot write
        "TMPDIR": str(tmp),
        SESSION_VAR: SESSION,  # lets procs.py count this run's ranks
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
    }
    python = python_for(prefix, env, "import sys, venv; sys.exit(sys.version_info < (3, 11))", repo)

    t0 = time.monotonic()
    made = run_as(prefix, env, [python, "-m", "venv", str(venv)], repo, 300)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir"]
    installed = run_as(prefix, env, [*pip, "-r", "binder/requirements.txt"], repo, 900)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    if (BINDER / "postBuild").exists():
        built = run_as(prefix, env, ["bash", "binder/postBuild"], repo, 600)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    install_seconds = time.monotonic() - t0

    specs = run_as(prefix, env, ["jupyter", "kernelspec", "list", "--json"], repo, 60)
    assert specs.returncode == 0, specs.stderr
    kernels = json.loads(specs.stdout)["kernelspecs"]
    assert str(venv) in kernels["mxnb"]["resource_dir"]  # the package brought its kernel
    assert kernels["mxnb"]["spec"]["display_name"] == "Python 3 (mxnb)"

    before = {p.pid for p in cluster_processes()}
    start = ["binder/start"] if (BINDER / "start").exists() else []
    t1 = time.monotonic()
    ran = run_as(
        prefix, env, [*start, str(venv / "bin" / "python"), "../run_tutorials.py"], repo, 1800
    )
    run_seconds = time.monotonic() - t1
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    results = json.loads(ran.stdout.strip().splitlines()[-1])
    print(f"binder install {install_seconds:.0f} s, tutorials {run_seconds:.0f} s")
    for r in results:
        print(f"  {r['name']}: {r['seconds']} s")

    names = [r["name"] for r in results]
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    for r in results:
        assert r["error"] is None, f"{r['name']}: {r['error']}"
        assert r["checked"], f"{r['name']} did not reach its checks"
        _, uid, exe, module = r["who"].split()
        assert int(uid) == user.pw_uid  # the kernel ran as the Binder user
        assert exe.startswith(str(venv))  # with the Binder environment's Python
        assert module.startswith(str(venv)) and str(ROOT) not in module

    deadline = time.monotonic() + 15
    while (left := {p.pid for p in cluster_processes()} - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"the tutorials left cluster processes {left}"


@pytest.mark.slow
def test_repo2docker_plans_a_non_root_build_from_binder(tmp_path):
    """repo2docker installs from PyPI; without Docker, --no-build prints its Dockerfile."""
    venv = tmp_path / "r2d"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "jupyter-repo2docker"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-2000:]
    plan = subprocess.run(
        [str(venv / "bin" / "repo2docker"), "--no-build", "--debug", "--no-run",
         "--user-id", "1000", "--user-name", "jovyan", str(ROOT)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    assert "python=3.11" in out  # from binder/runtime.txt
    lines = [ln.strip() for ln in out.splitlines()]
    install = next(
        i for i, ln in enumerate(lines) if "pip install" in ln and "binder/requirements.txt" in ln
    )
    user = [ln for ln in lines[:install] if ln.startswith("USER ")][-1]
    assert user == "USER ${NB_USER}", user  # the project is installed as the notebook user
    assert any(ln.startswith("CMD") and "jupyter" in ln for ln in lines)
