// tidings "ed25519" subscriptions (Standard Webhooks v1a): webhook-signature holds
// "v1a,<base64 Ed25519 signature>" values (several during a key rotation) of
// `${webhook-id}.${webhook-timestamp}.${rawBody}`; publicKey is the subscription's whpk_ key.
// rawBody: the exact bytes received, e.g. with express.raw({ type: 'application/json' }).
//   verifySignature(req.body, req.get('webhook-id'), req.get('webhook-timestamp'),
//                   req.get('webhook-signature'), PUBLIC_KEY)
// Also drop repeats of webhook-id.
const crypto = require('crypto');

const TOLERANCE_SECONDS = 300;

function verifySignature(rawBody, webhookId, timestamp, signatureHeader, publicKey) {
  if (!/^[0-9]+$/.test(timestamp || '')) {
    return false;
  }
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) {
    return false;
  }
  const raw = Buffer.from(publicKey.replace(/^whpk_/, ''), 'base64');
  const key = crypto.createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') },
    format: 'jwk',
  });
  const signed = Buffer.concat([Buffer.from(`${webhookId}.${timestamp}.`), rawBody]);
  return (signatureHeader || '').split(' ').some((value) => {
    const [version, signature] = value.split(',');
    return (
      version === 'v1a' &&
      signature !== undefined &&
      crypto.verify(null, signed, key, Buffer.from(signature, 'base64'))
    );
  });
}
