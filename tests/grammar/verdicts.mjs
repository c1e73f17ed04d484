// Independent oracle for src/grammar/grammar_test.cpp: ajv's verdict on each document.
//   node tests/grammar/verdicts.mjs CASES.json   ->  stdout: [[true, false, ...], ...]
// CASES.json = [{"schema": {...}, "docs": ["<JSON text>", ...]}, ...]; a text that is not
// JSON is invalid. Installs the pinned ajv (package-lock.json) on first use.
import { execSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(here, 'node_modules', 'ajv'))) {
  execSync('npm ci --no-audit --no-fund --loglevel=error', { cwd: here, stdio: ['ignore', 'ignore', 'inherit'] });
}
const { default: Ajv2020 } = await import(join(here, 'node_modules', 'ajv', 'dist', '2020.js'));
const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = cases.map(({ schema, docs }) => {
  // strict: false — the schemas carry annotations ajv's strict mode would flag.
  const validate = new Ajv2020({ strict: false }).compile(schema);
  return docs.map((text) => {
    let doc;
    try { doc = JSON.parse(text); } catch { return false; }
    return validate(doc) === true;
  });
});
process.stdout.write(JSON.stringify(out));
