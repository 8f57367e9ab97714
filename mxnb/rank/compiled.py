"""Ops inside ``mx.compile``: checked every time the compiled graph runs them.

MLX runs a compiled function's Python once per input signature (its trace)
and afterwards replays the recorded graph without calling Python, so the op
wrappers see a compiled function's ops only while it is traced.  A check
posted then would be posted by a rank that traces and not by one that
replays its cache: the ranks' checks would pair wrongly, or one rank would
wait for a check its peer never posts while the peer sits in MPI (a frozen
cell).

So an op called while a compiled function is traced posts no check.  It
leaves a :class:`Template` under the address of its MLX primitive, which
every replay of that trace shares (MLX's compile keeps the traced primitive
on its tape and gives each replay new arrays around it).  An evaluation
whose graph runs such a primitive posts the template's check then, once for
each time the graph runs it (see :meth:`mxnb.rank.oplog.OpLog.before_eval`).

The templates of a compiled function live as long as it does: MLX erases the
function's tape, and so frees its primitives, only when the compiled
function is deleted, so an address in a live template cannot name another op.

A function traced in ``--bare`` leaves no templates (nothing is observed
there), and its later replays would run unchecked and unseen.  So the first
observed call after a bare one compiles the function anew: MLX traces it
once more, and this time the ops leave their templates.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from mxnb.rank import graph
from mxnb.rank.groups import GroupInfo
from mxnb.rank.oprecord import OpRecord

__all__ = ["CompileHook", "Compiled", "Template"]

#: Templates one compiled function keeps (a trace per input signature); oldest go first.
MAX_TEMPLATES = 4096


class Template(NamedTuple):
    """An op as traced inside a compiled function: what each replay of it runs."""

    rec: OpRecord  # as traced: op, shape, dtype, peer, stream, call site
    group: Any  # the MLX group passed (None: the world), looked up again at each replay


class Compiled:
    """What ``mx.compile`` returns on a rank: MLX's compiled function, and its templates.

    Not a function, so it binds no ``self`` when kept on a class, as MLX's own
    compiled object does not.
    """

    def __init__(self, make: Callable[[], Any], fun: Any, hook: CompileHook) -> None:
        self._make = make  # mx.compile(fun, ...) as the user called it
        self._compiled = make()
        self._hook = hook
        #: called unobserved (--bare) since it was last compiled: traced without templates
        self._blind = False
        self.templates: dict[int, Template] = {}
        try:
            functools.update_wrapper(self, fun)
        except (AttributeError, TypeError):  # e.g. a functools.partial
            pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        hook = self._hook
        if not hook.tracing_possible():
            return self._compiled(*args, **kwargs)
        if not hook.observed:
            self._blind = True
            return self._compiled(*args, **kwargs)
        if self._blind:  # its traces left no templates: make MLX trace it again
            self._blind = False
            self.templates.clear()
            # MLX keys its traces by the Python function and erases them when
            # the compiled function it replaces is deleted here
            self._compiled = None
            self._compiled = self._make()
        hook.stack.append(self)
        try:
            return self._compiled(*args, **kwargs)
        finally:
            hook.stack.pop()


class CompileHook:
    """``mx.compile`` wrapped on a rank: who is being traced, and the templates found.

    ``stack`` is not empty exactly while Python runs inside a compiled
    function's trace (an inner compiled function traces inside the outer one).
    """

    def __init__(self) -> None:
        #: this list and ``live`` are read by mxnb's op path in C on every call
        #: (mxnb.rank.fastpath): cleared, never replaced
        self.stack: list[Compiled] = []
        #: False in --bare, where ops are not logged and so leave no templates
        self.observed = True
        #: id -> compiled function that has templates, while it lives (a plain
        #: dict: every evaluation asks whether it is empty)
        self.live: dict[int, weakref.ref[Compiled]] = {}
        self._compiles: bool | None = None  # see tracing_possible
        self._originals: dict[str, Callable[..., Any]] = {}

    def tracing_possible(self) -> bool:
        """Whether MLX traces compiled functions here, rather than calling them.

        MLX calls the function straight through when compiling is disabled
        (``MLX_DISABLE_COMPILE``, ``mx.disable_compile()``) or the device
        cannot compile; its ops are then ordinary calls, checked as such.
        Python has no getter for that state, so it is found by compiling a
        function and calling it twice: traced once, Python runs once.
        """
        if self._compiles is None:
            import mlx.core as mx

            runs: list[int] = []

            def probe(x: Any) -> Any:
                runs.append(1)
                return x + 1

            real = self._originals.get("compile", mx.compile)
            fn = real(probe)
            fn(mx.zeros(1))
            fn(mx.zeros(1))
            self._compiles = len(runs) == 1
        return self._compiles

    def add(self, prim: int, template: Template) -> None:
        """Note an op traced just now under its primitive's address."""
        for fn in self.stack:  # an inner function's trace is part of the outer one's
            templates = fn.templates
            templates[prim] = template
            if len(templates) > MAX_TEMPLATES:
                del templates[next(iter(templates))]
            key = id(fn)
            if key not in self.live:
                self.live[key] = weakref.ref(fn, lambda _, key=key: self.live.pop(key, None))

    def lookup(self) -> dict[int, Template]:
        """Every live compiled function's templates, by primitive address."""
        out: dict[int, Template] = {}
        for ref in list(self.live.values()):
            fn = ref()
            if fn is not None:
                out.update(fn.templates)
        return out

    def replays(
        self,
        reading: graph.Reading,
        group_of: Callable[[Any], GroupInfo],
        number: Callable[[], int],
    ) -> list[OpRecord]:
        """The compiled ops the evaluation ``reading`` shows runs, as new records in
        MLX's order: one per run of a traced primitive (``number`` gives each
        its sequence number; ``group_of``, its group as it is now)."""
        templates = self.lookup()
        found = graph.occurrences(reading, graph.LABELS.values()) if templates else None
        recs = []
        for prim, label in found or ():
            t = templates.get(prim)
            if t is None or graph.LABELS[t.rec.op] != label:
                continue
            traced = t.rec
            rec = OpRecord(number(), traced.op, group_of(t.group), traced.peer, traced.shape,
                           traced.dtype, traced.where, traced.called)  # fmt: skip
            rec.stream, rec.out, rec.evaluated = traced.stream, traced.out, True
            recs.append(rec)
        return recs

    def install(self) -> None:
        """Wrap ``mx.compile`` (and note when compiling is switched off or on)."""
        import mlx.core as mx

        if self._originals:
            return
        hook = self
        real = self._originals["compile"] = getattr(mx.compile, "__mxnb_original__", mx.compile)

        @functools.wraps(real)
        def compile(fun: Any, *args: Any, **kwargs: Any) -> Any:
            if str(getattr(fun, "__module__", "")).startswith("mlx."):
                return real(fun, *args, **kwargs)  # MLX's own (activations): no communication
            return Compiled(functools.partial(real, fun, *args, **kwargs), fun, hook)

        compile.__mxnb_original__ = real  # type: ignore[attr-defined]
        mx.compile = compile
        for name in ("disable_compile", "enable_compile"):
            self._originals[name] = self._switch(mx, name)

    def _switch(self, mx: Any, name: str) -> Callable[..., Any]:
        real = getattr(mx, name)
        real = getattr(real, "__mxnb_original__", real)
        hook = self

        @functools.wraps(real)
        def switch() -> None:
            real()
            hook._compiles = None  # probed again at the next compiled call

        switch.__mxnb_original__ = real  # type: ignore[attr-defined]
        setattr(mx, name, switch)
        return real

    def uninstall(self) -> None:
        import mlx.core as mx

        for name, real in self._originals.items():
            setattr(mx, name, real)
        self._originals.clear()
