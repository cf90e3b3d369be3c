/**
 * The seed's HTTP routes: users. Declared with zod schemas, so they are validated, serialized and
 * documented (`/openapi.json`, `/docs`) like Errand's own routes, and answer errors in FastAPI's shape.
 *
 *   POST /users/        create a user and schedule the welcome email (201; 409 for a taken email)
 *   GET  /users/        list users in creation order (limit, offset or cursor)
 *   GET  /users/{id}    one user, with the state of the welcome email
 *
 * When bearer tokens are configured (`ERRAND_ADMIN_TOKENS`, `ERRAND_READ_TOKENS`), reading users
 * (which shows their emails) needs a read or admin token; signing up stays open, as in the seed.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchemaCompiler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  errorResponses,
  type HttpAuthOptions,
  HttpError,
  openApiSecurity,
  RETRY_AFTER_SECONDS,
  requireScope,
  traceparentOf,
  zodValidatorCompiler,
} from '../src/http/index.ts';
import type { RunRecord } from '../src/index.ts';
import { type AvatarTask, AvatarSchema } from './avatars.ts';
import type { SignUp, SignUpRuns } from './onboarding.ts';
import { errorMessage, type WelcomeResult, type WelcomeTask } from './tasks.ts';
import { EmailTakenError, isCursor, USER_ID, type User, type UserStore, type WelcomeStatus } from './users/store.ts';

const CONTROL = /[\p{Cc}\u2028\u2029]/u;

export const UsernameSchema = z
  .string()
  .superRefine((s, ctx) => {
    const length = codePoints(s, 65);
    if (length < 1) {
      ctx.addIssue({ code: 'too_small', minimum: 1, origin: 'string', inclusive: true, input: s, message: 'must not be empty' });
    } else if (length > 64) {
      ctx.addIssue({ code: 'too_big', maximum: 64, origin: 'string', inclusive: true, input: s, message: 'must be at most 64 characters' });
    } else if (!s.isWellFormed()) {
      ctx.addIssue({ code: 'custom', input: s, message: 'must be valid Unicode text (it contains a lone surrogate)' });
    } else if (CONTROL.test(s)) {
      ctx.addIssue({ code: 'custom', input: s, message: 'must not contain control characters (line breaks, tabs, NUL, ...)' });
    } else if (s.trim() === '') {
      ctx.addIssue({ code: 'custom', input: s, message: 'must not be only spaces' });
    }
  })
  .meta({
    minLength: 1,
    maxLength: 64,
    description: '1 to 64 characters, without control characters; stored exactly as given',
    examples: ['john.doe'],
  });

/** The number of code points of `s` (a surrogate pair counts once), counted up to `max` at most. */
function codePoints(s: string, max: number): number {
  // Each code point is one or two UTF-16 units: the length bounds the count from both sides.
  if (s.length <= max) {
    let pairs = 0;
    for (let i = 0; i < s.length - 1; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          pairs++;
          i++;
        }
      }
    }
    return s.length - pairs;
  }
  if (s.length >= 2 * max) return max;
  let n = 0;
  for (const _ of s) if (++n >= max) return max;
  return n;
}

export const EmailSchema = z
  // The message for a text that is not an address only: a missing email reads "Field required" (as
  // a missing username does) and a non-text one keeps zod's own ("expected string, received number").
  .email({ error: (issue) => (issue.code === 'invalid_format' ? 'must be a valid email address' : undefined) })
  .max(254, { message: 'must be at most 254 characters' })
  .meta({ description: 'Unique among users, without regard to case', examples: ['john.doe@example.com'] });

export const CreateUserSchema = z
  .object({ username: UsernameSchema, email: EmailSchema, avatar: AvatarSchema.optional() })
  .describe('A new user (with an avatar, optionally)');

const EMAIL = z.regexes.email;

/**
 * A `POST /users/` body that `CreateUserSchema` accepts, tested directly (the common case, without
 * zod's machinery): the same output, or undefined for any body this quick test is not sure about,
 * which then goes through the schema (that names each problem).
 */
