// Image URLs for a job's results: the plugin's artifact route (the host's own copy of each file, so it works
// for jobs run on any worker), or ComfyUI's /view for outputs a job recorded without artifacts. With an access
// token set, images are fetched with the Authorization header and shown from blob: URLs (an <img> cannot send
// headers); those are revoked by dispose().

import {imageArtifacts} from "./model.js";

/** @typedef {import("./model.js").Job} Job */
/** @typedef {import("./client.js").MQClient} MQClient */
/** @typedef {{url: string, name: string, artifact: boolean}} ImageRef */

/**
 * The images of a job, artifacts first; /view URLs from its outputs only when it recorded no artifacts.
 * @param {Job} job
 * @returns {ImageRef[]}
 */
export function jobImages(job) {
  const arts = imageArtifacts(job);
  if (arts.length) return arts.map((a) => ({url: a.url, name: a.path.split("/").pop() || a.path, artifact: true}));
  /** @type {ImageRef[]} */
  const out = [];
  for (const node of Object.values(job.outputs || {})) {
    for (const img of (node && node.images) || []) {
      if (!img || !img.filename) continue;
      const q = new URLSearchParams({filename: img.filename, subfolder: img.subfolder || "", type: img.type || "output"});
      out.push({url: "/view?" + q.toString(), name: img.filename, artifact: false});
    }
  }
  return out;
}

export class ImageLoader {
  /** @param {MQClient} client */
  constructor(client) {
    this.client = client;
    /** @type {Map<string, Promise<string>>} */
    this.blobs = new Map();
  }

  /**
   * Points an <img> at a job image.
   * @param {HTMLImageElement} img
   * @param {ImageRef} ref
   */
  show(img, ref) {
    const url = this.client.resolve(ref.url);
    if (!ref.artifact || !this.client.token()) {
      img.src = url;
      return;
    }
    let p = this.blobs.get(url);
    if (!p) {
      p = fetch(url, {headers: {Authorization: "Bearer " + this.client.token()}})
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error("HTTP " + r.status))))
        .then((b) => URL.createObjectURL(b));
      p.catch(() => this.blobs.delete(url));
      this.blobs.set(url, p);
    }
    p.then((src) => {
      img.src = src;
    }, () => img.dispatchEvent(new Event("error")));
  }

  /**
   * The URL to open in a new tab (full size).
   * @param {ImageRef} ref
   */
  href(ref) {
    return this.client.resolve(ref.url);
  }

  dispose() {
    for (const p of this.blobs.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
    this.blobs.clear();
  }
}
