# ruff: noqa: E501
"""cmsgpack and struct against redis-server 7.0.15.

Each snippet runs in lupa's Lua 5.1 with the libraries installed, inside
SERIALIZE (which pcalls it and prints every result with bytes escaped), and
must print exactly what the same text printed on redis-server 7.0.15; the
expected strings below were produced by gen_lua_libs_msgpack_struct.py
against a real server.  TOP_LEVEL snippets run bare as the script body (so a
``return lib.f(...)`` is a tail call) and compare the error message of the
-ERR reply (without Redis's " script: <sha>, on @user_script:1." suffix).

Known differences (not in the tables):
* a map key that is nil or NaN: Redis raises "table index is nil" with no
  position; here it is prefixed with "user_script:N: ".
* type(cmsgpack.pack) is "userdata" here ("function" in Redis).
* argument errors raised while the script runs inside a coroutine name the
  function by its library field ('pack') even when the call site used an
  alias (Redis: the alias).
"""

from __future__ import annotations

from typing import Any

import pytest
from lupa import lua51

from shardkv.scripting.libs import cmsgpack, struct_lib

SERIALIZE = "local function esc(s)\n  return (string.gsub(s, '.', function(c) local b = string.byte(c); if b < 32 or b > 126 or c == '\"' or c == '\\\\' then return string.format('\\\\x%02x', b) end end))\nend\nlocal ser\nser = function(v, d)\n  local t = type(v)\n  if t == 'string' then return '\"' .. esc(v) .. '\"'\n  elseif t == 'number' then\n    if v ~= v then return 'nan' end\n    return string.format('%.17g', v)\n  elseif t == 'table' then\n    if d > 20 then return '{...}' end\n    local ks = {}\n    for k, val in pairs(v) do ks[#ks + 1] = '[' .. ser(k, d + 1) .. ']=' .. ser(val, d + 1) end\n    table.sort(ks)\n    return '{' .. table.concat(ks, ',') .. '}'\n  else return tostring(v) end\nend\nlocal function ser_all(...)\n  local out = {}\n  for i = 1, select('#', ...) do out[i] = ser((select(i, ...)), 0) end\n  return table.concat(out, ' ')\nend\nreturn ser_all(pcall(function() SNIPPET end))\n"


@pytest.fixture(scope="module")
def lua() -> Any:
    rt = lua51.LuaRuntime(unpack_returned_tuples=True)
    cmsgpack.install(rt)
    struct_lib.install(rt)
    return rt


def run_serialized(lua: Any, snippet: str) -> str:
    load = lua.eval('function(src) local f = assert(loadstring(src, "@user_script")); return f() end')
    return str(load(SERIALIZE.replace("SNIPPET", snippet)))


def run_top_level(lua: Any, snippet: str) -> str:
    run = lua.eval(
        'function(src) local f = assert(loadstring(src, "@user_script")); '
        'local ok, err = pcall(f); if ok then return "(no error)" end; return err end'
    )
    return str(run(snippet))


