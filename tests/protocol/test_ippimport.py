"""Importing ipyparallel without listing its launchers, in a fresh process each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib.metadata as md, json, sys
real = md.entry_points
asked = []
def counting(**params):
    asked.append(params.get("group"))
    return real(**params)
md.entry_points = counting
from mxnb.protocol.ippimport import import_ipyparallel
import_ipyparallel(sys.argv[1])
during = list(asked)
import ipyparallel.cluster.cluster as cc
import ipyparallel.traitlets as it
help_lists = "mpi:" in cc.Cluster.class_traits()["engine_launcher_class"].help
print(json.dumps({
    "during": during,
    "after": asked[len(during):],
    "help_lists": help_lists,
    "restored": md.entry_points is counting and it.entry_points is counting,
}))
"""


@pytest.mark.parametrize("module", ["ipyparallel", "ipyparallel.engine.app"])
def test_the_import_lists_no_launcher_and_leaves_the_lookup_as_it_was(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out.splitlines()[-1])
    # ipyparallel's own groups were not scanned while it was imported
    assert not [g for g in seen["during"] if str(g).startswith("ipyparallel.")]
    # afterwards ipyparallel looks its launchers up through the function it had
    assert seen["restored"] is True
    assert seen["help_lists"] is True
    assert "ipyparallel.engine_launchers" in seen["after"]


def test_an_import_that_already_happened_is_left_alone() -> None:
    probe = (
        "import importlib.metadata as md, ipyparallel.traitlets as it\n"
        "from mxnb.protocol.ippimport import import_ipyparallel\n"
        "before = md.entry_points\n"
        "import_ipyparallel('ipyparallel.engine.app')\n"
        "print(md.entry_points is before and it.entry_points is before)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_the_serializer_leaves_numpy_unimported_until_something_imports_it() -> None:
    probe = (
        "import sys\n"
        "from mxnb.protocol.ippimport import import_ipyparallel\n"
        "import_ipyparallel('ipyparallel.engine.app')\n"
        "from ipyparallel.serialize import deserialize_object, serialize_object\n"
        "serialize_object({'a': [1, 2]})\n"
        "print('numpy' in sys.modules)\n"
        "import numpy as np\n"
        "a = np.arange(100_000)\n"
        "bufs = serialize_object(a)\n"
        "back, _ = deserialize_object(bufs)\n"
        # as ipyparallel sends an array: its data as a buffer of its own, not pickled
        "print(len(bufs), bool((back == a).all()))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "2", "True"]
