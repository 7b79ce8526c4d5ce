"""The serving process's garbage-collector tuning."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from service.process import GC_YOUNG_THRESHOLD, freeze_startup_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_leave_the_collectors_sight_and_young_collections_thin_out() -> None:
    survivor = {"lives": "as long as the process"}
    _, middle, old = gc.get_threshold()
    freeze_startup_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)
    # Frozen objects are invisible to collections: a full one does not walk them.
    assert not any(o is survivor for o in gc.get_objects())


@pytest.mark.usefixtures("restored_gc")
def test_garbage_made_after_the_freeze_is_still_collected() -> None:
    freeze_startup_heap()

    class Node:
        other: object = None

    node = Node()
    node.other = node  # a cycle: only the collector can free it
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert gone() is None
