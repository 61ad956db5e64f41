// Runnel's dashboard: an overview of the pipelines this server serves and a page per
// pipeline, drawn from the JSON API (GET /v1/dashboard, /v1/pipelines/{p}/dashboard,
// the requests API for failures and search) every two seconds. Plain DOM and SVG:
// no library, nothing from another origin. Data is only ever set as text.
'use strict';

const KEY = 'runnel.key';
const REFRESH_MS = 2000;
let timer = null;

// ---- access ----

function apiKey() { return sessionStorage.getItem(KEY); }

// A key handed over in the fragment (#key=...) is kept for the session and dropped from
// the address, which then shows the page it names (#key=K&page=/p/needs).
function takeKeyFromAddress() {
  if (!location.hash.startsWith('#key=')) return;
  const params = new URLSearchParams(location.hash.slice(1));
  sessionStorage.setItem(KEY, params.get('key'));
  history.replaceState(null, '', '#' + (params.get('page') || '/'));
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = apiKey();
  if (key) headers.Authorization = 'Bearer ' + key;
  const res = await fetch(path, Object.assign({}, options, {headers}));
  if (res.status === 401) throw new Unauthorized('sign in');
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.status + ' ' + res.statusText);
  return body;
}

// ---- DOM helpers ----

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class')
      node.className = value;
    else if (name === 'style')
      node.style.cssText = value;  // CSSOM: the page's policy refuses style attributes
    else if (name.startsWith('on'))
      node.addEventListener(name.slice(2), value);
    else
      node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function section(title, cls, ...children) {
  return el('section', {class: cls || '', 'data-section': title}, el('h2', {}, title), ...children);
}

function table(headers, rows) {
  return el(
      'table', {}, el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, ...rows.map((cells) => el('tr', {}, ...cells.map((c) => el('td', {}, c))))));
}

function statusText(status, prefix = 'status') { return el('span', {class: prefix + '-' + status}, status); }

function time(seconds) { return new Date(seconds * 1000).toLocaleTimeString(); }

function number(n, digits = 0) { return Number(n).toLocaleString(undefined, {maximumFractionDigits: digits}); }

// ---- charts ----

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// Lines over time: `lines` [{name, cls, points: [[t, v], ...]}], `markers` [{t, label}]
// (model versions) drawn across. data-points counts the points drawn.
function lineChart(lines, markers, from, to, unit) {
  const width = 600, height = 180, left = 44, right = 8, top = 8, bottom = 20;
  const all = lines.flatMap((l) => l.points.map((p) => p[1]));
  const max = Math.max(1e-9, ...all);
  const x = (t) => left + ((t - from) / Math.max(1, to - from)) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const chart = svg('svg', {
    class: 'chart',
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'data-points': String(all.length),
    preserveAspectRatio: 'none'
  });
  chart.append(svg('line', {class: 'axis', x1: left, y1: height - bottom, x2: width - right, y2: height - bottom}));
  chart.append(svg('line', {class: 'axis', x1: left, y1: top, x2: left, y2: height - bottom}));
  const label = (text, attrs) => {
    const t = svg('text', attrs);
    t.textContent = text;
    chart.append(t);
  };
  label(number(max, 3) + unit, {x: 2, y: top + 8});
  label('0', {x: 2, y: height - bottom});
  label(time(from), {x: left, y: height - 4});
  label(time(to), {x: width - right - 50, y: height - 4});
  for (const m of markers) {
    if (m.t < from || m.t > to) continue;
    chart.append(
        svg('line', {class: 'marker', x1: x(m.t), y1: top, x2: x(m.t), y2: height - bottom, 'data-marker': m.label}));
    label(m.label, {x: Math.min(x(m.t) + 2, width - right - 24), y: top + 18});
  }
  for (const line of lines) {
    if (!line.points.length) continue;
    chart.append(svg('polyline', {
      class: line.cls,
      'data-series': line.name,
      points: line.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
    }));
    if (line.points.length > 3) continue;
    for (const [t, v] of line.points) {  // too few points to make a visible line
      chart.append(svg('circle', {class: 'dot ' + line.cls, cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5}));
    }
  }
  const legend =
      el('div', {class: 'legend'},
         ...lines.map((l) => el('span', {}, el('i', {style: `background: var(--${l.cls})`}), l.name)));
  return el('div', {}, chart, legend);
}

