-- Recipe: reword a greylisting reply. Greylisting is normal and the sender's
-- server will retry on its own, but the terse "greylisted" text alarms people
-- who read it in a delay notice. The enhanced status code is kept as it was.
--
-- kumo.regex uses Rust regex syntax (as in KumoMTA); compiling at load time,
-- outside the handler, does it once per pooled state.
local GREYLISTED = kumo.regex.compile([[(?i)grey ?list|gray ?list]])
local ENHANCED_CODE = kumo.regex.compile([[^(4\.\d{1,3}\.\d{1,3}) ]])

local FRIENDLY = 'Greylisted: this is normal for a first message from a new sender.'
  .. ' Your server will retry automatically; no action is needed.'

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if (status ~= 450 and status ~= 451) or not GREYLISTED:is_match(response) then
    return
  end
  local m = ENHANCED_CODE:captures(response)
  if m then
    return nil, m[1] .. ' ' .. FRIENDLY
  end
  return nil, FRIENDLY
end)
