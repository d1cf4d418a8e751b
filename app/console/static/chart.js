// A small inline-SVG line chart (the validation-loss curve of an alignment job).
import {h} from './util.js';

const W = 270;
const H = 72;
const PAD = {left: 64, right: 6, top: 6, bottom: 14};

/** A tick label short enough for the axis, with the digits that tell `lo` and `hi` apart. */
function tickFormat(lo, hi) {
  const span = Math.abs(hi - lo) || Math.abs(hi) || 1;
  const digits = Math.min(5, Math.max(2, Math.ceil(Math.log10(Math.max(Math.abs(hi), Math.abs(lo), 1e-12) / span)) + 2));
  return (v) => {
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-2 || a >= 1e4) ? v.toExponential(digits - 1) : Number(v.toPrecision(digits)).toString();
  };
}

/** SVG of `values` (nulls skipped) with its min and max on the y axis; null when nothing to draw. */
export function lossChart(values, title = 'Validation loss') {
  const points = values.map((v, i) => [i, v]).filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
  if (!points.length) return null;
  const ys = points.map(([, v]) => v);
  let lo = Math.min(...ys);
  let hi = Math.max(...ys);
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const tick = tickFormat(lo, hi);
  const n = Math.max(1, values.length - 1);
  const x = (i) => PAD.left + (i / n) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
  const path = points.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const first = ys[0];
  const last = ys[ys.length - 1];
  const label = `${title} over ${values.length} iteration${values.length === 1 ? '' : 's'}: from ${first.toPrecision(4)} to ${last.toPrecision(4)} (min ${Math.min(...ys).toPrecision(4)})`;
  const svg = h('svg', {class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, width: W, height: H},
    h('title', {svg: true}, label),
    h('line', {svg: true, x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: 'axis'}),
    h('line', {svg: true, x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: 'axis'}),
    h('text', {svg: true, x: PAD.left - 3, y: PAD.top + 8, class: 'tick', 'text-anchor': 'end'}, tick(hi)),
    h('text', {svg: true, x: PAD.left - 3, y: H - PAD.bottom, class: 'tick', 'text-anchor': 'end'}, tick(lo)),
    h('text', {svg: true, x: W - PAD.right, y: H - 2, class: 'tick', 'text-anchor': 'end'}, `iteration ${values.length}`),
    h('polyline', {svg: true, points: path, class: 'line'}),
    points.map(([i, v]) => h('circle', {svg: true, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2, class: 'pt'})));
  return svg;
}
