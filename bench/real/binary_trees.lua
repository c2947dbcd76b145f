-- binary-trees (the Benchmarks Game program) in Lua: tables as nodes.
local function make(d)
  if d == 0 then return {} end
  d = d - 1
  return { make(d), make(d) }
end

local function check(t)
  if t[1] then return 1 + check(t[1]) + check(t[2]) end
  return 1
end

local maxd = tonumber(arg and arg[1]) or 14
local mind = 4
if maxd < mind + 2 then maxd = mind + 2 end
io.write("stretch ", check(make(maxd + 1)), "\n")
local long = make(maxd)
for d = mind, maxd, 2 do
  local iters = 1 << (maxd - d + mind)
  local c = 0
  for _ = 1, iters do c = c + check(make(d)) end
  io.write(iters, " trees of depth ", d, " check ", c, "\n")
end
io.write("long lived ", check(long), "\n")
