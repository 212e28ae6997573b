-- Recipe: add a support URL to every permanent failure (5xx), so a sender
-- who reads the bounce knows where to ask for help.
--
-- RFC 3463 enhanced status codes (5.7.1) are repeated on the added line when
-- the reply has one, since clients expect every line of a reply to carry it.
local SUPPORT_URL = 'https://support.example.com/smtp'

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if status < 500 then
    return -- keep every other reply as it is
  end
  local line = 'For help, see ' .. SUPPORT_URL
  local code = response:match('^(5%.%d%d?%d?%.%d%d?%d?) ')
  if code then
    line = code .. ' ' .. line
  end
  if response == '' then
    return nil, line
  end
  return nil, response .. '\n' .. line
end)