// Bars per bin (or label) of two windows, each as its share of its window so that
// windows of different sizes compare: the latest requests against those before them.
function barChart(names, latest, previous, labels = ['latest', 'before']) {
  const width = 600, height = 150, left = 8, right = 8, top = 8, bottom = 34;
  const share = (w) => w.counts.map((c) => (w.total ? c / w.total : 0));
  const a = share(latest), b = share(previous);
  const max = Math.max(1e-9, ...a, ...b);
  const slot = (width - left - right) / Math.max(1, names.length);
  const chart = svg('svg', {
    class: 'chart bars',
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'data-points': String(a.filter((v) => v > 0).length + b.filter((v) => v > 0).length),
    preserveAspectRatio: 'none'
  });
  chart.append(svg('line', {class: 'axis', x1: left, y1: height - bottom, x2: width - right, y2: height - bottom}));
  const bar = (i, v, offset, cls) => {
    const h = (v / max) * (height - top - bottom);
    chart.append(svg('rect', {
      class: cls,
      x: left + i * slot + offset * slot * 0.45 + slot * 0.05,
      y: height - bottom - h,
      width: slot * 0.4,
      height: Math.max(0, h)
    }));
  };
  names.forEach((name, i) => {
    bar(i, a[i], 0, 'latest');
    bar(i, b[i], 1, 'previous');
    if (names.length <= 12 || i % Math.ceil(names.length / 6) === 0) {
      const t = svg('text', {x: left + i * slot + 2, y: height - bottom + 12});
      t.textContent = name;
      chart.append(t);
    }
  });
  const legend = el(
      'div', {class: 'legend'},
      el('span', {}, el('i', {style: 'background: var(--done)'}), `${labels[0]} (${number(latest.total)} served)`),
      el('span', {}, el('i', {style: 'background: var(--marker)'}), `${labels[1]} (${number(previous.total)} served)`),
      latest.missing ? el('span', {}, `${number(latest.missing)} missing`) : null);
  return el('div', {'data-output': ''}, chart, legend);
}

function distributionSection(d) {
  const charts = d.distributions.map((o) => {
    const names = o.kind === 'label' ? o.labels : o.edges.slice(0, -1).map((e) => number(e, Math.abs(e) < 10 ? 2 : 0));
    return el('div', {}, el('h3', {}, o.output), barChart(names, o.latest, o.previous));
  });
  return section(
      'What the model says', 'wide',
      el('p', {class: 'muted'},
         `Each output over the served ones among the latest ${number(d.window_requests)} requests, ` +
             `against those among the ${number(d.window_requests)} before them.`),
      el('div', {class: 'distributions'}, ...charts));
}

// The ready-made analyses of the newest snapshot: null when the pipeline has none yet
// (asked through the list, which always answers, so that no 404 reaches the console).
async function snapshotAnalyses(name) {
  const path = `/v1/pipelines/${encodeURIComponent(name)}/snapshots`;
  const list = await api(path);
  if (!list.versions.length) return null;
  return api(`${path}/${list.versions[list.versions.length - 1].version}/analyses`);
}

// One analysis as a table: its columns, numbers rounded, hours as "MM-DD HH:00", at
// most `limit` rows.
function analysisTable(answer, limit) {
  if (!answer.rows.length) return el('p', {class: 'muted'}, 'Nothing in this snapshot.');
  const cell = (v, column) => {
    if (typeof v === 'number') return el('span', {class: 'num'}, number(v, Number.isInteger(v) ? 0 : 2));
    if (column === 'hour' && typeof v === 'string') return v.slice(5, 16);
    return v === null ? '' : v;
  };
  return table(answer.columns, answer.rows.slice(0, limit).map((row) => row.map((v, i) => cell(v, answer.columns[i]))));
}

