/**
 * The service, assembled from its configuration: the Errand app and its `send_welcome_email` task,
 * the user store, the mailer, and on demand the HTTP server (`startApi`) and a worker (`startWorker`).
 * `main.ts` runs it from the command line; tests build it in-process with overrides.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { authFromEnv, createServer, type HttpAuthOptions } from '../src/http/index.ts';
import {
  type Broker,
  BrokerConfigError,
  type BrokerInspector,
  ConfigError,
  createErrand,
  createLogger,
  type Errand,
  type RetryPolicy,
  type Worker,
  type WorkerOptions,
} from '../src/index.ts';
import { makeDirs } from '../src/core/fs.ts';
import { redactUrl } from '../src/core/urls.ts';
import { join } from 'node:path';
import { type AvatarTask, defineAvatarTask } from './avatars.ts';
import { type AppConfig, brokerUrl } from './config.ts';
import { type DigestTask, defineDigest } from './digest.ts';
import { defineOnboardingTask, type OnboardingTask, startSignUp } from './onboarding.ts';
import { createMailer, type Mailer } from './email.ts';
import { registerUserRoutes } from './routes.ts';
import {
  defineWelcomeTask,
  reconcileScheduledWelcomes,
  sweepPendingWelcomes,
  WELCOME_QUEUE,
  WELCOME_TASK,
  type WelcomeTask,
} from './tasks.ts';
import { PgUserStore } from './users/pg-store.ts';
import { SqliteUserStore } from './users/sqlite-store.ts';
import type { UserStore } from './users/store.ts';

export interface ServiceOptions {
  config: AppConfig;
  logger?: Logger;
  /** Overrides the broker chosen by the configuration (a URL or a Broker instance). */
  broker?: string | Broker;
  /** Overrides the user store chosen by the configuration (not closed by `stop`). */
  users?: UserStore;
  /** Overrides the welcome email's retry policy (see `WELCOME_RETRIES`). */
  retries?: RetryPolicy;
  /** How often a worker enqueues the emails of users left `pending`, in ms. Default 60000. */
  sweepEveryMs?: number;
  /** The sweep leaves users younger than this alone (the API is enqueueing theirs), in ms. Default 10000. */
  sweepGraceMs?: number;
  /** The sweep checks the run of users `scheduled` for longer than this (see `reconcileScheduledWelcomes`), in ms. Default 60000. */
  sweepScheduledAfterMs?: number;
  /** Extra worker options (lease, grace, ...); `concurrency` comes from the configuration. */
  worker?: Omit<WorkerOptions, 'concurrency'>;
  /** `POST /users/`'s wait for the enqueue, in ms. Default 5000. */
  enqueueTimeoutMs?: number;
}

export class Service {
  readonly config: AppConfig;
  readonly logger: Logger;
  readonly errand: Errand;
  readonly users: UserStore;
  readonly mailer: Mailer;
  readonly task: WelcomeTask;
  /** `make_avatar_thumbnails`: the thumbnails of an avatar uploaded at sign-up (app/avatars.ts). */
  readonly avatarTask: AvatarTask;
  /** `complete_onboarding`: the last step of the sign-up workflow (app/onboarding.ts). */
  readonly onboardingTask: OnboardingTask;
  /** The sign-up digest, a schedule (app/digest.ts). */
  readonly digest: DigestTask;
  readonly auth: HttpAuthOptions;
  server: FastifyInstance | undefined;
  worker: Worker | undefined;
  readonly #options: ServiceOptions;
  readonly #ownsUsers: boolean;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping: Promise<unknown> | undefined;
  #stopping: Promise<void> | undefined;

  private constructor(options: ServiceOptions, users: UserStore, logger: Logger, auth: HttpAuthOptions) {
    const { config } = options;
    this.#options = options;
    this.config = config;
    this.logger = logger;
    this.auth = auth;
    this.users = users;
    this.#ownsUsers = !options.users;
    const broker = options.broker ?? brokerUrl(config);
    // ERRAND_PREFIX is for the broker made from the URL: an instance was made with its own.
    const prefix = config.prefix && typeof broker === 'string' ? { prefix: config.prefix } : {};
    this.errand = createErrand({ broker, logger, ...prefix });
    this.mailer = createMailer({
      smtpUrl: config.smtpUrl,
      outboxDir: config.outboxDir,
      logger,
      maxConnections: Math.min(5, config.workerConcurrency),
    });
    this.task = defineWelcomeTask(this.errand, {
      users,
      mailer: this.mailer,
      mailFrom: config.mailFrom,
      ...(options.retries ? { retries: options.retries } : {}),
      ...(config.welcomeDomainRate ? { domainRate: config.welcomeDomainRate } : {}),
    });
    this.avatarTask = defineAvatarTask(this.errand);
    this.onboardingTask = defineOnboardingTask(this.errand, { users, outboxDir: config.outboxDir });
    this.digest = defineDigest(this.errand, { users, mailer: this.mailer, mailFrom: config.mailFrom, ...config.digest });
  }

