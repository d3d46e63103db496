/**
 * Secrets out of what is logged or shown: connection URLs carry passwords
 * (mqtt://user:password@host, postgres://user:password@host/db), and a log line is read by
 * more people, and kept longer, than the secret should be.
 */

/** The URL with its password (if any) replaced by "****"; text that is not a URL is masked whole past its scheme. */
export function redactUrl (url: string): string {
  let u: URL
  try { u = new URL(url) } catch { return url.replace(/\/\/.*$/s, '//****') }
  if (u.password === '') return url
  u.password = '****'
  return u.toString()
}

/**
 * Text from elsewhere (a model server's error message) with what looks like a credential cut
 * to its first characters: OpenAI-style keys (`sk-…`), bearer tokens, `key=`/`token=` values.
 */
export function redactSecrets (text: string): string {
  return text
    .replace(/\b(sk-[A-Za-z0-9]{2})[A-Za-z0-9_-]{6,}/g, '$1****')
    .replace(/\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi, '$1****')
    .replace(/\b((?:api[_-]?key|token|secret|password)=)[^\s&]+/gi, '$1****')
}
