/**
 * The sign-up workflow of the users service (docs/workflows.md): on `POST /users/`, the welcome email
 * and, when an avatar was given, its thumbnails run side by side; once both succeeded, the follow-up
 * `complete_onboarding` writes an "onboarding complete" note for the user to the outbox
 * (`DATA_DIR/outbox/onboarding-<userId>.json`). The workflow's page in the dashboard shows the three
 * steps (each run's page links to it), `GET /workflows/{id}` its state.
 *
 *   chain(group(send_welcome_email, make_avatar_thumbnails), complete_onboarding)   with an avatar
 *   chain(send_welcome_email, complete_onboarding)                                   without
 *
 * Edge policy: the default, `cancel`. The note is written only after both steps succeeded: a welcome
 * email or an avatar that fails for good cancels the note (reason `dependency_failed`, naming the
 * step). A retry of the failed step (`POST /runs/{id}/retry`) brings the note back: it waits again,
 * and runs once that step succeeds, the other step's success kept.
 *
 * What stays as before: the welcome run is the user's (`task` in the answer, `GET /users/{id}`), its
 * idempotency and the sweep of users left pending (tasks.ts); a user whose workflow could not be
 * created (the broker down) stays pending and gets the welcome email from the sweep alone, without
 * the note. With `WELCOME_DOMAIN_RATE` the workflow is the same: the welcome step is under its
 * domain's rate as an enqueued welcome run is (a step carries its task's limits, its key computed
 * from its own input when the workflow is created: docs/flow-control.md), and the note waits for it.
 *
 * Queues: each step in its task's queue (`emails`, `avatars`), on every broker (on Redis the edges
 * between the two queues go through the relay, docs/workflows.md); the service's worker serves both.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { chain, type Errand, group, PermanentError, type Task } from '../src/index.ts';
import type { AvatarTask } from './avatars.ts';
import { WELCOME_QUEUE, type WelcomeTask } from './tasks.ts';
import type { User, UserStore } from './users/store.ts';

export const ONBOARDING_TASK = 'complete_onboarding';

export const OnboardingInputSchema = z.object({
  userId: z.string().min(1),
  /** Whether the sign-up had an avatar (its thumbnails were then made before this step). */
  avatar: z.boolean(),
});

export interface OnboardingResult {
  /** The note written (`DATA_DIR/outbox/onboarding-<userId>.json`). */
  path: string;
  welcome: string;
  avatar: boolean;
}

export type OnboardingTask = Task<typeof OnboardingInputSchema, OnboardingResult>;

/** The path of a user's onboarding note. */
export function onboardingNotePath(outboxDir: string, userId: string): string {
  return join(outboxDir, `onboarding-${userId}.json`);
}

export function defineOnboardingTask(errand: Errand, deps: { users: UserStore; outboxDir: string }): OnboardingTask {
  return errand.task(
    ONBOARDING_TASK,
    {
      input: OnboardingInputSchema,
      queue: WELCOME_QUEUE,
      retries: { maxAttempts: 5 },
      description: 'Writes the "onboarding complete" note of a new user, once the welcome email (and avatar) succeeded',
    },
    async ({ userId, avatar }, ctx): Promise<OnboardingResult> => {
      const [user, welcome] = await Promise.all([deps.users.get(userId), deps.users.welcomeStatus(userId)]);
      if (!user) throw new PermanentError(`User ${userId} does not exist in the users store; no onboarding note written`);
      const path = onboardingNotePath(deps.outboxDir, userId);
      const note = {
        note: 'onboarding complete',
        user: { id: user.id, username: user.username, email: user.email },
        welcome_email: { state: welcome?.state ?? 'unknown', ...(welcome?.messageId ? { message_id: welcome.messageId } : {}) },
        avatar,
        run_id: ctx.runId,
        written_at: new Date().toISOString(),
      };
      // Written whole or not at all (a redelivered run writes the same note again).
      await mkdir(deps.outboxDir, { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      await writeFile(tmp, `${JSON.stringify(note, null, 2)}\n`);
      await rename(tmp, path);
      ctx.logger.info({ userId, path }, 'onboarding note written');
      return { path, welcome: note.welcome_email.state, avatar };
    },
  );
}

export interface SignUp {
  user: User;
  /** The welcome task's input. */
  welcome: Parameters<WelcomeTask['enqueue']>[0];
  /** With an avatar: the avatar task's input. */
  avatar?: Parameters<AvatarTask['enqueue']>[0];
  traceparent?: string;
}

export interface SignUpRuns {
  workflow: string;
  welcome: string;
  avatar?: string;
  onboarding: string;
}

/**
 * Creates the sign-up workflow of a user (see the top of this file). Null when nothing was created
 * because the welcome step's idempotency key (`welcome:<userId>`) is held by a stored run.
 */
export async function startSignUp(
  errand: Errand,
  tasks: { welcome: WelcomeTask; avatar: AvatarTask; onboarding: OnboardingTask },
  s: SignUp,
): Promise<SignUpRuns | null> {
  const options = s.traceparent ? { traceparent: s.traceparent } : {};
  const welcome = tasks.welcome.step(s.welcome, options);
  const done = tasks.onboarding.step({ userId: s.user.id, avatar: s.avatar !== undefined }, options);
  if (s.avatar === undefined) {
    const wf = await errand.workflow(chain(welcome, done));
    if (!wf.created) return null;
    return { workflow: wf.id, welcome: wf.runIds[0]!, onboarding: wf.runIds[1]! };
  }
  const avatar = tasks.avatar.step(s.avatar, options);
  const wf = await errand.workflow(chain(group(welcome, avatar), done));
  if (!wf.created) return null;
  return { workflow: wf.id, welcome: wf.runIds[0]!, avatar: wf.runIds[1]!, onboarding: wf.runIds[2]! };
}
