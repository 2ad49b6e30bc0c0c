'use strict';

// A real `tidings dev` on a free port with its own data directory, and a receiver on
// 127.0.0.1 standing in for Zapier's target URLs. Every wait is bounded.

const { spawn } = require('node:child_process');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// true if the promise settles within ms; the timer never outlives the race
const settlesWithin = async (promise, ms) => {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
};

const waitFor = async (what, check, timeoutMs = 15000, everyMs = 25) => {
  const deadline = Date.now() + timeoutMs;
  for (let tries = 0; tries < Math.ceil(timeoutMs / everyMs) + 1; tries += 1) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      break;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
};

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

// The repository's Python (make test creates .venv), or TIDINGS_PYTHON.
const python = () => process.env.TIDINGS_PYTHON || path.join(REPO, '.venv', 'bin', 'python');

const startTidings = async () => {
  const interpreter = python();
  if (!fs.existsSync(interpreter)) {
    throw new Error(
      `no Python at ${interpreter}: run make test (or make dev) at the repository root ` +
        'first, or set TIDINGS_PYTHON to a Python with tidings installed',
    );
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-zapier-'));
  const port = await freePort();
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('TIDINGS_')),
  );
  Object.assign(env, {
    TIDINGS_DATA_DIR: dataDir,
    TIDINGS_ENV: 'development',
    TIDINGS_DISPATCHER_POLL_INTERVAL: '0.05',
    TIDINGS_RETRY_BASE_DELAY: '0.05',
    TIDINGS_RETRY_MAX_DELAY: '0.2',
    TIDINGS_ACCESS_LOG: 'false',
  });
  const logPath = path.join(dataDir, 'tidings.log');
  const log = fs.openSync(logPath, 'a');
  const child = spawn(interpreter, ['-m', 'tidings.cli', 'dev', '--port', String(port)], {
    env,
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  child.once('error', () => {}); // a failed spawn also exits; the waits below report it
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const baseUrl = `http://127.0.0.1:${port}`;
  const logTail = () =>
    fs.existsSync(logPath)
      ? fs.readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n')
      : '';

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      if (!(await settlesWithin(exited, 15000))) {
        child.kill('SIGKILL');
        await settlesWithin(exited, 5000);
      }
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };

  try {
    const keyFile = path.join(dataDir, 'dev-api-key');
    const apiKey = await waitFor(
      'tidings dev to write its key',
      () => {
        if (child.exitCode !== null) {
          throw new Error(`tidings dev exited with ${child.exitCode}:\n${logTail()}`);
        }
        return fs.existsSync(keyFile) && fs.readFileSync(keyFile, 'utf8').trim();
      },
      30000,
      100,
    );
    await waitFor(
      'tidings dev to answer',
      async () => {
        if (child.exitCode !== null) {
          throw new Error(`tidings dev exited with ${child.exitCode}:\n${logTail()}`);
        }
        try {
          const r = await fetch(`${baseUrl}/api/v1/event-types/subscription.disabled`, {
            headers: { 'X-Api-Key': apiKey },
            signal: AbortSignal.timeout(2000),
          });
          return r.ok;
        } catch (_) {
          return false;
        }
      },
      30000,
      100,
    );
    return { baseUrl, apiKey, stop, logTail };
  } catch (err) {
    await stop();
    throw err;
  }
};

// Records every POST; paths under /gone/ answer 410 (the receiver unsubscribes).
const startReceiver = async () => {
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      received.push({
        path: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      res.writeHead(req.url.startsWith('/gone/') ? 410 : 200).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  const close = () =>
    new Promise((resolve) => {
      server.close(resolve);
      server.closeAllConnections(); // tidings keeps its connections alive
    });
  return { url, received, close };
};

// README "Receiving webhooks": X-Webhook-Signature is sha256=<hex HMAC-SHA256> keyed by the
// whole whsec_ string over "{timestamp}.{body}"; webhook-signature is Standard Webhooks'
// v1,<base64> keyed by the base64-decoded part after whsec_ over "{id}.{timestamp}.{body}".
const verifySignatures = (secret, headers, body) => {
  const timestamp = headers['x-webhook-timestamp'];
  const id = headers['x-webhook-id'];
  const hex = crypto.createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  const expected = Buffer.from(`sha256=${hex}`);
  const got = Buffer.from(headers['x-webhook-signature'] || '');
  const legacy = got.length === expected.length && crypto.timingSafeEqual(got, expected);
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const v1 = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
  const standard = (headers['webhook-signature'] || '').split(' ').includes(`v1,${v1}`);
  const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
  return { legacy, standard, fresh };
};

// assert that `actual` has at least `expected`'s shape: objects match on the keys given,
// arrays element by element, RegExps test strings, anything else is compared strictly.
const like = (actual, expected, at = 'value') => {
  if (expected instanceof RegExp) {
    assert.match(String(actual), expected, `${at}: ${actual} does not match ${expected}`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${at} is not an array: ${JSON.stringify(actual)}`);
    assert.equal(actual.length, expected.length, `${at} has ${actual.length} items`);
    expected.forEach((item, i) => like(actual[i], item, `${at}[${i}]`));
  } else if (expected !== null && typeof expected === 'object') {
    assert.ok(actual !== null && typeof actual === 'object', `${at} is not an object`);
    for (const [key, value] of Object.entries(expected)) {
      like(actual[key], value, `${at}.${key}`);
    }
  } else {
    assert.equal(
      actual,
      expected,
      `${at}: ${JSON.stringify(actual)} != ${JSON.stringify(expected)}`,
    );
  }
};

module.exports = { startTidings, startReceiver, verifySignatures, waitFor, sleep, like };
