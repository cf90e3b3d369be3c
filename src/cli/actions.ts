/** `errand retry | cancel | purge | pause | resume`: the admin commands that change a broker. */
import { clean } from './format.ts';
import { CliError, checkQueue, checkRunId, notFound, type Output, parse, usage, withBroker } from './admin-shared.ts';

// ---- actions -------------------------------------------------------------------------------------

export async function retry(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(
    'retry',
    args,
    { failed: { type: 'boolean' }, queue: { type: 'string' }, task: { type: 'string' } },
    { min: 0, max: 1, what: 'one run id (or --failed --queue Q)' },
  );
  const queue = values.queue as string | undefined;
  const task = values.task as string | undefined;
  if (values.failed) {
    if (positionals.length) throw usage('retry: give a run id, or --failed --queue Q, not both');
    if (queue === undefined) throw usage('retry --failed needs --queue Q: the queue whose failed runs to replay');
    await withBroker(values, async (broker) => {
      await checkQueue(broker, queue);
      const n = await broker.retryFailed(queue, task, Date.now());
      if (out.json) return out.data({ queue, task: task ?? null, retried: n });
      const of = `queue ${queue}${task !== undefined ? ` (task ${clean(task)})` : ''}`;
      out.text(n ? `Queued again ${n} failed run${n === 1 ? '' : 's'} of ${of}, attempts reset.\n` : `No failed runs in ${of}.\n`);
    });
    return;
  }
  if (queue !== undefined || task !== undefined) throw usage('retry: --queue and --task go with --failed');
  if (positionals.length !== 1) throw usage('retry takes one run id, or --failed --queue Q');
  const id = positionals[0]!;
  checkRunId(id);
  await withBroker(values, async (broker) => {
    const res = await broker.retry(id, Date.now());
    if (res.outcome === 'not_found') throw notFound(id);
    if (res.outcome === 'not_failed')
      throw new CliError('not_failed', `run ${id} is ${res.state}: only failed or cancelled runs can be retried`, {
        details: { state: res.state },
      });
    if (res.outcome === 'recorded')
      throw new CliError('recorded', `run ${id} is a record of a task that ran in ${res.origin}: retry it there, not here`, {
        details: { origin: res.origin },
      });
    if (out.json) return out.data({ id, state: 'queued' });
    out.text(`Run ${id} queued again, attempts reset.\n`);
  });
}

export async function cancel(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse('cancel', args, {}, { min: 1, max: 1, what: 'one run id' });
  const id = positionals[0]!;
  checkRunId(id);
  await withBroker(values, async (broker) => {
    const res = await broker.cancel(id, Date.now());
    if (res.outcome === 'not_found') throw notFound(id);
    if (res.outcome === 'finished' && res.state === 'cancelled') {
      // As run.cancel() and the HTTP API: cancelling a cancelled run succeeds and changes nothing.
      if (out.json) return out.data({ id, state: 'cancelled', previous_state: 'cancelled' });
      out.text(`Run ${id} was already cancelled.\n`);
      return;
    }
    if (res.outcome === 'finished')
      throw new CliError('already_finished', `run ${id} has already finished: it is ${res.state}`, { details: { state: res.state } });
    if (out.json) return out.data({ id, state: 'cancelled', previous_state: res.previous });
    const note = res.previous === 'active' ? ' (its worker aborts the handler)' : '';
    out.text(`Run ${id} cancelled; it was ${res.previous}${note}.\n`);
  });
}

export async function purge(args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse('purge', args, { yes: { type: 'boolean' } }, { min: 1, max: 1, what: 'one queue name' });
  const queue = positionals[0]!;
  await withBroker(values, async (broker) => {
    await checkQueue(broker, queue);
    if (!values.yes) {
      const c = (await broker.counts([queue]))[queue];
      const queued = c?.queued ?? 0;
      const scheduled = c?.scheduled ?? 0;
      const n = queued + scheduled;
      throw new CliError(
        'confirmation_required',
        `purge deletes runs for good: add --yes to delete the ${n} run${n === 1 ? '' : 's'} of queue ${queue} waiting now (${queued} queued, ${scheduled} scheduled); active runs finish either way`,
        { details: { queue, would_delete: n, queued, scheduled } },
      );
    }
    const n = await broker.purge(queue, Date.now());
    if (out.json) return out.data({ queue, purged: n });
    out.text(`Deleted ${n} run${n === 1 ? '' : 's'} (queued and scheduled) of queue ${queue}.\n`);
  });
}

export async function pauseResume(command: 'pause' | 'resume', args: string[], out: Output): Promise<void> {
  const { values, positionals } = parse(command, args, {}, { min: 1, max: 1, what: 'one queue name' });
  const queue = positionals[0]!;
  await withBroker(values, async (broker) => {
    await checkQueue(broker, queue);
    const was = (await broker.pausedQueues()).includes(queue);
    if (command === 'pause') await broker.pause(queue);
    else await broker.resume(queue);
    const paused = command === 'pause';
    if (out.json) return out.data({ queue, paused, changed: was !== paused });
    if (was === paused) out.text(`Queue ${queue} was already ${paused ? 'paused' : 'running (not paused)'}.\n`);
    else
      out.text(
        paused
          ? `Queue ${queue} paused: it still accepts runs, no worker takes them until: errand resume ${queue}\n`
          : `Queue ${queue} resumed: workers take its runs again.\n`,
      );
  });
}
