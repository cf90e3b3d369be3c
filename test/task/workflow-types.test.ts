// The types of workflows (src/task/workflow.ts): a step's input is checked at compile time against
// the values of the steps it depends on. Each `@ts-expect-error` below is a mismatch that must not
// compile (`npx tsc -p .` fails if one of them starts compiling); the test itself only builds shapes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { chain, chord, createErrand, dag, group, type ResultOf } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

const errand = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
const num = errand.task('types.num', { input: z.number() }, (n) => n + 1);
const str = errand.task('types.str', { input: z.string() }, (s) => s.length);
const list = errand.task('types.list', { input: z.array(z.number()) }, (ns) => ns.join(','));
const obj = errand.task('types.obj', { input: z.object({ a: z.number(), b: z.string() }) }, ({ a, b }) => ({ both: `${b}${a}` }));

/** Compile-time equality. */
type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
const same = <X, Y>(_proof: Equal<X, Y>) => true;

describe('workflow types', () => {
  it('chain: each step takes the previous value', () => {
    const ok = chain(num.step(1), num.next(), list.step([1]), str.next());
    same<ResultOf<typeof ok>, number>(true);
    // @ts-expect-error a number is not a string
    chain(num.step(1), str.next());
    // @ts-expect-error the third step takes a string, the second yields a number
    chain(num.step(1), num.next(), str.next());
    assert.ok(ok.node);
  });

  it('group and chord: the callback takes the list of the group', () => {
    const g = group(num.step(1), num.step(2));
    same<ResultOf<typeof g>, [number, number]>(true);
    const c = chord(group(num.step(1), chain(num.step(2), num.next())), list.next());
    same<ResultOf<typeof c>, string>(true);
    // @ts-expect-error a list of numbers is not a string
    chord(group(num.step(1), num.step(2)), str.next());
    // @ts-expect-error a list of strings is not a list of numbers
    chord(group(list.step([1]), list.step([2])), list.next());
    assert.ok(c.node);
  });

  it('dag: a join takes an object of the values of the nodes it names', () => {
    const d = dag({ x: num.step(1), y: list.step([1]), z: obj.join({ a: 'x', b: 'y' }) });
    same<ResultOf<typeof d>, { x: number; y: string; z: { both: string } }>(true);
    // @ts-expect-error b would be a number (the value of w), obj takes a string
    dag({ x: num.step(1), w: num.step(2), z: obj.join({ a: 'x', b: 'w' }) });
    // @ts-expect-error it joins a node the dag does not have
    dag({ x: num.step(1), y: list.step([1]), z: obj.join({ a: 'x', b: 'nope' }) });
    assert.ok(d.node);
  });
});
