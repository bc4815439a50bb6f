"""ID stitching the way warehouse teams do it, in DuckDB SQL: iterative label propagation (every identifier
takes the smallest label among itself and its neighbours) until no label changes. The peer of
`cdp bench identity`; it reads the same links and prints one JSON line.

Usage: python3 duckdb_stitch.py LINKS.csv N   (pip install duckdb)
"""
import json
import sys
import time

import duckdb


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2])
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    start = time.perf_counter()
    con.execute(
        "CREATE TABLE links AS SELECT * FROM read_csv(?, header = false, "
        "columns = {'a': 'UINTEGER', 'b': 'UINTEGER'})",
        [path],
    )
    load_seconds = time.perf_counter() - start

    start = time.perf_counter()
    con.execute("CREATE TABLE edges AS SELECT a, b FROM links UNION ALL SELECT b, a FROM links")
    con.execute(f"CREATE TABLE labels AS SELECT range::UINTEGER AS id, range::UINTEGER AS label FROM range({n})")
    iterations = 0
    while True:
        iterations += 1
        con.execute(
            """
            CREATE OR REPLACE TABLE next AS
            SELECT l.id, LEAST(l.label, COALESCE(m.label, l.label)) AS label
            FROM labels l
            LEFT JOIN (
                SELECT e.a AS id, MIN(n.label) AS label
                FROM edges e JOIN labels n ON e.b = n.id
                GROUP BY e.a
            ) m ON l.id = m.id
            """
        )
        changed = con.execute(
            "SELECT COUNT(*) FROM next x JOIN labels l USING (id) WHERE x.label <> l.label"
        ).fetchone()[0]
        con.execute("DROP TABLE labels")
        con.execute("ALTER TABLE next RENAME TO labels")
        if changed == 0:
            break
    seconds = time.perf_counter() - start
    components, label_sum, mixed = con.execute(
        "SELECT COUNT(DISTINCT label), SUM(label::HUGEINT)::VARCHAR, "
        "SUM(id::HUGEINT * 31 + label::HUGEINT)::VARCHAR FROM labels"
    ).fetchone()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "load_seconds": load_seconds,
                "iterations": iterations,
                "components": components,
                "label_sum": label_sum,
                "mixed_sum": mixed,
                "duckdb": duckdb.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
