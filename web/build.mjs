// Builds the dashboard into <out>/ (index.html, assets/app.js, assets/app.css,
// assets/favicon.svg) with esbuild: one minified, deterministic bundle, no source maps,
// nothing fetched at run time. `--check` builds into a temporary folder and fails when the
// committed <out>/ differs, so a stale build cannot be committed unnoticed.
import { build } from 'esbuild';
import { mkdtemp, mkdir, readFile, readdir, copyFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const check = args.includes('--check');
const target = join(here, args.find((a) => !a.startsWith('--')) ?? 'dist');

async function buildInto(out) {
  await mkdir(join(out, 'assets'), { recursive: true });
  await build({
    entryPoints: [join(here, 'src/main.ts')],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2022',
    legalComments: 'none',
    charset: 'utf8',
    outfile: join(out, 'assets/app.js'),
    logLevel: 'warning',
  });
  await build({
    entryPoints: [join(here, 'src/app.css')],
    bundle: true,
    minify: true,
    charset: 'utf8',
    outfile: join(out, 'assets/app.css'),
    logLevel: 'warning',
  });
  await copyFile(join(here, 'src/index.html'), join(out, 'index.html'));
  await copyFile(join(here, 'src/favicon.svg'), join(out, 'assets/favicon.svg'));
}

async function files(dir, prefix = '') {
  const names = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const name = join(prefix, entry.name);
    if (entry.isDirectory()) names.push(...(await files(join(dir, entry.name), name)));
    else names.push(name);
  }
  return names.sort();
}

if (check) {
  const fresh = await mkdtemp(join(tmpdir(), 'cc-web-'));
  try {
    await buildInto(fresh);
    const want = await files(fresh);
    const have = await files(target).catch(() => []);
    const stale = want.filter((f) => !have.includes(f)).concat(have.filter((f) => !want.includes(f)));
    for (const name of want.filter((f) => have.includes(f))) {
      const [a, b] = await Promise.all([readFile(join(fresh, name)), readFile(join(target, name))]);
      if (!a.equals(b)) stale.push(name);
    }
    if (stale.length > 0) {
      console.error(`web/dist is stale (${stale.join(', ')}): run \`npm run build\` in web/ and commit web/dist`);
      process.exit(1);
    }
    console.log('web/dist matches the sources');
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
} else {
  await rm(target, { recursive: true, force: true });
  await buildInto(target);
  console.log(`built ${target}`);
}
