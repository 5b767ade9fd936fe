"""Every error text a client can see, in one module, exactly as Redis 7.0 writes it.

A `CommandError` carries the text (without the leading '-' and trailing CRLF) from a command
handler to the reply encoder; anything else that escapes a handler is a bug.
"""

from __future__ import annotations


class CommandError(Exception):
    """An error reply: `text` is sent as `-<text>\\r\\n`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ProtocolError(Exception):
    """The client broke RESP framing: reply `-ERR Protocol error: <why>` and close."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ReplyTooLarge(Exception):
    """A reply grew past the client's output buffer limit: Redis closes such a client."""


SYNTAX = "ERR syntax error"
INTERNAL = "ERR internal error"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
OOM = "OOM command not allowed when used memory > 'maxmemory'."
MAX_CLIENTS = "ERR max number of clients reached"
NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
AUTH_NOT_CONFIGURED = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
DB_INDEX = "ERR DB index is out of range"
INVALID_EXPIRE = "ERR invalid expire time in '{}' command"
INCR_OVERFLOW = "ERR increment or decrement would overflow"
NO_SUCH_KEY = "ERR no such key"
SHARD_RESTARTED = "ERR shard worker restarted while the command was in flight; it may or may not have run"
STRING_TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
KEY_TOO_LONG = "ERR key exceeds maximum allowed size (key-bytes-max)"
PROTO_UNSUPPORTED = "NOPROTO unsupported protocol version"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."
NOT_IN_MULTI = "ERR Command not allowed inside a transaction"
EXEC_SHARD_RESTARTED = ("EXECABORT Transaction discarded because of: a shard worker restarted during EXEC; "
                        "none of it was applied")
BUSY_SCRIPT = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
BUSY_FUNCTION = "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
SCRIPT_SHARD_RESTARTED = "ERR a shard worker restarted while the script ran; none of it was applied"
NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."
SUBSCRIPTIONS_FULL = "ERR max number of subscriptions reached (subscriptions-per-worker-max)"
TRANSACTION_TOO_LARGE = "ERR transaction queue exceeds client-query-buffer-limit"


def wrong_arity(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


def unknown_command(name: bytes, args: list[bytes]) -> str:
    shown = " ".join(f"'{_text(a)}'" for a in args[:])
    return f"ERR unknown command '{_text(name)}', with args beginning with: {shown}" + (" " if shown else "")


def subscribed_context(name: str) -> str:
    return (f"ERR Can't execute '{_text(name.encode('utf-8', 'surrogateescape'))}': only (P|S)SUBSCRIBE / "
            "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")


def unknown_subcommand(sub: bytes, cmd: str) -> str:
    return f"ERR unknown subcommand '{_text(sub)}'. Try {cmd.upper()} HELP."


def _text(b: bytes) -> str:
    """A client's bytes inside an error text: sent back as they came (protocol.error encodes the
    text with surrogateescape), as Redis does."""
    return b[:128].decode("utf-8", "surrogateescape")
