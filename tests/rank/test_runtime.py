"""One Runtime per rank: it puts every hook in place, and takes every one out again."""

from __future__ import annotations

import pytest

import mxnb

pytestmark = pytest.mark.cluster

SWAPPED = (
    "import mlx.core as _mx\n"
    "from mxnb.rank.runtime import current as _rt\n"
    "def _wrapped():\n"
    "    fns = [_mx.distributed.all_sum, _mx.distributed.send, _mx.eval, _mx.array.item,\n"
    "           _mx.distributed.Group.split]\n"
    "    return [hasattr(f, '__mxnb_original__') for f in fns]\n"
)


def test_uninstall_restores_mlx_and_install_puts_everything_back(run, nranks, magics):
    run(SWAPPED + "before = _wrapped()\n_rt().uninstall()\nafter = _wrapped()\n")
    assert mxnb.pull("before") == [[True] * 5] * nranks
    assert mxnb.pull("after") == [[False] * 5] * nranks
    # plain MLX in between: the sum is right, and nothing was logged
    run(
        "from mxnb.rank.runtime import current as _rt\n"
        "plain = mx.distributed.all_sum(mx.ones(2) * rank).tolist()\n"
        "_rt().oplog.sync()\nlogged = len(_rt().oplog.cell_ops)\n"
    )
    total = float(sum(range(nranks)))
    assert mxnb.pull("plain") == [[total, total]] * nranks
    assert set(mxnb.pull("logged")) == {0}
    # back in place, with the cell events: the next cell is logged and checked again
    run(SWAPPED + "from mxnb.rank.runtime import probe_ip\n_rt().install(probe_ip())\n"
        "_rt().attach(get_ipython())\nagain = _wrapped()\n")  # fmt: skip
    assert mxnb.pull("again") == [[True] * 5] * nranks
    # the probe is back where the kernel learnt it was
    assert sorted(r for r, a in magics.cluster.ask_probes().items() if a) == list(range(nranks))
    run(
        "y = mx.distributed.all_sum(mx.ones(2))\nmx.eval(y)\n"
        "from mxnb.rank.runtime import current as _rt\n"
        "_rt().oplog.sync()\nops = [(r.op, r.check) for r in _rt().oplog.cell_ops]\n"
    )
    assert mxnb.pull("ops") == [[("all_sum", "ok")]] * nranks


def test_a_full_collection_leaves_out_the_engine_s_own_objects(run, nranks):
    # what earlier cells left alive is scanned; the engine's tens of thousands are not
    run("import gc\ngc.collect()\nfrozen, scanned = gc.get_freeze_count(), len(gc.get_objects())\n")
    frozen, scanned = mxnb.pull("frozen"), mxnb.pull("scanned")
    assert all(f > 20_000 for f in frozen), frozen
    assert all(s < f for s, f in zip(scanned, frozen, strict=True)), (scanned, frozen)


def test_the_engine_starts_without_a_debugger_and_a_cell_can_still_import_debugpy(run, nranks):
    # ipykernel's debugger (never served by an engine) was not set up as the rank
    # started, which is the start-up cost saved; debugpy itself is importable again
    run(
        "import ipykernel.debugger as _kd\n"
        "offered = _kd._is_debugpy_available\n"
        "import debugpy\n"
        "imported = debugpy.__name__\n"
    )
    assert mxnb.pull("offered") == [False] * nranks
    assert mxnb.pull("imported") == ["debugpy"] * nranks


def test_the_engine_import_did_not_list_the_launchers_and_ipyparallel_finds_them_again(run, nranks):
    # the listing (four scans of every package's entry points as ipyparallel's
    # Cluster class is defined) is a cold start's cost in every rank; only the
    # traits' docstrings, fixed at that moment, show it was skipped
    run(
        "import importlib.metadata as _md\n"
        "import ipyparallel.cluster.cluster as _cc\n"
        "import ipyparallel.traitlets as _it\n"
        "_trait = _cc.Cluster.class_traits()['engine_launcher_class']\n"
        "listed_at_start = 'mpi:' in (_trait.__doc__ or '')\n"
        "listed_now = 'mpi:' in _trait.help\n"
        "own_function = _it.entry_points is _md.entry_points\n"
    )
    assert mxnb.pull("listed_at_start") == [False] * nranks
    assert mxnb.pull("listed_now") == [True] * nranks
    assert mxnb.pull("own_function") == [True] * nranks