export function quickCreateUser(data: unknown): { username: string; email: string } | undefined {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  const { username, email, avatar } = data as Record<string, unknown>;
  // An avatar is checked by the schema (and kept: the quick test would drop it).
  if (avatar !== undefined) return undefined;
  if (typeof username !== 'string' || typeof email !== 'string') return undefined;
  // Up to 64 UTF-16 units: at most 64 code points.
  if (username.length === 0 || username.length > 64 || !username.isWellFormed() || CONTROL.test(username) || username.trim() === '') {
    return undefined;
  }
  if (email.length > 254 || !EMAIL.test(email)) return undefined;
  return { username, email };
}

// Route-level: Fastify types it against the route's whole schema, hence the cast.
const createUserValidatorCompiler = ((route: Parameters<typeof zodValidatorCompiler>[0]) => {
  const full = zodValidatorCompiler(route);
  if (route.httpPart !== 'body') return full;
  return (data: unknown) => {
    const value = quickCreateUser(data);
    return value ? { value } : full(data);
  };
}) as FastifySchemaCompiler<unknown>;

const IsoTime = z.string().describe('ISO 8601 time (UTC)');

export const UserSchema = z
  .object({
    id: z.string().describe('A ULID: 26 characters, sortable by creation time'),
    username: z.string(),
    email: z.string(),
    created_at: IsoTime,
  })
  .describe('A user');

export const WelcomeEmailSchema = z
  .object({
    status: z
      .enum(['pending', 'scheduled', 'sent', 'failed', 'cancelled'])
      .describe(
        'pending: not yet handed to a worker queue (or its run no longer exists: the sweep schedules it again); scheduled: queued, waiting to retry or being sent; ' +
          'sent: accepted by the SMTP server; failed: given up (POST /runs/{run_id}/retry tries again); cancelled: its run was cancelled (POST /runs/{run_id}/retry sends it). ' +
          'Read from the run itself while it exists.',
      ),
    run_id: z.string().nullable().describe('The send_welcome_email run (GET /runs/{run_id})'),
    message_id: z.string().nullable().describe('Message-ID of the accepted email'),
    sent_at: IsoTime.nullable(),
    error: z.string().nullable().describe('Why the email could not be sent'),
  })
  .describe('The welcome email of a user');

export const UserDetailSchema = UserSchema.extend({ welcome_email: WelcomeEmailSchema }).describe('A user and its welcome email');

export const CreatedSchema = z.object({
  message: z.string(),
  user: UserSchema,
  task: z
    .object({ id: z.string().describe('The run id'), status_url: z.string().describe('GET it for the run') })
    .nullable()
    .describe('The welcome email run; null when the task queue was unreachable (a worker schedules it as soon as it is back)'),
  avatar_task: z
    .object({
      id: z.string().describe('The run id'),
      status_url: z.string().describe('GET it for the run (its progress: thumbnails done)'),
    })
    .nullable()
    .optional()
    .describe('With an avatar: the thumbnails run; null when the task queue was unreachable (the avatar is then not kept)'),
  workflow: z
    .object({
      id: z.string().describe('The workflow id'),
      status_url: z.string().describe('GET it for the workflow (its steps and their states)'),
    })
    .optional()
    .describe(
      'The sign-up workflow: the welcome email and the avatar side by side, then the onboarding note; absent when the runs were enqueued on their own',
    ),
});

export const ListQuerySchema = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(20).describe('Users per page, 1 to 100'),
    offset: z.coerce.number().int().min(0).max(1_000_000_000).optional().describe('Users to skip (not with cursor)'),
    cursor: z
      .string()
      .optional()
      .refine((c) => c === undefined || isCursor(c), 'is not a cursor returned by this API')
      .describe('The next value of the previous page (not with offset)'),
  })
  .superRefine((q, ctx) => {
    if (q.offset !== undefined && q.cursor !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['cursor'], message: 'give either offset or cursor, not both' });
    }
  });

