/**
 * What the status bar item says. A small state machine fed by the client's state, `$/progress` and the
 * settings; pure, so every state (including the ones that must never leave a spinner behind) is tested.
 */

export type ServerState = "starting" | "running" | "stopped" | "missing";

export interface ProgressValue {
  kind: "begin" | "report" | "end";
  title?: string;
  message?: string;
  percentage?: number;
}

interface Task {
  title: string;
  message?: string;
  percentage?: number;
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** What a click does. */
  action: "toggle" | "restart" | "showFix";
}

export class StatusModel {
  server: ServerState = "starting";
  enabled = true;
  /** Language of the active editor when completions are disabled for it, else undefined. */
  disabledLanguage: string | undefined;
  /** The last failure the server reported (e.g. the model could not load); cleared by a restart. */
  failure: string | undefined;
  /** Suggestions the server is writing now (its `infill/pending` notification), shown as a spinner. */
  pending = 0;
  private tasks = new Map<string, Task>();

  setServer(state: ServerState): void {
    this.server = state;
    if (state !== "running") {
      // A dead server never ends its progress: drop it, or the spinner would spin forever.
      this.tasks.clear();
      this.pending = 0;
    }
    if (state === "starting") this.failure = undefined;
  }

  progress(token: string | number, value: ProgressValue): void {
    const key = String(token);
    if (value.kind === "begin") {
      this.tasks.set(key, { title: value.title ?? "working", message: value.message, percentage: value.percentage });
      return;
    }
    const task = this.tasks.get(key);
    if (value.kind === "report") {
      if (!task) return;
      if (value.message !== undefined) task.message = value.message;
      if (value.percentage !== undefined) task.percentage = value.percentage;
      return;
    }
    this.tasks.delete(key);
    if (value.message && /^failed\b|error/i.test(value.message)) {
      this.failure = `${task ? shortTitle(task.title) + ": " : ""}${value.message}`;
    }
  }

  get busy(): boolean {
    return this.tasks.size > 0;
  }

  view(): StatusView {
    if (this.server === "missing") {
      return { text: "$(error) infill: not installed", tooltip: "The infill server was not found. Click for the fix.", action: "showFix" };
    }
    if (this.server === "stopped") {
      return { text: "$(debug-disconnect) infill: stopped", tooltip: "The infill server is not running. Click to restart it.", action: "restart" };
    }
    if (this.server === "starting") {
      return { text: "$(sync~spin) infill: starting", tooltip: "Starting the infill server…", action: "toggle" };
    }
    const onOff = this.enabled ? "Inline completions are on: click to turn them off." : "Inline completions are off: click to turn them on.";
    const task = [...this.tasks.values()].pop();
    if (task) {
      const pct = task.percentage !== undefined ? ` ${Math.round(task.percentage)}%` : "";
      const detail = task.message ? `\n${task.message}` : "";
      return { text: `$(sync~spin) infill: ${shortTitle(task.title)}${pct}`, tooltip: `${task.title}${detail}\n${onOff}`, action: "toggle" };
    }
    if (!this.enabled) {
      return { text: "$(circle-slash) infill: off", tooltip: onOff, action: "toggle" };
    }
    if (this.pending > 0) {
      return { text: "$(loading~spin) infill", tooltip: `Writing a suggestion…\n${onOff}`, action: "toggle" };
    }
    if (this.failure) {
      return { text: "$(warning) infill: error", tooltip: `${this.failure}\n${onOff}`, action: "toggle" };
    }
    if (this.disabledLanguage) {
      return {
        text: `$(circle-slash) infill: off for ${this.disabledLanguage}`,
        tooltip: `Inline completions are disabled for ${this.disabledLanguage} (setting infill.disabledLanguages).\n${onOff}`,
        action: "toggle",
      };
    }
    return { text: "$(sparkle) infill", tooltip: onOff, action: "toggle" };
  }
}

/** "infill: preparing model" → "preparing model": the status bar already says infill. */
function shortTitle(title: string): string {
  return title.replace(/^infill:\s*/i, "");
}
