// A third-party webhook receiver, written the way the docs' Node.js snippet tells
// integrators to write one: express.raw() keeps the exact bytes, the signature is
// "sha256=" + hex HMAC-SHA256 keyed by the whole secret string over `${timestamp}.${rawBody}`,
// compared with crypto.timingSafeEqual after a length check. Nothing here knows tidings.
//
// Env: WEBHOOK_SECRET (the subscription's signing secret), PORT, HOST (default 127.0.0.1).
// Stdout: one JSON line when listening ({"listening": port}), then one per request
// ({"path", "status", "valid", "webhookId", "eventId", "timestamp"}).
// GET /results returns the same per-request records as a JSON array.

'use strict';

const crypto = require('crypto');
const express = require('express');

const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;
const PORT = Number(process.env.PORT);
const HOST = process.env.HOST || '127.0.0.1';

if (!WEBHOOK_SECRET || !Number.isInteger(PORT)) {
  console.error('WEBHOOK_SECRET and PORT are required');
  process.exit(2);
}

const results = [];

function verifySignature(rawBody, timestamp, signature, secret) {
  const expected =
    'sha256=' +
    crypto.createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest('hex');
  const expectedBuf = Buffer.from(expected);
  const signatureBuf = Buffer.from(signature || '');
  if (expectedBuf.length !== signatureBuf.length) {
    return false;
  }
  return crypto.timingSafeEqual(expectedBuf, signatureBuf);
}

const app = express();

app.post('*', express.raw({ type: 'application/json' }), (req, res) => {
  const timestamp = req.get('X-Webhook-Timestamp');
  const signature = req.get('X-Webhook-Signature');
  const rawBody = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const valid = Boolean(timestamp) && verifySignature(rawBody, timestamp, signature, WEBHOOK_SECRET);

  let eventId = null;
  if (valid) {
    eventId = JSON.parse(rawBody.toString('utf8')).id;
  }
  const status = valid ? 200 : 401;
  const record = {
    path: req.path,
    status,
    valid,
    webhookId: req.get('X-Webhook-Id') || null,
    eventId,
    timestamp: timestamp || null,
  };
  results.push(record);
  process.stdout.write(JSON.stringify(record) + '\n');

  if (!valid) {
    return res.status(401).json({ error: 'Invalid signature' });
  }
  return res.status(200).json({ received: true });
});

app.get('/results', (req, res) => res.json(results));

const server = app.listen(PORT, HOST, () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port }) + '\n');
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
