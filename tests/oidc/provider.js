// A real OpenID provider (the npm package oidc-provider) on loopback, for batchweb's company
// sign-in browser tests (tests/e2e/test_oidc.py). Test-only: in-memory storage, plain http.
//
//   node provider.js --port 0 --client-id batchweb --client-secret s3cret \
//        --redirect-uri http://127.0.0.1:8000/oidc/callback/ \
//        --post-logout-uri http://127.0.0.1:8000/accounts/login/ --accounts accounts.json
//
// accounts.json, read again at every sign-in so a test can change someone's groups:
//   {"ana": {"password": "pw", "email": "ana@example.com", "groups": ["batch-ops"]}, ...}
// An account without "groups" gets no groups claim at all.
//
// Pages: its own sign-in and consent pages (/interaction/<uid>), and sign-out confirmation;
// none loads anything from elsewhere. POST /_test/tamper {"next": "signature"} makes the next
// ID token's signature invalid. Prints "LISTENING <issuer>" once it serves.

import { createSign, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'post-logout-uri': { type: 'string' },
    accounts: { type: 'string' },
  },
});

const accounts = () => JSON.parse(readFileSync(args.accounts, 'utf8'));
const esc = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>${esc(title)}</title><style>body{font-family:sans-serif;max-width:26rem;margin:3rem auto}
label,input,button{display:block;margin:.4rem 0}input{width:100%}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', alg: 'RS256', use: 'sig' };
let tamperNext = '';

const configuration = {
  clients: [
    {
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      client_name: 'batchweb',
      redirect_uris: [args['redirect-uri']],
      post_logout_redirect_uris: [args['post-logout-uri']],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: ['test-only-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'given_name', 'family_name'],
    groups: ['groups'],
  },
  async findAccount(ctx, sub) {
    if (!accounts()[sub]) return undefined;
    return {
      accountId: sub,
      async claims() {
        const account = accounts()[sub]; // now, not at sign-in: groups may have changed
        const claims = { sub, email: account.email, email_verified: true, preferred_username: sub };
        if (account.groups !== undefined) claims.groups = account.groups;
        return claims;
      },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out of the test provider?', `${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out of the test provider.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Provider error', `<pre>${esc(JSON.stringify(out, null, 2))}</pre>`);
  },
};

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(Object.fromEntries(new URLSearchParams(body))));
    req.on('error', reject);
  });
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(html);
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (req.method === 'GET' && prompt.name === 'login') {
    return send(res, 200, page('Sign in to the test provider', `
<form method="post" action="/interaction/${esc(uid)}/login">
<label for="login">Username</label><input id="login" name="login" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password">
<button type="submit">Sign in</button></form>`));
  }
  if (req.method === 'GET' && prompt.name === 'consent') {
    return send(res, 200, page(`Allow ${params.client_id} to know who you are?`, `
<p>It asks for: ${esc(params.scope)}</p>
<form method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit">Allow</button></form>`));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const account = accounts()[form.login];
    if (!account || account.password !== form.password) {
      return send(res, 200, page('Sign in to the test provider', `<p role="alert">Wrong username or password.</p>
<form method="post" action="/interaction/${esc(uid)}/login">
<label for="login">Username</label><input id="login" name="login" value="${esc(form.login || '')}">
<label for="password">Password</label><input id="password" name="password" type="password">
<button type="submit">Sign in</button></form>`));
    }
    return provider.interactionFinished(req, res, { login: { accountId: form.login } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm') {
    const { missingOIDCScope, missingOIDCClaims } = prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }
  return send(res, 400, page('Unexpected step', `<p>${esc(prompt.name)}</p>`));
}

// A copy of the ID token with its signature made by another key: well formed, not genuine.
function badSignature(idToken) {
  const [header, payload] = idToken.split('.');
  const { privateKey: other } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signer = createSign('RSA-SHA256');
  signer.update(`${header}.${payload}`);
  return `${header}.${payload}.${signer.sign(other).toString('base64url')}`;
}

// The token endpoint's answer, with the ID token replaced when a tamper was asked for.
function tamperTokenResponse(res) {
  const chunks = [];
  const { write, end, setHeader } = res;
  res.setHeader = (name, value) => (name.toLowerCase() === 'content-length' ? res : setHeader.call(res, name, value));
  res.write = (chunk) => { chunks.push(Buffer.from(chunk)); return true; };
  res.end = (chunk) => {
    if (chunk) chunks.push(Buffer.from(chunk));
    let body = Buffer.concat(chunks).toString('utf8');
    try {
      const answer = JSON.parse(body);
      if (answer.id_token) answer.id_token = badSignature(answer.id_token);
      body = JSON.stringify(answer);
    } catch { /* not JSON: an error answer, sent as it is */ }
    res.write = write;
    setHeader.call(res, 'content-length', Buffer.byteLength(body));
    return end.call(res, body);
  };
}

const server = http.createServer();
const provider = await new Promise((resolve) => {
  server.listen(Number(args.port), '127.0.0.1', () => {
    const issuer = `http://127.0.0.1:${server.address().port}`;
    resolve(new Provider(issuer, configuration));
  });
});
const handle = provider.callback();

server.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, provider.issuer);
    const match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|confirm))?$/);
    if (match) return await interaction(provider, req, res, match[1], match[2]);
    if (url.pathname === '/_test/tamper' && req.method === 'POST') {
      tamperNext = 'signature';
      return send(res, 200, 'ok');
    }
    if (url.pathname === '/token' && tamperNext) {
      tamperNext = '';
      tamperTokenResponse(res);
    }
    return handle(req, res);
  } catch (error) {
    console.error(error);
    if (!res.headersSent) send(res, 500, page('Provider error', esc(error.message)));
  }
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`LISTENING ${provider.issuer}`);
