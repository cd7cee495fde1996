// Opens an http(s) URL for an image import under a caller's URL rules (url-guard.ts). Redirects are
// followed here, one hop at a time, because each new location must pass the same rules as the first:
// an allowed server must not be able to send aetherd on to a loopback or private address.
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { ImportError } from "./import-error.js";
import { checkUrl, guardedLookup, type UrlRules } from "./url-guard.js";

const MAX_REDIRECTS = 5;
/** A server silent this long (connecting, answering, or mid-body) has stalled. */
const IDLE_TIMEOUT_MS = 60_000;

export interface Opened {
  body: IncomingMessage;
  /** Content-Length when the server sent one, else 0. */
  sourceBytes: number;
}

export async function openUrl(href: string, rules: UrlRules, signal: AbortSignal): Promise<Opened> {
  let url = new URL(href);
  for (let hop = 0; ; hop++) {
    checkUrl(url, rules);
    const response = await get(url, rules, signal);
    const status = response.statusCode ?? 0;
    if (status >= 300 && status < 400 && status !== 304 && response.headers.location !== undefined) {
      response.resume();
      if (hop >= MAX_REDIRECTS) throw new ImportError(`downloading ${href} failed: more than ${MAX_REDIRECTS} redirects.`);
      try {
        url = new URL(response.headers.location, url);
      } catch {
        throw new ImportError(`downloading ${href} failed: the server redirected to an invalid URL.`);
      }
      continue;
    }
    if (status < 200 || status >= 300) {
      response.resume();
      throw new ImportError(
        `downloading ${url.href} failed: the server answered HTTP ${status} ${response.statusMessage ?? ""}.`.replace(" .", "."),
      );
    }
    return { body: response, sourceBytes: Number(response.headers["content-length"] ?? 0) || 0 };
  }
}

function get(url: URL, rules: UrlRules, signal: AbortSignal): Promise<IncomingMessage> {
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    // agent: false: a fresh connection each time, so no pooled socket skips the guarded lookup.
    const req = send(url, { method: "GET", agent: false, lookup: guardedLookup(rules), signal, timeout: IDLE_TIMEOUT_MS });
    req.on("timeout", () =>
      req.destroy(new ImportError(`downloading ${url.href} failed: the server sent nothing for ${IDLE_TIMEOUT_MS / 1000} s.`)),
    );
    req.on("response", (res) => {
      res.setTimeout(IDLE_TIMEOUT_MS, () =>
        res.destroy(new ImportError(`downloading ${url.href} stalled: nothing arrived for ${IDLE_TIMEOUT_MS / 1000} s.`)),
      );
      resolve(res);
    });
    req.on("error", (err) => {
      if (signal.aborted) reject(new ImportError("the import was cancelled."));
      else if (err instanceof ImportError) reject(err);
      else reject(new ImportError(`could not download ${url.href}: ${err.message}.`));
    });
    req.end();
  });
}
