// Flex Consumption (FC1, Linux) plan + the function app running the Rust custom handler.
// Runtime `custom` / `1.0` (the Stacks API value for FC1; an unknown version makes the host fail
// at start-up). App settings are inline in siteConfig.appSettings (a separate sites/config
// resource trips seven extra checkov checks and a PUT replaces all settings anyway).

param planName string
param siteName string
param location string
param tags object

@description('SystemAssigned or UserAssigned.')
@allowed([
  'SystemAssigned'
  'UserAssigned'
])
param identityType string

@description('Resource id of the user-assigned identity (identityType = UserAssigned), else empty.')
param userAssignedIdentityId string = ''

@description('URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

@description('App settings, as an array of { name, value }.')
param appSettings array

@description('Flex maximum instance count (>= 40 recommended; lower values throttle HTTP).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

var useUami = identityType == 'UserAssigned'

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy on Flex keeps at least two billed always-ready instances per scale group (no scale to zero); not justified for a webhook/export bridge whose queue work is retried.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_78: siteConfig.ftpsState is a deprecated Flex Consumption property (FTPS not supported on Flex); FTP and basic-auth publishing are disabled by the basicPublishingCredentialsPolicies ftp/scm resources below.
  // checkov:skip=CKV_AZURE_222: The Qualtrics webhook (QualtricsWebhook) and ticket events (TicketEvents) must be reachable from Qualtrics, Zendesk and ServiceNow over the internet; callers are authenticated by the function key plus HMAC-SHA512, HMAC-SHA256 or the workflow header secret.
  // checkov:skip=CKV_AZURE_17: Qualtrics and Zendesk cannot present client certificates; requests are authenticated by the function key plus an HMAC (SHA-512 over MSG, SHA-256 over timestamp and body for ticket events) or the workflow header secret.
  // checkov:skip=CKV_AZURE_212: Not applicable to Flex Consumption: numberOfWorkers is an App Service plan setting; Flex scales per function through functionAppConfig.scaleAndConcurrency.
  // checkov:skip=CKV_AZURE_16: False positive: a managed identity is always enabled; identity.type is the identityType parameter (@allowed SystemAssigned or UserAssigned), which checkov cannot evaluate.
  // checkov:skip=CKV_AZURE_213: App Service health check is an instance-pool feature not documented for Flex Consumption; readiness is the handler's GET / probe used by the Functions host.
  name: siteName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: identityType
    userAssignedIdentities: useUami ? {
      '${userAssignedIdentityId}': {}
    } : null
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: useUami ? userAssignedIdentityId : 'SystemAssigned'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: useUami ? {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: userAssignedIdentityId
          } : {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// No basic-auth (publishing profile) credentials: Core Tools and az publish with Entra tokens.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output principalId string = useUami ? '' : site.identity.principalId
