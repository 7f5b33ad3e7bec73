// "Use as input": one of a job's images into the current canvas's image-loading node, to go on from it by hand
// (generate, pick a result, img2img or upscale it). The bytes come from the host (the job's artifact URL, with
// the token), go into this ComfyUI's input folder through its public POST /upload/image (subfolder "comfymq",
// never overwriting: ComfyUI keeps the name for the same bytes and answers "name (1).png" for other bytes), and
// the node's image combo then names what ComfyUI answered, as after a click on the node's own upload button.
//
// The node: an image-loading node is one with an image upload on one of its combo inputs (LoadImage,
// LoadImageMask, any custom node declaring `image_upload`), told by its node definition, not its type name. The
// selected one; else the canvas's only one; else, with none, a new LoadImage at the canvas's center; else (several,
// none selected) nothing happens and the user is asked to select one. Nothing on the canvas changes when anything
// fails. This module gets ComfyUI's app and api passed in (only js/comfymq.js imports them).

/** @typedef {import("./client.js").MQClient} MQClient */
/** @typedef {import("./client.js").ApiLike} ApiLike */
/** @typedef {import("./images.js").ImageRef} ImageRef */
/** @typedef {import("./notifier.js").Toast} Toast */

/** Where uploads go in this ComfyUI's input folder (a combo then shows them as "comfymq/<name>"). */
export const UPLOAD_SUBFOLDER = "comfymq";
/** The node added when the canvas has no image-loading node. */
export const NEW_NODE_TYPE = "LoadImage";

/**
 * A LiteGraph widget, the parts used here. `callback` is what LiteGraph calls after the user changed the value;
 * ComfyUI's image upload widget hooks its preview there.
 * @typedef {{name: string, type?: string, value?: any, options?: {values?: any},
 *            callback?: (value: any, canvas?: any, node?: any) => void}} WidgetLike
 */
/**
 * A LiteGraph node, the parts used here. Its class carries the node definition ComfyUI registered it from
 * (`nodeData`, with the inputs as /object_info has them and the frontend's IMAGEUPLOAD input added).
 * @typedef {{id: number | string, type?: string, title?: string, widgets?: WidgetLike[], pos?: number[],
 *            size?: number[], graph?: any}} NodeLike
 */
/**
 * Where an image goes: a node and its image combo, a new node, or a question to the user (several candidates).
 * @typedef {{kind: "node", node: NodeLike, widget: WidgetLike} | {kind: "new"} |
 *           {kind: "ambiguous", count: number, among: "selected" | "canvas"}} Target
 */
/**
 * What "Use as input" needs of ComfyUI: its app (canvas, graph, workflow store) and api (fetchApi), the panel's
 * client (the token), and a way to make a node (LiteGraph.createNode).
 * @typedef {{app: {canvas?: any, rootGraph?: any, graph?: any, extensionManager?: any}, api: ApiLike,
 *            client: MQClient, createNode: (type: string) => NodeLike | null | undefined}} InputEnv
 */
/** @typedef {{name: string, subfolder: string, path: string}} Uploaded */

/**
 * The names of a node definition's inputs that have an image upload: the frontend's IMAGEUPLOAD input names its
 * combo (imageInputName); /object_info marks the combo itself with image_upload.
 * @param {any} nodeData
 * @returns {string[]}
 */
function imageUploadInputs(nodeData) {
  const input = nodeData && nodeData.input;
  /** @type {string[]} */
  const names = [];
  if (!input || typeof input !== "object") return names;
  for (const group of [input.required, input.optional]) {
    for (const [name, spec] of Object.entries(group || {})) {
      const opts = Array.isArray(spec) ? spec[1] : null;
      if (!opts || typeof opts !== "object") continue;
      if (typeof opts.imageInputName === "string") names.push(opts.imageInputName);
      else if (opts.image_upload === true) names.push(name);
    }
  }
  return names;
}

/**
 * The combo widget a node loads its image from, or null for a node that loads no image.
 * @param {NodeLike} node
 * @returns {WidgetLike | null}
 */
export function imageWidget(node) {
  if (!node || !Array.isArray(node.widgets)) return null;
  const nodeData = /** @type {any} */ (node.constructor)?.nodeData;
  for (const name of imageUploadInputs(nodeData)) {
    const w = node.widgets.find((x) => x && x.name === name);
    if (w && (w.type === "combo" || Array.isArray(w.options?.values))) return w;
  }
  return null;
}

