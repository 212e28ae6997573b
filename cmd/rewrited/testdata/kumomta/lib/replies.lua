-- Reply texts of this site.
local kumo = require 'kumo'

local M = {}

function M.queued(response, environment)
  local prefix = 'super fantastic!'
  if environment ~= 'production' then
    prefix = prefix .. ' [' .. environment .. ']'
  end
  return prefix .. '\n' .. response
end

function M.closing(hostname)
  return hostname .. ' closing for maintenance, try again later'
end

-- A site module may read kumo fields that only KumoMTA has, as a feature test.
M.can_resolve = kumo.dns ~= nil

return M
