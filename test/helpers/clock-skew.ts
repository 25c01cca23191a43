/**
 * Preloaded into a gateway child (`NODE_OPTIONS=--require …/clock-skew.js`): its wall clock
 * (Date.now) runs EDGEWAY_TEST_CLOCK_SKEW_MS ahead (or behind, when negative) of this machine's, as
 * on a gateway whose clock was never set right. The monotonic clock is left alone, as it would be.
 */
const skewMs = Number(process.env['EDGEWAY_TEST_CLOCK_SKEW_MS'] ?? '0');
if (!Number.isFinite(skewMs)) throw new Error('EDGEWAY_TEST_CLOCK_SKEW_MS: not a number');
const realNow = Date.now.bind(Date);
Date.now = (): number => realNow() + skewMs;


export {}; // a module, so that its names stay its own
