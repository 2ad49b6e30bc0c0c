'use strict';

// The CRM's 9 actions (see the README's "Integration API"), one Zapier create each.

const { api, compact } = require('../lib/http');
const { RECORDS, withId, eventType, outputFields } = require('../lib/records');

const STATUSES = ['active', 'inactive', 'prospect', 'archived'];
const METHODS = ['card', 'ach', 'bank_transfer', 'cash', 'check', 'other'];

const clientId = {
  key: 'clientId',
  label: 'Client ID',
  required: true,
  helpText: 'A client identifier (`cli_…`).',
  search: 'find_client.id',
};

// A new client or lead is named; an update may leave the name as it is.
const requiredName = [
  { key: 'firstName', label: 'First Name', required: true },
  { key: 'lastName', label: 'Last Name', required: true },
];

const person = [
  { key: 'companyName', label: 'Company Name' },
  { key: 'email', label: 'Email' },
  { key: 'phone', label: 'Phone', helpText: 'E.164, e.g. `+15125550142`.' },
];

const address = [
  { key: 'addressLine1', label: 'Address Line 1' },
  { key: 'addressLine2', label: 'Address Line 2' },
  { key: 'city', label: 'City' },
  { key: 'region', label: 'State / Region' },
  { key: 'postalCode', label: 'Postal Code' },
  { key: 'country', label: 'Country', helpText: 'ISO 3166-1 alpha-2, e.g. `US`.' },
];

const clientExtras = [
  ...address,
  { key: 'tags', label: 'Tags', list: true },
  { key: 'ownerId', label: 'Owner ID', helpText: 'A user identifier (`usr_…`).' },
];

const currency = {
  key: 'currency',
  label: 'Currency',
  default: 'USD',
  helpText: 'ISO 4217 code, e.g. `USD`.',
};

const blank = (value) => value === undefined || value === null || value === '';

// Amounts are integers in minor units, as the API takes them; a blank amount is no money.
const money = (amount, code) =>
  blank(amount) ? undefined : { amount: Number(amount), currency: code || 'USD' };

// Calendar dates: a Zapier date (an ISO date-time) or YYYY-MM-DD, sent as YYYY-MM-DD.
const day = (value) => (typeof value === 'string' ? value.slice(0, 10) : value);

// The inputs the API takes under the same names, as they are.
const same = (input, keys) => Object.fromEntries(keys.map((key) => [key, input[key]]));

const PERSON_KEYS = ['firstName', 'lastName', 'companyName', 'email', 'phone'];

const addressOf = (input) => {
  const parts = compact({
    line1: input.addressLine1,
    line2: input.addressLine2,
    ...same(input, ['city', 'region', 'postalCode', 'country']),
  });
  return Object.keys(parts).length ? parts : undefined;
};

const tagsOf = (input) =>
  Array.isArray(input.tags) ? input.tags.filter((t) => t) : input.tags ? [input.tags] : undefined;

const send =
  (path, body, method = 'POST') =>
  (z, bundle) =>
    z.request({ method, url: api(bundle, path(bundle)), body: compact(body(bundle.inputData)) });

const create = ({ key, noun, label, description, inputFields, request, result }) => ({
  key,
  noun,
  display: { label, description },
  operation: {
    inputFields,
    perform: (z, bundle) => request(z, bundle).then((r) => result.of(r.data)),
    outputFields: result.outputFields,
    sample: result.sample,
  },
});

const recordResult = (record) => ({
  of: (data) => withId(data, record.idKey),
  outputFields: record.outputFields,
  sample: record.sample,
});

const converted = {
  of: (data) => ({ id: data.lead.leadId, ...data }),
  outputFields: [
    { key: 'id', label: 'Lead ID', type: 'string' },
    ...outputFields(eventType('lead.created').schema, 'lead__', 'Lead '),
    ...outputFields(eventType('client.created').schema, 'client__', 'Client '),
  ],
  sample: {
    id: eventType('lead.converted').samplePayload.leadId,
    lead: {
      ...eventType('lead.created').samplePayload,
      status: 'converted',
      clientId: eventType('lead.converted').samplePayload.clientId,
      convertedUtc: eventType('lead.converted').samplePayload.convertedUtc,
    },
    client: {
      ...eventType('client.created').samplePayload,
      clientId: eventType('lead.converted').samplePayload.clientId,
      status: 'active',
    },
  },
};

