/**
 * The charset of a JSON body: JSON is UTF-8 (RFC 8259, section 8.1), and every JSON body is read
 * as UTF-8. A body that says it is in another charset (`application/json; charset=utf-16`,
 * `charset=latin1`) would be misread: its bytes taken as UTF-8, an accent garbled or the body
 * refused as not JSON with a message that names neither. It is answered 415 naming the charset,
 * by the HTTP layer's JSON parser and by the dashboard's actions alike.
 */
import { show } from '../core/show.ts';
import { HttpError } from './errors.ts';

/** The parameters after a media type: `; name=value`, the value a token or a quoted string. */
const PARAMS = /;\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;

/** The `charset` parameter of a content type, unquoted (`"utf-8"` -> `utf-8`), or undefined. */
export function charsetOf(contentType: string): string | undefined {
  const params = new RegExp(PARAMS);
  for (let m = params.exec(contentType); m; m = params.exec(contentType)) {
    if (m[1]!.toLowerCase() !== 'charset') continue;
    const raw = m[2]!.trim();
    return raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
  }
  return undefined;
}

/**
 * A content type without its charset parameter: for a body decoded by middleware (a parsed object,
 * a string) and handed on as UTF-8.
 */
export function withoutCharset(contentType: string): string {
  return contentType.replace(new RegExp(PARAMS), (param: string, name: string) => (name.toLowerCase() === 'charset' ? '' : param));
}

/** True for a name of UTF-8 (`utf-8`, `UTF-8`, `utf8`: the labels the WHATWG Encoding standard gives it). */
function isUtf8(charset: string): boolean {
  try {
    return new TextDecoder(charset).encoding === 'utf-8';
  } catch {
    return false; // not a charset the runtime knows
  }
}

/** `application/json` and `application/<anything>+json`, before any parameter. */
const JSON_TYPE = /^\s*application\/(?:json|[\w.+-]+\+json)\s*(?:;|$)/i;

/**
 * Throws `HttpError` 415 when a JSON content type (`application/json`, `application/*+json`) names
 * a charset other than UTF-8. No charset, or `charset=utf-8` in any case, quoted or not, passes;
 * other content types are not looked at.
 */
export function checkJsonCharset(contentType: string | undefined): void {
  if (contentType === undefined || !JSON_TYPE.test(contentType)) return;
  const charset = charsetOf(contentType);
  if (charset === undefined || isUtf8(charset)) return;
  throw new HttpError(
    415,
    `Unsupported charset ${show(charset)}: JSON bodies must be UTF-8 (RFC 8259); send the body as UTF-8, with charset=utf-8 or no charset`,
  );
}
