/**
 * `edgeway_eventloop_lag_seconds` is the delay beyond monitorEventLoopDelay's 20 ms sampling
 * period: Node records the whole period, so an idle loop used to read as 20 ms of lag (found by
 * the soak test, issue 9).
 */
import t from 'tap';
import { eventLoopLagSeconds } from '../../gateway/metrics-http';

t.test('an on-time sample is no lag; a late one is the lateness', async (t) => {
  t.equal(eventLoopLagSeconds(20e6), 0, 'exactly the period');
  t.equal(eventLoopLagSeconds(19.2e6), 0, 'a timer firing a little early is not negative lag');
  t.equal(eventLoopLagSeconds(0), 0, 'no sample since the last scrape');
  t.ok(Math.abs(eventLoopLagSeconds(20.5e6) - 0.0005) < 1e-12, '0.5 ms late');
  t.ok(Math.abs(eventLoopLagSeconds(120e6) - 0.1) < 1e-12, 'a 100 ms stall');
});
