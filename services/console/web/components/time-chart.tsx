import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useRef } from "preact/hooks";

/** One line: a label and its values at the chart's times (null: no value, a gap). */
export interface Line {
  readonly label: string;
  readonly values: readonly (number | null)[];
}

const palette = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0969da", "#57606a"];

/**
 * A time-series chart drawn by uPlot (canvas). For tests and assistive technology the figure
 * carries its latest values: data-points (times with a value), data-last (the latest value of
 * the first line) and an aria-label that says them in words.
 */
export function TimeChart(props: { title: string; unit: string; times: readonly number[]; lines: readonly Line[]; testId: string; height?: number; sparkline?: boolean }) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  const shape = props.lines.map((l) => l.label).join("\u0000");

  useEffect(() => {
    const element = container.current!;
    const options: uPlot.Options = {
      width: Math.max(200, element.clientWidth),
      height: props.height ?? 160,
      legend: { show: !props.sparkline },
      cursor: props.sparkline ? { show: false } : { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: props.sparkline
        ? [{ show: false }, { show: false }]
        : [{}, { size: 60, values: (_u, splits) => splits.map((v) => `${Number(v.toPrecision(3))}${props.unit === "%" ? " %" : ""}`) }],
      series: [{}, ...props.lines.map((line, i) => ({ label: line.label, stroke: palette[i % palette.length], width: 1.5, spanGaps: false, points: { show: false } }))],
    };
    plot.current = new uPlot(options, data(props.times, props.lines), element);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(200, element.clientWidth), height: props.height ?? 160 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = undefined;
    };
  }, [shape, props.unit]);

  useEffect(() => plot.current?.setData(data(props.times, props.lines)), [props.times, props.lines]);

  const first = props.lines[0]?.values ?? [];
  const withValue = first.filter((v) => v !== null).length;
  const last = [...first].reverse().find((v) => v !== null);
  const said = last === undefined || last === null ? "no data yet" : `latest ${Number(last.toPrecision(4))}${props.unit === "%" ? " %" : ` ${props.unit}`}`;
  return (
    <figure class="chart" data-testid={props.testId} data-points={withValue} data-last={last ?? ""} role="img" aria-label={`${props.title}: ${said}`}>
      {props.sparkline ? null : (
        <figcaption>
          {props.title} <span class="muted">({props.unit})</span>
        </figcaption>
      )}
      <div ref={container} />
    </figure>
  );
}

function data(times: readonly number[], lines: readonly Line[]): uPlot.AlignedData {
  return [times.map((t) => t / 1000), ...lines.map((l) => [...l.values])] as uPlot.AlignedData;
}

/** A bar per named value (one metric across experiments), drawn by uPlot's bars path. */
export function BarChart(props: { title: string; labels: readonly string[]; values: readonly (number | null)[]; testId: string }) {
  const container = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = container.current!;
    const bars = uPlot.paths.bars!({ size: [0.6, 80] });
    const plot = new uPlot(
      {
        width: Math.max(200, element.clientWidth),
        height: 180,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: false, range: [-0.5, props.labels.length - 0.5] }, y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.15 : 1] } },
        axes: [{ splits: () => props.labels.map((_, i) => i), values: (_u, splits) => splits.map((i) => props.labels[i] ?? "") }, { size: 60 }],
        series: [{}, { label: props.title, fill: "#1f6feb99", stroke: "#1f6feb", paths: bars, points: { show: false } }],
      },
      [props.labels.map((_, i) => i), [...props.values]] as uPlot.AlignedData,
      element,
    );
    return () => plot.destroy();
  }, [props.labels.join("\u0000"), props.values.join(",")]);
  const said = props.labels.map((l, i) => `${l} ${props.values[i] ?? "none"}`).join(", ");
  return (
    <figure class="chart" data-testid={props.testId} data-values={props.values.join(",")} role="img" aria-label={`${props.title}: ${said}`}>
      <figcaption>{props.title}</figcaption>
      <div ref={container} />
    </figure>
  );
}
