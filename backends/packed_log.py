"""A long run of packed events (backends/trace.pack), oldest first, that the cycle collector
hardly looks at.

A deque or a list is always watched: every full collection visits each of its elements, and
each visit reads the element's header (a cache miss each). With the trace at its 500,000
events and the ladder at its 200,000 rows, that alone stopped the window's process for tens of
milliseconds at every full collection (measured: 15 ms with 132,000 of each, 4-5 ms kept here).
Here the events are kept in tuples of `chunk`: CPython stops watching a tuple whose contents
are all unwatched once a collection has seen it so (from the second collection of it on), and
a full collection then visits one chunk per `chunk` events, and the tail being filled. An event
pack() could not flatten (a field marshal cannot write) keeps its chunk watched.

Appends at the newest end, lets go at the oldest, reads by position: what the trace and the
ladder do. Not thread-safe: its owner locks.
"""
from __future__ import annotations

import itertools
from collections import deque
from typing import Iterable, Iterator

Packed = tuple
CHUNK = 1024


class PackedLog:
    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._chunks: deque[tuple[Packed, ...]] = deque()   # full ones, each `chunk` long
        self._tail: list[Packed] = []                        # being filled
        self._gone = 0                                       # let go of the first chunk already
        self._len = 0                                        # one attribute: read whole, without the owner's lock

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, packed: Packed) -> None:
        tail = self._tail
        tail.append(packed)
        if len(tail) == self._chunk:
            self._chunks.append(tuple(tail))
            self._tail = []
        self._len += 1

    def extend(self, many: Iterable[Packed]) -> None:
        for packed in many:
            self.append(packed)

    def popleft(self) -> Packed:
        """Let go of the oldest and return it (what the trace does once per event when full)."""
        if not self._len:
            raise IndexError("pop from an empty PackedLog")
        self._len -= 1
        if not self._chunks:
            return self._tail.pop(0)
        first = self._chunks[0]
        oldest = first[self._gone]
        self._gone += 1
        if self._gone == self._chunk:
            self._chunks.popleft()
            self._gone = 0
        return oldest

    def drop_oldest(self, count: int = 1) -> list[Packed]:
        """Let go of the oldest count (fewer if there are fewer); returns them, oldest first."""
        return [self.popleft() for _ in range(min(max(count, 0), self._len))]

    def __getitem__(self, index: int) -> Packed:
        if not isinstance(index, int):
            raise TypeError("a PackedLog is read by position; for a range use .slice(start, stop)")
        size = self._len
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("PackedLog index out of range")
        position = index + self._gone
        full = len(self._chunks) * self._chunk
        if position < full:
            chunk, offset = divmod(position, self._chunk)
            return self._chunks[chunk][offset]
        return self._tail[position - full]

    def slice(self, start: int, stop: int) -> list[Packed]:
        """The events at positions start..stop-1, oldest first, without walking the rest. Unlike a
        list's, a negative start or stop counts as 0 (not from the end)."""
        start, stop = max(start, 0), min(stop, self._len)
        taken: list[Packed] = []
        position, end = start + self._gone, stop + self._gone
        full = len(self._chunks) * self._chunk
        while position < end and position < full:
            chunk, offset = divmod(position, self._chunk)
            step = min(self._chunk - offset, end - position)
            taken.extend(self._chunks[chunk][offset:offset + step])
            position += step
        if position < end:
            taken.extend(self._tail[position - full:end - full])
        return taken

    def __iter__(self) -> Iterator[Packed]:
        if not self._chunks:
            return iter(self._tail)
        rest = itertools.islice(self._chunks, 1, None)
        return itertools.chain(itertools.islice(self._chunks[0], self._gone, None),
                               itertools.chain.from_iterable(rest), self._tail)

    def clear(self) -> None:
        self._chunks.clear()
        self._tail = []
        self._gone = 0
        self._len = 0
