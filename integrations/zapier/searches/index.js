'use strict';

// The CRM's 2 searches: GET /clients/search and GET /leads/search.

const { api, compact } = require('../lib/http');
const { RECORDS, withId } = require('../lib/records');

const search = ({ key, noun, label, description, inputFields, path, params, record }) => ({
  key,
  noun,
  display: { label, description },
  operation: {
    inputFields,
    perform: (z, bundle) =>
      z
        .request({ url: api(bundle, path), params: compact(params(bundle.inputData)) })
        .then((r) => r.data.map((found) => withId(found, record.idKey))),
    outputFields: record.outputFields,
    sample: record.sample,
  },
});

const searches = [
  search({
    key: 'find_client',
    noun: 'Client',
    label: 'Find Client',
    description: 'Finds clients by email, phone or name (every field you fill in must match).',
    inputFields: [
      { key: 'email', label: 'Email' },
      { key: 'phone', label: 'Phone', helpText: 'E.164, e.g. `+15125550142`.' },
      { key: 'name', label: 'Name' },
    ],
    path: '/clients/search',
    params: (input) => ({ email: input.email, phone: input.phone, name: input.name }),
    record: RECORDS.client,
  }),
  search({
    key: 'find_lead',
    noun: 'Lead',
    label: 'Find Lead',
    description: 'Finds leads by email address (any case).',
    inputFields: [{ key: 'email', label: 'Email', required: true }],
    path: '/leads/search',
    params: (input) => ({ email: input.email }),
    record: RECORDS.lead,
  }),
];

module.exports = { searches };
