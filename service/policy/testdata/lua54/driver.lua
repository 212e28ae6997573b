-- Runs expressions through the real Lua 5.4 interpreter, one per line, and
-- prints serialize(pcall(expression)) for each: from the file given as the
-- first argument (blank lines and lines starting with '#' print nothing), or
-- from standard input, flushing after every answer.
local dir = arg[0]:match('^(.*)/') or '.'
dofile(dir .. '/serialize.lua')

local function run(line)
  local f, err = load('return ' .. line, '=input')
  if not f then
    return 'syntax ' .. err
  end
  return serialize(pcall(f))
end

if arg[1] then
  for line in io.lines(arg[1]) do
    if line ~= '' and line:sub(1, 1) ~= '#' then
      print(run(line))
    end
  end
else
  for line in io.lines() do
    io.write(run(line), '\n')
    io.flush()
  end
end
