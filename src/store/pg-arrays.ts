// Array parameters for batched statements (`unnest($1::text[], ...)`), built faster than pg's
// own conversion: pg quotes and escapes every element with two regular expressions and
// concatenates one element at a time, which for an initial sync's hundred thousand events
// costs seconds of the ingest's one core. The literals are the same PostgreSQL array syntax.

const NEEDS_ESCAPE = /["\\]/;

/** A `text[]` literal; null and undefined elements are NULL. */
export function textArray(values: readonly (string | null | undefined)[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) parts[i] = 'NULL';
    else if (NEEDS_ESCAPE.test(v)) parts[i] = `"${v.replace(/["\\]/g, '\\$&')}"`;
    else parts[i] = `"${v}"`;
  }
  return `{${parts.join(',')}}`;
}

/** A `bigint[]` or `int[]` literal (as pg writes numbers); null and undefined elements are NULL. */
export function numberArray(values: readonly (number | null | undefined)[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    parts[i] = v === null || v === undefined ? 'NULL' : String(v);
  }
  return `{${parts.join(',')}}`;
}

/** A `boolean[]` literal. */
export function boolArray(values: readonly boolean[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) parts[i] = values[i] ? 't' : 'f';
  return `{${parts.join(',')}}`;
}

/**
 * JSON texts as one `json` array, for `json_array_elements($n::json)`: each element comes back
 * as exactly its text (the `json` type keeps text as given), with no quoting or escaping on
 * either side. Every element must be a complete JSON value (JSON.stringify output).
 */
export function jsonTextsArray(texts: readonly string[]): string {
  return `[${texts.join(',')}]`;
}

type ColumnKind<V> = [V] extends [string | null | undefined]
  ? 'text'
  : [V] extends [number | null | undefined]
    ? 'number'
    : [V] extends [boolean]
      ? 'bool'
      : never;

/**
 * The array parameters of a batched statement over `rows`: one per field named, in the order
 * named, each a literal of the field's kind (the columns of `unnest($1::text[], $2::bigint[], …)`).
 */
export function columns<R>(rows: readonly R[], fields: { [K in keyof R]?: ColumnKind<R[K]> }): string[] {
  return Object.entries(fields).map(([field, kind]) => {
    const values = rows.map((row) => row[field as keyof R]);
    if (kind === 'text') return textArray(values as (string | null | undefined)[]);
    if (kind === 'number') return numberArray(values as (number | null | undefined)[]);
    return boolArray(values as boolean[]);
  });
}
