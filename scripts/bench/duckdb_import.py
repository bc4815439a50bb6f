"""The peer of `cdp bench import`: DuckDB's `read_csv` of the same CRM contacts file.

Reads the whole file into a table (every column parsed, as an import must) and prints one JSON line: rows,
seconds and rows per second, and the process's peak memory.
"""

import json
import resource
import sys
import time

import duckdb


def main() -> None:
    path = sys.argv[1]
    con = duckdb.connect()
    start = time.perf_counter()
    con.execute("CREATE TABLE contacts AS SELECT * FROM read_csv(?, header = true)", [path])
    rows = con.execute("SELECT count(*) FROM contacts").fetchone()[0]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"duckdb": duckdb.__version__, "rows": rows, "seconds": seconds,
                      "rowsPerSecond": rows / seconds, "peakBytes": peak}))


if __name__ == "__main__":
    main()
