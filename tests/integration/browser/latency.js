// Times the notebooks' controls in a real browser, from the input event to the finished redraw: opens each
// notebook in JupyterLab (headless Chromium via playwright-core), runs all its cells, then moves each control
// `repeats` times as a person would and measures, in the page's own clock:
//   start  = the input event itself (a capturing listener on the document: 'keydown' for a slider's arrow key
//            and for Enter in a text box, 'change' for a dropdown, 'mousedown' for a button or a plot click);
//   finish = the last DOM mutation in the notebook's outputs (a MutationObserver over the notebook, plotly's
//            hover layer ignored) before they stay still for QUIET_MS; a change must have reached what the
//            control redraws (a plotly figure, a mutation inside a .js-plotly-plot, unless the control names
//            another element in "redraws"), or the repeat fails.
// So a time covers the widget's message to the kernel, the callback, the messages back and plotly.js's
// redraw. Called by bench/bench_browser_latency.py.
//
// Usage: node latency.js --url http://127.0.0.1:PORT --artifacts DIR [--chromium PATH] [--timeout-ms N] RUN ...
// where RUN is {"notebook": "01_x.ipynb", "widget": 0, "repeats": 5, "controls": [CONTROL, ...]} and CONTROL is
// one of ("name" labels it in the report):
//   {"name": "...", "select": {"dropdown": "token"}}            the next option but two of a dropdown, by label;
//   {"name": "...", "press": {"slider": "residual layer"}}      ArrowRight, then ArrowLeft, ... on a slider;
//   {"name": "...", "fill": {"text": "text", "values": [..]}}  type each value in turn into a text box, Enter (a
//                                                               value equal to the box's text is skipped: no change);
//   {"name": "...", "toggle": {"buttons": ["a", "b"]}}         click button a, then b, then a, ...;
//   {"name": "...", "click": {"plot": 0, "at": [[fx, fy], ...]}}  click plot 0 of the widget at each point in turn;
//   "tab": "Sizes" (optional, any control) clicks that tab of the widget first (not timed); "widget": N (optional)
//   moves the notebook's N-th widget output instead of the run's; "in": CSS (optional) looks for the control
//   inside that element of the widget only (".predictions-through-depth": the panel's own token menu);
//   "redraws": CSS (optional, default ".js-plotly-plot") is what a move must change (an HTML table's widget).
// Prints one JSON line per notebook: {notebook, ok, controls: [{name, ms: [...], first_plot_ms: [...]}], error}
// (first_plot_ms: to the first change inside what the control redraws, a plotly figure unless "redraws" says). LATENCY_LOG=1 prints each move's mutations to
// stderr, grouped by millisecond ([ms, count, class of the first target]): how many redraws a move caused.

'use strict';

const path = require('path');
const fs = require('fs');
const { runEach, openNotebook, widgetOutput, waitForKernel, shutDown, click } = require('./run_notebooks.js');

const QUIET_MS = 1000; // outputs still this long: the redraw has finished
const PAUSE_MS = 500; // between two moves, after the kernel is idle again
const TRIGGERS = { select: 'change', press: 'keydown', fill: 'keydown', toggle: 'mousedown', click: 'mousedown' };
const PLOT = '.js-plotly-plot';

function labelled(output, kind, label) {
  const escaped = label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const exact = new RegExp(`^\\s*${escaped}\\s*$`);
  return output.locator(kind, { has: output.page().locator('label', { hasText: exact }) }).first();
}

// Everything a move needs before its input event (not timed), and the move itself.
async function prepare(page, output, control, repeat) {
  if (control.select) {
    const select = labelled(output, '.widget-dropdown', control.select.dropdown).locator('select');
    const count = await select.locator('option').count();
    const current = await select.evaluate((s) => s.selectedIndex);
    return () => select.selectOption({ index: (current + 3) % count });
  }
  if (control.press) {
    const handle = labelled(output, '.widget-slider', control.press.slider).locator('.noUi-handle');
    await handle.scrollIntoViewIfNeeded();
    await handle.focus();
    return () => page.keyboard.press(repeat % 2 === 0 ? 'ArrowRight' : 'ArrowLeft');
  }
  if (control.fill) {
    const input = labelled(output, '.widget-text', control.fill.text).locator('input');
    const values = control.fill.values;
    const current = await input.inputValue();
    const value = values[repeat % values.length];
    await input.fill(value === current ? values[(repeat + 1) % values.length] : value);
    return () => input.press('Enter');
  }
  if (control.toggle) {
    const buttons = control.toggle.buttons;
    return () => click(page, output, { button: buttons[repeat % buttons.length] });
  }
  const points = control.click.at;
  return () => click(page, output, { plot: control.click.plot, at: points[repeat % points.length] });
}

