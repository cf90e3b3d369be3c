// Run by host-tz.test.ts under several host `TZ` values: prints the host's own zone and a digest
// of many fire times (zones with DST, every-hour and fixed-time patterns, seconds, intervals,
// around each transition of 2025-2026), which must be the same whatever the host zone.
import { createHash } from 'node:crypto';
import { compileSchedule, firesBetween, nextFires } from '../../src/schedule/index.ts';
import { transitions } from './oracle.ts';

export const DIGEST_ZONES = [
  'America/New_York',
  'Europe/Berlin',
  'Australia/Lord_Howe',
  'Australia/Sydney',
  'America/Santiago',
  'America/Havana',
  'Asia/Kolkata',
  'Pacific/Chatham',
  'Antarctica/Troll',
  'Africa/Casablanca',
  'UTC',
];
// Each spec: fires from `lead` ms before each transition.
const SPECS = [
  { cron: '30 2 * * *', count: 3, lead: 3 * 3600_000 },
  { cron: '0 0 * * *', count: 3, lead: 3 * 3600_000 },
  { cron: '*/15 * * * *', count: 30, lead: 3 * 3600_000 },
  { cron: '0 * * * *', count: 8, lead: 3 * 3600_000 },
  { cron: '*/20 * * * * *', count: 200, lead: 20 * 60_000 },
  { cron: '0 30 1 * * 0', count: 2, lead: 3 * 3600_000 },
  { every: '90m', count: 6, lead: 3 * 3600_000 },
];

export function digest(): string {
  const h = createHash('sha256');
  for (const zone of DIGEST_ZONES) {
    const trs = transitions(zone, Date.UTC(2025, 0, 1), Date.UTC(2027, 0, 1));
    for (const { count, lead, ...spec } of SPECS) {
      const s = compileSchedule({ ...spec, timezone: zone });
      for (const tr of trs) h.update(`${zone} ${JSON.stringify(spec)} ${nextFires(s, tr.at - lead, count).join(',')}\n`);
    }
    const daily = compileSchedule({ cron: '15 2 * * *', timezone: zone });
    h.update(firesBetween(daily, Date.UTC(2026, 0, 1), Date.UTC(2027, 0, 1)).times.join(','));
  }
  return h.digest('hex');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify({ hostZone: Intl.DateTimeFormat().resolvedOptions().timeZone, digest: digest() })}\n`);
}
