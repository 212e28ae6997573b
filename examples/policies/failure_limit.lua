-- Recipe: close the connection with a 421 after repeated failures, to shed
-- clients that probe addresses or keep retrying a rejected command.
--
-- The count lives in conn_meta, the only state that lasts for the whole
-- connection: Lua states are pooled, so a global would be shared by many
-- connections and reset at random. The SMTP frontend keeps the meta_updates
-- of each reply and sends them back in conn_meta with the next one.
local MAX_FAILURES = 3

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  -- 421 already closes the connection; successes are not failures.
  if status < 400 or status == 421 then
    return
  end
  local failures = (tonumber(conn_meta:get_meta('x_failures')) or 0) + 1
  conn_meta:set_meta('x_failures', failures)
  if failures >= MAX_FAILURES then
    return 421, '4.7.0 Too many errors on this connection, closing'
  end
end)
