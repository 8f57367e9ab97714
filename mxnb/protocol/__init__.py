"""What the kernel, the controller and the ranks share, and nothing else.

Both sides import this package; it imports neither of them.  Whatever
crosses between a notebook's kernel and its ranks is defined here: op names
and the metadata of checked communication (:mod:`.ops`), the typed messages
(:mod:`.messages`), the array snapshot codec (:mod:`.snapshot`), the probe's
socket and framing (:mod:`.probe`), and the words every report uses for
ranks, ops and shapes (:mod:`.wording`).  So is how each of these processes
imports ipyparallel (:mod:`.ippimport`), and what waits for NumPy's import
(:mod:`.afterimport`).
"""
