// Role assignments. Every assignment is scoped to the single resource it needs (the storage
// account, one queue, the Key Vault or the Application Insights component), never to the resource
// group or the subscription. Built-in role GUIDs are listed once below.

@description('Object (principal) id of the function app identity (system- or user-assigned).')
param appPrincipalId string

@description('Optional Entra ID GROUP object id for human operators; empty means none. Never an individual user.')
param operatorGroupObjectId string = ''

param storageAccountName string
param keyVaultName string
param appInsightsName string
param ticketQueueName string
param poisonQueueName string
param loopQueueName string
param loopPoisonQueueName string
param pulseQueueName string
param pulsePoisonQueueName string

@description('Grant Storage Table Data Contributor for host diagnostic events (recommended by the Functions docs).')
param grantTableDataContributor bool = true

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  monitoringReader: '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
}

var hasOperators = !empty(operatorGroupObjectId)

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2025-01-01' existing = {
  parent: storage
  name: 'default'
}

resource ticketQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' existing = {
  parent: queueService
  name: ticketQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' existing = {
  parent: queueService
  name: poisonQueueName
}

resource loopQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' existing = {
  parent: queueService
  name: loopQueueName
}

resource loopPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' existing = {
  parent: queueService
  name: loopPoisonQueueName
}

resource pulseQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' existing = {
  parent: queueService
  name: pulseQueueName
}

resource pulsePoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' existing = {
  parent: queueService
  name: pulsePoisonQueueName
}

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// ---- function app identity ----------------------------------------------------------------

// Host storage (leases, timer locks, host keys; the runtime creates its azure-webjobs-* containers,
// which needs account scope), the deployment package, and the handler's exports/state blobs and
// analytics tables.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: host storage, deployment package, exports, state blobs and analytics tables'
  }
}

// Host diagnostic events table (optional).
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantTableDataContributor) {
  name: guid(storage.id, appPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: Functions host diagnostic events'
  }
}

// Queue trigger + outputs on the two pre-created queues only. Storage Queue Data Contributor rather
// than the documented Reader + Message Processor + Sender trio: the queue listener also updates
// messages (visibility renewal, release for retry), which needs messages/write that only the
// Contributor role grants. Scoped to each queue, it cannot touch any other queue.
resource appTicketQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ticketQueue.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: ticketQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: TicketCreator trigger and ticket-requests outputs'
  }
}

resource appPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: deadletter output and host poison handling'
  }
}

// loop-requests: LoopCloser's trigger and its own re-enqueue after a transient failure (Contributor:
// read, update, delete), which also covers TicketEvents' and TicketSync's outputs (send).
resource appLoopQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(loopQueue.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: loopQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: LoopCloser trigger and re-enqueue; TicketEvents and TicketSync loop output'
  }
}

resource appLoopPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(loopPoisonQueue.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: loopPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: LoopCloser deadletter output and host poison handling'
  }
}

// pulse-requests: PulseSender's trigger and its own re-enqueue after a transient failure
// (Contributor: read, update, delete), which also covers OpsEvents' output (send).
resource appPulseQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(pulseQueue.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: pulseQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: PulseSender trigger and re-enqueue; OpsEvents pulse output'
  }
}

resource appPulsePoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(pulsePoisonQueue.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: pulsePoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: PulseSender deadletter output and host poison handling'
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: read secrets'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'qualtrics-bridge: Entra-authenticated telemetry (DisableLocalAuth)'
  }
}

// ---- optional operators GROUP -----------------------------------------------------------------

// Set and rotate secrets.
resource opsSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(vault.id, operatorGroupObjectId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: set and rotate secrets'
  }
}

// Inspect exports, state/ledger blobs and the deployed package (read only).
resource opsBlobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(storage.id, operatorGroupObjectId, roles.storageBlobDataReader)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: read exports, state and package'
  }
}

// Replay the poison queue: peek/receive/delete poison messages ...
resource opsPoisonProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(poisonQueue.id, operatorGroupObjectId, roles.storageQueueDataMessageProcessor)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageProcessor)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: read and remove poison messages (replay)'
  }
}

// ... and send them back to ticket-requests.
resource opsTicketSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(ticketQueue.id, operatorGroupObjectId, roles.storageQueueDataMessageSender)
  scope: ticketQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: re-enqueue replayed ticket requests'
  }
}

// The same replay rights on the loop queues.
resource opsLoopPoisonProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(loopPoisonQueue.id, operatorGroupObjectId, roles.storageQueueDataMessageProcessor)
  scope: loopPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageProcessor)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: read and remove loop poison messages (replay)'
  }
}

resource opsLoopSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(loopQueue.id, operatorGroupObjectId, roles.storageQueueDataMessageSender)
  scope: loopQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: re-enqueue replayed loop requests'
  }
}

// Read telemetry and logs of the app.
resource opsMonitoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperators) {
  name: guid(appInsights.id, operatorGroupObjectId, roles.monitoringReader)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
    principalId: operatorGroupObjectId
    principalType: 'Group'
    description: 'qualtrics-bridge operators: read telemetry'
  }
}
