"""Pausing the cyclic garbage collector around a bulk load of durable state.

Runtime, not domain: the storage pauses the collector while it parses the
files, and the server while the hub rebuilds its state from them
(`Server.load_state`); the core itself never touches the collector.
Invariant: what was frozen before the load (by a host, or by the interpreter
itself: CPython 3.12.1 starts with objects in the permanent generation) is
still frozen afterwards, and the freeze count is what it was.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a bulk load of durable state.

    Loading creates millions of objects that all stay alive; each collection
    triggered meanwhile would walk all of them again, for nothing. Afterwards
    they are moved to the oldest generation, so the next young collection does
    not walk them either: at once when nothing is frozen (`gc.freeze` then
    `gc.unfreeze` moves every tracked object there without walking any), else
    by one young collection, because `gc.unfreeze` would also release what was
    frozen before (a host's objects, or the interpreter's own). The collector
    is re-enabled only if it was enabled before.
    """
    was_enabled = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    gc.disable()
    try:
        yield
    finally:
        if frozen_before == 0 and gc.get_freeze_count() == 0:
            gc.freeze()  # every tracked object -> the permanent generation,
            gc.unfreeze()  # -> the oldest generation: no collection walks them now
        else:
            gc.collect(1)  # one walk moves the survivors to the oldest generation
        if was_enabled:
            gc.enable()
