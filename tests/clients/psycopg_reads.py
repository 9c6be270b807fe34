"""Single-row reads with psycopg 3 for tests/tests/shadow_limited.rs: rows 7, 7, 7 and 8 of
table `probe`, each read with fetchone from a client-side cursor (the whole result sent, one
row taken), from a client-side cursor on a server-side prepared statement, and from a named
(server-side) cursor (DECLARE, then FETCH). Connection from DW_HOST, DW_PORT, DW_USER,
DW_PASSWORD, DW_DB.
"""
import os

import psycopg

IDS = (7, 7, 7, 8)

with psycopg.connect(
    host=os.environ["DW_HOST"],
    port=os.environ["DW_PORT"],
    user=os.environ["DW_USER"],
    password=os.environ["DW_PASSWORD"],
    dbname=os.environ["DW_DB"],
    sslmode="disable",
) as conn:
    with conn.cursor() as cur:
        for i in IDS:
            cur.execute("SELECT id, v AS by_fetchone FROM probe WHERE id = %s", (i,))
            print("fetchone", cur.fetchone())
        for i in IDS:
            cur.execute("SELECT id, v AS by_prepared FROM probe WHERE id = %s", (i,), prepare=True)
            print("prepared fetchone", cur.fetchone())
    conn.commit()
    for i in IDS:
        with conn.cursor(name="one") as cur:
            cur.execute("SELECT id, v AS by_named_cursor FROM probe WHERE id = %s", (i,))
            print("named cursor fetchone", cur.fetchone())
        conn.commit()
