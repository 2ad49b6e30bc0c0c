'use strict';

// The tidings reference CRM on Zapier: REST Hook triggers for its event types, its 9
// actions as creates and its 2 searches. Built with zapier-platform-core; see README.md.

const zapier = require('zapier-platform-core');

const authentication = require('./lib/authentication');
const { addApiKey, explainErrors } = require('./lib/http');
const { triggers } = require('./triggers/hooks');
const { creates } = require('./creates');
const { searches } = require('./searches');

const byKey = (operations) => Object.fromEntries(operations.map((op) => [op.key, op]));

module.exports = {
  version: require('./package.json').version,
  platformVersion: zapier.version,
  authentication,
  beforeRequest: [addApiKey],
  afterResponse: [explainErrors],
  triggers: byKey(triggers),
  creates: byKey(creates),
  searches: byKey(searches),
};
