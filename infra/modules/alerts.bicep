// Alerts on Application Insights:
//  1. the poison queue `ticket-requests-poison` received a message (a permanent ticket failure
//     written by TicketCreator's deadletter output, or a message the host moved there after
//     maxDequeueCount). Storage queue metrics are account-wide (no per-queue dimension), so the
//     signal is the telemetry that mentions the poison queue: the host's "Moving message to queue
//     'ticket-requests-poison'" trace, the handler's log lines, and dependency calls to that queue.
//     It stays fired (autoMitigate off) until someone resolves it after draining the queue.
//  2. a function fails repeatedly: at least `failureThreshold` failed invocations of one function
//     within the window (requests are excluded from sampling in host.json).

param namePrefix string
param location string
param tags object

@description('Application Insights component id (the alert scope).')
param appInsightsId string

@description('Poison queue name searched for in telemetry.')
param poisonQueueName string

@description('E-mail addresses (distribution lists preferred) notified by the action group; empty means no action group.')
param alertEmailAddresses array = []

@description('Failed invocations of one function within the window that fire the failure alert.')
@minValue(1)
param failureThreshold int = 5

var hasReceivers = !empty(alertEmailAddresses)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (hasReceivers) {
  name: 'ag-${namePrefix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: take(replace(namePrefix, '-', ''), 12)
    enabled: true
    emailReceivers: [for (address, i) in alertEmailAddresses: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

var actions = hasReceivers ? {
  actionGroups: [
    actionGroup.id
  ]
} : {
  actionGroups: []
}

var poisonQuery = 'union isfuzzy=true (traces | where message has "${poisonQueueName}"), (dependencies | where name has "${poisonQueueName}" or data has "${poisonQueueName}")'

var failureQuery = 'requests | where success == false | summarize failures = count() by operation_Name'

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-poison-queue'
  location: location
  tags: tags
  properties: {
    displayName: 'qualtrics-bridge: ${poisonQueueName} is not empty'
    description: 'A ticket request reached ${poisonQueueName}. Inspect the message and the ledger blob, fix the cause, then replay it with the qualtrics-bridge replay subcommand (docs/deploy.md). Resolve the alert by hand once the queue is empty.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}

resource failureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-function-failures'
  location: location
  tags: tags
  properties: {
    displayName: 'qualtrics-bridge: a function fails repeatedly'
    description: 'At least ${failureThreshold} failed invocations of one function in 15 minutes (dimension operation_Name = function name).'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: failureQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          dimensions: [
            {
              name: 'operation_Name'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThanOrEqual'
          threshold: failureThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}

output poisonAlertId string = poisonAlert.id
output failureAlertId string = failureAlert.id
