// Opens one app-mode page (a notebook rendered by Voilà, code hidden) in Debian's headless Chromium via
// playwright-core, waits until Voilà has run every cell and the widgets have drawn, and reports what the page
// shows. Called by tests/integration/test_app.py.
//
// Usage: node run_app.js --url http://127.0.0.1:PORT/voila/render/01_x.ipynb --screenshot FILE \
//            [--chromium /usr/bin/chromium] [--timeout-ms 480000]
// Prints one JSON line {ok, seconds, plots, widgets, code_inputs, errors, text, console_errors, screenshot, error}
// (screenshot: the top of the page, FILE, and its first widget, FILE with -widget before .png):
// plots counts rendered plotly figures, widgets rendered ipywidgets views, code_inputs any code input left on
// the page, errors the text of every error or stderr output; text is the page's visible text. Exits 1 when the
// page did not finish rendering.

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
const WIDGETS = '.jp-OutputArea-output .widget-vbox, .jp-OutputArea-output .widget-tab';
const CODE_INPUTS = '.jp-CodeCell:not(.jp-mod-noInput), .jp-InputArea-editor, .jp-InputPrompt, .CodeMirror, .cm-editor';
// Error outputs (Voilà draws a failed cell's error as stderr text) and widgets that failed to draw.
const ERRORS = '[data-mime-type="application/vnd.jupyter.stderr"], .jp-RenderedText.jp-mod-error';

function parseArgs(argv) {
  const options = { chromium: '/usr/bin/chromium', timeoutMs: 480000 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => argv[++i];
    if (flag === '--url') options.url = value();
    else if (flag === '--screenshot') options.screenshot = value();
    else if (flag === '--chromium') options.chromium = value();
    else if (flag === '--timeout-ms') options.timeoutMs = Number(value());
    else throw new Error(`unknown option ${flag}`);
  }
  if (!options.url || !options.screenshot) throw new Error('need --url and --screenshot');
  return options;
}

// Voilà streams the page while the kernel runs the cells, behind its "Executing i of n" spinner, and removes
// the spinner once every cell has run; the widgets then draw from the live kernel.
async function waitForPage(page, options) {
  await page.goto(options.url, { waitUntil: 'load', timeout: options.timeoutMs });
  await page.waitForFunction(() => !document.getElementById('loading'), null, { timeout: options.timeoutMs });
  await page.locator('.js-plotly-plot').first().waitFor({ timeout: 120000 });
  await page.locator(WIDGETS).first().waitFor({ timeout: 120000 });
  await page.waitForTimeout(1000); // let plotly finish its transitions
}

async function describe(page) {
  return {
    plots: await page.locator('.js-plotly-plot').count(),
    widgets: await page.locator(WIDGETS).count(),
    code_inputs: await page.locator(CODE_INPUTS).count(),
    errors: await page.locator(ERRORS).allInnerTexts(),
    text: await page.locator('body').innerText(),
  };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'subclone-viz-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: options.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 2400 }, // the first figure and the first widget in one screenshot each
  });
  const start = Date.now();
  const report = { ok: false, console_errors: [] };
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') report.console_errors.push(message.text().split('\n')[0]);
  });
  try {
    await waitForPage(page, options);
    Object.assign(report, await describe(page));
    fs.mkdirSync(path.dirname(options.screenshot), { recursive: true });
    await page.screenshot({ path: options.screenshot });
    const widget = page.locator(WIDGETS).first();
    await widget.scrollIntoViewIfNeeded();
    await page.waitForTimeout(500);
    const widgetShot = options.screenshot.replace(/\.png$/, '-widget.png');
    await widget.screenshot({ path: widgetShot });
    report.screenshot = [options.screenshot, widgetShot];
    report.ok = true;
  } catch (error) {
    report.error = String(error && error.message ? error.message : error).split('\n')[0];
    const failure = options.screenshot.replace(/\.png$/, '-failure.png');
    fs.mkdirSync(path.dirname(failure), { recursive: true });
    await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
    report.failure_screenshot = failure;
    report.text = await page.locator('body').innerText().catch(() => '');
  } finally {
    await page.close();
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  report.seconds = (Date.now() - start) / 1000;
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
