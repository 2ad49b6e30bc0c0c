'use strict';

// The CRM's records as its actions and searches return them: output fields and samples
// come from the catalog (each record is the payload of the event its action emits).

const catalog = require('../catalog.json');
const { outputFields } = require('./fields');

const eventType = (name) => {
  const found = catalog.find((t) => t.name === name);
  if (!found) {
    throw new Error(`catalog.json has no ${name}; run npm run catalog`);
  }
  return found;
};

const ID_FIELD = { key: 'id', label: 'ID', type: 'string' };

// `id` (the record's own identifier) is what Zapier shows and deduplicates on.
const withId = (record, idKey) => ({ id: record[idKey], ...record });

const record = (name, idKey) => {
  const type = eventType(name);
  return {
    idKey,
    outputFields: [ID_FIELD, ...outputFields(type.schema)],
    sample: withId(type.samplePayload, idKey),
  };
};

const RECORDS = {
  client: record('client.created', 'clientId'),
  lead: record('lead.created', 'leadId'),
  note: record('note.created', 'noteId'),
  payment: record('payment.succeeded', 'paymentId'),
  invoice: record('invoice.created', 'invoiceId'),
  agreement: record('agreement.signed', 'agreementId'),
};

module.exports = { RECORDS, withId, eventType, outputFields };
