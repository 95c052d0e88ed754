"""Independent readers of the bridge's Delta tables (tests/e2e/analytics_delta.rs).

usage: delta_read.py SPEC_JSON
SPEC: {"azurite": "http://127.0.0.1:PORT", "container": "...", "tables": ["..."],
       "local": {"table": "/dir/with/the/table's/files"}, "rows": true}
("rows": false reads only the logs: the tables' files need not exist.)

For each table: delta-rs (`deltalake`) opens it on Azurite and returns its rows; DuckDB reads the
Parquet files the Delta log names (from a local copy of the table folder) with read_parquet.
Prints one JSON object: {table: {"version", "protocol", "configuration", "files",
"delta_rows", "duckdb_rows"}}; timestamps as integer microseconds since the epoch (UTC).
Exits with os._exit: deltalake's native threads can abort the interpreter at exit
(analytics-layer.md §6.2).
"""
import json
import os
import sys
import traceback


def main():
    spec = json.loads(sys.argv[1])
    os.environ["AZURITE_BLOB_STORAGE_URL"] = spec["azurite"]
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    options = {"use_emulator": "true", "allow_http": "true"}
    out = {}
    for table in spec["tables"]:
        dt = DeltaTable(f"az://{spec['container']}/{table}", storage_options=options)
        p = dt.protocol()
        # No partitions: every file sits in the table's folder.
        files = [u.rsplit("/", 1)[-1] for u in dt.file_uris()]
        entry = {
            "version": dt.version(),
            "protocol": [p.min_reader_version, p.min_writer_version,
                         p.reader_features, p.writer_features],
            "configuration": dt.metadata().configuration,
            "files": files,
            "delta_rows": [],
            "duckdb_rows": [],
        }
        out[table] = entry
        if not spec.get("rows", True):
            continue
        t = dt.to_pyarrow_table()
        cols = []
        for name, col in zip(t.column_names, t.columns):
            if pa.types.is_timestamp(col.type):
                assert col.type.unit == "us" and col.type.tz == "UTC", (name, col.type)
                col = pc.cast(col, pa.int64())
            cols.append(col)
        entry["delta_rows"] = pa.table(cols, names=t.column_names).to_pylist()
        local = spec.get("local", {}).get(table)
        if local and files:
            paths = [os.path.join(local, f) for f in files]
            con = duckdb.connect()
            rel = con.read_parquet(paths)
            select = []
            for name, typ in zip(rel.columns, rel.types):
                q = '"' + name.replace('"', '""') + '"'
                if str(typ).startswith("TIMESTAMP"):
                    assert str(typ) == "TIMESTAMP WITH TIME ZONE", (name, str(typ))
                    select.append(f"epoch_us({q}) AS {q}")
                else:
                    select.append(q)
            res = con.execute(f"SELECT {', '.join(select)} FROM read_parquet(?)", [paths])
            names = [d[0] for d in res.description]
            entry["duckdb_rows"] = [dict(zip(names, r)) for r in res.fetchall()]
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()


try:
    main()
    code = 0
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    code = 1
os._exit(code)
