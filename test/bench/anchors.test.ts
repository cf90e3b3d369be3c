// Where the anchors folder is found (bench/lib/anchors.ts): BENCH_ANCHORS, a `shared/anchors` above
// the checkout, above a worktree's main checkout, and above the local path a clone was made from (a
// fresh `git clone /path/to/repo` elsewhere, as CI makes); and what is said when there is none.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { anchorsMissing, findAnchors } from '../../bench/lib/anchors.ts';
import { tempDir } from '../helpers.ts';

const git = (cwd: string, ...args: string[]) =>
  execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { cwd, stdio: 'ignore' });

/** A repository with one commit at `dir`. */
function repo(dir: string): string {
  mkdirSync(dir, { recursive: true });
  git(dir, 'init', '-q', '-b', 'main');
  writeFileSync(join(dir, 'README.md'), 'x\n');
  git(dir, 'add', '.');
  git(dir, 'commit', '-qm', 'x');
  return dir;
}

describe('the anchors folder', () => {
  it('is found in a shared/anchors above the checkout', () => {
    const top = tempDir('errand-anchors');
    const main = repo(join(top, 'work', 'main'));
    mkdirSync(join(top, 'work', 'shared', 'anchors'), { recursive: true });
    assert.equal(findAnchors(main, {}).dir, join(top, 'work', 'shared', 'anchors'));
  });

  it('is found above the local path a clone was made from, and above the main checkout of a worktree', () => {
    const top = tempDir('errand-anchors');
    const main = repo(join(top, 'work', 'main'));
    mkdirSync(join(top, 'work', 'shared', 'anchors'), { recursive: true });
    const clone = join(top, 'elsewhere', 'ci');
    mkdirSync(join(top, 'elsewhere'));
    git(top, 'clone', '-q', main, clone);
    const found = findAnchors(clone, {});
    assert.equal(found.dir, join(top, 'work', 'shared', 'anchors'));
    assert.ok(found.looked.includes(join(top, 'elsewhere', 'shared', 'anchors')), 'above the clone first');

    const worktree = join(top, 'trees', 'branch');
    git(main, 'worktree', 'add', '-q', worktree, '-b', 'branch');
    assert.equal(findAnchors(worktree, {}).dir, join(top, 'work', 'shared', 'anchors'));
  });

  it('is BENCH_ANCHORS when set, and only there', () => {
    const top = tempDir('errand-anchors');
    const main = repo(join(top, 'work', 'main'));
    mkdirSync(join(top, 'work', 'shared', 'anchors'), { recursive: true });
    const mine = join(top, 'mine');
    mkdirSync(mine);
    assert.equal(findAnchors(main, { BENCH_ANCHORS: mine }).dir, mine);
    const gone = findAnchors(main, { BENCH_ANCHORS: join(top, 'nope') });
    assert.equal(gone.dir, undefined);
    assert.match(anchorsMissing(gone) ?? '', /nope \(BENCH_ANCHORS\)/);
  });

  it('is missing, naming every folder looked at', () => {
    const top = tempDir('errand-anchors');
    const main = repo(join(top, 'work', 'main'));
    const found = findAnchors(main, {});
    // Nothing under `top`; a shared/anchors higher up (above the temp folder) would be found, so only
    // the folders of `top` are checked to be listed.
    if (found.dir === undefined) {
      const why = anchorsMissing(found) ?? '';
      assert.match(why, /^no anchors folder/);
      assert.ok(why.includes(join(top, 'work', 'shared', 'anchors')), why);
    } else assert.ok(!found.dir.startsWith(top), `found ${found.dir}`);
    assert.ok(found.looked.includes(join(top, 'work', 'shared', 'anchors')));
    assert.ok(found.looked.includes(join(top, 'shared', 'anchors')));
  });
});
