-- serialize(ok, ...) turns the results of a pcall into one line that Lua 5.4
-- and rewrited print identically when they agree. It leans on as little of
-- the library under test as it can: string.byte, string.format('%.17g') and
-- table.concat.
--
-- Numbers: NaN is "nan" whatever its sign, infinities "inf"/"-inf", any
-- other number "%.17g", so 3 and 3.0 read the same (integer and float
-- subtypes are one type in rewrited). Strings are quoted with every byte
-- outside printable ASCII as \ddd, after losing a "chunk:line:" prefix,
-- which locates the caller of a failing function, not the library's answer.
local byte, format, concat = string.byte, string.format, table.concat

local function quote(s)
  local out = {}
  for i = 1, #s do
    local c = byte(s, i)
    if c < 32 or c > 126 or c == 34 or c == 92 then
      out[#out + 1] = '\\' .. c
    else
      out[#out + 1] = s:sub(i, i)
    end
  end
  return '"' .. concat(out) .. '"'
end

local function stripWhere(msg)
  if type(msg) ~= 'string' then return msg end
  local rest = msg:match('^[%w_%.%-<>%[%]" ]*:%d+: (.*)$')
  return rest or msg
end

local function value(v)
  local t = type(v)
  if t == 'number' then
    if v ~= v then return 'nan' end
    if v == 1 / 0 then return 'inf' end
    if v == -1 / 0 then return '-inf' end
    return format('%.17g', v)
  elseif t == 'string' then
    return quote(stripWhere(v))
  elseif t == 'nil' or t == 'boolean' then
    return tostring(v)
  end
  return t
end

function serialize(ok, ...)
  local n = select('#', ...)
  local args = { ... }
  if not ok then
    return 'error ' .. value(args[1])
  end
  local out = { 'ok ' .. n }
  for i = 1, n do
    out[#out + 1] = value(args[i])
  end
  return concat(out, ' ')
end
