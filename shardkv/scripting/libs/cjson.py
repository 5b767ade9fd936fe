"""`cjson` for scripts: lua-cjson 2.1.0 as Redis 7.0 bundles it, written in Lua.

What scripts see matches Redis byte for byte: the JSON text (numbers by
`%.14g`, "/" escaped as "\\/", tables as arrays only when every key is a
positive integer and the array is not excessively sparse, an empty table as
"{}", object members in `next` order), decoded values, the configuration
functions and their return values, and error messages.

`cjson.null` is a userdata (Redis: a NULL light userdata): `type()` says
"userdata", it equals only itself, `tostring()` gives "userdata: (nil)" as
Redis does; unlike Redis `getmetatable(cjson.null)` gives false, not nil.

Limits of the C library are reproduced where a script can see them: nesting is
refused past the configured depths and past Lua's 8000 C-stack slots (the depth
at which `lua_checkstack` fails in Redis), array lengths are ints (a key of
2^31 or more makes the table an object, as the C code's int conversion does).
"""

from __future__ import annotations

from typing import Any

from ._support import CJSON_SOURCE, load_library

_SOURCE = r"""
local error, pcall, type, tonumber, tostring, next, rawget =
  base.error, base.pcall, base.type, base.tonumber, base.tostring, base.next, base.rawget
local select, setmetatable, newproxy, getmetatable = base.select, base.setmetatable, base.newproxy, base.getmetatable
local format, byte, char, sub, find, gsub, match, lower =
  base.format, base.byte, base.char, base.sub, base.find, base.gsub, base.match, base.lower
local floor, huge, concat = base.floor, base.huge, base.concat

local MAXCSTACK = 8000
local INT_MAX = 2147483647

-- cjson.null: one userdata shared by every cjson table
local null = newproxy(true)
do
  local mt = getmetatable(null)
  mt.__tostring = function() return "userdata: (nil)" end
  mt.__metatable = false
end

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['/'] = '\\/',
  ['\b'] = '\\b', ['\t'] = '\\t', ['\n'] = '\\n', ['\f'] = '\\f', ['\r'] = '\\r',
}
for i = 0, 31 do
  local c = char(i)
  if not escapes[c] then escapes[c] = format('\\u%04x', i) end
end
escapes['\127'] = '\\u007f'
local ESCAPE_PATTERN = '[%z\1-\31"\\/\127]'

local unescapes = {
  ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', t = '\t', n = '\n', f = '\f', r = '\r',
}

-- the int a C `int` holds after `(int)` of an integral double (x86-64)
local function to_int(d)
  if d ~= d or d >= 9223372036854775808 or d < -9223372036854775808 then return 0 end
  d = d % 4294967296
  if d >= 2147483648 then d = d - 4294967296 end
  return d
end

local function throw(msg) error(msg, 0) end

local function is_integral_lua(v)  -- luaL_checkinteger's truncation
  if v >= 0 then return floor(v) end
  return -floor(-v)
end

local new_module

new_module = function()
  local cfg = {
    sparse_convert = 0, sparse_ratio = 2, sparse_safe = 10,
    encode_max_depth = 1000, decode_max_depth = 1000,
    encode_invalid = 0, decode_invalid = 1, keep_buffer = 1, precision = 14,
  }
  local numfmt = "%.14g"

  ------------------------------------------------------------ encoding
  local function number_text(n)
    if n ~= n or n == huge or n == -huge then
      local mode = cfg.encode_invalid
      if mode == 0 then throw("Cannot serialise number: must not be NaN or Inf") end
      if mode == 2 then return "null" end
      if n ~= n then return "nan" end
    end
    return format(numfmt, n)
  end

  local function string_text(s)
    return '"' .. gsub(s, ESCAPE_PATTERN, escapes) .. '"'
  end

  local function array_length(t)
    local maxk, items = 0, 0
    for k in next, t do
      if type(k) == "number" and k >= 1 and floor(k) == k then
        if k > maxk then
          if k >= 2147483648 then maxk = -2147483648 else maxk = k end
        end
        items = items + 1
      else
        return -1
      end
    end
    local ratio = cfg.sparse_ratio
    if ratio > 0 then
      local limit = to_int(items * ratio)
      if maxk > limit and maxk > cfg.sparse_safe then
        if cfg.sparse_convert == 0 then throw("Cannot serialise table: excessively sparse array") end
        return -1
      end
    end
    return maxk
  end

  local encode_value
  -- slots: Lua stack slots the C encoder would be using at this point
  encode_value = function(v, buf, n, depth, slots)
    local tv = type(v)
    if tv == "string" then
      n = n + 1; buf[n] = string_text(v)
    elseif tv == "number" then
      n = n + 1; buf[n] = number_text(v)
    elseif tv == "boolean" then
      n = n + 1; buf[n] = v and "true" or "false"
    elseif tv == "table" then
      depth = depth + 1
      if depth > cfg.encode_max_depth or slots + 3 > MAXCSTACK then
        throw(format("Cannot serialise, excessive nesting (%d)", depth))
      end
      local len = array_length(v)
      if len > 0 then
        n = n + 1; buf[n] = "["
        for i = 1, len do
          if i > 1 then n = n + 1; buf[n] = "," end
          n = encode_value(rawget(v, i), buf, n, depth, slots + 1)
        end
        n = n + 1; buf[n] = "]"
      else
        n = n + 1; buf[n] = "{"
        local first = true
        for k, item in next, v do
          if first then first = false else n = n + 1; buf[n] = "," end
          local tk = type(k)
          if tk == "number" then
            n = n + 1; buf[n] = '"' .. number_text(k) .. '":'
          elseif tk == "string" then
            n = n + 1; buf[n] = string_text(k) .. ":"
          else
            throw("Cannot serialise " .. tk .. ": table key must be a number or string")
          end
          n = encode_value(item, buf, n, depth, slots + 2)
        end
        n = n + 1; buf[n] = "}"
      end
    elseif tv == "nil" or v == null then
      n = n + 1; buf[n] = "null"
    else
      throw("Cannot serialise " .. tv .. ": type not supported")
    end
    return n
  end

  local function do_encode(v)
    local buf = {}
    local n = encode_value(v, buf, 0, 0, 1)
    return concat(buf, "", 1, n)
  end

  ------------------------------------------------------------ decoding
  -- tokens: the C library's token type names are in its error messages
  local T_OBJ_BEGIN, T_OBJ_END, T_ARR_BEGIN, T_ARR_END = "T_OBJ_BEGIN", "T_OBJ_END", "T_ARR_BEGIN", "T_ARR_END"
  local T_STRING, T_NUMBER, T_BOOLEAN, T_NULL = "T_STRING", "T_NUMBER", "T_BOOLEAN", "T_NULL"
  local T_COLON, T_COMMA, T_END, T_ERROR = "T_COLON", "T_COMMA", "T_END", "T_ERROR"
  local single = {
    [123] = T_OBJ_BEGIN, [125] = T_OBJ_END, [91] = T_ARR_BEGIN, [93] = T_ARR_END,
    [44] = T_COMMA, [58] = T_COLON,
  }

  -- length of the longest prefix of s at i that strtod() converts; 0 if none
  local function strtod_length(s, i)
    local j = i
    local c = sub(s, j, j)
    if c == "+" or c == "-" then j = j + 1 end
    local three = lower(sub(s, j, j + 2))
    if three == "inf" then
      if lower(sub(s, j, j + 7)) == "infinity" then return j + 8 - i end
      return j + 3 - i
    elseif three == "nan" then
      local e = match(s, "^%([0-9A-Za-z_]*%)()", j + 3)
      return (e or j + 3) - i
    end
    if sub(s, j, j) == "0" and lower(sub(s, j + 1, j + 1)) == "x" then
      local e = match(s, "^[0-9a-fA-F]+()", j + 2)
      local f
      if e then
        f = match(s, "^%.[0-9a-fA-F]*()", e) or e
      else
        f = match(s, "^%.[0-9a-fA-F]+()", j + 2)
      end
      if f then
        return (match(s, "^[pP][+-]?[0-9]+()", f) or f) - i
      end
      return j + 1 - i  -- just the "0"
    end
    local e = match(s, "^[0-9]+()", j)
    local f
    if e then
      f = match(s, "^%.[0-9]*()", e) or e
    else
      f = match(s, "^%.[0-9]+()", j)
    end
    if not f then return 0 end
    return (match(s, "^[eE][+-]?[0-9]+()", f) or f) - i
  end

  -- json_is_invalid_number(): strict JSON would refuse what strtod takes
  local function invalid_number(s, i)
    local c = byte(s, i)
    if c == 43 then return true end  -- '+'
    if c == 45 then i = i + 1; c = byte(s, i) end  -- '-'
    if c == 48 then  -- '0'
      local c2 = byte(s, i + 1)
      if c2 == 120 or c2 == 88 or (c2 and c2 >= 48 and c2 <= 57) then return true end
      return false
    elseif c == nil or c <= 57 then
      return false
    end
    local three = lower(sub(s, i, i + 2))
    return three == "inf" or three == "nan"
  end

  local decode_string_token
  -- returns T_STRING, value, next_pos  or  T_ERROR, message, error_pos
  decode_string_token = function(s, pos)
    local parts, np = {}, 0
    local p = pos + 1
    while true do
      local q = find(s, '["\\]', p)
      if not q then return T_ERROR, "unexpected end of string", #s + 1 end
      if q > p then np = np + 1; parts[np] = sub(s, p, q - 1) end
      if byte(s, q) == 34 then
        return T_STRING, concat(parts, "", 1, np), q + 1
      end
      local e = sub(s, q + 1, q + 1)
      local plain = unescapes[e]
      if plain then
        np = np + 1; parts[np] = plain
        p = q + 2
      elseif e == "u" then
        local hex = match(s, "^[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]", q + 2)
        if not hex then return T_ERROR, "invalid unicode escape code", q end
        local cp = tonumber(hex, 16)
        local len = 6
        if cp >= 0xD800 and cp <= 0xDFFF then
          if cp >= 0xDC00 then return T_ERROR, "invalid unicode escape code", q end
          local low = sub(s, q + 6, q + 7) == "\\u" and match(s, "^[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]", q + 8)
          if not low then return T_ERROR, "invalid unicode escape code", q end
          local lo = tonumber(low, 16)
          if lo < 0xDC00 or lo > 0xDFFF then return T_ERROR, "invalid unicode escape code", q end
          cp = (cp - 0xD800) * 1024 + (lo - 0xDC00) + 0x10000
          len = 12
        end
        local u
        if cp < 0x80 then
          u = char(cp)
        elseif cp < 0x800 then
          u = char(0xC0 + floor(cp / 64), 0x80 + cp % 64)
        elseif cp < 0x10000 then
          u = char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
        else
          u = char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64,
                   0x80 + cp % 64)
        end
        np = np + 1; parts[np] = u
        p = q + len
      else
        return T_ERROR, "invalid escape code", q
      end
    end
  end

  -- returns type, value, token_pos, next_pos
  local function next_token(s, pos)
    pos = match(s, "^[ \t\n\r]*()", pos)
    local c = byte(s, pos)
    if c == nil then return T_END, nil, pos, pos end
    local t = single[c]
    if t then return t, nil, pos, pos + 1 end
    if c == 34 then
      local tt, v, np = decode_string_token(s, pos)
      if tt == T_ERROR then return T_ERROR, v, np, np end
      return tt, v, pos, np
    end
    local numeric = (c == 45 or (c >= 48 and c <= 57))
    local invalid_ok = cfg.decode_invalid ~= 0
    if numeric then
      if not invalid_ok and invalid_number(s, pos) then
        return T_ERROR, "invalid number", pos, pos
      end
    elseif sub(s, pos, pos + 3) == "true" then
      return T_BOOLEAN, true, pos, pos + 4
    elseif sub(s, pos, pos + 4) == "false" then
      return T_BOOLEAN, false, pos, pos + 5
    elseif sub(s, pos, pos + 3) == "null" then
      return T_NULL, null, pos, pos + 4
    elseif not (invalid_ok and (c == 43 or c == 105 or c == 73 or c == 110 or c == 78) and invalid_number(s, pos)) then
      return T_ERROR, "invalid token", pos, pos
    end
    local len = strtod_length(s, pos)
    if len == 0 then return T_ERROR, "invalid number", pos, pos end
    return T_NUMBER, tonumber(sub(s, pos, pos + len - 1)), pos, pos + len
  end

  local function parse_error(expected, tt, v, tpos)
    local found = tt
    if tt == T_ERROR then found = v end
    throw(format("Expected %s but found %s at character %d", expected, found, tpos))
  end

  local parse_value

  local function descend(depth, slots, need, pos)
    if depth > cfg.decode_max_depth or slots + need > MAXCSTACK then
      throw(format("Found too many nested data structures (%d) at character %d", depth, pos - 1))
    end
  end

  local function parse_object(s, pos, depth, slots)
    depth = depth + 1
    descend(depth, slots, 3, pos)
    local obj = {}
    local tt, v, tpos
    tt, v, tpos, pos = next_token(s, pos)
    if tt == T_OBJ_END then return obj, pos end
    while true do
      if tt ~= T_STRING then parse_error("object key string", tt, v, tpos) end
      local key = v
      tt, v, tpos, pos = next_token(s, pos)
      if tt ~= T_COLON then parse_error("colon", tt, v, tpos) end
      tt, v, tpos, pos = next_token(s, pos)
      obj[key], pos = parse_value(s, tt, v, tpos, pos, depth, slots + 2)
      tt, v, tpos, pos = next_token(s, pos)
      if tt == T_OBJ_END then return obj, pos end
      if tt ~= T_COMMA then parse_error("comma or object end", tt, v, tpos) end
      tt, v, tpos, pos = next_token(s, pos)
    end
  end

  local function parse_array(s, pos, depth, slots)
    depth = depth + 1
    descend(depth, slots, 2, pos)
    local arr = {}
    local tt, v, tpos
    tt, v, tpos, pos = next_token(s, pos)
    if tt == T_ARR_END then return arr, pos end
    local i = 1
    while true do
      arr[i], pos = parse_value(s, tt, v, tpos, pos, depth, slots + 1)
      tt, v, tpos, pos = next_token(s, pos)
      if tt == T_ARR_END then return arr, pos end
      if tt ~= T_COMMA then parse_error("comma or array end", tt, v, tpos) end
      tt, v, tpos, pos = next_token(s, pos)
      i = i + 1
    end
  end

  parse_value = function(s, tt, v, tpos, pos, depth, slots)
    if tt == T_STRING or tt == T_NUMBER or tt == T_BOOLEAN or tt == T_NULL then
      return v, pos
    elseif tt == T_OBJ_BEGIN then
      return parse_object(s, pos, depth, slots)
    elseif tt == T_ARR_BEGIN then
      return parse_array(s, pos, depth, slots)
    end
    parse_error("value", tt, v, tpos)
  end

  local function do_decode(s)
    if #s >= 2 and (byte(s, 1) == 0 or byte(s, 2) == 0) then
      throw("JSON parser does not support UTF-16 or UTF-32")
    end
    -- the C parser stops at the first NUL as at the end of the text
    local z = find(s, "\0", 1, true)
    if z then s = sub(s, 1, z - 1) end
    local tt, v, tpos, pos = next_token(s, 1)
    local value
    value, pos = parse_value(s, tt, v, tpos, pos, 0, 1)
    tt, v, tpos = next_token(s, pos)
    if tt ~= T_END then parse_error("the end", tt, v, tpos) end
    return value
  end

  ------------------------------------------------------------ configuration
  -- level 1 below = the public function calling these helpers

  local function arg_init(nargs, maxargs)
    if nargs > maxargs then argerror(2, maxargs + 1, "found too many arguments", nil) end
  end

  local function check_integer(v, narg, name)
    local t = type(v)
    local n = (t == "number" or t == "string") and tonumber(v) or nil
    if n == nil then argerror(3, narg, "number expected, got " .. t, name) end
    return to_int(is_integral_lua(n))
  end

  local function integer_option(v, key, min, max, narg, name)
    if v ~= nil then
      local value = check_integer(v, narg, name)
      if value < min or value > max then
        argerror(2, 1, format("expected integer between %d and %d", min, max), name)
      end
      cfg[key] = value
    end
    return cfg[key]
  end

  local bool_options = { "off", "on" }

  local function enum_option(v, key, options, narg, name)
    local bool_true = 1
    if v ~= nil then
      if type(v) == "boolean" then
        cfg[key] = v and bool_true or 0
      else
        local t = type(v)
        if t ~= "string" and t ~= "number" then
          argerror(2, narg, "string expected, got " .. t, name)
        end
        local sv = tostring(v)
        local found
        for i = 1, #options do
          if options[i] == sv then found = i - 1 break end
        end
        if not found then argerror(2, narg, format("invalid option '%s'", sv), name) end
        cfg[key] = found
      end
    end
    local setting = cfg[key]
    if setting == 0 or setting == bool_true then return setting == bool_true end
    return options[setting + 1]
  end

  local m = {}

  function m.encode(...)
    local nargs = select("#", ...)
    if nargs ~= 1 then argerror(1, 1, "expected 1 argument", "encode") end
    local ok, res = pcall(do_encode, (...))
    if not ok then error(res, 2) end
    return res
  end

  function m.decode(...)
    local nargs = select("#", ...)
    if nargs ~= 1 then argerror(1, 1, "expected 1 argument", "decode") end
    local s = ...
    local t = type(s)
    if t == "number" then
      s = tostring(s)
    elseif t ~= "string" then
      argerror(1, 1, "string expected, got " .. t, "decode")
    end
    local ok, res = pcall(do_decode, s)
    if not ok then error(res, 2) end
    return res
  end

  function m.encode_sparse_array(...)
    local nargs = select("#", ...)
    arg_init(nargs, 3)
    local convert, ratio, safe = ...
    local name = "encode_sparse_array"
    local c = enum_option(convert, "sparse_convert", bool_options, 1, name)
    local r = integer_option(ratio, "sparse_ratio", 0, INT_MAX, 2, name)
    local sf = integer_option(safe, "sparse_safe", 0, INT_MAX, 3, name)
    return c, r, sf
  end

  function m.encode_max_depth(...)
    arg_init(select("#", ...), 1)
    return (integer_option((...), "encode_max_depth", 1, INT_MAX, 1, "encode_max_depth"))
  end

  function m.decode_max_depth(...)
    arg_init(select("#", ...), 1)
    return (integer_option((...), "decode_max_depth", 1, INT_MAX, 1, "decode_max_depth"))
  end

  function m.encode_number_precision(...)
    arg_init(select("#", ...), 1)
    local p = integer_option((...), "precision", 1, 14, 1, "encode_number_precision")
    numfmt = "%." .. p .. "g"
    return p
  end

  function m.encode_keep_buffer(...)
    arg_init(select("#", ...), 1)
    return (enum_option((...), "keep_buffer", bool_options, 1, "encode_keep_buffer"))
  end

  function m.encode_invalid_numbers(...)
    arg_init(select("#", ...), 1)
    return (enum_option((...), "encode_invalid", { "off", "on", "null" }, 1, "encode_invalid_numbers"))
  end

  function m.decode_invalid_numbers(...)
    arg_init(select("#", ...), 1)
    return (enum_option((...), "decode_invalid", bool_options, 1, "decode_invalid_numbers"))
  end

  function m.new()
    return new_module()
  end

  m.null = null
  m._NAME = "cjson"
  m._VERSION = "2.1.0"
  return m
end

return new_module()
"""


def install(lua: Any) -> None:
    """Create the global `cjson` table in the lupa LuaRuntime `lua`."""
    lua.globals()[b"cjson"] = load_library(lua, _SOURCE, CJSON_SOURCE)
