import type { Scenario } from '../report.ts'
export const saturation: Scenario = async () => { throw new Error('todo') }
