"""The daemon's garbage-collector policy: freeze what is alive, and bound what freezing keeps."""

from __future__ import annotations

import gc
import weakref

from drop_explainer import app


class _Cycle:
    me: object


def test_frozen_cyclic_garbage_is_kept_until_the_full_pass_then_collected() -> None:
    """Freezing keeps a cycle out of the collector's reach; the periodic full pass frees it."""
    now = [0.0]
    collector = app._Collector(clock=lambda: now[0])
    automatic = gc.isenabled()
    gc.disable()  # no automatic pass may collect the cycle before it is frozen
    try:
        cycle = _Cycle()
        cycle.me = cycle
        alive = weakref.ref(cycle)
        del cycle
        collector.tick()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert alive() is not None, "a frozen cycle was collected: freezing did not take"
        now[0] = app._Collector.FULL_EVERY_S
        collector.tick()
        assert alive() is None, "the full pass did not free the frozen cycle"
        assert gc.get_freeze_count() > 0  # frozen again after the full pass
    finally:
        gc.unfreeze()
        if automatic:
            gc.enable()
