// The Node.js version check of every entry point (bin/errand.js, src/cli/main.ts, app/main.ts).
// Plain JavaScript, imported first, so that it runs (and says what to do) on any Node.js that can
// load the entry point at all. The package (compiled, in dist/) runs on 22.13 or newer, as
// package.json's `engines` says. Node.js older than 22.18 cannot load a .ts file: there
// `node app/main.ts` fails with ERR_UNKNOWN_FILE_EXTENSION before any of our code runs, which is
// why the README gives commands that use the project's own Node.js (npm scripts, npx errand).

/** The oldest Node.js the package runs on (package.json `engines`): node:sqlite without a flag. */
export const MIN_NODE = '22.13';

/**
 * Exits with code 1 and one line saying what to run instead when `version` (default: this
 * process's) is older than MIN_NODE. `what` names the program in the message.
 */
export function requireNode(what, version = process.versions.node) {
  const [major = 0, minor = 0] = String(version).split('.').map(Number);
  const [minMajor, minMinor] = MIN_NODE.split('.').map(Number);
  if (major > minMajor || (major === minMajor && minor >= minMinor)) return;
  process.stderr.write(
    `${what} needs Node.js ${MIN_NODE} or newer (22 LTS or 24 LTS); this is v${version}. Inside the project, use the Node.js that npm ci installs: ` +
      'npx errand ..., the npm scripts (npm start, npm run worker), or ./node_modules/.bin/node.\n',
  );
  process.exit(1);
}
