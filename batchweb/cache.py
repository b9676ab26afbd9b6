"""The shared cache's backend: Django's own RedisCache, with a Redis that cannot be reached
treated as an empty cache instead of an error.

A cache holds only copies (pages and rows drawn from the database, keyed by the cache
generations): without it every page is drawn afresh, slower but right. So when Redis is down or
slow (`socket_timeout`), a read is a miss and a write is skipped, each logged once a minute at
most, and the pages keep working; anything else (a bug) is still raised.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
SOCKET_TIMEOUT_SECONDS = 0.5  # a page drawn afresh costs less than waiting longer on a copy
WARN_EVERY_SECONDS = 60.0

_last_warning = 0.0


def _unreachable(error: Exception, doing: str) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY_SECONDS:
        _last_warning = now
        logger.warning(
            "The shared cache (CACHE_URL) could not be reached while %s (%s): pages are drawn "
            "afresh until it answers again.",
            doing,
            type(error).__name__,
        )


class ForgivingRedisCache(RedisCache):
    """RedisCache whose reads miss and whose writes are skipped while Redis is unreachable."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        params = {**params}
        options = {**params.get("OPTIONS", {})}
        options.setdefault("socket_timeout", SOCKET_TIMEOUT_SECONDS)
        options.setdefault("socket_connect_timeout", SOCKET_TIMEOUT_SECONDS)
        params["OPTIONS"] = options
        super().__init__(server, params)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        try:
            return super().get(key, default, version)
        except UNREACHABLE as error:
            _unreachable(error, "reading")
            return default

    def get_many(self, keys: Any, version: Any = None) -> dict:
        try:
            return super().get_many(keys, version)
        except UNREACHABLE as error:
            _unreachable(error, "reading")
            return {}

    def set(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> None:
        try:
            super().set(key, value, timeout, version)
        except UNREACHABLE as error:
            _unreachable(error, "writing")

    def set_many(self, data: dict, timeout: Any = None, version: Any = None) -> list:
        try:
            return super().set_many(data, timeout, version)
        except UNREACHABLE as error:
            _unreachable(error, "writing")
            return list(data)

    def add(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> bool:
        try:
            return super().add(key, value, timeout, version)
        except UNREACHABLE as error:
            _unreachable(error, "writing")
            return False

    def delete(self, key: Any, version: Any = None) -> bool:
        try:
            return super().delete(key, version)
        except UNREACHABLE as error:
            _unreachable(error, "deleting")
            return False

    def clear(self) -> None:
        try:
            super().clear()
        except UNREACHABLE as error:
            _unreachable(error, "clearing")
