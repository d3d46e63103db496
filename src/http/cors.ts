/**
 * CORS for browsers on other origins, from CORS_ORIGINS. An empty list sends no CORS headers
 * at all (same-origin deployments behind a proxy need none).
 */
export type HeaderList = readonly (readonly [string, string])[]

const NONE: HeaderList = []

export function createCors (origins: readonly string[]): { headersFor: (origin: string) => HeaderList, preflight: HeaderList } {
  const any = origins.includes('*')
  const allowed = new Set(origins)
  return {
    headersFor (origin) {
      if (origin === '' || (!any && !allowed.has(origin))) return NONE
      return [['access-control-allow-origin', any ? '*' : origin], ['vary', 'Origin']]
    },
    preflight: [
      ['access-control-allow-methods', 'GET, POST, OPTIONS'],
      ['access-control-allow-headers', 'authorization, content-type, accept, x-request-id'],
      ['access-control-max-age', '600']
    ]
  }
}
