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
   * A URL the browser can load without headers: the image's own URL, or (an artifact behind a token) a blob:
   * URL of it, fetched once with the Authorization header and shared by every view of it.
   * @param {ImageRef} ref
   * @returns {Promise<string>}
   */
  url(ref) {
    const url = this.client.resolve(ref.url);
    if (!ref.artifact || !this.client.token()) return Promise.resolve(url);
    let p = this.blobs.get(url);
    if (!p) {
      p = fetch(url, {headers: {Authorization: "Bearer " + this.client.token()}})
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error("HTTP " + r.status))))
        .then((b) => URL.createObjectURL(b));
      p.catch(() => this.blobs.delete(url));
      this.blobs.set(url, p);
    }
    return p;
  }

  /**
   * Points an <img> at a job image.
   * @param {HTMLImageElement} img
   * @param {ImageRef} ref
   */
  show(img, ref) {
    this.url(ref).then((src) => {
      img.src = src;
    }, () => img.dispatchEvent(new Event("error")));
  }

  /**
   * Points a link at the original file (opened in a new tab, which sends no Authorization header: behind a
   * token it gets the blob: URL).
   * @param {HTMLAnchorElement} a
   * @param {ImageRef} ref
   */
  link(a, ref) {
    a.removeAttribute("href");
    this.url(ref).then((href) => {
      a.href = href;
      if (href.startsWith("blob:")) a.download = ref.name;
      else a.removeAttribute("download");
    }, () => {});
  }

  dispose() {
    for (const p of this.blobs.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
    this.blobs.clear();
  }
}
