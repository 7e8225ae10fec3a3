// A real OpenID Connect provider for the single sign-on tests (node_modules/oidc-provider).
//
// Configured by one JSON document in the environment variable OIDC_TEST_CONFIG:
//   {"port": 4000, "client_id": "...", "client_secret": "...",
//    "redirect_uris": ["http://127.0.0.1:8000/login/sso/callback"],
//    "accounts": {"ada@acme.example": {"email": "ada@acme.example", "email_verified": true,
//                                     "name": "Ada Lovelace"}}}
// The issuer is http://127.0.0.1:<port>. Sign-in uses the library's development pages: the
// login field takes an account id (a key of "accounts"; the password is not checked), then a
// consent page. Prints "listening <issuer>" once it accepts connections.
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = config.accounts;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  scopes: ['openid', 'email', 'profile'],
  pkce: { required: () => true },
  // The claims asked for by scope go into the id token, as Okta, Entra and Google do.
  conformIdTokenClaims: false,
  cookies: { keys: ['learncredits-test-oidc-provider-cookie-key'] },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
});
// Plain http on 127.0.0.1 is what the tests use; the library warns but allows it.
provider.proxy = false;

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
