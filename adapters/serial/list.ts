/**
 * `edgeway serial list`: the serial ports present, with the stable /dev/serial/by-id path to copy
 * into the configuration.
 *
 * SerialPort.list() spawns `udevadm info -e`. Where udevadm is missing (containers, minimal
 * images, build machines) it rejects with `spawn udevadm ENOENT` — left unhandled, that kills
 * the process — so its failure (or a hang) falls back to reading sysfs and /dev directly.
 */
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { SerialPort } from 'serialport';

export interface ListedPort {
  /** e.g. /dev/ttyUSB0 */
  readonly path: string;
  /** e.g. /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0 */
  readonly byId: string | undefined;
  readonly vendorId: string | undefined;
  readonly productId: string | undefined;
  readonly serialNumber: string | undefined;
  readonly manufacturer: string | undefined;
  readonly product: string | undefined;
  /** Kernel driver (ftdi_sio, cdc_acm, uart-pl011, serial8250 …), from sysfs. */
  readonly driver: string | undefined;
}

export interface ListResult {
  readonly ports: ListedPort[];
  /** Where the list came from: udev (SerialPort.list) or sysfs (the fallback). */
  readonly source: 'udev' | 'sysfs';
  /** Why the fallback was used. */
  readonly note?: string;
}

/** What SerialPort.list() returns (the fields used here). */
export interface UdevPortInfo {
  readonly path: string;
  readonly manufacturer?: string | undefined;
  readonly serialNumber?: string | undefined;
  readonly pnpId?: string | undefined;
  readonly vendorId?: string | undefined;
  readonly productId?: string | undefined;
}

export interface ListOptions {
  readonly udevList?: () => Promise<UdevPortInfo[]>;
  readonly devRoot?: string;
  readonly sysRoot?: string;
  readonly timeoutMs?: number;
}

/** Serial device names (the pattern of @serialport/bindings-cpp, plus SoC UARTs and USB gadgets). */
const SERIAL_NAME = /^(?:tty(?:S|WCH|ACM|USB|AMA|MFD|O|XRUSB|THS|SC|GS|mxc|LP)\d+|rfcomm\d+)$/;

export async function listSerialPorts(options: ListOptions = {}): Promise<ListResult> {
  const devRoot = options.devRoot ?? '/dev';
  const sysRoot = options.sysRoot ?? '/sys';
  const byId = readById(devRoot);
  const sysfs = readSysfs(devRoot, sysRoot);
  let udev: UdevPortInfo[];
  try {
    udev = await withTimeout((options.udevList ?? (() => SerialPort.list()))(), options.timeoutMs ?? 3000);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    const ports = [...sysfs.values()].map((p) => ({ ...p, byId: byId.get(p.path) }));
    // A by-id link whose target sysfs did not show (unusual): still worth listing.
    for (const [path, link] of byId) if (!sysfs.has(path)) ports.push({ ...emptyInfo(path), byId: link });
    return { ports: ports.sort(byPath), source: 'sysfs', note: `udev not available (${why}); read ${join(sysRoot, 'class/tty')} and ${join(devRoot, 'serial/by-id')}` };
  }
  const ports = udev.map((u): ListedPort => {
    const s = sysfs.get(u.path);
    return {
      path: u.path,
      byId: byId.get(u.path) ?? (u.pnpId !== undefined ? join(devRoot, 'serial/by-id', u.pnpId) : undefined),
      vendorId: u.vendorId ?? s?.vendorId,
      productId: u.productId ?? s?.productId,
      serialNumber: u.serialNumber ?? s?.serialNumber,
      manufacturer: u.manufacturer ?? s?.manufacturer,
      product: s?.product,
      driver: s?.driver,
    };
  });
  return { ports: ports.sort(byPath), source: 'udev' };
}

function byPath(a: ListedPort, b: ListedPort): number {
  return a.path.localeCompare(b.path, 'en', { numeric: true });
}

