// Ctrl+Shift+Enter (Cmd+Shift+Enter on macOS) queues in ComfyMQ.
//
// ComfyUI binds that combination to "Queue Prompt (Front)" by default, and its keybinding store refuses a second
// default binding for a combination (registering one in the extension's `keybindings` logs an error and is
// dropped). So the combination is taken here, in the capture phase, before ComfyUI's own handler, unless the
// user has bound it to a command of their choice in ComfyUI's keybinding settings (then that wins).

/**
 * @param {KeyboardEvent} e
 */
export function isQueueCombo(e) {
  return e.key === "Enter" && e.shiftKey && (e.ctrlKey || e.metaKey) && !e.altKey;
}

/**
 * Whether the user's own ComfyUI keybindings give Ctrl+Shift+Enter to some command.
 * @param {any} userBindings  the setting "Comfy.Keybinding.NewBindings": [{commandId, combo: {key, ctrl, shift, alt}}]
 */
export function userRebound(userBindings) {
  if (!Array.isArray(userBindings)) return false;
  return userBindings.some((b) => b && b.combo && String(b.combo.key).toLowerCase() === "enter" &&
    !!b.combo.ctrl && !!b.combo.shift && !b.combo.alt);
}

/**
 * @param {Window} win
 * @param {{run: () => void, userBindings: () => any}} o
 * @returns {() => void} removes the handler
 */
export function installQueueShortcut(win, o) {
  /** @param {KeyboardEvent} e */
  const onKey = (e) => {
    if (!isQueueCombo(e) || e.defaultPrevented) return;
    if (userRebound(o.userBindings())) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    if (!e.repeat) o.run();
  };
  win.addEventListener("keydown", onKey, true);
  return () => win.removeEventListener("keydown", onKey, true);
}
