// tidings "rsa-sha256" subscriptions: X-WH-Signature = base64 RSASSA-PKCS1-v1_5 SHA-256
// signature of the body; publicKey is the subscription's public key PEM
// (-----BEGIN PUBLIC KEY-----). The body is compact JSON exactly as JSON.stringify prints
// it, so the raw body and a re-serialized one verify alike:
//   app.post('/hooks', express.json(), (req, res) => {
//     const valid = verifySignature(JSON.stringify(req.body), req.get('X-WH-Signature'), PUBLIC_KEY);
// Nothing signed says when it was sent: drop repeats of X-Webhook-Id.
const crypto = require('crypto');

function verifySignature(payload, signature, publicKey) {
  const verifier = crypto.createVerify('SHA256');
  verifier.update(payload);
  verifier.end();
  return verifier.verify(publicKey, signature, 'base64');
}
