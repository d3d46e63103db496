/**
 * The client's address, for the per-address limits (login failures, registrations). Behind a
 * reverse proxy every connection comes from the proxy, so the proxy's `X-Real-IP` names the
 * client — but only a proxy may say so: the header is believed when the socket's peer is one
 * of TRUST_PROXY's addresses or networks, and only when it holds one well-formed address.
 * Anyone else sending it (the port reached directly) is judged by their own address, so a
 * header that changes with every attempt cannot dodge the limit.
 */
import { BlockList, isIP } from 'node:net'

export type ClientAddress = (peer: string, realIpHeader: string) => string

/** TRUST_PROXY=1: the proxy runs on this host (the shipped nginx site). */
export const LOOPBACK_PROXIES: readonly string[] = Object.freeze(['127.0.0.1/8', '::1'])

/**
 * An address in canonical text, or null. uWebSockets.js gives IPv6 peers fully expanded
 * ("0000:…:0001") and IPv4 peers of a dual-stack socket as mapped ("…:ffff:7f00:0001").
 */
export function normalizeAddress (text: string): string | null {
  const raw = text.trim()
  const family = isIP(raw)
  if (family === 4) return raw
  // A zone id ("fe80::1%eth0") passes isIP but names no client we could limit.
  if (family !== 6 || raw.includes('%')) return null
  let v6: string
  try { v6 = new URL(`http://[${raw}]/`).hostname.slice(1, -1) } catch { return null }
  // ::ffff:a.b.c.d (or its hex form): an IPv4 client on an IPv6 socket.
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6)
  if (mapped !== null) {
    const hi = parseInt(mapped[1] as string, 16)
    const lo = parseInt(mapped[2] as string, 16)
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
  }
  return v6
}

/**
 * The key of the per-address limits: an IPv4 address as it is, an IPv6 one by its /64. One
 * host is usually given a whole /64, so keying by the full address would give it 2^64 keys.
 */
export function addressBucket (address: string): string {
  if (isIP(address) !== 6) return address
  const groups = new URL(`http://[${address}]/`).hostname.slice(1, -1)
  // Expand "::" so the first four groups are the prefix.
  const [head = '', tail = ''] = groups.split('::')
  const h = head === '' ? [] : head.split(':')
  const tl = groups.includes('::') ? (tail === '' ? [] : tail.split(':')) : []
  const full = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl]
  return `${full.slice(0, 4).join(':')}::/64`
}

/** Whether `entry` is an address or a network (address/prefix): the form TRUST_PROXY takes. */
export function isAddressOrNetwork (entry: string): boolean {
  const [address, prefix, ...rest] = entry.split('/')
  if (rest.length > 0 || address === undefined || address.includes('%')) return false
  const family = isIP(address)
  if (family === 0) return false
  if (prefix === undefined) return true
  if (!/^\d{1,3}$/.test(prefix)) return false
  return Number(prefix) <= (family === 4 ? 32 : 128)
}

export function createClientAddress (trusted: readonly string[]): ClientAddress {
  if (trusted.length === 0) return (peer) => normalizeAddress(peer) ?? peer
  const proxies = new BlockList()
  for (const entry of trusted) {
    const [address, prefix] = entry.split('/') as [string, string | undefined]
    const type = isIP(address) === 4 ? 'ipv4' : 'ipv6'
    if (prefix === undefined) proxies.addAddress(address, type)
    else proxies.addSubnet(address, Number(prefix), type)
  }
  return (peer, realIpHeader) => {
    const from = normalizeAddress(peer)
    if (from === null) return peer
    if (!proxies.check(from, isIP(from) === 4 ? 'ipv4' : 'ipv6')) return from
    const claimed = realIpHeader === '' ? null : normalizeAddress(realIpHeader)
    // A trusted proxy that sent no usable header: the proxy's own address, so its clients
    // share one limit rather than escape it.
    return claimed ?? from
  }
}
