-- Lookups cached with kumo.memoize, created when the module loads, as
-- KumoMTA's helper modules do.
local kumo = require 'kumo'

local mod = {}

local calls = 0

local function compute_banner(domain)
  calls = calls + 1
  return 'super fantastic! (' .. domain .. ')'
end

mod.banner = kumo.memoize(compute_banner, {
  name = 'site_banner',
  ttl = '5 minutes',
  capacity = 10,
})

-- The frames kumo.traceback reports: a table, as in KumoMTA.
function mod.where_from()
  local frames = kumo.traceback(1)
  return type(frames) == 'table' and 'traced' or 'untraced'
end

return mod
