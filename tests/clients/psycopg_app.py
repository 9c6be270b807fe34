"""An application written with psycopg 3 (libpq underneath), run by tests/tests/proxy_drivers.rs
once through dualwrite-proxy and once directly against PostgreSQL: it prints a transcript of
everything it saw, and the two transcripts must be identical.

Connection from the environment: DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB, and
DW_SSLROOTCERT for TLS with verify-full (DW_SSLNEGOTIATION=direct: TLS without SSLRequest).
Exercises libpq's pipeline mode (explicit and through executemany), server-side prepared
statements, binary results, named cursors (DECLARE/FETCH), COPY in and out, errors with their
SQLSTATE, transaction rollback and savepoints, LISTEN/NOTIFY, and with DW_PROBE_ID one row read
with fetchone after the test changed it on the target only.
"""
import datetime
import decimal
import os
import sys

import psycopg
from psycopg.types.json import Jsonb

out = []


def say(*parts):
    out.append(" ".join(str(p) for p in parts))


def conninfo():
    # DW_SSLROOTCERT: connect over TLS, verifying the server's certificate and name against it.
    root = os.environ.get("DW_SSLROOTCERT")
    tls = {"sslmode": "verify-full", "sslrootcert": root} if root else {"sslmode": "disable"}
    # DW_SSLNEGOTIATION=direct: start TLS at once, without an SSLRequest (libpq 17+).
    if root and os.environ.get("DW_SSLNEGOTIATION"):
        tls["sslnegotiation"] = os.environ["DW_SSLNEGOTIATION"]
    return psycopg.conninfo.make_conninfo(
        host=os.environ["DW_HOST"],
        port=os.environ["DW_PORT"],
        user=os.environ["DW_USER"],
        password=os.environ["DW_PASSWORD"],
        dbname=os.environ["DW_DB"],
        application_name="psycopg-app",
        **tls,
    )


T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

