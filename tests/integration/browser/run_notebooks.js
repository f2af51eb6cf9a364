// Drives a running JupyterLab in Debian's headless Chromium (via playwright-core, which downloads no browser):
// opens each notebook, runs all its cells, checks that plotly figures rendered, optionally acts on one widget
// output (clicks a button or a point of a plot, presses keys on a slider) and waits for what should follow, and
// screenshots that widget.
// Called by tests/integration/test_browser.py.
//
// Usage: node run_notebooks.js --url http://127.0.0.1:PORT --artifacts DIR [--screenshots DIR] \
//            [--chromium /usr/bin/chromium] [--timeout-ms 240000] RUN ...
// where RUN is a JSON object {"notebook": "03_x.ipynb", "widget": 0, "actions": [ACTION, ...]}: "widget" picks
// the notebook's n-th widget output (default 0, the first), "actions" are optional. Each ACTION does at most
// one thing, then waits for one result:
//   {"click": {"button": "Subclone"}, "expect": ".subclone-result"}            a widget button (a toggle button
//                                                                              too), by its text;
//   {"click": {"tab": "Sizes"}, "expect": ".x"}                                a tab of a widget's tab bar;
//   {"click": {"plot": 0, "at": [0.25, 0.5]}, "expect": ".x", "text": "..."}   plot 0 of the widget, at fractions
//                                                                              of its plot area;
//   {"press": {"slider": "blocks", "keys": ["ArrowLeft"]}}                     keys on a slider's handle (by its
//                                                                              label), as a person would;
//   {"shapes": {"plot": 0, "fill": "rgb(184, 184, 184)", "count": 0}}          wait until plot 0 of the widget
//                                                                              draws exactly `count` shapes of
//                                                                              that fill colour (DOM, not state).
// Prints one JSON line per notebook ({notebook, ok, seconds, cells, plots, results, screenshot, figures, error})
// and exits 1 when any notebook failed.

'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

// Flags that keep a root, offline, headless Chromium from reaching out or needing a sandbox or a GPU.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const PANEL = '.jp-NotebookPanel:not(.lm-mod-hidden)'; // the visible notebook; ?reset leaves no other open

function parseArgs(argv) {
  const options = { chromium: '/usr/bin/chromium', timeoutMs: 240000, notebooks: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => argv[++i];
    if (flag === '--url') options.url = value();
    else if (flag === '--artifacts') options.artifacts = value();
    else if (flag === '--screenshots') options.screenshots = value();
    else if (flag === '--chromium') options.chromium = value();
    else if (flag === '--timeout-ms') options.timeoutMs = Number(value());
    else if (flag.startsWith('--')) throw new Error(`unknown option ${flag}`);
    else options.notebooks.push(JSON.parse(flag));
  }
  if (!options.url || !options.artifacts || !options.notebooks.length) {
    throw new Error('need --url, --artifacts and at least one notebook');
  }
  return options;
}

// The notebook's state, read from JupyterLab's own models (exposed as window.jupyterapp).
function notebookState() {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return { ready: false };
  const cells = [];
  const model = panel.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    if (cell.type !== 'code') continue;
    const errors = [];
    for (let j = 0; j < cell.outputs.length; j++) {
      const output = cell.outputs.get(j).toJSON();
      if (output.output_type === 'error') errors.push(`${output.ename}: ${output.evalue}`);
    }
    cells.push({ count: cell.executionCount, errors });
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return { ready: true, kernel: kernel ? kernel.status : 'none', cells };
}

async function waitForKernel(page, timeoutMs) {
  await page.waitForFunction(() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session &&
      panel.sessionContext.session.kernel;
    return kernel && kernel.status === 'idle';
  }, null, { timeout: timeoutMs, polling: 250 });
}

async function runAllCells(page, timeoutMs) {
  await page.evaluate(() => window.jupyterapp.commands.execute('notebook:run-all-cells'));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await page.evaluate(notebookState);
    const errors = state.cells.flatMap((c) => c.errors);
    if (errors.length) throw new Error(`a cell failed: ${errors.join('; ')}`);
    if (state.kernel === 'idle' && state.cells.every((c) => c.count !== null)) return state.cells.length;
    if (Date.now() > deadline) throw new Error(`cells still running after ${timeoutMs} ms: ${JSON.stringify(state)}`);
    await page.waitForTimeout(500);
  }
}

async function click(page, output, action) {
  if (action.button) {
    await output.locator('button', { hasText: action.button }).first().click();
    return;
  }
  if (action.tab) {
    await output.locator('.lm-TabBar-tab', { hasText: action.tab }).first().click();
    return;
  }
  // Plotly reports a click on the point under the mouse in its drag layer, which covers the plot area.
  const area = output.locator('.js-plotly-plot').nth(action.plot).locator('.nsewdrag').first();
  await area.scrollIntoViewIfNeeded();
  const box = await area.boundingBox();
  const [fx, fy] = action.at;
  await page.mouse.move(box.x + box.width * fx, box.y + box.height * fy);
  await page.waitForTimeout(300);
  await page.mouse.click(box.x + box.width * fx, box.y + box.height * fy);
}

async function press(page, output, action) {
  // ipywidgets' sliders are noUiSlider handles: focused, they take the arrow keys and commit each step.
  const slider = output.locator('.widget-slider', { has: page.locator('label', { hasText: action.slider }) }).first();
  const handle = slider.locator('.noUi-handle').first();
  await handle.scrollIntoViewIfNeeded();
  await handle.focus();
  for (const key of action.keys) {
    await page.keyboard.press(key);
    await page.waitForTimeout(300);
  }
}

