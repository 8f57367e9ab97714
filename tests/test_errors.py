"""mxnb's exceptions: code that catches what MLX raises keeps working."""

from __future__ import annotations

import mxnb.errors


def test_every_exception_mxnb_raises_is_a_runtime_error_as_mlxs_are():
    names = mxnb.errors.__all__
    for name in names:
        assert issubclass(getattr(mxnb.errors, name), RuntimeError), name
    public = {
        n
        for n, v in vars(mxnb.errors).items()
        if isinstance(v, type) and issubclass(v, BaseException) and not n.startswith("_")
    }
    assert public == set(names)  # none left out of the list above