// In the page: the start (first trigger event) and the last output mutation, plotly's hover layer aside; whether
// (and when first) a mutation reached `redraws`.
function arm({ trigger, redraws }) {
  const state = { start: null, last: null, plot: false, firstPlot: null, log: [] };
  window.__latency = state;
  const onTrigger = () => {
    if (state.start === null) state.start = performance.now();
  };
  document.addEventListener(trigger, onTrigger, { capture: true, once: true });
  const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  const observer = new MutationObserver((mutations) => {
    const now = performance.now();
    for (const m of mutations) {
      const target = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      if (!target || !target.closest('.jp-OutputArea-output') || target.closest('.hoverlayer')) continue;
      if (state.start === null) continue;
      state.last = now;
      const plot = target.closest(redraws);
      if (plot && !state.plot) state.firstPlot = now;
      if (plot) state.plot = true;
      const t = Math.round(now - state.start);
      const last = state.log[state.log.length - 1];
      if (last && last[0] === t) last[1] += 1;
      else state.log.push([t, 1, String(target.className.baseVal ?? target.className).slice(0, 30)]);
    }
  });
  observer.observe(notebook, { subtree: true, childList: true, attributes: true, characterData: true });
  state.stop = () => observer.disconnect();
}

async function settled(page, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await page.evaluate(() => {
      const s = window.__latency;
      return { start: s.start, last: s.last, plot: s.plot, firstPlot: s.firstPlot, log: s.log, now: performance.now() };
    });
    if (state.start !== null && state.plot && state.now - state.last >= QUIET_MS) {
      await page.evaluate(() => window.__latency.stop());
      if (process.env.LATENCY_LOG) console.error(JSON.stringify(state.log));
      return [state.last - state.start, state.firstPlot - state.start];
    }
    if (Date.now() > deadline) {
      await page.evaluate(() => window.__latency.stop());
      throw new Error(`no finished redraw within ${timeoutMs} ms: ${JSON.stringify(state)}`);
    }
    await page.waitForTimeout(50);
  }
}

async function timeControl(page, output, control, repeats, timeoutMs) {
  if (control.tab) await click(page, output, { tab: control.tab });
  const ms = [];
  const firstMs = [];
  for (let repeat = 0; repeat < repeats; repeat++) {
    await waitForKernel(page, timeoutMs);
    await page.waitForTimeout(PAUSE_MS);
    const move = await prepare(page, output, control, repeat);
    const trigger = TRIGGERS[Object.keys(TRIGGERS).find((kind) => control[kind])];
    await page.evaluate(arm, { trigger, redraws: control.redraws || PLOT });
    await move();
    const [settledMs, firstPlotMs] = await settled(page, timeoutMs);
    ms.push(Math.round(settledMs));
    firstMs.push(Math.round(firstPlotMs));
  }
  return { ms, first_plot_ms: firstMs };
}

async function timeNotebook(context, options, { notebook, widget = 0, repeats = 5, controls }) {
  const report = { notebook, ok: false, controls: [] };
  const page = await context.newPage();
  try {
    report.cells = await openNotebook(page, options, notebook);
    for (const control of controls) {
      const whole = widgetOutput(page, control.widget === undefined ? widget : control.widget);
      const output = control.in ? whole.locator(control.in).first() : whole;
      const times = await timeControl(page, output, control, repeats, options.timeoutMs);
      report.controls.push({ name: control.name, ...times });
    }
    report.ok = true;
  } catch (error) {
    report.error = String(error && error.message ? error.message : error).split('\n')[0];
    const failure = path.join(options.artifacts, `latency-${path.basename(notebook, '.ipynb')}-failure.png`);
    fs.mkdirSync(options.artifacts, { recursive: true });
    await page.screenshot({ path: failure }).catch(() => {});
    report.failure_screenshot = failure;
  } finally {
    await shutDown(page);
  }
  return report;
}

runEach(timeNotebook);
