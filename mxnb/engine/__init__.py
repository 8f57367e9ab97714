"""Code that runs inside each MPI rank (an ipyparallel engine).

``python -m mxnb.engine`` is the engine entry point; :mod:`.session` prepares
the namespace a ``%%mxdist`` cell sees; :mod:`.hooks` is where the
``mx.distributed`` operations can be observed.
"""
