// Writes the invocation envelopes scripts/bench-webhook.sh POSTs: a signed ~1 KB Qualtrics
// delivery wrapped exactly as the Functions host wraps it (Data.req with Url, Method, Query,
// Headers as arrays, Params, Identities, Body text; Metadata with Query, Headers, sys).
//
// usage: node benches/make-envelope.js KEY OUT_DIR   → OUT_DIR/{good,bad}.json
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const [key, out] = process.argv.slice(2);
const survey = 'SV_22VlHYNeldrrrkp';
const msg = JSON.stringify({
  Status: 'Complete', SurveyID: survey, RecipientID: 'CGC_GiMUyLkGpEZsVF3', ResponseEventContext: '',
  DistributionID: 'EMD_96woxYS85Cg5Lqx', ResponseID: 'R_1l9mcVuXubb4aGm', CompletedDate: '2019-06-26 13:28:11',
  CreatorID: 'UR_2686s36oneK8iW1', DistributionChannel: 'email', BrandID: 'sapdevelopment',
  EmbeddedData: 'x'.repeat(380),
});
const topic = `sapdevelopment.surveyengine.completedResponse.${survey}`;

function envelope(hmac) {
  const body = new URLSearchParams({ Topic: topic, MSG: msg, HMAC: hmac }).toString();
  const url = 'https://bridge.azurewebsites.net/api/qualtrics/events?code=K';
  const headers = {
    'Content-Length': [String(Buffer.byteLength(body))], 'Content-Type': ['application/x-www-form-urlencoded'],
    Host: ['bridge.azurewebsites.net'], 'User-Agent': ['Qualtrics'], 'Accept-Encoding': ['gzip'],
  };
  const flat = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v.join(',')]));
  return {
    body,
    json: JSON.stringify({
      Data: { req: {
        Url: url, Method: 'POST', Query: { code: 'K' }, Headers: headers, Params: {},
        Identities: [{ AuthenticationType: 'WebJobsAuthLevel', IsAuthenticated: true, Actor: null, BootstrapContext: null,
          Claims: [{ Issuer: 'LOCAL AUTHORITY', OriginalIssuer: 'LOCAL AUTHORITY', Properties: {},
            Type: 'http://schemas.microsoft.com/2017/07/functions/claims/authlevel', Value: 'Function',
            ValueType: 'http://www.w3.org/2001/XMLSchema#string' }],
          Label: null, Name: null, NameClaimType: 'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name',
          RoleClaimType: 'http://schemas.microsoft.com/ws/2008/06/identity/claims/role' }],
        Body: body,
      } },
      Metadata: { Query: { code: 'K' }, Headers: flat,
        sys: { MethodName: 'QualtricsWebhook', UtcNow: '2026-01-01T00:00:00.000Z', RandGuid: crypto.randomUUID() } },
    }),
  };
}

const good = crypto.createHmac('sha512', key).update(msg, 'utf8').digest('hex');
const bad = crypto.createHmac('sha512', key + 'x').update(msg, 'utf8').digest('hex');
fs.mkdirSync(out, { recursive: true });
const g = envelope(good);
fs.writeFileSync(path.join(out, 'good.json'), g.json);
fs.writeFileSync(path.join(out, 'bad.json'), envelope(bad).json);
console.error(`delivery body ${Buffer.byteLength(g.body)} bytes, envelope ${Buffer.byteLength(g.json)} bytes`);
