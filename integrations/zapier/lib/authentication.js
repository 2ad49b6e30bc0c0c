'use strict';

const { api } = require('./http');

// An API key in X-Api-Key, checked with a cheap authenticated GET: one catalog entry
// tidings always has (no database work beyond the key lookup).
module.exports = {
  type: 'custom',
  fields: [
    {
      key: 'baseUrl',
      label: 'Server URL',
      type: 'string',
      required: true,
      helpText: 'Where your CRM is served, e.g. `https://crm.example.com`.',
    },
    {
      key: 'apiKey',
      label: 'API Key',
      type: 'password',
      required: true,
      helpText:
        'An API key with the `events:read`, `events:write` and `webhooks:write` scopes (or `admin`).',
    },
  ],
  test: (z, bundle) =>
    z.request({ url: api(bundle, '/event-types/subscription.disabled') }).then((r) => r.data),
  connectionLabel: (z, bundle) => bundle.authData.baseUrl.replace(/^https?:\/\//, ''),
};
