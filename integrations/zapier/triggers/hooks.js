'use strict';

// One REST Hook trigger per event type of the CRM's catalog (catalog.json, a snapshot of
// GET /api/v1/event-types; `npm run catalog` refreshes it). Zapier subscribes its own
// target URL when a Zap is turned on and unsubscribes it when the Zap is turned off.

const catalog = require('../catalog.json');
const { api } = require('../lib/http');
const { envelopeOutputFields, sampleEnvelope } = require('../lib/fields');

// endpoint.verify is a challenge tidings sends straight to the one endpoint it verifies,
// never through the queue: a hook subscribed to it would never fire.
const NOT_TRIGGERS = new Set(['endpoint.verify']);

const NOUNS = {
  client: 'Client',
  lead: 'Lead',
  note: 'Note',
  payment: 'Payment',
  invoice: 'Invoice',
  agreement: 'Agreement',
  subscription: 'Webhook Subscription',
};

const LABELS = {
  'client.created': 'New Client',
  'client.updated': 'Updated Client',
  'client.status_changed': 'Client Status Changed',
  'lead.created': 'New Lead',
  'lead.converted': 'Lead Converted',
  'note.created': 'New Note',
  'payment.succeeded': 'Payment Succeeded',
  'payment.failed': 'Payment Failed',
  'invoice.created': 'New Invoice',
  'agreement.signed': 'Agreement Signed',
  'subscription.disabled': 'Webhook Subscription Disabled',
};

const keyOf = (name) => name.replace(/[^a-zA-Z0-9]+/g, '_');

const description = (text) => {
  const sentence = text.replace(/^Operational:\s*/, '');
  return `Triggers when ${sentence.charAt(0).toLowerCase()}${sentence.slice(1)}`;
};

const hookTrigger = (eventType) => {
  const noun = eventType.name.split('.')[0];
  return {
    key: keyOf(eventType.name),
    noun: NOUNS[noun] || 'Event',
    display: {
      label: LABELS[eventType.name] || `Event ${eventType.name}`,
      description: description(eventType.description),
    },
    operation: {
      type: 'hook',
      performSubscribe: (z, bundle) =>
        z
          .request({
            method: 'POST',
            url: api(bundle, '/hooks'),
            body: { target_url: bundle.targetUrl, event: eventType.name },
          })
          .then((r) => r.data),
      performUnsubscribe: (z, bundle) =>
        z
          .request({
            method: 'DELETE',
            url: api(bundle, `/hooks/${encodeURIComponent(bundle.subscribeData.id)}`),
          })
          .then(() => ({})),
      // the delivered envelope, as tidings posted it
      perform: (z, bundle) => [bundle.cleanedRequest],
      // recent events of this type, or the catalog's sample when there are none
      performList: (z, bundle) =>
        z
          .request({ url: api(bundle, `/hooks/samples/${encodeURIComponent(eventType.name)}`) })
          .then((r) => r.data),
      sample: sampleEnvelope(eventType),
      outputFields: envelopeOutputFields(eventType),
    },
  };
};

const triggers = catalog.filter((t) => !NOT_TRIGGERS.has(t.name)).map(hookTrigger);

module.exports = { triggers, keyOf, NOT_TRIGGERS };
