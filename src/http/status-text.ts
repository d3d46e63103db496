/** uWebSockets.js wants the whole status line ("404 Not Found"), not just the code. */
const TEXT: Record<number, string> = {
  200: 'OK', 201: 'Created', 204: 'No Content',
  400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found', 405: 'Method Not Allowed',
  409: 'Conflict', 413: 'Payload Too Large', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout'
}

const LINES = new Map<number, string>(Object.entries(TEXT).map(([code, text]) => [Number(code), `${code} ${text}`]))

export function statusLine (status: number): string {
  return LINES.get(status) ?? `${status} Status`
}
