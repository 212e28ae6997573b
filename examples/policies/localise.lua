-- Recipe: localise failures by the language the client's EHLO domain
-- suggests (.de: German, .fr: French), for the people who read the text in
-- a bounce. The original text stays on the lines after the translation, so
-- nothing machine-readable (enhanced codes, queue ids) is lost.
--
-- Only failures and the DATA reply are touched: other successful replies
-- are parsed by clients (the EHLO reply lists extensions, one per line), so
-- adding a line to them would break the session. ehlo_domain is set only
-- after the EHLO reply, so the banner and the EHLO reply are never seen here
-- with one.
--
-- The texts are plain ASCII: UTF-8 in a reply is only safe once the client
-- has asked for SMTPUTF8 (RFC 6531).
local TEXTS = {
  de = {
    ['2'] = 'Nachricht angenommen.',
    ['4'] = 'Voruebergehender Fehler, bitte spaeter erneut versuchen.',
    ['5'] = 'Die Nachricht wurde abgelehnt.',
    ['4.7.1'] = 'Bitte spaeter erneut versuchen.',
    ['5.1.1'] = 'Diese Empfaengeradresse gibt es nicht.',
    ['5.7.1'] = 'Zustellung aus Richtliniengruenden abgelehnt.',
  },
  fr = {
    ['2'] = 'Message accepte.',
    ['4'] = 'Erreur temporaire, veuillez reessayer plus tard.',
    ['5'] = 'Le message a ete refuse.',
    ['4.7.1'] = 'Veuillez reessayer plus tard.',
    ['5.1.1'] = "Cette adresse de destinataire n'existe pas.",
    ['5.7.1'] = 'Remise refusee pour raison de politique.',
  },
}

-- language returns the top-level domain of an EHLO name such as
-- "mail.Example.DE." ("de"), or nil for an address literal or no name.
local function language(domain)
  if type(domain) ~= 'string' then
    return nil
  end
  return domain:lower():match('%.(%a+)%.?$')
end

kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if status < 400 and command ~= 'DATA' then
    return
  end
  local texts = TEXTS[language(conn_meta:get_meta('ehlo_domain'))]
  if texts == nil then
    return
  end
  local code = response:match('^([245]%.%d%d?%d?%.%d%d?%d?) ')
  local text = (code and texts[code]) or texts[tostring(status):sub(1, 1)]
  if code then
    text = code .. ' ' .. text
  end
  return nil, text .. '\n' .. response
end)
