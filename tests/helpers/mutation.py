"""Mutated protocol bytes for property tests: a valid seed with a few byte-level changes.

One strategy for every codec's "decoding never raises anything but the codec's own error"
test; each codec gives its seeds, the octets its grammar cares about, and any mutation of its own.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from hypothesis import strategies as st

Mutation = Callable[[Callable, bytearray], bytearray]   # (draw, data) -> data


def mutations(seeds: Sequence[bytes], specials: Sequence[bytes] = (), *, max_rounds: int = 5,
              max_delete: int = 8, own: Mapping[str, Mutation] | None = None) -> st.SearchStrategy[bytes]:
    """A seed with 1..max_rounds changes: a bit flipped, bytes inserted, a run deleted, the rest cut,
    one of `specials` inserted, or one of the codec's `own` mutations."""
    own = dict(own or {})
    kinds = [*own, "flip", "insert", "delete", "truncate"] + (["special"] if specials else [])

    @st.composite
    def mutated(draw) -> bytes:
        data = bytearray(draw(st.sampled_from(list(seeds))))
        for _ in range(draw(st.integers(1, max_rounds))):
            kind = draw(st.sampled_from(kinds))
            at = draw(st.integers(0, max(0, len(data) - 1)))
            if kind in own:
                data = own[kind](draw, data)
            elif kind == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=4))
            elif kind == "delete" and data:
                del data[at:at + draw(st.integers(1, max_delete))]
            elif kind == "truncate":
                del data[at:]
            elif kind == "special":
                data[at:at] = draw(st.sampled_from(list(specials)))
        return bytes(data)
    return mutated()
