-- A helper module in the layout of KumoMTA's policy-extras.
--[==]-- a short comment, though it starts like a long bracket
local mod = {}

function mod.is_data_success(status, command)
  return command == 'DATA' and status >= 200 and status < 300
end

-- Configuration helpers that only make sense in KumoMTA are defined, and
-- never called here.
function mod.merge(a, b)
  local out = {}
  for k, v in pairs(a) do out[k] = v end
  for k, v in pairs(b) do out[k] = v end
  return out
end

return mod
