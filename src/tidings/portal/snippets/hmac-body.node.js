// Verify a tidings delivery signed with hmac-body (Workestra style).
// X-Webhook-Signature is "sha256=" + the hex HMAC-SHA256 of the raw body alone, keyed by
// the whole secret string (UTF-8). No timestamp is signed: deduplicate on X-Webhook-Id.
const crypto = require("crypto");

// headers: lower-case names (as Node's req.headers); rawBody: a Buffer, exactly as received.
function verifyWebhook(secret, headers, rawBody) {
  const expected = Buffer.from(
    "sha256=" + crypto.createHmac("sha256", secret).update(rawBody).digest("hex"),
  );
  const given = Buffer.from(headers["x-webhook-signature"] || "");
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

module.exports = { verifyWebhook };
