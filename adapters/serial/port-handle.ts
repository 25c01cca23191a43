/**
 * The part of a serial port the bridge uses. `serialport`'s SerialPort satisfies it; unit tests
 * pass SerialPortMock (binding-mock) through the same interface (as the serialport monorepo
 * injects its bindings).
 */
import { SerialPort } from 'serialport';
import type { SerialPortOptions } from './options';

export interface PortHandle {
  readonly isOpen: boolean;
  open(callback: (err: Error | null) => void): void;
  close(callback?: (err: Error | null) => void): void;
  write(data: Buffer, callback: (err: Error | null | undefined) => void): boolean;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'close', listener: (err?: Error | null) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  removeListener(event: 'data', listener: (chunk: Buffer) => void): unknown;
  removeListener(event: 'close', listener: (err?: Error | null) => void): unknown;
  removeListener(event: 'error', listener: (err: Error) => void): unknown;
}

/** What opening a port needs: the line settings of the port's options. */
export type OpenSpec = Pick<SerialPortOptions, 'path' | 'baudRate' | 'dataBits' | 'parity' | 'stopBits' | 'rtscts'>;

/** Creates a port object without opening it (constructors have no side effects). */
export type PortOpener = (spec: OpenSpec) => PortHandle;

/** 16 KiB reads: a few hundred lines per read at most, so one read never monopolises the loop. */
const READ_HIGH_WATER = 16 * 1024;

export const openSerialPort: PortOpener = (spec) =>
  new SerialPort({
    path: spec.path,
    baudRate: spec.baudRate,
    dataBits: spec.dataBits,
    parity: spec.parity,
    stopBits: spec.stopBits,
    rtscts: spec.rtscts,
    autoOpen: false,
    highWaterMark: READ_HIGH_WATER,
  });
