// Starts Swagger UI (the `swagger-ui-dist` package, served from /docs/assets/) on this
// service's OpenAPI document. Nothing is fetched from another host: the online validator
// badge is off, and the key given to "Authorize" is kept in memory only.

interface SwaggerUIBundleFn {
  (options: Record<string, unknown>): unknown;
  presets: { apis: unknown };
}

declare global {
  interface Window {
    SwaggerUIBundle?: SwaggerUIBundleFn;
  }
}

function start(): void {
  const bundle = window.SwaggerUIBundle;
  const root = document.getElementById('swagger-ui');
  if (!bundle || !root) {
    if (root) root.textContent = 'The API reference could not start (its script did not load).';
    return;
  }
  bundle({
    url: '/api/v1/openapi.json',
    dom_id: '#swagger-ui',
    presets: [bundle.presets.apis],
    layout: 'BaseLayout',
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    displayRequestDuration: true,
    filter: true,
    tryItOutEnabled: false,
  });
}

start();

export {};