  /**
   * Opens the user store (creating its table) and defines the task. Throws `ConfigError` for a
   * problem with the configuration (`DATA_DIR` not writable, bad tokens), other errors otherwise
   * (the database unreachable).
   */
  static async create(options: ServiceOptions): Promise<Service> {
    const { config } = options;
    const logger = options.logger ?? createLogger({ level: config.logLevel, format: config.logFormat });
    const auth = authFromEnv(config.env);
    try {
      makeDirs(config.dataDir);
    } catch (err) {
      throw new ConfigError(`DATA_DIR ${JSON.stringify(config.dataDir)} cannot be created: ${(err as Error).message}`);
    }
    const users = options.users ?? (await openUserStore(config, logger));
    return new Service(options, users, logger, auth);
  }

  /** The HTTP app (routes registered, not listening). */
  async buildServer(): Promise<FastifyInstance> {
    if (this.server) return this.server;
    const server = await createServer({
      errand: this.errand,
      auth: this.auth,
      logger: this.logger,
      ...(this.config.rateLimit ? { rateLimit: { max: this.config.rateLimit.max, timeWindow: this.config.rateLimit.windowMs } } : {}),
      title: 'Errand users service',
      description: "The seed's service: create users; each gets a welcome email sent in the background.",
    });
    registerUserRoutes(server, {
      users: this.users,
      task: this.task,
      avatars: { task: this.avatarTask, dir: join(this.config.dataDir, 'avatars') },
      signUp: (s) => startSignUp(this.errand, { welcome: this.task, avatar: this.avatarTask, onboarding: this.onboardingTask }, s),
      auth: this.auth,
      getRun: async (id) => (await this.errand.broker()).getRun(id),
      ...(this.#options.enqueueTimeoutMs !== undefined ? { enqueueTimeoutMs: this.#options.enqueueTimeoutMs } : {}),
    });
    this.server = server;
    return server;
  }

  /** Builds the HTTP app and listens on HOST:PORT (or `port`). Returns the base URL. */
  async startApi(port = this.config.port): Promise<string> {
    await this.#checkBroker();
    const server = await this.buildServer();
    await server.listen({ port, host: this.config.host });
    const address = server.server.address();
    const actual = typeof address === 'object' && address ? address.port : port;
    const host = this.config.host.includes(':') ? `[${this.config.host}]` : this.config.host;
    const url = `http://${host}:${actual}`;
    this.logger.info({ url, docs: `${url}/docs`, users: this.users.kind }, 'API listening');
    return url;
  }

  /**
   * Stops the start when the broker refuses the configuration (wrong Redis password, untrusted TLS
   * certificate). A broker that is merely unreachable does not: users are still created, and the
   * sweep enqueues their emails once it is back.
   */
  async #checkBroker(): Promise<void> {
    try {
      await (await this.errand.broker()).ping();
    } catch (err) {
      if (err instanceof BrokerConfigError || err instanceof ConfigError) throw err;
      this.logger.warn({ err }, 'the task broker is unreachable at start; welcome emails wait for it');
    }
  }

