-- The bundled example policy, as in KumoMTA's documentation: amend the
-- successful DATA reply and leave every other reply as it is.
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    return 250, 'super fantastic!\n' .. response
  end
end)
