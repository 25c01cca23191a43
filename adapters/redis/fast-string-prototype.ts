/**
 * Makes V8's String.prototype a fast-mode object again after ioredis was loaded.
 *
 * ioredis 6 declares `class VerbatimString extends String` (built/resp/verbatim-string.js) when it
 * is loaded. Subclassing String turns String.prototype into a dictionary-mode ("slow") object, and
 * V8 makes a prototype fast again only when an inline cache that has feedback looks a property up
 * through it on an object — method calls on string primitives never do. Until then every
 * `topic.includes(…)`, `charCodeAt`, `split`… in optimised code, in the whole process, is a call
 * of the generic LoadIC builtin instead of an inlined constant: with a `redis` section that was
 * ~10 % of the gateway's CPU at 50,000 msg/s (perf: `Builtins_LoadIC` 9.8–11.9 % of samples
 * against 2 % without a `redis` section; called from the topic checks inlined into handlePublish).
 * test/unit/fast-string-prototype.test.ts checks both the cause and the cure, so an ioredis that
 * no longer does this, or a dependency that starts to, shows up there.
 */
export function makeStringPrototypeFast(): void {
  const probe: object = Object.create(String.prototype);
  const lookUp = (o: object): unknown => (o as { readonly toString: unknown }).toString;
  for (let i = 0; i < CALLS_FOR_FEEDBACK; i++) lookUp(probe);
}

/**
 * V8 gives a function its feedback vector (and its inline caches a state) after 8 calls
 * (`--invocation-count-for-feedback-allocation`); the look-ups after that make the prototype fast.
 */
const CALLS_FOR_FEEDBACK = 16;
