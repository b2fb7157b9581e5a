import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { lookup } from 'node:dns/promises'
import { BlockList, isIP } from 'node:net'

// Where events may be sent: https URLs whose host resolves to public addresses only. An event
// endpoint is an address we connect to on someone's say-so, so without this anyone who can
// register one could make the workers reach inside the network (the database, a metadata
// service). The check runs when an endpoint is registered and again, at connect time, on every
// delivery, so a name that later resolves to a private address (DNS rebinding) is refused too.
// EVENT_ALLOW_INSECURE_URLS lifts both rules, for local runs and tests.

// Only global unicast addresses are public. IPv4: everything but the special-purpose ranges
// (RFC 6890 and its updates). IPv6: only 2000::/3 can be, less its own special ranges; the
// forms that carry an IPv4 address (mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged
// by that address, so [64:ff9b::a9fe:a9fe] is 169.254.169.254 and refused as such.
const notPublic4 = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata services)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.88.99.0', 24], // 6to4 relay anycast (deprecated)
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and the broadcast address
] as const) {
  notPublic4.addSubnet(net, prefix, 'ipv4')
}
const notPublic6 = new BlockList()
for (const [net, prefix] of [
  ['2001:2::', 48], // benchmarking
  ['2001:10::', 28], // ORCHID (deprecated)
  ['2001:20::', 28], // ORCHIDv2
  ['2001:db8::', 32], // documentation
  ['3fff::', 20], // documentation
] as const) {
  notPublic6.addSubnet(net, prefix, 'ipv6')
}

/** The 16 bytes of an IPv6 address (a trailing dotted quad allowed), or undefined. */
function ipv6Bytes(address: string): Uint8Array | undefined {
  if (isIP(address) !== 6) return undefined
  let text = address.toLowerCase().replace(/%.*$/, '')
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined]
  const left = head ? head.split(':') : []
  const right = tail ? tail.split(':') : []
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right]
  const bytes = new Uint8Array(16)
  groups.forEach((g, i) => {
    const n = parseInt(g, 16)
    bytes[2 * i] = n >> 8
    bytes[2 * i + 1] = n & 0xff
  })
  return bytes
}

const quadOf = (b: Uint8Array, at: number, xor = 0) => [0, 1, 2, 3].map((i) => (b[at + i]! ^ xor) & 0xff).join('.')
const zeros = (b: Uint8Array, from: number, to: number) => b.subarray(from, to).every((x) => x === 0)

/** The IPv4 address an IPv6 one carries (mapped, IPv4-compatible, NAT64, 6to4, Teredo), if any. */
function embeddedIpv4(b: Uint8Array): string | undefined {
  if (zeros(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return quadOf(b, 12) // ::ffff:a.b.c.d
  if (zeros(b, 0, 12) && !zeros(b, 12, 15)) return quadOf(b, 12) // ::a.b.c.d (not :: nor ::1)
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(b, 4, 12)) return quadOf(b, 12) // 64:ff9b::/96
  if (b[0] === 0x20 && b[1] === 0x02) return quadOf(b, 2) // 6to4, 2002::/16
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0 && b[3] === 0) return quadOf(b, 12, 0xff) // Teredo 2001::/32: the client, inverted
  return undefined
}

/** Whether an IP address is a global unicast one: not private, loopback, link-local, documentation, reserved or otherwise special. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address)
  if (family === 4) return !notPublic4.check(address, 'ipv4')
  const bytes = ipv6Bytes(address)
  if (!bytes) return false
  const v4 = embeddedIpv4(bytes)
  if (v4 !== undefined) return isPublicAddress(v4)
  if ((bytes[0]! & 0xe0) !== 0x20) return false // outside 2000::/3: unspecified, loopback, NAT64 local, discard, ULA, link- and site-local, multicast
  return !notPublic6.check(address, 'ipv6')
}

/** Why events may not go to `url`, or undefined when they may. */
export async function destinationProblem(url: string, allowInsecure: boolean): Promise<string | undefined> {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'is not a URL'
  }
  if (parsed.protocol !== 'https:' && !(allowInsecure && parsed.protocol === 'http:')) return 'must be an https:// URL'
  if (parsed.username || parsed.password) return 'must not carry a user name or password'
  if (allowInsecure) return undefined
  const host = parsed.hostname.replace(/^\[|\]$/g, '')
  const addresses = isIP(host) ? [host] : await lookup(host, { all: true }).then((all) => all.map((a) => a.address), () => [])
  if (addresses.length === 0) return 'has a host that does not resolve'
  // Which address it resolved to is not said: that would tell whoever asks about the inside.
  return addresses.every(isPublicAddress) ? undefined : 'has a host that is not a public address'
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/** A `lookup` for http.request that refuses names resolving to non-public addresses. */
export function publicOnlyLookup(hostname: string, options: { all?: boolean }, callback: LookupCallback): void {
  dnsLookup(hostname, { all: true }, (err, addresses) => {
    if (err) return callback(err, [])
    const inside = addresses.find((a) => !isPublicAddress(a.address))
    if (inside) {
      return callback(Object.assign(new Error('the host is not a public address'), { code: 'EADDRNOTPUBLIC' }), [])
    }
    if (options.all) return callback(null, addresses)
    callback(null, addresses[0]!.address, addresses[0]!.family)
  })
}