  /** Starts a worker for the welcome emails, and the sweep of users left `pending` (at once, then every minute). */
  async startWorker(): Promise<Worker> {
    if (this.worker) return this.worker;
    const worker = this.errand.worker({ ...this.#options.worker, concurrency: this.config.workerConcurrency });
    this.worker = worker;
    await worker.start();
    const url = this.errand.brokerUrl;
    this.logger.info(
      { broker: url ? redactUrl(url) : 'custom', users: this.users.kind, usersStore: this.users.identity, mail: this.mailer.kind },
      'worker ready',
    );
    await this.checkUsersStore();
    await this.sweep();
    // A stop that came meanwhile (a signal at start-up) has cleared the timer already: none is set.
    if (this.#stopping) return worker;
    this.#sweepTimer = setInterval(() => void this.sweep(), this.#options.sweepEveryMs ?? 60_000);
    this.#sweepTimer.unref();
    return worker;
  }

  /**
   * Compares this worker's users store with the one named by the latest welcome runs (the API's, see
   * `app/tasks.ts`), and logs at error when they differ. Returns the other stores seen. Never throws.
   */
  async checkUsersStore(): Promise<string[]> {
    try {
      const broker = (await this.errand.broker()) as Partial<BrokerInspector> & Broker;
      if (typeof broker.listRuns !== 'function') return [];
      const { runs } = await broker.listRuns({ queue: WELCOME_QUEUE, task: WELCOME_TASK, limit: 20 });
      const others = new Set<string>();
      for (const run of runs) {
        try {
          const store = (JSON.parse(run.input) as { store?: unknown }).store;
          if (typeof store === 'string' && store !== this.users.identity) others.add(store);
        } catch {
          // an unreadable input is the run's problem, not this check's
        }
      }
      if (others.size) {
        this.logger.error(
          { workerStore: this.users.identity, usersLocation: this.users.location, apiStores: [...others] },
          "this worker's users store is not the one of the API that enqueued the latest welcome emails: " +
            'start it with the same DATABASE_URL (or DATA_DIR) as the API; until then its welcome runs fail instead of sending',
        );
      }
      return [...others];
    } catch (err) {
      this.logger.warn({ err }, 'could not compare the users store with the latest welcome runs');
      return [];
    }
  }

  /**
   * Brings users left `scheduled` in line with their runs (a run purged or lost is sent again, a
   * cancelled or failed one recorded), then enqueues the welcome email of every user left
   * `pending` (the broker was down when they signed up, or their run is gone). Never throws.
   */
  async sweep(): Promise<number> {
    if (this.#sweeping) return 0;
    const run = (async () => {
      const changed = await reconcileScheduledWelcomes({
        users: this.users,
        broker: await this.errand.broker(),
        ...(this.#options.sweepScheduledAfterMs !== undefined ? { olderThanMs: this.#options.sweepScheduledAfterMs } : {}),
      });
      if (changed.lost + changed.failed + changed.sent > 0) this.logger.info(changed, 'sweep: users whose welcome run ended unseen');
      return sweepPendingWelcomes({
        users: this.users,
        task: this.task,
        ...(this.#options.sweepGraceMs !== undefined ? { graceMs: this.#options.sweepGraceMs } : {}),
      });
    })().then(
      (n) => {
        if (n > 0) this.logger.info({ scheduled: n }, 'sweep: scheduled welcome emails of users left pending');
        return n;
      },
      (err) => {
        this.logger.warn({ err }, 'sweep: could not schedule pending welcome emails; trying again later');
        return 0;
      },
    );
    this.#sweeping = run;
    try {
      return await run;
    } finally {
      this.#sweeping = undefined;
    }
  }

  /** Graceful stop: the server stops taking requests and finishes its own, the worker finishes or hands back its runs; then everything closes. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    clearInterval(this.#sweepTimer);
    const results = await Promise.allSettled([this.server?.close(), this.worker?.stop()]);
    await this.#sweeping;
    await Promise.allSettled([this.errand.close(), this.mailer.close(), this.#ownsUsers ? this.users.close() : undefined]);
    for (const r of results) if (r.status === 'rejected') this.logger.error({ err: r.reason }, 'error while stopping');
  }
}

/** The user store of the configuration: PostgreSQL with `DATABASE_URL`, else the SQLite file in `DATA_DIR`. */
export async function openUserStore(config: AppConfig, logger: Logger): Promise<UserStore> {
  if (config.databaseUrl) {
    const store = new PgUserStore({ url: config.databaseUrl, logger });
    try {
      await store.init();
    } catch (err) {
      await store.close().catch(() => {});
      throw new Error(`Cannot use DATABASE_URL ${redactUrl(config.databaseUrl)}: ${describeError(err)}`, { cause: err });
    }
    return store;
  }
  const store = new SqliteUserStore({ path: config.sqlitePath });
  try {
    await store.init();
  } catch (err) {
    throw new Error(`Cannot open the users table in ${config.sqlitePath}: ${describeError(err)}`, { cause: err });
  }
  return store;
}

/** An error's message, or its code when it has none (a refused connection is an AggregateError without a message). */
export function describeError(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: unknown[] } | undefined;
  if (e?.message) return e.message;
  if (e?.code) return e.code;
  const inner = e?.errors?.[0] as { message?: string; code?: string } | undefined;
  if (inner?.message || inner?.code) return inner.message || inner.code || '';
  return String(err);
}
