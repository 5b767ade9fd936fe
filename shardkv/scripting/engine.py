"""One worker's Lua 5.1 interpreter (lupa), set up the way Redis 7.0 sets up its own for scripts.

Socket-free: the worker's script runner (router/scripts.py) hands it a `call` function that runs a
command for `redis.call` / `redis.pcall` and returns the raw RESP reply.  The interpreter has:
  * the `redis` table (call, pcall, error_reply, status_reply, sha1hex, log, setresp, set_repl,
    replicate_commands, breakpoint, debug, acl_check_cmd and the constants), Redis's `pcall`,
    `math.random` on Redis's own generator, and the libraries Redis bundles (scripting/libs);
  * Redis's sandbox: scripts run in an environment of their own (no print, io, os, require,
    loadfile, dofile, debug ...); reading an unknown global or writing any global or library
    field is an error;
  * a count hook every 100,000 instructions: SCRIPT KILL, and a shard restart, stop a script there;
  * a heap bounded by lua-heap-bytes-max (lupa's max_memory).
Replies convert both ways as Redis converts them (RESP2 and RESP3, `redis.setresp`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lupa import lua51

from shardkv import protocol
from shardkv.errors import CommandError

ScriptError = lua51.LuaError
REDIS_VERSION = b"7.0.15"
REDIS_VERSION_NUM = 0x07000F
HOOK_INSTRUCTIONS = 100_000
REPLY_DEPTH_MAX = 300  # nesting of a script's reply (Python recursion stays far from its limit)
LOAD_TIME_MAX_S = 0.5  # FUNCTION LOAD's code must finish within this (Redis's limit)
INT64_MIN = -(1 << 63)

LIBRARIES = ("bit", "cjson", "cmsgpack", "struct_lib")

_SETUP = r"""
local py = ...
local error, type, tostring, rawget, rawset, select, unpack, setmetatable, pairs, next =
      error, type, tostring, rawget, rawset, select, unpack, setmetatable, pairs, next
local getinfo, sethook = debug.getinfo, debug.sethook
local lua_pcall = pcall

local function pack(...) return {n = select('#', ...), ...} end
-- Lua 5.1 does not collect when an allocation fails, and the heap is bounded (lua-heap-bytes-max):
-- collect continually instead of when the heap has doubled.
collectgarbage('setpause', 100)
collectgarbage('setstepmul', 400)

local redis = {}
-- Python functions, so C functions to Lua: `return redis.call(...)` is no tail call, and an error
-- keeps the position of the script line that made the call, as in Redis.
redis.call = py.call
redis.pcall = py.pcall
redis.error_reply = function(s)
  if type(s) ~= 'string' then return {err = 'ERR wrong number or type of arguments'} end
  if s:sub(1, 1) == '-' then s = s:sub(2) end
  if not s:find(' ', 1, true) then s = 'ERR ' .. s end
  return {err = s}
end
redis.status_reply = function(s)
  if type(s) ~= 'string' then return {err = 'ERR wrong number or type of arguments'} end
  return {ok = s}
end
redis.sha1hex = function(...)
  if select('#', ...) ~= 1 then error('wrong number of arguments', 0) end
  return py.sha1hex(tostring((...)))
end
redis.log = function(level, ...)
  if select('#', ...) < 1 then error('redis.log() requires two arguments or more.', 0) end
  if type(level) ~= 'number' or level < 0 or level > 3 then error('Invalid debug level.', 0) end
  local parts = {}
  for i = 1, select('#', ...) do parts[i] = tostring((select(i, ...))) end
  py.log(level, table.concat(parts, ' '))
end
redis.setresp = function(...)
  if select('#', ...) ~= 1 then error('redis.setresp() requires one argument.', 0) end
  local v = ...
  if v ~= 2 and v ~= 3 then error('RESP version must be 2 or 3.', 0) end
  py.setresp(v)
end
redis.set_repl = function(...)
  if select('#', ...) ~= 1 then error('redis.set_repl() requires one argument.', 0) end
  local v = ...
  if type(v) ~= 'number' or v < 0 or v > 3 then
    error('Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.', 0)
  end
end
redis.replicate_commands = function() return true end
redis.breakpoint = function() return false end
redis.debug = function() end
redis.acl_check_cmd = function(...)
  if select('#', ...) < 1 then error('Please specify at least one argument for this redis lib call', 0) end
  local ok = py.acl_check(...)
  if ok == nil then error('Invalid command passed to redis.acl_check_cmd()', 0) end
  return ok
