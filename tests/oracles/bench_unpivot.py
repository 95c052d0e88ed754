"""DuckDB's side of the analytics benchmark (tests/analytics_bench.rs): the same NDJSON export
files the bridge reads from Azurite, read here from local disk, unpivoted to the bridge's
tables (same columns and types) and written as Snappy Parquet.

usage: bench_unpivot.py SPEC_JSON
SPEC: {"files": ["/x/20250101T000000Z-ES_1.ndjson", ...], "out": "/dir", "survey_id": "SV_…",
       "definition_version": "…", "embedded": ["Store", "Region"]}
Prints {"rows": {table: n}}.

The unpivot is DuckDB's idiomatic one for dynamic keys: `values`/`labels` read as
MAP(VARCHAR, JSON), `unnest(map_entries(...))`, arrays exploded with their positions, and the
displayed-but-unanswered cells added from `displayedFields`. It does less than the bridge: no
definition lookups (recodes, matrix rows by export tag, NPS ranges), every cell `ok`.
"""
import json
import os
import sys


def main():
    spec = json.loads(sys.argv[1])
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    files = spec["files"]
    sid = spec["survey_id"].replace("'", "''")
    ver = spec["definition_version"].replace("'", "''")
    out = spec["out"]
    allow = ", ".join("'" + k.replace("'", "''") + "'" for k in spec["embedded"]) or "NULL"
    con.execute(
        f"""
        CREATE TEMP TABLE raw AS
        SELECT responseId AS response_id, "values" AS v, labels AS l,
               coalesce(displayedFields, []) AS d,
               -- the export's start, from the blob name (YYYYMMDDTHHMMSSZ-…)
               try_strptime(regexp_extract(filename, '([0-9]{{8}}T[0-9]{{6}}Z)[^/]*$', 1),
                        '%Y%m%dT%H%M%SZ')::TIMESTAMPTZ AS exported_at
        FROM read_json(?, format = 'newline_delimited', filename = true,
             columns = {{responseId: 'VARCHAR', "values": 'MAP(VARCHAR, JSON)',
                        labels: 'MAP(VARCHAR, JSON)', displayedFields: 'VARCHAR[]'}})
        """,
        [files],
    )
    ts = lambda key: f"try_cast(v['{key}'] ->> '$' AS TIMESTAMPTZ)"
    num = lambda key: f"try_cast(v['{key}'] ->> '$' AS BIGINT)"
    con.execute(
        f"""
        COPY (
          SELECT '{sid}' AS survey_id, response_id, exported_at,
                 {ts('recordedDate')} AS recorded_at, {ts('startDate')} AS started_at,
                 {ts('endDate')} AS ended_at, {num('status')} AS status,
                 {num('progress')} AS progress, {num('duration')} AS duration_s,
                 coalesce({num('finished')} = 1, false) AS finished,
                 v['distributionChannel'] ->> '$' AS distribution_channel,
                 v['userLanguage'] ->> '$' AS user_language,
                 NULL::VARCHAR AS ip_address_hash, NULL::VARCHAR AS recipient_email_hash,
                 NULL::VARCHAR AS external_reference_hash
          FROM raw
        ) TO '{out}/survey_response.parquet' (FORMAT parquet, COMPRESSION snappy)
        """
    )
    con.execute(
        f"""
        COPY (
          SELECT '{sid}' AS survey_id, response_id, exported_at, e.key AS key,
                 e.value ->> '$' AS value
          FROM (SELECT response_id, exported_at, unnest(map_entries(v)) AS e FROM raw)
          WHERE e.key IN ({allow})
        ) TO '{out}/response_embedded_data.parquet' (FORMAT parquet, COMPRESSION snappy)
        """
    )
    con.execute(
        f"""
        COPY (
          WITH cells AS (
            SELECT response_id, exported_at, {ts('recordedDate')} AS recorded_at, l, d,
                   unnest(map_entries(v)) AS e
            FROM raw
          ), keyed AS (
            SELECT *, e.key AS export_key, e.value AS val,
                   regexp_extract(e.key, '^(?:([^_]+)_)?(QID[0-9]+)(?:_(.*))?$',
                                  ['loop_id', 'question_id', 'rest']) AS p
            FROM cells
            WHERE regexp_matches(e.key, '^(?:[^_]+_)?QID[0-9]+')
          ), answered AS (
            SELECT response_id, exported_at, recorded_at, export_key, p, d,
                   CASE WHEN json_type(val) = 'ARRAY' THEN json_extract(val, '$[*]')
                        ELSE [val] END AS items,
                   CASE WHEN json_type(l[export_key]) = 'ARRAY'
                        THEN json_extract_string(l[export_key], '$[*]')
                        ELSE [l[export_key] ->> '$'] END AS item_labels,
                   json_type(val) = 'ARRAY' AS multi
            FROM keyed
          ), exploded AS (
            SELECT *, unnest(items) AS item, unnest(range(len(items))) AS i
            FROM answered
          ), shown AS (
            SELECT response_id, exported_at, recorded_at, k AS export_key,
                   regexp_extract(k, '^(?:([^_]+)_)?(QID[0-9]+)(?:_(.*))?$',
                                  ['loop_id', 'question_id', 'rest']) AS p
            FROM (SELECT response_id, exported_at, {ts('recordedDate')} AS recorded_at, v,
                         unnest(d) AS k FROM raw)
            WHERE v[k] IS NULL AND regexp_matches(k, '^(?:[^_]+_)?QID[0-9]+')
          ), rows AS (
            SELECT response_id, recorded_at, exported_at, export_key, p,
                   CASE WHEN multi THEN i::INTEGER END AS item_index,
                   item ->> '$' AS code, item_labels[i + 1] AS label,
                   list_contains(d, export_key) AS displayed, true AS answered
            FROM exploded
            UNION ALL
            SELECT response_id, recorded_at, exported_at, export_key, p, NULL, NULL, NULL,
                   true, false
            FROM shown
          )
          SELECT '{sid}' AS survey_id, response_id, recorded_at, exported_at,
                 '{ver}' AS definition_version, export_key,
                 nullif(p.loop_id, '') AS loop_id, p.question_id AS question_id,
                 CASE WHEN p.rest IN ('', 'TEXT', 'NPS_GROUP') THEN NULL
                      ELSE split_part(p.rest, '_', 1) END AS sub_key,
                 CASE WHEN p.rest = 'TEXT' THEN 'text'
                      WHEN p.rest = 'NPS_GROUP' THEN 'nps_group'
                      WHEN p.rest LIKE '%\\_TEXT' ESCAPE '\\' THEN 'choice_text'
                      ELSE 'value' END AS field,
                 item_index,
                 CASE WHEN p.rest NOT LIKE '%TEXT' THEN code END AS code,
                 try_cast(code AS DOUBLE) AS value_num,
                 CASE WHEN p.rest LIKE '%TEXT' THEN code END AS value_text,
                 label, displayed, answered, 'ok' AS decode_status
          FROM rows
        ) TO '{out}/question_response.parquet' (FORMAT parquet, COMPRESSION snappy)
        """
    )
    rows = {}
    for t in ("survey_response", "question_response", "response_embedded_data"):
        rows[t] = con.execute(
            f"SELECT count(*) FROM read_parquet('{out}/{t}.parquet')"
        ).fetchone()[0]
    print(json.dumps({"rows": rows}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
