// Verify a tidings delivery signed with rsa-sha256 (GoHighLevel style).
// X-WH-Signature is the base64 RSASSA-PKCS1-v1_5 SHA-256 signature of the raw body;
// verify it with the subscription's public key (PEM).
const crypto = require("crypto");

// headers: lower-case names (as Node's req.headers); rawBody: a Buffer, exactly as received.
function verifyWebhook(publicKeyPem, headers, rawBody) {
  const signature = headers["x-wh-signature"];
  if (!signature) return false;
  return crypto.createVerify("SHA256").update(rawBody).verify(publicKeyPem, signature, "base64");
}

module.exports = { verifyWebhook };
