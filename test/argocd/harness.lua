-- Runs an Argo CD health check the way Argo CD does: the script is a chunk with the object in
-- the global `obj`, only the base and table libraries open, and it returns {status, message}.
-- Usage: lua5.4 harness.lua HEALTH_SCRIPT < OBJECT_AS_LUA_TABLE_EXPRESSION
-- Prints "status<TAB>message".
local path = arg[1]
local source = io.read("a")
local object = assert(load("return " .. source, "object", "t", {}))()
local env = {
  obj = object,
  ipairs = ipairs, pairs = pairs, next = next, select = select, type = type,
  tostring = tostring, tonumber = tonumber, error = error, assert = assert, pcall = pcall,
  table = table,
}
local file = assert(io.open(path, "r"))
local script = file:read("a")
file:close()
local chunk = assert(load(script, "=" .. path, "t", env))
local result = chunk()
assert(type(result) == "table", "the health script must return a table")
io.write(tostring(result.status), "\t", tostring(result.message), "\n")
