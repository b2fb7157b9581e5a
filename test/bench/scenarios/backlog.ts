import type { Scenario } from '../report.ts'
export const backlog: Scenario = async () => { throw new Error('todo') }
