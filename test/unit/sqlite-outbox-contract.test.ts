import { join } from 'node:path';
import t from 'tap';
import { SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';
import type { OutboxLimits } from '../../gateway/broker';
import { outboxContract } from '../helpers/outbox-contract';
import { tempDir } from '../helpers/sqlite';

for (const flushInterval of [5, 0]) {
  outboxContract(t, `SqliteOutbox (flushInterval ${flushInterval})`, (t, limits) => {
    const path = join(tempDir(t), 'sub', 'edgeway.db');
    const make = (l: OutboxLimits = limits) => new SqliteOutbox(new SqliteStorage({ path, sync: 'normal', flushInterval }), l);
    return { outbox: make(), reopen: make };
  });
}
