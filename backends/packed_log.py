"""A long run of packed events (backends/trace.pack), oldest first, that the cycle collector
hardly looks at.

A deque or a list is always watched: every full collection visits each of its elements, and
each visit reads the element's header (a cache miss each). With the trace at its 500,000
events and the ladder at its 200,000 rows, that alone stopped the window's process for tens of
milliseconds at every full collection (measured: 8 ms per 500,000 tuples laid out in order,
several times that scattered over a long run's heap). Here the events are kept in tuples of
CHUNK: a tuple of untracked tuples stops being watched once a collection has seen it so, and
a full collection then visits one chunk per CHUNK events, and the tail being filled.

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
    def __init__(self) -> None:
        self._chunks: deque[tuple[Packed, ...]] = deque()   # full ones, each CHUNK long
        self._tail: list[Packed] = []                        # being filled
        self._gone = 0                                       # let go of the first chunk already

    def __len__(self) -> int:
        return len(self._chunks) * CHUNK + len(self._tail) - self._gone

    def __bool__(self) -> bool:
        return len(self) > 0

    def append(self, packed: Packed) -> None:
        self._tail.append(packed)
        if len(self._tail) == CHUNK:
            self._chunks.append(tuple(self._tail))
            self._tail = []

    def extend(self, many: Iterable[Packed]) -> None:
        for packed in many:
            self.append(packed)

    def oldest(self) -> Packed:
        return self[0]

    def newest(self) -> Packed:
        return self[-1]

    def drop_oldest(self, count: int = 1) -> list[Packed]:
        """Let go of the oldest count (fewer if there are fewer); returns them, oldest first."""
        dropped = self.slice(0, min(count, len(self)))
        self._gone += len(dropped)
        while self._chunks and self._gone >= CHUNK:
            self._chunks.popleft()
            self._gone -= CHUNK
        if not self._chunks and self._gone:   # what went was in the tail
            del self._tail[:self._gone]
            self._gone = 0
        return dropped

    def __getitem__(self, index: int) -> Packed:
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("PackedLog index out of range")
        position = index + self._gone
        chunk, offset = divmod(position, CHUNK)
        return self._chunks[chunk][offset] if chunk < len(self._chunks) else self._tail[position - len(self._chunks) * CHUNK]

    def slice(self, start: int, stop: int) -> list[Packed]:
        """The events at positions start..stop-1 (clamped), oldest first, without walking the rest."""
        start, stop = max(start, 0), min(stop, len(self))
        taken: list[Packed] = []
        position, end = start + self._gone, stop + self._gone
        full = len(self._chunks) * CHUNK
        while position < end and position < full:
            chunk, offset = divmod(position, CHUNK)
            step = min(CHUNK - offset, end - position)
            taken.extend(self._chunks[chunk][offset:offset + step])
            position += step
        if position < end:
            taken.extend(self._tail[position - full:end - full])
        return taken

    def __iter__(self) -> Iterator[Packed]:
        chunks = iter(self._chunks)
        first = next(chunks, None)
        if first is not None:
            yield from itertools.islice(first, self._gone, None)
            for chunk in chunks:
                yield from chunk
            yield from self._tail
        else:
            yield from itertools.islice(self._tail, self._gone, None)

    def clear(self) -> None:
        self._chunks.clear()
        self._tail = []
        self._gone = 0
