// Types of sync-state.js for the TypeScript unit tests; the page itself is plain JavaScript.
// Not served (only .html, .css, .js, .svg and .png are).
type Json = Record<string, unknown>;

export interface PageRoom {
  timeline: Json[];
  state: Map<string, Json>;
  [field: string]: unknown;
}
export interface PageList {
  count: number;
  ids: (string | undefined)[];
}
export interface PageState {
  rooms: Map<string, PageRoom>;
  lists: Map<string, PageList>;
  toDeviceSince: string | undefined;
}
export interface RequestSettings {
  connId: string;
  lists: Json;
  roomSubscriptions: Json;
  extensions: Record<string, boolean>;
  selectedRoom?: string;
  toDeviceSince?: string;
}

export const TIMELINE_KEPT: number;
export const DEFAULT_LISTS: Json;
export const EXTENSIONS: string[];
export const SELECTED_ROOM_CONFIG: Json;
export function createState(): PageState;
export function buildRequest(settings: RequestSettings): Json;
export function parseEditedObject(text: string, what: string): Json;
export function mergeRoom(previous: PageRoom | undefined, update: Json): PageRoom;
export function applyListOps(previousIds: (string | undefined)[], ops: Json[]): (string | undefined)[];
export function applyResponse(state: PageState, response: Json): PageState;
export function keepLists(state: PageState, names: string[]): void;
export function listRooms(state: PageState, name: string): { index: number; roomId: string; room: PageRoom | undefined }[];
export function roomDisplayName(roomId: string, room: PageRoom | Json | undefined): string;
export function formatJson(value: unknown, indent?: string): string;
export function formatBytes(n: number): string;
export function summarizeExchange(exchange: { pos?: string; status: number; ms: number; bytes: number; response?: Json }): string;
export function eventText(event: Json): string;
