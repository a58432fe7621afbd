"""What a node remembers about the messages it carried (to match a later report, a reply, a
retry), within a bound: the newest entries. Kept without one, a lab under load for hours grew
by every message it ever carried (measured: the IWF's email leg, ~40 objects a mail)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(OrderedDict[K, V]):
    """A dict of the `limit` entries set most recently, oldest first (setting one again makes it
    the newest); older ones are let go as newer come."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)

    def __reduce__(self):   # copy, deepcopy and pickle make one with the same limit
        return type(self), (self.limit,), None, None, iter(self.items())

    def copy(self) -> "Recent[K, V]":
        duplicate: Recent[K, V] = Recent(self.limit)
        duplicate.update(self)
        return duplicate
