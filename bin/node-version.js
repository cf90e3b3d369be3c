// The Node.js version check of every entry point (bin/errand.js, src/cli/main.ts, app/main.ts).
// Plain JavaScript, imported first, so that it runs (and says what to do) on any Node.js that can
// load the entry point at all. The package (compiled, in dist/) runs on 22.20 or newer of 22 LTS
// and 24.7 or newer, as package.json's `engines` says: earlier releases' node:sqlite cannot bind
// numbered parameters (`?1`), which every statement of the SQLite broker uses ("column index out
// of range"). Node.js older than 22.18 cannot load a .ts file either: there `node app/main.ts`
// fails with ERR_UNKNOWN_FILE_EXTENSION before any of our code runs, which is why the README gives
// commands that use the project's own Node.js (npm scripts, npx errand).

/** The oldest release of each supported Node.js line (package.json `engines`): [major, minor]. */
export const MIN_NODE = [
  [22, 20],
  [24, 7],
];

/** Whether Node.js `version` is one the package supports (22.20+ of 22, 24.7 or newer after). */
export function nodeSupported(version = process.versions.node) {
  const [major = 0, minor = 0] = String(version).split('.').map(Number);
  if (major === 22) return minor >= 20;
  if (major === 24) return minor >= 7;
  return major > 24;
}

/**
 * Exits with code 1 and one line saying what to run instead when `version` (default: this
 * process's) is not supported (nodeSupported). `what` names the program in the message.
 */
export function requireNode(what, version = process.versions.node) {
  if (nodeSupported(version)) return;
  process.stderr.write(
    `${what} needs Node.js 22.20 or newer (22 LTS), or 24.7 or newer; this is v${version}. Install one of those and put it on the PATH; ` +
      "in Errand's own repository, use the Node.js that its npm ci installs: npx errand ..., the npm scripts (npm start, npm run worker), or ./node_modules/.bin/node.\n",
  );
  process.exit(1);
}
