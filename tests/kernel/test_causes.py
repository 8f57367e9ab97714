"""A shared machine's trap, met for real: MLX's CPU compile cache made by another user.

A non-root user compiles a function with real MLX while ``$TMPDIR/mlx``
belongs to root (the first user to compile, on a teaching server), reads
MLX's own message, and gets the cause and the fix; the fix, TMPDIR of its
own, then compiles.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import pytest
from users import non_root_user, python_for, reachable_dir, run_as

ROOT = Path(__file__).resolve().parents[2]

COMPILE = """
import mlx.core as mx
from mxnb.kernel.causes import compile_cache_cause
f = mx.compile(lambda x: mx.exp(-x) * 3 + 1)
try:
    mx.eval(f(mx.ones((5,))))
    print("compiled")
except RuntimeError as e:
    print(compile_cache_cause(str(e)))
"""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    with reachable_dir("mxnb-causes-") as path:
        yield path


def compile_as(prefix: list[str], tmpdir: Path) -> str:
    """Run COMPILE as the user; its last line."""
    site = sysconfig.get_paths()["purelib"]  # this environment's MLX, readable by all
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": str(tmpdir), "HOME": str(tmpdir),
           "PYTHONPATH": f"{ROOT}:{site}", "LANG": "C.UTF-8"}  # fmt: skip
    python = python_for(prefix, env, "import mlx.core", None)
    done = run_as(prefix, env, [python, "-c", COMPILE], None, 300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_compile_cache_of_another_user_is_named_with_the_fix(shared_tmp: Path) -> None:
    prefix, user = non_root_user()
    taken, own = shared_tmp / "taken", shared_tmp / "own"
    cache = taken / "mlx" / mx.__version__ / "cpu"
    cache.mkdir(parents=True)  # as the first user to compile leaves it: 0755
    for path in (taken, *taken.rglob("*")):
        os.chmod(path, 0o755)
    if prefix:  # root made it; the test's user is someone else
        owner = "root"
    else:  # run as that user: the same lock, on a directory of its own
        owner = user.pw_name
        os.chmod(cache, 0o555)
    said = compile_as(prefix, taken)
    assert said.startswith(
        f"MLX writes the C++ of a compiled function into {cache}, "
        f"which belongs to the user {owner}, and this user may not write"
    )
    assert "start Jupyter with TMPDIR set to a directory of your own" in said

    own.mkdir()
    os.chown(own, user.pw_uid, user.pw_gid)
    assert compile_as(prefix, own) == "compiled"  # the fix it names works
    if not prefix:
        os.chmod(cache, 0o755)


@pytest.mark.cluster
def test_ranks_that_raise_it_get_the_cause_in_the_report(run, nranks, tmp_path: Path) -> None:
    """The report of a cell whose ranks raised MLX's message (here as root, who may
    write anywhere: the cause without an owner) carries the cause, once."""
    from mxnb.errors import RankError
    from mxnb.protocol.wording import ranks_text

    cache = tmp_path / "mlx" / mx.__version__ / "cpu"
    message = (
        "[Compile::eval_cpu] Failed to compile function F: Failed to execute command with "
        f'return code 1: "g++ -O3 "{cache}/tmp_1.cpp" -o "{cache}/tmp_1.so"", the '
        f"output is: cc1plus: fatal error: {cache}/tmp_1.cpp: No such file or directory"
    )
    with pytest.raises(RankError) as info:
        run(f"raise RuntimeError({message!r})")
    text = "\n".join(info.value._render_traceback_())
    cause = f"Likely cause: MLX could not write the C++ of a compiled function into {cache}"
    assert text.count(cause) == 1 and f"{ranks_text(range(nranks))} raised RuntimeError" in text
    assert cause in str(info.value)
    assert "--- where each rank was ---" not in text  # no rank is stuck
