"""Regenerates the expected results in test_lua_libs_msgpack_struct.py from a
real redis-server 7.0.x (default 127.0.0.1:7500):

    redis-server --port 7500 --save '' &
    python tests/gen_lua_libs_msgpack_struct.py [port]

Each snippet runs inside the test file's SERIALIZE wrapper on redis-server;
TOP_LEVEL snippets run bare and keep the message of the -ERR reply.
"""

from __future__ import annotations

import pathlib
import re
import sys

import redis

HERE = pathlib.Path(__file__).parent
TEST = HERE / "test_lua_libs_msgpack_struct.py"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7500
    sys.path.insert(0, str(HERE))
    import test_lua_libs_msgpack_struct as t

    r = redis.Redis(port=port)
    lines = ["CASES: list[tuple[str, str]] = ["]
    for snippet, _ in t.CASES:
        out = r.eval(t.SERIALIZE.replace("SNIPPET", snippet), 0).decode()
        lines.append(f"    ({snippet!r}, {out!r}),")
    lines.append("]")
    lines.append("")
    lines.append("TOP_LEVEL: list[tuple[str, str]] = [")
    for snippet, _ in t.TOP_LEVEL:
        try:
            r.eval(snippet, 0)
            msg = "(no error)"
        except redis.ResponseError as e:
            msg = re.sub(r" script: [0-9a-f]{40}, on @user_script:\d+\.$", "", str(e))
        lines.append(f"    ({snippet!r}, {msg!r}),")
    lines.append("]")
    src = TEST.read_text()
    start = src.index("# BEGIN GENERATED")
    end = src.index("# END GENERATED")
    TEST.write_text(src[: start + len("# BEGIN GENERATED\n")] + "\n".join(lines) + "\n" + src[end:])


if __name__ == "__main__":
    main()
