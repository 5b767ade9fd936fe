"""``cmsgpack``: lua-cmsgpack 0.4.0 as Redis 7.0 bundles it, for lupa's Lua 5.1.

Behaviour reproduced (observed against redis-server 7.0.15):

* numbers: a value equal to an int64 is an integer, packed in the smallest of
  positive fixint / uint8..uint64 or negative fixint / int8..int64; anything
  else is float32 when the value survives the round trip through float,
  else float64.
* strings: fixstr / str8 (0xd9) / str16 / str32.
* tables: an array when every key is a positive integer (<= INT_MAX) and the
  largest key equals the key count (so ``{}`` is an empty array), otherwise a
  map; a table 16 levels deep packs as nil.  Other types pack as nil.
* unpack decodes nil, booleans, all int widths (uint64 passes through int64,
  so values >= 2^63 come back negative), float32/64, str8/16/32, arrays and
  maps; everything else (bin, ext, 0xc1) is "Bad data format in input.".
* unpack_one / unpack_limit return the next offset first (-1 at the end).
"""

from __future__ import annotations

from typing import Any

from shardkv.scripting.libs import _bridge

SOURCE = r"""
local _, MP_FLOAT, F32, F64 = ...

local EOF_MSG = "Missing bytes in input."
local BAD_MSG = "Bad data format in input."
local MAX_NESTING = 16

-- ------------------------------------------------------------- encoding

local function u32_bytes(u)
  return floor(u / 16777216), floor(u / 65536) % 256, floor(u / 256) % 256, u % 256
end

-- n is an int64-valued double
local function enc_int(n)
  if n >= 0 then
    if n <= 127 then return char(n) end
    if n <= 255 then return char(0xcc, n) end
    if n <= 65535 then return char(0xcd, floor(n / 256), n % 256) end
    if n <= 4294967295 then return char(0xce, u32_bytes(n)) end
    local hi = floor(n / 4294967296)
    local lo = n - hi * 4294967296
    local a, b, c, d = u32_bytes(hi)
    return char(0xcf, a, b, c, d, u32_bytes(lo))
  end
  if n >= -32 then return char(n + 256) end
  if n >= -128 then return char(0xd0, n + 256) end
  if n >= -32768 then
    local u = n + 65536
    return char(0xd1, floor(u / 256), u % 256)
  end
  if n >= -2147483648 then return char(0xd2, u32_bytes(n + 4294967296)) end
  local hi = floor(n / 4294967296)
  local lo = n - hi * 4294967296
  local a, b, c, d = u32_bytes(hi + 4294967296)
  return char(0xd3, a, b, c, d, u32_bytes(lo))
end

local function enc_number(n)
  -- IS_INT64_EQUIVALENT: !isinf(n) && (int64_t)n == n
  if n >= -9223372036854775808 and n < 9223372036854775808 and floor(n) == n then
    return enc_int(n)
  end
  return MP_FLOAT(n)
end

local function enc_string(s)
  local len = #s
  if len < 32 then return char(0xa0 + len) .. s end
  if len <= 255 then return char(0xd9, len) .. s end
  if len <= 65535 then return char(0xda, floor(len / 256), len % 256) .. s end
  return char(0xdb, u32_bytes(len)) .. s
end

local function container_header(n, fix, h16, h32)
  if n <= 15 then return char(fix + n) end
  if n <= 65535 then return char(h16, floor(n / 256), n % 256) end
  return char(h32, u32_bytes(n))
end

-- table_is_an_array: keys are exactly 1..count
local function is_array(t)
  local count, max = 0, 0
  local k = next(t)
  while k ~= nil do
    if type(k) ~= "number" or k <= 0 or k > 2147483647 or floor(k) ~= k then
      return false
    end
    if k > max then max = k end
    count = count + 1
    k = next(t, k)
  end
  return max == count
end

local encode

local function enc_table(t, level, buf, n)
  if is_array(t) then
    local len = #t
    n = n + 1
    buf[n] = container_header(len, 0x90, 0xdc, 0xdd)
    for j = 1, len do
      n = encode(t[j], level + 1, buf, n)
    end
    return n
  end
  local count = 0
  local k = next(t)
  while k ~= nil do
    count = count + 1
    k = next(t, k)
  end
  n = n + 1
  buf[n] = container_header(count, 0x80, 0xde, 0xdf)
  local v
  k, v = next(t)
  while k ~= nil do
    n = encode(k, level + 1, buf, n)
    n = encode(v, level + 1, buf, n)
    k, v = next(t, k)
  end
  return n
end

encode = function(v, level, buf, n)
  local t = type(v)
  if t == "string" then
    n = n + 1
    buf[n] = enc_string(v)
  elseif t == "number" then
    n = n + 1
    buf[n] = enc_number(v)
  elseif t == "boolean" then
    n = n + 1
    buf[n] = v and "\195" or "\194"
  elseif t == "table" and level ~= MAX_NESTING then
    n = enc_table(v, level, buf, n)
  else
    n = n + 1
    buf[n] = "\192"
  end
  return n
end

local function mp_pack(nargs, ...)
  if nargs == 0 then argerror(0, "MessagePack pack needs input.") end
  if nargs > LUAI_MAXCSTACK / 2 then
    argerror(0, "Too many arguments for MessagePack pack.")
  end
  local buf, n = {}, 0
  for i = 1, nargs do
    n = encode((select(i, ...)), 0, buf, n)
  end
  return concat(buf, "", 1, n)
end

-- ------------------------------------------------------------- decoding

local STACK_MSG = "stack overflow (too many return values at once; " ..
                  "use unpack_one or unpack_limit instead.)"

local decode

local function be32(s, p)
  local a, b, c, d = byte(s, p, p + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- The int64 with the given 32-bit halves, as a double.
local function int64(hi, lo)
  if hi >= 2147483648 then hi = hi - 4294967296 end
  return hi * 4294967296 + lo
end

local function dec_array(s, p, len, sp, count)
  local t = {}
  if sp + 2 > LUAI_MAXCSTACK then
    error("stack overflow (in function mp_decode_to_lua_array)", 0)
  end
  for i = 1, count do
    local v
    v, p = decode(s, p, len, sp + 2)
    t[i] = v
  end
  return t, p
end

local function dec_map(s, p, len, sp, count)
  local t = {}
  for _ = 1, count do
    local k, v
    k, p = decode(s, p, len, sp + 1)
    v, p = decode(s, p, len, sp + 2)
    if k == nil then error("table index is nil", 0) end
    if k ~= k then error("table index is NaN", 0) end
    t[k] = v
  end
  return t, p
end

-- Decodes the value at s[p]; sp is how many values the C version would have
-- on its stack, for its luaL_checkstack limit.  Returns value, next p.
decode = function(s, p, len, sp)
  if p > len then error(EOF_MSG, 0) end
  if sp + 1 > LUAI_MAXCSTACK then error(STACK_MSG, 0) end
  local b = byte(s, p)
  local left = len - p + 1
  if b < 0x80 then return b, p + 1 end
  if b >= 0xe0 then return b - 256, p + 1 end
  if b < 0x90 then return dec_map(s, p + 1, len, sp, b - 0x80) end
  if b < 0xa0 then return dec_array(s, p + 1, len, sp, b - 0x90) end
  if b < 0xc0 then
    local l = b - 0xa0
    if left < 1 + l then error(EOF_MSG, 0) end
    return sub(s, p + 1, p + l), p + 1 + l
  end
  if b == 0xc0 then return nil, p + 1 end
  if b == 0xc2 then return false, p + 1 end
  if b == 0xc3 then return true, p + 1 end
  if b == 0xcc then
    if left < 2 then error(EOF_MSG, 0) end
    return byte(s, p + 1), p + 2
  end
  if b == 0xd0 then
    if left < 2 then error(EOF_MSG, 0) end
    local v = byte(s, p + 1)
    if v >= 128 then v = v - 256 end
    return v, p + 2
  end
  if b == 0xcd or b == 0xd1 then
    if left < 3 then error(EOF_MSG, 0) end
    local x, y = byte(s, p + 1, p + 2)
    local v = x * 256 + y
    if b == 0xd1 and v >= 32768 then v = v - 65536 end
    return v, p + 3
  end
  if b == 0xce or b == 0xd2 then
    if left < 5 then error(EOF_MSG, 0) end
    local v = be32(s, p + 1)
    if b == 0xd2 and v >= 2147483648 then v = v - 4294967296 end
    return v, p + 5
  end
  if b == 0xcf or b == 0xd3 then
    -- uint 64 goes through lua_pushinteger (int64), like int 64
    if left < 9 then error(EOF_MSG, 0) end
    return int64(be32(s, p + 1), be32(s, p + 5)), p + 9
  end
  if b == 0xca then
    if left < 5 then error(EOF_MSG, 0) end
    return F32(be32(s, p + 1)), p + 5
  end
  if b == 0xcb then
    if left < 9 then error(EOF_MSG, 0) end
    return F64(be32(s, p + 1), be32(s, p + 5)), p + 9
  end
  if b == 0xd9 then
    if left < 2 then error(EOF_MSG, 0) end
    local l = byte(s, p + 1)
    if left < 2 + l then error(EOF_MSG, 0) end
    return sub(s, p + 2, p + 1 + l), p + 2 + l
  end
  if b == 0xda then
    if left < 3 then error(EOF_MSG, 0) end
    local x, y = byte(s, p + 1, p + 2)
    local l = x * 256 + y
    if left < 3 + l then error(EOF_MSG, 0) end
    return sub(s, p + 3, p + 2 + l), p + 3 + l
  end
  if b == 0xdb then
    if left < 5 then error(EOF_MSG, 0) end
    local l = be32(s, p + 1)
    if left - 5 < l then error(EOF_MSG, 0) end
    return sub(s, p + 5, p + 4 + l), p + 5 + l
  end
  if b == 0xdc or b == 0xde then
    if left < 3 then error(EOF_MSG, 0) end
    local x, y = byte(s, p + 1, p + 2)
    if b == 0xdc then return dec_array(s, p + 3, len, sp, x * 256 + y) end
    return dec_map(s, p + 3, len, sp, x * 256 + y)
  end
  if b == 0xdd or b == 0xdf then
    if left < 5 then error(EOF_MSG, 0) end
    local l = be32(s, p + 1)
    if b == 0xdd then return dec_array(s, p + 5, len, sp, l) end
    return dec_map(s, p + 5, len, sp, l)
  end
  error(BAD_MSG, 0)
end

-- mp_unpack_full; base is how many arguments stay on the C stack.
local function unpack_full(s, limit, offset, base)
  local len = #s
  local decode_all = limit == 0 and offset == 0
  if offset < 0 or limit < 0 then
    error(format("Invalid request to unpack with offset of %d and limit of %d.",
                 toint32(offset), toint32(len)), 0)
  elseif offset > len then
    error(format("Start offset %d greater than input length %d.",
                 toint32(offset), toint32(len)), 0)
  end
  if decode_all then limit = 2147483647 end
  local r, cnt, p = {}, 0, offset + 1
  while p <= len and cnt < limit do
    local v
    v, p = decode(s, p, len, base + cnt)
    cnt = cnt + 1
    r[cnt] = v
  end
  if decode_all then return spread(r, cnt) end
  if base + cnt + 1 > LUAI_MAXCSTACK then
    error("stack overflow (in function mp_unpack_full)", 0)
  end
  for i = cnt, 1, -1 do r[i + 1] = r[i] end
  r[1] = p > len and -1 or p - 1
  return spread(r, cnt + 1)
end

local function mp_unpack(nargs, s)
  s = checkstring(1, s, nargs >= 1)
  return unpack_full(s, 0, 0, nargs)
end

local function mp_unpack_one(nargs, s, offset)
  offset = optinteger(2, offset, nargs >= 2, 0)
  s = checkstring(1, s, nargs >= 1)
  return unpack_full(s, 1, offset, 1)
end

local function mp_unpack_limit(nargs, s, limit, offset)
  limit = checkinteger(2, limit, nargs >= 2)
  offset = optinteger(3, offset, nargs >= 3, 0)
  s = checkstring(1, s, nargs >= 1)
  return unpack_full(s, limit, offset, 1)
end

local lib = {
  pack = make_function(mp_pack, "pack"),
  unpack = make_function(mp_unpack, "unpack"),
  unpack_one = make_function(mp_unpack_one, "unpack_one"),
  unpack_limit = make_function(mp_unpack_limit, "unpack_limit"),
  _NAME = "cmsgpack",
  _VERSION = "lua-cmsgpack 0.4.0",
  _COPYRIGHT = "Copyright (C) 2012, Salvatore Sanfilippo",
  _DESCRIPTION = "MessagePack C implementation for Lua",
}
cmsgpack = lib
return lib, probe
"""


def install(lua: Any) -> None:
    """Creates the global ``cmsgpack`` table in ``lua`` (a lupa lua51 runtime)."""
    _bridge.load(
        lua,
        SOURCE,
        "=cmsgpack",
        _bridge.float_or_double,
        _bridge.float_from_bits,
        _bridge.double_from_bits,
    )
