// check_openapi.cjs FILE - validates an OpenAPI 3 document with @apidevtools/swagger-parser
// (schema of the OpenAPI 3.0 specification plus its semantic checks: unique operationIds,
// path parameters declared, $refs resolvable) and prints every operation as "METHOD PATH", one a
// line, for the caller to compare with the server's routes. Exit 1 with the errors when invalid.
'use strict';
const SwaggerParser = require('@apidevtools/swagger-parser');

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: check_openapi.cjs FILE');
    process.exit(2);
  }
  let api;
  try {
    api = await SwaggerParser.validate(file);
  } catch (e) {
    console.error(`INVALID ${file}: ${e.message}`);
    process.exit(1);
  }
  if (!/^3\.0\./.test(api.openapi || '')) {
    console.error(`INVALID ${file}: openapi is '${api.openapi}', expected 3.0.x`);
    process.exit(1);
  }
  const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
  for (const [path, item] of Object.entries(api.paths)) {
    for (const m of methods) {
      if (item[m]) console.log(`${m.toUpperCase()} ${path}`);
    }
  }
}
main();
