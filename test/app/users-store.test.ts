// The two user stores (SQLite file, PostgreSQL) pass one suite: the service code relies on exactly this behaviour.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgUserStore } from '../../app/users/pg-store.ts';
import { SqliteUserStore } from '../../app/users/sqlite-store.ts';
import { EmailTakenError, encodeCursor, InvalidCursorError, type User, type UserStore } from '../../app/users/store.ts';
import { tempDir } from '../helpers.ts';
import { createPgDatabase, HOSTILE_USERNAMES } from './support.ts';

interface StoreSetup {
  name: string;
  open(): Promise<{ store: UserStore; done(): Promise<void> }>;
}

const setups: StoreSetup[] = [
  {
    name: 'sqlite',
    async open() {
      const store = new SqliteUserStore({ path: join(tempDir('errand-app'), 'errand.db') });
      await store.init();
      return { store, done: () => store.close() };
    },
  },
  {
    name: 'postgres',
    async open() {
      const db = await createPgDatabase();
      const store = new PgUserStore({ url: db.url });
      await store.init();
      return {
        store,
        async done() {
          await store.close();
          await db.drop();
        },
      };
    },
  },
];

for (const setup of setups) {
  describe(`${setup.name} user store`, () => {
    let store: UserStore;
    let done: () => Promise<void>;
    before(async () => {
      ({ store, done } = await setup.open());
    });
    after(() => done());

    it('creates and reads a user', async () => {
      const u = await store.create({ username: 'ana', email: 'Ana@Example.com' });
      assert.match(u.id, /^[0-9A-Z]{26}$/);
      assert.ok(u.createdAt instanceof Date);
      const got = await store.get(u.id);
      assert.deepEqual(got, u);
      assert.equal(await store.get('01ARZ3NDEKTSV4RRFFQ69G5FAV'), null);
      assert.deepEqual(await store.welcomeStatus(u.id), { state: 'pending' });
    });

    it('refuses a second user with the same email in any case', async () => {
      await store.create({ username: 'bob', email: 'bob@example.com' });
      await assert.rejects(store.create({ username: 'bob2', email: 'BOB@EXAMPLE.COM' }), EmailTakenError);
      await assert.rejects(store.create({ username: 'bob3', email: 'bob@example.com' }), EmailTakenError);
    });

    it('stores hostile usernames byte for byte', async () => {
      for (const [i, username] of HOSTILE_USERNAMES.entries()) {
        const u = await store.create({ username, email: `hostile${i}@example.com` });
        const got = await store.get(u.id);
        assert.equal(got?.username, username);
        assert.equal(Buffer.compare(Buffer.from(got!.username), Buffer.from(username)), 0);
      }
    });

    it('keeps the welcome state: pending, scheduled, sent; never back', async () => {
      const u = await store.create({ username: 'carol', email: 'carol@example.com' });
      await store.markWelcomeScheduled(u.id, 'emails.RUN1');
      assert.deepEqual(await store.welcomeStatus(u.id), { state: 'scheduled', runId: 'emails.RUN1' });
      await store.markWelcomeSent(u.id, '<welcome.x@example.com>');
      const sent = await store.welcomeStatus(u.id);
      assert.equal(sent?.state, 'sent');
      assert.equal(sent?.messageId, '<welcome.x@example.com>');
      assert.ok(sent?.sentAt instanceof Date);
      await store.markWelcomeScheduled(u.id, 'emails.RUN2');
      await store.markWelcomeFailed(u.id, '550 no');
      const still = await store.welcomeStatus(u.id);
      assert.equal(still?.state, 'sent');
      assert.equal(still?.runId, 'emails.RUN1');
      assert.equal(still?.error, undefined);
    });

    it('lists users scheduled before a time with their run; a lost run puts its user back to pending, only while that run is recorded', async () => {
      const u = await store.create({ username: 'erin', email: 'erin@example.com' });
      await store.markWelcomeScheduled(u.id, 'emails.LOST');
      const listed = await store.scheduledWelcomes(new Date(Date.now() + 1000), 1000);
      assert.deepEqual(
        listed.find((s) => s.id === u.id),
        { id: u.id, runId: 'emails.LOST' },
      );
      assert.equal((await store.scheduledWelcomes(new Date(0), 1000)).length, 0, 'none created before the epoch');
      await store.markWelcomeLost(u.id, 'emails.OTHER');
      assert.equal((await store.welcomeStatus(u.id))?.state, 'scheduled', 'another run id: unchanged');
      await store.markWelcomeLost(u.id, 'emails.LOST');
      assert.deepEqual(await store.welcomeStatus(u.id), { state: 'pending' });
      assert.ok(
        (await store.pendingWelcomes(new Date(Date.now() + 1000), 1000)).some((p) => p.id === u.id),
        'the sweep finds it',
      );
    });

    it('has an identity of its own, written in the database (see UserStore.identity)', async () => {
      assert.match(store.identity, new RegExp(`^${setup.name}:[0-9A-Z]{26}$`));
      const other = await setup.open();
      try {
        assert.notEqual(other.store.identity, store.identity, 'another database: another identity');
      } finally {
        await other.done();
      }
    });

    it('records a failure, which a later success overrides', async () => {
      const u = await store.create({ username: 'dan', email: 'dan@example.com' });
      await store.markWelcomeFailed(u.id, '550 mailbox unavailable');
      assert.deepEqual(await store.welcomeStatus(u.id), { state: 'failed', error: '550 mailbox unavailable' });
      await store.markWelcomeSent(u.id, '<m@x>');
      const s = await store.welcomeStatus(u.id);
      assert.equal(s?.state, 'sent');
      assert.equal(s?.error, undefined);
    });

    it('lists pending welcomes older than a time, oldest first', async () => {
      const cutoff = new Date(Date.now() + 1000);
      const pending = await store.pendingWelcomes(cutoff, 1000);
      assert.ok(pending.length > 0);
      for (const u of pending) assert.equal((await store.welcomeStatus(u.id))?.state, 'pending');
      const sorted = [...pending].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
      assert.deepEqual(
        pending.map((u) => u.id),
        sorted.map((u) => u.id),
      );
      assert.deepEqual(await store.pendingWelcomes(new Date(0), 1000), []);
    });

    it('pages through every user once, by offset and by cursor', async () => {
      for (let i = 0; i < 23; i++) await store.create({ username: `page${i}`, email: `page${i}@example.com` });
      const all = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await store.list(cursor === undefined ? { limit: 7 } : { limit: 7, cursor });
        all.push(...page.items);
        if (!page.next) break;
        assert.equal(page.items.length, 7);
        cursor = page.next;
      }
      const ids = all.map((u) => u.id);
      assert.equal(new Set(ids).size, ids.length);
      assert.deepEqual(ids, [...ids].sort());
      const total = ids.length;
      assert.ok(total >= 23);

      const byOffset = [];
      for (let offset = 0; ; offset += 5) {
        const page = await store.list({ limit: 5, offset });
        byOffset.push(...page.items.map((u) => u.id));
        if (!page.next) break;
      }
      assert.deepEqual(byOffset, ids);
      const last = await store.list({ limit: 100, offset: total - 1 });
      assert.equal(last.items.length, 1);
      assert.equal(last.next, null);
      assert.deepEqual((await store.list({ limit: 10, offset: total + 5 })).items, []);
    });

    it('refuses a cursor it did not make', async () => {
      await assert.rejects(store.list({ limit: 5, cursor: 'bm90LWEtY3Vyc29y' }), InvalidCursorError);
      await assert.rejects(store.list({ limit: 5, cursor: "' OR 1=1 --" }), InvalidCursorError);
      // A well-formed cursor past the end is simply an empty last page.
      assert.deepEqual(await store.list({ limit: 5, cursor: encodeCursor('7ZZZZZZZZZZZZZZZZZZZZZZZZZ') }), { items: [], next: null });
    });

    it('stores concurrent creates together: a taken email fails its own create only, the others are stored', async () => {
      await store.create({ username: 'early', email: 'group.taken@example.com' });
      const emails = [
        'group.a@example.com',
        'GROUP.TAKEN@example.com', // taken before
        'group.b@example.com',
        'group.c@example.com',
        'Group.B@Example.com', // taken by a create of the same batch, earlier in it
        'group.d@example.com',
      ];
      const outcomes = await Promise.allSettled(emails.map((email, i) => store.create({ username: `group ${i}`, email })));
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled'],
      );
      for (const i of [1, 4]) assert.ok((outcomes[i] as PromiseRejectedResult).reason instanceof EmailTakenError);
      for (const o of outcomes) {
        if (o.status !== 'fulfilled') continue;
        assert.deepEqual(await store.get(o.value.id), o.value);
        assert.deepEqual(await store.welcomeStatus(o.value.id), { state: 'pending' });
      }
      const ids = new Set(outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.id] : [])));
      assert.equal(ids.size, 4);
    });

    it('stores concurrent marks and creates together, each with its own effect', async () => {
      const [a, b] = await Promise.all([
        store.create({ username: 'mark a', email: 'mark.a@example.com' }),
        store.create({ username: 'mark b', email: 'mark.b@example.com' }),
      ]);
      const [, , c, taken] = await Promise.allSettled([
        store.markWelcomeScheduled(a.id, 'emails.A'),
        store.markWelcomeScheduled(b.id, 'emails.B'),
        store.create({ username: 'mark c', email: 'mark.c@example.com' }),
        store.create({ username: 'mark a again', email: 'MARK.A@example.com' }),
      ]);
      assert.equal(c.status, 'fulfilled');
      assert.equal(taken.status, 'rejected');
      assert.deepEqual(await store.welcomeStatus(a.id), { state: 'scheduled', runId: 'emails.A' });
      assert.deepEqual(await store.welcomeStatus(b.id), { state: 'scheduled', runId: 'emails.B' });
      assert.deepEqual(await store.welcomeStatus((c as PromiseFulfilledResult<User>).value.id), { state: 'pending' });
    });
  });
}