// The drift analysis (rows: version, output, bin, lower, first_hour, last_hour) as one
// chart per version and output: its last hour against its first.
function driftCharts(answer) {
  const BINS = 20;
  const charts = new Map();
  for (const [version, output, bin, lower, first, last] of answer.rows) {
    const key = version + ' · ' + output;
    if (!charts.has(key)) {
      charts.set(key, {
        names: Array(BINS).fill(''),
        last: {counts: Array(BINS).fill(0), total: 0},
        first: {counts: Array(BINS).fill(0), total: 0}
      });
    }
    const c = charts.get(key);
    c.names[bin] = number(lower, Math.abs(lower) < 10 ? 2 : 0);
    c.last.counts[bin] = last;
    c.last.total += last;
    c.first.counts[bin] = first;
    c.first.total += first;
  }
  return [...charts].map(
      ([key, c]) =>
          el('div', {'data-drift': key}, el('h3', {}, key),
             barChart(c.names, c.last, c.first, ['last hour', 'first hour'])));
}

function snapshotSection(s) {
  if (!s) {
    return section(
        'From the newest snapshot', 'wide',
        el('p', {class: 'muted'},
           'No snapshot yet: `runnel snapshot create`, or [snapshots] every in the pipeline file.'));
  }
  const titles = {
    clients_per_hour: 'Requests per client and hour',
    outputs_by_version: 'Outputs by model version',
    latency_by_version: 'Latency by model version (ms)',
    stage_ms: 'Time per batch in each stage (ms)'
  };
  const parts = Object.entries(titles)
                    .filter(([key]) => s.analyses[key])
                    .map(
                        ([key, title]) =>
                            el('div', {'data-analysis': key}, el('h3', {}, title), analysisTable(s.analyses[key], 12)));
  const drift = s.analyses.drift ? el('div', {'data-analysis': 'drift'},
                                      el('h3', {}, 'Drift: each output in its version\'s last hour against its first'),
                                      el('div', {class: 'distributions'}, ...driftCharts(s.analyses.drift))) :
                                   null;
  return section(
      'From the newest snapshot', 'wide',
      el('p', {class: 'muted'},
         `Snapshot v${s.version}, taken ${new Date(s.created_at).toLocaleString()}: ` +
             'read from its DuckDB file, not from the serving database.'),
      drift, el('div', {class: 'analyses'}, ...parts));
}

// ---- pages ----

const main = () => document.getElementById('main');

function showError(err) {
  if (err instanceof Unauthorized) return signIn();
  main().replaceChildren(section('Error', 'wide', el('p', {class: 'error'}, err.message)));
}

function signIn() {
  stopRefresh();
  const input = el('input', {
    type: 'password',
    name: 'key',
    autocomplete: 'off',
    placeholder: 'rnl_…',
    'aria-label': 'API key or token',
    required: ''
  });
  const form =
      el('form', {
        class: 'signin',
        onsubmit: (e) => {
          e.preventDefault();
          sessionStorage.setItem(KEY, input.value.trim());
          route();
        }
      },
         input, el('button', {type: 'submit'}, 'Sign in'));
  main().replaceChildren(section(
      'Sign in', 'wide',
      el('p', {class: 'muted'},
         'This server needs an API key (read scope or more) or its token. ' +
             'It is kept for this browser tab only.'),
      form));
}

