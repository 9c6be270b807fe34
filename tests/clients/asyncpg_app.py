"""An application written with asyncpg (its own protocol implementation, binary format
throughout), run by tests/tests/proxy_drivers.rs once through dualwrite-proxy and once directly
against PostgreSQL: it prints a transcript of everything it saw, and the two must be identical.

Connection from the environment: DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB, and
DW_SSLROOTCERT for TLS with the certificate and name verified.
Exercises what asyncpg does on the wire: every query a named prepared statement from its
statement cache (Parse and Describe once, then Bind/Execute in binary), executemany pipelined,
explicit prepared statements, cursors (named portals fetched in pieces inside a transaction),
COPY in (records) and out, errors with their fields, nested transactions (savepoints),
LISTEN/NOTIFY (the sender's pid in a notification is the one the driver was given and the one
`pg_backend_pid()` returns, as applications that skip their own notifications expect), an
executemany whose server error arrives while asyncpg is still sending (it must stop early), and
with DW_PROBE_ID one row read with fetchrow after the test changed it on the target only.
"""
import asyncio
import datetime
import decimal
import io
import json
import os
import ssl
import sys

import asyncpg

out = []


def say(*parts):
    out.append(" ".join(str(p) for p in parts))


async def connect():
    # DW_SSLROOTCERT: connect over TLS, verifying the server's certificate and name against it.
    root = os.environ.get("DW_SSLROOTCERT")
    return await asyncpg.connect(
        host=os.environ["DW_HOST"],
        port=int(os.environ["DW_PORT"]),
        user=os.environ["DW_USER"],
        password=os.environ["DW_PASSWORD"],
        database=os.environ["DW_DB"],
        ssl=ssl.create_default_context(cafile=root) if root else False,
        server_settings={"application_name": "asyncpg-app"},
    )


T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