end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
redis.REDIS_VERSION = py.version
redis.REDIS_VERSION_NUM = py.version_num

-- Redis's pcall: a caught Redis error gives its text; a kill or a shard restart is not caught.
local user_pcall = function(f, ...)
  local r = pack(lua_pcall(f, ...))
  if not r[1] then
    if py.aborting() then error(r[2], 0) end
    local text = py.error_text(r[2])
    if text then return false, text end
    if type(r[2]) == 'table' and rawget(r[2], 'err') then return false, r[2].err end
  end
  return unpack(r, 1, r.n)
end

math.random = function(...) return py.random(select('#', ...), ...) end
math.randomseed = function(seed) py.randomseed(seed) end

-- The error handler of a script call: the position of the user code that failed.
local function handler(err)
  local level, info = 2, nil
  while true do
    local i = getinfo(level, 'Sl')
    if not i then break end
    if i.source == '@user_script' or i.source == '@user_function' then info = i break end
    level = level + 1
  end
  local text = py.error_text(err)
  if text then err = {err = text}
  elseif type(err) ~= 'table' then err = {err = 'ERR ' .. tostring(err)} end
  if info then
    rawset(err, 'source', info.source)
    rawset(err, 'line', info.currentline)
  end
  return err
end

-- The sandbox: scripts run with an environment of their own, which holds what Redis's scripts
-- see; reading a name it lacks, or writing any name in it or in a library table, is an error.
local guarded = setmetatable({}, {__mode = 'k'})  -- the environment and the read-only library proxies
local function readonly(lib)
  local proxy = setmetatable({}, {
    __index = lib,
    __newindex = function() error('Attempt to modify a readonly table', 2) end,
    __metatable = false,
  })
  guarded[proxy] = true
  return proxy
end
local values = {}  -- what scripts see; `env`, their environment, is an empty proxy of it
local env = {}
local real_loadstring = loadstring
local real_rawset = rawset
for _, name in ipairs({'assert', 'collectgarbage', 'error', 'gcinfo', 'getmetatable', 'ipairs', 'next',
                       'pairs', 'rawequal', 'rawget', 'rawset', 'select', 'setmetatable', 'tonumber',
                       'tostring', 'type', 'unpack', 'xpcall', '_VERSION'}) do
  values[name] = _G[name]
end
for _, name in ipairs({'coroutine', 'math', 'string', 'table', 'bit', 'cjson', 'cmsgpack', 'struct'}) do
  if _G[name] then values[name] = readonly(_G[name]) end
end
values.pcall = user_pcall
values.rawset = function(t, k, v)
  if guarded[t] then error('Attempt to modify a readonly table', 2) end
  return real_rawset(t, k, v)
end
guarded[env] = true
local real_setmetatable, real_getmetatable = setmetatable, getmetatable
values.setmetatable = function(t, mt)
  if guarded[t] then error('Attempt to modify a readonly table', 2) end
  return real_setmetatable(t, mt)
end
local readonly_mt = readonly({})
values.getmetatable = function(t)
  if guarded[t] then return readonly_mt end
  return real_getmetatable(t)
end
values.redis = readonly(redis)
values.loadstring = function(body, name)
  if type(body) == 'string' and body:byte(1) == 27 then return nil, 'binary chunks are not allowed' end
  local f, e = real_loadstring(body, name)
  if f then setfenv(f, env) end
  return f, e
end
values.load = function(fn, name)
  local f, e = load(fn, name)
  if f then setfenv(f, env) end
  return f, e
end
values.__redis__err__handler = handler
values._G = env
-- A read-only view of a table whose missing names are errors, as scripts' globals are.
local function strict(t)
  return {
    __index = function(_, k)
      local v = t[k]
      if v == nil then
        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
      end
      return v
    end,
    __newindex = function() error('Attempt to modify a readonly table', 2) end,
    __metatable = false,
  }
end
setmetatable(env, strict(values))

local function run(f, keys, argv)
  values.KEYS = keys
  values.ARGV = argv
  sethook(function() py.hook() end, '', py.hook_every)
  local r = pack(xpcall(f, handler))
  sethook()
  values.KEYS = nil
  values.ARGV = nil
  return r[1], r[2]
end