async function overview() {
  const data = await api('/v1/dashboard');
  document.getElementById('crumbs').replaceChildren(
      ...data.pipelines.map((p) => el('a', {href: '#/p/' + encodeURIComponent(p.name)}, p.name)));
  const rows = data.pipelines.map(
      (p) =>
          [el('a', {href: '#/p/' + encodeURIComponent(p.name)}, p.name), number(p.queue.depth),
           number(p.queue.oldest_seconds, 1) + ' s', number(p.last_minute.done), number(p.last_minute.throttled),
           number(p.last_minute.failed)]);
  main().replaceChildren(section(
      'Pipelines', 'wide', table(['pipeline', 'queued', 'oldest', 'served (1 min)', 'throttled', 'failed'], rows)));
  updated(data.now);
}

function updated(now) { document.getElementById('updated').textContent = 'updated ' + time(now); }

function healthSections(d) {
  // The window's span from its first sample on (at least a minute): a pipeline that
  // started serving a minute ago fills its charts.
  const to = d.now;
  const first = d.series.length ? d.series[0].t - 10 : to;
  const from = Math.min(to - 60, Math.max(to - d.window_seconds, first));
  const markers = d.versions.filter((v) => v.status === 'ready' || v.status === 'rolled_back')
                      .map((v) => ({t: v.created_at, label: 'v' + v.version}));
  const points = (field, scale = 1) => d.series.filter((s) => s[field] !== null).map((s) => [s.t, s[field] * scale]);
  // Seconds without a sample served nothing: the counts fall to 0 across a gap.
  const counts = (field) => {
    const out = [];
    for (const s of d.series) {
      const last = out.length ? out[out.length - 1][0] : null;
      if (last !== null && s.t - last > 1) out.push([last + 1, 0], [s.t - 1, 0]);
      out.push([s.t, s[field]]);
    }
    return out;
  };
  const throughput = lineChart(
      [
        {name: 'served/s', cls: 'done', points: counts('done')},
        {name: 'throttled/s', cls: 'throttled', points: counts('throttled')},
        {name: 'failed/s', cls: 'failed', points: counts('failed')}
      ],
      markers, from, to, '');
  const latency = lineChart(
      [{name: 'p50', cls: 'p50', points: points('p50', 1000)}, {name: 'p99', cls: 'p99', points: points('p99', 1000)}],
      markers, from, to, ' ms');
  const longest = Math.max(1e-9, ...d.stages.map((s) => s.seconds_per_batch));
  const stages = table(
      ['stage', 'ms per batch', ''],
      d.stages.map((s) => [s.stage, number(s.seconds_per_batch * 1000, 2), el('div', {
                             class: 'bar',
                             style: `width:${(100 * s.seconds_per_batch / longest).toFixed(1)}%`
                           })]));
  const processes = d.processes.length ?
      table(
          ['process', 'state', 'model', 'invocations', 'mean / max ms'],
          d.processes.map(
              (p) =>
                  [p.process, el('span', {}, statusText(p.state, 'state'), p.reason ? ' — ' + p.reason : ''),
                   p.model ? `${p.model} v${p.version}` : '', number(p.invocations || 0),
                   p.model ? `${number(p.mean_ms, 3)} / ${number(p.max_ms, 3)}` : ''])) :
      el('p', {class: 'muted'}, 'No process has reported in the last 10 s.');
  return [
    section('Throughput', '', throughput), section('Latency', '', latency),
    section(
        'Queue and stages', '',
        el('div', {class: 'numbers'}, el('div', {}, el('b', {'data-queue-depth': ''}, number(d.queue.depth)), 'queued'),
           el('div', {}, el('b', {}, number(d.queue.oldest_seconds, 1) + ' s'), 'oldest waiting')),
        stages),
    section('Processes', '', processes)
  ];
}

// Per version: the processes holding it now, their invocations summed, the mean over
// them and the largest inference time.
function versionUse(d, version) {
  const holders = d.processes.filter((p) => p.model === d.model && p.version === version);
  if (!holders.length) return '';
  const calls = holders.reduce((n, p) => n + p.invocations, 0);
  const mean = calls ? holders.reduce((t, p) => t + p.mean_ms * p.invocations, 0) / calls : 0;
  const max = Math.max(...holders.map((p) => p.max_ms));
  return `${holders.map((p) => p.process).join(', ')}: ${number(calls)} calls, ${number(mean, 3)} / ${
      number(max, 3)} ms`;
}

