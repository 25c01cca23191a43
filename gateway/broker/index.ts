/** Public API of the broker core. Adapters and the composition root import from here only. */
export { Broker, type GatewayContext, type InProcessHandler, type InProcessOutcome, type ListenerSpec, type TlsListenerFiles } from './broker';
export { EdgewayError, ReasonCode, StorageError, errorMessage, type EdgewayErrorCode } from './errors';
export {
  Hooks,
  type AuthenticateHook,
  type AuthorizePublishHook,
  type AuthorizeReadHook,
  type AuthorizeSubscribeHook,
  type ClientHook,
  type ClientInfo,
  type Credentials,
  type EnhancedAuthenticator,
  type EnhancedAuthResult,
  type PublishedHook,
} from './hooks';
export { RateLimitedLog, type Logger, type LogFields, silentLogger } from './logger';
export { backoffDelay } from './backoff';
export { BrokerMetrics } from './metrics';
export type { BrokerStorage, RetainedStore, SessionMessageState, SessionStore, StoredSession, StoredSessionMessage } from './persistence';
export { RingBuffer } from './ring-buffer';
export { filterMatches, sharedFilter, topicFilterError } from './topic';
export type { BrokerLimits, BrokerOptions, Message, PublishProperties, QoS, SubscriptionOptions } from './types';
export { MemoryOutbox } from './memory-outbox';
export {
  OutboxWatchers,
  outboxEntryBytes,
  type Outbox,
  type OutboxEntry,
  type OutboxFullPolicy,
  type OutboxInput,
  type OutboxLimits,
  type OutboxStats,
  type RawEntry,
  type ReadOptions,
  checkedOutboxProperties,
  emptyRawEntry,
  outboxProperties,
  outboxPropertiesJson,
  parseOutboxProperties,
  rawEntryOf,
} from './outbox';
