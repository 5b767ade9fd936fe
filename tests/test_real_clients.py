"""Libraries that use transactions and scripts, as their users call them, against two shards:
django-redis as a Django cache, and the `limits` library's fixed- and moving-window limiters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import Server, start_server


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb")
    yield s
    s.stop()


def test_django_redis_cache(srv: Server) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(CACHES={"default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{srv.port}/1",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }})
        django.setup()
    from django.core.cache import cache

    cache.clear()
    values = {f"user:{i}": {"id": i, "name": f"n{i}"} for i in range(20)}  # keys on both shards
    cache.set_many(values, timeout=300)
    assert cache.get_many(list(values)) == values
    cache.set("hits", 1)
    assert cache.incr("hits", 5) == 6
    assert cache.decr("hits") == 5
    assert 290 < cache.ttl("user:3") <= 300
    cache.set("session:a", "x", timeout=60)
    cache.set("session:b", "y", timeout=60)
    assert cache.delete_pattern("user:*") == 20
    assert cache.get("user:3") is None and cache.get("session:a") == "x"
    assert cache.add("session:a", "z") is False and cache.get_or_set("fresh", lambda: 42) == 42
    with cache.lock("job:lock", timeout=5):  # django-redis's lock is redis-py's Lua Lock
        assert cache.get("fresh") == 42


def test_limits_fixed_and_moving_window(srv: Server) -> None:
    from limits import parse, storage, strategies

    store = storage.RedisStorage(f"redis://127.0.0.1:{srv.port}")
    assert store.check()
    ten_per_minute = parse("10/minute")
    for strategy in (strategies.FixedWindowRateLimiter(store), strategies.MovingWindowRateLimiter(store)):
        for who in ("alice", "bob"):  # different keys, different shards
            allowed = [strategy.hit(ten_per_minute, "api", who) for _ in range(12)]
            assert allowed == [True] * 10 + [False] * 2, (type(strategy).__name__, who)
            assert strategy.test(ten_per_minute, "api", who) is False
            reset, remaining = strategy.get_window_stats(ten_per_minute, "api", who)
            assert remaining == 0 and reset > 0
        store.reset()
        assert strategy.hit(ten_per_minute, "api", "alice") is True
        store.reset()
