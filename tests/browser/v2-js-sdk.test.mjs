// The Comfy API v2 driven by Comfy-Org's official TypeScript SDK (npm @comfyorg/sdk, pinned in package.json), as a
// Node program would, against the plugin inside the stand-in ComfyUI (role both: the host and its local worker),
// base URL http://<comfyui>/comfymq: an image uploaded as an asset (hashed by the SDK, deduplicated by the host)
// set as a LoadImage input, run to the end, its output downloaded and equal to the picture inverted; the live
// events typed by the SDK; an idempotent resubmit; a cancel; the workflow it ran. (No browser: Node and the SDK.)

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {mkdtempSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import path from "node:path";
import {deflateSync, inflateSync} from "node:zlib";
import {startComfy} from "./harness.mjs";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {any} */
let client;

/** A w x h RGB PNG of the given pixels (no filter), and a reader for the same simple form. */
function png(w, h, pixels) {
  const crc = (buf) => {
    let c = ~0;
    for (const b of buf) {
      c ^= b;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
    }
    return ~c >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const rows = [];
  for (let y = 0; y < h; y++) rows.push(Buffer.from([0]), pixels.subarray(y * w * 3, (y + 1) * w * 3));
  return Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows))), chunk("IEND", Buffer.alloc(0))]);
}

/** The RGB pixels of a PNG with filter-0 or filter-1/2 rows as the stand-in writes (8-bit RGB). */
function pixelsOf(buf) {
  let off = 8;
  let w = 0;
  let h = 0;
  const idat = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("ascii", off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") {
      w = data.readUInt32BE(0);
      h = data.readUInt32BE(4);
    } else if (type === "IDAT") idat.push(data);
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = w * 3;
  const out = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    const f = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x];
      const left = x >= 3 ? out[y * stride + x - 3] : 0;
      const up = y > 0 ? out[(y - 1) * stride + x] : 0;
      out[y * stride + x] = (v + (f === 1 ? left : f === 2 ? up : 0)) & 255;
    }
  }
  return {w, h, pixels: out};
}

describe("the Comfy API v2 with the official TypeScript SDK (@comfyorg/sdk)", () => {
  before(async () => {
    comfy = await startComfy({stepDelay: 0.02});
    const {Comfy} = await import("@comfyorg/sdk");
    process.env.COMFY_BASE_URL = comfy.url + "/comfymq";  // (the SDK's way to name a deployment; no key: none set)
    delete process.env.COMFY_API_KEY;
    client = new Comfy();
  });

  after(async () => {
    await comfy?.stop();
  });

  it("uploads an image, runs it, streams typed events, downloads the output", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "comfymq-jssdk-"));
    const pixels = Buffer.alloc(5 * 4 * 3);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 37) & 255;
    const file = path.join(dir, "photo.png");
    writeFileSync(file, png(5, 4, pixels));
    const wf = client.workflows.fromJson({
      "10": {class_type: "LoadImage", inputs: {image: "placeholder.png"}},
      "11": {class_type: "ImageInvert", inputs: {image: ["10", 0]}},
      "13": {class_type: "SaveImage", inputs: {images: ["11", 0], filename_prefix: "jssdk"}},
    });
    wf.setInput("10", "image", client.assets.fromFile(file));
    const job = await client.submit(wf, {metadata: {client: "node"}});
    const kinds = new Set();
    for await (const ev of job.events()) kinds.add(ev.kind);
    assert.ok(kinds.has("statusChange") && kinds.has("outputReady") && kinds.has("log"), [...kinds].join(","));
    await job.result();
    assert.equal(job.status, "succeeded");
    const [out] = job.getOutputs("13");
    const bytes = Buffer.from(await out.toBytes());
    const got = pixelsOf(bytes);
    assert.deepEqual([got.w, got.h], [5, 4]);
    assert.deepEqual([...got.pixels], [...pixels].map((b) => 255 - b), "the output is the uploaded picture inverted");
    const ran = await job.getWorkflow();
    assert.equal(ran.format, "api");
    assert.equal(ran.workflow["11"].class_type, "ImageInvert");
  });

  it("an idempotent resubmit is the same job; a cancel ends a waiting one", async () => {
    const slow = client.workflows.fromJson({"1": {class_type: "SlowNode", inputs: {seconds: 30, tag: "jssdk"}}});
    const a = await client.submit(slow, {idempotencyKey: "js-key-1"});
    const b = await client.submit(slow, {idempotencyKey: "js-key-1"});
    assert.equal(a.id, b.id);
    await a.cancel();
    assert.equal(a.status, "canceled");
    const again = await client.jobs.get(a.id);
    assert.equal(again.status, "canceled");
  });
});
