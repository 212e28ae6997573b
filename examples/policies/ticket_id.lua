-- Recipe: append a ticket id to every failure (4xx and 5xx), so that a
-- sender quoting the bounce to support gives the id that finds the session
-- in the logs. The id comes from conn_meta: x_ticket if the SMTP frontend
-- sets one, else its session_id.
--
-- rewrited refuses reply lines longer than 512 octets on the wire (the
-- original reply is then kept), so the id goes on its own line when adding
-- it to the last line would pass that limit.
local MAX_TEXT_LINE = 506 -- 512 less the code, the separator and the CRLF

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if status < 400 then
    return
  end
  local ticket = conn_meta:get_meta('x_ticket') or conn_meta:get_meta('session_id')
  if ticket == nil then
    return
  end
  -- Metadata is not trusted text: drop control characters (CR and LF
  -- included) and keep the id short.
  ticket = tostring(ticket):gsub('%c', ''):sub(1, 64)
  if ticket == '' then
    return
  end
  local suffix = ' [ticket ' .. ticket .. ']'
  local last = response:match('[^\n]*$')
  if #last + #suffix <= MAX_TEXT_LINE then
    return nil, response .. suffix
  end
  return nil, response .. '\n' .. suffix:sub(2)
end)
