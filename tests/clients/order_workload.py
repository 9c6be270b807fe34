"""Many connections of two real drivers at once, sharing table names: an asyncpg pool and
psycopg connections on threads drop and recreate the same tables, alter them, write to them
with prepared statements in transactions, and read them in read-only transactions, while
other connections do the same to the same names. Errors the database gives (a table another
connection just dropped, a cached plan gone stale) are counted, as an application would see
them; the caller checks that the target ends up identical to the source.

Connection from the environment: DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB. Prints one
line: `ok N failed M`.
"""
import asyncio
import os
import random
import threading

import asyncpg
import psycopg

ROUNDS = int(os.environ.get("DW_ROUNDS", "40"))
NAMES = 4


def dsn():
    e = os.environ
    return f"host={e['DW_HOST']} port={e['DW_PORT']} user={e['DW_USER']} password={e['DW_PASSWORD']} dbname={e['DW_DB']}"


def recreate_sql(name, who):
    # One statement text: the table appears with its rows, or not at all.
    return (f"CREATE TABLE {name} (id int PRIMARY KEY, v bigint NOT NULL, note text); "
            f"INSERT INTO {name} SELECT g, {who}, 'new' FROM generate_series(0, 19) g")


async def asyncpg_task(pool, task, counts):
    rng = random.Random(task)
    for r in range(ROUNDS):
        name = f"w{rng.randrange(NAMES)}"
        k = rng.randrange(20)
        op = rng.randrange(10)
        try:
            async with pool.acquire() as c:
                if op == 0:
                    await c.execute(f"DROP TABLE {name}")
                elif op == 1:
                    await c.execute(recreate_sql(name, task))
                elif op == 2:
                    await c.execute(f"ALTER TABLE {name} ADD COLUMN c{k % 2} int DEFAULT {task}")
                elif op in (3, 4, 5):
                    async with c.transaction():
                        await c.execute(f"UPDATE {name} SET v = v * 2 + $1, note = $2 WHERE id = $3",
                                        task, f"a{task}-{r}", k)
                        await c.execute("UPDATE counter SET n = n + 1")
                        await c.execute("INSERT INTO ord SELECT n, $1, $2 FROM counter", task, r)
                elif op == 6:
                    async with c.transaction():
                        await c.executemany(
                            f"INSERT INTO {name} (id, v, note) VALUES ($1, $2, 'many') "
                            f"ON CONFLICT (id) DO UPDATE SET v = {name}.v * 3 + EXCLUDED.v",
                            [(i, task) for i in range(k, k + 5)])
                else:
                    async with c.transaction(readonly=True):
                        await c.fetchrow(f"SELECT v, note FROM {name} WHERE id = $1", k)
            counts[0] += 1
        except (asyncpg.PostgresError, asyncpg.InterfaceError):
            counts[1] += 1


def psycopg_thread(task, counts, lock):
    rng = random.Random(1000 + task)
    ok = failed = 0
    with psycopg.connect(dsn()) as conn:
        for r in range(ROUNDS):
            name = f"w{rng.randrange(NAMES)}"
            k = rng.randrange(20)
            op = rng.randrange(8)
            try:
                with conn.cursor() as cur:
                    if op == 0:
                        cur.execute(f"DROP TABLE {name}")
                    elif op == 1:
                        cur.execute(recreate_sql(name, 100 + task))
                    elif op in (2, 3, 4):
                        cur.execute(f"UPDATE {name} SET v = v * 5 + %s, note = %s WHERE id = %s",
                                    (task, f"p{task}-{r}", k), prepare=True)
                        cur.execute("UPDATE counter SET n = n + 1")
                        cur.execute("INSERT INTO ord SELECT n, %s, %s FROM counter", (100 + task, r))
                    elif op == 5:
                        cur.execute(f"ALTER TABLE {name} DROP COLUMN c{k % 2}")
                    else:
                        cur.execute(f"SELECT v FROM {name} WHERE id = %s", (k,), prepare=True)
                        cur.fetchone()
                conn.commit()
                ok += 1
            except psycopg.Error:
                conn.rollback()
                failed += 1
    with lock:
        counts[0] += ok
        counts[1] += failed


async def main():
    counts = [0, 0]
    lock = threading.Lock()
    threads = [threading.Thread(target=psycopg_thread, args=(t, counts, lock)) for t in range(4)]
    for t in threads:
        t.start()
    e = os.environ
    pool = await asyncpg.create_pool(host=e["DW_HOST"], port=int(e["DW_PORT"]), user=e["DW_USER"],
                                     password=e["DW_PASSWORD"], database=e["DW_DB"],
                                     min_size=8, max_size=8)
    async_counts = [0, 0]
    await asyncio.gather(*(asyncpg_task(pool, t, async_counts) for t in range(12)))
    await pool.close()
    for t in threads:
        t.join()
    with lock:
        print("ok", counts[0] + async_counts[0], "failed", counts[1] + async_counts[1])


asyncio.run(main())
