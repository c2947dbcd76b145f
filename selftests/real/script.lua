-- An allocation-heavy Lua session; deterministic output.
local seed = 42
local function rnd()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed
end

-- tables that grow, shrink and are collected
local words = {}
for _ = 1, 40000 do
  local parts = {}
  for j = 1, 3 + rnd() % 5 do parts[j] = string.char(97 + rnd() % 26) end
  local w = table.concat(parts)
  words[w] = (words[w] or 0) + 1
end
local keys = {}
for k in pairs(words) do keys[#keys + 1] = k end
table.sort(keys, function(a, b)
  if words[a] ~= words[b] then return words[a] > words[b] end
  return a < b
end)
print("distinct", #keys, "top", table.concat(keys, " ", 1, 8))

-- closures and strings built piece by piece
local acc = {}
for i = 1, 20000 do
  local f = function(x) return x .. ":" .. i end
  acc[#acc + 1] = f(string.rep("y", i % 50))
  if i % 3 == 0 then acc[#acc] = nil end
end
local total = 0
for _, s in ipairs(acc) do total = total + #s end
print("strings", #acc, total)

-- a tree of tables, dropped and collected in rounds
local function make(d)
  if d == 0 then return {} end
  return { make(d - 1), make(d - 1) }
end
local function count(t)
  if t[1] then return 1 + count(t[1]) + count(t[2]) end
  return 1
end
local nodes = 0
for _ = 1, 8 do
  nodes = nodes + count(make(12))
  collectgarbage()
end
print("nodes", nodes)

-- string.gsub, string.format and a coroutine producer
local co = coroutine.wrap(function()
  for i = 1, 5000 do coroutine.yield(string.format("%05d-%x", i, i * 7919)) end
end)
local text = {}
for i = 1, 5000 do text[i] = co() end
local joined = table.concat(text, ",")
local replaced, n = joined:gsub("(%d%d)(%d%d%d)", "%2%1")
print("gsub", n, #replaced, replaced:sub(1, 40))
