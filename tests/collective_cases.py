"""What each rank contributes to a collective, and what NumPy says comes out.

Shared by the tests of the collectives themselves and of their traces.
"""

from __future__ import annotations

import numpy as np


def inputs(n: int) -> list[np.ndarray]:
    """Rank r's array: distinct per rank, so a wrong reduction shows."""
    return [np.arange(6, dtype=np.float32).reshape(2, 3) * (r + 1) - r for r in range(n)]


#: The same arrays, built on each rank inside a %%mxdist cell.
SETUP = (
    "import numpy as np\n"
    "x = mx.array(np.arange(6, dtype=np.float32).reshape(2, 3)) * (rank + 1) - rank\n"
)

#: (op, what NumPy computes from every rank's input)
EXPECTED = [
    ("all_sum", lambda xs: sum(xs)),
    ("all_max", lambda xs: np.maximum.reduce(xs)),
    ("all_min", lambda xs: np.minimum.reduce(xs)),
    ("all_gather", lambda xs: np.concatenate(xs, axis=0)),
]
