/**
 * Reads the gateway's Prometheus endpoint (README "Metrics and health") from the chaos and soak
 * scripts: one GET, bounded in time, parsed into `name{labels}` → value.
 */
import http from 'node:http';

export type MetricSamples = ReadonlyMap<string, number>;

/** GET http://127.0.0.1:<port>/metrics; rejects after `timeoutMs`. */
export function scrapeMetrics(port: number, timeoutMs = 3000): Promise<MetricSamples> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => (res.statusCode === 200 ? resolve(parseExposition(body)) : reject(new Error(`/metrics answered ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`/metrics: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/**
 * The samples of a text exposition, keyed as written (`edgeway_outbox_messages`,
 * `edgeway_eventloop_lag_seconds{quantile="0.99"}`); comments and malformed lines are skipped.
 */
export function parseExposition(text: string): MetricSamples {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (space <= 0) continue;
    const value = Number(line.slice(space + 1));
    if (!Number.isNaN(value)) samples.set(line.slice(0, space), value);
  }
  return samples;
}