function timelineSection(d) {
  if (!d.model) return section('Model versions', '', el('p', {class: 'muted'}, 'This pipeline serves a model file.'));
  const rows = d.versions.map(
      (v) =>
          [el('span', {'data-version': String(v.version)}, 'v' + v.version), statusText(v.status),
           new Date(v.created_at * 1000).toLocaleString(), v.description, versionUse(d, v.version), v.error || '']);
  return section(
      'Model versions', '',
      rows.length ?
          table(['version', 'status', 'pushed', 'description', 'held by (calls, mean / max ms)', 'error'], rows) :
          el('p', {class: 'muted'}, 'No version pushed yet.'));
}

function clientsSection(d) {
  if (!d.clients) return section('Clients', '', el('p', {class: 'muted'}, 'This pipeline has no [quota].'));
  const c = d.clients;
  const window = c.window_start ? `since ${new Date(c.window_start).toLocaleString()}` : 'over all time';
  const rows = c.top.map(
      (t) =>
          [el('span', {'data-client': t.client}, t.client), number(t.requests), number(t.remaining),
           t.throttled ? el('span', {class: 'status-throttled'}, number(t.throttled)) : '0']);
  return section(
      'Clients', '',
      el('p', {class: 'muted'},
         `Top clients ${window}; ${number(c.max_requests)} ` +
             'requests each.'),
      rows.length ? table(['client', 'requests', 'left', 'throttled'], rows) :
                    el('p', {class: 'muted'}, 'No request counted yet.'));
}

// What each retry clicked on this page answered, by request: shown in place of its
// button across refreshes.
const retried = new Map();

function retryOutcome(id) {
  const outcome = retried.get(id);
  return el('span', {class: outcome.ok ? 'status-queued' : 'error', 'data-retried': id}, outcome.text);
}

async function retry(pipeline, id, button) {
  button.disabled = true;
  try {
    const r = await api(
        `/v1/pipelines/${encodeURIComponent(pipeline)}/requests/${encodeURIComponent(id)}/retry`, {method: 'POST'});
    retried.set(id, {ok: true, text: 're-queued (job ' + r.job + ')'});
  } catch (err) {
    retried.set(id, {ok: false, text: err.message});
  }
  button.replaceWith(retryOutcome(id));
}

function pathKey(id) { return Array.isArray(id) ? id.join(',') : String(id); }

function failuresSection(pipeline, d) {
  const reasons = d.failures.length ? table(['count', 'reason'], d.failures.map((f) => [number(f.count), f.reason])) :
                                      el('p', {class: 'muted'}, 'No failed request.');
  const rows = d.latest_failed.map(
      (r) =>
          [el('span', {'data-failed': pathKey(r.id)}, pathKey(r.id)), r.error || '',
           retried.has(pathKey(r.id)) ?
               retryOutcome(pathKey(r.id)) :
               el('button', {type: 'button', onclick: (e) => retry(pipeline, pathKey(r.id), e.target)}, 'Retry')]);
  return section(
      'Failures', 'wide', el('p', {class: 'muted'}, 'The latest failed requests, by reason:'), reasons,
      rows.length ? table(['request', 'error', ''], rows) : null);
}

