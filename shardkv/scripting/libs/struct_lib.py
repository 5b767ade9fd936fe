"""``struct``: Roberto Ierusalimschy's struct library as Redis 7.0 bundles it.

For lupa's Lua 5.1, matching redis-server 7.0.15 on x86-64 (little-endian
native order, long and size_t of 8 bytes, int of 4, default '!' alignment 8).

Formats: ``<`` ``>`` (no ``=``: it is an invalid option there too), ``!n``,
``b B h H l L T i[n] I[n] f d s c[n] x`` and ``' '``.  Integers go through
64-bit C integers: sizes above 8 are zero-padded on pack and read from the
low 8 bytes on unpack, with the sign mask computed the way x86 shifts
(count mod 64), and doubles outside the int64/uint64 range convert as the
x86-64 instructions do (NaN -> 0x8000000000000000, >= 2^64 -> 0).
"""

from __future__ import annotations

from typing import Any

from shardkv.scripting.libs import _bridge

SOURCE = r"""
local _, PY_F32B, PY_F64B, F32, F64 = ...

-- lupa hands integral doubles to Python as ints, which loses -0.0.
local function F32B(n, big)
  if n == 0 and 1 / n < 0 then return big and "\128\0\0\0" or "\0\0\0\128" end
  return PY_F32B(n, big)
end
local function F64B(n, big)
  if n == 0 and 1 / n < 0 then
    return big and "\128\0\0\0\0\0\0\0" or "\0\0\0\0\0\0\0\128"
  end
  return PY_F64B(n, big)
end
local find = string.find

local MAXINTSIZE = 32
local MAXALIGN = 8
local INT_MAX = 2147483647
local TWO32 = 4294967296
local TWO63 = 9223372036854775808
local BIG, LITTLE = 0, 1

local function isdigit(c) return c ~= nil and c >= 48 and c <= 57 end
local function isalnum(c)
  return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122)
end

-- a & m for integers a >= 0 and 0 <= m < 64
local function band(a, m)
  local r, bit = 0, 1
  while bit <= m do
    if a % (bit * 2) >= bit and m % (bit * 2) >= bit then r = r + bit end
    bit = bit * 2
  end
  return r
end

local function isp2(x)
  if x <= 0 then return false end
  while x % 2 == 0 do x = x / 2 end
  return x == 1
end

-- getnum: digits at fmt[i...] or the default.  Returns value, next i.
local function getnum(fmt, i, df)
  local c = byte(fmt, i)
  if not isdigit(c) then return df, i end
  local a = 0
  repeat
    local d = c - 48
    if a > floor(INT_MAX / 10) or a * 10 > INT_MAX - d then
      error("integral size overflow", 0)
    end
    a = a * 10 + d
    i = i + 1
    c = byte(fmt, i)
  until not isdigit(c)
  return a, i
end

local SIZES = {
  [66] = 1, [98] = 1,  -- B b
  [72] = 2, [104] = 2, -- H h
  [76] = 8, [108] = 8, -- L l
  [84] = 8,            -- T
  [102] = 4,           -- f
  [100] = 8,           -- d
  [120] = 1,           -- x
}

local function optsize(opt, fmt, i)
  local s = SIZES[opt]
  if s ~= nil then return s, i end
  if opt == 99 then return getnum(fmt, i, 1) end  -- c
  if opt == 105 or opt == 73 then                  -- i I
    local sz
    sz, i = getnum(fmt, i, 4)
    if sz > MAXINTSIZE then
      error(format("integral size %d is larger than limit of %d", sz, MAXINTSIZE), 0)
    end
    return sz, i
  end
  return 0, i
end

local function gettoalign(len, h, opt, size)
  if size == 0 or opt == 99 then return 0 end
  if size > h.align then size = h.align end
  local m = size - 1
  return band(size - band(len % 64, m), m)
end

-- Returns next i.
local function controloptions(opt, fmt, i, h)
  if opt == 32 then return i end
  if opt == 62 then h.endian = BIG; return i end
  if opt == 60 then h.endian = LITTLE; return i end
  if opt == 33 then
    local a
    a, i = getnum(fmt, i, MAXALIGN)
    if not isp2(a) then error(format("alignment %d is not a power of 2", a), 0) end
    h.align = a
    return i
  end
  argerror(1, format("invalid format option '%c'", opt))
end

local INTOPTS = {[98]=true, [66]=true, [104]=true, [72]=true, [108]=true,
                 [76]=true, [84]=true, [105]=true, [73]=true}

-- (unsigned long) of a lua_Number as x86-64 code converts it, as 32-bit halves
local function touint64(n)
  local t
  if n < 0 then
    if n < -TWO63 then return 2147483648, 0 end
    t = ceil(n)
  elseif n < TWO63 then
    t = floor(n)
  elseif n ~= n then
    return 2147483648, 0
  elseif n < 2 * TWO63 then
    t = n
  else
    return 0, 0
  end
  local hi = floor(t / TWO32)
  local lo = t - hi * TWO32
  if hi < 0 then hi = hi + TWO32 end
  return hi, lo
end

local function putinteger(n, endian, size)
  local hi, lo = touint64(n)
  local b = {}
  for k = 1, size do
    local v
    if k <= 4 then v = lo % 256; lo = floor(lo / 256)
    elseif k <= 8 then v = hi % 256; hi = floor(hi / 256)
    else v = 0 end
    if endian == LITTLE then b[k] = v else b[size + 1 - k] = v end
  end
  return char(unpack(b, 1, size))
end

local function getinteger(data, pos, endian, issigned, size)
  local hi, lo = 0, 0
  local m = size < 8 and size or 8
  for k = m, 1, -1 do  -- value bytes, most significant first
    local b
    if endian == LITTLE then b = byte(data, pos + k) else b = byte(data, pos + size + 1 - k) end
    if k > 4 then hi = hi * 256 + b else lo = lo * 256 + b end
  end
  if not issigned then return hi * TWO32 + lo end
  local s = (size * 8 - 1) % 64
  if s >= 32 then
    local p = 2 ^ (s - 32)
    if hi >= p then hi = hi % p + (TWO32 - p) end
  else
    local p = 2 ^ s
    if hi > 0 or lo >= p then hi = TWO32 - 1; lo = lo % p + (TWO32 - p) end
  end
  if hi >= 2147483648 then hi = hi - TWO32 end
  return hi * TWO32 + lo
end

local function b_pack(nargs, fmt, ...)
  fmt = checkstring(1, fmt, nargs >= 1)
  local z = find(fmt, "\0", 1, true)
  if z then fmt = sub(fmt, 1, z - 1) end
  local args = {...}
  local h = {endian = LITTLE, align = 1}
  local arg = 2
  local totalsize = 0
  local buf, nb = {}, 0
  local i, flen = 1, #fmt
  while i <= flen do
    local opt = byte(fmt, i)
    local size
    size, i = optsize(opt, fmt, i + 1)
    local toalign = gettoalign(totalsize, h, opt, size)
    totalsize = totalsize + toalign
    if toalign > 0 then nb = nb + 1; buf[nb] = rep("\0", toalign) end
    if INTOPTS[opt] then
      -- absent arguments read the nil that b_pack pushes as a mark
      local n = checknumber(arg, args[arg - 1], true)
      arg = arg + 1
      nb = nb + 1; buf[nb] = putinteger(n, h.endian, size)
    elseif opt == 120 then
      nb = nb + 1; buf[nb] = "\0"
    elseif opt == 102 then
      local n = checknumber(arg, args[arg - 1], true)
      arg = arg + 1
      nb = nb + 1; buf[nb] = F32B(n, h.endian == BIG)
    elseif opt == 100 then
      local n = checknumber(arg, args[arg - 1], true)
      arg = arg + 1
      nb = nb + 1; buf[nb] = F64B(n, h.endian == BIG)
    elseif opt == 99 or opt == 115 then
      local s = checkstring(arg, args[arg - 1], true)
      arg = arg + 1
      local l = #s
      if size == 0 then size = l end
      if l < size then argerror(arg, "string too short") end
      nb = nb + 1; buf[nb] = sub(s, 1, size)
      if opt == 115 then
        nb = nb + 1; buf[nb] = "\0"
        size = size + 1
      end
    else
      i = controloptions(opt, fmt, i, h)
    end
    totalsize = totalsize + size
  end
  return concat(buf, "", 1, nb)
end

local function be_u32(b1, b2, b3, b4)
  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4
end

local function b_unpack(nargs, fmt, data, pos)
  fmt = checkstring(1, fmt, nargs >= 1)
  local z = find(fmt, "\0", 1, true)
  if z then fmt = sub(fmt, 1, z - 1) end
  data = checkstring(2, data, nargs >= 2)
  local ld = #data
  pos = optinteger(3, pos, nargs >= 3, 1)
  if pos == 0 then argerror(3, "offset must be 1 or greater") end
  -- a negative pos is a huge size_t: every item is out of range
  local negpos = pos < 0
  pos = pos - 1
  local h = {endian = LITTLE, align = 1}
  local r, n = {}, 0
  local i, flen = 1, #fmt
  while i <= flen do
    local opt = byte(fmt, i)
    local size
    size, i = optsize(opt, fmt, i + 1)
    if negpos then argerror(2, "data string too short") end
    pos = pos + gettoalign(pos, h, opt, size)
    if not (size <= ld and pos <= ld - size) then argerror(2, "data string too short") end
    if nargs + n + 2 > LUAI_MAXCSTACK then error("stack overflow (too many results)", 0) end
    if INTOPTS[opt] then
      n = n + 1
      r[n] = getinteger(data, pos, h.endian, opt >= 97, size)
    elseif opt == 102 then
      local a, b, c, d = byte(data, pos + 1, pos + 4)
      n = n + 1
      if h.endian == LITTLE then r[n] = F32(be_u32(d, c, b, a)) else r[n] = F32(be_u32(a, b, c, d)) end
    elseif opt == 100 then
      local a, b, c, d, e, f, g, k = byte(data, pos + 1, pos + 8)
      n = n + 1
      if h.endian == LITTLE then r[n] = F64(be_u32(k, g, f, e), be_u32(d, c, b, a))
      else r[n] = F64(be_u32(a, b, c, d), be_u32(e, f, g, k)) end
    elseif opt == 99 then
      if size == 0 then
        local prev = n > 0 and tonumber(r[n]) or nil
        if prev == nil then error("format 'c0' needs a previous size", 0) end
        -- (size_t) of the number
        if prev ~= prev or prev < 0 then size = 2 * TWO63
        elseif prev >= 2 * TWO63 then size = 0
        else size = floor(prev) end
        r[n] = nil
        n = n - 1
        if not (size <= ld and pos <= ld - size) then argerror(2, "data string too short") end
      end
      n = n + 1
      r[n] = sub(data, pos + 1, pos + size)
    elseif opt == 115 then
      local e = find(data, "\0", pos + 1, true)
      if e == nil then error("unfinished string in data", 0) end
      size = e - pos
      n = n + 1
      r[n] = sub(data, pos + 1, e - 1)
    elseif opt ~= 120 then
      i = controloptions(opt, fmt, i, h)
    end
    pos = pos + size
  end
  n = n + 1
  r[n] = pos + 1
  return spread(r, n)
end

local function b_size(nargs, fmt)
  fmt = checkstring(1, fmt, nargs >= 1)
  local z = find(fmt, "\0", 1, true)
  if z then fmt = sub(fmt, 1, z - 1) end
  local h = {endian = LITTLE, align = 1}
  local pos = 0
  local i, flen = 1, #fmt
  while i <= flen do
    local opt = byte(fmt, i)
    local size
    size, i = optsize(opt, fmt, i + 1)
    pos = pos + gettoalign(pos, h, opt, size)
    if opt == 115 then
      argerror(1, "option 's' has no fixed size")
    elseif opt == 99 and size == 0 then
      argerror(1, "option 'c0' has no fixed size")
    end
    if not isalnum(opt) then i = controloptions(opt, fmt, i, h) end
    pos = pos + size
  end
  return pos
end

local lib = {
  pack = make_function(b_pack, "pack"),
  unpack = make_function(b_unpack, "unpack"),
  size = make_function(b_size, "size"),
}
struct = lib
return lib, probe
"""


def install(lua: Any) -> None:
    """Creates the global ``struct`` table in ``lua`` (a lupa lua51 runtime)."""
    _bridge.load(
        lua,
        SOURCE,
        "=struct",
        _bridge.float_bytes,
        _bridge.double_bytes,
        _bridge.float_from_bits,
        _bridge.double_from_bits,
    )
