"""Shared plumbing for the script libraries written in Lua.

Each library is a Lua chunk run once per runtime. It reads no globals: the
functions it needs come in a table passed as its only argument, and its
environment is an empty table, so `getfenv(cjson.encode)` hands a script
nothing of the runtime's real globals.

Redis's libraries are C functions; these are Lua functions. Two things follow
(see the library modules for how each is handled):

* an error is raised with `error(msg, 2)` so that the caller's position
  (`user_script:1: `) is put in front, as `luaL_error` does for a C function;
  argument errors name the function as the caller's call instruction does.
* a message handler that looks at the stack (Redis's `__redis__err__handler`
  reports the frame at level 2, or 3 when level 2 is a C function) finds one of
  these chunks where Redis has the C function; `LIBRARY_SOURCES` lists their
  chunk names so such a handler can step over them.
"""

from __future__ import annotations

from typing import Any

# chunk names (debug.getinfo(f).source) of the library chunks
CJSON_SOURCE = "=[cjson]"
BIT_SOURCE = "=[bit]"
LIBRARY_SOURCES = frozenset({CJSON_SOURCE, BIT_SOURCE})

# The Lua side of luaL_argerror: `argerror(level, narg, extramsg, canonical)`
# raises the message a C function of the caller's frame `level` (1 = the
# function that calls argerror) would raise.  A Lua function that was
# tail-called has lost its name (getinfo says nil where Redis's C function
# still has one); then the canonical name stands in.
_ARGERROR = r"""
local getinfo, error, format = base.getinfo, base.error, base.format
local function argerror(level, narg, extramsg, canonical)
  local ar = getinfo(level + 1, "n")
  local name, namewhat = ar and ar.name, ar and ar.namewhat
  if name == nil then
    local up = getinfo(level + 2, "S")
    if up and up.what == "tail" then name = canonical else name = "?" end
  end
  if namewhat == "method" then
    narg = narg - 1
    if narg == 0 then
      error(format("calling '%s' on bad self (%s)", name, extramsg), level + 2)
    end
  end
  error(format("bad argument #%d to '%s' (%s)", narg, name, extramsg), level + 2)
end
"""

_BASE_NAMES = (
    "error", "pcall", "type", "tonumber", "tostring", "next", "rawget", "rawset", "select",
    "setmetatable", "getmetatable", "newproxy", "setfenv", "loadstring",
)


def load_library(lua: Any, source: str, chunkname: str) -> Any:
    """Run `source` (which sees `base`, the captured standard functions, and
    `argerror`) in an empty environment and return what it returns.

    Names cross into Lua as bytes: a runtime made with `encoding=None` would
    otherwise turn Python str into userdata."""
    g = lua.globals()
    loader = lua.eval(
        "function(src, name) local f, err = loadstring(src, name) if not f then error(err) end "
        "setfenv(f, {}) return f end"
    )
    chunk = loader(("local base = ...\n" + _ARGERROR + source).encode(), chunkname.encode())
    base = lua.table()
    for name in _BASE_NAMES:
        base[name.encode()] = g[name.encode()]
    for lib, names in (
        ("string", ("format", "byte", "char", "sub", "find", "gsub", "match", "lower", "upper", "rep")),
        ("math", ("floor", "huge", "frexp", "fmod")),
        ("table", ("concat",)),
        ("debug", ("getinfo",)),
    ):
        t = g[lib.encode()]
        for name in names:
            base[name.encode()] = t[name.encode()]
    return chunk(base)
