// tidings "hmac" subscriptions: X-Webhook-Signature = "sha256=" + hex HMAC-SHA256, keyed by
// the whole signing secret string (whsec_...), over `${X-Webhook-Timestamp}.${rawBody}`.
// rawBody: the exact bytes received, e.g. with express.raw({ type: 'application/json' }).
//   verifySignature(req.body, req.get('X-Webhook-Timestamp'), req.get('X-Webhook-Signature'), SECRET)
// Also check that the timestamp is recent, and drop repeats of X-Webhook-Id.
const crypto = require('crypto');

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
