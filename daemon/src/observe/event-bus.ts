// Lifecycle events flow through one in-process bus: subsystems publish, ObserveService.StreamEvents
// subscribes. Events are not persisted; a subscriber sees what happens while it listens.
import { EventEmitter } from "node:events";

export interface LifecycleEvent {
  timeMs: number;
  kind: string;
  tenant: string;
  resourceId: string;
  resourceName: string;
  message: string;
  attributes: Record<string, string>;
}

export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0); // one listener per open stream; bounded by the server's stream limits
  }

  publish(event: Omit<LifecycleEvent, "timeMs">): void {
    this.emitter.emit("event", { ...event, timeMs: Date.now() });
  }

  subscribe(listener: (event: LifecycleEvent) => void): () => void {
    this.emitter.on("event", listener);
    return () => this.emitter.off("event", listener);
  }
}
