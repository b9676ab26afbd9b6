"""Every cache key made outside the page and row caches, and the aliases they live in: what a
person may see and do (per process, "people") and the small lookups a page served from the
cache needs ("pages"). Each key holds the generations its answer is drawn from
(batches/cache/generations.py), so none is ever deleted: a write makes it unreachable."""

from __future__ import annotations

import hashlib
from typing import Any

from . import generations

PEOPLE = "people"  # per process whatever CACHE_URL says: an account holds its password hash
PAGES = "pages"  # CACHE_URL's cache: nothing in it is about one person's account
ROWS = "rows"


def user_key(snapshot: generations.Snapshot, backend: str, user_id: Any) -> str:
    """The account of a session (KeptUsers): people's changes raise everyone's number."""
    return f"user:{snapshot.everyone}:{backend}:{user_id}"


def perms_key(user: Any) -> str:
    """A person's permissions (PasswordBackend): from their groups, everyone's number."""
    return f"perms:{generations.of(user).everyone}:{user.pk}"


def access_key(user: Any) -> str:
    """What a person may see (Connection.objects.visible_to): connections and groups."""
    return f"access:{generations.of(user).everyone}:{user.pk}"


def dormant_key(user: Any, connection_id: int) -> str:
    """Whether the first connection, with no key and no batches, is left out: its batches."""
    numbers = ".".join(map(str, generations.of(user).scope([connection_id])))
    return f"dormant:{numbers}:{connection_id}"


def batch_state_key(user: Any, connection_id: int, openai_id: str) -> str:
    """A batch's id and whether it ended, for a page served from the cache: its connection's
    batches (and everyone's number)."""
    numbers = ".".join(map(str, generations.of(user).scope([connection_id])))
    digest = hashlib.blake2b(openai_id.encode(), digest_size=16).hexdigest()  # any text
    return f"batch-state:{numbers}:{connection_id}:{digest}"


def spend_figures_key(shown: tuple[Any, ...]) -> str:
    """The spend page's figures, by everything they show (content-addressed: any change to the
    figures is a new key, whatever wrote it)."""
    return "spend:" + hashlib.sha256(repr(shown).encode()).hexdigest()


def tallies_key(snapshot: generations.Snapshot, connection_id: int) -> str:
    """A connection's tallies (batches/cache/tallies.py): its batches' writes raise its number."""
    numbers = ".".join(map(str, snapshot.scope([connection_id])))  # a migration raises everyone's
    return f"tallies:{numbers}:{connection_id}"


def names_key(snapshot: generations.Snapshot, user_ids: list[int]) -> str:
    """The user names of some people: people's changes raise everyone's number."""
    digest = hashlib.blake2b(repr(user_ids).encode(), digest_size=16).hexdigest()
    return f"names:{snapshot.everyone}:{digest}"


def history_key(row: dict[str, Any]) -> str:
    """A running batch's progress snapshots (batches/cache/rows.py), by its status and counts,
    which the write that adds a snapshot changes in the same transaction."""
    counts = (row["request_completed"], row["request_failed"], row["request_total"])
    return f"history:{row['id']}:{row['status']}:" + ":".join(map(str, counts))
