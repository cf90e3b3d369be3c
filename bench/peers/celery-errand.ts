// The Errand side of the Celery benchmark (bench/scenarios/celery.ts): an Errand worker serving the
// Celery task `bench.noop(i)` (returns i, result kept) from queue `celery`. env: REDIS_URL, CONCURRENCY.
import { z } from 'zod';
import { createCeleryWorker } from '../../src/celery/index.ts';

const worker = createCeleryWorker({ url: process.env.REDIS_URL as string, concurrency: Number(process.env.CONCURRENCY ?? 50) });
worker.register('bench.noop', { args: z.tuple([z.number()]) }, ([i]) => i);
await worker.start();
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  worker.stop().then(() => process.exit(0));
});
