// Optional user-assigned identity. It exists (with its role assignments) before the site first
// starts, which avoids the RBAC propagation race of a system-assigned identity.

param name string
param location string
param tags object

resource uami 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = uami.id
output principalId string = uami.properties.principalId
output clientId string = uami.properties.clientId