/**
 * Which node an image goes to (see the top of this file).
 * @param {NodeLike[]} nodes  the canvas's nodes
 * @param {NodeLike[]} selected  the selected ones
 * @returns {Target}
 */
export function chooseTarget(nodes, selected) {
  /** @param {NodeLike[]} list */
  const loaders = (list) => {
    /** @type {{kind: "node", node: NodeLike, widget: WidgetLike}[]} */
    const out = [];
    for (const node of list) {
      const widget = imageWidget(node);
      if (widget) out.push({kind: "node", node, widget});
    }
    return out;
  };
  const chosen = loaders(selected);
  if (chosen.length === 1) return chosen[0];
  if (chosen.length > 1) return {kind: "ambiguous", count: chosen.length, among: "selected"};
  const all = loaders(nodes);
  if (all.length === 1) return all[0];
  if (!all.length) return {kind: "new"};
  return {kind: "ambiguous", count: all.length, among: "canvas"};
}

/**
 * What a LiteGraph canvas has selected: selectedItems (a Set of nodes, groups and reroutes; chooseTarget keeps the
 * nodes) where the frontend has it, else selected_nodes (id -> node; newer frontends warn that it is deprecated).
 * @param {any} canvas
 * @returns {NodeLike[]}
 */
export function selectedNodes(canvas) {
  if (!canvas) return [];
  const items = canvas.selectedItems;
  if (items && typeof items[Symbol.iterator] === "function") return [...items];
  const sel = canvas.selected_nodes;
  return sel && typeof sel === "object" ? Object.values(sel) : [];
}

/**
 * The graph point at the middle of the canvas's element (LiteGraph's DragAndScale: canvas = (graph + offset) * scale).
 * @param {any} canvas
 * @returns {[number, number]}
 */
export function canvasCenter(canvas) {
  const el = canvas && canvas.canvas;
  const w = (el && (el.clientWidth || el.width)) || 0;
  const hgt = (el && (el.clientHeight || el.height)) || 0;
  const scale = (canvas && canvas.ds && canvas.ds.scale) || 1;
  const offset = (canvas && canvas.ds && canvas.ds.offset) || [0, 0];
  return [w / 2 / scale - offset[0], hgt / 2 / scale - offset[1]];
}

/**
 * What ComfyUI's POST /upload/image answered ({name, subfolder, type}), as the combo value that names the file:
 * "<subfolder>/<name>" (ComfyUI's own upload widget builds it the same way).
 * @param {any} answer
 * @returns {Uploaded}
 */
export function uploadedFile(answer) {
  const name = answer && answer.name;
  if (typeof name !== "string" || !name || /[\\/]/.test(name)) {
    throw new Error(`ComfyUI's upload answer names no file (${JSON.stringify(answer)?.slice(0, 200)})`);
  }
  if (answer.type != null && answer.type !== "input") {
    throw new Error(`ComfyUI stored the upload in its ${answer.type} folder, not its input folder`);
  }
  const subfolder = typeof answer.subfolder === "string" ? answer.subfolder : "";
  return {name, subfolder, path: subfolder ? `${subfolder}/${name}` : name};
}

/**
 * Why ComfyUI refused an upload, for a toast.
 * @param {number} status
 * @param {string} body
 */
export function uploadRefusal(status, body) {
  if (status === 413) return "ComfyUI refused the upload: the file is larger than it accepts (--max-upload-size)";
  const text = body && !/^\s*</.test(body) ? body.trim().slice(0, 200) : "";
  return `ComfyUI refused the upload (HTTP ${status}${text ? `: ${text}` : ""})`;
}

/**
 * Uploads a file into this ComfyUI's input folder, under UPLOAD_SUBFOLDER, without overwriting.
 * @param {ApiLike} api
 * @param {Blob} file
 * @param {string} name
 * @returns {Promise<Uploaded>}
 */
export async function uploadToInput(api, file, name) {
  const body = new FormData();
  body.append("image", file, name);
  body.append("type", "input");
  body.append("subfolder", UPLOAD_SUBFOLDER);
  body.append("overwrite", "false");
  let res;
  let text;
  try {
    res = await api.fetchApi("/upload/image", {method: "POST", body});
    text = await res.text();
  } catch (e) {
    throw new Error(`ComfyUI did not answer the upload (${e instanceof Error ? e.message : e})`);
  }
  if (!res.ok) throw new Error(uploadRefusal(res.status, text));
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    throw new Error(`ComfyUI's upload answer is not JSON (${text.slice(0, 100)})`);
  }
  return uploadedFile(answer);
}