# BEGIN GENERATED
CASES: list[tuple[str, str]] = [
    ("return cmsgpack.pack(0)", 'true "\\x00"'),
    ("return cmsgpack.pack(1)", 'true "\\x01"'),
    ("return cmsgpack.pack(127)", 'true "\\x7f"'),
    ("return cmsgpack.pack(128)", 'true "\\xcc\\x80"'),
    ("return cmsgpack.pack(255)", 'true "\\xcc\\xff"'),
    ("return cmsgpack.pack(256)", 'true "\\xcd\\x01\\x00"'),
    ("return cmsgpack.pack(65535)", 'true "\\xcd\\xff\\xff"'),
    ("return cmsgpack.pack(65536)", 'true "\\xce\\x00\\x01\\x00\\x00"'),
    ("return cmsgpack.pack(4294967295)", 'true "\\xce\\xff\\xff\\xff\\xff"'),
    ("return cmsgpack.pack(4294967296)", 'true "\\xcf\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(2^53)", 'true "\\xcf\\x00 \\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(2^53+1)", 'true "\\xcf\\x00 \\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(2^62)", 'true "\\xcf@\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(2^63-1024)", 'true "\\xcf\\x7f\\xff\\xff\\xff\\xff\\xff\\xfc\\x00"'),
    ("return cmsgpack.pack(2^63)", 'true "\\xca_\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(2^64)", 'true "\\xca_\\x80\\x00\\x00"'),
    ("return cmsgpack.pack(-1)", 'true "\\xff"'),
    ("return cmsgpack.pack(-31)", 'true "\\xe1"'),
    ("return cmsgpack.pack(-32)", 'true "\\xe0"'),
    ("return cmsgpack.pack(-33)", 'true "\\xd0\\xdf"'),
    ("return cmsgpack.pack(-127)", 'true "\\xd0\\x81"'),
    ("return cmsgpack.pack(-128)", 'true "\\xd0\\x80"'),
    ("return cmsgpack.pack(-129)", 'true "\\xd1\\xff\\x7f"'),
    ("return cmsgpack.pack(-32767)", 'true "\\xd1\\x80\\x01"'),
    ("return cmsgpack.pack(-32768)", 'true "\\xd1\\x80\\x00"'),
    ("return cmsgpack.pack(-32769)", 'true "\\xd2\\xff\\xff\\x7f\\xff"'),
    ("return cmsgpack.pack(-2147483647)", 'true "\\xd2\\x80\\x00\\x00\\x01"'),
    ("return cmsgpack.pack(-2147483648)", 'true "\\xd2\\x80\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(-2147483649)", 'true "\\xd3\\xff\\xff\\xff\\xff\\x7f\\xff\\xff\\xff"'),
    ("return cmsgpack.pack(-2^53)", 'true "\\xd3\\xff\\xe0\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(-2^63)", 'true "\\xd3\\x80\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(-2^63-2048)", 'true "\\xcb\\xc3\\xe0\\x00\\x00\\x00\\x00\\x00\\x01"'),
    ("return cmsgpack.pack(-0)", 'true "\\x00"'),
    ("return cmsgpack.pack(1/0)", 'true "\\xca\\x7f\\x80\\x00\\x00"'),
    ("return cmsgpack.pack(-1/0)", 'true "\\xca\\xff\\x80\\x00\\x00"'),
    ("return cmsgpack.pack(1.5)", 'true "\\xca?\\xc0\\x00\\x00"'),
    ("return cmsgpack.pack(0.1)", 'true "\\xcb?\\xb9\\x99\\x99\\x99\\x99\\x99\\x9a"'),
    ("return cmsgpack.pack(-0.25)", 'true "\\xca\\xbe\\x80\\x00\\x00"'),
    ("return cmsgpack.pack(3.4028234663852886e38)", 'true "\\xca\\x7f\\x7f\\xff\\xff"'),
    ("return cmsgpack.pack(3.4028235677973366e38)", 'true "\\xcbG\\xef\\xff\\xff\\xf0\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(1e39)", 'true "\\xcbH\\x07\\x82\\x87\\xf4\\x9cJ\\x1d"'),
    ("return cmsgpack.pack(1e-45)", 'true "\\xcb6\\x96\\xd6\\x01\\xad7j\\xb9"'),
    ("return cmsgpack.pack(1.401298464324817e-45)", 'true "\\xca\\x00\\x00\\x00\\x01"'),
    ("return cmsgpack.pack(2^-149)", 'true "\\xca\\x00\\x00\\x00\\x01"'),
    ("return cmsgpack.pack(2^-150)", 'true "\\xcb6\\x90\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return cmsgpack.pack(1e300)", 'true "\\xcb~7\\xe4<\\x88\\x00u\\x9c"'),
    ("return cmsgpack.pack(0.5+2^-30)", 'true "\\xcb?\\xe0\\x00\\x00\\x00\\x80\\x00\\x00"'),
    ("return cmsgpack.pack(-1e-300)", 'true "\\xcb\\x81\\xa5n\\x1f\\xc2\\xf8\\xf3Y"'),
    ("return cmsgpack.pack(0/0)", 'true "\\xcb\\xff\\xf8\\x00\\x00\\x00\\x00\\x00\\x00"'),
    (
        "local s = cmsgpack.pack(string.rep('x', 0)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 0))",
        'true 1 "\\xa0" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 1)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 1))",
        'true 2 "\\xa1x" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 31)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 31))",
        'true 32 "\\xbfxxxxx" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 32)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 32))",
        'true 34 "\\xd9 xxxx" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 255)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 255))",
        'true 257 "\\xd9\\xffxxxx" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 256)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 256))",
        'true 259 "\\xda\\x01\\x00xxx" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 65535)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 65535))",
        'true 65538 "\\xda\\xff\\xffxxx" true',
    ),
    (
        "local s = cmsgpack.pack(string.rep('x', 65536)); return #s, s:sub(1, 6), s == cmsgpack.pack(string.rep('x', 65536))",
        'true 65541 "\\xdb\\x00\\x01\\x00\\x00x" true',
    ),
    ("return cmsgpack.pack('\\0\\255\\128abc')", 'true "\\xa6\\x00\\xff\\x80abc"'),
    ("return cmsgpack.pack({})", 'true "\\x90"'),
    ("return cmsgpack.pack({1,2,3,'a',true,false})", 'true "\\x96\\x01\\x02\\x03\\xa1a\\xc3\\xc2"'),
    ("return cmsgpack.pack({[1]=1,[2]=2,[4]=4})", 'true "\\x83\\x01\\x01\\x02\\x02\\x04\\x04"'),
    ("return cmsgpack.pack({[1]=1,[3]=3})", 'true "\\x82\\x01\\x01\\x03\\x03"'),
    ("return cmsgpack.pack({[0]=1})", 'true "\\x81\\x00\\x01"'),
    ("return cmsgpack.pack({[1.5]=1})", 'true "\\x81\\xca?\\xc0\\x00\\x00\\x01"'),
    ("return cmsgpack.pack({[-1]=1})", 'true "\\x81\\xff\\x01"'),
    ("return cmsgpack.pack({[2147483648]=1})", 'true "\\x81\\xce\\x80\\x00\\x00\\x00\\x01"'),
    (
        "return cmsgpack.pack({a=1,b={c={d='e'}},[1]=2})",
        'true "\\x83\\xa1a\\x01\\x01\\x02\\xa1b\\x81\\xa1c\\x81\\xa1d\\xa1e"',
    ),
    (
        "local t = {} for i=1,16 do t[i]=i end return cmsgpack.pack(t)",
        'true "\\xdc\\x00\\x10\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\x09\\x0a\\x0b\\x0c\\x0d\\x0e\\x0f\\x10"',
    ),
    (
        "local t = {} for i=1,65536 do t[i]=i%3 end local s = cmsgpack.pack(t) return #s, s:sub(1,8)",
        'true 65541 "\\xdd\\x00\\x01\\x00\\x00\\x01\\x02\\x00"',
    ),
    (
        "local t = {} for i=1,17 do t['k'..i]=i end local s = cmsgpack.pack(t) return #s, s:sub(1,3)",
        'true 79 "\\xde\\x00\\x11"',
    ),
    (
        "local t = {} local c = t for i=1,20 do c[1] = {} c = c[1] end return cmsgpack.pack(t)",
        'true "\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\xc0"',
    ),
    (
        "local t = {} local c = t for i=1,15 do c[1] = {} c = c[1] end return cmsgpack.pack(t)",
        'true "\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x90"',
    ),
    (
        "local t = {} local c = t for i=1,16 do c[1] = {} c = c[1] end return cmsgpack.pack(t)",
        'true "\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\xc0"',
    ),
    (
        "local t = {} t[1] = t return cmsgpack.pack(t)",
        'true "\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\x91\\xc0"',
    ),
    ("local t = {} t.x = t return #cmsgpack.pack(t)", "true 49"),
    ("return cmsgpack.pack(tostring, nil, true, false)", 'true "\\xc0\\xc0\\xc3\\xc2"'),
    ("return cmsgpack.pack(1, 'a', {2})", 'true "\\x01\\xa1a\\x91\\x02"'),
    ("return cmsgpack.unpack('\\0')", "true 0"),
    ("return cmsgpack.unpack('\\127')", "true 127"),
    ("return cmsgpack.unpack('\\128')", "true {}"),
    ("return cmsgpack.unpack('\\143')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\144')", "true {}"),
    ("return cmsgpack.unpack('\\159')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\160')", 'true ""'),
    ("return cmsgpack.unpack('\\192')", "true nil"),
    ("return cmsgpack.unpack('\\193')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\194')", "true false"),
    ("return cmsgpack.unpack('\\195')", "true true"),
    ("return cmsgpack.unpack('\\196\\1a')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\197\\0\\1a')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\198\\0\\0\\0\\1a')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\199\\1\\1a')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\200\\0\\1\\1a')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\201\\0\\0\\0\\1\\1a')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\202\\63\\192\\0\\0')", "true 1.5"),
    ("return cmsgpack.unpack('\\202\\127\\128\\0\\0')", "true inf"),
    ("return cmsgpack.unpack('\\202\\255\\192\\0\\0')", "true nan"),
    ("return cmsgpack.unpack('\\203\\63\\185\\153\\153\\153\\153\\153\\154')", "true 0.10000000000000001"),
    ("return cmsgpack.unpack('\\203\\255\\240\\0\\0\\0\\0\\0\\0')", "true -inf"),
    ("return cmsgpack.unpack('\\204\\255')", "true 255"),
    ("return cmsgpack.unpack('\\205\\255\\255')", "true 65535"),
    ("return cmsgpack.unpack('\\206\\255\\255\\255\\255')", "true 4294967295"),
    ("return cmsgpack.unpack('\\207\\255\\255\\255\\255\\255\\255\\255\\255')", "true -1"),
    ("return cmsgpack.unpack('\\207\\127\\255\\255\\255\\255\\255\\255\\255')", "true 9.2233720368547758e+18"),
    ("return cmsgpack.unpack('\\207\\128\\0\\0\\0\\0\\0\\0\\1')", "true -9.2233720368547758e+18"),
    ("return cmsgpack.unpack('\\208\\128')", "true -128"),
    ("return cmsgpack.unpack('\\208\\127')", "true 127"),
    ("return cmsgpack.unpack('\\209\\128\\0')", "true -32768"),
    ("return cmsgpack.unpack('\\209\\255\\255')", "true -1"),
    ("return cmsgpack.unpack('\\210\\128\\0\\0\\0')", "true -2147483648"),
    ("return cmsgpack.unpack('\\211\\128\\0\\0\\0\\0\\0\\0\\0')", "true -9.2233720368547758e+18"),
    ("return cmsgpack.unpack('\\211\\255\\255\\255\\255\\255\\255\\255\\254')", "true -2"),
    ("return cmsgpack.unpack('\\211\\0\\32\\0\\0\\0\\0\\0\\1')", "true 9007199254740992"),
    ("return cmsgpack.unpack('\\212\\1\\1')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\213\\1\\1\\1')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\214\\1\\1\\1\\1\\1')", 'false "user_script:24: Bad data format in input."'),
    ("return cmsgpack.unpack('\\215\\1\\1\\1\\1\\1\\1\\1\\1\\1')", 'false "user_script:24: Bad data format in input."'),
    (
        "return cmsgpack.unpack('\\216\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1')",
        'false "user_script:24: Bad data format in input."',
    ),
    ("return cmsgpack.unpack('\\217\\3abc')", 'true "abc"'),
    ("return cmsgpack.unpack('\\217\\4abc')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\218\\0\\3abc')", 'true "abc"'),
    ("return cmsgpack.unpack('\\219\\0\\0\\0\\3abc')", 'true "abc"'),
    ("return cmsgpack.unpack('\\219\\0\\0\\0\\4abc')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\220\\0\\2\\1\\2')", "true {[1]=1,[2]=2}"),
    ("return cmsgpack.unpack('\\221\\0\\0\\0\\2\\1\\2')", "true {[1]=1,[2]=2}"),
    ("return cmsgpack.unpack('\\222\\0\\1\\161a\\1')", 'true {["a"]=1}'),
    ("return cmsgpack.unpack('\\223\\0\\0\\0\\1\\161a\\1')", 'true {["a"]=1}'),
    ("return cmsgpack.unpack('\\223\\0\\0\\0\\2\\161a\\1')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\224')", "true -32"),
    ("return cmsgpack.unpack('\\255')", "true -1"),
    ("return cmsgpack.unpack('\\191')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\146\\1')", 'false "user_script:24: Missing bytes in input."'),
    ("return cmsgpack.unpack('\\146\\1\\192')", "true {[1]=1}"),
    ("return cmsgpack.unpack('\\147\\192\\2\\192')", "true {[2]=2}"),
    ("return cmsgpack.unpack('\\130\\1\\2\\1\\3')", "true {[1]=3}"),
    ("return cmsgpack.unpack('\\1\\2\\3')", "true 1 2 3"),
    ("return cmsgpack.unpack('')", "true"),
    ("return cmsgpack.unpack('\\145\\145\\145\\1')", "true {[1]={[1]={[1]=1}}}"),
    ("return cmsgpack.unpack('\\202\\0\\0\\0\\1')", "true 1.4012984643248171e-45"),
    ("return cmsgpack.unpack('\\202\\127\\161\\0\\0')", "true nan"),
    ("return cmsgpack.unpack_one('\\1\\2\\3')", "true 1 1"),
    ("return cmsgpack.unpack_one('\\1\\2\\3', 2)", "true -1 3"),
    ("return cmsgpack.unpack_one('\\1\\2\\3', 3)", "true -1"),
    (
        "return cmsgpack.unpack_one('\\1\\2\\3', 4)",
        'false "user_script:24: Start offset 4 greater than input length 3."',
    ),
    ("return cmsgpack.unpack_one('')", "true -1"),
    (
        "return cmsgpack.unpack_one('\\1\\2\\3', -1)",
        'false "user_script:24: Invalid request to unpack with offset of -1 and limit of 3."',
    ),
    ("return cmsgpack.unpack_one('\\1\\2\\3', 1.9)", "true 2 2"),
    ("return cmsgpack.unpack_limit('\\1\\2\\3', 2)", "true 2 1 2"),
    ("return cmsgpack.unpack_limit('\\1\\2\\3', 2, 1)", "true -1 2 3"),
    ("return cmsgpack.unpack_limit('\\1\\2\\3', 0)", "true 1 2 3"),
    ("return cmsgpack.unpack_limit('\\1\\2\\3', 0, 1)", "true 1"),
    ("return cmsgpack.unpack_limit('\\1\\2\\3', 5)", "true -1 1 2 3"),
    (
        "return cmsgpack.unpack_limit('\\1\\2\\3')",
        "false \"user_script:24: bad argument #2 to 'unpack_limit' (number expected, got no value)\"",
    ),
    ("return cmsgpack.unpack_limit('\\1\\2\\3', '2', '1')", "true -1 2 3"),
    (
        "return cmsgpack.unpack_one()",
        "false \"user_script:24: bad argument #1 to 'unpack_one' (string expected, got no value)\"",
    ),
    ("return cmsgpack.unpack(123)", "true 49 50 51"),
    (
        "return cmsgpack.unpack(cmsgpack.pack(1, 'two', {3}, {four=4}, 5.5, true))",
        'true 1 "two" {[1]=3} {["four"]=4} 5.5 true',
    ),
    (
        "local t = {} for i = 1, 7999 do t[i] = 1 end local s = cmsgpack.pack(unpack(t, 1, 3999)) .. cmsgpack.pack(unpack(t, 1, 4000)) return select('#', cmsgpack.unpack(s))",
        "true 7999",
    ),
    (
        "local t = {} for i = 1, 7999 do t[i] = 1 end local s = cmsgpack.pack(unpack(t, 1, 4000)) .. cmsgpack.pack(unpack(t, 1, 4000)) return select('#', cmsgpack.unpack(s))",
        'false "user_script:24: stack overflow (too many return values at once; use unpack_one or unpack_limit instead.)"',
    ),
    (
        "local t = {} for i = 1, 4001 do t[i] = 1 end return #cmsgpack.pack(unpack(t))",
        "false \"user_script:24: bad argument #0 to 'pack' (Too many arguments for MessagePack pack.)\"",
    ),
    ("local t = {} for i = 1, 4000 do t[i] = 1 end return #cmsgpack.pack(unpack(t))", "true 4000"),
    ("return select('#', cmsgpack.unpack_limit(string.rep('\\1', 8000), 7998))", "true 7999"),
    (
        "return select('#', cmsgpack.unpack_limit(string.rep('\\1', 8000), 7999))",
        'false "user_script:24: stack overflow (in function mp_unpack_full)"',
    ),
    ("return #cmsgpack.unpack(string.rep('\\145', 3990) .. '\\1')", "true 1"),
    (
        "return cmsgpack.unpack(string.rep('\\145', 4000) .. '\\1')",
        'false "user_script:24: stack overflow (in function mp_decode_to_lua_array)"',
    ),
    (
        "return cmsgpack._NAME, cmsgpack._VERSION, cmsgpack._COPYRIGHT, cmsgpack._DESCRIPTION",
        'true "cmsgpack" "lua-cmsgpack 0.4.0" "Copyright (C) 2012, Salvatore Sanfilippo" "MessagePack C implementation for Lua"',
    ),
    ("return struct.pack('>i', 1)", 'true "\\x00\\x00\\x00\\x01"'),
    ("return struct.pack('<i', -2)", 'true "\\xfe\\xff\\xff\\xff"'),
    ("return struct.pack('b', -1)", 'true "\\xff"'),
    ("return struct.pack('B', 255)", 'true "\\xff"'),
    ("return struct.pack('B', 256)", 'true "\\x00"'),
    ("return struct.pack('>h', -2)", 'true "\\xff\\xfe"'),
    ("return struct.pack('<H', 65535)", 'true "\\xff\\xff"'),
    ("return struct.pack('>l', -3)", 'true "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfd"'),
    ("return struct.pack('<L', 2^53)", 'true "\\x00\\x00\\x00\\x00\\x00\\x00 \\x00"'),
    ("return struct.pack('T', 7)", 'true "\\x07\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return struct.pack('>i3', -2)", 'true "\\xff\\xff\\xfe"'),
    ("return struct.pack('<I3', 2^24+5)", 'true "\\x05\\x00\\x00"'),
    ("return struct.pack('>i8', -2^63)", 'true "\\x80\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return struct.pack('>I8', 2^64-2048)", 'true "\\xff\\xff\\xff\\xff\\xff\\xff\\xf8\\x00"'),
    (
        "return struct.pack('<i16', -1)",
        'true "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"',
    ),
    (
        "return struct.pack('>I16', 2^40)",
        'true "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00"',
    ),
    ("return struct.pack('>i0', 5)", 'true ""'),
    ("return struct.pack('<I1', -1)", 'true "\\xff"'),
    ("return struct.pack('>I4', 3.9)", 'true "\\x00\\x00\\x00\\x03"'),
    ("return struct.pack('>i4', -3.9)", 'true "\\xff\\xff\\xff\\xfd"'),
    ("return struct.pack('>I8', 0/0)", 'true "\\x80\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return struct.pack('>I8', 2^64)", 'true "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return struct.pack('>i8', -2^64)", 'true "\\x80\\x00\\x00\\x00\\x00\\x00\\x00\\x00"'),
    ("return struct.pack('>f', 1.5)", 'true "?\\xc0\\x00\\x00"'),
    ("return struct.pack('<f', 0.1)", 'true "\\xcd\\xcc\\xcc="'),
    ("return struct.pack('>f', 1e39)", 'true "\\x7f\\x80\\x00\\x00"'),
    ("return struct.pack('>f', -1e39)", 'true "\\xff\\x80\\x00\\x00"'),
    ("return struct.pack('>d', 0.1)", 'true "?\\xb9\\x99\\x99\\x99\\x99\\x99\\x9a"'),
    ("return struct.pack('<d', -0)", 'true "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x80"'),
    ("return struct.pack('!4 b i', 1, 2)", 'true "\\x01\\x00\\x00\\x00\\x02\\x00\\x00\\x00"'),
    ("return struct.pack('!2 b i', 1, 2)", 'true "\\x01\\x00\\x02\\x00\\x00\\x00"'),
    (
        "return struct.pack('! b d', 1, 2)",
        'true "\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00@"',
    ),
    (
        "return struct.pack('!8 b h b i b d', 1, 2, 3, 4, 5, 6)",
        'true "\\x01\\x00\\x02\\x00\\x03\\x00\\x00\\x00\\x04\\x00\\x00\\x00\\x05\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x18@"',
    ),
    ("return struct.pack('!4 b i3', 1,2)", 'true "\\x01\\x00\\x00\\x02\\x00\\x00"'),
    (
        "return struct.pack('!16 b i16', 1,2)",
        'true "\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"',
    ),
    ("return struct.pack('!4 b c3 i', 1,'abc',2)", 'true "\\x01abc\\x02\\x00\\x00\\x00"'),
    ("return struct.pack('b x x h', 1, 2)", 'true "\\x01\\x00\\x00\\x02\\x00"'),
    ("return struct.pack('>!4 b I', 1, 2)", 'true "\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x02"'),
    ("return struct.pack('s', 'hello')", 'true "hello\\x00"'),
    ("return struct.pack('c', 'hello')", 'true "h"'),
    ("return struct.pack('c0', 'hello')", 'true "hello"'),
    ("return struct.pack('c3', 'hello')", 'true "hel"'),
    ("return struct.pack('c10', 'hello')", "false \"user_script:24: bad argument #3 to 'pack' (string too short)\""),
    ("return struct.pack('bs', 1,'\\0x')", 'true "\\x01\\x00x\\x00"'),
    ("return struct.pack('i', '12')", 'true "\\x0c\\x00\\x00\\x00"'),
    ("return struct.pack('i', '0x10')", 'true "\\x10\\x00\\x00\\x00"'),
    (
        "return struct.pack('i', 'abc')",
        "false \"user_script:24: bad argument #2 to 'pack' (number expected, got string)\"",
    ),
    ("return struct.pack('i', {})", "false \"user_script:24: bad argument #2 to 'pack' (number expected, got table)\""),
    ("return struct.pack('i')", "false \"user_script:24: bad argument #2 to 'pack' (number expected, got nil)\""),
    ("return struct.pack('ii', 1)", "false \"user_script:24: bad argument #3 to 'pack' (number expected, got nil)\""),
    ("return struct.pack('y', 1)", "false \"user_script:24: bad argument #1 to 'pack' (invalid format option 'y')\""),
    ("return struct.pack('=', 1)", "false \"user_script:24: bad argument #1 to 'pack' (invalid format option '=')\""),
    ("return struct.pack('i33', 1)", 'false "user_script:24: integral size 33 is larger than limit of 32"'),
    (
        "return struct.pack('i32', -1)",
        'true "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"',
    ),
    ("return struct.pack('!3')", 'false "user_script:24: alignment 3 is not a power of 2"'),
    ("return struct.pack('!0')", 'false "user_script:24: alignment 0 is not a power of 2"'),
    ("return struct.pack('i99999999999', 1)", 'false "user_script:24: integral size overflow"'),
    ("return struct.pack('c', 12)", 'true "1"'),
    ("return struct.pack('i\\0y', 1)", 'true "\\x01\\x00\\x00\\x00"'),
    ("return struct.pack('<>b', 1)", 'true "\\x01"'),
    ("return struct.pack(' ')", 'true ""'),
    ("return struct.pack('!')", 'true ""'),
    ("return struct.pack()", "false \"user_script:24: bad argument #1 to 'pack' (string expected, got no value)\""),
    ("return struct.pack(12)", "false \"user_script:24: bad argument #1 to 'pack' (invalid format option '1')\""),
    ("return struct.unpack('>i', '\\0\\0\\1\\0')", "true 256 5"),
    ("return struct.unpack('<i', '\\255\\255\\255\\255')", "true -1 5"),
    ("return struct.unpack('<I', '\\255\\255\\255\\255')", "true 4294967295 5"),
    ("return struct.unpack('b', '\\200')", "true -56 2"),
    ("return struct.unpack('B', '\\200')", "true 200 2"),
    ("return struct.unpack('>h', '\\128\\0')", "true -32768 3"),
    ("return struct.unpack('<H', '\\1\\2')", "true 513 3"),
    ("return struct.unpack('>l', '\\255\\255\\255\\255\\255\\255\\255\\255')", "true -1 9"),
    ("return struct.unpack('>L', '\\255\\255\\255\\255\\255\\255\\255\\255')", "true 1.8446744073709552e+19 9"),
    ("return struct.unpack('>T', '\\0\\0\\0\\0\\0\\0\\1\\0')", "true 256 9"),
    ("return struct.unpack('<i9', string.rep('\\255', 9))", "true -1 10"),
    ("return struct.unpack('<i9', '\\128' .. string.rep('\\0', 8))", "true -128 10"),
    ("return struct.unpack('<i12', '\\0\\0\\0\\128' .. string.rep('\\0', 8))", "true -2147483648 13"),
    ("return struct.unpack('>i12', '\\0\\0\\0\\128' .. string.rep('\\0', 8))", "true 0 13"),
    ("return struct.unpack('>I16', string.rep('\\1', 16))", "true 72340172838076672 17"),
    ("return struct.unpack('<i3', '\\255\\255\\127')", "true 8388607 4"),
    ("return struct.unpack('<i3', '\\0\\0\\128')", "true -8388608 4"),
    ("return struct.unpack('>i0', 'abc')", "true 0 1"),
    ("return struct.unpack('>i8', '\\128\\0\\0\\0\\0\\0\\0\\1')", "true -9.2233720368547758e+18 9"),
    ("return struct.unpack('>f', '\\63\\192\\0\\0')", "true 1.5 5"),
    ("return struct.unpack('<f', '\\0\\0\\192\\127')", "true nan 5"),
    ("return struct.unpack('>d', '\\63\\185\\153\\153\\153\\153\\153\\154')", "true 0.10000000000000001 9"),
    ("return struct.unpack('<d', '\\154\\153\\153\\153\\153\\153\\185\\63')", "true 0.10000000000000001 9"),
    ("return struct.unpack('!4 b i', '\\1\\0\\0\\0\\2\\0\\0\\0')", "true 1 2 9"),
    ("return struct.unpack('b i', '\\1\\2\\0\\0\\0')", "true 1 2 6"),
    ("return struct.unpack('!8 b d', string.rep('\\0', 16))", "true 0 0 17"),
    ("return struct.unpack('s', 'ab\\0cd')", 'true "ab" 4'),
    ("return struct.unpack('s s', 'ab\\0cd\\0')", 'true "ab" "cd" 7'),
    ("return struct.unpack('s', 'abc')", 'false "user_script:24: unfinished string in data"'),
    ("return struct.unpack('c2', 'abc')", 'true "ab" 3'),
    ("return struct.unpack('c0', 'abc')", "false \"user_script:24: format 'c0' needs a previous size\""),
    ("return struct.unpack('b c0', '\\2abc')", 'true "ab" 4'),
    ("return struct.unpack('c1 c0', '3abcd')", 'true "abc" 5'),
    ("return struct.unpack('c1 c0', 'xabcd')", "false \"user_script:24: format 'c0' needs a previous size\""),
    (
        "return struct.unpack('b c0', '\\9abc')",
        "false \"user_script:24: bad argument #2 to 'unpack' (data string too short)\"",
    ),
    (
        "return struct.unpack('i', 'ab')",
        "false \"user_script:24: bad argument #2 to 'unpack' (data string too short)\"",
    ),
    ("return struct.unpack('b', 'abc', 2)", "true 98 3"),
    ("return struct.unpack('b', 'abc', 3)", "true 99 4"),
    (
        "return struct.unpack('b', 'abc', 4)",
        "false \"user_script:24: bad argument #2 to 'unpack' (data string too short)\"",
    ),
    (
        "return struct.unpack('b', 'abc', 0)",
        "false \"user_script:24: bad argument #3 to 'unpack' (offset must be 1 or greater)\"",
    ),
    (
        "return struct.unpack('b', 'abc', -1)",
        "false \"user_script:24: bad argument #2 to 'unpack' (data string too short)\"",
    ),
    ("return struct.unpack('', 'abc', -5)", "true -5"),
    ("return struct.unpack('', 'abc', 10)", "true 10"),
    ("return struct.unpack('x b', 'abc')", "true 98 3"),
    (
        "return struct.unpack('y', 'abc')",
        "false \"user_script:24: bad argument #1 to 'unpack' (invalid format option 'y')\"",
    ),
    ("return struct.unpack('>b<b', 'ab')", "true 97 98 3"),
    ("return struct.unpack('bb', 'ab', 1.5)", "true 97 98 3"),
    (
        "return struct.unpack('b', nil)",
        "false \"user_script:24: bad argument #2 to 'unpack' (string expected, got nil)\"",
    ),
    ("return struct.unpack('b', 123)", "true 49 2"),
    ("return struct.unpack()", "false \"user_script:24: bad argument #1 to 'unpack' (string expected, got no value)\""),
    ("local s = string.rep('b', 8000) return select('#', pcall(struct.unpack, s, string.rep('\\1', 8000)))", "true 2"),
    ("return select('#', struct.unpack(string.rep('b', 7990), string.rep('\\1', 8000)))", "true 7991"),
    ("return struct.size('b')", "true 1"),
    ("return struct.size('i')", "true 4"),
    ("return struct.size('i7')", "true 7"),
    ("return struct.size('!4 b i')", "true 8"),
    ("return struct.size('!b d')", "true 16"),
    ("return struct.size('! b d')", "true 16"),
    ("return struct.size('>!2 b h b')", "true 5"),
    ("return struct.size('c10')", "true 10"),
    ("return struct.size('c0')", "false \"user_script:24: bad argument #1 to 'size' (option 'c0' has no fixed size)\""),
    ("return struct.size('s')", "false \"user_script:24: bad argument #1 to 'size' (option 's' has no fixed size)\""),
    ("return struct.size('y')", "true 0"),
    ("return struct.size('=')", "false \"user_script:24: bad argument #1 to 'size' (invalid format option '=')\""),
    ("return struct.size('bxy')", "true 2"),
    ("return struct.size('i40')", 'false "user_script:24: integral size 40 is larger than limit of 32"'),
    ("return struct.size('!3')", 'false "user_script:24: alignment 3 is not a power of 2"'),
    ("return struct.size('d3b')", "true 9"),
    ("return struct.size(12)", "true 0"),
    ("return struct.size()", "false \"user_script:24: bad argument #1 to 'size' (string expected, got no value)\""),
    ("return struct.unpack('>I8', struct.pack('>I8', 2^53 + 2))", "true 9007199254740994 9"),
    ("return struct.unpack('<i8', struct.pack('<i8', -2^53 - 2))", "true -9007199254740994 9"),
    ("return cmsgpack.unpack(struct.pack('>B I4', 0xce, 123456))", "true 123456"),
    ("return pcall(struct.pack, 'y')", "true false \"bad argument #1 to '?' (invalid format option 'y')\""),
    (
        "local pk = struct.pack return pk('y')",
        "false \"user_script:24: bad argument #1 to 'pk' (invalid format option 'y')\"",
    ),
    ("return struct:pack('i')", "false \"user_script:24: calling 'pack' on bad self (string expected, got table)\""),
    (
        "return struct:unpack('i')",
        "false \"user_script:24: calling 'unpack' on bad self (string expected, got table)\"",
    ),
    ("return struct.pack('<d', -0)", 'true "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x80"'),
    ("return struct.pack('>f', -0)", 'true "\\x80\\x00\\x00\\x00"'),
    ("return struct.unpack('<d', struct.pack('<d', -0))", "true -0 9"),
    ("return 1/struct.unpack('<d', struct.pack('<d', -0))", "true -inf"),
    ("return cmsgpack.unpack(string.rep('\\145', 3997) .. '\\1') ~= nil", "true true"),
    ("return cmsgpack.unpack(string.rep('\\145', 3998) .. '\\1') ~= nil", "true true"),
    ("return cmsgpack.unpack(string.rep('\\145', 3999) .. '\\1') ~= nil", "true true"),
    ("return cmsgpack.unpack(string.rep('\\129\\1', 3998) .. '\\1') ~= nil", "true true"),
    ("return cmsgpack.unpack(string.rep('\\129\\1', 3999) .. '\\1') ~= nil", "true true"),
    (
        "return cmsgpack.unpack(string.rep('\\129\\1', 7997) .. '\\1') ~= nil",
        'false "user_script:24: stack overflow (too many return values at once; use unpack_one or unpack_limit instead.)"',
    ),
    ("return cmsgpack.unpack('\\1\\2', 3, 4, 5)", "true 1 2"),
    (
        "local t = {} for i = 1, 7998 do t[i] = 1 end local s = cmsgpack.pack(unpack(t, 1, 3999)) .. cmsgpack.pack(unpack(t, 1, 3999)) return select('#', cmsgpack.unpack(s, 1))",
        "true 7998",
    ),
    (
        "return cmsgpack.pack(-0.0), cmsgpack.pack(2^63), cmsgpack.pack(-2^63)",
        'true "\\x00" "\\xca_\\x00\\x00\\x00" "\\xd3\\x80\\x00\\x00\\x00\\x00\\x00\\x00\\x00"',
    ),
]

TOP_LEVEL: list[tuple[str, str]] = [
    ("return struct.pack('y', 1)", "user_script:1: bad argument #1 to 'pack' (invalid format option 'y')"),
    ("return struct.pack('i40', 1)", "user_script:1: integral size 40 is larger than limit of 32"),
    ("return struct.unpack('i', 'ab')", "user_script:1: bad argument #2 to 'unpack' (data string too short)"),
    ("return struct.unpack('c0', 'ab')", "user_script:1: format 'c0' needs a previous size"),
    ("return struct.size('s')", "user_script:1: bad argument #1 to 'size' (option 's' has no fixed size)"),
    ("return struct.pack('c5', 'ab')", "user_script:1: bad argument #3 to 'pack' (string too short)"),
    ("return cmsgpack.pack()", "user_script:1: bad argument #0 to 'pack' (MessagePack pack needs input.)"),
    ("return cmsgpack.unpack('\\205')", "user_script:1: Missing bytes in input."),
    ("return cmsgpack.unpack('\\193')", "user_script:1: Bad data format in input."),
    ("return cmsgpack.unpack_one('a', 5)", "user_script:1: Start offset 5 greater than input length 1."),
    (
        "return cmsgpack.unpack_limit('a', 'x')",
        "user_script:1: bad argument #2 to 'unpack_limit' (number expected, got string)",
    ),
    ("local x = cmsgpack.unpack('\\146\\1')\nreturn x", "user_script:1: Missing bytes in input."),
    ("local s = struct\nreturn s.unpack('!3', '')", "user_script:2: alignment 3 is not a power of 2"),
]
# END GENERATED


@pytest.mark.parametrize(("snippet", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_snippet_matches_redis(lua: Any, snippet: str, expected: str) -> None:
    assert run_serialized(lua, snippet) == expected


@pytest.mark.parametrize(("snippet", "expected"), TOP_LEVEL, ids=[str(i) for i in range(len(TOP_LEVEL))])
def test_top_level_error_matches_redis(lua: Any, snippet: str, expected: str) -> None:
    assert run_top_level(lua, snippet) == expected


def test_functions_survive_errors(lua: Any) -> None:
    # after an error the library function is still usable (its coroutine is replaced)
    for _ in range(3):
        assert run_top_level(lua, "return struct.pack('y')").startswith("user_script:1: bad argument")
        assert run_serialized(lua, "return struct.pack('>h', 258)") == 'true "\\x01\\x02"'


def test_install_is_per_runtime() -> None:
    rt = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert rt.eval("cmsgpack") is None
    cmsgpack.install(rt)
    struct_lib.install(rt)
    assert rt.eval("cmsgpack._VERSION") == "lua-cmsgpack 0.4.0"
    assert rt.eval("struct.size('!4 b i')") == 8


def test_known_differences(lua: Any) -> None:
    # Redis: "table index is nil" / "table index is NaN" without a position
    # (raised inside the C function); here the wrapper adds the caller's.
    assert run_top_level(lua, "return cmsgpack.unpack('\\129\\192\\1')") == "user_script:1: table index is nil"
    # Redis: "function"; the library functions are callable userdata here.
    assert run_serialized(lua, "return type(cmsgpack.pack)") == 'true "userdata"'
    assert run_serialized(
        lua,
        "local co = coroutine.create(function() local p = struct.pack; return p('y') end) return coroutine.resume(co)",
    ) == ("true false \"user_script:24: bad argument #1 to 'pack' (invalid format option 'y')\"")
    assert run_serialized(lua, "return pcall(cmsgpack.pack, 1)") == 'true true "\\x01"'
