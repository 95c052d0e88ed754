// qualtrics-bridge: Azure Functions (Flex Consumption, Linux) custom handler + keyless storage,
// Key Vault (RBAC), Application Insights on Log Analytics, alerts and least-privilege RBAC.
// Deploy into one resource group:
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
// Names and settings that other parts depend on are fixed by shared DESIGN.md (queues, containers,
// app settings); see docs/settings.md and docs/deploy.md.

targetScope = 'resourceGroup'

// ---- naming and tags ----------------------------------------------------------------------

@description('Short workload name used in every resource name (lower-case letters and digits, 2-8; keeps the Key Vault name within 24 characters).')
@minLength(2)
@maxLength(8)
param workload string = 'qbridge'

@description('Environment: part of every name and the `environment` tag.')
@allowed([
  'dev'
  'test'
  'prod'
])
param environmentName string

@description('Suffix that makes the globally unique names (site, storage, vault) unique; defaults to a hash of the resource group.')
@minLength(3)
@maxLength(6)
param nameSuffix string = take(uniqueString(resourceGroup().id), 6)

param location string = resourceGroup().location

@description('Tag `owner`: the team or distribution list responsible.')
@minLength(1)
param owner string

@description('Tag `costCenter`.')
@minLength(1)
param costCenter string

@description('Extra tags merged into the standard ones.')
param extraTags object = {}

// ---- identity -----------------------------------------------------------------------------

@description('Identity of the function app: SystemAssigned (default) or UserAssigned (created here).')
@allowed([
  'SystemAssigned'
  'UserAssigned'
])
param identityType string = 'SystemAssigned'

@description('Optional Entra ID GROUP object id granted operator roles (set secrets, read blobs/telemetry, replay poison). Never an individual user.')
param operatorGroupObjectId string = ''

// ---- app settings -------------------------------------------------------------------------

@description('Qualtrics API base URL, https://{datacenter}.qualtrics.com')
param qualtricsBaseUrl string

@description('NCRONTAB (6 fields, UTC) for ExportPoller.')
param exportSchedule string = '0 */15 * * * *'

@description('NCRONTAB (6 fields, UTC) for TicketSync (reconciles ticket states whose event was lost).')
param ticketSyncSchedule string = '0 */30 * * * *'
@description('NCRONTAB (6 fields, UTC) for AnalyticsBuilder (export blobs -> Delta tables).')
param analyticsSchedule string = '0 5 * * * *'

@description('ServiceNow instance URL (https://<instance>.service-now.com); empty disables ServiceNow.')
param servicenowInstanceUrl string = ''

@description('ServiceNow Basic-auth user (password in Key Vault secret servicenow-password).')
param servicenowUsername string = ''

@description('ServiceNow OAuth client id (secret in Key Vault secret servicenow-client-secret).')
param servicenowClientId string = ''

@description('Zendesk base URL (https://<subdomain>.zendesk.com); empty disables Zendesk.')
param zendeskBaseUrl string = ''

@description('Zendesk API user e-mail (token in Key Vault secret zendesk-api-token).')
param zendeskEmail string = ''

// ---- sizing, retention, alerts ------------------------------------------------------------

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Delete exports this many days after last modification; 0 = keep forever (no lifecycle rule).')
@minValue(0)
param exportRetentionDays int = 0

@description('Move exports to Cool after this many days; 0 = never.')
@minValue(0)
param exportCoolAfterDays int = 0

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('E-mail addresses (distribution lists) for alerts; empty = alerts without notification.')
param alertEmailAddresses array = []

@description('Failed invocations of one function in 15 minutes that fire the failure alert.')
@minValue(1)
param failureAlertThreshold int = 5

// ---- fixed contract (DESIGN.md): do not rename ----------------------------------------------

var exportContainerName = 'qualtrics-exports'
var stateContainerName = 'bridge-state'
var analyticsContainerName = 'qualtrics-analytics'
var ticketQueueName = 'ticket-requests'
var poisonQueueName = 'ticket-requests-poison'
var loopQueueName = 'loop-requests'
var loopPoisonQueueName = 'loop-requests-poison'
var pulseQueueName = 'pulse-requests'
var pulsePoisonQueueName = 'pulse-requests-poison'
var deploymentContainerName = 'app-package'

// ---- names --------------------------------------------------------------------------------

var baseName = '${workload}-${environmentName}'
var names = {
  plan: 'asp-${baseName}-${nameSuffix}'
  site: 'func-${baseName}-${nameSuffix}'
  storage: toLower('st${workload}${environmentName}${nameSuffix}')
  keyVault: 'kv-${baseName}-${nameSuffix}'
  logAnalytics: 'log-${baseName}-${nameSuffix}'
  appInsights: 'appi-${baseName}-${nameSuffix}'
  identity: 'id-${baseName}-${nameSuffix}'
  alertPrefix: '${baseName}-${nameSuffix}'
}

