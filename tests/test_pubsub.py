"""Pub/sub across workers: every subscriber on every worker gets every message, in publish order;
a subscriber that stops reading is closed at its limit while everyone else goes on."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest
import redis

from conftest import Server, expect_replies, request, start_server, wait_until
from shardkv.protocol import ReplyError, encode_command, read_reply

SUBSCRIBERS = 1000


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", str(SUBSCRIBERS + 64),
                     "--pubsub-output-bytes-max", "256kb")
    yield s
    s.stop()


def read_all(sock: socket.socket, n: int, timeout_s: float = 20) -> list[object]:
    return expect_replies(sock, b"", n, timeout_s)


def test_a_thousand_subscribers_get_every_message_in_order(srv: Server) -> None:
    subs = []
    for i in range(SUBSCRIBERS):
        s = srv.raw()
        s.sendall(encode_command([b"SUBSCRIBE", b"news", b"all"]) if i % 2 else
                  encode_command([b"PSUBSCRIBE", b"n*"]))
        subs.append(s)
    for i, s in enumerate(subs):
        got = read_all(s, 2 if i % 2 else 1)
        assert got[-1] == ([b"subscribe", b"all", 2] if i % 2 else [b"psubscribe", b"n*", 1])
    r = srv.client()
    homes = [int(c["id"]) % 2 for c in r.client_list() if int(c["sub"]) + int(c["psub"])]
    assert len(homes) == SUBSCRIBERS and set(homes) == {0, 1}  # subscribers on both workers
    assert r.pubsub_numsub("news", "all", "none") == [(b"news", 500), (b"all", 500), (b"none", 0)]
    assert r.pubsub_numpat() == 1 and sorted(r.pubsub_channels()) == [b"all", b"news"]
    messages = [b"m%d" % i for i in range(20)]
    for m in messages:
        assert r.publish("news", m) == SUBSCRIBERS  # 500 by channel, 500 by pattern
    sel = selectors.DefaultSelector()
    buffers = {}
    for s in subs:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        buffers[s] = b""
    want = {s: len(messages) for s in subs}
    received: dict[socket.socket, list[object]] = {s: [] for s in subs}

    def drained() -> bool:
        for key, _ in sel.select(0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            buffers[s] += s.recv(1 << 16)
            pos = 0
            while True:
                try:
                    reply, end = read_reply(buffers[s], pos)
                except (IndexError, ValueError):
                    break
                received[s].append(reply)
                pos = end
            buffers[s] = buffers[s][pos:]
        return all(len(received[s]) >= want[s] for s in subs)

    wait_until(drained, 60, "every subscriber to get every message")
    for i, s in enumerate(subs):
        expected = [[b"message", b"news", m] if i % 2 else [b"pmessage", b"n*", b"news", m] for m in messages]
        assert received[s] == expected
    sel.close()
    for s in subs:
        s.close()
    wait_until(lambda: r.pubsub_numpat() == 0 and r.pubsub_channels() == [], 20, "the subscriptions to end")


def test_a_subscriber_that_stops_reading_is_closed_and_nobody_else_waits(srv: Server) -> None:
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel keeps little for it
    stalled.connect(("127.0.0.1", srv.port))
    stalled.sendall(encode_command([b"SUBSCRIBE", b"firehose"]))
    assert read_all(stalled, 1) == [[b"subscribe", b"firehose", 1]]
    reader = srv.client().pubsub()
    reader.subscribe("firehose")
    assert reader.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    r = srv.client()
    closed_before = int(r.info("stats").get("client_output_buffer_limit_disconnections", 0))  # type: ignore[arg-type]
    payload = b"x" * 32 * 1024
    counts = []
    got = 0
    for i in range(400):  # 12.5 MiB: far past the stalled one's 256 KiB limit and its socket buffers
        counts.append(r.publish("firehose", payload + b"%d" % i))
        while (m := reader.get_message(timeout=0)) is not None:
            assert m["data"] == payload + b"%d" % got
            got += 1
    while got < 400:
        m = reader.get_message(timeout=10)
        assert m is not None, f"the reading subscriber got {got} of 400"
        assert m["data"] == payload + b"%d" % got
        got += 1
    assert counts[0] == 2 and counts[-1] == 1  # the stalled subscriber was dropped on the way
    wait_until(lambda: int(r.info("stats").get("client_output_buffer_limit_disconnections", 0))  # type: ignore[arg-type]
               > closed_before, 10, "the disconnection to be counted")
    stalled.settimeout(10)
    data = b""
    while chunk := stalled.recv(1 << 20):  # what the kernel held, then the close
        data += chunk
    assert len(data) < 8 * 1024 * 1024
    reader.close()


def test_subscribed_context_rules_and_resp3_pushes(srv: Server) -> None:
    s = srv.raw()
    got = expect_replies(s, b"SUBSCRIBE a b\r\nGET x\r\nCLIENT ID\r\nPING\r\nPING hi\r\nUNSUBSCRIBE\r\nGET x\r\n", 9)
    assert got[:2] == [[b"subscribe", b"a", 1], [b"subscribe", b"b", 2]]
    assert got[2] == ReplyError("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
                                "are allowed in this context")
    assert got[3] == ReplyError("ERR Can't execute 'client|id': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                                "RESET are allowed in this context")
    assert got[4:6] == [[b"pong", b""], [b"pong", b"hi"]]
    assert got[6:9] == [[b"unsubscribe", b"a", 1], [b"unsubscribe", b"b", 0], None]  # then no longer subscribed
    assert request(s, b"UNSUBSCRIBE\r\n") == b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    r3 = srv.raw()
    expect_replies(r3, b"HELLO 3\r\n", 1)
    assert request(r3, b"SSUBSCRIBE {s}1\r\n") == b">3\r\n$10\r\nssubscribe\r\n$4\r\n{s}1\r\n:1\r\n"
    assert request(r3, b"GET x\r\n") == b"_\r\n"  # RESP3: any command, while subscribed
    assert request(r3, b"PING\r\n") == b"+PONG\r\n"
    p = srv.client()
    assert p.execute_command("SPUBLISH", "{s}1", "hello") == 1
    assert p.publish("{s}1", "not for shard channels") == 0
    assert request(r3, b"") == b">3\r\n$8\r\nsmessage\r\n$4\r\n{s}1\r\n$5\r\nhello\r\n"
    assert p.execute_command("PUBSUB", "SHARDNUMSUB", "{s}1") == [b"{s}1", 1]
    assert request(r3, b"RESET\r\n") == b"+RESET\r\n"
    assert p.execute_command("PUBSUB", "SHARDNUMSUB", "{s}1") == [b"{s}1", 0]


def test_subscriptions_are_bounded() -> None:
    small = start_server("--shards", "1", "--maxmemory", "32mb", "--subscriptions-per-worker-max", "3")
    try:
        s = small.raw()
        assert expect_replies(s, b"SUBSCRIBE a b c\r\n", 3)[-1] == [b"subscribe", b"c", 3]  # at the limit
        assert expect_replies(s, b"PSUBSCRIBE d*\r\n", 1) == [
            ReplyError("ERR max number of subscriptions reached (subscriptions-per-worker-max)")]
        assert expect_replies(s, b"UNSUBSCRIBE a\r\nPSUBSCRIBE d*\r\n", 2) == [[b"unsubscribe", b"a", 2],
                                                                             [b"psubscribe", b"d*", 3]]
        assert small.client().publish("dx", "m") == 1
    finally:
        small.stop()


def test_client_reply_off_and_skip(srv: Server) -> None:
    s = srv.raw()
    cmds = b"CLIENT REPLY OFF\r\nSET k 1\r\nGET k\r\nCLIENT REPLY ON\r\nCLIENT REPLY SKIP\r\nGET k\r\nGET k\r\n"
    assert expect_replies(s, cmds, 2) == [b"OK", b"1"]
    assert request(s, b"PING\r\n") == b"+PONG\r\n"


def test_redis_py_pubsub_over_both_workers(srv: Server) -> None:
    r = srv.client()
    listeners = [redis.Redis(port=srv.port).pubsub() for _ in range(8)]
    for p in listeners:
        p.subscribe("jobs")
        assert p.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    for i in range(5):
        assert r.publish("jobs", f"j{i}") == len(listeners)
    for p in listeners:
        got = [p.get_message(timeout=5) for _ in range(5)]
        assert [m["data"] for m in got if m] == [f"j{i}".encode() for i in range(5)]
        p.close()
