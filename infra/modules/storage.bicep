// Storage account for host storage (AzureWebJobsStorage), the deployment package, exports, state and
// the ticket queues. Keyless: shared-key access is disabled, so every client (the Functions host,
// the handler, the deployment service, humans) authenticates with Entra ID.

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object

@description('Replication. LRS is enough: host state and the package can be rebuilt; exports can be re-pulled from Qualtrics.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Blob container that holds the Flex Consumption deployment package (one per app).')
param deploymentContainerName string

@description('Blob container for exported responses (setting EXPORT_CONTAINER).')
param exportContainerName string

@description('Blob container for export state and the ticket ledger (setting STATE_CONTAINER).')
param stateContainerName string

@description('Blob container of the analytics Delta tables (setting ANALYTICS_CONTAINER).')
param analyticsContainerName string

@description('Queue read by TicketCreator and written by QualtricsWebhook / ExportPoller.')
param ticketQueueName string

@description('Poison queue: permanent failures and messages past maxDequeueCount.')
param poisonQueueName string

@description('Ticket states matched to their responses: written by TicketEvents and TicketSync, read by LoopCloser.')
param loopQueueName string

@description('LoopCloser poison queue: permanent failures and messages past maxDequeueCount.')
param loopPoisonQueueName string
@description('Queue written by OpsEvents: verified ops events for PulseSender.')
param pulseQueueName string
@description('PulseSender poison queue: permanent failures and messages past maxDequeueCount.')
param pulsePoisonQueueName string

@description('Delete exported blobs this many days after their last modification; 0 disables the lifecycle rule.')
@minValue(0)
param exportRetentionDays int = 0

@description('Move exported blobs to the Cool tier this many days after their last modification; 0 disables tiering.')
@minValue(0)
param exportCoolAfterDays int = 0

@description('Soft-delete retention for blobs and containers, in days.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  // checkov:skip=CKV_AZURE_35: No VNet in this design; storage must stay reachable from Flex instances without VNet integration and from the platform deployment service that writes the package (a Deny default action breaks deployments).
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public endpoint needed without VNet/private endpoints; access is Entra-only because shared keys are disabled.
  // checkov:skip=CKV_AZURE_206: Geo-replication not needed: host state and package are rebuildable, exports can be re-pulled from Qualtrics; skuName can be set to Standard_GRS/GZRS where policy requires it.
  // checkov:skip=CKV_AZURE_43: False positive: the name is computed (uniqueString) so checkov cannot evaluate the regex; the @minLength/@maxLength bounds and the lower-case alphanumeric naming rule in main.bicep keep it valid.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource exportContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: exportContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource analyticsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: analyticsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2025-01-01' = {
  parent: storage
  name: 'default'
}

// Every queue is pre-created so the host never needs the right to create queues.
resource ticketQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = {
  parent: queueService
  name: ticketQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = {
  parent: queueService
  name: poisonQueueName
}

resource loopQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = {
  parent: queueService
  name: loopQueueName
}

resource loopPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = {
  parent: queueService
  name: loopPoisonQueueName
}

resource pulseQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = {
  parent: queueService
  name: pulseQueueName
}

resource pulsePoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = {
  parent: queueService
  name: pulsePoisonQueueName
}

var exportLifecycleActions = union(
  exportRetentionDays > 0 ? { delete: { daysAfterModificationGreaterThan: exportRetentionDays } } : {},
  exportCoolAfterDays > 0 ? { tierToCool: { daysAfterModificationGreaterThan: exportCoolAfterDays } } : {}
)

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2025-01-01' = if (exportRetentionDays > 0 || exportCoolAfterDays > 0) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-qualtrics-exports'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${exportContainerName}/'
              ]
            }
            actions: {
              baseBlob: exportLifecycleActions
            }
          }
        }
      ]
    }
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
output ticketQueueName string = ticketQueue.name
output poisonQueueName string = poisonQueue.name
output loopQueueName string = loopQueue.name
output loopPoisonQueueName string = loopPoisonQueue.name
output pulseQueueName string = pulseQueue.name
output pulsePoisonQueueName string = pulsePoisonQueue.name
output exportContainerName string = exportContainer.name
output stateContainerName string = stateContainer.name
output analyticsContainerName string = analyticsContainer.name
