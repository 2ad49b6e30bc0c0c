// Verify a tidings delivery signed with hmac (X-Webhook-Signature).
// HMAC-SHA256 keyed by the whole secret string (UTF-8) over "{timestamp}.{raw body}";
// during a rotation the header holds several comma-separated values: any may match.
const crypto = require("crypto");

const TOLERANCE_SECONDS = 300;

// headers: lower-case names (as Node's req.headers); rawBody: a Buffer, exactly as received.
function verifyWebhook(secret, headers, rawBody) {
  const timestamp = headers["x-webhook-timestamp"] || "";
  if (!/^\d+$/.test(timestamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const expected = Buffer.from(
    "sha256=" +
      crypto.createHmac("sha256", secret).update(`${timestamp}.`).update(rawBody).digest("hex"),
  );
  return (headers["x-webhook-signature"] || "").split(",").some((value) => {
    const given = Buffer.from(value.trim());
    return given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
}

module.exports = { verifyWebhook };
