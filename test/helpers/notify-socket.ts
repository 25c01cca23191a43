/**
 * A stand-in for systemd's notification socket (sd_notify(3)): a unix datagram socket bound by a
 * `perl` child — Node cannot receive unix datagrams, and perl is what the gateway's launcher
 * (scripts/notify-exec.pl) uses to send them — that prints every datagram it reads as one line.
 * The test reads the datagrams in order, each as its `KEY=value` lines.
 */
import { join } from 'node:path';
import type { Test } from 'tap';
import { waitFor } from './broker';
import { startProcess, type Running } from './processes';

/** The launcher in the checkout (tests run from dist/test/helpers). */
export const NOTIFY_EXEC = join(__dirname, '..', '..', '..', 'scripts', 'notify-exec.pl');

// "@name" is in the abstract namespace, as in $NOTIFY_SOCKET.
const SOCKADDR = 'my $a = shift; $a = "\\0" . substr($a, 1) if $a =~ /^@/; my $sa = pack_sockaddr_un($a);';

/** Prints each datagram as one line of hex: exact, whatever bytes it holds. */
const RECEIVER = `use Socket; ${SOCKADDR}
socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!"; bind($s, $sa) or die "bind: $!";
$| = 1; print "bound\\n";
while (defined(recv($s, my $d, 65536, 0))) { print unpack("H*", $d), "\\n"; }`;

const SENDER = `use Socket; ${SOCKADDR}
socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!"; defined(send($s, shift, 0, $sa)) or die "send: $!";`;

export class NotifySocket {
  private marks = 0;

  private constructor(
    private readonly t: Test,
    /** The value for $NOTIFY_SOCKET. */
    readonly address: string,
    private readonly receiver: Running,
  ) {}

  /** Binds `address` (a path, or "@name" for the abstract namespace); closed when `t` ends. */
  static async bind(t: Test, address: string): Promise<NotifySocket> {
    const receiver = startProcess(t, 'perl', ['-e', RECEIVER, address], 120_000);
    const bound = () => /^bound$/m.test(receiver.stdout);
    await waitFor(() => bound() || receiver.child.exitCode !== null, 5000, `perl to bind ${address}`);
    if (!bound()) throw new Error(`perl could not bind ${address}: ${receiver.stderr}`);
    return new NotifySocket(t, address, receiver);
  }

  /** Every datagram read so far, in order, each as its lines (test marks left out). */
  get messages(): string[][] {
    return this.all().filter((lines) => !lines.some((l) => l.startsWith('X_TEST_MARK=')));
  }

  /** The datagrams read so far that have `line` (e.g. "READY=1"). */
  with(line: string): string[][] {
    return this.messages.filter((lines) => lines.includes(line));
  }

  /** Resolves once `line` was received in at least `count` datagrams. */
  async waitFor(line: string, timeoutMs: number, count = 1): Promise<void> {
    await waitFor(() => this.with(line).length >= count, timeoutMs, `${count}× ${line} on ${this.address} (received: ${JSON.stringify(this.messages)})`);
  }

  /**
   * Resolves once every datagram sent to the socket before this call has been read: sends a mark
   * of its own and waits for it (a datagram socket's queue is first in, first out).
   */
  async flush(): Promise<void> {
    const mark = `X_TEST_MARK=${++this.marks}`;
    const sender = startProcess(this.t, 'perl', ['-e', SENDER, this.address, mark], 10_000);
    const { code } = await sender.exited;
    if (code !== 0) throw new Error(`could not send to ${this.address}: ${sender.stderr}`);
    await waitFor(() => this.all().some((lines) => lines.includes(mark)), 5000, `the mark ${mark} on ${this.address}`);
  }

  /** Closes the socket (the receiver exits): later sends to it are refused. */
  async close(): Promise<void> {
    if (this.receiver.child.pid !== undefined) process.kill(this.receiver.child.pid, 'SIGKILL');
    await this.receiver.exited;
  }

  private all(): string[][] {
    return this.receiver.stdout
      .split('\n')
      .filter((line, i) => line !== '' && !(i === 0 && line === 'bound'))
      .map((line) => Buffer.from(line, 'hex').toString('utf8').split('\n'));
  }
}
