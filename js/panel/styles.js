// The panel's stylesheet: ComfyUI's theme variables only (so dark, light and custom palettes all apply), with
// fallbacks for older palettes. Added to the document once, when the panel first renders.

export const ROW_HEIGHT = 66;
const STYLE_ID = "comfymq-styles";

const CSS = `
.comfymq-panel {
  --mq-fg: var(--fg-color, #ddd);
  --mq-muted: var(--descrip-text, #999);
  --mq-border: var(--border-color, #4e4e4e);
  --mq-input: var(--comfy-input-bg, #222);
  --mq-input-fg: var(--input-text, var(--mq-fg));
  --mq-bg2: var(--comfy-menu-secondary-bg, var(--comfy-input-bg, #303030));
  --mq-primary: var(--p-primary-color, #3b82f6);
  --mq-primary-fg: var(--p-primary-contrast-color, #fff);
  --mq-green: var(--p-green-500, #22c55e);
  --mq-amber: var(--p-amber-500, #f59e0b);
  --mq-red: var(--error-text, var(--p-red-500, #ef4444));
  --mq-hover: color-mix(in srgb, var(--mq-fg) 7%, transparent);
  display: flex; flex-direction: column; height: 100%; min-height: 0; box-sizing: border-box;
  color: var(--mq-fg); font-size: 13px; line-height: 1.35;
}
.comfymq-panel *, .comfymq-panel *::before, .comfymq-panel *::after { box-sizing: border-box; }
.comfymq-panel [hidden] { display: none !important; }
.comfymq-panel .mq-muted { color: var(--mq-muted); }
.comfymq-panel .mq-error-text { color: var(--mq-red); }
.comfymq-panel .mq-mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.comfymq-panel .mq-header { display: flex; align-items: center; gap: 8px; padding: 8px 10px 6px; }
.comfymq-panel .mq-title { font-weight: 600; font-size: 14px; letter-spacing: .02em; margin-right: auto; display: flex;
  align-items: center; gap: 6px; }
.comfymq-panel .mq-conn { width: 8px; height: 8px; border-radius: 50%; background: var(--mq-green); flex: none; }
.comfymq-panel .mq-conn.mq-off { background: var(--mq-red); }
.comfymq-panel .mq-tabs { display: flex; gap: 0; padding: 0 10px; border-bottom: 1px solid var(--mq-border); }
.comfymq-panel .mq-tab { background: none; border: none; border-bottom: 2px solid transparent; color: var(--mq-muted);
  padding: 6px 10px; font: inherit; cursor: pointer; display: inline-flex; gap: 6px; align-items: center; }
.comfymq-panel .mq-tab[aria-selected="true"] { color: var(--mq-fg); border-bottom-color: var(--mq-primary); }
.comfymq-panel .mq-tab:hover { color: var(--mq-fg); }
.comfymq-panel .mq-tab:focus-visible { outline: 2px solid var(--mq-primary); outline-offset: -2px; border-radius: 4px; }
.comfymq-panel .mq-view { display: flex; flex-direction: column; flex: 1; min-height: 0; }
.comfymq-panel .mq-view[hidden] { display: none; }
.comfymq-panel .mq-section { padding: 8px 10px; border-bottom: 1px solid var(--mq-border); }
.comfymq-panel .mq-btn { display: inline-flex; align-items: center; justify-content: center; gap: 6px;
  background: var(--mq-input); color: var(--mq-input-fg); border: 1px solid var(--mq-border); border-radius: 6px;
  padding: 4px 9px; font: inherit; font-size: 12px; cursor: pointer; white-space: nowrap; min-height: 26px; }
.comfymq-panel .mq-btn:hover:not(:disabled) { border-color: var(--mq-primary); }
.comfymq-panel .mq-btn:focus-visible, .comfymq-panel input:focus-visible, .comfymq-panel select:focus-visible,
.comfymq-panel .mq-thumb:focus-visible, .comfymq-panel summary:focus-visible {
  outline: 2px solid var(--mq-primary); outline-offset: 1px; }
.comfymq-panel .mq-btn:disabled { opacity: .5; cursor: default; }
.comfymq-panel .mq-btn .pi { font-size: 12px; }
.comfymq-panel .mq-icon-btn { padding: 4px 6px; min-width: 26px; }
.comfymq-panel .mq-btn.mq-primary { background: var(--mq-primary); color: var(--mq-primary-fg); border-color: transparent;
  font-weight: 600; }
.comfymq-panel .mq-btn.mq-primary:hover:not(:disabled) { filter: brightness(1.08); border-color: transparent; }
.comfymq-panel .mq-btn.mq-danger:hover:not(:disabled) { border-color: var(--mq-red); color: var(--mq-red); }
.comfymq-panel .mq-btn[aria-pressed="true"] { border-color: var(--mq-primary);
  background: color-mix(in srgb, var(--mq-primary) 18%, var(--mq-input)); }
.comfymq-panel input, .comfymq-panel select { background: var(--mq-input); color: var(--mq-input-fg);
  border: 1px solid var(--mq-border); border-radius: 6px; padding: 3px 6px; font: inherit; font-size: 12px;
  min-height: 26px; min-width: 0; }
.comfymq-panel input[aria-invalid="true"] { border-color: var(--mq-red); }
.comfymq-panel label { color: var(--mq-muted); font-size: 12px; }
.comfymq-panel .mq-form { display: flex; gap: 8px; align-items: center; }
.comfymq-panel .mq-templates { overflow-y: auto; }
.comfymq-panel .mq-tpl-list { display: flex; flex-direction: column; gap: 4px; padding: 8px 10px; }
.comfymq-panel .mq-tpl { display: flex; gap: 8px; align-items: center; text-align: left; background: var(--mq-input);
  color: var(--mq-input-fg); border: 1px solid var(--mq-border); border-radius: 6px; padding: 5px 8px; font: inherit;
  font-size: 12px; cursor: pointer; min-width: 0; }
.comfymq-panel .mq-tpl[aria-pressed="true"], .comfymq-panel .mq-tpl:hover { border-color: var(--mq-primary); }
.comfymq-panel .mq-tpl .mq-grow { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.comfymq-panel .mq-tpl-field { display: grid; grid-template-columns: minmax(90px, 35%) minmax(0, 1fr); gap: 2px 8px;
  align-items: center; margin: 5px 0; }
.comfymq-panel .mq-tpl-field .mq-hint { grid-column: 2; font-size: 11px; }
.comfymq-panel .mq-tpl-field textarea { background: var(--mq-input); color: var(--mq-input-fg); font: inherit;
  font-size: 12px; border: 1px solid var(--mq-border); border-radius: 6px; padding: 3px 6px; resize: vertical; }
.comfymq-panel .mq-tpl-count { width: 70px; }
.comfymq-panel .mq-tpl-candidates li { display: grid; grid-template-columns: minmax(0, 1fr) minmax(80px, 40%); gap: 6px;
  align-items: center; }
.comfymq-panel .mq-tpl-candidates label { display: flex; align-items: center; gap: 6px; min-width: 0; overflow: hidden;
  white-space: nowrap; text-overflow: ellipsis; color: var(--mq-fg); }
.comfymq-panel .mq-templates input[type=checkbox] { flex: none; width: 14px; height: 14px; min-height: 0; margin: 0; }
.comfymq-panel .mq-owner { flex: none; max-width: 90px; display: inline-flex; align-items: center; gap: 2px; }
.comfymq-panel .mq-owner .pi { font-size: 10px; }
.comfymq-panel .mq-wh-delivered { --mq-state: var(--mq-green); }
.comfymq-panel .mq-wh-retrying, .comfymq-panel .mq-wh-pending { --mq-state: var(--mq-amber); }
.comfymq-panel .mq-wh-failed { --mq-state: var(--mq-red); }
.comfymq-panel .mq-field { display: flex; align-items: center; gap: 5px; flex: 1 1 0; min-width: 0; }
.comfymq-panel .mq-field input[type=number] { width: 100%; min-width: 40px; }
.comfymq-panel .mq-form .mq-queue { flex: none; padding: 4px 14px; }
.comfymq-panel details.mq-sweep { margin-top: 6px; }
.comfymq-panel details.mq-sweep > summary { cursor: pointer; color: var(--mq-muted); font-size: 12px; padding: 2px 0;
  border-radius: 4px; }
.comfymq-panel .mq-axis { display: grid; grid-template-columns: minmax(0, 1.3fr) minmax(0, 1fr) auto; gap: 4px;
  margin-top: 6px; }
.comfymq-panel .mq-axis .mq-values { grid-column: 1 / 3; }
.comfymq-panel .mq-axis .mq-hint { grid-column: 1 / -1; font-size: 11px; }
.comfymq-panel .mq-sweep-foot { display: flex; gap: 8px; align-items: center; margin-top: 6px; font-size: 12px; }
.comfymq-panel .mq-counts { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }
.comfymq-panel .mq-chip { gap: 5px; padding: 2px 8px; font-size: 12px; min-height: 24px; }
.comfymq-panel .mq-chip b { font-weight: 600; font-variant-numeric: tabular-nums; }
.comfymq-panel .mq-dot { width: 8px; height: 8px; border-radius: 50%; background: var(--mq-state, var(--mq-muted));
  flex: none; display: inline-block; }
.comfymq-panel .mq-toolbar { display: flex; gap: 6px; align-items: center; margin-top: 6px; flex-wrap: wrap; }
.comfymq-panel .mq-toolbar .mq-grow { flex: 1; }
.comfymq-panel .mq-banner { padding: 6px 10px; font-size: 12px; border-bottom: 1px solid var(--mq-border);
  background: color-mix(in srgb, var(--mq-amber) 16%, transparent); display: flex; gap: 8px; align-items: center; }
.comfymq-panel .mq-banner.mq-error { background: color-mix(in srgb, var(--mq-red) 16%, transparent); }
.comfymq-panel .mq-state-pending { --mq-state: var(--mq-amber); }
.comfymq-panel .mq-state-running { --mq-state: var(--mq-primary); }
.comfymq-panel .mq-state-succeeded { --mq-state: var(--mq-green); }
.comfymq-panel .mq-state-failed { --mq-state: var(--mq-red); }
.comfymq-panel .mq-state-cancelled { --mq-state: var(--mq-muted); }
.comfymq-panel .mq-pill { display: inline-flex; align-items: center; gap: 4px; font-size: 11px; padding: 0 6px;
  border-radius: 999px; border: 1px solid var(--mq-state, var(--mq-border)); line-height: 16px;
  background: color-mix(in srgb, var(--mq-state, transparent) 16%, transparent); white-space: nowrap; }
.comfymq-panel .mq-tag { font-size: 11px; color: var(--mq-muted); border: 1px solid var(--mq-border); border-radius: 4px;
  padding: 0 4px; line-height: 16px; white-space: nowrap; max-width: 140px; overflow: hidden; text-overflow: ellipsis; }
.comfymq-panel .mq-batches { display: flex; flex-direction: column; gap: 6px; }
.comfymq-panel .mq-batch { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 2px 8px; align-items: center; }
.comfymq-panel .mq-batch-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 12px; }
.comfymq-panel .mq-batch .mq-progress { grid-column: 1; }
.comfymq-panel .mq-batch-actions { grid-row: 1 / 3; grid-column: 2; display: flex; gap: 4px; }
.comfymq-panel .mq-progress { height: 6px; border-radius: 3px; overflow: hidden; display: flex;
  background: color-mix(in srgb, var(--mq-fg) 14%, transparent); }
.comfymq-panel .mq-progress > span { height: 100%; background: var(--mq-primary); transition: width .25s ease; }
.comfymq-panel .mq-progress > .mq-seg-succeeded { background: var(--mq-green); }
.comfymq-panel .mq-progress > .mq-seg-failed { background: var(--mq-red); }
.comfymq-panel .mq-progress > .mq-seg-cancelled { background: var(--mq-muted); }
.comfymq-panel .mq-progress > .mq-seg-running { background: var(--mq-primary); }
.comfymq-panel .mq-list { flex: 1; min-height: 80px; overflow-y: auto; position: relative; outline: none; }
.comfymq-panel .mq-list:focus-visible { box-shadow: inset 0 0 0 2px var(--mq-primary); }
.comfymq-panel .mq-spacer { position: relative; width: 100%; }
.comfymq-panel .mq-empty { padding: 24px 12px; text-align: center; color: var(--mq-muted); }
.comfymq-panel .mq-row { position: absolute; left: 0; right: 0; height: ${ROW_HEIGHT}px; display: grid;
  grid-template-columns: 48px minmax(0, 1fr) auto; gap: 8px; align-items: center; padding: 6px 8px 6px 10px;
  border-bottom: 1px solid color-mix(in srgb, var(--mq-border) 60%, transparent); cursor: default; }
.comfymq-panel .mq-row:hover { background: var(--mq-hover); }
.comfymq-panel .mq-row.mq-selected { background: color-mix(in srgb, var(--mq-primary) 14%, transparent); }
.comfymq-panel .mq-row:focus-visible { outline: 2px solid var(--mq-primary); outline-offset: -2px; }
.comfymq-panel .mq-row-main { min-width: 0; display: flex; flex-direction: column; gap: 3px; }
.comfymq-panel .mq-line { display: flex; align-items: center; gap: 6px; min-width: 0; white-space: nowrap; }
.comfymq-panel .mq-row-main .mq-line { overflow: hidden; }
.comfymq-panel .mq-line > .mq-ellipsis { overflow: hidden; text-overflow: ellipsis; min-width: 0; }
.comfymq-panel .mq-name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; min-width: 0; }
.comfymq-panel .mq-meta { font-size: 11px; color: var(--mq-muted); }
.comfymq-panel .mq-index { font-size: 12px; color: var(--mq-muted); flex: none; font-variant-numeric: tabular-nums; }
.comfymq-panel .mq-line .mq-progress { flex: 1; min-width: 40px; }
.comfymq-panel .mq-row-actions { display: grid; grid-template-columns: repeat(2, 26px); gap: 3px; align-content: center; }
.comfymq-panel .mq-row-actions .mq-icon-btn { min-width: 26px; width: 26px; height: 24px; min-height: 24px; padding: 0; }
.comfymq-panel .mq-worker-name { max-width: 45%; flex: none; }
.comfymq-panel .mq-thumb { width: 48px; height: 48px; border-radius: 6px; overflow: hidden; padding: 0;
  border: 1px solid var(--mq-border); background: var(--mq-input); display: flex; align-items: center;
  justify-content: center; color: var(--mq-state, var(--mq-muted)); font-size: 18px; }
.comfymq-panel button.mq-thumb { cursor: zoom-in; }
.comfymq-panel .mq-thumb img { width: 100%; height: 100%; object-fit: cover; display: block; }
.comfymq-panel .mq-more { position: absolute; left: 0; right: 0; text-align: center; padding: 8px; }
.comfymq-panel .mq-details { border-top: 1px solid var(--mq-border); max-height: 50%; overflow-y: auto; padding: 8px 10px 12px;
  background: var(--mq-bg2); flex: none; }
.comfymq-panel .mq-details h3 { font-size: 13px; margin: 0; display: flex; align-items: center; gap: 6px; min-width: 0; }
.comfymq-panel .mq-details h4 { font-size: 12px; margin: 10px 0 4px; color: var(--mq-muted); font-weight: 600; }
.comfymq-panel .mq-kv { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 10px; font-size: 12px;
  margin-top: 6px; }
.comfymq-panel .mq-kv dt { color: var(--mq-muted); }
.comfymq-panel .mq-kv dd { margin: 0; overflow-wrap: anywhere; }
.comfymq-panel .mq-errbox { border: 1px solid var(--mq-red); border-radius: 6px; padding: 6px 8px; font-size: 12px;
  background: color-mix(in srgb, var(--mq-red) 10%, transparent); overflow-wrap: anywhere; }
.comfymq-panel .mq-errbox ul { margin: 4px 0 0; padding-left: 16px; }
.comfymq-panel .mq-errbox pre { white-space: pre-wrap; max-height: 200px; overflow: auto; font-size: 11px; margin: 4px 0 0; }
.comfymq-panel .mq-waitbox { border: 1px solid var(--mq-amber); border-radius: 6px; padding: 6px 8px; font-size: 12px;
  background: color-mix(in srgb, var(--mq-amber) 12%, transparent); }
.comfymq-panel .mq-waitbox ul { margin: 4px 0 0; padding-left: 16px; }
.comfymq-panel .mq-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)); gap: 6px; }
.comfymq-panel .mq-gallery .mq-thumb { width: 100%; height: auto; aspect-ratio: 1; }
.comfymq-panel .mq-result { display: flex; flex-direction: column; gap: 3px; min-width: 0; }
.comfymq-panel .mq-use-input { font-size: 11px; gap: 4px; padding: 2px 4px; white-space: nowrap; overflow: hidden; }
.comfymq-panel .mq-actions { display: flex; gap: 6px; flex-wrap: wrap; margin-top: 8px; }
.comfymq-panel .mq-workers { flex: 1; overflow-y: auto; padding: 8px 10px; display: flex; flex-direction: column; gap: 8px; }
.comfymq-panel .mq-worker { border: 1px solid var(--mq-border); border-radius: 8px; padding: 8px 10px;
  display: flex; flex-direction: column; gap: 5px; background: var(--mq-bg2); }
.comfymq-panel .mq-worker.mq-offline { opacity: .7; }
.comfymq-panel .mq-worker-head { display: flex; align-items: center; gap: 6px; min-width: 0; }
.comfymq-panel .mq-worker-head .mq-name { margin-right: auto; }
.comfymq-panel .mq-online { --mq-state: var(--mq-green); }
.comfymq-panel .mq-offline-dot { --mq-state: var(--mq-muted); }
.comfymq-panel .mq-draining { --mq-state: var(--mq-amber); }
.comfymq-panel .mq-facts { display: flex; flex-wrap: wrap; gap: 4px 10px; font-size: 11px; color: var(--mq-muted); }
.comfymq-panel .mq-short-id { font-size: 11px; color: var(--mq-muted); flex: none; }
.comfymq-panel .mq-refused { --mq-state: var(--mq-red); }
.comfymq-panel .mq-worker-role { overflow-y: auto; }
.comfymq-panel .mq-worker-intro { margin: 0 0 8px; font-size: 12px; }
.comfymq-panel .mq-waitbox.mq-refusal { border-color: var(--mq-red); background: color-mix(in srgb, var(--mq-red) 10%, transparent);
  overflow-wrap: anywhere; }
.comfymq-panel .mq-kv a { color: var(--mq-primary); }
.comfymq-panel .mq-strong { font-weight: 600; font-size: 12px; }
.comfymq-panel .mq-pairing { flex: none; max-height: 45%; overflow-y: auto; border-top: 1px solid var(--mq-border);
  display: flex; flex-direction: column; gap: 6px; }
.comfymq-panel .mq-code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 28px;
  letter-spacing: .12em; font-weight: 700; margin: 4px 0; user-select: all; }
.comfymq-panel .mq-paired, .comfymq-panel .mq-found { display: flex; flex-direction: column; gap: 4px; }
.comfymq-panel .mq-paired-key .mq-btn, .comfymq-panel .mq-found-host .mq-btn { flex: none; }
.comfymq-panel .mq-refusal-list { margin: 4px 0 0; padding-left: 16px; max-height: 160px; overflow-y: auto; }
.comfymq-panel .mq-join-form { display: flex; flex-direction: column; gap: 4px; font-size: 12px; }
.comfymq-panel .mq-join-form input { width: 100%; box-sizing: border-box; }
.comfymq-panel .mq-join-details { flex: none; border-top: 1px solid var(--mq-border); }
.comfymq-panel .mq-join p { font-size: 12px; margin: 4px 0; }
.comfymq-lightbox { position: fixed; inset: 0; z-index: 10000; background: rgba(0, 0, 0, .82); display: flex;
  flex-direction: column; align-items: center; justify-content: center; gap: 10px; }
.comfymq-lightbox img { max-width: 92vw; max-height: 82vh; object-fit: contain; border-radius: 4px;
  box-shadow: 0 8px 40px rgba(0,0,0,.5); background: repeating-conic-gradient(#8884 0% 25%, transparent 0% 50%) 50% / 16px 16px; }
.comfymq-lightbox .mq-lb-bar { display: flex; gap: 8px; align-items: center; color: #eee; font-size: 13px; }
.comfymq-lightbox button, .comfymq-lightbox a { background: #222c; color: #eee; border: 1px solid #666; border-radius: 6px;
  padding: 5px 10px; font: inherit; cursor: pointer; text-decoration: none; }
.comfymq-lightbox button:focus-visible, .comfymq-lightbox a:focus-visible { outline: 2px solid #8ab4ff; outline-offset: 1px; }
`;

/** Adds the stylesheet to the document once. @param {Document} doc */
export function ensureStyles(doc) {
  if (doc.getElementById(STYLE_ID)) return;
  const style = doc.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  doc.head.appendChild(style);
}
