// Validates every file of a directory with @asyncapi/parser and prints, as JSON, each file's
// name with whether the parser found it valid and its first error messages.
//   node validate.cjs DIR      (NODE_PATH holds the node_modules with @asyncapi/parser)
const fs = require('fs');
const path = require('path');
const { Parser } = require('@asyncapi/parser');

async function main() {
  const dir = process.argv[2];
  const parser = new Parser();
  const results = {};
  for (const name of fs.readdirSync(dir).sort()) {
    const text = fs.readFileSync(path.join(dir, name), 'utf8');
    try {
      // A document that refers to other files makes the parser fetch them: no network here,
      // so such a document gets a verdict of "invalid" after a few seconds.
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), 5000));
      const { document, diagnostics } = await Promise.race([parser.parse(text), timeout]);
      const errors = diagnostics.filter((d) => d.severity === 0).map((d) => d.message);
      results[name] = { valid: document !== undefined && errors.length === 0, errors: errors.slice(0, 3) };
    } catch (error) {
      results[name] = { valid: false, errors: [String(error)] };
    }
  }
  process.stdout.write(JSON.stringify(results), () => process.exit(0));
}

main().catch((error) => {
  process.stderr.write(String(error));
  process.exit(1);
});