// The shapes a plot draws (plotly puts them in its shape layers as <path>s), counted by their fill colour.
async function countShapes(output, { plot, fill }) {
  return output.locator('.js-plotly-plot').nth(plot).locator('.shapelayer path')
    .evaluateAll((paths, colour) => paths.filter((p) => p.style.fill === colour).length, fill);
}

async function waitForShapes(page, output, expected, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const count = await countShapes(output, expected);
    if (count === expected.count) return `${count} shapes filled ${expected.fill}`;
    if (Date.now() > deadline) {
      throw new Error(`plot ${expected.plot} draws ${count} shapes filled ${expected.fill}, expected ${expected.count}`);
    }
    await page.waitForTimeout(250);
  }
}

async function act(page, output, action, timeoutMs) {
  if (action.click) await click(page, output, action.click);
  if (action.press) await press(page, output, action.press);
  if (action.shapes) return waitForShapes(page, output, action.shapes, timeoutMs);
  const shown = page.locator(`${PANEL} ${action.expect}`, action.text ? { hasText: action.text } : {}).first();
  await shown.waitFor({ timeout: timeoutMs });
  return (await shown.innerText()).trim();
}

async function screenshot(page, target, files) {
  await target.scrollIntoViewIfNeeded();
  await page.waitForTimeout(500); // let plotly finish its transitions
  const [first, ...copies] = files;
  fs.mkdirSync(path.dirname(first), { recursive: true });
  await target.screenshot({ path: first });
  for (const copy of copies) {
    fs.mkdirSync(path.dirname(copy), { recursive: true });
    fs.copyFileSync(first, copy);
  }
}

// Every plotly figure the notebook shows (those in hidden tabs aside), then every widget output, one PNG each.
async function screenshotFigures(page, folder) {
  fs.rmSync(folder, { recursive: true, force: true });
  const files = [];
  const targets = [
    ['figure', page.locator(`${PANEL} .js-plotly-plot`)],
    ['widget', page.locator(`${PANEL} .jp-OutputArea-output:has(.widget-vbox, .widget-tab)`)],
  ];
  for (const [kind, all] of targets) {
    const count = await all.count();
    for (let i = 0; i < count; i++) {
      const target = all.nth(i);
      if (!(await target.isVisible())) continue;
      const file = path.join(folder, `${kind}-${String(i + 1).padStart(2, '0')}.png`);
      await screenshot(page, target, [file]);
      files.push(file);
    }
  }
  return files;
}

async function openNotebook(page, options, notebook) {
  await page.goto(`${options.url}/lab/tree/${notebook}?reset`, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.jupyterapp && window.jupyterapp.shell.currentWidget &&
    window.jupyterapp.shell.currentWidget.content, null, { timeout: options.timeoutMs });
  // The file browser and other side panels take width the widgets need.
  await page.evaluate(() => window.jupyterapp.shell.collapseLeft());
  await waitForKernel(page, options.timeoutMs);
  const cells = await runAllCells(page, options.timeoutMs);
  await page.locator(`${PANEL} .js-plotly-plot`).first().waitFor({ timeout: 60000 });
  return cells;
}

function widgetOutput(page, widget) {
  return page.locator(`${PANEL} .jp-OutputArea-output:has(.widget-vbox, .widget-tab)`).nth(widget);
}

async function shutDown(page) {
  // Shut the kernel down so the next notebook does not compete with it for the CPU.
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()).catch(() => {});
  await page.close();
}

async function launch(options) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'subclone-viz-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: options.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1500, height: 2400 }, // tall enough that each widget fits in one screenshot
  });
  const close = async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}

async function checkNotebook(context, options, { notebook, widget = 0, actions = [] }) {
  const start = Date.now();
  const name = path.basename(notebook, '.ipynb');
  const report = { notebook, ok: false };
  const page = await context.newPage();
  try {
    report.cells = await openNotebook(page, options, notebook);
    report.plots = await page.locator(`${PANEL} .js-plotly-plot`).count();
    const output = widgetOutput(page, widget);
    report.results = [];
    for (const action of actions) {
      report.results.push(await act(page, output, action, options.timeoutMs));
    }
    const files = [path.join(options.artifacts, `${name}.png`)];
    if (options.screenshots) files.push(path.join(options.screenshots, `${name}.png`));
    await screenshot(page, output, files);
    report.screenshot = files;
    report.figures = await screenshotFigures(page, path.join(options.artifacts, 'figures', name));
    report.ok = true;
  } catch (error) {
    report.error = String(error && error.message ? error.message : error).split('\n')[0];
    const failure = path.join(options.artifacts, `${name}-failure.png`);
    fs.mkdirSync(options.artifacts, { recursive: true });
    await page.screenshot({ path: failure }).catch(() => {});
    report.failure_screenshot = failure;
  } finally {
    await shutDown(page);
  }
  report.seconds = (Date.now() - start) / 1000;
  return report;
}

// The command line of every driver: parse the arguments, start one browser, run `perNotebook(context, options,
// run)` for each RUN in turn and print its report (a JSON line); exit 1 when a report is not ok, 2 on a crash.
function runEach(perNotebook) {
  const runAll = async () => {
    const options = parseArgs(process.argv.slice(2));
    const { context, close } = await launch(options);
    let failed = false;
    try {
      for (const run of options.notebooks) {
        const report = await perNotebook(context, options, run);
        failed = failed || !report.ok;
        console.log(JSON.stringify(report));
      }
    } finally {
      await close();
    }
    process.exit(failed ? 1 : 0);
  };
  runAll().catch((error) => {
    console.error(error);
    process.exit(2);
  });
}

module.exports = { runEach, openNotebook, widgetOutput, waitForKernel, shutDown, click };

if (require.main === module) runEach(checkNotebook);
