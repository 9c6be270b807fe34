// Reads with node-postgres for tests/tests/shadow_limited.rs, each printing what it got.
// Connection from DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB.
//
// `single`: rows 7, 7, 7 and 8 of table `probe`, each read with a plain query, a named
// prepared statement, and a query with a row limit (`rows: 1`: node-postgres executes the
// portal 1 row at a time, flushing, until it completes, then sends Sync).
// `chunks`: table `wide` three times with `rows: 10`.
'use strict';
const { Client } = require('pg');

const IDS = [7, 7, 7, 8];

async function main(mode) {
  const c = new Client({
    host: process.env.DW_HOST,
    port: Number(process.env.DW_PORT),
    user: process.env.DW_USER,
    password: process.env.DW_PASSWORD,
    database: process.env.DW_DB,
  });
  await c.connect();
  if (mode === 'single') {
    for (const i of IDS) {
      console.log('query', JSON.stringify((await c.query('SELECT id, v AS by_query FROM probe WHERE id = $1', [i])).rows));
    }
    for (const i of IDS) {
      const r = await c.query({ name: 'by_name', text: 'SELECT id, v AS by_name FROM probe WHERE id = $1', values: [i] });
      console.log('named', JSON.stringify(r.rows));
    }
    for (const i of IDS) {
      const r = await c.query({ text: 'SELECT id, v AS by_rows FROM probe WHERE id = $1', values: [i], rows: 1 });
      console.log('rows 1', JSON.stringify(r.rows));
    }
  } else if (mode === 'chunks') {
    for (let k = 0; k < 3; k++) {
      const r = await c.query({ text: 'SELECT id, v AS by_node FROM wide', rows: 10 });
      console.log('chunked', r.rows.length);
    }
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  await c.end();
}

main(process.argv[2]).catch((e) => {
  console.error('node reads failed:', e);
  process.exit(1);
});
