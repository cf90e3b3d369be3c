// The shape of src/, kept by a test (docs/architecture.md describes it):
// - no import cycles among src/ files;
// - dependencies point one way, down the layers below (a file imports its own layer or lower ones);
// - no src/ file over 500 lines unless its header says why it must be one file;
// - no Lua file of the Redis broker (a script or a library of helpers) over 500 lines, no exception.
//
// The import graph is read with TypeScript's own `preProcessFile` (the compiler is already a
// development dependency): it lists every `import`, `export ... from`, `import type` and `import()`
// of a file exactly as tsc sees them, comments and strings aside, with no further dependency and no
// configuration to keep in step (dependency-cruiser and madge would bring a resolver and a config
// file of their own for what is, here, relative `.ts` specifiers only). Type-only imports count:
// a type from a higher layer is a dependency on it all the same.
import assert from 'node:assert/strict';
import { globSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';

const ROOT = resolve(new URL('..', import.meta.url).pathname);

/** The layers, lowest first. A path prefix (a folder ending in `/`, or one file) names its layer; the longest prefix wins. */
const LAYERS: { name: string; paths: string[] }[] = [
  { name: 'core', paths: ['src/core/'] },
  { name: 'broker, schedule', paths: ['src/broker/', 'src/schedule/'] },
  { name: 'task', paths: ['src/task/', 'src/telemetry/tracing.ts'] },
  { name: 'worker', paths: ['src/worker/'] },
  { name: 'errand', paths: ['src/errand.ts', 'src/index.ts'] },
  { name: 'web, testing, metrics', paths: ['src/web/', 'src/testing/', 'src/telemetry/metrics.ts'] },
  { name: 'dashboard', paths: ['src/dashboard/'] },
  { name: 'http', paths: ['src/http/'] },
  { name: 'cli, celery', paths: ['src/cli/', 'src/celery/'] },
];

// ---------------------------------------------------------------------------------------------
// KNOWN EXCEPTIONS, to be emptied by the merge of issue 12's other parts (the broker and worker
// splits). Each entry names its reason; an entry that is no longer needed fails the test, so that
// the list only ever shrinks.
// ---------------------------------------------------------------------------------------------
/** Files over 500 lines that others are splitting now. */
const KNOWN_LONG_FILES = new Map<string, string>([]);
/** Imports that go up a layer (`from -> to`), until the worker takes a small host interface instead of the Errand app. */
const KNOWN_UPWARD_IMPORTS = new Map<string, string>([]);
// ---------------------------------------------------------------------------------------------

const MAX_LINES = 500;

function sourceFiles(): string[] {
  return globSync('src/**/*.{ts,mts,cts}', { cwd: ROOT })
    .filter((f) => !f.startsWith('src/dashboard/dist/') && !f.endsWith('.d.ts'))
    .sort();
}

function layerOf(file: string): number {
  let best = -1;
  let bestLength = -1;
  LAYERS.forEach((layer, i) => {
    for (const p of layer.paths) {
      const match = p.endsWith('/') ? file.startsWith(p) : file === p;
      if (match && p.length > bestLength) {
        best = i;
        bestLength = p.length;
      }
    }
  });
  return best;
}

/** Each src/ file's imports of other src/ files (relative specifiers, resolved to paths from the root). */
function importGraph(files: string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    const info = ts.preProcessFile(text, true, true);
    const targets = info.importedFiles
      .map((f) => f.fileName)
      .filter((s) => s.startsWith('.'))
      .map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)))
      .filter((t) => t.startsWith('src/'));
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

/** The cycles of the graph, one per strongly connected component of more than one file (or a file importing itself). */
function cycles(graph: Map<string, string[]>): string[][] {
  // Tarjan's algorithm, iterative over a small graph: recursion is fine at this size.
  let index = 0;
  const indexOf = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    indexOf.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!indexOf.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indexOf.get(w)!));
    }
    if (low.get(v) === indexOf.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!indexOf.has(v)) visit(v);
  return found;
}

/** The comment lines a file starts with (before its first line of code). */
function header(text: string): string {
  const lines: string[] = [];
  let inBlock = false;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (inBlock) {
      lines.push(t);
      if (t.includes('*/')) inBlock = false;
    } else if (t.startsWith('//') || t === '') lines.push(t);
    else if (t.startsWith('/*')) {
      lines.push(t);
      inBlock = !t.includes('*/');
    } else break;
  }
  return lines.join('\n');
}

