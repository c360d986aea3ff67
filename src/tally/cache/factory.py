"""The cache backend and the invalidation channel a URL names (``TALLY_CACHE_URL``, ...).

Nothing here connects: clients connect on their first call.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tally.cache.memcached_cache import MemcachedCache
from tally.cache.memory import MemoryCache
from tally.cache.redis_cache import RedisCache
from tally.cache.redis_channel import RedisInvalidationChannel
from tally.services.cache_ports import Cache, InvalidationChannel

MEMCACHED_PORT = 11211


def open_cache(url: str, *, max_entries: int, timeout: float) -> Cache:
    """``memory://``, ``redis://host:port[/db]`` (or ``rediss://``), or ``memcached://host[:port]``.

    ``max_entries`` sizes the in-process cache; ``timeout`` (seconds) bounds each call to a server.
    Raises ``ValueError`` for any other URL.
    """
    # Only the scheme is echoed in errors: the URL may carry a password.
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return MemoryCache(max_entries)
    if scheme in ("redis", "rediss"):
        return RedisCache(url, timeout=timeout)
    if scheme == "memcached":
        try:
            port = parts.port or MEMCACHED_PORT
        except ValueError as error:
            raise ValueError("TALLY_CACHE_URL: memcached:// has an invalid port") from error
        if not parts.hostname:
            raise ValueError("TALLY_CACHE_URL: memcached:// needs a host, as in memcached://host:11211")
        return MemcachedCache(parts.hostname, port, timeout=timeout)
    raise ValueError(
        "TALLY_CACHE_URL must be memory://, redis://host:port[/db], rediss://… or memcached://host:port, "
        f"not a {scheme or 'scheme-less'} URL"
    )


def open_channel(url: str) -> InvalidationChannel:
    """The pub/sub channel on the Redis server at ``url``; ``ValueError`` unless ``redis://``/``rediss://``."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ValueError(
            "cache invalidation over pub/sub needs a redis:// or rediss:// URL, "
            f"not a {scheme or 'scheme-less'} URL"
        )
    return RedisInvalidationChannel(url)
