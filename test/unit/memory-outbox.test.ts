import t from 'tap';
import { MemoryOutbox } from '../../gateway/broker';
import { outboxContract } from '../helpers/outbox-contract';

// No reopen: the in-memory outbox does not survive a restart by design, so the contract's
// restart case is skipped for it.
outboxContract(t, 'MemoryOutbox', (_t, limits) => ({ outbox: new MemoryOutbox(limits) }));
