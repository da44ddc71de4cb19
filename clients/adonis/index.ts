export { SessionManager } from './src/session_manager.js'
export type {
  CastleContext,
  SessionManagerOptions,
  SessionModel,
  SessionRow,
  SessionUser,
} from './src/session_manager.js'
export { bearerToken } from './src/bearer.js'
export * as errors from './src/errors.js'
