"""The peer of `cdp bench recompute`: DuckDB computes the same tag definitions in SQL (generated from the
definitions by the benchmark) from the same Parquet files, then its results are compared with cdp's, value by
value. Prints one JSON line.

Usage: python3 duckdb_tags.py TAGS.sql CDP_RESULTS.parquet OUT.parquet   (pip install duckdb)
"""
import json
import resource
import sys
import time

import duckdb


def main() -> None:
    sql_path, ours_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    sql = open(sql_path, encoding="utf-8").read()
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET preserve_insertion_order = false")
    start = time.perf_counter()
    con.execute(f"CREATE TABLE r AS {sql}")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    con.execute(f"COPY r TO '{out_path}' (FORMAT parquet)")
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{ours_path}')").fetchall()]
    tags = [c for c in columns if c != "profile"]
    differs = " OR ".join(f'o."{c}" IS DISTINCT FROM d."{c}"' for c in tags)
    joined = f"read_parquet('{ours_path}') o FULL OUTER JOIN r d USING (profile)"
    mismatches = con.execute(f"SELECT count(*) FROM {joined} WHERE {differs}").fetchone()[0]
    examples = []
    if mismatches:
        for c in tags:
            row = con.execute(
                f'SELECT profile, o."{c}"::VARCHAR, d."{c}"::VARCHAR FROM {joined} '
                f'WHERE o."{c}" IS DISTINCT FROM d."{c}" LIMIT 1'
            ).fetchone()
            if row:
                examples.append({"tag": c, "profile": row[0], "cdp": row[1], "duckdb": row[2]})
    rows = con.execute("SELECT count(*) FROM r").fetchone()[0]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_bytes": peak,
                "rows": rows,
                "mismatches": mismatches,
                "examples": examples,
                "duckdb": duckdb.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
