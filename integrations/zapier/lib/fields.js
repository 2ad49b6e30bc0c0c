'use strict';

// Output fields from the catalog's JSON schemas, keyed as Zapier flattens results:
// `__` between nested object keys, `[]` for arrays of objects (line items).

const ACRONYMS = { Id: 'ID', Url: 'URL', Ip: 'IP', Utc: '(UTC)' };

const label = (key) =>
  key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/^./, (c) => c.toUpperCase())
    .split(' ')
    .map((word) => ACRONYMS[word] || word)
    .join(' ');

const typeOf = (schema) => {
  const types = [].concat(schema.type || []).filter((t) => t !== 'null');
  return types[0];
};

const scalar = (schema) => {
  switch (typeOf(schema)) {
    case 'integer':
      return 'integer';
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    default:
      return schema.format === 'date-time' ? 'datetime' : 'string';
  }
};

const outputFields = (schema, prefix = '', labelPrefix = '') => {
  const fields = [];
  for (const [key, property] of Object.entries(schema.properties || {})) {
    const path = `${prefix}${key}`;
    const name = `${labelPrefix}${label(key)}`;
    const type = typeOf(property);
    if (type === 'object' && property.properties) {
      fields.push(...outputFields(property, `${path}__`, `${name} `));
    } else if (type === 'array' && property.items && typeOf(property.items) === 'object') {
      fields.push(...outputFields(property.items, `${path}[]`, `${name} `));
    } else if (type === 'array') {
      fields.push({ key: path, label: name, type: scalar(property.items || {}), list: true });
    } else if (type === 'object') {
      fields.push({ key: path, label: name, dict: true });
    } else {
      fields.push({ key: path, label: name, type: scalar(property) });
    }
  }
  return fields;
};

// Every delivery is this envelope; the event's own fields are under `payload`.
const ENVELOPE_FIELDS = [
  { key: 'id', label: 'Event ID', type: 'string' },
  { key: 'type', label: 'Event Type', type: 'string' },
  { key: 'createdUtc', label: 'Created (UTC)', type: 'datetime' },
  { key: 'companyId', label: 'Company ID', type: 'string' },
];

const envelopeOutputFields = (eventType) => [
  ...ENVELOPE_FIELDS,
  ...outputFields(eventType.schema, 'payload__', ''),
];

const sampleEnvelope = (eventType) => ({
  id: 'evt_01KH6N2C7X5K8QTR4MW9BDZ3EV',
  type: eventType.name,
  createdUtc: '2026-02-11T03:41:16Z',
  companyId: 'ten_01KE9N4T2W8Q6R3B7XMD5HC1JV',
  payload: eventType.samplePayload,
  metadata: {},
});

module.exports = { outputFields, envelopeOutputFields, sampleEnvelope, label };
