// Text for times, durations and sizes. Pure functions, no imports.

/**
 * "0.4s", "12s", "3m 05s", "2h 10m", "3d 4h".
 * @param {number | null | undefined} ms
 */
export function formatDuration(ms) {
  if (ms == null || !isFinite(ms)) return "–";
  if (ms < 0) ms = 0;
  if (ms < 10000) return (ms / 1000).toFixed(1) + "s";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/**
 * "just now", "5s ago", "3m ago".
 * @param {number | null | undefined} then  ms since the epoch
 * @param {number} now
 */
export function formatAge(then, now) {
  if (!then) return "never";
  const ms = now - then;
  if (ms < 1500) return "just now";
  return formatDuration(ms).replace(/\.\ds$/, "s") + " ago";
}

/** @param {number | null | undefined} n */
export function formatBytes(n) {
  if (n == null || !isFinite(n)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
}

/**
 * Local wall-clock time; with the date when not today.
 * @param {number | null | undefined} ms
 * @param {number} [now]
 */
export function formatTime(ms, now = Date.now()) {
  if (!ms) return "–";
  const d = new Date(ms);
  const today = new Date(now);
  const time = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  if (d.toDateString() === today.toDateString()) return time;
  return d.toLocaleDateString([], {month: "short", day: "numeric"}) + " " + time;
}

/**
 * "1,234"
 * @param {number} n
 */
export function formatCount(n) {
  return Number(n || 0).toLocaleString("en-US");
}

/**
 * @param {number} n
 * @param {string} one
 * @param {string} [many]
 */
export function plural(n, one, many) {
  return `${formatCount(n)} ${n === 1 ? one : many || one + "s"}`;
}
