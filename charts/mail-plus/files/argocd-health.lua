-- Argo CD health check for Mail-Plus MailRoute and TenantPolicy (same logic for both kinds).
-- argocd-cm keys: resource.customizations.health.mailplus.io_MailRoute and
-- resource.customizations.health.mailplus.io_TenantPolicy (see docs/argocd.md).
-- Only Argo CD's default Lua libraries are used (base and table; no string, os or io).
--   not yet observed (no status, or observedGeneration < generation)  -> Progressing
--   Ready=True                                                          -> Healthy
--   Ready=False with reason Pending (relays still loading the config)   -> Progressing
--   Ready=False with any other reason                                   -> Degraded
--   Ready=Unknown or missing                                            -> Progressing
local hs = {}
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Mail-Plus operator to report status"
  return hs
end
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Mail-Plus operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready describes an older generation"
  return hs
end
local reason = ready.reason or ""
local message = ready.message or ""
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end
if ready.status == "False" and reason ~= "Pending" then
  hs.status = "Degraded"
  hs.message = reason .. ": " .. message
  return hs
end
hs.status = "Progressing"
hs.message = reason .. ": " .. message
return hs
