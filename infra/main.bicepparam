// Example parameters. No secret values belong here: secrets are set in Key Vault with
// `az keyvault secret set` after the deployment (docs/deploy.md).
using './main.bicep'

param workload = 'qbridge'
param environmentName = 'dev'
param owner = 'cx-platform-team'
param costCenter = 'CC-0000'
param extraTags = {
  project: 'qualtrics-bridge'
}

param identityType = 'SystemAssigned'
// Object id of an Entra ID GROUP of operators (never a user); empty = none.
param operatorGroupObjectId = ''

param qualtricsBaseUrl = 'https://yourdatacenterid.qualtrics.com'
param exportSchedule = '0 */15 * * * *'
param analyticsSchedule = '0 5 * * * *'

// Ticket targets: fill the one(s) used in bridge.toml; leave the others empty.
param servicenowInstanceUrl = 'https://example.service-now.com'
param servicenowUsername = 'svc-qualtrics-bridge'
param servicenowClientId = ''
param zendeskBaseUrl = ''
param zendeskEmail = ''

param storageSku = 'Standard_LRS'
param exportRetentionDays = 365
param exportCoolAfterDays = 30
param maximumInstanceCount = 40
param instanceMemoryMB = 2048
param logRetentionInDays = 30
param alertEmailAddresses = []
param failureAlertThreshold = 5
