// Key Vault in RBAC mode. Secrets are DECLARED here (names only, see `secretNames`), never created
// with values: values are set out of band with `az keyvault secret set` (docs/deploy.md), so no
// secret value ever passes through a template, a parameter file or a deployment history.

@description('Key Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object

@description('Soft-delete retention in days (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  // checkov:skip=CKV_AZURE_109: No VNet in this design and Flex Consumption egress IPs are not fixed, so a firewall default-deny would block the app; access is Entra RBAC only.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: public network access is required without a private endpoint; every read is an RBAC-authorised Entra call.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// The secrets the handler reads (DESIGN.md "Secrets"). Set each with
//   az keyvault secret set --vault-name <vault> --name <secret> --file <file-with-value>
// ServiceNow needs one of servicenow-password / servicenow-client-secret, matching the app setting
// (SERVICENOW_USERNAME or SERVICENOW_CLIENT_ID). The webhook secrets sign ticket events sent to
// TicketEvents (docs/close-loop.md); the -previous ones exist only during a rotation. Unused ones
// may stay unset.
var secretNames = [
  'qualtrics-api-token'
  'qualtrics-webhook-key'
  'qualtrics-webhook-key-previous'
  'qualtrics-workflow-token'
  'servicenow-password'
  'servicenow-client-secret'
  'zendesk-api-token'
  'zendesk-webhook-secret'
  'zendesk-webhook-secret-previous'
  'servicenow-webhook-secret'
  'servicenow-webhook-secret-previous'
  'analytics-hash-key'
  'ops-webhook-secret'
  'ops-webhook-secret-previous'
  'ops-static-token'
  'ops-static-token-previous'
]

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
output secretNames array = secretNames