var tags = union(extraTags, {
  owner: owner
  environment: environmentName
  costCenter: costCenter
  workload: workload
  managedBy: 'bicep'
})

var useUami = identityType == 'UserAssigned'

// ---- resources ----------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    exportContainerName: exportContainerName
    stateContainerName: stateContainerName
    analyticsContainerName: analyticsContainerName
    ticketQueueName: ticketQueueName
    poisonQueueName: poisonQueueName
    loopQueueName: loopQueueName
    loopPoisonQueueName: loopPoisonQueueName
    pulseQueueName: pulseQueueName
    pulsePoisonQueueName: pulsePoisonQueueName
    exportRetentionDays: exportRetentionDays
    exportCoolAfterDays: exportCoolAfterDays
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
  }
}

module identity 'modules/identity.bicep' = if (useUami) {
  name: 'identity'
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

var uamiId = useUami ? identity.outputs.id : ''
var uamiClientId = useUami ? identity.outputs.clientId : ''

// Every Deployment setting of src/config.rs KNOWN_SETTINGS is set here (tests/infra_contract.rs).
// Keyless: no AzureWebJobsStorage connection string (not even empty), no account key, no ikey.
var baseAppSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.outputs.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: monitoring.outputs.connectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: useUami ? 'Authorization=AAD;ClientId=${uamiClientId}' : 'Authorization=AAD'
  }
  {
    name: 'QUALTRICS_BASE_URL'
    value: qualtricsBaseUrl
  }
  {
    name: 'KEY_VAULT_URL'
    value: keyVault.outputs.uri
  }
  {
    name: 'EXPORT_SCHEDULE'
    value: exportSchedule
  }
  {
    name: 'TICKET_SYNC_SCHEDULE'
    value: ticketSyncSchedule
  }
  {
    name: 'EXPORT_CONTAINER'
    value: exportContainerName
  }
  {
    name: 'STATE_CONTAINER'
    value: stateContainerName
  }
  {
    name: 'ANALYTICS_SCHEDULE'
    value: analyticsSchedule
  }
  {
    name: 'ANALYTICS_CONTAINER'
    value: analyticsContainerName
  }
]

var uamiAppSettings = useUami ? [
  {
    name: 'AzureWebJobsStorage__clientId'
    value: uamiClientId
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: uamiClientId
  }
] : []

// (pycep, checkov's parser, rejects multi-line function arguments: one optional list per var.)
var snowInstanceSetting = empty(servicenowInstanceUrl) ? [] : [
  {
    name: 'SERVICENOW_INSTANCE_URL'
    value: servicenowInstanceUrl
  }
]
var snowUsernameSetting = empty(servicenowUsername) ? [] : [
  {
    name: 'SERVICENOW_USERNAME'
    value: servicenowUsername
  }
]
var snowClientIdSetting = empty(servicenowClientId) ? [] : [
  {
    name: 'SERVICENOW_CLIENT_ID'
    value: servicenowClientId
  }
]
var zendeskBaseUrlSetting = empty(zendeskBaseUrl) ? [] : [
  {
    name: 'ZENDESK_BASE_URL'
    value: zendeskBaseUrl
  }
]
var zendeskEmailSetting = empty(zendeskEmail) ? [] : [
  {
    name: 'ZENDESK_EMAIL'
    value: zendeskEmail
  }
]
var ticketTargetAppSettings = concat(snowInstanceSetting, snowUsernameSetting, snowClientIdSetting, zendeskBaseUrlSetting, zendeskEmailSetting)

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    planName: names.plan
    siteName: names.site
    location: location
    tags: tags
    identityType: identityType
    userAssignedIdentityId: uamiId
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appSettings: concat(baseAppSettings, uamiAppSettings, ticketTargetAppSettings)
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    appPrincipalId: useUami ? identity.outputs.principalId : functionApp.outputs.principalId
    operatorGroupObjectId: operatorGroupObjectId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    ticketQueueName: storage.outputs.ticketQueueName
    poisonQueueName: storage.outputs.poisonQueueName
    loopQueueName: storage.outputs.loopQueueName
    loopPoisonQueueName: storage.outputs.loopPoisonQueueName
    pulseQueueName: storage.outputs.pulseQueueName
    pulsePoisonQueueName: storage.outputs.pulsePoisonQueueName
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: names.alertPrefix
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    poisonQueueName: poisonQueueName
    alertEmailAddresses: alertEmailAddresses
    failureThreshold: failureAlertThreshold
  }
}

// ---- outputs (used by scripts/deploy.sh) ----------------------------------------------------

output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output webhookUrl string = 'https://${functionApp.outputs.defaultHostName}/api/qualtrics/events'
output storageAccountName string = storage.outputs.name
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output appInsightsName string = monitoring.outputs.appInsightsName
output secretNames array = keyVault.outputs.secretNames
