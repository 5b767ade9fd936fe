"""Shared plumbing for the Lua libraries that Redis implements in C.

Redis's ``cmsgpack`` and ``struct`` are C functions.  Two properties of C
functions show in the errors a script sees, and a plain Lua function lacks
both:

* ``luaL_error`` prefixes the *caller's* position (``user_script:1: ``), and
  the caller stays on the stack even in ``return struct.pack(...)`` (Lua only
  eliminates tail calls into Lua functions).  A Lua implementation that is
  tail-called has lost its caller's frame and cannot name the position.
* ``luaL_argerror`` names the function the way the call site spelled it
  (``'pack'``, a local alias, ``'?'`` under ``pcall``).

So every library function here is a ``coroutine.wrap`` function: a C function
(``auxwrap``) that resumes a coroutine running the Lua implementation.  When the
implementation raises ``error(msg, 0)``, ``auxwrap`` prefixes ``luaL_where(L, 1)``
-- exactly what ``luaL_error`` in the C library would have prefixed.  A dead
coroutine is replaced by setting ``auxwrap``'s upvalue (Lua 5.1's
``debug.setupvalue`` works on C closures), so the function value the script
holds never changes.  For argument errors the implementation asks the main
thread, through a Python round trip, how the caller named the ``auxwrap``
frame; when that cannot be seen (the script runs in a coroutine), the library
field name is used.

Values never cross into Python as strings (lupa would decode them as UTF-8):
the Python helpers take and return numbers, and return ``bytes``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

# Lua source shared by both libraries.  It runs as the head of each library's
# chunk and defines ``make_function``, ``argerror``, ``typerror`` and the
# luaL_check* emulations.  ``...`` of the chunk is (py_probe_caller, helpers...).
PRELUDE = r"""
local PY_PROBE = select(1, ...)
local type, select, error, tostring, tonumber, pcall, next =
      type, select, error, tostring, tonumber, pcall, next
local format, char, byte, sub, rep, concat =
      string.format, string.char, string.byte, string.sub, string.rep, table.concat
local floor, ceil, huge = math.floor, math.ceil, math.huge
local unpack, newproxy, getmetatable = unpack, newproxy, getmetatable
local co_create, co_yield, co_wrap, co_running =
      coroutine.create, coroutine.yield, coroutine.wrap, coroutine.running
local getinfo, setupvalue = debug.getinfo, debug.setupvalue

local LUAI_MAXCSTACK = 8000

-- The library function being served right now and its field name.
local active_pub, active_name
local probed_ok, probed_name, probed_what

-- Runs on the main thread (called from Python): level 2 is the auxwrap frame
-- of the library function if the script runs on the main thread.
local function probe()
  local ar = getinfo(2, "nf")
  if ar ~= nil and ar.func == active_pub then
    probed_ok, probed_name, probed_what = true, ar.name, ar.namewhat
  end
end

-- luaL_argerror
local function argerror(narg, extramsg)
  probed_ok = false
  pcall(PY_PROBE)
  local name, what
  if probed_ok then name, what = probed_name, probed_what
  else name, what = active_name, "field" end
  if what == "method" then
    narg = narg - 1
    if narg == 0 then
      error(format("calling '%s' on bad self (%s)", name, extramsg), 0)
    end
  end
  if name == nil then name = "?" end
  error(format("bad argument #%d to '%s' (%s)", narg, name, extramsg), 0)
end

-- luaL_typerror; 'present' false means the argument is absent ("no value").
local function typerror(narg, tname, v, present)
  local got = present and type(v) or "no value"
  argerror(narg, format("%s expected, got %s", tname, got))
end

-- luaL_checklstring: strings, and numbers converted as lua_tolstring does.
local function checkstring(narg, v, present)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  typerror(narg, "string", v, present)
end

-- luaL_checknumber: numbers and numeric strings.
local function checknumber(narg, v, present)
  local t = type(v)
  if t == "number" then return v end
  if t == "string" then
    local n = tonumber(v)
    if n ~= nil then return n end
  end
  typerror(narg, "number", v, present)
end

-- lua_Number -> lua_Integer as x86-64 converts (truncation; out of range,
-- NaN and infinities give INT64_MIN).
local function tointeger(n)
  if n ~= n or n >= 9223372036854775808 or n < -9223372036854775808 then
    return -9223372036854775808
  end
  if n >= 0 then return floor(n) end
  return ceil(n)
end

local function checkinteger(narg, v, present)
  return tointeger(checknumber(narg, v, present))
end

-- luaL_optinteger
local function optinteger(narg, v, present, default)
  if v == nil then return default end
  return checkinteger(narg, v, present)
end

-- C's (int) of a lua_Integer, as printed by %d.
local function toint32(n)
  return (n + 2147483648) % 4294967296 - 2147483648
end

-- Returns r[1..n] as multiple values (unpack alone fails above ~7997).
local function spread(r, n)
  if n <= 7900 then return unpack(r, 1, n) end
  return r[1], r[2], r[3], r[4], unpack(r, 5, n)
end

local function make_function(impl, name)
  -- A userdata whose __call is the current auxwrap: calls and tail calls
  -- from the script keep the script's frame below a C function.
  local proxy = newproxy(true)
  local mt = getmetatable(proxy)
  local addr = sub(tostring(proxy), 11)
  local wrap, loop, dying
  local function finish(ok, ...)
    if ok then return ... end
    -- The coroutine dies with this error: put a fresh one in place, and
    -- keep this one referenced until auxwrap has read the message.
    dying = wrap
    wrap = co_wrap(loop)
    mt.__call = wrap
    error((...), 0)
  end
  loop = function(_, ...)
    active_pub, active_name = wrap, name
    return loop(co_yield(finish(pcall(impl, select("#", ...), ...))))
  end
  wrap = co_wrap(loop)
  mt.__call = wrap
  mt.__tostring = function() return "function: " .. addr end
  mt.__metatable = false
  return proxy
end
"""


def float_or_double(x: float) -> bytes:
    """lua-cmsgpack's mp_encode_double: float32 when (double)(float)x == x."""
    x = float(x)
    try:
        f = struct.pack(">f", x)
    except OverflowError:
        return b"\xcb" + struct.pack(">d", x)
    if struct.unpack(">f", f)[0] == x:
        return b"\xca" + f
    return b"\xcb" + struct.pack(">d", x)


def float_bytes(x: float, big: bool) -> bytes:
    """C's (float)x, as 4 bytes in the given byte order."""
    x = float(x)
    fmt = ">f" if big else "<f"
    try:
        return struct.pack(fmt, x)
    except OverflowError:
        return struct.pack(fmt, math.copysign(math.inf, x))


def double_bytes(x: float, big: bool) -> bytes:
    return struct.pack(">d" if big else "<d", float(x))


def float_from_bits(u: int) -> float:
    """The float32 with bit pattern u (0 <= u < 2**32), widened to double."""
    return float(struct.unpack(">f", struct.pack(">I", int(u)))[0])


def double_from_bits(hi: int, lo: int) -> float:
    return float(struct.unpack(">d", struct.pack(">II", int(hi), int(lo)))[0])


def load(lua: Any, source: str, name: str, *helpers: Any) -> Any:
    """Runs PRELUDE + source as one chunk and returns what it returns.

    The chunk returns (library table, probe function); the probe is wired to
    the Python caller here so that it runs on the main thread.
    """
    box: list[Any] = []

    def py_probe() -> None:
        if box:
            box[0]()

    lib, probe = lua.execute(PRELUDE + source, py_probe, *helpers, name=name)
    box.append(probe)
    return lib
