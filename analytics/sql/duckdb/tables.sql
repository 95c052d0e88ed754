-- The bridge's Delta tables as DuckDB views (needs the azure and delta extensions and an
-- Azure login; replace <account>). Then run views.sql.
INSTALL azure; LOAD azure; INSTALL delta; LOAD delta;
CREATE SECRET qualtrics_analytics (TYPE azure, PROVIDER credential_chain, CHAIN 'cli', ACCOUNT_NAME '<account>');
CREATE OR REPLACE VIEW survey_response        AS SELECT * FROM delta_scan('az://qualtrics-analytics/survey_response');
CREATE OR REPLACE VIEW question_response      AS SELECT * FROM delta_scan('az://qualtrics-analytics/question_response');
CREATE OR REPLACE VIEW response_embedded_data AS SELECT * FROM delta_scan('az://qualtrics-analytics/response_embedded_data');
CREATE OR REPLACE VIEW ticket_link            AS SELECT * FROM delta_scan('az://qualtrics-analytics/ticket_link');
CREATE OR REPLACE VIEW survey                 AS SELECT * FROM delta_scan('az://qualtrics-analytics/survey');
CREATE OR REPLACE VIEW question               AS SELECT * FROM delta_scan('az://qualtrics-analytics/question');
CREATE OR REPLACE VIEW question_item          AS SELECT * FROM delta_scan('az://qualtrics-analytics/question_item');
CREATE OR REPLACE VIEW choice                 AS SELECT * FROM delta_scan('az://qualtrics-analytics/choice');
