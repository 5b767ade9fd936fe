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
NAN_OR_INFINITY = "ERR increment would produce NaN or Infinity"
TIMEOUT_NOT_FLOAT = "ERR timeout is not a float or out of range"
TIMEOUT_NOT_INTEGER = "ERR timeout is not an integer or out of range"
TIMEOUT_NEGATIVE = "ERR timeout is negative"
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
DECRBY_OVERFLOW = "ERR decrement would overflow"  # DECRBY's own: the decrement itself is LLONG_MIN
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


NO_CONFIG_FILE = "ERR The server is running without a config file"
CLUSTER_DISABLED = "ERR This instance has cluster support disabled"

# CLIENT TRACKING and CLIENT CACHING
TRACKING_ONE_REDIRECT = "ERR A client can only redirect to a single other client"
TRACKING_NO_SUCH_CLIENT = "ERR The client ID you want redirect to does not exist"
TRACKING_PREFIX_NEEDS_BCAST = "ERR PREFIX option requires BCAST mode to be enabled"
TRACKING_SWITCH_BCAST = ("ERR You can't switch BCAST mode on/off before disabling tracking for this client, "
                         "and then re-enabling it with a different mode.")
TRACKING_BCAST_OPTIN = "ERR OPTIN and OPTOUT are not compatible with BCAST"
TRACKING_OPTIN_OPTOUT = "ERR You can't specify both OPTIN mode and OPTOUT mode"
TRACKING_SWITCH_OPT = ("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, "
                       "and then re-enabling it with a different mode.")
# shardkv's own: the bound on BCAST registrations (--tracking-prefixes-max).
TRACKING_PREFIXES_FULL = "ERR too many tracking prefixes (tracking-prefixes-max)"
CACHING_NOT_TRACKING = ("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN "
                        "or OPTOUT mode enabled")
CACHING_YES = "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
CACHING_NO = "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."


def prefix_overlaps_existing(prefix: str, old: str) -> str:
    return (f"ERR Prefix '{prefix}' overlaps with an existing prefix '{old}'. "
            "Prefixes for a single client must not overlap.")


def prefix_overlaps_provided(prefix: str, other: str) -> str:
    return (f"ERR Prefix '{prefix}' overlaps with another provided prefix '{other}'. "
            "Prefixes for a single client must not overlap.")
