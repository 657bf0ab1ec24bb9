// The multiplexed socket (`/api/v1/ws`): one per page, topics subscribed while a view
// needs them, resubscribed with `since_position` after a reconnect so nothing is missed.
// Browsers cannot set headers on sockets, so the key goes as `access_token`.

import { getKey, unauthorized } from './api';

/** A `change` message: a read-model row that changed. */
export interface Change {
  type: 'change';
  topic: string;
  view: string;
  id: string;
  position: string;
  deleted: boolean;
  correlation_id?: string | null;
  row: Record<string, unknown> | null;
}

type Handler = (change: Change) => void;

export class Live {
  private socket: WebSocket | null = null;
  private handlers = new Map<string, Set<Handler>>();
  private last: string | null = null;
  private retry = 250;
  private closed = false;
  /** Called with `true` when connected, `false` when not. */
  onstate: (connected: boolean) => void = () => {};

  constructor() {
    this.connect();
  }

  private connect(): void {
    const key = getKey();
    if (this.closed || !key) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws?access_token=${encodeURIComponent(key)}`);
    this.socket = socket;
    socket.onopen = () => {
      this.retry = 250;
      this.onstate(true);
      const topics = [...this.handlers.keys()];
      if (topics.length > 0) this.send({ subscribe: topics, ...(this.last ? { since_position: this.last } : {}) });
    };
    socket.onmessage = (event) => {
      let message: Change | { type: 'lagged'; position: string };
      try {
        message = JSON.parse(String(event.data)) as Change | { type: 'lagged'; position: string };
      } catch {
        return;
      }
      if (message.type === 'lagged') {
        // The server dropped changes for this slow reader: ask for them again from the
        // last position it sent.
        const topics = [...this.handlers.keys()];
        if (topics.length > 0) this.send({ subscribe: topics, since_position: message.position });
        return;
      }
      if (message.type !== 'change') return;
      if (!this.last || message.position > this.last) this.last = message.position;
      for (const handler of this.handlers.get(message.topic) ?? []) handler(message);
    };
    socket.onclose = (event) => {
      this.onstate(false);
      if (this.closed) return;
      if (event.code === 1008) {
        // Policy violation: the key was revoked or expired. Retrying cannot help.
        this.closed = true;
        unauthorized(`The live connection was closed: ${event.reason || 'the API key is no longer valid'}. Sign in with a valid key.`);
        return;
      }
      window.setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 5000);
    };
  }

  private send(message: unknown): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  /** Follows `topic`; returns the function that stops following it. */
  subscribe(topic: string, handler: Handler): () => void {
    let set = this.handlers.get(topic);
    if (!set) {
      set = new Set();
      this.handlers.set(topic, set);
      this.send({ subscribe: [topic] });
    }
    set.add(handler);
    return () => {
      const current = this.handlers.get(topic);
      if (!current) return;
      current.delete(handler);
      if (current.size === 0) {
        this.handlers.delete(topic);
        this.send({ unsubscribe: [topic] });
      }
    };
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }
}
