// Verify a tidings delivery signed with ed25519 (Standard Webhooks, asymmetric).
// webhook-signature holds space-separated "v1a,<base64>" Ed25519 signatures of
// "{webhook-id}.{webhook-timestamp}.{raw body}"; verify with the subscription's whpk_
// public key (base64 of the raw 32-byte key).
const crypto = require("crypto");

const TOLERANCE_SECONDS = 300;

// headers: lower-case names (as Node's req.headers); rawBody: a Buffer, exactly as received.
function verifyWebhook(publicKey, headers, rawBody) {
  if (!publicKey.startsWith("whpk_")) return false;
  const raw = Buffer.from(publicKey.slice("whpk_".length), "base64");
  const key = crypto.createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") },
    format: "jwk",
  });
  const msgId = headers["webhook-id"] || "";
  const timestamp = headers["webhook-timestamp"] || "";
  if (!/^\d+$/.test(timestamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const message = Buffer.concat([Buffer.from(`${msgId}.${timestamp}.`), rawBody]);
  return (headers["webhook-signature"] || "").split(" ").some((entry) => {
    const [version, value] = entry.split(",", 2);
    if (version !== "v1a" || !value) return false;
    return crypto.verify(null, message, key, Buffer.from(value, "base64"));
  });
}

module.exports = { verifyWebhook };