/**
 * Points a node's image combo at an uploaded file, as ComfyUI's upload widget does after an upload: the file
 * joins the combo's choices, the value names it, the widget's callback (where the frontend shows the image on
 * the node) runs, and the canvas redraws.
 * @param {NodeLike} node
 * @param {WidgetLike} widget
 * @param {string} path
 * @param {any} [canvas]
 */
export function setImage(node, widget, path, canvas) {
  const values = widget.options && widget.options.values;
  if (Array.isArray(values) && !values.includes(path)) values.push(path);
  widget.value = path;
  widget.callback?.(widget.value, canvas, node);
  const graph = node.graph;
  if (graph && typeof graph.setDirtyCanvas === "function") graph.setDirtyCanvas(true, true);
}

/** @param {NodeLike} node */
function nodeTitle(node) {
  return node.title || node.type || `node #${node.id}`;
}

/**
 * Whether a node is still in a graph (the user may delete it while the image is on its way).
 * @param {any} graph
 * @param {NodeLike} node
 */
function inGraph(graph, node) {
  if (!graph) return false;
  if (typeof graph.getNodeById === "function") return graph.getNodeById(node.id) === node;
  const nodes = graph.nodes ?? graph._nodes;
  return Array.isArray(nodes) && nodes.includes(node);
}

/**
 * "Use as input" for one image (see the top of this file). Resolves to the toast that says what happened
 * (loaded; or, with several image-loading nodes and none selected, which one?); rejects with an Error fit for a
 * toast when the image could not be fetched or uploaded, or the node went away, with the canvas unchanged.
 * @param {InputEnv} env
 * @param {ImageRef} ref
 * @returns {Promise<Toast>}
 */
export async function useAsInput(env, ref) {
  const canvas = env.app.canvas;
  const graph = (canvas && canvas.graph) ?? env.app.rootGraph ?? env.app.graph;
  if (!graph) throw new Error("there is no canvas to load the image into");
  const nodes = /** @type {NodeLike[]} */ (graph.nodes ?? graph._nodes ?? []);
  const target = chooseTarget(nodes, selectedNodes(canvas));
  if (target.kind === "ambiguous") {
    return {
      severity: "warn",
      summary: `Select the node to load ${ref.name} into`,
      detail: target.among === "selected"
        ? `${target.count} of the selected nodes load images: select only the one to load it into, then use the image again.`
        : `The canvas has ${target.count} nodes that load images (such as Load Image): select the one to load it into, ` +
          "then use the image again.",
      life: 8000,
    };
  }
  const file = await env.client.fetchFile(ref.url);
  const uploaded = await uploadToInput(env.api, file, uploadName(ref.name));

  let node;
  let widget;
  if (target.kind === "node") {
    ({node, widget} = target);
    if (!inGraph(graph, node)) throw new Error(`${nodeTitle(node)} is no longer on the canvas`);
  } else {
    node = env.createNode(NEW_NODE_TYPE);
    widget = node ? imageWidget(node) : null;
    if (!node || !widget) throw new Error(`this ComfyUI has no ${NEW_NODE_TYPE} node with an image upload to add`);
    const size = node.size || [0, 0];
    const [x, y] = canvasCenter(canvas);
    node.pos = [Math.round(x - size[0] / 2), Math.round(y - size[1] / 2)];
    graph.add(node);
  }
  setImage(node, widget, uploaded.path, canvas);
  markChanged(env.app);
  return {
    severity: "success",
    summary: `Loaded ${uploaded.name} into ${nodeTitle(node)}`,
    detail: `${uploaded.path} in this ComfyUI's input folder` + (target.kind === "new" ? " (a new node at the canvas's center)" : ""),
    life: 4000,
  };
}

/**
 * The file name an upload goes by: the image's own name, without any folder part.
 * @param {string} name
 */
export function uploadName(name) {
  const base = String(name || "").split(/[\\/]/).pop() || "";
  return base && base !== "." && base !== ".." ? base : "image.png";
}

/**
 * Lets the workflow's change tracker see the change now (undo, the tab's modified mark) rather than at the user's
 * next click or key.
 * @param {InputEnv["app"]} app
 */
function markChanged(app) {
  try {
    const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
    // captureCanvasState is checkState's newer name (frontends that have both warn that checkState is deprecated)
    if (typeof tracker?.captureCanvasState === "function") tracker.captureCanvasState();
    else tracker?.checkState?.();
  } catch {
    // the change tracker is a convenience: the node has its image either way
  }
}
