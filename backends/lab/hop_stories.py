"""What a hop does and why, for a trainer stepping hop by hop (resources/hops.toml).

A hop is matched on its protocol, its PDU kind and the roles of its two ends (a node name from
the ladder: "Mary", "CPM-A", "IWF", "SMSC", "Peter" ... resolved through the topology).
"""
from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from importlib import resources

from iwlab.backends.gate import Hop
from iwlab.backends.topology import Topology


@dataclass(frozen=True)
class HopStory:
    seed: str          # "5.8.5 step 1", or "" when no seed step applies
    seed_text: str     # the seed's own words
    why: str           # what this hop does and why


@dataclass(frozen=True)
class _Entry:
    protocol: str
    kind: str
    src_role: str
    dst_role: str
    story: HopStory

    def matches(self, protocol: str, kind: str, src_role: str, dst_role: str) -> bool:
        return (self.protocol == protocol and fnmatch.fnmatchcase(kind, self.kind) and self.src_role in ("*", src_role)
                and self.dst_role in ("*", dst_role))


def load_entries(text: str | None = None) -> list[_Entry]:
    if text is None:
        text = resources.files("iwlab.resources").joinpath("hops.toml").read_text(encoding="utf-8")
    return [_Entry(e["protocol"], e["kind"], e["from"], e["to"],
                   HopStory(e.get("seed", ""), e.get("seed_text", ""), e["why"]))
            for e in tomllib.loads(text)["hops"]]


class HopStories:
    def __init__(self, topology: Topology, entries: list[_Entry] | None = None) -> None:
        self._topology = topology
        self._entries = entries if entries is not None else load_entries()

    def role(self, node: str) -> str:
        """A ladder column's role in the flow."""
        if any(node == op.node_name for op in self._topology.operators):
            return "cpm-server"
        if node in self._topology.iwf_names():
            return "iwf"
        if any(node == op.focus_name for op in self._topology.operators):
            return "focus"
        if node == "SMSC":
            return "smsc"
        if node == "Mail":
            return "mail-server"
        user = next((u for u in self._topology.users if u.name == node), None)
        if user is None:
            return "other"
        return {"cpm": "cpm-device", "sms": "handset", "email": "mail-client"}.get(user.device, "other")

    def story(self, hop: Hop) -> HopStory:
        src, dst = self.role(hop.src), self.role(hop.dst)
        for entry in self._entries:
            if entry.matches(hop.protocol, hop.kind, src, dst):
                return entry.story
        return HopStory("", "", f"A {hop.protocol} {hop.kind} from {hop.src} to {hop.dst}.")
