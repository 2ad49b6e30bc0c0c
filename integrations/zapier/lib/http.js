'use strict';

// Requests to the CRM's tidings server: the base URL and the API key come from the
// connection (bundle.authData); errors keep tidings' {"error": {code, message, details}}.

const api = (bundle, path) => `${bundle.authData.baseUrl.replace(/\/+$/, '')}/api/v1${path}`;

const addApiKey = (request, z, bundle) => {
  if (bundle.authData && bundle.authData.apiKey) {
    request.headers = { ...request.headers, 'X-Api-Key': bundle.authData.apiKey };
  }
  return request;
};

const describe = (error) => {
  const details = Array.isArray(error.details)
    ? error.details.map((d) => `${d.field}: ${d.message}`).join('; ')
    : '';
  return details ? `${error.message} (${details})` : error.message;
};

const explainErrors = (response, z) => {
  if (response.status < 400) {
    return response;
  }
  let error;
  try {
    error = JSON.parse(response.content).error;
  } catch (_) {
    error = undefined;
  }
  const message = error && error.message ? describe(error) : `HTTP ${response.status}`;
  if (response.status === 401) {
    throw new z.errors.Error(message, 'AuthenticationError', response.status);
  }
  if (response.status === 429) {
    throw new z.errors.ThrottledError(message, Number(response.getHeader('retry-after')) || 60);
  }
  throw new z.errors.Error(message, (error && error.code) || 'error', response.status);
};

// Zapier sends every optional field, empty when the user left it blank: drop those.
const compact = (object) =>
  Object.fromEntries(
    Object.entries(object).filter(([, v]) => v !== undefined && v !== null && v !== ''),
  );

module.exports = { api, addApiKey, explainErrors, compact };
