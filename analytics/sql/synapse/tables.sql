-- Synapse serverless SQL pool: the bridge's Delta tables as views (Delta protocol 1/2, which
-- serverless reads). Replace <account>; the pool's identity (or the caller, with Entra
-- pass-through) needs Storage Blob Data Reader on the account. Fabric: skip this file — add a
-- OneLake shortcut per table folder under the lakehouse's Tables/ and run views.sql on its SQL
-- analytics endpoint.
CREATE DATABASE qualtrics COLLATE Latin1_General_100_BIN2_UTF8;
GO
USE qualtrics;
GO
CREATE EXTERNAL DATA SOURCE qualtrics_analytics
WITH (LOCATION = 'https://<account>.dfs.core.windows.net/qualtrics-analytics');
GO
CREATE OR ALTER VIEW dbo.survey_response AS
SELECT * FROM OPENROWSET(BULK 'survey_response/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.question_response AS
SELECT * FROM OPENROWSET(BULK 'question_response/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.response_embedded_data AS
SELECT * FROM OPENROWSET(BULK 'response_embedded_data/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.ticket_link AS
SELECT * FROM OPENROWSET(BULK 'ticket_link/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.question AS
SELECT * FROM OPENROWSET(BULK 'question/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.choice AS
SELECT * FROM OPENROWSET(BULK 'choice/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.survey AS
SELECT * FROM OPENROWSET(BULK 'survey/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
CREATE OR ALTER VIEW dbo.question_item AS
SELECT * FROM OPENROWSET(BULK 'question_item/', DATA_SOURCE = 'qualtrics_analytics', FORMAT = 'DELTA') AS t;
GO
