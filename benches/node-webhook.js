// Baseline for scripts/bench-webhook.sh: the same work as QualtricsWebhook in Node.js —
// parse the host's JSON envelope, parse the form, verify HMAC-SHA512 over MSG in constant
// time, parse MSG, reply with the http output and one queue message (or a 401).
//
// usage: FUNCTIONS_CUSTOMHANDLER_PORT=PORT QUALTRICS_WEBHOOK_KEY=KEY node benches/node-webhook.js
'use strict';
const http = require('http');
const crypto = require('crypto');

const port = Number(process.env.FUNCTIONS_CUSTOMHANDLER_PORT || 7073);
const key = process.env.QUALTRICS_WEBHOOK_KEY || '';

function reply(res, status, body, messages, log) {
  const outputs = { res: { statusCode: String(status), headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) } };
  if (messages.length) outputs.tickets = messages;
  const text = JSON.stringify({ Outputs: outputs, Logs: [log], ReturnValue: null });
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function handle(envelope, res) {
  const req = envelope.Data && envelope.Data.req;
  if (!req || typeof req.Body !== 'string') return reply(res, 400, { error: 'empty body' }, [], 'refused');
  const form = new URLSearchParams(req.Body);
  if (form.getAll('MSG').length !== 1 || form.getAll('HMAC').length !== 1) return reply(res, 400, { error: 'malformed form' }, [], 'refused');
  const msg = form.get('MSG');
  const supplied = Buffer.from(form.get('HMAC'), 'hex');
  const expected = crypto.createHmac('sha512', key).update(msg, 'utf8').digest();
  if (supplied.length !== expected.length || !crypto.timingSafeEqual(supplied, expected)) {
    return reply(res, 401, { error: 'bad signature' }, [], 'refused: bad signature');
  }
  let m;
  try { m = JSON.parse(msg); } catch (e) { return reply(res, 400, { error: 'malformed MSG' }, [], 'refused'); }
  const message = JSON.stringify({ v: 1, surveyId: m.SurveyID, responseId: m.ResponseID, source: 'webhook', topic: form.get('Topic') || undefined, receivedAt: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') });
  reply(res, 202, { status: 'queued' }, [message], `202 ${m.SurveyID}/${m.ResponseID}`);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let envelope;
    try { envelope = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch (e) {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      return res.end('{"error":"not an envelope"}');
    }
    handle(envelope, res);
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1');
