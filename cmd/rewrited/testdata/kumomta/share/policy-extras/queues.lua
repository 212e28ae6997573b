-- Queue helpers: they build KumoMTA queue configurations, probing for the
-- builder as policy-extras modules do.
local kumo = require 'kumo'

local mod = {}

local defaults = { max_age = '5 days', retry_interval = '20m' }

-- pcall keeps a configuration error from stopping the load; in rewrited the
-- builder is inert and returns a table.
local ok, probe = pcall(kumo.make_queue_config, defaults)
mod.builder_works = ok and type(probe) == 'table'

function mod.config_for(domain)
  return kumo.make_queue_config(defaults)
end

return mod
