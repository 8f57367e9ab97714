"""What a user sees: cell outcomes and errors as text, and the trace as a widget and a picture.

:mod:`.outcome` words results and errors by rank; :mod:`.widget` is the live
trace view (an anywidget, front end in ``js/``); :mod:`.picture` draws the
same trace as a static image for places where no widget runs, and
:mod:`.waits` the picture of who waits for whom when a cell hangs.
"""
