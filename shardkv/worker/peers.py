"""Messages between workers: the rings, their framing, outboxes, doorbells and waiting requests
are compiled (shardkv/hop.pyx, where the format is described); this module names what the worker
and the router use of them."""

from __future__ import annotations

from collections.abc import Callable

from shardkv.native import KINDS, Peers, Pending

K_REQ, K_REP, K_LOCK, K_LOCKED, K_APPLY = KINDS["REQ"], KINDS["REP"], KINDS["LOCK"], KINDS["LOCKED"], KINDS["APPLY"]
K_UNLOCK, K_RESET = KINDS["UNLOCK"], KINDS["RESET"]
# One-way messages of blocking commands (router/blocking.py).
K_WATCH, K_UNWATCH, K_READY = KINDS["WATCH"], KINDS["UNWATCH"], KINDS["READY"]


class PeerReset(Exception):
    """The peer restarted: what was sent to it may or may not have run."""


# What waits for a reply: a client's Pending, or a callable given None if the peer restarted.
Callback = Callable[[bytes | None], None] | Pending

__all__ = ["K_APPLY", "K_LOCK", "K_LOCKED", "K_READY", "K_REP", "K_REQ", "K_RESET", "K_UNLOCK", "K_UNWATCH",
           "K_WATCH", "Callback", "PeerReset", "Peers"]
