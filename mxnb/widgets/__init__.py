"""Widgets that show what the ranks did: :class:`TraceWidget` for a cell's trace."""

from __future__ import annotations

from mxnb.widgets.trace_widget import TraceWidget, widget_state

__all__ = ["TraceWidget", "widget_state"]
