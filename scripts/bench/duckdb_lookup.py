"""The peer of `cdp bench api`: point lookups of profiles by identifier in DuckDB.

Loads the NDJSON table (key, profile JSON) into a DuckDB table with a primary key on `key` (an ART index), then
runs each lookup of the keys file one at a time, as a warm service would, and prints one JSON line: latency
percentiles (ms), lookups per second, and how many were found.
"""

import json
import sys
import time

import duckdb


def main() -> None:
    table, keys_file = sys.argv[1], sys.argv[2]
    keys = [line for line in open(keys_file, encoding="utf-8").read().split("\n") if line]
    con = duckdb.connect()
    con.execute("CREATE TABLE profiles (key VARCHAR PRIMARY KEY, profile VARCHAR)")
    con.execute("INSERT INTO profiles SELECT key, profile FROM read_json(?, format = 'newline_delimited', columns = {'key': 'VARCHAR', 'profile': 'VARCHAR'})", [table])
    statement = "SELECT profile FROM profiles WHERE key = ?"
    for key in keys[:100]:
        con.execute(statement, [key]).fetchone()
    latencies = []
    found = 0
    for key in keys:
        start = time.perf_counter()
        row = con.execute(statement, [key]).fetchone()
        if row is not None:
            json.loads(row[0])
            found += 1
        latencies.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(latencies)

    def pick(p: float) -> float:
        return ordered[min(len(ordered), max(1, int(-(-len(ordered) * p // 1)))) - 1]

    print(json.dumps({
        "duckdb": duckdb.__version__,
        "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1],
        "per_second": len(latencies) / (sum(latencies) / 1e3),
        "found": found,
    }))


if __name__ == "__main__":
    main()
