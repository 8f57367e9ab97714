"""The ipyparallel controller a kernel starts for its ranks (``python -m mxnb.controller``).

It is ipyparallel's own controller, unchanged; only its import skips what
no process of mxnb shows (:mod:`mxnb.protocol.ippimport`), and its task
scheduler gets NumPy only if it uses it (``__main__``).
"""