function searchSection(pipeline, d, query) {
  const out = el('div', {id: 'search-result'});
  const key = el('input', {name: 'key', placeholder: 'request key', 'aria-label': 'request key'});
  const status =
      el('select', {name: 'status', 'aria-label': 'status'},
         ...['', 'queued', 'done', 'throttled', 'failed', 'gone', 'superseded'].map(
             (s) => el('option', {value: s}, s || 'any status')));
  const output =
      el('select', {name: 'output', 'aria-label': 'output'}, el('option', {value: ''}, 'no output filter'),
         ...d.outputs.map((o) => el('option', {value: o}, o)));
  const op =
      el('select', {name: 'op', 'aria-label': 'comparison'},
         ...['gte', 'lte', 'eq'].map((o) => el('option', {value: o}, {gte: '≥', lte: '≤', eq: '='}[o])));
  const value = el('input', {name: 'value', placeholder: 'value', size: '8', 'aria-label': 'value'});
  const base = `/v1/pipelines/${encodeURIComponent(pipeline)}/requests`;
  const show = (request) =>
      out.replaceChildren(el('pre', {'data-request': pathKey(request.id)}, JSON.stringify(request, null, 2)));
  const find = async (e) => {
    e.preventDefault();
    try {
      if (key.value.trim()) return show(await api(`${base}/${encodeURIComponent(key.value.trim())}`));
      const q = new URLSearchParams({limit: '50'});
      if (status.value) q.set('status', status.value);
      if (output.value && value.value)
        q.set(op.value === 'eq' ? output.value : `${output.value}.${op.value}`, value.value);
      const list = await api(`${base}?${q}`);
      out.replaceChildren(
          list.requests.length ? table(
                                     ['request', 'status', 'model', ...d.outputs],
                                     list.requests.map(
                                         (r) =>
                                             [el('a', {
                                                href: '#',
                                                onclick: (ev) => {
                                                  ev.preventDefault();
                                                  show(r);
                                                }
                                              },
                                                 pathKey(r.id)),
                                              statusText(r.status), r.model_version || '',
                                              ...d.outputs.map((o) => (r.outputs || {})[o] ?? '')])) :
                                 el('p', {class: 'muted'}, 'No request matches.'));
    } catch (err) {
      if (err instanceof Unauthorized) return signIn();
      out.replaceChildren(el('p', {class: 'error'}, err.message));
    }
  };
  const form = el('form', {onsubmit: find}, key, status, output, op, value, el('button', {type: 'submit'}, 'Find'));
  if ([...query.keys()].length) {
    for (const [name, field] of Object.entries({key, status, output, op, value})) {
      if (query.has(name)) field.value = query.get(name);
    }
    find(new Event('submit'));
  }
  return section('Search', 'wide', form, out);
}

// The pipeline page: the live sections are redrawn on each refresh; the search keeps
// its state.
async function pipelinePage(name, search) {
  const d = await api(`/v1/pipelines/${encodeURIComponent(name)}/dashboard`);
  const live = [
    ...healthSections(d), timelineSection(d), clientsSection(d), distributionSection(d), await failuresSection(name, d),
    snapshotSection(await snapshotAnalyses(name))
  ];
  if (!search.isConnected)
    main().replaceChildren(...live, search.build(d));
  else
    main().replaceChildren(...live, search.node);
  updated(d.now);
}

function stopRefresh() {
  if (timer) clearTimeout(timer);
  timer = null;
}

function route() {
  takeKeyFromAddress();
  stopRefresh();
  document.getElementById('signout').hidden = !apiKey();
  const match = location.hash.match(/^#\/p\/([^/?]+)(?:\?(.*))?$/);
  const name = match ? decodeURIComponent(match[1]) : null;
  const query = new URLSearchParams(match && match[2] ? match[2] : '');
  const search = {
    node: null,
    get isConnected() { return this.node && this.node.isConnected; },
    build(d) {
      this.node = searchSection(name, d, query);
      return this.node;
    }
  };
  if (name) {
    document.getElementById('crumbs').replaceChildren(
        el('a', {href: '#/'}, 'all pipelines'),
        el('a', {href: '#/p/' + encodeURIComponent(name), 'aria-current': 'page'}, name));
  }
  const draw = name ? () => pipelinePage(name, search) : overview;
  const tick = async () => {
    try {
      await draw();
      timer = setTimeout(tick, REFRESH_MS);
    } catch (err) {
      showError(err);
    }
  };
  tick();
}

document.getElementById('signout').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  route();
});
window.addEventListener('hashchange', route);
route();
