// tidings "hmac-body" subscriptions: X-Webhook-Signature = "sha256=" + hex HMAC-SHA256,
// keyed by the whole signing secret string (whsec_...), over the raw body alone.
// rawBody: the exact bytes received, e.g. with express.raw({ type: 'application/json' }).
//   verifySignature(req.body, req.get('X-Webhook-Signature'), SECRET)
// Nothing signed says when it was sent: drop repeats of X-Webhook-Id.
const crypto = require('crypto');

function verifySignature(rawBody, signature, secret) {
  const expected = Buffer.from(
    'sha256=' + crypto.createHmac('sha256', secret).update(rawBody).digest('hex'),
  );
  const received = Buffer.from(signature || '');
  return expected.length === received.length && crypto.timingSafeEqual(expected, received);
}