describe('sqlite user store group commit', () => {
  it('fails every write of a batch whose transaction cannot start, stores none of them, and works again afterwards', async () => {
    const path = join(tempDir('errand-app'), 'errand.db');
    const store = new SqliteUserStore({ path, busyTimeoutMs: 20 });
    await store.init();
    const other = new DatabaseSync(path);
    try {
      const before = await store.create({ username: 'before', email: 'lock.before@example.com' });
      other.exec('BEGIN IMMEDIATE'); // another process holds the write lock past the busy timeout
      const outcomes = await Promise.allSettled([
        store.create({ username: 'locked 1', email: 'lock.1@example.com' }),
        store.markWelcomeScheduled(before.id, 'emails.LOCKED'),
        store.create({ username: 'locked 2', email: 'lock.2@example.com' }),
      ]);
      for (const o of outcomes) {
        assert.equal(o.status, 'rejected');
        assert.match(String((o as PromiseRejectedResult).reason), /locked|busy/i);
        assert.ok(!((o as PromiseRejectedResult).reason instanceof EmailTakenError));
      }
      other.exec('ROLLBACK');
      assert.deepEqual(await store.welcomeStatus(before.id), { state: 'pending' });
      assert.equal((await store.list({ limit: 100 })).items.length, 1);
      const after = await store.create({ username: 'locked 1', email: 'lock.1@example.com' });
      assert.deepEqual(await store.get(after.id), after);
    } finally {
      other.close();
      await store.close();
    }
  });

  it('the same file opened again, by another path spelling, has the same identity', async () => {
    const dir = tempDir('errand-app');
    const a = new SqliteUserStore({ path: join(dir, 'errand.db') });
    const b = new SqliteUserStore({ path: join(dir, '.', 'sub', '..', 'errand.db').replace('/sub/..', '/./') });
    await a.init();
    await b.init();
    try {
      assert.equal(b.identity, a.identity);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('commits the writes asked for before close', async () => {
    const path = join(tempDir('errand-app'), 'errand.db');
    const store = new SqliteUserStore({ path });
    await store.init();
    const created = store.create({ username: 'last', email: 'last@example.com' });
    await store.close();
    const user = await created;
    const reopened = new SqliteUserStore({ path });
    await reopened.init();
    try {
      assert.deepEqual(await reopened.get(user.id), user);
    } finally {
      await reopened.close();
    }
  });
});

describe('postgres user store start-up', () => {
  it('creates its table once when several processes start together', async () => {
    const db = await createPgDatabase();
    const stores = Array.from({ length: 4 }, () => new PgUserStore({ url: db.url, max: 2 }));
    try {
      await Promise.all(stores.map((s) => s.init()));
      const u = await stores[0]!.create({ username: 'x', email: 'x@example.com' });
      assert.equal((await stores[3]!.get(u.id))?.email, 'x@example.com');
    } finally {
      await Promise.all(stores.map((s) => s.close()));
      await db.drop();
    }
  });

  it('every process on the same database sees the same identity', async () => {
    const db = await createPgDatabase();
    const stores = [0, 1, 2].map(() => new PgUserStore({ url: db.url }));
    try {
      await Promise.all(stores.map((s) => s.init()));
      assert.equal(new Set(stores.map((s) => s.identity)).size, 1);
      assert.equal(stores[0]!.location, new URL(db.url).host ? `postgres://${new URL(db.url).host}${new URL(db.url).pathname}` : '');
    } finally {
      await Promise.all(stores.map((s) => s.close()));
      await db.drop();
    }
  });

  it('writes the creates and marks asked for before close', async () => {
    const db = await createPgDatabase();
    const store = new PgUserStore({ url: db.url });
    const reopened = new PgUserStore({ url: db.url });
    try {
      await store.init();
      const first = await store.create({ username: 'first', email: 'first@example.com' });
      const created = store.create({ username: 'last', email: 'last@example.com' });
      const marked = store.markWelcomeScheduled(first.id, 'emails.01ARZ3NDEKTSV4RRFFQ69G5FAV');
      await store.close();
      const user = await created;
      await marked;
      await reopened.init();
      assert.deepEqual(await reopened.get(user.id), user);
      assert.equal((await reopened.welcomeStatus(first.id))?.state, 'scheduled');
    } finally {
      await reopened.close();
      await db.drop();
    }
  });

  it('refuses a "users" table that belongs to another application', async () => {
    const db = await createPgDatabase();
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    await c.query('CREATE TABLE users (id serial primary key, name text)');
    await c.end();
    const store = new PgUserStore({ url: db.url });
    try {
      await assert.rejects(store.init(), /already has a "users" table without the columns username, email/);
    } finally {
      await store.close();
      await db.drop();
    }
  });
});
