"""Engine entry point: initialise MLX over MPI, then become an ipyparallel engine.

Order matters.  ipyparallel's MPI engines import mpi4py, which calls MPI_Init;
MLX would then fail to initialise MPI (or quietly fall back to a group of
size 1, so ``all_sum`` returns each rank's own input).  Initialising MLX first
makes mpi4py find MPI already running and leave it alone.
"""

from __future__ import annotations

import sys


def main() -> None:
    import mlx.core as mx

    try:
        world = mx.distributed.init(strict=True, backend="mpi")
    except Exception as e:
        sys.stderr.write(
            f"mxnb engine: MLX could not initialise its MPI backend: {e}\n"
            "mxnb engine: MLX supports Open MPI only; MLX_MPI_LIBNAME must name "
            "its real libmpi shared library.\n"
        )
        sys.stderr.flush()
        sys.exit(3)

    from mxnb.engine import session

    session.set_world(world)

    from ipyparallel.engine.app import main as ipengine_main

    ipengine_main()


if __name__ == "__main__":
    main()