export const UserPageSchema = z.object({
  items: z.array(UserSchema),
  next: z.string().nullable().describe('Cursor of the next page (pass it as ?cursor=), or null on the last page'),
});

export const CREATED_MESSAGE = 'User created and welcome email scheduled!';
export const PENDING_MESSAGE = 'User created; the welcome email will be scheduled as soon as the task queue is reachable';

export interface UserRoutesOptions {
  users: UserStore;
  task: WelcomeTask;
  auth?: HttpAuthOptions;
  /** How long `POST /users/` waits for the enqueue before answering with `task: null`, in ms. Default 5000. */
  enqueueTimeoutMs?: number;
  /** Reads a run (the welcome run of a user), so that GET /users/{id} tells the run's truth; without it, the stored state alone. */
  getRun?: (id: string) => Promise<RunRecord | null>;
  /** The avatar task and the folder its thumbnails go to (`DATA_DIR/avatars`); without it, an avatar is refused (422). */
  avatars?: { task: AvatarTask; dir: string };
  /**
   * Creates the sign-up workflow (app/onboarding.ts): the welcome email and the avatar side by side,
   * then the onboarding note (the welcome step under its task's limits, `WELCOME_DOMAIN_RATE`, as
   * an enqueued welcome run is). Without it, the runs are enqueued on their own.
   */
  signUp?: (s: SignUp) => Promise<SignUpRuns | null>;
}

type WelcomeJson = z.infer<typeof WelcomeEmailSchema>;

/**
 * The welcome email as GET /users/{id} shows it. The stored state is the user's record; while the
 * run exists, its state is the truth for an email not yet sent (a run cancelled or purged, failed by
 * a timeout, or replayed, does not tell the users store). The broker unreachable: the stored state.
 */
async function welcomeJson(status: WelcomeStatus | null, getRun: UserRoutesOptions['getRun']): Promise<WelcomeJson> {
  const view: WelcomeJson = {
    status: status?.state ?? 'pending',
    run_id: status?.runId ?? null,
    message_id: status?.messageId ?? null,
    sent_at: status?.sentAt?.toISOString() ?? null,
    error: status?.error ?? null,
  };
  if (!getRun || !status?.runId || status.state === 'sent' || status.state === 'pending') return view;
  let run: RunRecord | null;
  try {
    run = await getRun(status.runId);
  } catch {
    return view;
  }
  if (!run) return status.state === 'scheduled' ? { ...view, status: 'pending', run_id: null } : view;
  switch (run.state) {
    case 'waiting':
    case 'queued':
    case 'scheduled':
    case 'active':
      return { ...view, status: 'scheduled', error: null };
    case 'cancelled':
      return { ...view, status: 'cancelled', error: `The welcome run was cancelled; POST /runs/${run.id}/retry sends it` };
    case 'failed':
      return { ...view, status: 'failed', error: view.error ?? errorMessage(run.error) };
    case 'succeeded': {
      let result: WelcomeResult | undefined;
      try {
        result = run.result === undefined ? undefined : (JSON.parse(run.result) as WelcomeResult);
      } catch {
        result = undefined;
      }
      if (result?.status !== 'sent') return view;
      return {
        ...view,
        status: 'sent',
        message_id: result.messageId,
        sent_at: run.finishedAt === undefined ? null : new Date(run.finishedAt).toISOString(),
        error: null,
      };
    }
  }
}

function userJson(u: User) {
  return { id: u.id, username: u.username, email: u.email, created_at: u.createdAt.toISOString() };
}

