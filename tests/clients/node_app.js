// An application written with node-postgres (`pg`, a protocol implementation in JavaScript),
// run by tests/tests/proxy_drivers.rs once through dualwrite-proxy and once directly against
// PostgreSQL: it prints a transcript of everything it saw, and the two must be identical.
//
// Connection from the environment: DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB, and
// DW_SSLROOTCERT for TLS with the certificate and name verified.
// Exercises unnamed and named prepared statements (Parse/Bind/Describe/Execute/Sync per
// query), typed parameters and results, multi-statement simple queries, array row mode,
// transactions with savepoints and rollback, errors with their fields (inside and outside a
// transaction), RETURNING, LISTEN/NOTIFY, and with DW_PROBE_ID one row read after the test
// changed it on the target only.
'use strict';
const fs = require('fs');
const { Client } = require('pg');

const out = [];
const say = (...parts) => out.push(parts.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(' '));

function connect() {
  return new Client({
    host: process.env.DW_HOST,
    port: Number(process.env.DW_PORT),
    user: process.env.DW_USER,
    password: process.env.DW_PASSWORD,
    database: process.env.DW_DB,
    application_name: 'node-app',
    // DW_SSLROOTCERT: TLS, verifying the server's certificate and name against it.
    ssl: process.env.DW_SSLROOTCERT ? { ca: fs.readFileSync(process.env.DW_SSLROOTCERT) } : false,
  });
}

async function main() {
  const c = connect();
  await c.connect();
  await c.query(`CREATE TABLE drv_node (id int PRIMARY KEY, name text, amount numeric(12,2),
                 at timestamptz, data bytea, tags text[], doc jsonb, flag bool)`);

  // Named prepared statement: parsed once per connection, then Bind/Execute only.
  const t0 = Date.UTC(2026, 0, 1);
  for (let i = 1; i <= 100; i++) {
    await c.query({
      name: 'ins',
      text: 'INSERT INTO drv_node VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
      values: [i, `name ${i} 'quoted' \\ back`, (i / 4).toFixed(2), new Date(t0 + i * 60000),
        Buffer.from([i % 256, 0, 255]), [`t${i}`, null, 'x y'], { i, s: 'ü' }, i % 2 === 0],
    });
  }
  say('inserted', (await c.query('SELECT count(*)::int AS n FROM drv_node')).rows[0].n);

  // Unnamed extended-protocol queries with typed results, and array row mode.
  const r = await c.query('SELECT id, name, amount, at, data, tags, doc, flag FROM drv_node WHERE id = ANY($1) ORDER BY id', [[3, 50, 99]]);
  for (const row of r.rows) say('row', row.id, row.name, row.amount, row.at.toISOString(), row.data.toString('hex'), row.tags, row.doc, row.flag);
  const a = await c.query({ text: 'SELECT $1::int + 1 AS x, $2::text AS y', values: [41, 'z'], rowMode: 'array' });
  say('array mode', a.rows, a.fields.map((f) => [f.name, f.dataTypeID]));

  // Several statements in one simple query.
  const multi = await c.query("UPDATE drv_node SET flag = NOT flag WHERE id <= 10; SELECT count(*)::int AS n FROM drv_node WHERE flag; SELECT 'done' AS s");
  say('multi', multi.map((m) => [m.command, m.rowCount, m.rows]));

  // Transactions: a savepoint rolled back, then a whole transaction rolled back.
  await c.query('BEGIN');
  await c.query("INSERT INTO drv_node (id, name) VALUES (1001, 'kept')");
  await c.query('SAVEPOINT s1');
  try {
    await c.query("INSERT INTO drv_node (id, name) VALUES (1, 'duplicate')");
  } catch (e) {
    say('error', e.code, e.constraint, e.table, e.severity, e.message);
    await c.query('ROLLBACK TO SAVEPOINT s1');
  }
  await c.query("INSERT INTO drv_node (id, name) VALUES (1002, 'kept too')");
  await c.query('COMMIT');
  await c.query('BEGIN');
  const del = await c.query('DELETE FROM drv_node WHERE id > 90');
  say('deleted', del.rowCount);
  await c.query('ROLLBACK');

  // Writes returning rows, and an error between them.
  for (let i = 0; i < 20; i++) {
    say('returning', (await c.query('UPDATE drv_node SET amount = amount + $1 WHERE id = $2 RETURNING id, amount', [1, (i % 5) + 20])).rows);
  }
  say('sum', (await c.query('SELECT sum(amount)::text AS s FROM drv_node WHERE id BETWEEN 20 AND 24')).rows);

  // An error outside a transaction leaves the session usable.
  try {
    await c.query('SELECT * FROM no_such_table');
  } catch (e) {
    say('error', e.code, e.message, e.position);
  }

  // LISTEN/NOTIFY between two connections.
  const l = connect();
  await l.connect();
  const got = new Promise((resolve) => l.on('notification', (n) => resolve(n)));
  await l.query('LISTEN drv_channel');
  await c.query("NOTIFY drv_channel, 'hello from node'");
  let timer;
  const timeout = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error('no notification in 10 s')), 10000); });
  const n = await Promise.race([got, timeout]);
  clearTimeout(timer);
  say('notify', n.channel, n.payload);
  await l.end();

  for (const row of (await c.query('SELECT id, name, amount::text, at, data, tags, doc, flag FROM drv_node ORDER BY id')).rows) {
    say('final', row.id, row.name, row.amount, row.at && row.at.toISOString(), row.data && row.data.toString('hex'), row.tags, row.doc, row.flag);
  }

  // DW_PROBE_ID: say READY, wait for a line on stdin (meanwhile the test changes that row on
  // the target only), then read the row with the usual single-row query. The answer is the
  // source's; the proxy's shadow report flags the read.
  if (process.env.DW_PROBE_ID) {
    console.log('READY');
    await new Promise((resolve) => process.stdin.once('data', () => {
      process.stdin.pause();
      resolve();
    }));
    const p = await c.query('SELECT id, name, amount::text, at, data, tags, doc, flag FROM drv_node WHERE id = $1', [Number(process.env.DW_PROBE_ID)]);
    const row = p.rows[0];
    say('probe', row.id, row.name, row.amount, row.at && row.at.toISOString(), row.data && row.data.toString('hex'), row.tags, row.doc, row.flag);
  }
  await c.end();
  console.log(out.join('\n'));
}

main().catch((e) => {
  console.log(out.join('\n'));
  console.error('node app failed:', e);
  process.exit(1);
});
