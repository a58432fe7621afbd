"""A request body the lab cannot use, with the SIP answer that says so (the group-chat codecs)."""
from __future__ import annotations


class BodyRefused(ValueError):
    """``reason``: why, for the reason phrase; ``status``: the SIP answer (400 malformed, 403, 413, 415)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)
