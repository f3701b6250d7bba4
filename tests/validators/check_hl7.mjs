// check_hl7.mjs FILE.hl7... - every ORU must parse with npm hl7v2 in strict mode (data types of
// DT/DTM/NM/SI/... fields, HL7 error 102) and match the ORU_R01 segment structure of v2.5.1 in
// hl7v2-dictionary (order and cardinality of segments and groups). Exit 1 on any failure.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { HL7Message } from 'hl7v2';

const require = createRequire(import.meta.url);
const { dictionaries } = require('hl7v2-dictionary');
const here = dirname(fileURLToPath(import.meta.url));
const version = (p) => JSON.parse(readFileSync(join(here, 'node_modules', p, 'package.json'), 'utf8')).version;

// Greedy matcher of the segment ids against a message structure: enough for ORU_R01, whose
// groups each start with a segment no other group starts with.
function structureErrors(segIds, def) {
  let pos = 0;
  const errors = [];
  function group(segments, path) {
    const start = pos;
    for (const [name, node] of Object.entries(segments).sort((a, b) => a[1].idx - b[1].idx)) {
      const min = node.min || 0, max = node.max || Infinity;
      let n = 0;
      while (n < max && pos < segIds.length) {
        const before = pos;
        if (node.segments) {
          if (!group(node.segments, `${path}/${name}`) || pos === before) { pos = before; break; }
        } else if (segIds[pos] === name) pos++;
        else break;
        n++;
      }
      if (n < min && (pos > start || path === ''))
        errors.push(`${path}/${name}: expected >= ${min}, got ${n} (at segment #${pos + 1} ${segIds[pos] || 'END'})`);
    }
    return pos > start;
  }
  group(def.segments, '');
  if (pos < segIds.length) errors.push(`unexpected segment #${pos + 1} ${segIds[pos]}`);
  return errors;
}

const def = dictionaries['2.5.1'].messages.ORU_R01;
let bad = 0;
for (const f of process.argv.slice(2)) {
  const txt = readFileSync(f, 'utf8');
  const problems = [];
  try {
    const m = HL7Message.parse(txt, { strict: true });
    if (m.getSegment('MSH').field(12).toHL7String() !== '2.5.1') problems.push('MSH-12 is not 2.5.1');
  } catch (e) {
    problems.push(`strict parse: ${e.message} (hl7ErrorCode ${e.hl7ErrorCode})`);
  }
  if (txt.includes('\n')) problems.push('LF in the message (segments must end with CR only)');
  const segIds = txt.split('\r').filter((s) => s.length).map((s) => s.slice(0, 3));
  problems.push(...structureErrors(segIds, def));
  console.log(`${f}: ${problems.length ? 'INVALID ' + problems.join('; ') : 'strict parse OK, ORU_R01 2.5.1 structure OK'}`);
  if (problems.length) bad++;
}
console.log(`hl7v2 ${version('hl7v2')}, hl7v2-dictionary ${version('hl7v2-dictionary')}: ` +
            `${process.argv.length - 2 - bad} valid, ${bad} invalid`);
process.exit(bad ? 1 : 0);
