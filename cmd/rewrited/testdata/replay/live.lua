-- The live policy the recorded decisions were made by.
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    return 250, 'queued as ' .. (conn_meta:get_meta('queue_id') or '?')
  end
  if status == 550 then return 550, '5.1.1 unknown user' end
end)
