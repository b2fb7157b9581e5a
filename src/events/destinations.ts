import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { lookup } from 'node:dns/promises'
import { BlockList, isIP } from 'node:net'

// Where events may be sent: https URLs whose host resolves to public addresses only. An event
// endpoint is an address we connect to on someone's say-so, so without this anyone who can
// register one could make the workers reach inside the network (the database, a metadata
// service). The check runs when an endpoint is registered and again, at connect time, on every
// delivery, so a name that later resolves to a private address (DNS rebinding) is refused too.
// EVENT_ALLOW_INSECURE_URLS lifts both rules, for local runs and tests.

const notPublic = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  notPublic.addSubnet(net, prefix, 'ipv4')
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  notPublic.addSubnet(net, prefix, 'ipv6')
}

/** Whether an IP address is a public one (not private, loopback, link-local, multicast or reserved). */
export function isPublicAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped) return isPublicAddress(mapped[1]!)
  const family = isIP(address)
  if (family === 0) return false
  return !notPublic.check(address, family === 4 ? 'ipv4' : 'ipv6')
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
  if (addresses.length === 0) return `has a host, ${host}, that does not resolve`
  const inside = addresses.find((a) => !isPublicAddress(a))
  return inside ? `resolves to ${inside}, a private, loopback or link-local address` : undefined
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/** A `lookup` for http.request that refuses names resolving to non-public addresses. */
export function publicOnlyLookup(hostname: string, options: { all?: boolean }, callback: LookupCallback): void {
  dnsLookup(hostname, { all: true }, (err, addresses) => {
    if (err) return callback(err, [])
    const inside = addresses.find((a) => !isPublicAddress(a.address))
    if (inside) {
      return callback(Object.assign(new Error(`${hostname} resolves to ${inside.address}, which events may not be sent to`), { code: 'EADDRNOTPUBLIC' }), [])
    }
    if (options.all) return callback(null, addresses)
    callback(null, addresses[0]!.address, addresses[0]!.family)
  })
}
