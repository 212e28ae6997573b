-- A policy whose helper module memoizes a lookup while it loads and records
-- where an error came from with kumo.traceback.
local kumo = require 'kumo'
local lookups = require 'policy-extras.lookups'

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    return status, lookups.banner('example.net') .. '\n' .. response
  end
  if status >= 500 then
    return status, response .. ' (' .. lookups.where_from() .. ')'
  end
end)
