kumo.on('smtp_server_rewrite_response', function(status, response)
  local hundreds = status // 100
  return nil, response
end)
