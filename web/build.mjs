// Builds the dashboard into <out>/ (index.html, assets/app.js, assets/app.css,
// assets/favicon.svg, and the API reference in docs/) with esbuild: one minified,
// deterministic bundle, no source maps, nothing fetched at run time. `--check` builds into a temporary folder and fails when the
// committed <out>/ differs, so a stale build cannot be committed unnoticed.
import { build } from 'esbuild';
import { mkdtemp, mkdir, readFile, readdir, copyFile, rm, writeFile } from 'node:fs/promises';
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
  await buildDocs(join(out, 'docs'));
}

// The interactive API reference at /docs: Swagger UI from the swagger-ui-dist package
// (its bundle and stylesheet as published, without their source-map comments, and its
// licence), started by src/docs/docs.ts on this service's OpenAPI document.
async function buildDocs(out) {
  await mkdir(join(out, 'assets'), { recursive: true });
  const dist = join(here, 'node_modules/swagger-ui-dist');
  const withoutSourceMap = (text) => text.replace(/\n?\/[*/]# sourceMappingURL=\S+(?: \*\/)?\s*$/, '\n');
  for (const name of ['swagger-ui-bundle.js', 'swagger-ui.css']) {
    const text = await readFile(join(dist, name), 'utf8');
    await writeFile(join(out, 'assets', name), withoutSourceMap(text));
  }
  const version = JSON.parse(await readFile(join(dist, 'package.json'), 'utf8')).version;
  const licence = await readFile(join(dist, 'LICENSE'), 'utf8');
  const notice = await readFile(join(dist, 'NOTICE'), 'utf8');
  const bundled = await readFile(join(dist, 'swagger-ui-bundle.js.LICENSE.txt'), 'utf8');
  await writeFile(
    join(out, 'assets', 'swagger-ui-LICENSE.txt'),
    `swagger-ui-dist ${version}\n\n${licence}\n${notice}\n\nLicences of the code in swagger-ui-bundle.js:\n\n${bundled}`,
  );
  await build({
    entryPoints: [join(here, 'src/docs/docs.ts')],
    bundle: true,
    minify: true,
    format: 'iife',
    target: 'es2022',
    legalComments: 'none',
    charset: 'utf8',
    outfile: join(out, 'assets/docs.js'),
    logLevel: 'warning',
  });
  await copyFile(join(here, 'src/docs/docs.css'), join(out, 'assets/docs.css'));
  await copyFile(join(here, 'src/docs/index.html'), join(out, 'index.html'));
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
