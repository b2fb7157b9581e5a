import type { Scenario } from '../report.ts'
export const flow: Scenario = async () => { throw new Error('todo') }
