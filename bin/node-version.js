// The Node.js version check of every entry point (bin/errand.js, src/cli/main.ts, app/main.ts).
// Plain JavaScript, imported first, so that it runs (and says what to do) on any Node.js that can
// load the entry point at all. Node.js older than 22.18 cannot load a .ts file: there
// `node app/main.ts` fails with ERR_UNKNOWN_FILE_EXTENSION before any of our code runs, which is
// why the README gives commands that use the project's own Node.js (npm scripts, npx errand).

/** The oldest Node.js major version the sources run on (package.json `engines`). */
export const MIN_NODE_MAJOR = 24;

/**
 * Exits with code 1 and one line saying what to run instead when `version` (default: this
 * process's) is older than MIN_NODE_MAJOR. `what` names the program in the message.
 */
export function requireNode(what, version = process.versions.node) {
  const major = Number(String(version).split('.')[0]);
  if (major >= MIN_NODE_MAJOR) return;
  process.stderr.write(
    `${what} needs Node.js ${MIN_NODE_MAJOR} or newer; this is v${version}. Inside the project, use the Node.js that npm ci installs: ` +
      'npx errand ..., the npm scripts (npm start, npm run worker), or ./node_modules/.bin/node.\n',
  );
  process.exit(1);
}
