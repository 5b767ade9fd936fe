from typing import Any

SOURCE_SHA256: str

def parse_integer(text: bytes | bytearray) -> int | None: ...
def parse(
    buf: bytes | bytearray,
    end: int,
    args_max: int,
    bulk_bytes_max: int,
    requests_max: int,
    unauthenticated: bool,
    split_inline: Any,
    error_type: Any,
) -> tuple[list[tuple[list[bytes], int, int]], int, int, Any]: ...
def bulk(value: bytes | bytearray | memoryview) -> bytes: ...
def integer(n: int) -> bytes: ...
