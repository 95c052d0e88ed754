"""Charts from the bridge's analytics tables, drawn by standard readers (not by the bridge).

usage: analytics-charts.py --out DIR (--azurite URL [--container NAME] | --azurite-from-env
                           | --local DIR) [--views analytics/sql/duckdb/views.sql]
(--azurite-from-env: AZURITE_BLOB_STORAGE_URL and ANALYTICS_CONTAINER, as
`devkit demo-analytics` sets them.)

delta-rs (`deltalake`) opens the Delta tables (on Azurite, or in a local folder holding one
folder per table), DuckDB runs the shipped views (analytics/sql/duckdb/views.sql) over them,
and matplotlib draws, per ISO week (Monday, UTC): the NPS trend, the response volume, and the
detractors by the state of their ticket. Writes DIR/nps_trend.png, DIR/response_volume.png,
DIR/detractor_tickets.png and DIR/analytics.html (the three charts, the figures as tables, and
the same figures as JSON in <script id="figures">), then prints the HTML's path.
Exits with os._exit: deltalake's native threads can abort the interpreter at exit.
"""
import argparse
import html
import json
import os
import sys
import traceback

TABLES = ["survey_response", "question_response", "ticket_link", "survey"]
# Tables a young deployment may not have yet, as empty tables of the same columns.
EMPTY = {
    "ticket_link": "survey_id VARCHAR, response_id VARCHAR, system VARCHAR, ticket_id VARCHAR,"
                   " ticket_number VARCHAR, state VARCHAR, updated_at TIMESTAMPTZ, source VARCHAR",
    "survey": "survey_id VARCHAR, definition_version VARCHAR, valid_from TIMESTAMPTZ,"
              " name VARCHAR, status VARCHAR, brand_id VARCHAR",
}


def load(args):
    import duckdb
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        if args.local:
            uri, options = os.path.join(args.local, table), None
        else:
            os.environ["AZURITE_BLOB_STORAGE_URL"] = args.azurite
            uri = f"az://{args.container}/{table}"
            options = {"use_emulator": "true", "allow_http": "true"}
        try:
            arrow = DeltaTable(uri, storage_options=options).to_pyarrow_table()
        except TableNotFoundError:
            if table not in EMPTY:
                raise
            # No ticket raised / no definition fetched yet: the queries still need the table.
            con.execute(f"CREATE TABLE {table} ({EMPTY[table]})")
            continue
        con.register(f"{table}_arrow", arrow)
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {table}_arrow")
    with open(args.views, encoding="utf-8") as f:
        con.execute(f.read())
    return con


def rows(con, sql):
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def figures(con):
    week = "CAST(date_trunc('week', {}) AS DATE)"
    nps = rows(con, f"""
        SELECT CAST({week.format('day')} AS VARCHAR) AS week,
               sum(responses) AS responses, sum(promoters) AS promoters,
               sum(passives) AS passives, sum(detractors) AS detractors,
               round(100.0 * (sum(promoters) - sum(detractors)) / sum(responses), 2) AS nps
        FROM v_nps_daily GROUP BY ALL ORDER BY week""")
    volume = rows(con, f"""
        SELECT CAST({week.format("CAST(recorded_at AS DATE)")} AS VARCHAR) AS week,
               count(*) AS responses
        FROM v_response_latest GROUP BY ALL ORDER BY week""")
    tickets = rows(con, f"""
        SELECT CAST({week.format("CAST(recorded_at AS DATE)")} AS VARCHAR) AS week,
               coalesce(ticket_state, 'no ticket') AS state,
               count(DISTINCT response_id) AS detractors
        FROM v_detractor_ticket GROUP BY ALL ORDER BY week, state""")
    surveys = rows(con, """
        SELECT survey_id, arg_max(name, valid_from) AS name FROM survey GROUP BY ALL ORDER BY ALL""")
    return {"nps": nps, "volume": volume, "detractor_tickets": tickets, "surveys": surveys}


# Fewer answers than this in a week: its NPS is drawn hollow, with its count.
SMALL_WEEK = 30


