"""Pausing the cyclic garbage collector around a bulk load of durable state.

Plain `gc` only (no trio), so the sans-IO core and the storage layer share it.
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
    they are moved to the oldest generation at once (if nobody else uses
    `gc.freeze`), so the next young collection does not walk them either.
    The collector is re-enabled only if it was enabled before.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()  # every tracked object -> the permanent generation,
            gc.unfreeze()  # -> the oldest generation: no collection walks them now
        if was_enabled:
            gc.enable()
