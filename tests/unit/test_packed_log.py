"""PackedLog against a deque doing the same: appends, drops from the oldest end, reads by position."""
import gc
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.packed_log import PackedLog


OPERATIONS = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 40)),
                                st.tuples(st.just("drop"), st.integers(0, 40)),
                                st.tuples(st.just("clear"), st.just(0))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.integers(-50, 50), st.integers(-5, 120))
def test_it_keeps_what_a_deque_keeps(operations, start, length):
    log, model, counter = PackedLog(chunk=8), deque(), 0   # a few dozen events cross several chunks
    for operation, count in operations:
        if operation == "append":
            for _ in range(count):
                counter += 1
                log.append((counter, "x"))
                model.append((counter, "x"))
        elif operation == "drop" and count % 2 and model:
            assert log.popleft() == model.popleft()
        elif operation == "drop":
            assert log.drop_oldest(count) == [model.popleft() for _ in range(min(count, len(model)))]
        else:
            log.clear()
            model.clear()
        assert len(log) == len(model) and bool(log) == bool(model)
    assert list(log) == list(model)
    assert log.slice(start, start + length) == list(model)[max(start, 0):max(start + length, 0)]
    assert [log[i] for i in range(-len(model), len(model))] == [model[i] for i in range(-len(model), len(model))]
    with pytest.raises(IndexError):
        log[len(model)]


def test_full_chunks_are_not_watched_by_the_collector():
    log = PackedLog()
    log.extend((n, "text", b"raw") for n in range(3 * 1024 + 5))
    gc.collect()
    gc.collect()   # the newest chunk's events are looked at in the first, the chunk itself in the next
    assert [chunk for chunk in log._chunks if gc.is_tracked(chunk)] == []   # noqa: SLF001 - what this is for


def test_a_range_is_read_with_slice_not_with_list_syntax():
    log = PackedLog()
    log.append((1,))
    with pytest.raises(TypeError, match="slice"):
        log[0:1]
