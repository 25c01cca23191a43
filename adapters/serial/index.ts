/**
 * Public API of the serial bridge (adapters/serial). It imports from gateway/broker's public
 * index only; gateway/main.ts wires it to the broker with `broker.context('serial')`.
 */
export { SerialAdapter, type SerialAdapterOptions } from './serial-adapter';
export { OPEN_TIMEOUT_MS, type PortState, type PortStatus } from './port-bridge';
export { openSerialPort, type OpenSpec, type PortHandle, type PortOpener } from './port-handle';
export { formatPortTable, listSerialPorts, type ListedPort, type ListResult, type ListOptions } from './list';
export { DROP_REASONS, type DropReason } from './line-parser';
export * from './options';
