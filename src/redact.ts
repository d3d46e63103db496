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