describe('architecture: the shape of src/', () => {
  const files = sourceFiles();
  const graph = importGraph(files);

  it('reads a graph that is there (every src/ file has a layer; the imports resolve to files)', () => {
    assert.ok(files.length > 50, `found ${files.length} files`);
    assert.deepEqual(
      files.filter((f) => layerOf(f) < 0),
      [],
      'these files belong to no layer: add them to LAYERS',
    );
    const missing = [...graph].flatMap(([f, ts]) =>
      ts.filter((t) => !graph.has(t) && !t.startsWith('src/dashboard/dist/')).map((t) => `${f} -> ${t}`),
    );
    assert.deepEqual(missing, [], 'imports of files that do not exist');
  });

  it('has no import cycles among src/ files (the known upward imports aside)', () => {
    const pruned = new Map([...graph].map(([f, targets]) => [f, targets.filter((t) => !KNOWN_UPWARD_IMPORTS.has(`${f} -> ${t}`))]));
    assert.deepEqual(cycles(pruned), [], 'files that import each other, directly or through others');
  });

  it('has dependencies that point one way: core <- broker <- task <- worker <- errand <- web/testing/metrics <- dashboard <- http <- cli', () => {
    const upward: string[] = [];
    for (const [from, targets] of graph) {
      for (const to of targets) {
        if (!graph.has(to)) continue;
        if (layerOf(to) > layerOf(from)) upward.push(`${from} -> ${to}`);
      }
    }
    const unexpected = upward.filter((e) => !KNOWN_UPWARD_IMPORTS.has(e));
    assert.deepEqual(
      unexpected,
      [],
      `imports that go up a layer (${LAYERS.map((l) => l.name).join(' <- ')}): move the shared piece down, or pass it in`,
    );
    const stale = [...KNOWN_UPWARD_IMPORTS.keys()].filter((e) => !upward.includes(e));
    assert.deepEqual(stale, [], 'KNOWN_UPWARD_IMPORTS lists imports that are gone: remove them from the list');
  });

  it(`has no file over ${MAX_LINES} lines unless its header says why it must be one file`, () => {
    const long: string[] = [];
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
      if (lines > MAX_LINES && !/\bone file\b/i.test(header(text))) long.push(file);
    }
    const unexpected = long.filter((f) => !KNOWN_LONG_FILES.has(f)).map((f) => `${f} (${MAX_LINES}+ lines)`);
    assert.deepEqual(
      unexpected,
      [],
      `split these along their seams, or say in the file's header comment why it must be one file ("... one file because ...")`,
    );
    const stale = [...KNOWN_LONG_FILES.keys()].filter((f) => !long.includes(f));
    assert.deepEqual(stale, [], 'KNOWN_LONG_FILES lists files that are now short enough: remove them from the list');
  });

  it(`has no Lua file over ${MAX_LINES} lines (a script or a library of helpers)`, () => {
    const lua = globSync('src/**/*.lua', { cwd: ROOT }).sort();
    assert.ok(lua.length >= 12, 'the Redis broker has its Lua files under src/');
    const long = lua
      .map((file) => {
        const text = readFileSync(join(ROOT, file), 'utf8');
        return { file, lines: text.split('\n').length - (text.endsWith('\n') ? 1 : 0) };
      })
      .filter((f) => f.lines > MAX_LINES)
      .map((f) => `${f.file} (${f.lines} lines)`);
    assert.deepEqual(long, [], 'split these: helpers into a library of src/broker/redis/lua/ (see scripts.ts), a script into steps');
  });

  it('finds a cycle and an upward import when there is one (the checks can fail)', () => {
    const g = new Map([
      ['src/core/a.ts', ['src/core/b.ts']],
      ['src/core/b.ts', ['src/core/a.ts', 'src/errand.ts']],
      ['src/errand.ts', []],
    ]);
    assert.deepEqual(cycles(g), [['src/core/a.ts', 'src/core/b.ts']]);
    assert.ok(layerOf('src/errand.ts') > layerOf('src/core/b.ts'));
    assert.ok(/\bone file\b/i.test(header('// Kept as one file because its statements share one transaction.\nimport x from "y";\n')));
    assert.ok(!/\bone file\b/i.test(header('import x from "y";\n// one file\n')));
  });
});