const creates = [
  create({
    key: 'create_client',
    noun: 'Client',
    label: 'Create Client',
    description: 'Creates a client record (emits client.created).',
    inputFields: [
      ...requiredName,
      ...person,
      { key: 'status', label: 'Status', choices: STATUSES, default: 'prospect' },
      ...clientExtras,
    ],
    request: send(
      () => '/clients',
      (input) => ({
        ...same(input, [...PERSON_KEYS, 'status']),
        address: addressOf(input),
        tags: tagsOf(input),
        ownerId: input.ownerId,
      }),
    ),
    result: recordResult(RECORDS.client),
  }),
  create({
    key: 'update_client',
    noun: 'Client',
    label: 'Update Client',
    description: 'Changes the fields you fill in on a client (emits client.updated).',
    inputFields: [
      clientId,
      { key: 'firstName', label: 'First Name' },
      { key: 'lastName', label: 'Last Name' },
      ...person,
      ...clientExtras,
    ],
    request: send(
      (bundle) => `/clients/${encodeURIComponent(bundle.inputData.clientId)}`,
      (input) => ({
        ...same(input, PERSON_KEYS),
        address: addressOf(input),
        tags: tagsOf(input),
        ownerId: input.ownerId,
      }),
      'PATCH',
    ),
    result: recordResult(RECORDS.client),
  }),
  create({
    key: 'change_client_status',
    noun: 'Client',
    label: 'Change Client Status',
    description: 'Moves a client to another status (emits client.status_changed).',
    inputFields: [
      clientId,
      { key: 'status', label: 'Status', choices: STATUSES, required: true },
      { key: 'reason', label: 'Reason', type: 'text' },
    ],
    request: send(
      (bundle) => `/clients/${encodeURIComponent(bundle.inputData.clientId)}/status`,
      (input) => ({ status: input.status, reason: input.reason }),
    ),
    result: recordResult(RECORDS.client),
  }),
  create({
    key: 'create_lead',
    noun: 'Lead',
    label: 'Create Lead',
    description: 'Captures a sales lead (emits lead.created).',
    inputFields: [
      ...requiredName,
      ...person,
      { key: 'source', label: 'Source', helpText: 'E.g. website, referral, import.' },
      { key: 'status', label: 'Pipeline Stage', default: 'new' },
      {
        key: 'estimatedValue',
        label: 'Estimated Value (minor units)',
        type: 'integer',
        helpText: 'In cents for USD: 4900 is $49.00.',
      },
      currency,
      { key: 'assignedTo', label: 'Assigned To', helpText: 'A user identifier (`usr_…`).' },
      { key: 'notes', label: 'Notes', type: 'text' },
    ],
    request: send(
      () => '/leads',
      (input) => ({
        ...same(input, [...PERSON_KEYS, 'source', 'status']),
        estimatedValue: money(input.estimatedValue, input.currency),
        ...same(input, ['assignedTo', 'notes']),
      }),
    ),
    result: recordResult(RECORDS.lead),
  }),
  create({
    key: 'convert_lead',
    noun: 'Lead',
    label: 'Convert Lead',
    description: 'Turns a lead into a client (emits client.created and lead.converted).',
    inputFields: [
      {
        key: 'leadId',
        label: 'Lead ID',
        required: true,
        helpText: 'A lead identifier (`lead_…`).',
        search: 'find_lead.id',
      },
      { key: 'status', label: 'Client Status', choices: STATUSES, default: 'active' },
      { key: 'ownerId', label: 'Owner ID', helpText: 'A user identifier (`usr_…`).' },
    ],
    request: send(
      (bundle) => `/leads/${encodeURIComponent(bundle.inputData.leadId)}/convert`,
      (input) => ({ status: input.status, ownerId: input.ownerId }),
    ),
    result: converted,
  }),
  create({
    key: 'add_note',
    noun: 'Note',
    label: 'Add Note',
    description: 'Attaches a note to a client or a lead (emits note.created).',
    inputFields: [
      { key: 'subjectType', label: 'Attach To', choices: ['client', 'lead'], required: true },
      {
        key: 'subjectId',
        label: 'Client or Lead ID',
        required: true,
        helpText: '`cli_…` for a client, `lead_…` for a lead.',
      },
      { key: 'title', label: 'Title' },
      { key: 'body', label: 'Note', type: 'text', required: true },
    ],
    request: send(
      () => '/notes',
      (input) => ({
        subject: { type: input.subjectType, id: input.subjectId },
        ...same(input, ['title', 'body']),
      }),
    ),
    result: recordResult(RECORDS.note),
  }),
  create({
    key: 'record_payment',
    noun: 'Payment',
    label: 'Record Payment',
    description: 'Records a collected payment (emits payment.succeeded).',
    inputFields: [
      clientId,
      { key: 'invoiceId', label: 'Invoice ID', helpText: 'An invoice identifier (`inv_…`).' },
      {
        key: 'amount',
        label: 'Amount (minor units)',
        type: 'integer',
        required: true,
        helpText: 'In cents for USD: 4900 is $49.00.',
      },
      currency,
      { key: 'method', label: 'Method', choices: METHODS, required: true },
      { key: 'processorReference', label: 'Processor Reference' },
      { key: 'cardLast4', label: 'Card Last 4' },
    ],
    request: send(
      () => '/payments',
      (input) => ({
        ...same(input, ['clientId', 'invoiceId']),
        amount: money(input.amount, input.currency),
        ...same(input, ['method', 'processorReference', 'cardLast4']),
      }),
    ),
    result: recordResult(RECORDS.payment),
  }),
  create({
    key: 'create_invoice',
    noun: 'Invoice',
    label: 'Create Invoice',
    description:
      'Issues an invoice; totals are computed from the line items (emits invoice.created).',
    inputFields: [
      clientId,
      { key: 'invoiceNumber', label: 'Invoice Number', helpText: 'Generated when left blank.' },
      { key: 'status', label: 'Status', choices: ['draft', 'open'], default: 'open' },
      { key: 'issueDate', label: 'Issue Date', type: 'datetime', helpText: 'Today when blank.' },
      { key: 'dueDate', label: 'Due Date', type: 'datetime', required: true },
      {
        key: 'lineItems',
        label: 'Line Items',
        required: true,
        children: [
          { key: 'description', label: 'Description', required: true },
          { key: 'quantity', label: 'Quantity', type: 'number', required: true },
          {
            key: 'unitPrice',
            label: 'Unit Price (minor units)',
            type: 'integer',
            required: true,
          },
        ],
      },
      currency,
      { key: 'tax', label: 'Tax (minor units)', type: 'integer' },
      { key: 'memo', label: 'Memo', type: 'text' },
    ],
    request: send(
      () => '/invoices',
      (input) => ({
        ...same(input, ['clientId', 'invoiceNumber', 'status']),
        issueDate: day(input.issueDate),
        dueDate: day(input.dueDate),
        lineItems: (input.lineItems || []).map((item) => ({
          description: item.description,
          quantity: Number(item.quantity),
          unitPrice: money(item.unitPrice, input.currency),
        })),
        tax: money(input.tax, input.currency),
        memo: input.memo,
      }),
    ),
    result: recordResult(RECORDS.invoice),
  }),
  create({
    key: 'sign_agreement',
    noun: 'Agreement',
    label: 'Record Signed Agreement',
    description: 'Records an agreement signed by a client (emits agreement.signed).',
    inputFields: [
      clientId,
      { key: 'title', label: 'Title' },
      { key: 'signerName', label: 'Signed By (Name)', required: true },
      { key: 'signerEmail', label: 'Signer Email' },
      { key: 'signerIpAddress', label: 'Signer IP Address' },
      { key: 'effectiveDate', label: 'Effective Date', type: 'datetime' },
      { key: 'documentUrl', label: 'Document URL' },
    ],
    request: send(
      () => '/agreements',
      (input) => ({
        ...same(input, ['clientId', 'title']),
        signedBy: compact({
          name: input.signerName,
          email: input.signerEmail,
          ipAddress: input.signerIpAddress,
        }),
        effectiveDate: day(input.effectiveDate),
        documentUrl: input.documentUrl,
      }),
    ),
    result: recordResult(RECORDS.agreement),
  }),
];

module.exports = { creates };