export function registerUserRoutes(server: FastifyInstance, options: UserRoutesOptions): void {
  const { users, task } = options;
  const enqueueTimeoutMs = options.enqueueTimeoutMs ?? 5000;
  const app = server.withTypeProvider<ZodTypeProvider>();
  const read = requireScope(options.auth, 'read');

  const timeoutMessage = `the task queue did not answer within ${enqueueTimeoutMs} ms`;

  const create = async (request: FastifyRequest<{ Body: z.infer<typeof CreateUserSchema> }>, reply: FastifyReply) => {
    const { username, email, avatar } = request.body;
    if (avatar !== undefined && !options.avatars) {
      throw new HttpError(422, [{ loc: ['body', 'avatar'], msg: 'avatars are not taken by this service', type: 'value_error' }]);
    }
    let user: User;
    try {
      user = await users.create({ username, email });
    } catch (err) {
      if (err instanceof EmailTakenError) throw new HttpError(409, err.message);
      throw storeDown(request, err);
    }
    const log = request.log;
    log.info({ userId: user.id }, 'user created');
    const traceparent = traceparentOf(request);
    const welcomeInput = { userId: user.id, email: user.email, username: user.username, store: users.identity };
    const avatarInput = avatar !== undefined && options.avatars ? { userId: user.id, image: avatar, dir: options.avatars.dir } : undefined;
    let run: { id: string } | undefined;
    let avatarRun: { id: string } | undefined;
    let workflow: string | undefined;
    let apart = !options.signUp;
    if (!apart && options.signUp) {
      // One workflow: the welcome email and the avatar side by side, then the onboarding note.
      try {
        const s: SignUp = { user, welcome: welcomeInput };
        if (avatarInput) s.avatar = avatarInput;
        if (traceparent) s.traceparent = traceparent;
        const runs = await within(options.signUp(s), enqueueTimeoutMs, timeoutMessage);
        if (runs) {
          run = { id: runs.welcome };
          if (runs.avatar) avatarRun = { id: runs.avatar };
          workflow = runs.workflow;
        } else apart = true; // the welcome key is held already: that run stands, as an enqueue finds it
      } catch (err) {
        // As below: the user stays pending for the sweep (the welcome email alone), the avatar is not kept.
        log.error({ err, userId: user.id }, 'could not create the sign-up workflow; the welcome email stays pending for the sweep');
      }
    }
    if (apart) ({ run, avatarRun } = await enqueueApart(request, user.id, welcomeInput, avatarInput));
    if (run) {
      try {
        await users.markWelcomeScheduled(user.id, run.id);
      } catch (err) {
        log.warn({ err, userId: user.id }, 'could not record the welcome run; the sweep will find it');
      }
    }
    reply.code(201).header('location', `/users/${user.id}`);
    return {
      message: run ? CREATED_MESSAGE : PENDING_MESSAGE,
      user: userJson(user),
      task: run ? { id: run.id, status_url: `/runs/${run.id}` } : null,
      ...(avatar !== undefined ? { avatar_task: avatarRun ? { id: avatarRun.id, status_url: `/runs/${avatarRun.id}` } : null } : {}),
      ...(workflow ? { workflow: { id: workflow, status_url: `/workflows/${workflow}` } } : {}),
    };
  };

  /** The welcome email and the avatar as runs of their own (no sign-up workflow). */
  const enqueueApart = async (
    request: FastifyRequest,
    userId: string,
    welcomeInput: Parameters<WelcomeTask['enqueue']>[0],
    avatarInput: Parameters<AvatarTask['enqueue']>[0] | undefined,
  ): Promise<{ run?: { id: string }; avatarRun?: { id: string } }> => {
    const log = request.log;
    const traceparent = traceparentOf(request);
    let run: { id: string } | undefined;
    try {
      // The idempotency key (welcome:<id>, set by the task) makes a second enqueue of this user's
      // email, by the sweep, return this run rather than a second one.
      run = await within(task.enqueue(welcomeInput, traceparent ? { traceparent } : undefined), enqueueTimeoutMs, timeoutMessage);
    } catch (err) {
      // The user is kept, `pending`: a worker's sweep enqueues the email when the broker is back.
      log.error({ err, userId }, 'could not enqueue the welcome email; it stays pending for the sweep');
    }
    let avatarRun: { id: string } | undefined;
    if (avatarInput && options.avatars) {
      try {
        avatarRun = await within(
          options.avatars.task.enqueue(avatarInput, traceparent ? { traceparent } : undefined),
          enqueueTimeoutMs,
          timeoutMessage,
        );
      } catch (err) {
        log.error({ err, userId }, 'could not enqueue the avatar thumbnails; the avatar is not kept');
      }
    }
    return { ...(run ? { run } : {}), ...(avatarRun ? { avatarRun } : {}) };
  };

  const createSchema = {
    summary: 'Create a user',
    operationId: 'create_user',
    security: openApiSecurity(options.auth, 'open'), // signing up stays open
    description:
      'Stores the user and schedules the `send_welcome_email` task (one email per user, retried on transient SMTP failures). ' +
      'Emails are unique without regard to case: a second user with the same email gets 409. ' +
      'An optional `avatar` (base64 image) is turned into thumbnails by the `make_avatar_thumbnails` task.',
    tags: ['users'],
    body: CreateUserSchema,
    response: { 201: CreatedSchema, ...errorResponses(400, 409, 413, 415, 422, 503) },
  };
  for (const url of ['/users/', '/users']) {
    app.post(
      url,
      {
        schema: { ...createSchema, hide: url === '/users' },
        validatorCompiler: createUserValidatorCompiler as never,
        serializerCompiler: jsonSerializerCompiler,
      },
      create,
    );
  }

  const listSchema = {
    summary: 'List users',
    operationId: 'list_users',
    security: openApiSecurity(options.auth, 'read'),
    description:
      'Users in creation order. Page with `limit` and either `offset` or `cursor` (the `next` value of the previous page; stable while users are added).',
    tags: ['users'],
    querystring: ListQuerySchema,
    response: { 200: UserPageSchema, ...errorResponses(401, 403, 422, 503) },
  };
  for (const url of ['/users/', '/users']) {
    app.get(url, { schema: { ...listSchema, hide: url === '/users' }, onRequest: read }, async (request) => {
      const { limit, offset, cursor } = request.query;
      const page = await users.list(cursor !== undefined ? { limit, cursor } : { limit, offset: offset ?? 0 }).catch((err) => {
        throw storeDown(request, err);
      });
      return { items: page.items.map(userJson), next: page.next };
    });
  }

  app.get(
    '/users/:id',
    {
      schema: {
        summary: 'Get a user',
        operationId: 'get_user',
        security: openApiSecurity(options.auth, 'read'),
        description: 'The user and the state of its welcome email.',
        tags: ['users'],
        params: z.object({ id: z.string().describe('The user id') }),
        response: { 200: UserDetailSchema, ...errorResponses(401, 403, 404, 503) },
      },
      onRequest: read,
    },
    async (request) => {
      const { id } = request.params;
      const [user, status] = USER_ID.test(id)
        ? await Promise.all([users.get(id), users.welcomeStatus(id)]).catch((err) => {
            throw storeDown(request, err);
          })
        : [null, null];
      if (!user) throw new HttpError(404, 'User not found');
      return { ...userJson(user), welcome_email: await welcomeJson(status, options.getRun) };
    },
  );
}

/** A failure of the user database (unreachable, locked past its busy timeout): 503 with Retry-After, never a bare 500. */
function storeDown(request: FastifyRequest, err: unknown): HttpError {
  request.log.error({ err }, 'the user database failed');
  return new HttpError(503, 'The user database is unavailable; try again later', { 'retry-after': String(RETRY_AFTER_SECONDS) });
}

/**
 * Our own objects, built to the route's response schemas (the OpenAPI document still shows them):
 * written with JSON.stringify, without a second pass through zod.
 */
const jsonSerializerCompiler = () => (data: unknown) => JSON.stringify(data);

/**
 * `promise`, or a rejection with `message` after `ms` (a later failure of `promise` is then
 * ignored). One promise and one timer per call, no `Promise.race`: Node keeps timers of one
 * length in one list, so this costs little per request.
 */
function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(message)), ms);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
