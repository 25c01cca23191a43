import type { Session } from './session';
import type { SubscriptionOptions } from './types';

/** A session's place in a shared subscription, with its own options (QoS, Retain As Published, identifier). */
export interface SharedMember {
  readonly session: Session;
  options: SubscriptionOptions;
}

/**
 * One shared subscription, `$share/{ShareName}/{filter}` (MQTT 5.0 section 4.8.2): each matching
 * message goes to one member, in turn. It is in the topic tree once, under its filter; its
 * members are the sessions subscribed to it, in the order they joined.
 */
export class SharedGroup {
  private readonly members: SharedMember[] = [];
  /** Where the round-robin looks next. */
  private cursor = 0;

  constructor(
    /** The whole `$share/…` filter, as the sessions know it. */
    readonly key: string,
    /** The filter after the ShareName, as it is in the topic tree. */
    readonly filter: string,
  ) {}

  get size(): number {
    return this.members.length;
  }

  /** Adds `session`, or replaces its options if it is a member already. */
  set(session: Session, options: SubscriptionOptions): void {
    const member = this.members.find((m) => m.session === session);
    if (member !== undefined) member.options = options;
    else this.members.push({ session, options });
  }

  remove(session: Session): void {
    const i = this.members.findIndex((m) => m.session === session);
    if (i < 0) return;
    this.members.splice(i, 1);
    if (this.cursor > i) this.cursor--;
  }

  /**
   * The next `eligible` member, round-robin, whose client is connected. When none is and the
   * message can wait (QoS 1/2), the next eligible member at all: its session queues it until the
   * client returns. `eligible` leaves out a member that is leaving, or one whose client may not
   * read the topic (an ACL), so that the message goes to a member that can take it.
   */
  pick(connected: (session: Session) => boolean, canWait: boolean, eligible: (session: Session) => boolean): SharedMember | undefined {
    return this.next((m) => connected(m.session) && eligible(m.session)) ?? (canWait ? this.next((m) => eligible(m.session)) : undefined);
  }

  /** Whether a member other than `except` has its client connected. */
  hasConnected(connected: (session: Session) => boolean, except: Session): boolean {
    return this.members.some((m) => m.session !== except && connected(m.session));
  }

  private next(accept: (member: SharedMember) => boolean): SharedMember | undefined {
    const n = this.members.length;
    for (let i = 0; i < n; i++) {
      const index = (this.cursor + i) % n;
      const member = this.members[index] as SharedMember;
      if (accept(member)) {
        this.cursor = index + 1;
        return member;
      }
    }
    return undefined;
  }
}
