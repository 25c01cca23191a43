/**
 * `edgeway serial list` without udev: a fake /sys and /dev tree in a temp directory, shaped like a
 * Raspberry Pi with an FTDI USB adapter, a PL011 UART and the kernel's phantom ttyS ports.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { formatPortTable, listSerialPorts } from '../../adapters/serial/list';

const root = mkdtempSync(join(tmpdir(), 'edgeway-serial-list-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const dev = join(root, 'dev');
const sys = join(root, 'sys');

function file(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${text}\n`);
}
function link(path: string, target: string): void {
  mkdirSync(dirname(path), { recursive: true });
  symlinkSync(target, path);
}
/** /sys/class/tty/<name> → the device's tty directory, whose `device` points at the port device. */
function tty(name: string, portDevice: string, attrs: Record<string, string> = {}): void {
  const ttyDir = join(sys, portDevice, 'tty', name);
  mkdirSync(ttyDir, { recursive: true });
  link(join(ttyDir, 'device'), '../..');
  for (const [k, v] of Object.entries(attrs)) file(join(ttyDir, k), v);
  link(join(sys, 'class', 'tty', name), join('..', '..', portDevice, 'tty', name));
}

// FTDI adapter: the USB device has the ids; the interface has the usb-serial port device.
const usb = 'devices/platform/soc/usb1/1-1';
file(join(sys, usb, 'idVendor'), '0403');
file(join(sys, usb, 'idProduct'), '6001');
file(join(sys, usb, 'serial'), 'A50285BI');
file(join(sys, usb, 'manufacturer'), 'FTDI');
file(join(sys, usb, 'product'), 'FT232R USB UART');
mkdirSync(join(sys, 'bus/usb-serial/drivers/ftdi_sio'), { recursive: true });
mkdirSync(join(sys, usb, '1-1:1.0/ttyUSB0'), { recursive: true });
link(join(sys, usb, '1-1:1.0/ttyUSB0/driver'), '../../../../../../../bus/usb-serial/drivers/ftdi_sio');
tty('ttyUSB0', `${usb}/1-1:1.0/ttyUSB0`);
// The Pi's PL011 UART: no USB ids, a driver.
mkdirSync(join(sys, 'bus/amba/drivers/uart-pl011'), { recursive: true });
mkdirSync(join(sys, 'devices/platform/soc/fe201000.serial'), { recursive: true });
link(join(sys, 'devices/platform/soc/fe201000.serial/driver'), '../../../../bus/amba/drivers/uart-pl011');
tty('ttyAMA0', 'devices/platform/soc/fe201000.serial');
// Phantom 8250 ports (type 0) are skipped; a real one (type 4) is listed.
tty('ttyS0', 'devices/platform/serial8250/port0', { type: '0' });
tty('ttyS1', 'devices/platform/serial8250/port1', { type: '4' });
// A virtual console: no device link, and not a serial name anyway.
mkdirSync(join(sys, 'class/tty/tty1'), { recursive: true });
mkdirSync(join(sys, 'class/tty/ttyUSB9'), { recursive: true }); // a serial name without a device: skipped
// /dev/serial/by-id, as udev would have made it.
file(join(dev, 'ttyUSB0'), '');
link(join(dev, 'serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0'), '../../ttyUSB0');

const udevMissing = () => Promise.reject(Object.assign(new Error('spawn udevadm ENOENT'), { code: 'ENOENT' }));

t.test('without udevadm: falls back to sysfs and /dev/serial/by-id', async (t) => {
  const r = await listSerialPorts({ devRoot: dev, sysRoot: sys, udevList: udevMissing });
  t.equal(r.source, 'sysfs');
  t.match(r.note, /udev not available \(spawn udevadm ENOENT\)/);
  t.same(r.ports, [
    { path: join(dev, 'ttyAMA0'), byId: undefined, vendorId: undefined, productId: undefined, serialNumber: undefined, manufacturer: undefined, product: undefined, driver: 'uart-pl011' },
    { path: join(dev, 'ttyS1'), byId: undefined, vendorId: undefined, productId: undefined, serialNumber: undefined, manufacturer: undefined, product: undefined, driver: undefined },
    {
      path: join(dev, 'ttyUSB0'),
      byId: join(dev, 'serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0'),
      vendorId: '0403',
      productId: '6001',
      serialNumber: 'A50285BI',
      manufacturer: 'FTDI',
      product: 'FT232R USB UART',
      driver: 'ftdi_sio',
    },
  ]);
  const table = formatPortTable(r.ports);
  t.match(table, /^PATH +BY-ID +VID:PID +SERIAL +DESCRIPTION\n/);
  t.match(table, /ttyUSB0 +\S+usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0 +0403:6001 +A50285BI +FTDI FT232R USB UART\n/);
  t.match(table, /ttyAMA0 +- +- +- +\(uart-pl011\)\n/);
});

t.test('a udev lister that hangs is abandoned after the timeout', async (t) => {
  const started = Date.now();
  const r = await listSerialPorts({ devRoot: dev, sysRoot: sys, udevList: () => new Promise(() => {}), timeoutMs: 100 });
  t.equal(r.source, 'sysfs');
  t.match(r.note, /no answer within 100 ms/);
  t.ok(Date.now() - started < 2000);
});

t.test('with udev: its answer, completed with by-id paths and sysfs strings', async (t) => {
  const r = await listSerialPorts({
    devRoot: dev,
    sysRoot: sys,
    udevList: () => Promise.resolve([{ path: join(dev, 'ttyUSB0'), vendorId: '0403', productId: '6001', serialNumber: 'A50285BI', manufacturer: 'FTDI', pnpId: 'usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0' }]),
  });
  t.equal(r.source, 'udev');
  t.equal(r.note, undefined);
  t.equal(r.ports.length, 1);
  t.equal(r.ports[0]?.byId, join(dev, 'serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0'));
  t.equal(r.ports[0]?.product, 'FT232R USB UART');
});

t.test('nothing at all: "no serial ports found"', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'edgeway-serial-empty-'));
  t.teardown(() => rmSync(empty, { recursive: true, force: true }));
  const r = await listSerialPorts({ devRoot: join(empty, 'dev'), sysRoot: join(empty, 'sys'), udevList: udevMissing });
  t.same(r.ports, []);
  t.equal(formatPortTable(r.ports), 'no serial ports found\n');
});
