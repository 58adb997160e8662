// Screenshot a DA3 web page in a real browser (Debian's chromium, driven headless by playwright-core).
//
//   node scripts/web_screenshot.mjs gallery URL OUT.png
//   node scripts/web_screenshot.mjs gradio  URL OUT.png IMAGE...
//
// gallery: waits until the viewer shows a glb (#viewer[data-loaded]) and prints {"points": N}.
// gradio:  uploads the images, presses Reconstruct, waits for the 3D view's canvas and prints
//          {"canvas": true}. Needs: npm install --prefix build/web-tools playwright-core (scripts/setup_web.sh);
//          $CHROMIUM (default /usr/bin/chromium). Exit 1 with one line on failure.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "build", "web-tools", "package.json"));
const { chromium } = require("playwright-core");

const [mode, url, out, ...files] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 60000 });
  let report = {};
  if (mode === "gallery") {
    await page.waitForSelector("#viewer[data-loaded]", { timeout: 60000 });
    await page.waitForTimeout(1500); // a few frames
    report = { points: Number(await page.getAttribute("#viewer", "data-points")), loaded: await page.getAttribute("#viewer", "data-loaded") };
  } else if (mode === "gradio") {
    const input = page.locator("input[type=file]").first();
    await input.waitFor({ state: "attached", timeout: 60000 });
    await input.setInputFiles(files);
    await page.getByText(path.basename(files[0])).first().waitFor({ timeout: 60000 }); // uploaded
    await page.getByRole("button", { name: "Reconstruct" }).click();
    await page.getByText("views**").or(page.getByText(/\d+ views/)).first().waitFor({ timeout: 300000 });
    const canvas = page.locator("canvas").first();
    await canvas.waitFor({ state: "visible", timeout: 60000 });
    await canvas.scrollIntoViewIfNeeded();
    await page.waitForTimeout(4000); // the viewer loads and draws the glb
    report = { canvas: true };
  } else {
    throw new Error(`unknown mode ${mode}: gallery or gradio`);
  }
  await page.screenshot({ path: out, fullPage: true });
  console.log(JSON.stringify({ ...report, errors }));
} catch (e) {
  console.error(`web_screenshot: ${String(e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