async def main():
    c = await connect()
    await c.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await c.execute(
        "CREATE TABLE drv_asyncpg (id int PRIMARY KEY, name text, amount numeric(12,2),"
        " at timestamptz, data bytea, tags text[], doc jsonb, flag bool)"
    )
    rows = [
        (i, f"name {i} 'quoted' \\ back", decimal.Decimal(i) / 4, T0 + datetime.timedelta(minutes=i),
         bytes([i % 256, 0, 255]), [f"t{i}", None, "x y"], {"i": i, "s": "ü"}, i % 2 == 0)
        for i in range(1, 101)
    ]
    await c.executemany("INSERT INTO drv_asyncpg VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows)
    say("executemany", await c.fetchval("SELECT count(*) FROM drv_asyncpg"))

    # The statement cache: the same query many times, with parameters.
    for i in (3, 50, 99, 3):
        r = await c.fetchrow("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_asyncpg WHERE id = $1", i)
        say("cached", tuple(r))

    # An explicit prepared statement and its description.
    st = await c.prepare("SELECT id, amount FROM drv_asyncpg WHERE id BETWEEN $1 AND $2 ORDER BY id")
    say("prepared", [(a.name, a.type.name) for a in st.get_attributes()], [p.name for p in st.get_parameters()])
    say("prepared rows", [tuple(r) for r in await st.fetch(10, 13)])

    # A cursor: a named portal fetched a few rows at a time, in a transaction.
    async with c.transaction():
        ids = [r["id"] async for r in c.cursor("SELECT id FROM drv_asyncpg WHERE id < $1 ORDER BY id", 60, prefetch=7)]
        say("cursor", len(ids), ids[:3], ids[-3:])
        cur = await c.cursor("SELECT id FROM drv_asyncpg ORDER BY id DESC")
        say("cursor fetch", [r["id"] for r in await cur.fetch(4)])
        await cur.forward(10)
        say("cursor forward", (await cur.fetchrow())["id"])

    # Nested transactions are savepoints; errors carry their fields.
    async with c.transaction():
        await c.execute("INSERT INTO drv_asyncpg (id, name) VALUES (1001, 'kept')")
        try:
            async with c.transaction():
                await c.execute("INSERT INTO drv_asyncpg (id, name) VALUES (1, 'duplicate')")
        except asyncpg.UniqueViolationError as e:
            say("error", e.sqlstate, e.constraint_name, e.table_name, e.detail)
        await c.execute("UPDATE drv_asyncpg SET flag = NOT flag WHERE id <= $1", 10)
    tr = c.transaction()
    await tr.start()
    say("deleted", await c.execute("DELETE FROM drv_asyncpg WHERE id > 90"))
    await tr.rollback()
    try:
        await c.fetch("SELECT * FROM no_such_table")
    except asyncpg.UndefinedTableError as e:
        say("error", e.sqlstate, str(e), e.position)

    # RETURNING.
    say("returning", sorted(tuple(r) for r in await c.fetch(
        "UPDATE drv_asyncpg SET amount = amount * 2 WHERE id = ANY($1::int[]) RETURNING id, amount", [5, 6])))

    # COPY in from records (binary COPY) and out as text.
    say("copy in", await c.copy_records_to_table(
        "drv_asyncpg", records=[(i, f"copied\t{i}\n", decimal.Decimal("1.50"), ["a", "b,c"]) for i in range(2000, 2300)],
        columns=["id", "name", "amount", "tags"]))
    buf = io.BytesIO()
    say("copy out", await c.copy_from_query(
        "SELECT id, name, tags FROM drv_asyncpg WHERE id BETWEEN $1 AND $2 ORDER BY id", 2000, 2002, output=buf))
    say("copy out data", buf.getvalue())

    # LISTEN/NOTIFY between two connections. The pids differ from run to run: the transcript
    # says how they relate.
    listener = await connect()
    got = asyncio.get_running_loop().create_future()
    await listener.add_listener("drv_channel", lambda _c, pid, channel, payload: got.set_result((pid, channel, payload)))
    await c.execute("NOTIFY drv_channel, 'hello from asyncpg'")
    pid, channel, payload = await asyncio.wait_for(got, 10)
    say("notify", (channel, payload))
    say("notify sender pid is the sender's", pid == c.get_server_pid(),
        pid == await c.fetchval("SELECT pg_backend_pid()"), pid != listener.get_server_pid())
    # Its own notification: the listener recognises it by its pid.
    own = asyncio.get_running_loop().create_future()
    await listener.add_listener("drv_own", lambda _c, pid, _ch, payload: own.set_result((pid, payload)))
    await listener.execute("NOTIFY drv_own, 'to myself'")
    pid, payload = await asyncio.wait_for(own, 10)
    say("notify own", payload, pid == listener.get_server_pid(),
        pid == await listener.fetchval("SELECT pg_backend_pid()"))
    await listener.close()

    # executemany streams ~32 KiB rows with one Sync; the server rejects the second row at once,
    # and asyncpg stops sending when it sees the error (asyncpg's own
    # test_executemany_server_failure_during_writes, with 512 rows instead of 128: 4 MiB can
    # fit in the sockets' buffers before the error comes back, even directly).
    await c.execute("CREATE TABLE drv_asyncpg_many (a text, b int PRIMARY KEY)")
    pos = 0

    def gen():
        nonlocal pos
        while pos < 512:
            pos += 1
            yield ("a", 0) if pos < 3 else ("a" * 32768, pos)

    try:
        await c.executemany("INSERT INTO drv_asyncpg_many (a, b) VALUES ($1, $2)", gen())
        say("executemany early error: none")
    except asyncpg.UniqueViolationError as e:
        say("executemany early error", e.sqlstate, e.constraint_name, "stopped early:", pos < 512)
    say("executemany early error rows", await c.fetchval("SELECT count(*) FROM drv_asyncpg_many"))

    for r in await c.fetch("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_asyncpg ORDER BY id"):
        say("final", tuple(r))

    # DW_PROBE_ID: say READY, wait for a line on stdin (meanwhile the test changes that row on
    # the target only), then read the row with the usual single-row call. The answer is the
    # source's; the proxy's shadow report flags the read.
    probe = os.environ.get("DW_PROBE_ID")
    if probe:
        print("READY", flush=True)
        sys.stdin.readline()
        r = await c.fetchrow("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_asyncpg WHERE id = $1", int(probe))
        say("probe", tuple(r))
    await c.close()


try:
    asyncio.run(main())
finally:
    print("\n".join(out))
    sys.stdout.flush()
