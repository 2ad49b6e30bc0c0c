// A third-party webhook receiver, written the way the docs' Node.js snippets tell
// integrators to write one. It verifies with a snippet file run verbatim (SNIPPET: one of
// src/tidings/portal/snippets/*.node.js, each defining verifySignature) and calls it as that
// scheme's docs do:
//   hmac, hmac-body, ed25519: with the raw body (express.raw());
//   rsa-sha256: GoHighLevel's way, with JSON.stringify(req.body) after express.json().
// Nothing here knows tidings.
//
// Env: SCHEME (default hmac), SNIPPET (path), WEBHOOK_SECRET (the subscription's signing
// secret, or its public key for ed25519 and rsa-sha256), PORT, HOST (default 127.0.0.1).
// Stdout: one JSON line when listening ({"listening": port}), then one per request
// ({"path", "status", "valid", "webhookId", "eventId", "timestamp", "signed"}; "signed"
// holds the raw body and the signature headers, so a test can replay them altered).
// GET /results returns the same per-request records as a JSON array.

'use strict';

const fs = require('fs');
const express = require('express');

const SCHEME = process.env.SCHEME || 'hmac';
const SNIPPET = process.env.SNIPPET;
const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;
const PORT = Number(process.env.PORT);
const HOST = process.env.HOST || '127.0.0.1';

if (!WEBHOOK_SECRET || !SNIPPET || !Number.isInteger(PORT)) {
  console.error('WEBHOOK_SECRET, SNIPPET and PORT are required');
  process.exit(2);
}

// The snippet's text, unchanged, in a function scope that hands back what it defines.
const verifySignature = new Function(
  'require',
  `${fs.readFileSync(SNIPPET, 'utf8')}\nreturn verifySignature;`,
)(require);

const SIGNATURE_HEADERS = [
  'X-Webhook-Id',
  'X-Webhook-Timestamp',
  'X-Webhook-Signature',
  'X-WH-Signature',
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
];

const SCHEMES = {
  hmac: {
    parse: express.raw({ type: 'application/json' }),
    check: (req) =>
      verifySignature(
        req.body,
        req.get('X-Webhook-Timestamp'),
        req.get('X-Webhook-Signature'),
        WEBHOOK_SECRET,
      ),
  },
  'hmac-body': {
    parse: express.raw({ type: 'application/json' }),
    check: (req) => verifySignature(req.body, req.get('X-Webhook-Signature'), WEBHOOK_SECRET),
  },
  ed25519: {
    parse: express.raw({ type: 'application/json' }),
    check: (req) =>
      verifySignature(
        req.body,
        req.get('webhook-id'),
        req.get('webhook-timestamp'),
        req.get('webhook-signature'),
        WEBHOOK_SECRET,
      ),
  },
  'rsa-sha256': {
    parse: express.json({
      verify: (req, res, buf) => {
        req.rawBody = buf;
      },
    }),
    check: (req) =>
      verifySignature(JSON.stringify(req.body), req.get('X-WH-Signature'), WEBHOOK_SECRET),
  },
};

const scheme = SCHEMES[SCHEME];
if (!scheme) {
  console.error(`unknown SCHEME ${SCHEME}`);
  process.exit(2);
}

const results = [];

function rawBodyOf(req) {
  if (Buffer.isBuffer(req.rawBody)) {
    return req.rawBody;
  }
  return Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
}

const app = express();

app.post('*', scheme.parse, (req, res) => {
  const rawBody = rawBodyOf(req);
  let valid = false;
  try {
    valid = Boolean(scheme.check(req));
  } catch (err) {
    valid = false; // a missing header or a malformed signature: not verified
  }

  let eventId = null;
  if (valid) {
    eventId = JSON.parse(rawBody.toString('utf8')).id;
  }
  const headers = {};
  for (const name of SIGNATURE_HEADERS) {
    if (req.get(name) !== undefined) {
      headers[name] = req.get(name);
    }
  }
  const status = valid ? 200 : 401;
  const record = {
    path: req.path,
    status,
    valid,
    webhookId: req.get('X-Webhook-Id') || null,
    eventId,
    timestamp: req.get('X-Webhook-Timestamp') || null,
    signed: { body: rawBody.toString('utf8'), headers },
  };
  results.push(record);
  process.stdout.write(JSON.stringify(record) + '\n');

  if (!valid) {
    return res.status(401).json({ error: 'Invalid signature' });
  }
  return res.status(200).json({ received: true });
});

// A body express.json() cannot parse never reaches the route: record it as unverified.
app.use((err, req, res, next) => {
  const record = {
    path: req.path,
    status: 400,
    valid: false,
    webhookId: req.get('X-Webhook-Id') || null,
    eventId: null,
    timestamp: req.get('X-Webhook-Timestamp') || null,
    signed: null,
  };
  results.push(record);
  process.stdout.write(JSON.stringify(record) + '\n');
  res.status(400).json({ error: 'Invalid body' });
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
