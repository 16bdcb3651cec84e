import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

/**
 * A time-series chart (uPlot). `data` is [x seconds, ...series]; the chart is re-fed in place
 * when data changes, and follows its container's width. For screen readers the figure carries
 * a text summary of each series' latest value.
 */
export function Chart({
  title,
  series,
  data,
  height = 180,
  unit = '',
}: {
  title: string;
  series: string[];
  data: (number | null)[][];
  height?: number;
  unit?: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = series.join('\u0000');
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const u = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true } },
        axes: [{}, { size: 56, values: (_u, v) => v.map((x) => `${+x.toFixed(2)}${unit}`) }],
        series: [{}, ...series.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false }))],
      },
      data as uPlot.AlignedData,
      el,
    );
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Re-created only when the set of series changes; data changes go through setData below.
  }, [key, height, unit]);
  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);
  const latest = series
    .map((s, i) => {
      const ys = data[i + 1] ?? [];
      const v = ys.length ? ys[ys.length - 1] : null;
      return `${s}: ${v === null || v === undefined ? 'no data' : `${+v.toFixed(3)}${unit}`}`;
    })
    .join('; ');
  const points = data[0]?.length ?? 0;
  return (
    <figure className="chart" aria-label={`${title}. Latest ${latest}`} data-points={points}>
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title} chart, ${points} points. Latest ${latest}`} />
    </figure>
  );
}
