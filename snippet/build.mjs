// Builds the browser library and the snippet with esbuild (from package-lock.json):
//   node snippet/build.mjs          writes snippet/dist/cdp.min.js and snippet/dist/snippet.min.js
//   node snippet/build.mjs --check  fails if the committed files differ from a fresh build, or if the
//                                   library is over its size budget (8 KB gzipped)
// The collector embeds dist/cdp.min.js (shared/src/snippet.rs), so Rust builds need no Node.js.
import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const BUDGET = 8 * 1024;
const cargo = readFileSync(join(here, '..', 'Cargo.toml'), 'utf8');
const version = cargo.match(/\[workspace\.package\][^[]*?version\s*=\s*"([^"]+)"/)[1];

async function minify(entry, define) {
  const result = await build({
    entryPoints: [join(here, 'src', entry)],
    bundle: false,
    minify: true,
    target: 'es2017',
    legalComments: 'none',
    write: false,
    define,
  });
  return result.outputFiles[0].text;
}

const outputs = {
  'cdp.min.js': await minify('cdp.js', {}),
  'snippet.min.js': await minify('snippet.js', {}),
};
outputs['cdp.min.js'] = outputs['cdp.min.js'].replace('__VERSION__', version);

const check = process.argv.includes('--check');
let failed = false;
for (const [name, text] of Object.entries(outputs)) {
  const path = join(here, 'dist', name);
  const gz = gzipSync(Buffer.from(text), { level: 9 }).length;
  console.log(`${name}: ${text.length} bytes, ${gz} bytes gzipped`);
  if (name === 'cdp.min.js' && gz > BUDGET) {
    console.error(`${name} is ${gz} bytes gzipped, over the ${BUDGET}-byte budget`);
    failed = true;
  }
  if (check) {
    let committed = '';
    try {
      committed = readFileSync(path, 'utf8');
    } catch {}
    if (committed !== text) {
      console.error(`${path} is not the build of snippet/src: run \`node snippet/build.mjs\` and commit it`);
      failed = true;
    }
  } else {
    writeFileSync(path, text);
  }
}
process.exit(failed ? 1 : 0);
