"""Runs analytics/sql/duckdb/views.sql over Parquet files made from the decoder's rows.

Usage: analytics_views.py DIR VIEWS_SQL. DIR holds one NDJSON file per table
(`{table}.ndjson`, timestamps as microseconds since the epoch, UTC). Each is written to
Parquet with UTC timestamps (as the bridge's Delta tables hold them), read back with
read_parquet under the table's name, then the views run and each view's rows are printed as
one JSON object {view: [rows]}. The session time zone is not UTC on purpose: the views must
count UTC days whatever the reader's zone.
"""
import json
import sys

import duckdb

TABLES = {
    "survey_response": {
        "survey_id": "VARCHAR", "response_id": "VARCHAR", "exported_at": "BIGINT",
        "source_blob": "VARCHAR", "recorded_at": "BIGINT", "finished": "BOOLEAN",
        "duration_s": "BIGINT", "status": "BIGINT",
    },
    "question_response": {
        "survey_id": "VARCHAR", "response_id": "VARCHAR", "recorded_at": "BIGINT",
        "exported_at": "BIGINT", "definition_version": "VARCHAR", "export_key": "VARCHAR",
        "loop_id": "VARCHAR", "question_id": "VARCHAR", "sub_key": "VARCHAR", "field": "VARCHAR",
        "item_index": "INTEGER", "code": "VARCHAR", "value_num": "DOUBLE", "value_text": "VARCHAR",
        "label": "VARCHAR", "displayed": "BOOLEAN", "answered": "BOOLEAN",
        "decode_status": "VARCHAR",
    },
    "ticket_link": {
        "survey_id": "VARCHAR", "response_id": "VARCHAR", "system": "VARCHAR",
        "ticket_id": "VARCHAR", "ticket_number": "VARCHAR", "state": "VARCHAR",
        "updated_at": "BIGINT", "source": "VARCHAR",
    },
}
TIMESTAMPS = {"exported_at", "recorded_at", "updated_at"}
VIEWS = {
    "v_response_latest": "SELECT survey_id, response_id, epoch_us(exported_at) AS exported_at FROM v_response_latest ORDER BY ALL",
    "v_nps_daily": "SELECT survey_id, question_id, CAST(day AS VARCHAR) AS day, responses, promoters, passives, detractors, nps FROM v_nps_daily ORDER BY ALL",
    "v_question_response_rate": "SELECT * FROM v_question_response_rate ORDER BY ALL",
    "v_detractor_ticket": "SELECT survey_id, response_id, question_id, score, system, ticket_number, ticket_state, minutes_to_ticket FROM v_detractor_ticket ORDER BY ALL",
    "v_ticket_latest": "SELECT system, ticket_id, state, epoch_us(created_at) AS created_at, epoch_us(updated_at) AS updated_at FROM v_ticket_latest ORDER BY ALL",
}


def main(folder, views_sql):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'America/New_York'")
    for table, columns in TABLES.items():
        src = f"{folder}/{table}.ndjson"
        cols = ", ".join(
            f"timezone('UTC', make_timestamp({name})) AS {name}" if name in TIMESTAMPS else name
            for name in columns
        )
        spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
        parquet = f"{folder}/{table}.parquet"
        con.execute(
            f"COPY (SELECT {cols} FROM read_json('{src}', format = 'newline_delimited', columns = {spec})) "
            f"TO '{parquet}' (FORMAT parquet, COMPRESSION snappy)"
        )
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{parquet}')")
    with open(views_sql, encoding="utf-8") as f:
        con.execute(f.read())
    out = {}
    for view, query in VIEWS.items():
        cur = con.execute(query)
        names = [d[0] for d in cur.description]
        out[view] = [dict(zip(names, row)) for row in cur.fetchall()]
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
