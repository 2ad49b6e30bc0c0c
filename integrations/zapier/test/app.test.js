'use strict';

// The app against a real `tidings dev`: every REST Hook trigger subscribed through
// performSubscribe, the 9 creates and 2 searches run, each delivery received at a local
// target URL, its signatures checked and handed to perform, samples listed, every hook
// unsubscribed, and nothing more arriving afterwards.

const assert = require('node:assert/strict');

const zapier = require('zapier-platform-core');

const App = require('../index');
const catalog = require('../catalog.json');
const { NOT_TRIGGERS, keyOf } = require('../triggers/hooks');
const {
  startTidings,
  startReceiver,
  verifySignatures,
  waitFor,
  sleep,
  like,
} = require('./support');

const appTester = zapier.createAppTester(App);

const TRIGGERS = Object.keys(App.triggers);
const typeOf = (key) => App.triggers[key].operation.sample.type;

describe('the tidings CRM Zapier app, against tidings dev', function () {
  let tidings;
  let receiver;
  let authData;
  const hooks = {}; // trigger key -> subscribeData
  const secrets = {}; // trigger key -> the hook's signing secret
  const made = {}; // create key -> its result

  // tidings' own API, for what a Zapier app does not do (emit, plain subscriptions, secrets)
  const call = async (method, path, body) => {
    const response = await fetch(`${tidings.baseUrl}/api/v1${path}`, {
      method,
      headers: { 'X-Api-Key': tidings.apiKey, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10000),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(`${method} ${path}: ${response.status} ${text}`);
    }
    return text ? JSON.parse(text) : null;
  };

  const deliveriesTo = (prefix) => receiver.received.filter((r) => r.path.startsWith(prefix));

  const run = async (key, inputData) => {
    made[key] = await appTester(App.creates[key].operation.perform, { authData, inputData });
    return made[key];
  };

  const search = (key, inputData) =>
    appTester(App.searches[key].operation.perform, { authData, inputData });

  before(async function () {
    this.timeout(45000);
    receiver = await startReceiver();
    tidings = await startTidings();
    authData = { baseUrl: tidings.baseUrl, apiKey: tidings.apiKey };
  });

  after(async function () {
    this.timeout(30000);
    await Promise.all([tidings && tidings.stop(), receiver && receiver.close()]);
  });

  it('passes Zapier schema validation (the offline part of zapier validate)', async () => {
    const { results } = await zapier.createAppHandler(App)({ command: 'validate' });
    assert.deepEqual(results, []);
  });

  it('has catalog.json as the server serves it: a trigger per queued type, 9 creates, 2 searches', async () => {
    assert.deepEqual(await call('GET', '/event-types'), catalog);
    const expected = catalog.filter((t) => !NOT_TRIGGERS.has(t.name)).map((t) => keyOf(t.name));
    assert.deepEqual([...TRIGGERS].sort(), expected.sort());
    assert.equal(TRIGGERS.length, 11);
    assert.equal(Object.keys(App.creates).length, 9);
    assert.equal(Object.keys(App.searches).length, 2);
  });

  it('tests the API key with an authenticated GET and refuses a wrong one', async () => {
    like(await appTester(App.authentication.test, { authData }), { name: 'subscription.disabled' });
    await assert.rejects(
      appTester(App.authentication.test, { authData: { ...authData, apiKey: 'tdg_wrong' } }),
      /invalid API key/,
    );
    const label = await appTester(App.authentication.connectionLabel, { authData });
    assert.equal(label, tidings.baseUrl.replace('http://', ''));
  });

  it('subscribes a REST hook per trigger with performSubscribe (target_url, event)', async () => {
    for (const key of TRIGGERS) {
      const targetUrl = `${receiver.url}/zap/${key}`;
      const data = await appTester(App.triggers[key].operation.performSubscribe, {
        authData,
        targetUrl,
      });
      assert.deepEqual(Object.keys(data).sort(), ['event', 'hookUrl', 'id']);
      like(data, { id: /^sub_/, hookUrl: targetUrl, event: typeOf(key) });
      hooks[key] = data;
      // POST /api/v1/hooks does not return the hook's signing secret; the test learns one
      // by rotating it and ending the rotation, so that only the new secret signs.
      const rotated = await call('POST', `/webhooks/subscriptions/${data.id}/rotate-secret`);
      await call('POST', `/webhooks/subscriptions/${data.id}/end-rotation`);
      secrets[key] = rotated.signingSecret;
      assert.match(secrets[key], /^whsec_/);
    }
  });

  it('lists the catalog sample envelope with performList before any event of the type', async () => {
    for (const key of TRIGGERS) {
      const { sample } = App.triggers[key].operation;
      const listed = await appTester(App.triggers[key].operation.performList, { authData });
      like(listed, [{ id: /^evt_/, type: sample.type, metadata: { sample: true } }]);
      assert.deepEqual(listed[0].payload, sample.payload);
    }
  });

  it('runs the 9 creates against the CRM', async function () {
    this.timeout(20000);
    const client = await run('create_client', {
      firstName: 'Ada',
      lastName: 'Lovelace',
      email: 'ada@example.com',
      phone: '',
      status: 'prospect',
      city: 'London',
      country: 'GB',
      tags: ['math', 'engines'],
    });
    like(client, {
      id: /^cli_/,
      clientId: client.id,
      firstName: 'Ada',
      phone: null,
      address: { city: 'London', country: 'GB', line1: null },
      tags: ['math', 'engines'],
    });

    like(
      await run('update_client', {
        clientId: client.id,
        phone: '+442071234567',
        companyName: 'Analytical Engines Ltd',
      }),
      { id: client.id, phone: '+442071234567', firstName: 'Ada', address: { city: 'London' } },
    );

    like(
      await run('change_client_status', {
        clientId: client.id,
        status: 'active',
        reason: 'Signed',
      }),
      { id: client.id, status: 'active' },
    );

    const lead = await run('create_lead', {
      firstName: 'Charles',
      lastName: 'Babbage',
      email: 'Charles@Example.com',
      source: 'referral',
      estimatedValue: '480000',
      currency: 'GBP',
    });
    like(lead, {
      id: /^lead_/,
      status: 'new',
      estimatedValue: { amount: 480000, currency: 'GBP' },
    });

    like(
      await appTester(App.creates.create_lead.operation.perform, {
        authData,
        inputData: { firstName: 'Blank', lastName: 'Fields', estimatedValue: '', phone: '' },
      }),
      { id: /^lead_/, estimatedValue: null, phone: null },
    );

    like(await run('convert_lead', { leadId: lead.id, status: 'active' }), {
      id: lead.id,
      lead: { status: 'converted' },
      client: { clientId: /^cli_/, leadId: lead.id, status: 'active', lastName: 'Babbage' },
    });

    like(
      await run('add_note', {
        subjectType: 'client',
        subjectId: client.id,
        title: 'Call',
        body: 'Wants an invoice for the difference engine.',
      }),
      { id: /^note_/, subject: { type: 'client', id: client.id }, title: 'Call' },
    );

    const invoice = await run('create_invoice', {
      clientId: client.id,
      dueDate: '2027-01-31T00:00:00Z',
      lineItems: [
        { description: 'Difference engine', quantity: '1', unitPrice: '85000' },
        { description: 'Punch cards', quantity: '3', unitPrice: '1500' },
      ],
      tax: '900',
    });
    like(invoice, {
      id: /^inv_/,
      dueDate: '2027-01-31',
      lineItems: [{ total: { amount: 85000 } }, { total: { amount: 4500 } }],
      total: { amount: 85000 + 4500 + 900, currency: 'USD' },
    });

    like(
      await run('record_payment', {
        clientId: client.id,
        invoiceId: invoice.id,
        amount: 90400,
        method: 'card',
        cardLast4: '4242',
      }),
      { id: /^pay_/, invoiceId: invoice.id, amount: { amount: 90400, currency: 'USD' } },
    );

    like(
      await run('sign_agreement', {
        clientId: client.id,
        title: 'Maintenance',
        signerName: 'Ada Lovelace',
        signerIpAddress: '203.0.113.24',
        effectiveDate: '2027-02-01',
      }),
      {
        id: /^agr_/,
        effectiveDate: '2027-02-01',
        signedBy: { name: 'Ada Lovelace', email: null, ipAddress: '203.0.113.24' },
      },
    );
  });

  it('fails a create the CRM refuses with the CRM message', async () => {
    await assert.rejects(
      appTester(App.creates.record_payment.operation.perform, {
        authData,
        inputData: { clientId: 'cli_missing', amount: 100, method: 'card' },
      }),
      /client not found/,
    );
    await assert.rejects(
      appTester(App.creates.change_client_status.operation.perform, {
        authData,
        inputData: { clientId: made.create_client.id, status: 'active' },
      }),
      /the client is already active/,
    );
  });

  it('finds with the 2 searches what the creates made', async () => {
    const byEmail = await search('find_client', { email: 'ada@example.com' });
    assert.deepEqual(
      byEmail.map((c) => c.id),
      [made.create_client.id],
    );
    const byName = await search('find_client', { name: 'Babbage', email: '' });
    assert.deepEqual(
      byName.map((c) => c.id),
      [made.convert_lead.client.clientId],
    );
    assert.deepEqual(await search('find_client', { email: 'nobody@example.com' }), []);
    await assert.rejects(search('find_client', {}), /at least one of email, phone, name/);
    const leads = await search('find_lead', { email: 'charles@example.com' });
    like(leads, [{ id: made.create_lead.id, status: 'converted' }]);
  });

  // what the creates emitted, and how each payload relates to a create's result
  const EXPECTED = {
    client_created: (p) => p.clientId === made.create_client.id,
    client_updated: (p) =>
      p.clientId === made.create_client.id && p.changedFields.includes('phone'),
    client_status_changed: (p) => p.status === 'active' && p.previousStatus === 'prospect',
    lead_created: (p) => p.leadId === made.create_lead.id,
    lead_converted: (p) => p.clientId === made.convert_lead.client.clientId,
    note_created: (p) => p.noteId === made.add_note.id,
    payment_succeeded: (p) => p.paymentId === made.record_payment.id,
    payment_failed: (p) => p.failureCode === 'card_declined',
    invoice_created: (p) => p.invoiceId === made.create_invoice.id,
    agreement_signed: (p) => p.agreementId === made.sign_agreement.id,
    subscription_disabled: (p) => p.reason === 'gone',
  };

  it('delivers each trigger its event, signed; perform returns the delivered envelope', async function () {
    this.timeout(30000);
    // payment.failed has no action: the host app emits it. subscription.disabled: a plain
    // subscription whose endpoint answers 410 is turned off, and tidings announces it.
    const failed = { ...catalog.find((t) => t.name === 'payment.failed').samplePayload };
    await call('POST', '/webhooks/subscriptions', {
      url: `${receiver.url}/gone/1`,
      eventTypes: ['payment.failed'],
    });
    await call('POST', '/events', { type: 'payment.failed', payload: failed });
    assert.deepEqual(Object.keys(EXPECTED).sort(), [...TRIGGERS].sort());

    for (const key of TRIGGERS) {
      const delivery = await waitFor(`a ${key} delivery`, () =>
        deliveriesTo(`/zap/${key}`).find((r) => EXPECTED[key](JSON.parse(r.body).payload)),
      );
      assert.deepEqual(verifySignatures(secrets[key], delivery.headers, delivery.body), {
        legacy: true,
        standard: true,
        fresh: true,
      });
      const envelope = JSON.parse(delivery.body);
      assert.equal(delivery.headers['x-webhook-id'], envelope.id);
      assert.deepEqual(Object.keys(envelope).sort(), [
        'companyId',
        'createdUtc',
        'id',
        'metadata',
        'payload',
        'type',
      ]);
      assert.equal(envelope.type, typeOf(key));
      const results = await appTester(App.triggers[key].operation.perform, {
        authData,
        targetUrl: `${receiver.url}/zap/${key}`,
        subscribeData: hooks[key],
        cleanedRequest: envelope,
        rawRequest: { method: 'POST', headers: delivery.headers, content: delivery.body },
      });
      assert.deepEqual(results, [envelope]);
    }
    for (const key of TRIGGERS) {
      for (const delivery of deliveriesTo(`/zap/${key}`)) {
        assert.equal(JSON.parse(delivery.body).type, typeOf(key), `${key} got another type`);
      }
    }
  });

  it('lists the recent events with performList, newest first', async () => {
    const listed = await appTester(App.triggers.client_created.operation.performList, { authData });
    assert.deepEqual(
      listed.map((e) => e.payload.clientId),
      [made.convert_lead.client.clientId, made.create_client.id],
    );
  });

  it('removes every hook with performUnsubscribe; nothing more arrives', async function () {
    this.timeout(30000);
    for (const key of TRIGGERS) {
      await appTester(App.triggers[key].operation.performUnsubscribe, {
        authData,
        subscribeData: hooks[key],
      });
    }
    await assert.rejects(
      appTester(App.triggers.client_created.operation.performUnsubscribe, {
        authData,
        subscribeData: hooks.client_created,
      }),
      /hook not found/,
    );

    const before = deliveriesTo('/zap/').length;
    // a plain subscription to every type shows when the next events have gone out
    await call('POST', '/webhooks/subscriptions', {
      url: `${receiver.url}/sentinel`,
      eventTypes: ['*'],
    });
    await call('POST', '/webhooks/subscriptions', {
      url: `${receiver.url}/gone/2`,
      eventTypes: ['note.created'],
    });
    const emitted = [];
    for (const key of TRIGGERS.filter((k) => k !== 'subscription_disabled')) {
      const type = catalog.find((t) => t.name === typeOf(key));
      const event = await call('POST', '/events', { type: type.name, payload: type.samplePayload });
      emitted.push(event.id);
    }
    await run('create_client', { firstName: 'Grace', lastName: 'Hopper' });
    await waitFor('the sentinel to receive every event, subscription.disabled included', () => {
      const seen = deliveriesTo('/sentinel').map((r) => JSON.parse(r.body));
      return (
        emitted.every((id) => seen.some((e) => e.id === id)) &&
        seen.some((e) => e.type === 'client.created' && e.payload.firstName === 'Grace') &&
        seen.some((e) => e.type === 'subscription.disabled')
      );
    });
    await sleep(500); // ten dispatcher polls more
    assert.equal(deliveriesTo('/zap/').length, before);
  });
});
