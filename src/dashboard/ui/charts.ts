// The overview's live charts (uPlot): throughput per minute and latency percentiles per minute.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { OverviewSeries } from '../api-types.ts';
import { duration } from './format.ts';
import { h } from './dom.ts';

export interface Chart {
  el: HTMLElement;
  update(series: OverviewSeries): void;
  destroy(): void;
}

const COLORS = {
  succeeded: '#1f9d55',
  failed: '#d64545',
  enqueued: '#2f6fde',
  retried: '#d98a00',
  wait: '#7a4fd6',
  run: '#0f8a8a',
};

type Build = (s: OverviewSeries) => uPlot.AlignedData;

const hhmm = (sec: number) => {
  const d = new Date(sec * 1000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
};

function chart(
  title: string,
  series: uPlot.Series[],
  axisY: uPlot.Axis,
  scaleY: uPlot.Scale,
  build: Build,
  initial: OverviewSeries,
): Chart {
  const box = h('div', { class: 'chart-box' });
  const el = h('section', { class: 'card chart' }, h('h3', null, title), box);
  let plot: uPlot | undefined;
  let data = build(initial);
  const width = () => Math.max(280, Math.floor(box.clientWidth || 560));
  const make = () => {
    plot = new uPlot(
      {
        width: width(),
        height: 200,
        series: [{ label: 'minute', value: (_u, v) => (v === null || v === undefined ? '–' : hhmm(v)) }, ...series],
        scales: { x: { time: true }, y: scaleY },
        axes: [
          {
            stroke: '#6b7280',
            grid: { stroke: '#eef0f3' },
            ticks: { stroke: '#eef0f3' },
            values: (_u, splits) => splits.map((v) => hhmm(v)),
          },
          { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#eef0f3' }, size: 64, ...axisY },
        ],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      },
      data,
      box,
    );
  };
  // The box has its width only once in the document: build on the first resize callback.
  const ro = new ResizeObserver(() => {
    if (!plot) make();
    else if (Math.abs(plot.width - width()) > 2) plot.setSize({ width: width(), height: 200 });
  });
  ro.observe(box);
  return {
    el,
    update(s) {
      data = build(s);
      plot?.setData(data);
    },
    destroy() {
      ro.disconnect();
      plot?.destroy();
    },
  };
}

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
const count = (_u: uPlot, v: number | null) => (v === null || v === undefined ? '–' : String(v));
const seconds = (s: OverviewSeries) => s.minutes.map((m) => m / 1000);
const nullable = (xs: (number | null)[]) => xs.map((x) => (x === null ? null : Math.max(x, 0.5)));

export function throughputChart(initial: OverviewSeries): Chart {
  return chart(
    'Runs per minute',
    [
      { label: 'succeeded', stroke: COLORS.succeeded, width: 2, fill: 'rgba(31,157,85,0.08)', value: count },
      { label: 'failed', stroke: COLORS.failed, width: 2, value: count },
      { label: 'retried', stroke: COLORS.retried, width: 1.5, dash: [4, 4], value: count },
      { label: 'enqueued', stroke: COLORS.enqueued, width: 1.5, value: count },
    ],
    { values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? compact.format(t) : '')) },
    { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] },
    (s) => [seconds(s), s.succeeded, s.failed, s.retried, s.enqueued],
    initial,
  );
}

export function latencyChart(initial: OverviewSeries): Chart {
  // Minutes without runs have no latency: draw each measured minute as a point so a lone one shows.
  const points = { show: true, size: 5 };
  const fmt = (_u: uPlot, v: number | null) => (v === null || v === undefined ? '–' : duration(v));
  return chart(
    'Latency per minute (log scale)',
    [
      { label: 'wait p50', stroke: COLORS.wait, width: 1.5, dash: [4, 4], value: fmt, points, spanGaps: false },
      { label: 'wait p95', stroke: COLORS.wait, width: 2, value: fmt, points, spanGaps: false },
      { label: 'run p50', stroke: COLORS.run, width: 1.5, dash: [4, 4], value: fmt, points, spanGaps: false },
      { label: 'run p95', stroke: COLORS.run, width: 2, value: fmt, points, spanGaps: false },
    ],
    {
      // One grid line per decade (1 ms, 10 ms, 100 ms, ...), not uPlot's nine per decade.
      splits: (_u, _axis, min, max) => {
        const out: number[] = [];
        for (let p = Math.floor(Math.log10(Math.max(min, 1e-3))); 10 ** p <= max; p++) if (10 ** p >= min) out.push(10 ** p);
        return out;
      },
      values: (_u, ticks) => ticks.map((t) => duration(t)),
    },
    { distr: 3, log: 10, range: (_u, min, max) => [Math.min(1, min || 1), Math.max(1000, (max || 1000) * 1.5)] },
    (s) => [seconds(s), nullable(s.waitP50), nullable(s.waitP95), nullable(s.runP50), nullable(s.runP95)],
    initial,
  );
}
