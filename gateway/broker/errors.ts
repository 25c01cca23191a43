/**
 * Stable error codes. Callers branch on `code`, never on message text (DESIGN.md convention 3).
 * Protocol failures also carry the MQTT 5 reason code; 3.1.1 maps it where it has an equivalent.
 */
export type EdgewayErrorCode =
  | 'EDGEWAY_ERR_CONFIG'
  | 'EDGEWAY_ERR_LISTEN'
  | 'EDGEWAY_ERR_ADDR_IN_USE'
  /** A TLS listener's certificate, key or CA file cannot be read or is not valid PEM (a configuration problem). */
  | 'EDGEWAY_ERR_TLS_FILES'
  | 'EDGEWAY_ERR_PROTOCOL'
  | 'EDGEWAY_ERR_MALFORMED'
  | 'EDGEWAY_ERR_PACKET_TOO_LARGE'
  | 'EDGEWAY_ERR_INVALID_TOPIC'
  | 'EDGEWAY_ERR_LIMIT'
  | 'EDGEWAY_ERR_STOPPED'
  /** Storage (database, outbox) not opened yet, closing or closed. */
  | 'EDGEWAY_ERR_STORAGE_CLOSED'
  /** The storage could not be opened (read-only directory, permissions, I/O error). */
  | 'EDGEWAY_ERR_STORAGE_OPEN'
  /** A commit failed; `cause` says why (disk full, read-only file system, I/O error). */
  | 'EDGEWAY_ERR_STORAGE_WRITE';

export class EdgewayError extends Error {
  readonly code: EdgewayErrorCode;
  /** MQTT 5 reason code, when the error is a protocol failure. */
  readonly reasonCode: number | undefined;

  constructor(code: EdgewayErrorCode, message: string, reasonCode?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EdgewayError';
    this.code = code;
    this.reasonCode = reasonCode;
  }
}

/** A storage fault (the ports of persistence.ts and outbox.ts); `cause` holds the underlying error. */
export class StorageError extends EdgewayError {
  constructor(code: Extract<EdgewayErrorCode, `EDGEWAY_ERR_STORAGE_${string}`>, message: string, options?: { cause?: unknown }) {
    super(code, message, undefined, options);
    this.name = 'StorageError';
  }
}

/** The message of anything thrown, for a log field. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** MQTT 5 reason codes used by the core (MQTT 5.0 section 2.4). */
export const ReasonCode = {
  Success: 0x00,
  GrantedQos1: 0x01,
  GrantedQos2: 0x02,
  NormalDisconnection: 0x00,
  DisconnectWithWill: 0x04,
  NoMatchingSubscribers: 0x10,
  NoSubscriptionExisted: 0x11,
  ContinueAuthentication: 0x18,
  ReAuthenticate: 0x19,
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ImplementationSpecificError: 0x83,
  UnsupportedProtocolVersion: 0x84,
  ClientIdentifierNotValid: 0x85,
  BadUserNameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  ServerShuttingDown: 0x8b,
  BadAuthenticationMethod: 0x8c,
  KeepAliveTimeout: 0x8d,
  SessionTakenOver: 0x8e,
  TopicFilterInvalid: 0x8f,
  TopicNameInvalid: 0x90,
  PacketIdentifierInUse: 0x91,
  PacketIdentifierNotFound: 0x92,
  ReceiveMaximumExceeded: 0x93,
  TopicAliasInvalid: 0x94,
  PacketTooLarge: 0x95,
  QuotaExceeded: 0x97,
  AdministrativeAction: 0x98,
  PayloadFormatInvalid: 0x99,
  SharedSubscriptionsNotSupported: 0x9e,
  ConnectionRateExceeded: 0x9f,
  SubscriptionIdentifiersNotSupported: 0xa1,
  WildcardSubscriptionsNotSupported: 0xa2,
} as const;

/**
 * CONNACK: MQTT 5 reason code → MQTT 3.1.1 return code (3.1.1 section 3.2.2.3).
 * Anything without a direct equivalent becomes "server unavailable" (3).
 */
export function connackReturnCodeV4(reasonCode: number): number {
  switch (reasonCode) {
    case ReasonCode.Success:
      return 0;
    case ReasonCode.UnsupportedProtocolVersion:
      return 1;
    case ReasonCode.ClientIdentifierNotValid:
      return 2;
    case ReasonCode.BadUserNameOrPassword:
      return 4;
    case ReasonCode.NotAuthorized:
      return 5;
    default:
      return 3;
  }
}
