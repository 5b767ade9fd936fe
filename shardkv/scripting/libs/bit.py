"""`bit` for scripts: LuaBitOp 1.0.2 as Redis 7.0 bundles it, written in Lua.

Every argument is converted as LuaBitOp does it: `lua_tonumber` (so numeric
strings are accepted), then the low 32 bits of the double `x + 2^52 + 2^51`
(rounds to nearest even, wraps modulo 2^32; past 2^51 the bits of that sum
are what they are, reproduced here with `math.frexp`); a value that is not a
number is refused with LuaBitOp's "number expected" argument error. Results
are signed 32-bit Lua numbers. Shift counts are taken modulo 32.

Not reproduced: a NaN with a payload (`tonumber("nan(0x5)")`) converts to 0
here, to its payload bits in Redis; `bit.tohex(x, -2^31)` misbehaves in Redis
(a negative length) and gives the 8 upper-case digits here.
"""

from __future__ import annotations

from typing import Any

from ._support import BIT_SOURCE, load_library

_SOURCE = r"""
local type, tonumber, select, format, sub = base.type, base.tonumber, base.select, base.format, base.sub
local floor, frexp, huge = base.floor, base.frexp, base.huge

local TWO32, TWO31 = 4294967296, 2147483648
local MAGIC = 6755399441055744  -- 2^52 + 2^51

-- the unsigned 32 bits LuaBitOp takes from the number n
local function bits(n)
  if n >= -2251799813685248 and n < 2251799813685248 then  -- |n| < 2^51: the sum is an integer in [2^52, 2^53)
    return (n + MAGIC) % TWO32
  end
  local y = n + MAGIC
  if y ~= y or y == huge or y == -huge or y == 0 then return 0 end
  if y < 0 then y = -y end
  local m = frexp(y)  -- y = m * 2^e, 0.5 <= m < 1: the 52 stored mantissa bits are m*2^53 - 2^52
  return (m * 9007199254740992 - 4503599627370496) % TWO32
end

-- barg(): level = how far up from barg the public function is
local function barg(v, narg, present, name, level)
  local t = type(v)
  local n
  if t == "number" then
    return bits(v)
  elseif t == "string" then
    n = tonumber(v)
    if n then return bits(n) end
  end
  argerror(level, narg, "number expected, got " .. (present and t or "no value"), name)
end

local function signed(b)
  if b >= TWO31 then return b - TWO32 end
  return b
end

local bit = {}

function bit.tobit(...)
  return signed(barg((...), 1, select("#", ...) >= 1, "tobit", 2))
end

function bit.bnot(...)
  return signed(4294967295 - barg((...), 1, select("#", ...) >= 1, "bnot", 2))
end

-- 4-bit tables: and/xor of two nibbles
local AND, XOR = {}, {}
for a = 0, 15 do
  for b = 0, 15 do
    local r_and, r_xor, m = 0, 0, 1
    local x, y = a, b
    for _ = 1, 4 do
      local xb, yb = x % 2, y % 2
      if xb == 1 and yb == 1 then r_and = r_and + m end
      if xb ~= yb then r_xor = r_xor + m end
      x, y, m = (x - xb) / 2, (y - yb) / 2, m * 2
    end
    AND[a * 16 + b] = r_and
    XOR[a * 16 + b] = r_xor
  end
end

local function band2(a, b)
  local r, m = 0, 1
  for _ = 1, 8 do
    local x, y = a % 16, b % 16
    r = r + AND[x * 16 + y] * m
    a, b, m = (a - x) / 16, (b - y) / 16, m * 16
  end
  return r
end

local function bxor2(a, b)
  local r, m = 0, 1
  for _ = 1, 8 do
    local x, y = a % 16, b % 16
    r = r + XOR[x * 16 + y] * m
    a, b, m = (a - x) / 16, (b - y) / 16, m * 16
  end
  return r
end

local function bor2(a, b)
  return a + b - band2(a, b)
end

-- LuaBitOp converts the first argument, then the others from the last down
local function fold(op, name, ...)
  local nargs = select("#", ...)
  local b = barg((...), 1, nargs >= 1, name, 3)
  local rest = b
  for i = nargs, 2, -1 do
    local x = barg((select(i, ...)), i, true, name, 3)
    if i == nargs then rest = x else rest = op(rest, x) end
  end
  if nargs >= 2 then b = op(b, rest) end
  return signed(b)
end

function bit.band(...)
  local r = fold(band2, "band", ...)  -- not a tail call: errors name this frame
  return r
end

function bit.bor(...)
  local r = fold(bor2, "bor", ...)  -- not a tail call: errors name this frame
  return r
end

function bit.bxor(...)
  local r = fold(bxor2, "bxor", ...)  -- not a tail call: errors name this frame
  return r
end

local POW = {}
for i = 0, 32 do POW[i] = 2 ^ i end

local function shift_args(name, ...)
  local nargs = select("#", ...)
  local b = barg((...), 1, nargs >= 1, name, 3)
  local n = barg((select(2, ...)), 2, nargs >= 2, name, 3) % 32
  return b, n
end

function bit.lshift(...)
  local b, n = shift_args("lshift", ...)
  return signed((b * POW[n]) % TWO32)
end

function bit.rshift(...)
  local b, n = shift_args("rshift", ...)
  return signed(floor(b / POW[n]))
end

function bit.arshift(...)
  local b, n = shift_args("arshift", ...)
  return floor(signed(b) / POW[n])
end

function bit.rol(...)
  local b, n = shift_args("rol", ...)
  return signed((b * POW[n]) % TWO32 + floor(b / POW[32 - n]))
end

function bit.ror(...)
  local b, n = shift_args("ror", ...)
  return signed((b * POW[32 - n]) % TWO32 + floor(b / POW[n]))
end

function bit.bswap(...)
  local b = barg((...), 1, select("#", ...) >= 1, "bswap", 2)
  local b0 = b % 256
  local b1 = floor(b / 256) % 256
  local b2 = floor(b / 65536) % 256
  local b3 = floor(b / 16777216)
  return signed(((b0 * 256 + b1) * 256 + b2) * 256 + b3)
end

function bit.tohex(...)
  local nargs = select("#", ...)
  local b = barg((...), 1, nargs >= 1, "tohex", 2)
  local n = 8
  if nargs >= 2 then n = signed(barg((select(2, ...)), 2, true, "tohex", 2)) end
  local fmt = "%08x"
  if n < 0 then n = -n; fmt = "%08X" end
  if n > 8 then n = 8 end
  if n == 0 then return "" end
  return sub(format(fmt, b), 9 - n)
end

return bit
"""


def install(lua: Any) -> None:
    """Create the global `bit` table in the lupa LuaRuntime `lua`."""
    lua.globals()[b"bit"] = load_library(lua, _SOURCE, BIT_SOURCE)
