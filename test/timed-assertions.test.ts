// The project's rule, kept by a test: tests assert behaviour (an event, an order, a count), never
// elapsed time. This reads every file under test/ and fails on an assertion (`assert.*(...)`) whose
// arguments measure time: a difference of clock reads (`Date.now() - start`), a value derived from
// one (`waited`, set to `Date.now() - start`), or a comparison with a clock read or a value taken
// from the clock (`startedAt >= before + 400` where `before = Date.now()`). Clock values passed to a
// broker as `now` and compared as values (`startedAt: t0 + 10`) are fine. `within(p, ms, what)` is
// a safety net against a hang, not an assertion: the test must assert something else too.
import assert from 'node:assert/strict';
import { globSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import ts from 'typescript';

const ROOT = new URL('../', import.meta.url).pathname;

function isClockRead(node: ts.Node): boolean {
  if (ts.isCallExpression(node)) return /^(Date\.now|performance\.now|process\.hrtime(\.bigint)?)$/.test(node.expression.getText());
  if (ts.isNewExpression(node)) return node.expression.getText() === 'Date' && (node.arguments?.length ?? 0) === 0;
  return false;
}

const RELATIONAL = new Set([
  ts.SyntaxKind.LessThanToken,
  ts.SyntaxKind.LessThanEqualsToken,
  ts.SyntaxKind.GreaterThanToken,
  ts.SyntaxKind.GreaterThanEqualsToken,
]);
const PLUS_MINUS = new Set([ts.SyntaxKind.PlusToken, ts.SyntaxKind.MinusToken]);

/** Whether `test` holds for `node` or a node inside it (not inside a nested function). */
function some(node: ts.Node, test: (n: ts.Node) => boolean): boolean {
  if (test(node)) return true;
  if (ts.isArrowFunction(node) || ts.isFunctionExpression(node) || ts.isFunctionDeclaration(node)) return false;
  return ts.forEachChild(node, (c) => (some(c, test) ? true : undefined)) ?? false;
}

function strip(n: ts.Node): ts.Node {
  while (ts.isParenthesizedExpression(n) || ts.isNonNullExpression(n) || ts.isAsExpression(n)) n = n.expression;
  return n;
}

/** The assertions of `source` that measure elapsed time, as `line: text`. */
export function timedAssertions(source: string, fileName = 'x.ts'): string[] {
  const sf = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const clock = new Set<string>(); // names holding a reading of the clock (`t0 = Date.now()`)
  const offset = new Set<string>(); // names holding a reading plus or minus something (`deadline = t0 + 400`)
  const elapsed = new Set<string>(); // names holding a difference of readings, or computed from one
  /** A reading of the clock: `Date.now()`, a name holding one. */
  const isClock = (n: ts.Node): boolean => {
    const e = strip(n);
    return isClockRead(e) || (ts.isIdentifier(e) && clock.has(e.text));
  };
  /** A reading of the clock moved by an amount: `before + 400`. */
  const isOffset = (n: ts.Node): boolean => {
    const e = strip(n);
    if (ts.isIdentifier(e)) return offset.has(e.text);
    return (
      ts.isBinaryExpression(e) &&
      PLUS_MINUS.has(e.operatorToken.kind) &&
      (isClock(e.left) || isOffset(e.left) || isClock(e.right) || isOffset(e.right)) &&
      !isElapsedExpr(e)
    );
  };
  /** A difference of two readings: `Date.now() - start`. */
  const isElapsedExpr = (e: ts.Node): boolean =>
    ts.isBinaryExpression(e) &&
    e.operatorToken.kind === ts.SyntaxKind.MinusToken &&
    (isClock(e.left) || isOffset(e.left)) &&
    (isClock(e.right) || isOffset(e.right));
  const hasElapsed = (n: ts.Node): boolean => some(n, (c) => (ts.isIdentifier(c) && elapsed.has(c.text)) || isElapsedExpr(c));

  // Names bound to such values (to a fixpoint: a name may be set from another one).
  const bindings: { name: string; value: ts.Node }[] = [];
  const collect = (n: ts.Node): void => {
    if (ts.isVariableDeclaration(n) && n.initializer && ts.isIdentifier(n.name)) bindings.push({ name: n.name.text, value: n.initializer });
    else if (ts.isPropertyAssignment(n) && (ts.isIdentifier(n.name) || ts.isStringLiteral(n.name)))
      bindings.push({ name: n.name.text, value: n.initializer });
    else if (ts.isBinaryExpression(n) && n.operatorToken.kind === ts.SyntaxKind.EqualsToken && ts.isIdentifier(n.left))
      bindings.push({ name: n.left.text, value: n.right });
    ts.forEachChild(n, collect);
  };
  collect(sf);
  for (let changed = true; changed; ) {
    changed = false;
    for (const { name, value } of bindings) {
      for (const [set, holds] of [
        [elapsed, hasElapsed],
        [clock, isClock],
        [offset, isOffset],
      ] as const) {
        if (!set.has(name) && holds(value)) {
          set.add(name);
          changed = true;
        }
      }
    }
  }

  const found: string[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isCallExpression(n) && /^(t\.)?assert(\.\w+)?$/.test(n.expression.getText())) {
      const args = [...n.arguments];
      const last = args.at(-1);
      // The message (a string) may say how long something took; the checked values may not.
      if (
        args.length > 1 &&
        last &&
        (ts.isStringLiteral(last) || ts.isTemplateExpression(last) || ts.isNoSubstitutionTemplateLiteral(last))
      )
        args.pop();
      const timed = args.some(
        (a) =>
          hasElapsed(a) ||
          some(a, (c) => ts.isBinaryExpression(c) && RELATIONAL.has(c.operatorToken.kind) && (isOffset(c.left) || isOffset(c.right))),
      );
      if (timed)
        found.push(`${sf.getLineAndCharacterOfPosition(n.getStart()).line + 1}: ${n.getText().replace(/\s+/g, ' ').slice(0, 160)}`);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return found;
}

describe('no assertion on elapsed time in test/', () => {
  it('finds timed assertions in examples, and leaves order and value assertions alone', () => {
    const flagged = [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: code to check, not a template
      'const t = Date.now(); await x(); assert.ok(Date.now() - t < 2500, `fast (${Date.now() - t} ms)`);',
      'const post = async () => { const start = Date.now(); const res = await p(); return { res, waited: Date.now() - start }; };\nfor (const { waited } of a) assert.ok(waited >= 140);',
      'const before = Date.now(); const info = await h.info(); assert.ok(info.startedAt!.getTime() >= before + 400);',
      'let woke = 0; const started = performance.now(); p.then(() => { woke = performance.now(); }); assert.ok(woke - started < LIMIT, "before the timer");',
      'const t0 = process.hrtime.bigint(); work(); const ms = Number(process.hrtime.bigint() - t0) / 1e6; assert(ms < 10);',
      'const start = Date.now(); await run(n); const rate = n / ((Date.now() - start) / 1000); assert.ok(rate > 100, "throughput floor");',
    ];
    for (const code of flagged) assert.equal(timedAssertions(code).length, 1, code);
    const fine = [
      'const t0 = Date.now(); await b.reserve({ now: t0 + 10 }); assert.equal(rec.startedAt, t0 + 10);',
      'assert.ok(r.startedAt! >= hang.finishedAt!, "after the timeout");',
      'const t = Date.now(); await within(p, 5000, "safety net"); assert.equal(await count(), 3);',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: code to check, not a template
      'assert.deepStrictEqual(m.wait, [0, 3], `waited ${Date.now() - t} ms`);',
      'const deadline = Date.now() + 1000; while (Date.now() < deadline) await tick(); assert.equal(n, 2);',
      'const killAt = Date.now(); kill(); assert.ok(copies[0].at < killAt && copies[1].at > killAt, "an order of events");',
      'const runs = [run("q", Date.now())]; assert.ok(runs.length > 0);',
    ];
    for (const code of fine) assert.deepEqual(timedAssertions(code), [], code);
  });

  it('every file under test/ asserts behaviour, not elapsed time', () => {
    const found: string[] = [];
    for (const file of globSync('test/**/*.ts', { cwd: ROOT }).sort()) {
      for (const hit of timedAssertions(readFileSync(`${ROOT}${file}`, 'utf8'), file)) found.push(`${file}:${hit}`);
    }
    assert.deepEqual(found, [], `assertions on elapsed time (assert an event, an order or a count instead):\n${found.join('\n')}`);
  });
});
