"""The "Python 3 (mxnb)" kernel spec comes and goes with the package.

The package is built and installed for real (pip, hatchling's shared-data)
into a throwaway environment, then uninstalled with pip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

ROOT = Path(__file__).resolve().parent.parent


def _pip(env: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _specs(kernels: Path) -> dict[str, str]:
    return KernelSpecManager(kernel_dirs=[str(kernels)]).find_kernel_specs()


def test_kernel_spec_is_installed_and_removed_with_the_package(tmp_path):
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    kernels = env / "share" / "jupyter" / "kernels"
    spec_file = kernels / "mxnb" / "kernel.json"

    _pip(env, "install", "--no-deps", str(ROOT))
    assert spec_file.is_file()
    spec = json.loads(spec_file.read_text())
    assert spec["display_name"] == "Python 3 (mxnb)"
    assert spec["argv"][0] == "python"  # jupyter_client runs its own interpreter
    assert spec["argv"][-2:] == ["--ext", "mxnb"]  # preloads the extension
    assert "{connection_file}" in spec["argv"]
    assert "mxnb" in _specs(kernels)

    _pip(env, "uninstall", "-y", "mxnb")
    assert not spec_file.exists()
    assert not (kernels / "mxnb").exists()
    assert "mxnb" not in _specs(kernels)
