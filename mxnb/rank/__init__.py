"""Code that runs inside each MPI rank (an ipyparallel engine).

``python -m mxnb.rank`` is the rank's entry point; :mod:`.runtime` holds the
rank's one :class:`~mxnb.rank.runtime.Runtime`; :mod:`.calls` are the
functions the kernel runs here.  Nothing in this package imports the kernel
side; what both sides share is in :mod:`mxnb.protocol`.
"""