local function compile(body, name)
  local f, e = real_loadstring(body, name)
  if f then setfenv(f, env) end
  return f, e
end

-- FUNCTION LOAD: the library's code runs with one global, a `redis` that can register functions
-- (and log); afterwards its functions see what scripts see (less KEYS and ARGV).
local FLAGS = {['no-writes'] = true, ['allow-oom'] = true, ['allow-stale'] = true, ['no-cluster'] = true,
               ['allow-cross-slot-keys'] = true}
local function valid_name(name)
  return type(name) == 'string' and #name > 0 and not name:find('[^%w_]')
end
local function load_library(code)
  local registered, order = {}, {}
  local function register(name, callback, flags, description)
    if type(name) == 'number' then name = tostring(name) end
    if type(description) == 'number' then description = tostring(description) end
    if not valid_name(name) then
      error('Library names can only contain letters, numbers, or underscores(_) and must be at least '
            .. 'one character long', 0)
    end
    if registered[name] then error('Function already exists in the library', 0) end
    local flag_list = {}
    for _, f in ipairs(flags or {}) do
      if not FLAGS[f] then error('unknown flag given', 0) end
      flag_list[#flag_list + 1] = f
    end
    registered[name] = {callback = callback, flags = flag_list, description = description}
    order[#order + 1] = name
  end
  local api = {}
  local loaded = false
  api.register_function = function(...)
    if loaded then error('redis.register_function can only be called on FUNCTION LOAD command', 0) end
    local n = select('#', ...)
    if n == 1 and type((...)) ~= 'table' then
      error('calling redis.register_function with a single argument is only applicable to Lua table '
            .. '(representing named arguments).', 0)
    end
    if n == 1 then
      local t = ...
      local name, callback, flags, description
      for k, v in pairs(t) do
        if type(k) ~= 'string' and type(k) ~= 'number' then
          error('named argument key given to redis.register_function is not a string', 0)
        end
        local key = tostring(k):lower()
        if key == 'function_name' then
          if type(v) ~= 'string' and type(v) ~= 'number' then
            error('function_name argument given to redis.register_function must be a string', 0)
          end
          name = v
        elseif key == 'callback' then callback = v
        elseif key == 'flags' then flags = v
        elseif key == 'description' then
          if type(v) ~= 'string' and type(v) ~= 'number' then
            error('description argument given to redis.register_function must be a string', 0)
          end
          description = v
        else error('unknown argument given to redis.register_function', 0) end
      end
      if name == nil then error('redis.register_function must get a function name argument', 0) end
      if callback == nil then error('redis.register_function must get a callback argument', 0) end
      if type(callback) ~= 'function' then
        error('callback argument given to redis.register_function must be a function', 0)
      end
      if flags ~= nil and type(flags) ~= 'table' then
        error('flags argument to redis.register_function must be a table representing function flags', 0)
      end
      register(name, callback, flags, description)
    elseif n == 2 then
      local name, callback = ...
      if type(name) ~= 'string' and type(name) ~= 'number' then
        error('first argument to redis.register_function must be a string', 0)
      end
      if type(callback) ~= 'function' then
        error('second argument to redis.register_function must be a function', 0)
      end
      register(name, callback, nil, nil)
    else
      error('wrong number of arguments to redis.register_function', 0)
    end
  end
  api.log = redis.log
  api.LOG_DEBUG, api.LOG_VERBOSE, api.LOG_NOTICE, api.LOG_WARNING = 0, 1, 2, 3
  api.REDIS_VERSION, api.REDIS_VERSION_NUM = redis.REDIS_VERSION, redis.REDIS_VERSION_NUM
  local lib_env = {}
  local api_ro = setmetatable({}, strict(api))
  setmetatable(lib_env, {
    __index = function(_, k)
      if not loaded and k == 'redis' then return api_ro end
      if not loaded or k == 'KEYS' or k == 'ARGV' then
        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
      end
      return env[k]  -- once loaded, the library's functions see what scripts see
    end,
    __newindex = function() error('Attempt to modify a readonly table', 2) end,
    __metatable = false,
  })
  local f, e = real_loadstring(code, '@user_function')
  if not f then return false, 'compile', e end
  setfenv(f, lib_env)
  sethook(function() py.load_hook() end, '', py.hook_every)
  local ok, err = xpcall(f, handler)
  sethook()
  if not ok then return false, 'run', err end
  loaded = true
  local out = {}
  for i, name in ipairs(order) do
    local r = registered[name]
    out[i] = {name, r.callback, r.flags, r.description}
  end
  return true, out
end

local function call_function(callback, keys, argv)
  sethook(function() py.hook() end, '', py.hook_every)
  local r = pack(xpcall(function() return callback(keys, argv) end, handler))
  sethook()
  return r[1], r[2]
end

return run, compile, load_library, call_function
"""


@dataclass(frozen=True)
class LuaFunction:
    """A function a library registered."""

    name: str
    callback: Any
    flags: tuple[str, ...]
    description: str | None


@dataclass
class Library:
    name: str
    code: bytes
    functions: list[LuaFunction]


def split_args(line: bytes) -> list[bytes]:
    """Split a line as Redis splits arguments: spaces separate, quotes group (and are removed),
    backslash escapes only inside double quotes."""
    out: list[bytes] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i : i + 1].isspace():
            i += 1
        if i >= n:
            break
        token = bytearray()
        while i < n and not line[i : i + 1].isspace():
            quote = line[i : i + 1]
            if quote in (b'"', b"'"):
                i += 1
                while i < n and line[i : i + 1] != quote:
                    if quote == b'"' and line[i : i + 1] == b"\\" and i + 1 < n:
                        i += 1
                    token += line[i : i + 1]
                    i += 1
                i += 1
            else:
                token += line[i : i + 1]
                i += 1
        out.append(bytes(token))
    return out


def library_name(code: bytes) -> str:
    """The name in a library's metadata line (`#!lua name=<lib>`), with Redis's errors."""
    if not code.startswith(b"#!"):
        raise CommandError("ERR Missing library metadata")
    end = code.find(b"\n")
    tokens = split_args(code if end < 0 else code[:end])
    engine = tokens[0][2:]
    if engine.lower() != b"lua":
        raise CommandError(f"ERR Engine '{engine.decode(errors='replace')}' not found")
    name = None
    for token in tokens[1:]:
        if token.startswith(b"name="):
            if name is not None:
                raise CommandError("ERR Invalid metadata value, name argument was given multiple times")
            name = token[5:].decode(errors="replace")
        else:
            raise CommandError(f"ERR Invalid metadata value given: {token.decode(errors='replace')}")
    if name is None:
        raise CommandError("ERR Library name was not given")
    if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
        raise CommandError("ERR Library names can only contain letters, numbers, or underscores(_) and must be at "
                           "least one character long")
    return name


class RedisCallError(Exception):
    """redis.call's error (a Redis error reply, or a refused call): its text, `CODE message`."""

    def __init__(self, text: bytes) -> None:
        super().__init__(text.decode("utf-8", "surrogateescape"))
        self.text = text


def _error_text(err: Any) -> bytes | None:
    return err.text if isinstance(err, RedisCallError) else None


class Aborted(Exception):
    """The script was stopped from outside (SCRIPT KILL, a shard restart): not catchable."""


class LuaEngine:
    def __init__(self, heap_bytes_max: int, log: Callable[[int, bytes], None]) -> None:
        self.lua = lua51.LuaRuntime(unpack_returned_tuples=True, encoding=None, register_eval=False,
                                    register_builtins=False, max_memory=heap_bytes_max or None)
        self.heap_bytes_max = heap_bytes_max
        self.functions: dict[str, Any] = {}  # sha -> compiled function
        self.resp = 2  # redis.setresp of the running script
        self.caller: Callable[[bool, list[bytes]], tuple[bool, Any]] | None = None
        self.hook: Callable[[], None] = _nothing
        self.aborting: BaseException | None = None
        self.acl_check: Callable[[list[bytes]], bool | None] = lambda argv: True
        self.rand_state = 0x1234ABCD330E
        self.load_deadline = 0.0
        for name in LIBRARIES:
            try:
                module = __import__(f"shardkv.scripting.libs.{name}", fromlist=["install"])
            except ImportError:
                continue
            module.install(self.lua)
        py = self.lua.table_from({
            b"call": self._call_raising, b"pcall": self._call_catching, b"error_text": _error_text,
            b"sha1hex": lambda s: hashlib.sha1(s).hexdigest().encode(),
            b"log": lambda level, text: log(int(level), text), b"setresp": self._setresp,
            b"aborting": lambda: self.aborting is not None, b"random": self._random,
            b"randomseed": self._randomseed, b"hook": self._hook, b"hook_every": HOOK_INSTRUCTIONS,
            b"load_hook": self._load_hook,
            b"acl_check": lambda *argv: self.acl_check([_arg(a) for a in argv]),
            b"version": REDIS_VERSION, b"version_num": REDIS_VERSION_NUM,
        })
        self._run, self._compile, self._load_library, self._call_function = self.lua.execute(_SETUP, py)
        self._rawget = self.lua.eval("rawget")

    # ------------------------------------------------------------------ running

    def compile(self, sha: str, body: bytes, name: bytes = b"@user_script") -> None:
        """Compile a script body once (ScriptError: it does not compile)."""
        if sha in self.functions:
            return
        code = b"--" + body if body.startswith(b"#!") else body  # the shebang stays line 1
        fn, err = self._compile(code, name)
        if fn is None:
            raise ScriptError(f"Error compiling script (new function): {_text(err)}")
        self.functions[sha] = fn

    def flush(self) -> None:
        self.functions.clear()
        self.collect()

    def run(self, sha: str, name: str, keys: list[bytes], args: list[bytes], client_proto: int,
            call: Callable[[bool, list[bytes]], tuple[bool, Any]]) -> bytes:
        """Run a compiled script; returns its reply for a client of protocol client_proto.
        Raises Aborted if it was stopped from outside."""
        return self._invoke(self._run, self.functions[sha], name, keys, args, client_proto, call)

    def _invoke(self, runner: Any, fn: Any, name: str, keys: list[bytes], args: list[bytes], client_proto: int,
                call: Callable[[bool, list[bytes]], tuple[bool, Any]]) -> bytes:
        """Run a script or a function through its Lua runner; its reply, or Redis's error text."""
        self.resp = 2
        self.caller = call
        self.aborting = None
        try:
            ok, value = runner(fn, self.lua.table_from(keys), self.lua.table_from(args))
        except lua51.LuaMemoryError:
            self.collect()
            return protocol.error(f"ERR script used more memory than lua-heap-bytes-max allows "
                                  f"({self.heap_bytes_max} bytes) script: {name}")
        finally:
            self.caller = None
        if self.aborting is not None and not isinstance(self.aborting, RedisCallError):
            raise Aborted() from self.aborting  # a shard restarted: the caller undoes the script
        if not ok:
            return self._error_reply(value, name)
        return self.to_resp(value, client_proto)

    # ------------------------------------------------------------------ function libraries

    def load_library(self, code: bytes) -> list[LuaFunction]:
        """Run a library's code (its metadata line is already checked); returns the functions it
        registered.  ScriptError with Redis's message if it does not compile or register."""
        self.load_deadline = time.monotonic() + LOAD_TIME_MAX_S
        try:
            ok, value, err = (self._load_library(b"--" + code if code.startswith(b"#!") else code) + (None,))[:3]
        except lua51.LuaMemoryError:
            self.collect()
            raise ScriptError("ERR Error registering functions: not enough memory") from None
        if not ok:
            if value == b"compile":
                raise ScriptError(f"ERR Error compiling function: {_text(err)}")
            text = _text(err[b"err"]) if lua51.lua_type(err) == "table" and err[b"err"] is not None else _text(err)
            raise ScriptError(f"ERR Error registering functions: {text}")
        functions = []
        for i in range(1, len(value) + 1):
            item = value[i]
            flags = [_text(item[3][j]) for j in range(1, len(item[3]) + 1)]
            description = item[4]
            functions.append(LuaFunction(_text(item[1]), item[2], tuple(flags),
                                         None if description is None else _text(description)))
        if not functions:
            raise ScriptError("ERR No functions registered")
        return functions

    def call(self, fn: LuaFunction, keys: list[bytes], args: list[bytes], client_proto: int,
             call: Callable[[bool, list[bytes]], tuple[bool, Any]]) -> bytes:
        """FCALL: run a registered function (as `run` runs a script)."""
        return self._invoke(self._call_function, fn.callback, fn.name, keys, args, client_proto, call)

    def _load_hook(self) -> None:
        if time.monotonic() > self.load_deadline:
            raise lua51.LuaError("FUNCTION LOAD timeout")

    def collect(self) -> None:
        """A full garbage collection (after a script hit the heap limit)."""
        limit = self.lua.get_max_memory()
        self.lua.set_max_memory(0)
        try:
            self.lua.execute("collectgarbage()")
        finally:
            self.lua.set_max_memory(limit)

    def _error_reply(self, err: Any, name: str) -> bytes:
        if lua51.lua_type(err) != "table":
            return protocol.error(f"ERR {_text(err)} script: {name}")
        text = _text(err[b"err"]) if err[b"err"] is not None else "ERR unknown error"
        source, line = err[b"source"], err[b"line"]
        if source is not None and line is not None:
            return protocol.error(f"{text} script: {name}, on {_text(source)}:{int(line)}.")
        return protocol.error(f"{text} script: {name}")

    # ------------------------------------------------------------------ helpers Lua calls

    def _call_raising(self, *args: Any) -> Any:
        failed, value = self._call(True, args)
        if failed:
            raise RedisCallError(value)
        return value

    def _call_catching(self, *args: Any) -> Any:
        failed, value = self._call(False, args)
        if failed:
            return self.lua.table_from({b"err": value})
        return value

    def _call(self, raise_errors: bool, args: tuple[Any, ...]) -> tuple[bool, Any]:
        if self.aborting is not None:
            raise self.aborting
        if not args:
            return True, b"ERR Please specify at least one argument for this redis lib call"
        argv = []
        for a in args:
            if isinstance(a, bytes):
                argv.append(a)
            elif isinstance(a, int | float) and not isinstance(a, bool):
                argv.append(_number_arg(a))
            else:
                return True, b"ERR Lua redis lib command arguments must be strings or integers"
        assert self.caller is not None
        failed, reply = self.caller(raise_errors, argv)
        if failed:
            return True, reply
        return False, self.from_resp(reply)

    def _setresp(self, v: Any) -> None:
        self.resp = int(v)

    def _hook(self) -> None:
        self.hook()
        if self.aborting is not None:
            raise self.aborting

    def _random(self, n: int, *bounds: Any) -> Any:
        """math.random on Redis's generator (drand48-style, state kept across scripts)."""
        self.rand_state = (self.rand_state * 0x5DEECE66D + 0xB) & ((1 << 48) - 1)
        r = (self.rand_state >> 17) % 2147483647 / 2147483647
        if n == 0:
            return r
        if n == 1:
            u = int(bounds[0])
            if u < 1:
                raise lua51.LuaError("bad argument #1 to 'random' (interval is empty)")
            return math.floor(r * u) + 1
        lo, hi = int(bounds[0]), int(bounds[1])
        if lo > hi:
            raise lua51.LuaError("bad argument #2 to 'random' (interval is empty)")
        return math.floor(r * (hi - lo + 1)) + lo

    def _randomseed(self, seed: Any) -> None:
        self.rand_state = ((int(seed) & 0xFFFFFFFF) << 16 | 0x330E) & ((1 << 48) - 1)

    # ------------------------------------------------------------------ replies both ways

    def from_resp(self, data: bytes) -> Any:
        value, _ = self._lua_value(data, 0)
        return value

    def _lua_value(self, data: bytes, pos: int) -> tuple[Any, int]:
        kind = data[pos]
        nl = data.index(b"\r\n", pos)
        head = data[pos + 1 : nl]
        pos = nl + 2
        lua = self.lua
        if kind == 43:  # +
            return lua.table_from({b"ok": bytes(head)}), pos
        if kind == 45:  # -
            return lua.table_from({b"err": bytes(head)}), pos
        if kind == 58:  # :
            return int(head), pos
        if kind in (36, 61):  # $ =
            n = int(head)
            if n < 0:
                return False, pos
            raw = bytes(data[pos : pos + n])
            if kind == 61:
                return lua.table_from({b"verbatim_string": lua.table_from({b"format": raw[:3], b"string": raw[4:]})}), \
                    pos + n + 2
            return raw, pos + n + 2
        if kind in (42, 62, 126, 37):  # * > ~ %
            n = int(head)
            if n < 0:
                return False, pos
            t = lua.table()
            if kind == 37:
                inner = lua.table()
                for _ in range(n):
                    k, pos = self._lua_value(data, pos)
                    v, pos = self._lua_value(data, pos)
                    inner[k] = v
                t[b"map"] = inner
                return t, pos
            if kind == 126:
                inner = lua.table()
                for _ in range(n):
                    k, pos = self._lua_value(data, pos)
                    inner[k] = True
                t[b"set"] = inner
                return t, pos
            for i in range(1, n + 1):
                t[i], pos = self._lua_value(data, pos)
            return t, pos
        if kind == 95:  # _
            return None, pos
        if kind == 35:  # #
            return head == b"t", pos
        if kind == 44:  # ,
            return lua.table_from({b"double": float(head)}), pos
        if kind == 40:  # (
            return lua.table_from({b"big_number": bytes(head)}), pos
        raise ValueError(f"unknown RESP type {chr(kind)!r}")

    def to_resp(self, value: Any, proto: int, depth: int = 0) -> bytes:
        """A script's return value as the client's reply (nested past REPLY_DEPTH_MAX: Redis's
        stack-limit error in place of the rest, as for a table that holds itself)."""
        if depth > REPLY_DEPTH_MAX:
            return b"-ERR reached lua stack limit\r\n"
        if value is None:
            return protocol.null(proto)
        if value is True:
            return b"#t\r\n" if self.resp == 3 and proto == 3 else protocol.ONE
        if value is False:
            if self.resp == 3:
                return b"#f\r\n" if proto == 3 else protocol.ZERO
            return protocol.null(proto)
        if isinstance(value, bytes):
            return protocol.bulk(value)
        if isinstance(value, int | float):
            return protocol.integer(_integer(value))
        if lua51.lua_type(value) != "table":
            return protocol.null(proto)
        get = self._rawget  # as Redis reads a reply table: no metamethods
        err = get(value, b"err")
        if isinstance(err, bytes):
            return protocol.error(err.decode("utf-8", "surrogateescape"))
        ok = get(value, b"ok")
        if isinstance(ok, bytes):
            return b"+" + ok.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"
        double = get(value, b"double")
        if isinstance(double, int | float):
            return protocol.double(proto, float(double))
        big = get(value, b"big_number")
        if isinstance(big, bytes):
            return b"(" + big + b"\r\n" if proto == 3 else protocol.bulk(big)
        verbatim = get(value, b"verbatim_string")
        if verbatim is not None and lua51.lua_type(verbatim) == "table":
            fmt, text = get(verbatim, b"format"), get(verbatim, b"string")
            if isinstance(fmt, bytes) and isinstance(text, bytes):
                if proto == 3:
                    return b"=%d\r\n%s:%s\r\n" % (len(text) + 4, fmt[:3], text)
                return protocol.bulk(text)
        mapping = get(value, b"map")
        if mapping is not None and lua51.lua_type(mapping) == "table":
            items = list(mapping.items())
            parts = [self.to_resp(k, proto, depth + 1) + self.to_resp(v, proto, depth + 1) for k, v in items]
            head = b"%%%d\r\n" % len(items) if proto == 3 else b"*%d\r\n" % (2 * len(items))
            return head + b"".join(parts)
        members = get(value, b"set")
        if members is not None and lua51.lua_type(members) == "table":
            keys = [k for k, _ in members.items()]
            head = b"~%d\r\n" % len(keys) if proto == 3 else b"*%d\r\n" % len(keys)
            return head + b"".join(self.to_resp(k, proto, depth + 1) for k in keys)
        out = []
        i = 1
        while True:
            item = get(value, i)
            if item is None:
                break
            out.append(self.to_resp(item, proto, depth + 1))
            i += 1
        return protocol.array_header(len(out)) + b"".join(out)


def _nothing() -> None:
    pass


def _integer(x: int | float) -> int:
    """Lua number -> Redis integer reply: C truncation; NaN, infinities, out of range: LLONG_MIN."""
    if isinstance(x, int):
        return x if INT64_MIN <= x < (1 << 63) else INT64_MIN
    if math.isnan(x) or math.isinf(x) or not -9.2233720368547758e18 <= x < 9.2233720368547758e18:
        return INT64_MIN
    return int(x)


def _number_arg(x: int | float) -> bytes:
    if isinstance(x, int):
        return b"%d" % x
    return (b"%.17g" % x)


def _arg(a: Any) -> bytes:
    return a if isinstance(a, bytes) else _number_arg(a) if isinstance(a, int | float) else str(a).encode()


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return str(v)


def sha1_of(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()


__all__ = ["Aborted", "Library", "LuaEngine", "LuaFunction", "ScriptError", "library_name", "sha1_of"]
