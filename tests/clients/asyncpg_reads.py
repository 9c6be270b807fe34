"""Reads with asyncpg for tests/tests/shadow_limited.rs, one statement per kind of call, each
printing what it got. Connection from DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB.

`single`: rows 7, 7, 7 and 8 of table `probe`, each with fetch (no row limit), fetchrow and
fetchval (an Execute with a row limit of 1), and a prepared statement's fetchrow.
`chunks`: table `wide` three times through an iterable cursor fetching 10 rows at a time in a
transaction (asyncpg binds the portal and executes its first 10 rows in one batch), and once
through Cursor.fetch(10) (the portal is bound in a batch of its own).
"""
import asyncio
import os
import sys

import asyncpg

IDS = (7, 7, 7, 8)


async def main(mode):
    c = await asyncpg.connect(
        host=os.environ["DW_HOST"],
        port=int(os.environ["DW_PORT"]),
        user=os.environ["DW_USER"],
        password=os.environ["DW_PASSWORD"],
        database=os.environ["DW_DB"],
        ssl=False,
    )
    if mode == "single":
        for i in IDS:
            print("fetch", [tuple(r) for r in await c.fetch("SELECT id, v AS by_fetch FROM probe WHERE id = $1", i)])
        for i in IDS:
            print("fetchrow", tuple(await c.fetchrow("SELECT id, v AS by_fetchrow FROM probe WHERE id = $1", i)))
        for i in IDS:
            print("fetchval", await c.fetchval("SELECT v AS by_fetchval FROM probe WHERE id = $1", i))
        st = await c.prepare("SELECT id, v AS by_prepared FROM probe WHERE id = $1")
        for i in IDS:
            print("prepared fetchrow", tuple(await st.fetchrow(i)))
    elif mode == "chunks":
        for _ in range(3):
            async with c.transaction():
                n = 0
                async for _r in c.cursor("SELECT id, v AS by_asyncpg FROM wide", prefetch=10):
                    n += 1
                print("iterated", n)
        async with c.transaction():
            cur = await c.cursor("SELECT id, v AS by_cursor_fetch FROM wide")
            n = 0
            while True:
                rows = await cur.fetch(10)
                if not rows:
                    break
                n += len(rows)
            print("fetched", n)
    else:
        sys.exit(f"unknown mode {mode}")
    await c.close()


asyncio.run(main(sys.argv[1]))