function emptyInfo(path: string): ListedPort {
  return { path, byId: undefined, vendorId: undefined, productId: undefined, serialNumber: undefined, manufacturer: undefined, product: undefined, driver: undefined };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolvePromise(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** /dev/ttyUSB0 → /dev/serial/by-id/usb-…; empty when the directory does not exist (no USB serial devices). */
function readById(devRoot: string): Map<string, string> {
  const dir = join(devRoot, 'serial', 'by-id');
  const out = new Map<string, string>();
  for (const name of safeReaddir(dir).sort()) {
    try {
      const target = resolve(dir, readlinkSync(join(dir, name)));
      if (!out.has(target)) out.set(target, join(dir, name));
    } catch {
      // not a link, or removed meanwhile
    }
  }
  return out;
}

function readSysfs(devRoot: string, sysRoot: string): Map<string, ListedPort> {
  const classDir = join(sysRoot, 'class', 'tty');
  const out = new Map<string, ListedPort>();
  let sysReal: string;
  try {
    sysReal = realpathSync(sysRoot);
  } catch {
    return out;
  }
  for (const name of safeReaddir(classDir)) {
    if (!SERIAL_NAME.test(name)) continue;
    const entry = join(classDir, name);
    let device: string;
    try {
      device = realpathSync(join(entry, 'device')); // virtual terminals have no device
    } catch {
      continue;
    }
    // The kernel creates ttyS0…ttyS31 whether or not a UART exists; type 0 means "no UART here".
    if (name.startsWith('ttyS') && readAttr(entry, 'type') === '0') continue;
    const usb = findUsbDevice(device, sysReal);
    const path = join(devRoot, name);
    out.set(path, {
      path,
      byId: undefined,
      vendorId: usb === undefined ? undefined : readAttr(usb, 'idVendor'),
      productId: usb === undefined ? undefined : readAttr(usb, 'idProduct'),
      serialNumber: usb === undefined ? undefined : readAttr(usb, 'serial'),
      manufacturer: usb === undefined ? undefined : readAttr(usb, 'manufacturer'),
      product: usb === undefined ? undefined : readAttr(usb, 'product'),
      driver: driverOf(device),
    });
  }
  return out;
}

/** The USB device directory above a tty's device (it has idVendor); at most 6 levels up. */
function findUsbDevice(device: string, sysRoot: string): string | undefined {
  let dir = device;
  for (let i = 0; i < 6 && dir.startsWith(sysRoot) && dir !== sysRoot; i++) {
    if (readAttr(dir, 'idVendor') !== undefined) return dir;
    dir = dirname(dir);
  }
  return undefined;
}

/**
 * The kernel driver of the device, skipping the generic serial-base "port"/"ctrl" layers of
 * kernels 6.x, so a Pi shows uart-pl011 and a USB adapter ftdi_sio or cdc_acm.
 */
function driverOf(device: string): string | undefined {
  let dir = device;
  for (let i = 0; i < 4; i++) {
    try {
      const driver = realpathSync(join(dir, 'driver'));
      if (!driver.includes('/bus/serial-base/')) return basename(driver);
    } catch {
      // no driver at this level
    }
    dir = dirname(dir);
  }
  return undefined;
}

function readAttr(dir: string, name: string): string | undefined {
  try {
    const value = readFileSync(join(dir, name), 'utf8').trim();
    return value === '' ? undefined : value;
  } catch {
    return undefined;
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A plain-text table for the terminal, or the line "no serial ports found". */
export function formatPortTable(ports: readonly ListedPort[]): string {
  if (ports.length === 0) return 'no serial ports found\n';
  const rows = [
    ['PATH', 'BY-ID', 'VID:PID', 'SERIAL', 'DESCRIPTION'],
    ...ports.map((p) => [
      p.path,
      p.byId ?? '-',
      p.vendorId !== undefined || p.productId !== undefined ? `${p.vendorId ?? '?'}:${p.productId ?? '?'}` : '-',
      p.serialNumber ?? '-',
      [p.manufacturer, p.product].filter((s) => s !== undefined).join(' ') || (p.driver !== undefined ? `(${p.driver})` : '-'),
    ]),
  ];
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, col) => (col === r.length - 1 ? cell : cell.padEnd(widths[col] ?? 0))).join('  ')).join('\n') + '\n';
}
