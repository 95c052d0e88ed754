-- qualtrics-bridge analytics views, DuckDB dialect. Run after tables.sql (or any statement
-- that makes the tables survey_response, question_response, ticket_link readable under
-- those names). Days are UTC days. Tested by tests/analytics_views.rs.

-- The newest version of each response (edits and re-exports append a new exported_at).
CREATE OR REPLACE VIEW v_response_latest AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT r.*,
           row_number() OVER (PARTITION BY survey_id, response_id
                              ORDER BY exported_at DESC, source_blob DESC) AS rn
    FROM survey_response r
)
WHERE rn = 1;

-- Answer cells of the newest version only: every fact view reads through this.
CREATE OR REPLACE VIEW v_question_response AS
SELECT q.*
FROM question_response q
JOIN v_response_latest r
  ON r.survey_id = q.survey_id
 AND r.response_id = q.response_id
 AND r.exported_at = q.exported_at;

-- NPS per survey, question and UTC day, from the NPS group cells (1 detractor, 2 passive,
-- 3 promoter).
CREATE OR REPLACE VIEW v_nps_daily AS
SELECT survey_id,
       question_id,
       CAST(timezone('UTC', recorded_at) AS DATE) AS day,
       count(*) AS responses,
       count(*) FILTER (WHERE value_num = 3) AS promoters,
       count(*) FILTER (WHERE value_num = 2) AS passives,
       count(*) FILTER (WHERE value_num = 1) AS detractors,
       100.0 * (count(*) FILTER (WHERE value_num = 3) - count(*) FILTER (WHERE value_num = 1))
             / count(*) AS nps
FROM v_question_response
WHERE field = 'nps_group' AND answered
GROUP BY survey_id, question_id, CAST(timezone('UTC', recorded_at) AS DATE);

-- Per question: responses (× loop iterations) it was shown to, and answered by.
CREATE OR REPLACE VIEW v_question_response_rate AS
SELECT survey_id,
       question_id,
       count(DISTINCT CASE WHEN displayed OR answered
                           THEN concat(response_id, '|', coalesce(loop_id, '')) END) AS displayed,
       count(DISTINCT CASE WHEN answered
                           THEN concat(response_id, '|', coalesce(loop_id, '')) END) AS answered,
       CAST(count(DISTINCT CASE WHEN answered
                                THEN concat(response_id, '|', coalesce(loop_id, '')) END) AS DOUBLE)
         / nullif(count(DISTINCT CASE WHEN displayed OR answered
                                      THEN concat(response_id, '|', coalesce(loop_id, '')) END), 0)
         AS response_rate
FROM v_question_response
WHERE field IN ('value', 'text')
GROUP BY survey_id, question_id;

-- Each ticket's current state. ticket_link is append-only (one row per state the ticket and
-- loop ledgers recorded): the newest updated_at wins (the loop ledger's on a tie), and
-- created_at is the first row's, when the bridge raised the ticket.
CREATE OR REPLACE VIEW v_ticket_latest AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT t.survey_id,
           t.response_id,
           t.system,
           t.ticket_id,
           t.ticket_number,
           t.state,
           t.updated_at,
           min(t.updated_at) OVER (PARTITION BY t.system, t.ticket_id) AS created_at,
           row_number() OVER (PARTITION BY t.system, t.ticket_id
                              ORDER BY t.updated_at DESC,
                                       CASE WHEN t.source = 'loop_ledger' THEN 1 ELSE 0 END DESC)
             AS rn
    FROM ticket_link t
)
WHERE rn = 1;

-- Every detractor with its score and the ticket the bridge raised for it, if any, in its
-- current state.
CREATE OR REPLACE VIEW v_detractor_ticket AS
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
       date_diff('minute', g.recorded_at, t.created_at) AS minutes_to_ticket
FROM v_question_response g
LEFT JOIN v_question_response s
  ON s.survey_id = g.survey_id
 AND s.response_id = g.response_id
 AND s.question_id = g.question_id
 AND coalesce(s.loop_id, '') = coalesce(g.loop_id, '')
 AND s.field = 'value'
LEFT JOIN v_ticket_latest t
  ON t.survey_id = g.survey_id
 AND t.response_id = g.response_id
WHERE g.field = 'nps_group' AND g.value_num = 1;