with psycopg.connect(conninfo()) as conn:
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE drv_psycopg (id int PRIMARY KEY, name text, amount numeric(12,2),"
            " at timestamptz, data bytea, tags text[], doc jsonb, flag bool)"
        )
    conn.commit()

    # executemany: psycopg sends the rows pipelined (libpq pipeline mode).
    rows = [
        (i, f"name {i} 'quoted' \\ back", decimal.Decimal(i) / 4, T0 + datetime.timedelta(minutes=i),
         bytes([i % 256, 0, 255]), [f"t{i}", None, "x y"], Jsonb({"i": i, "s": "ü"}), i % 2 == 0)
        for i in range(1, 101)
    ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO drv_psycopg VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    conn.commit()
    say("executemany", len(rows))

    # Server-side prepared statement, executed many times, text and binary results.
    with conn.cursor() as cur:
        for i in (3, 50, 99):
            cur.execute("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_psycopg WHERE id = %s",
                        (i,), prepare=True)
            say("prepared", cur.fetchone())
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, amount, at, data, tags, doc FROM drv_psycopg WHERE id IN (%s, %s) ORDER BY id",
                    (7, 8))
        for r in cur:
            say("binary", r)
    conn.commit()

    # An explicit pipeline: writes and reads in flight together, one error in the middle.
    try:
        with conn.pipeline():
            with conn.cursor() as cur:
                cur.execute("UPDATE drv_psycopg SET flag = NOT flag WHERE id <= %s", (10,))
                cur.execute("SELECT count(*) FROM drv_psycopg WHERE flag")
                cur.execute("INSERT INTO drv_psycopg (id, name) VALUES (%s, %s)", (1, "duplicate"))
                cur.execute("SELECT 1")
    except psycopg.errors.UniqueViolation as e:
        say("pipeline error", e.sqlstate, e.diag.constraint_name)
    conn.rollback()
    with conn.pipeline():
        with conn.cursor() as cur:
            cur.execute("UPDATE drv_psycopg SET flag = NOT flag WHERE id <= %s", (10,))
            cur.execute("SELECT count(*) FROM drv_psycopg WHERE flag")
            # Fetching inside the pipeline sends Flush: the answers arrive before the Sync.
            say("pipeline count", cur.fetchone())
            cur.execute("UPDATE drv_psycopg SET amount = amount + 1 WHERE id IN (%s, %s) RETURNING id, amount",
                        (11, 12))
            say("pipeline returning", sorted(cur.fetchall()))
            cur.execute("SELECT sum(amount) FROM drv_psycopg WHERE id <= %s", (12,))
    conn.commit()

    # Rollback to a savepoint, then a whole transaction rolled back.
    with conn.cursor() as cur:
        cur.execute("INSERT INTO drv_psycopg (id, name) VALUES (1001, 'kept')")
        with conn.transaction():
            cur.execute("INSERT INTO drv_psycopg (id, name) VALUES (1002, 'kept too')")
        try:
            with conn.transaction():
                cur.execute("INSERT INTO drv_psycopg (id, name) VALUES (1003, 'undone')")
                cur.execute("SELECT 1 / 0")
        except psycopg.errors.DivisionByZero as e:
            say("savepoint error", e.sqlstate)
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("DELETE FROM drv_psycopg WHERE id > 90")
        say("deleted", cur.rowcount)
    conn.rollback()

    # COPY in (rows) and out (text).
    with conn.cursor() as cur:
        with cur.copy("COPY drv_psycopg (id, name, amount, tags) FROM STDIN") as copy:
            for i in range(2000, 2300):
                copy.write_row((i, f"copied\t{i}\n", decimal.Decimal("1.50"), ["a", "b,c"]))
        say("copy in", cur.rowcount)
        with cur.copy("COPY (SELECT id, name, tags FROM drv_psycopg WHERE id BETWEEN 2000 AND 2002 ORDER BY id) TO STDOUT") as copy:
            for block in copy:
                say("copy out", bytes(block))
    conn.commit()

    # A named (server-side) cursor fetched in small batches.
    with conn.cursor(name="walk") as cur:
        cur.itersize = 7
        cur.execute("SELECT id FROM drv_psycopg WHERE id < 60 ORDER BY id")
        ids = [r[0] for r in cur]
        say("named cursor", len(ids), ids[:3], ids[-3:])
    conn.commit()

    # RETURNING from a write.
    with conn.cursor() as cur:
        cur.execute("UPDATE drv_psycopg SET amount = amount * 2 WHERE id IN (%s, %s) RETURNING id, amount",
                    (5, 6))
        say("returning", sorted(cur.fetchall()))
    conn.commit()

    # Everything, read back on the session that wrote it (another session's read could reach
    # the target before this session's last writes: see docs/guide/04-shadow-reads.md).
    for r in conn.execute("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_psycopg ORDER BY id"):
        say("row", r)
    conn.commit()

    # DW_PROBE_ID: say READY, wait for a line on stdin (meanwhile the test changes that row on
    # the target only), then read the row with the usual single-row call. The answer is the
    # source's; the proxy's shadow report flags the read.
    probe = os.environ.get("DW_PROBE_ID")
    if probe:
        print("READY", flush=True)
        sys.stdin.readline()
        with conn.cursor() as cur:
            cur.execute("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_psycopg WHERE id = %s",
                        (int(probe),), prepare=True)
            say("probe", cur.fetchone())
        conn.commit()

# LISTEN/NOTIFY between two connections.
with psycopg.connect(conninfo(), autocommit=True) as listener, \
        psycopg.connect(conninfo(), autocommit=True) as notifier:
    listener.execute("LISTEN drv_channel")
    notifier.execute("SELECT pg_notify('drv_channel', 'hello from psycopg')")
    for n in listener.notifies(timeout=10, stop_after=1):
        say("notify", n.channel, n.payload)

print("\n".join(out))
sys.stdout.flush()
