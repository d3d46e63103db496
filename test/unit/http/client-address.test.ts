import t from 'tap'
import { parseTrustProxy } from '../../../src/config.js'
import { addressBucket, createClientAddress, isAddressOrNetwork, normalizeAddress } from '../../../src/http/client-address.js'

t.test('TRUST_PROXY takes off, 1 (loopback) or a list of addresses and networks, and refuses anything else', async (t) => {
  t.same(parseTrustProxy('0'), [])
  t.same(parseTrustProxy(''), [])
  t.same(parseTrustProxy('1'), ['127.0.0.1/8', '::1'])
  t.same(parseTrustProxy(' 10.0.0.5, 10.1.0.0/16 ,fd00::/8'), ['10.0.0.5', '10.1.0.0/16', 'fd00::/8'])
  for (const bad of ['10.0.0.300', '10.0.0.0/33', 'proxy.internal', '10.0.0.1/8/1', '::1/129']) {
    t.match(parseTrustProxy(bad), { problem: new RegExp(bad.replace(/[.*/]/g, '\\$&')) }, `"${bad}" is refused, by name`)
  }
})

t.test('addresses are compared in canonical form, IPv4 clients of an IPv6 socket as IPv4', async (t) => {
  t.equal(normalizeAddress('0000:0000:0000:0000:0000:ffff:7f00:0001'), '127.0.0.1')
  t.equal(normalizeAddress('0000:0000:0000:0000:0000:0000:0000:0001'), '::1')
  t.equal(normalizeAddress(' 192.0.2.1 '), '192.0.2.1')
  t.equal(normalizeAddress('192.0.2.1, 10.0.0.1'), null)
  t.equal(normalizeAddress('<script>'), null)
  t.ok(isAddressOrNetwork('::1'))
  t.notOk(isAddressOrNetwork('::1/x'))
})

t.test('X-Real-IP counts only from a trusted proxy, and only when it is one valid address', async (t) => {
  const address = createClientAddress(['127.0.0.1/8'])
  t.equal(address('127.0.0.1', '192.0.2.7'), '192.0.2.7', 'from the proxy: the client it names')
  t.equal(address('198.51.100.9', '192.0.2.7'), '198.51.100.9', 'from anyone else: their own address')
  t.equal(address('127.0.0.1', 'garbage'), '127.0.0.1', 'a malformed header: the proxy\'s address')
  t.equal(address('127.0.0.1', ''), '127.0.0.1')
  const off = createClientAddress([])
  t.equal(off('127.0.0.1', '192.0.2.7'), '127.0.0.1', 'TRUST_PROXY off: the header is never read')
})

t.test('per-address limits key IPv6 clients by their /64, IPv4 ones by the address', async (t) => {
  t.equal(addressBucket('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64')
  t.equal(addressBucket('2001:db8:1:2::1'), '2001:db8:1:2::/64', 'one host\'s many addresses share one key')
  t.equal(addressBucket('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(addressBucket('::1'), '0:0:0:0::/64')
  t.equal(addressBucket('192.0.2.7'), '192.0.2.7')
})

t.test('an IPv6 zone id is not an address a client can claim, nor a proxy entry', async (t) => {
  t.equal(normalizeAddress('fe80::1%eth0'), null)
  t.notOk(isAddressOrNetwork('fe80::1%eth0'))
  t.equal(createClientAddress(['127.0.0.1'])('127.0.0.1', 'fe80::1%eth0'), '127.0.0.1')
})
