-- qualtrics-bridge analytics views, T-SQL for Synapse serverless and the Fabric SQL analytics
-- endpoint (after tables.sql, or with the tables as lakehouse shortcuts). The same views as
-- ../duckdb/views.sql, which CI runs; this dialect is not run in CI (no engine on Linux).
-- Delta booleans read as bit; timestamps as UTC datetime2, so days are UTC days.

CREATE OR ALTER VIEW dbo.v_response_latest AS
SELECT survey_id, response_id, exported_at, source_blob, recorded_at, started_at, ended_at,
       status, progress, duration_s, finished, distribution_channel, user_language
FROM (
    SELECT r.*,
           ROW_NUMBER() OVER (PARTITION BY survey_id, response_id
                              ORDER BY exported_at DESC, source_blob DESC) AS rn
    FROM dbo.survey_response AS r
) AS ranked
WHERE rn = 1;
GO

CREATE OR ALTER VIEW dbo.v_question_response AS
SELECT q.*
FROM dbo.question_response AS q
JOIN dbo.v_response_latest AS r
  ON r.survey_id = q.survey_id
 AND r.response_id = q.response_id
 AND r.exported_at = q.exported_at;
GO

CREATE OR ALTER VIEW dbo.v_nps_daily AS
SELECT survey_id,
       question_id,
       CAST(recorded_at AS date) AS day,
       COUNT(*) AS responses,
       SUM(CASE WHEN value_num = 3 THEN 1 ELSE 0 END) AS promoters,
       SUM(CASE WHEN value_num = 2 THEN 1 ELSE 0 END) AS passives,
       SUM(CASE WHEN value_num = 1 THEN 1 ELSE 0 END) AS detractors,
       100.0 * (SUM(CASE WHEN value_num = 3 THEN 1 ELSE 0 END)
              - SUM(CASE WHEN value_num = 1 THEN 1 ELSE 0 END)) / COUNT(*) AS nps
FROM dbo.v_question_response
WHERE field = 'nps_group' AND answered = 1
GROUP BY survey_id, question_id, CAST(recorded_at AS date);
GO

CREATE OR ALTER VIEW dbo.v_question_response_rate AS
SELECT survey_id,
       question_id,
       COUNT(DISTINCT CASE WHEN displayed = 1 OR answered = 1
                           THEN CONCAT(response_id, '|', COALESCE(loop_id, '')) END) AS displayed,
       COUNT(DISTINCT CASE WHEN answered = 1
                           THEN CONCAT(response_id, '|', COALESCE(loop_id, '')) END) AS answered,
       CAST(COUNT(DISTINCT CASE WHEN answered = 1
                                THEN CONCAT(response_id, '|', COALESCE(loop_id, '')) END) AS float)
         / NULLIF(COUNT(DISTINCT CASE WHEN displayed = 1 OR answered = 1
                                      THEN CONCAT(response_id, '|', COALESCE(loop_id, '')) END), 0)
         AS response_rate
FROM dbo.v_question_response
WHERE field IN ('value', 'text')
GROUP BY survey_id, question_id;
GO

-- Each ticket's current state. ticket_link is append-only (one row per state the ticket and
-- loop ledgers recorded): the newest updated_at wins (the loop ledger's on a tie), and
-- created_at is the first row's, when the bridge raised the ticket.
CREATE OR ALTER VIEW dbo.v_ticket_latest AS
SELECT survey_id, response_id, system, ticket_id, ticket_number, state, updated_at, created_at
FROM (
    SELECT t.survey_id,
           t.response_id,
           t.system,
           t.ticket_id,
           t.ticket_number,
           t.state,
           t.updated_at,
           MIN(t.updated_at) OVER (PARTITION BY t.system, t.ticket_id) AS created_at,
           ROW_NUMBER() OVER (PARTITION BY t.system, t.ticket_id
                              ORDER BY t.updated_at DESC,
                                       CASE WHEN t.source = 'loop_ledger' THEN 1 ELSE 0 END DESC)
             AS rn
    FROM dbo.ticket_link AS t
) AS x
WHERE rn = 1;
GO

CREATE OR ALTER VIEW dbo.v_detractor_ticket AS
SELECT g.survey_id,
       g.response_id,
       g.question_id,
       g.recorded_at,
       s.value_num AS score,
       t.system,
       t.ticket_id,
       t.ticket_number,
       t.state AS ticket_state,
       t.created_at AS ticket_created_at,
       t.updated_at AS ticket_updated_at,
       DATEDIFF(minute, g.recorded_at, t.created_at) AS minutes_to_ticket
FROM dbo.v_question_response AS g
LEFT JOIN dbo.v_question_response AS s
  ON s.survey_id = g.survey_id
 AND s.response_id = g.response_id
 AND s.question_id = g.question_id
 AND COALESCE(s.loop_id, '') = COALESCE(g.loop_id, '')
 AND s.field = 'value'
LEFT JOIN dbo.v_ticket_latest AS t
  ON t.survey_id = g.survey_id
 AND t.response_id = g.response_id
WHERE g.field = 'nps_group' AND g.value_num = 1;
GO
