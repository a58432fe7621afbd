"""PackedLog against a deque doing the same: appends, drops from the oldest end, reads by position."""
import gc
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends import packed_log
from iwlab.backends.packed_log import PackedLog


@pytest.fixture(scope="module")
def monkeypatch_chunk():
    """Chunks of 8: a few dozen events cross several."""
    patch = pytest.MonkeyPatch()
    patch.setattr(packed_log, "CHUNK", 8)
    yield
    patch.undo()


OPERATIONS = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 40)),
                                st.tuples(st.just("drop"), st.integers(0, 40)),
                                st.tuples(st.just("clear"), st.just(0))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.integers(-50, 50), st.integers(-5, 120))
def test_it_keeps_what_a_deque_keeps(monkeypatch_chunk, operations, start, length):
    log, model, counter = PackedLog(), deque(), 0
    for operation, count in operations:
        if operation == "append":
            for _ in range(count):
                counter += 1
                log.append((counter, "x"))
                model.append((counter, "x"))
        elif operation == "drop":
            assert log.drop_oldest(count) == [model.popleft() for _ in range(min(count, len(model)))]
        else:
            log.clear()
            model.clear()
        assert len(log) == len(model) and bool(log) == bool(model)
    assert list(log) == list(model)
    assert log.slice(start, start + length) == list(model)[max(start, 0):max(start + length, 0)]
    for index in (0, -1, len(model) // 2):
        if model:
            assert log[index] == model[index]


def test_full_chunks_are_not_watched_by_the_collector():
    log = PackedLog()
    log.extend((n, "text", b"raw") for n in range(3 * packed_log.CHUNK + 5))
    gc.collect()
    gc.collect()   # the newest chunk's events are looked at in the first, the chunk itself in the next
    assert [chunk for chunk in log._chunks if gc.is_tracked(chunk)] == []   # noqa: SLF001 - what this is for
