#!/usr/bin/env node
// Writes catalog.json: the event types (name, description, JSON schema, sample payload) of
// a running tidings server, from which the app builds one REST Hook trigger per type.
//   TIDINGS_URL=http://127.0.0.1:8000 TIDINGS_API_KEY=$(cat ../../.tidings/dev-api-key) npm run catalog
// The tests fail when the committed file differs from what `tidings dev` serves.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const main = async () => {
  const base = (process.env.TIDINGS_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
  const key =
    process.env.TIDINGS_API_KEY ||
    fs
      .readFileSync(path.join(__dirname, '..', '..', '..', '.tidings', 'dev-api-key'), 'utf8')
      .trim();
  const response = await fetch(`${base}/api/v1/event-types`, {
    headers: { 'X-Api-Key': key },
    signal: AbortSignal.timeout(10000),
  });
  if (!response.ok) {
    throw new Error(`GET /api/v1/event-types: ${response.status} ${await response.text()}`);
  }
  const target = path.join(__dirname, '..', 'catalog.json');
  fs.writeFileSync(target, JSON.stringify(await response.json(), null, 2) + '\n');
  console.log(`wrote ${target}`);
};

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