def draw(fig_data, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    weeks = [r["week"] for r in fig_data["nps"]]

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.plot(weeks, [r["nps"] for r in fig_data["nps"]], marker="o", color="#1f77b4")
    # A week with few answers swings NPS to ±100 (the sandbox's live responses, a partial
    # week): hollow points labelled with their count, so nobody reads a trend into them.
    for r in fig_data["nps"]:
        if r["responses"] < SMALL_WEEK:
            ax.plot([r["week"]], [r["nps"]], marker="o", color="white",
                    markeredgecolor="#1f77b4", zorder=3)
            ax.annotate(f"n={r['responses']}", (r["week"], r["nps"]), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8)
    ax.axhline(0, color="#999999", linewidth=0.8)
    ax.set_title("NPS per week")
    ax.set_ylabel("NPS")
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    fig.tight_layout()
    paths["nps_trend"] = os.path.join(out, "nps_trend.png")
    fig.savefig(paths["nps_trend"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    vweeks = [r["week"] for r in fig_data["volume"]]
    ax.bar(vweeks, [r["responses"] for r in fig_data["volume"]], color="#2ca02c")
    ax.set_title("Responses per week")
    ax.set_ylabel("responses")
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    fig.tight_layout()
    paths["response_volume"] = os.path.join(out, "response_volume.png")
    fig.savefig(paths["response_volume"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    tweeks = sorted({r["week"] for r in fig_data["detractor_tickets"]})
    states = sorted({r["state"] for r in fig_data["detractor_tickets"]})
    colors = {"no ticket": "#d62728", "open": "#ff7f0e", "resolved": "#2ca02c",
              "closed": "#17becf", "canceled": "#7f7f7f"}
    bottom = [0] * len(tweeks)
    for state in states:
        counts = {r["week"]: r["detractors"] for r in fig_data["detractor_tickets"]
                  if r["state"] == state}
        heights = [counts.get(w, 0) for w in tweeks]
        ax.bar(tweeks, heights, bottom=bottom, label=state, color=colors.get(state))
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_title("Detractors per week, by the state of their ticket")
    ax.set_ylabel("detractors")
    ax.legend()
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    fig.tight_layout()
    paths["detractor_tickets"] = os.path.join(out, "detractor_tickets.png")
    fig.savefig(paths["detractor_tickets"])
    plt.close(fig)
    return paths


def table(rows_, columns):
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns) + "</tr>"
        for r in rows_
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def page(fig_data, paths, out):
    names = ", ".join(f"{s['name']} ({s['survey_id']})" for s in fig_data["surveys"]) or "no survey"
    img = lambda k, alt: f'<img src="{os.path.basename(paths[k])}" alt="{alt}">'
    text = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>qualtrics-bridge analytics demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>Survey analytics: {html.escape(names)}</h1>
<p>Read from the bridge's Delta tables by delta-rs and DuckDB (the views in
analytics/sql/duckdb/views.sql); weeks start on Monday, UTC.</p>
<h2>NPS trend</h2>{img("nps_trend", "NPS per week")}
{table(fig_data["nps"], ["week", "responses", "promoters", "passives", "detractors", "nps"])}
<h2>Response volume</h2>{img("response_volume", "Responses per week")}
{table(fig_data["volume"], ["week", "responses"])}
<h2>Detractors and their tickets</h2>{img("detractor_tickets", "Detractors by ticket state")}
{table(fig_data["detractor_tickets"], ["week", "state", "detractors"])}
<script type="application/json" id="figures">{json.dumps(fig_data, default=str)}</script>
</body></html>
"""
    path = os.path.join(out, "analytics.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--azurite")
    p.add_argument("--container", default="qualtrics-analytics")
    p.add_argument("--azurite-from-env", action="store_true")
    p.add_argument("--local")
    p.add_argument("--views", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "analytics", "sql", "duckdb", "views.sql"))
    args = p.parse_args()
    if args.azurite_from_env:
        args.azurite = os.environ["AZURITE_BLOB_STORAGE_URL"]
        args.container = os.environ.get("ANALYTICS_CONTAINER", args.container)
    if bool(args.azurite) == bool(args.local):
        p.error("give exactly one of --azurite URL and --local DIR")
    os.makedirs(args.out, exist_ok=True)
    con = load(args)
    fig_data = figures(con)
    paths = draw(fig_data, args.out)
    print(os.path.abspath(page(fig_data, paths, args.out)))
    sys.stdout.flush()


try:
    main()
    code = 0
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    code = 1
os._exit(code)
